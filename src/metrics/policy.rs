//! Policy: findings approved (by name) and learned, containers per mode,
//! and configuration reloads.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApprovedLabels {
    kind: &'static str,
    rule: &'static str,
    /// An approval's name from the config (bounded by it), or a built-in:
    /// probe, lifecycle_hook, init_container, learned.
    approval: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LearnedLabels {
    kind: &'static str,
    rule: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabel {
    mode: &'static str,
}

#[derive(Debug, Default)]
pub struct PolicyMetrics {
    approved: Family<ApprovedLabels, Counter>,
    learned: Family<LearnedLabels, Counter>,
    modes: Family<ModeLabel, Gauge>,
    reload_failures: Counter,
    reloads: Counter,
    learned_full: Counter,
}

impl PolicyMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Self::default();
        r.register(
            "findings_approved",
            "Findings a policy approval matched: not emitted as drift (policy.emit_approved sends them as info)",
            m.approved.clone(),
        );
        r.register(
            "findings_learned",
            "Findings of containers in learn mode: counted and learned into their workload's baseline, not emitted",
            m.learned.clone(),
        );
        r.register("workload_mode", "Running containers in each mode (learn, monitor, protect)", m.modes.clone());
        r.register(
            "config_reload_failures",
            "Configuration reloads (SIGHUP or file change) rejected: the running policy stays",
            m.reload_failures.clone(),
        );
        r.register("config_reloads", "Configuration reloads applied", m.reloads.clone());
        r.register(
            "learned_baseline_full",
            "Signatures not learned because their workload's (or the node's) learned baseline is full",
            m.learned_full.clone(),
        );
        m
    }

    pub fn approved(&self, kind: &'static str, rule: &'static str, approval: &str) {
        self.approved.get_or_create(&ApprovedLabels { kind, rule, approval: approval.to_string() }).inc();
    }

    /// Pre-creates a zero series (so `increase()` sees the first approval).
    pub fn declare_approved(&self, kind: &'static str, rule: &'static str, approval: &str) {
        let _ = self.approved.get_or_create(&ApprovedLabels { kind, rule, approval: approval.to_string() });
    }

    pub fn learned(&self, kind: &'static str, rule: &'static str) {
        self.learned.get_or_create(&LearnedLabels { kind, rule }).inc();
    }

    pub fn learned_full(&self) {
        self.learned_full.inc();
    }

    pub fn set_modes(&self, counts: &[(&'static str, usize)]) {
        for (mode, n) in counts {
            self.modes.get_or_create(&ModeLabel { mode }).set(*n as i64);
        }
    }

    pub fn reload(&self, ok: bool) {
        if ok {
            self.reloads.inc()
        } else {
            self.reload_failures.inc()
        };
    }
}
