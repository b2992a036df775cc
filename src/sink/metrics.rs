//! Prometheus metrics (OpenMetrics text via prometheus-client).
//!
//! Labels are bounded: kind, rule, severity, reasons, stage and queue names;
//! never pids, paths, container ids or digests.

use crate::{abi, classify::Finding};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::Gauge,
        histogram::Histogram,
        info::Info,
    },
    registry::Registry,
};
use std::sync::{Arc, OnceLock};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FindingLabels {
    pub kind: &'static str,
    pub rule: &'static str,
    pub severity: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    pub queue: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    abi_version: String,
    bpf_objects: &'static str,
}

/// Reads the kernel's per-CPU counters (summed) at scrape time.
pub trait KernelStatsSource: Send + Sync + std::fmt::Debug {
    fn read(&self) -> Option<abi::dw_kstats>;
}

pub struct Metrics {
    pub registry: Registry,
    findings: Family<FindingLabels, Counter>,
    events: Family<KindLabel, Counter>,
    decode_errors: Family<ReasonLabel, Counter>,
    enrich_failures: Family<ReasonLabel, Counter>,
    no_finding: Family<ReasonLabel, Counter>,
    queue_dropped: Family<QueueLabel, Counter>,
    sink_writes: Family<SinkLabels, Counter>,
    latency: Histogram,
    programs_attached: Gauge,
    kernel: Arc<KernelCollector>,
    /// Series labelled by namespace, workload and container name.
    pub containers: super::containers::ContainerSeries,
    otlp_records: Family<ResultLabel, Counter>,
    otlp_queued: Gauge,
    /// Findings held for pod metadata or an image comparison.
    pub findings_waiting: Gauge,
    am_alerts: Family<ResultLabel, Counter>,
    am_requests: Family<ResultLabel, Counter>,
    am_queued: Gauge,
    kube_api: Gauge,
    kube_errors: Family<ReasonLabel, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct KernelCollector {
    source: OnceLock<Box<dyn KernelStatsSource>>,
}

fn kind_name(i: usize) -> Option<&'static str> {
    match i as u32 {
        abi::DW_KIND_EXEC => Some("exec"),
        abi::DW_KIND_NET => Some("net"),
        abi::DW_KIND_FILE => Some("file"),
        _ => None,
    }
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(&'static str, &'static str, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (key, value, v) in values {
        let labels = [(*key, *value)];
        let fam = m.encode_family(&labels)?;
        ConstCounter::new(*v).encode(fam)?;
    }
    Ok(())
}

impl Collector for KernelCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = self.source.get().and_then(|s| s.read()) else { return Ok(()) };
        let per_kind = |arr: &[u64]| -> Vec<(&'static str, &'static str, u64)> {
            arr.iter().enumerate().filter_map(|(i, v)| kind_name(i).map(|k| ("kind", k, *v))).collect()
        };
        counter(
            &mut enc,
            "kernel_events",
            "Records the kernel submitted to the ring buffer, by kind.",
            &per_kind(&s.submitted),
        )?;
        counter(
            &mut enc,
            "kernel_ringbuf_drops",
            "Records the kernel could not reserve in the full ring buffer (lost), by kind.",
            &per_kind(&s.ringbuf_full),
        )?;
        let c = |i: u32| s.counters[i as usize];
        counter(
            &mut enc,
            "kernel_execs",
            "Execs seen by the kernel sensor, by in-kernel verdict.",
            &[
                ("verdict", "host_filtered", c(abi::DW_KSTAT_HOST_EXEC_FILTERED)),
                ("verdict", "container_filtered", c(abi::DW_KSTAT_EXEC_FILTERED)),
                ("verdict", "not_container_filtered", c(abi::DW_KSTAT_NOT_CONTAINER_FILTERED)),
                (
                    "verdict",
                    "container_sent",
                    c(abi::DW_KSTAT_CONTAINER_EXEC).saturating_sub(c(abi::DW_KSTAT_EXEC_FILTERED)),
                ),
            ],
        )?;
        counter(
            &mut enc,
            "kernel_table_full",
            "Kernel map updates that failed because the table was full.",
            &[
                ("table", "procs", c(abi::DW_KSTAT_PROC_TABLE_FULL)),
                ("table", "seen_mntns", c(abi::DW_KSTAT_MNTNS_TABLE_FULL)),
                ("table", "net_seen", c(abi::DW_KSTAT_NET_TABLE_FULL)),
            ],
        )?;
        counter(
            &mut enc,
            "kernel_net_folded",
            "Network events the kernel folded into one already sent (same container, program and endpoint).",
            &[("kind", "net", c(abi::DW_KSTAT_NET_FOLDED))],
        )?;
        counter(
            &mut enc,
            "kernel_file_folded",
            "File write opens the kernel folded into one already sent (same container and inode).",
            &[("kind", "file", c(abi::DW_KSTAT_FILE_FOLDED))],
        )?;
        counter(
            &mut enc,
            "kernel_file_rate_limited",
            "File events over the per-container rate (rules.file.events_per_sec), dropped in the kernel.",
            &[("kind", "file", c(abi::DW_KSTAT_FILE_RATE_LIMITED))],
        )?;
        counter(
            &mut enc,
            "kernel_paths_truncated",
            "Executable paths the kernel truncated (too deep or too long).",
            &[("kind", "exec", c(abi::DW_KSTAT_PATH_TRUNCATED))],
        )?;
        Ok(())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("driftwatch");
        let findings = Family::<FindingLabels, Counter>::default();
        registry.register("findings", "Drift findings emitted, by kind, rule and severity", findings.clone());
        let events = Family::<KindLabel, Counter>::default();
        registry.register("events", "Kernel records decoded by the agent, by kind", events.clone());
        let decode_errors = Family::<ReasonLabel, Counter>::default();
        registry.register("decode_errors", "Kernel records that failed to decode, by reason", decode_errors.clone());
        let enrich_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "enrich_failures",
            "Events whose container could not be resolved, by reason (not_container events are dropped)",
            enrich_failures.clone(),
        );
        let no_finding = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "execs_not_findings",
            "Container events (execs, network endpoints) judged not to be drift, by reason",
            no_finding.clone(),
        );
        let queue_dropped = Family::<QueueLabel, Counter>::default();
        registry.register(
            "userspace_drops",
            "Items dropped because a bounded userspace queue was full, by queue",
            queue_dropped.clone(),
        );
        let sink_writes = Family::<SinkLabels, Counter>::default();
        registry.register("sink_writes", "Findings written by each sink, by result (ok, error)", sink_writes.clone());
        let latency = Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]);
        registry.register(
            "detection_latency_seconds",
            "Time from the kernel event to the finding being emitted",
            latency.clone(),
        );
        let programs_attached = Gauge::default();
        registry.register("bpf_programs_attached", "eBPF programs loaded and attached", programs_attached.clone());
        registry.register(
            "build",
            "Build information",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                abi_version: abi::DW_ABI_VERSION.to_string(),
                bpf_objects: "driftwatch.bpf.o",
            }),
        );
        let containers = super::containers::ContainerSeries::register(&mut registry);
        let kernel = Arc::new(KernelCollector::default());
        registry.register_collector(Box::new(kernel.clone()));
        let otlp_records = Family::<ResultLabel, Counter>::default();
        registry.register(
            "otlp_records",
            "OTLP log records, by result (exported, failed: export failed after retries, dropped: queue full or not flushed at shutdown)",
            otlp_records.clone(),
        );
        let otlp_queued = Gauge::default();
        registry.register("otlp_queued_records", "Findings waiting for OTLP export (bounded)", otlp_queued.clone());
        let findings_waiting = Gauge::default();
        registry.register(
            "findings_waiting",
            "Findings held back for pod metadata or an image comparison (bounded; beyond the bound they go out incomplete)",
            findings_waiting.clone(),
        );
        let am_alerts = Family::<ResultLabel, Counter>::default();
        registry.register(
            "alertmanager_alerts",
            "Alerts pushed to Alertmanager, by result (sent, failed: given up after retries, dropped: queue full)",
            am_alerts.clone(),
        );
        let am_requests = Family::<ResultLabel, Counter>::default();
        registry.register(
            "alertmanager_requests",
            "POSTs to Alertmanager's /api/v2/alerts, by result (ok, error); retries count again",
            am_requests.clone(),
        );
        let am_queued = Gauge::default();
        registry.register(
            "alertmanager_queued_alerts",
            "Alert groups waiting for delivery to Alertmanager (bounded)",
            am_queued.clone(),
        );
        let kube_api = Gauge::default();
        registry.register(
            "kubernetes_api_enabled",
            "1 when pods are watched through the Kubernetes API, 0 in node-only mode",
            kube_api.clone(),
        );
        let kube_errors = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "kubernetes_watch_errors",
            "Pod watch errors, by reason (forbidden: 403, retried with backoff; gone: 410, relisted; other)",
            kube_errors.clone(),
        );
        Self {
            registry,
            findings,
            events,
            decode_errors,
            enrich_failures,
            no_finding,
            queue_dropped,
            sink_writes,
            latency,
            programs_attached,
            kernel,
            containers,
            otlp_records,
            otlp_queued,
            findings_waiting,
            am_alerts,
            am_requests,
            am_queued,
            kube_api,
            kube_errors,
        }
    }

    pub fn set_kernel_source(&self, src: Box<dyn KernelStatsSource>) {
        let _ = self.kernel.source.set(src);
    }

    /// Pre-creates every finding series at 0, so `increase()` in alerts sees
    /// the first finding of a kind (a series born at 1 looks like no change).
    pub fn declare_findings(&self, catalog: &[(&'static str, &'static str, &'static str)]) {
        for (kind, rule, severity) in catalog {
            let _ = self.findings.get_or_create(&FindingLabels { kind, rule, severity });
        }
        let _ = self.events.get_or_create(&KindLabel { kind: "exec" });
        let _ = self.events.get_or_create(&KindLabel { kind: "net" });
        let _ = self.events.get_or_create(&KindLabel { kind: "file" });
        // Every reason a counter can carry starts at 0 too, for the same reason.
        for reason in ["truncated", "unknown_kind", "bad_size", "bad_value"] {
            let _ = self.decode_errors.get_or_create(&ReasonLabel { reason });
        }
        for reason in [
            "not_container",
            "not_found",
            "no_runtime",
            "no_endpoint",
            "connect",
            "timeout",
            "rpc",
            "backlog",
            "not_cached",
            "baseline_corrupt",
            "baseline_io",
        ] {
            let _ = self.enrich_failures.get_or_create(&ReasonLabel { reason });
        }
        for reason in [
            "entrypoint",
            "not_drift",
            "subshell",
            "nested_package_manager",
            "rule_disabled",
            "loopback",
            "allowed",
            "baseline_learning",
            "baseline_expected",
            "metadata_only_copy_up",
            "scratch_path",
        ] {
            let _ = self.no_finding.get_or_create(&ReasonLabel { reason });
        }
    }

    pub fn finding(&self, f: &Finding) {
        self.findings
            .get_or_create(&FindingLabels { kind: f.kind.as_str(), rule: f.rule, severity: f.severity.as_str() })
            .inc();
        // Config drift is judged when a container is found, not at a kernel event.
        if f.kind != crate::classify::Kind::Config {
            let secs = crate::clock::BootClock::since_ns(f.ktime_ns) as f64 / 1e9;
            self.latency.observe(secs);
        }
    }

    /// Pre-creates the Kubernetes API series (called at startup): `enabled` 0 is node-only mode.
    pub fn declare_kube(&self, enabled: bool) {
        self.kube_api.set(enabled as i64);
        for reason in ["forbidden", "gone", "other"] {
            let _ = self.kube_errors.get_or_create(&ReasonLabel { reason });
        }
    }

    /// A pod-watch error: `forbidden` (403), `gone` (410, relisted), `other`.
    pub fn kube_error(&self, reason: &'static str) {
        self.kube_errors.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn event(&self, kind: &'static str) {
        self.events.get_or_create(&KindLabel { kind }).inc();
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
        self.no_finding.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn queue_drop(&self, queue: &'static str) {
        self.queue_dropped.get_or_create(&QueueLabel { queue }).inc();
    }

    pub fn queue_drops(&self, queue: &'static str, n: u64) {
        self.queue_dropped.get_or_create(&QueueLabel { queue }).inc_by(n);
    }

    /// Pre-creates a queue's drop series at 0 so alerts and dashboards see it.
    pub fn declare_queue(&self, queue: &'static str) {
        let _ = self.queue_dropped.get_or_create(&QueueLabel { queue });
    }

    pub fn sink_result(&self, sink: &'static str, ok: bool) {
        self.sink_writes.get_or_create(&SinkLabels { sink, result: if ok { "ok" } else { "error" } }).inc();
    }

    /// `n` results at once (0 is a no-op: no series is created for it).
    pub fn sink_results(&self, sink: &'static str, ok: bool, n: u64) {
        if n > 0 {
            self.sink_writes.get_or_create(&SinkLabels { sink, result: if ok { "ok" } else { "error" } }).inc_by(n);
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

    /// Pre-creates the Alertmanager series at 0 (called when the sink starts).
    pub fn declare_alertmanager(&self) {
        for result in ["sent", "failed", "dropped"] {
            let _ = self.am_alerts.get_or_create(&ResultLabel { result });
        }
        for result in ["ok", "error"] {
            let _ = self.am_requests.get_or_create(&ResultLabel { result });
        }
        self.am_queued.set(0);
    }

    /// `result`: sent | failed | dropped.
    pub fn alertmanager_alerts(&self, result: &'static str, n: u64) {
        self.am_alerts.get_or_create(&ResultLabel { result }).inc_by(n);
    }

    pub fn alertmanager_request(&self, ok: bool) {
        self.am_requests.get_or_create(&ResultLabel { result: if ok { "ok" } else { "error" } }).inc();
    }

    pub fn set_alertmanager_queued(&self, n: usize) {
        self.am_queued.set(n as i64);
    }

    pub fn set_programs_attached(&self, n: i64) {
        self.programs_attached.set(n);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::with_capacity(8 * 1024);
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed;
    impl KernelStatsSource for Fixed {
        fn read(&self) -> Option<abi::dw_kstats> {
            let mut s = abi::dw_kstats::default();
            s.submitted[abi::DW_KIND_EXEC as usize] = 5;
            s.ringbuf_full[abi::DW_KIND_EXEC as usize] = 2;
            s.counters[abi::DW_KSTAT_HOST_EXEC_FILTERED as usize] = 9;
            Some(s)
        }
    }

    #[test]
    fn exposition_has_contract_metrics() {
        let m = Metrics::new();
        m.set_kernel_source(Box::new(Fixed));
        m.declare_queue("events");
        m.decode_error("truncated");
        m.declare_findings(&[("binary", "exec_new_binary", "critical")]);
        let text = m.encode();
        for needle in [
            "driftwatch_build_info{version=\"",
            "driftwatch_kernel_events_total{kind=\"exec\"} 5",
            "driftwatch_kernel_ringbuf_drops_total{kind=\"exec\"} 2",
            "driftwatch_kernel_execs_total{verdict=\"host_filtered\"} 9",
            "driftwatch_userspace_drops_total{queue=\"events\"} 0",
            "driftwatch_decode_errors_total{reason=\"truncated\"} 1",
            "driftwatch_findings_total{kind=\"binary\",rule=\"exec_new_binary\",severity=\"critical\"} 0",
            "# HELP driftwatch_decode_errors Kernel records that failed to decode, by reason.\n",
            "# EOF",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
