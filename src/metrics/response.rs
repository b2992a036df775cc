//! The Investigate and Isolate steps on the node: evidence bundles and
//! network quarantines.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    /// apply | release | prune.
    action: &'static str,
    /// ok | failed (| already for an apply of a quarantined container).
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

/// The evidence outcomes (src/respond/evidence.rs `Outcome`).
pub const EVIDENCE_RESULTS: [&str; 3] = ["written", "failed", "dropped"];

#[derive(Debug, Default)]
pub struct ResponseMetrics {
    bundles: Family<ResultLabel, Counter>,
    bundle_bytes: Counter,
    quarantined: Gauge,
    actions: Family<ActionLabels, Counter>,
    dropped: Family<DirectionLabel, Counter>,
}

impl ResponseMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Self::default();
        r.register(
            "evidence_bundles",
            "Evidence bundles, by result (written; failed: the directory or disk; dropped: the capture queue was full)",
            m.bundles.clone(),
        );
        r.register("evidence_bytes", "Bytes of evidence bundles written", m.bundle_bytes.clone());
        r.register(
            "quarantined_containers",
            "Containers cut off the network by the node quarantine (cgroup_skb) right now",
            m.quarantined.clone(),
        );
        r.register(
            "quarantine_actions",
            "Quarantine actions, by action (apply, release, prune) and result (ok, already, failed)",
            m.actions.clone(),
        );
        r.register(
            "quarantine_dropped_packets",
            "Packets the quarantine dropped, by direction (ingress, egress)",
            m.dropped.clone(),
        );
        for result in EVIDENCE_RESULTS {
            let _ = m.bundles.get_or_create(&ResultLabel { result });
        }
        for (action, result) in
            [("apply", "ok"), ("apply", "failed"), ("release", "ok"), ("release", "failed"), ("prune", "ok")]
        {
            let _ = m.actions.get_or_create(&ActionLabels { action, result });
        }
        for direction in ["ingress", "egress"] {
            let _ = m.dropped.get_or_create(&DirectionLabel { direction });
        }
        m
    }

    pub fn bundle(&self, result: &'static str, bytes: u64) {
        self.bundles.get_or_create(&ResultLabel { result }).inc();
        self.bundle_bytes.inc_by(bytes);
    }

    pub fn set_quarantined(&self, n: usize) {
        self.quarantined.set(n as i64);
    }

    pub fn quarantine_action(&self, action: &'static str, result: &'static str) {
        self.actions.get_or_create(&ActionLabels { action, result }).inc();
    }

    /// Sets the drop counters to the kernel's totals (they only grow while
    /// the programs stay loaded; a smaller total is a reload and is skipped).
    pub fn set_dropped(&self, ingress: u64, egress: u64) {
        for (direction, total) in [("ingress", ingress), ("egress", egress)] {
            let c = self.dropped.get_or_create(&DirectionLabel { direction });
            let now = c.get();
            if total > now {
                c.inc_by(total - now);
            }
        }
    }
}
