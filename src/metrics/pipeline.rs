//! The event pipeline's group: what was decoded, resolved, judged and
//! emitted, what waited and what a full queue refused.

use super::deprecated;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use rustc_hash::FxHashMap;
use std::{fmt::Debug, hash::Hash, sync::OnceLock};

/// The counters of a family whose label sets are all declared at start-up,
/// found by an FxHash map filled once, with no lock: a family hashes its
/// labels with SipHash under a lock (its hasher cannot be chosen), ~600
/// instructions per finding and per event judged. Label sets not declared
/// (none are expected) still count, through the family.
#[derive(Debug)]
struct Declared<L: EncodeLabelSet + Clone + Hash + Eq + Debug + Send + Sync + 'static> {
    family: Family<L, Counter>,
    handles: OnceLock<FxHashMap<L, Counter>>,
}

impl<L: EncodeLabelSet + Clone + Hash + Eq + Debug + Send + Sync + 'static> Declared<L> {
    fn new(family: Family<L, Counter>) -> Self {
        Self { family, handles: OnceLock::new() }
    }

    /// Creates each series at 0; the first call's label sets get handles.
    fn declare(&self, labels: impl IntoIterator<Item = L>) {
        let m: FxHashMap<L, Counter> =
            labels.into_iter().map(|l| (l.clone(), self.family.get_or_create(&l).clone())).collect();
        let _ = self.handles.set(m);
    }

    fn inc_by(&self, l: &L, n: u64) {
        match self.handles.get().and_then(|m| m.get(l)) {
            Some(c) => c.inc_by(n),
            None => self.family.get_or_create(l).inc_by(n),
        };
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FindingLabels {
    pub kind: &'static str,
    pub rule: &'static str,
    pub severity: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReasonLabel {
    pub(super) reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: &'static str,
}

/// A redaction pattern's name: a built-in's, `flags`, or one the config names
/// (bounded by the config: at most 32 user patterns).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PatternLabel {
    pattern: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    kind: &'static str,
    drift: &'static str,
}

impl DropLabels {
    fn new(kind: &'static str, drift: bool) -> Self {
        Self { kind, drift: if drift { "true" } else { "false" } }
    }
}

#[derive(Debug)]
pub struct PipelineMetrics {
    findings: Declared<FindingLabels>,
    events: Family<KindLabel, Counter>,
    decode_errors: Family<ReasonLabel, Counter>,
    enrich_failures: Family<ReasonLabel, Counter>,
    no_finding: Declared<ReasonLabel>,
    queue_dropped: Family<QueueLabel, Counter>,
    event_drops: Family<DropLabels, Counter>,
    redactions: Family<PatternLabel, Counter>,
    latency: Histogram,
    /// The events thread's wakeups: [records, timeout].
    reader_wakeups: [Counter; 2],
    /// Findings held for pod metadata or an image comparison.
    pub findings_waiting: Gauge,
    /// Findings ready but held behind an earlier one of their container.
    pub findings_held: Gauge,
}

impl PipelineMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let findings = Family::<FindingLabels, Counter>::default();
        r.register("findings", "Drift findings emitted, by kind, rule and severity", findings.clone());
        let events = Family::<KindLabel, Counter>::default();
        r.register("events_decoded", "Kernel records the agent read and decoded, by kind", events.clone());
        // The same counter under its old name, for one release (deprecated::OLD_NAMES).
        r.register("events", deprecated::help("events_decoded_total"), events.clone());
        let decode_errors = Family::<ReasonLabel, Counter>::default();
        r.register("decode_errors", "Kernel records that failed to decode, by reason", decode_errors.clone());
        let enrich_failures = Family::<ReasonLabel, Counter>::default();
        r.register(
            "enrich_failures",
            "Events whose container could not be resolved, by reason (not_container events are dropped)",
            enrich_failures.clone(),
        );
        let no_finding = Family::<ReasonLabel, Counter>::default();
        r.register(
            "events_not_drift",
            "Container events (execs, network endpoints, file changes) judged not to be drift, by reason",
            no_finding.clone(),
        );
        r.register("execs_not_findings", deprecated::help("events_not_drift_total"), no_finding.clone());
        let queue_dropped = Family::<QueueLabel, Counter>::default();
        r.register(
            "userspace_drops",
            "Items dropped because a bounded userspace queue was full, by queue",
            queue_dropped.clone(),
        );
        let event_drops = Family::<DropLabels, Counter>::default();
        r.register(
            "events_dropped",
            "Kernel events dropped by the full events queue before the pipeline, by kind and whether they were drift (drift is dropped last)",
            event_drops.clone(),
        );
        let redactions = Family::<PatternLabel, Counter>::default();
        r.register(
            "redactions",
            "Findings in which a redaction pattern replaced a secret before any sink, by pattern",
            redactions.clone(),
        );
        let latency = Histogram::new([
            0.001, 0.0025, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]);
        r.register(
            "detection_latency_seconds",
            "Time from the kernel event to the finding being emitted",
            latency.clone(),
        );
        let wakeups = Family::<CauseLabel, Counter>::default();
        r.register(
            "reader_wakeups",
            "Times the events thread woke from its sleep on the ring buffer, by cause: records (the kernel woke it, or records were waiting) or timeout (its own timer); each costs a context switch",
            wakeups.clone(),
        );
        let reader_wakeups = ["records", "timeout"].map(|cause| wakeups.get_or_create(&CauseLabel { cause }).clone());
        let findings_waiting = Gauge::default();
        r.register(
            "findings_waiting",
            "Findings held back for pod metadata or an image comparison (bounded; beyond the bound they go out incomplete)",
            findings_waiting.clone(),
        );
        let findings_held = Gauge::default();
        r.register(
            "findings_held_for_order",
            "Findings ready but held until an earlier finding of their container goes out (findings leave in event order)",
            findings_held.clone(),
        );
        Self {
            findings: Declared::new(findings),
            events,
            decode_errors,
            enrich_failures,
            no_finding: Declared::new(no_finding),
            queue_dropped,
            event_drops,
            redactions,
            latency,
            reader_wakeups,
            findings_waiting,
            findings_held,
        }
    }

    /// Pre-creates every finding series at 0, so `increase()` in alerts sees
    /// the first finding of a kind (a series born at 1 looks like no change).
    pub fn declare_findings(&self, catalog: impl IntoIterator<Item = FindingLabels>) {
        self.findings.declare(catalog);
    }

    /// Pre-creates every kind and reason series at 0, for the same reason.
    pub fn declare_reasons(
        &self,
        kinds: &[&'static str],
        decode: &[&'static str],
        enrich: &[&'static str],
        not_findings: &[&'static str],
    ) {
        for &kind in kinds {
            let _ = self.events.get_or_create(&KindLabel { kind });
        }
        self.no_finding.declare(not_findings.iter().map(|&reason| ReasonLabel { reason }));
        for (family, reasons) in [(&self.decode_errors, decode), (&self.enrich_failures, enrich)] {
            for &reason in reasons {
                let _ = family.get_or_create(&ReasonLabel { reason });
            }
        }
    }

    /// One finding; `latency_s` is from the kernel event (None for findings
    /// not caused by one, such as config drift).
    pub fn finding(&self, labels: &FindingLabels, latency_s: Option<f64>) {
        self.findings.inc_by(labels, 1);
        if let Some(s) = latency_s {
            self.latency.observe(s);
        }
    }

    /// The events thread woke: with records to read, or at its timeout.
    pub fn reader_woke(&self, records: bool) {
        self.reader_wakeups[usize::from(!records)].inc();
    }

    pub fn events(&self, kind: &'static str, n: u64) {
        self.events.get_or_create(&KindLabel { kind }).inc_by(n);
    }

    pub fn decode_error(&self, reason: &'static str) {
        self.decode_errors.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn enrich_failure(&self, reason: &'static str) {
        self.enrich_failures.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn no_finding(&self, reason: &'static str) {
        self.no_finding.inc_by(&ReasonLabel { reason }, 1);
    }

    pub fn queue_drops(&self, queue: &'static str, n: u64) {
        self.queue_dropped.get_or_create(&QueueLabel { queue }).inc_by(n);
    }

    /// Events of one kind dropped by the events queue, drift or not.
    pub fn event_drops(&self, kind: &'static str, drift: bool, n: u64) {
        self.event_drops.get_or_create(&DropLabels::new(kind, drift)).inc_by(n);
    }

    /// Pre-creates the (kind, drift) series of dropped events at 0.
    pub fn declare_event_drops(&self, series: &[(&'static str, bool)]) {
        for &(kind, drift) in series {
            let _ = self.event_drops.get_or_create(&DropLabels::new(kind, drift));
        }
    }

    /// Pre-creates a queue's drop series at 0 so alerts and dashboards see it.
    pub fn declare_queue(&self, queue: &'static str) {
        let _ = self.queue_dropped.get_or_create(&QueueLabel { queue });
    }
}

impl PipelineMetrics {
    /// The redaction counter of one pattern (created at 0), as a handle: the
    /// emitter takes one per pattern at startup.
    pub fn redaction_counter(&self, pattern: &str) -> Counter {
        self.redactions.get_or_create(&PatternLabel { pattern: pattern.to_string() }).clone()
    }

    /// The drop counter of one queue, as a handle for code that owns the queue.
    pub fn queue_counter(&self, queue: &'static str) -> Counter {
        self.queue_dropped.get_or_create(&QueueLabel { queue }).clone()
    }
}
