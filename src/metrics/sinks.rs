//! The sinks' group: what each output wrote, exported, pushed or dropped.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ResultLabel {
    pub(super) result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetResult {
    target: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabel {
    target: String,
}

fn ok_or_error(ok: bool) -> &'static str {
    if ok { "ok" } else { "error" }
}

#[derive(Debug)]
pub struct SinkMetrics {
    writes: Family<SinkLabels, Counter>,
    otlp_records: Family<ResultLabel, Counter>,
    otlp_queued: Gauge,
    am_alerts: Family<ResultLabel, Counter>,
    am_requests: Family<ResultLabel, Counter>,
    am_queued: Gauge,
    am_target_alerts: Family<TargetResult, Counter>,
    am_target_requests: Family<TargetResult, Counter>,
    am_target_queued: Family<TargetLabel, Gauge>,
    fsk_events: Family<ResultLabel, Counter>,
    fsk_requests: Family<ResultLabel, Counter>,
    fsk_queued: Gauge,
}

impl SinkMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let writes = Family::<SinkLabels, Counter>::default();
        r.register("sink_writes", "Findings written by each sink, by result (ok, error)", writes.clone());
        let otlp_records = Family::<ResultLabel, Counter>::default();
        r.register(
            "otlp_records",
            "OTLP log records, by result (exported, failed: export failed after retries, dropped: queue full or not flushed at shutdown)",
            otlp_records.clone(),
        );
        let otlp_queued = Gauge::default();
        r.register("otlp_queued_records", "Findings waiting for OTLP export (bounded)", otlp_queued.clone());
        let am_alerts = Family::<ResultLabel, Counter>::default();
        r.register(
            "alertmanager_alerts",
            "Alerts pushed to Alertmanager, by result (sent, failed: given up after retries, dropped: queue full)",
            am_alerts.clone(),
        );
        let am_requests = Family::<ResultLabel, Counter>::default();
        r.register(
            "alertmanager_requests",
            "POSTs to Alertmanager's /api/v2/alerts, by result (ok, error); retries count again",
            am_requests.clone(),
        );
        let am_queued = Gauge::default();
        r.register(
            "alertmanager_queued_alerts",
            "Alert groups waiting for delivery to Alertmanager (bounded)",
            am_queued.clone(),
        );
        let am_target_alerts = Family::<TargetResult, Counter>::default();
        r.register(
            "alertmanager_target_alerts",
            "Alerts pushed to each configured Alertmanager (target: host:port of its URL), by result (sent, failed, dropped)",
            am_target_alerts.clone(),
        );
        let am_target_requests = Family::<TargetResult, Counter>::default();
        r.register(
            "alertmanager_target_requests",
            "POSTs to each configured Alertmanager (target: host:port of its URL), by result (ok, error); retries count again",
            am_target_requests.clone(),
        );
        let am_target_queued = Family::<TargetLabel, Gauge>::default();
        r.register(
            "alertmanager_target_queued_alerts",
            "Alert groups waiting for delivery to each configured Alertmanager (bounded)",
            am_target_queued.clone(),
        );
        let fsk_events = Family::<ResultLabel, Counter>::default();
        r.register(
            "falcosidekick_events",
            "Findings pushed to falcosidekick as Falco events, by result (sent, failed: rejected or given up after retries, dropped: queue full or not delivered by the shutdown deadline)",
            fsk_events.clone(),
        );
        let fsk_requests = Family::<ResultLabel, Counter>::default();
        r.register(
            "falcosidekick_requests",
            "POSTs to falcosidekick, by result (ok, error); retries count again",
            fsk_requests.clone(),
        );
        let fsk_queued = Gauge::default();
        r.register(
            "falcosidekick_queued_events",
            "Events waiting for delivery to falcosidekick (bounded)",
            fsk_queued.clone(),
        );
        Self {
            writes,
            otlp_records,
            otlp_queued,
            am_alerts,
            am_requests,
            am_queued,
            am_target_alerts,
            am_target_requests,
            am_target_queued,
            fsk_events,
            fsk_requests,
            fsk_queued,
        }
    }

    /// Pre-creates the falcosidekick series at 0 (called when the sink starts).
    pub fn declare_falcosidekick(&self) {
        for result in ["sent", "failed", "dropped"] {
            let _ = self.fsk_events.get_or_create(&ResultLabel { result });
        }
        for result in ["ok", "error"] {
            let _ = self.fsk_requests.get_or_create(&ResultLabel { result });
        }
        self.fsk_queued.set(0);
    }

    /// `result`: sent | failed | dropped.
    pub fn falcosidekick_events(&self, result: &'static str, n: u64) {
        self.fsk_events.get_or_create(&ResultLabel { result }).inc_by(n);
    }

    pub fn falcosidekick_request(&self, ok: bool) {
        self.fsk_requests.get_or_create(&ResultLabel { result: ok_or_error(ok) }).inc();
    }

    pub fn set_falcosidekick_queued(&self, n: usize) {
        self.fsk_queued.set(n as i64);
    }

    /// `n` results of one sink at once (0 is a no-op: no series is created for it).
    pub fn sink_results(&self, sink: &'static str, ok: bool, n: u64) {
        if n > 0 {
            self.writes.get_or_create(&SinkLabels { sink, result: ok_or_error(ok) }).inc_by(n);
        }
    }

    /// Findings a sink never wrote because the shutdown deadline passed
    /// (`sink_writes{result="dropped"}`; pre-created at 0 by [`Self::declare_sink`]).
    pub fn sink_dropped(&self, sink: &'static str, n: u64) {
        self.writes.get_or_create(&SinkLabels { sink, result: "dropped" }).inc_by(n);
    }

    /// Pre-creates a sink's write series at 0.
    pub fn declare_sink(&self, sink: &'static str) {
        for result in ["ok", "error", "dropped"] {
            let _ = self.writes.get_or_create(&SinkLabels { sink, result });
        }
    }

    /// Pre-creates the OTLP series at 0 (called when the OTLP sink starts).
    pub fn declare_otlp(&self) {
        for result in ["exported", "failed", "dropped"] {
            let _ = self.otlp_records.get_or_create(&ResultLabel { result });
        }
        self.otlp_queued.set(0);
    }

    /// `result`: exported | failed | dropped.
    pub fn otlp_records(&self, result: &'static str, n: u64) {
        self.otlp_records.get_or_create(&ResultLabel { result }).inc_by(n);
    }

    pub fn set_otlp_queued(&self, n: usize) {
        self.otlp_queued.set(n as i64);
    }

    /// Pre-creates the Alertmanager series at 0, the totals and those of every
    /// configured target (called when the sink starts).
    pub fn declare_alertmanager(&self, targets: &[&str]) {
        for result in ["sent", "failed", "dropped"] {
            let _ = self.am_alerts.get_or_create(&ResultLabel { result });
        }
        for result in ["ok", "error"] {
            let _ = self.am_requests.get_or_create(&ResultLabel { result });
        }
        self.am_queued.set(0);
        for t in targets {
            drop(self.alertmanager_target(t));
        }
    }

    /// The counters of one Alertmanager target, each paired with the total it adds to.
    pub fn alertmanager_target(&self, target: &str) -> AlertmanagerTargetMetrics {
        let alert = |result| {
            let t = TargetResult { target: target.to_string(), result };
            (
                self.am_alerts.get_or_create(&ResultLabel { result }).clone(),
                self.am_target_alerts.get_or_create(&t).clone(),
            )
        };
        let request = |result| {
            let t = TargetResult { target: target.to_string(), result };
            (
                self.am_requests.get_or_create(&ResultLabel { result }).clone(),
                self.am_target_requests.get_or_create(&t).clone(),
            )
        };
        let queued = self.am_target_queued.get_or_create(&TargetLabel { target: target.to_string() }).clone();
        queued.set(0);
        AlertmanagerTargetMetrics {
            sent: alert("sent"),
            failed: alert("failed"),
            dropped: alert("dropped"),
            ok: request("ok"),
            error: request("error"),
            queued: (self.am_queued.clone(), queued),
            last_queued: 0,
        }
    }
}

/// What one Alertmanager target (one configured URL) counts: its own series
/// (`target` label) and, by the same amounts, the totals without the label
/// (`driftwatch_alertmanager_alerts_total{result}`, ...), which therefore stay
/// the sum over the targets: with a single URL, exactly what they always were.
#[derive(Debug)]
pub struct AlertmanagerTargetMetrics {
    sent: (Counter, Counter),
    failed: (Counter, Counter),
    dropped: (Counter, Counter),
    ok: (Counter, Counter),
    error: (Counter, Counter),
    queued: (Gauge, Gauge),
    last_queued: i64,
}

impl AlertmanagerTargetMetrics {
    /// `result`: sent | failed | dropped.
    pub fn alerts(&self, result: &'static str, n: u64) {
        let (total, target) = match result {
            "sent" => &self.sent,
            "failed" => &self.failed,
            _ => &self.dropped,
        };
        total.inc_by(n);
        target.inc_by(n);
    }

    pub fn request(&self, ok: bool) {
        let (total, target) = if ok { &self.ok } else { &self.error };
        total.inc();
        target.inc();
    }

    /// This target's queued groups; the total gauge moves by the difference.
    pub fn set_queued(&mut self, n: usize) {
        let n = n as i64;
        self.queued.0.inc_by(n - self.last_queued);
        self.queued.1.set(n);
        self.last_queued = n;
    }
}
