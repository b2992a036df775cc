//! Prometheus metrics (OpenMetrics text via prometheus-client): one registry,
//! one group per subsystem, each registering its own series.
//!
//! A leaf of the crate: it knows names, help texts and label sets, nothing of
//! the agent's types (the kernel counters arrive as the ABI's plain struct),
//! so every stage can count without metrics depending on the stage.
//! Labels are bounded: kind, rule, severity, reasons, stage and queue names;
//! never pids, paths, container ids or digests.

pub mod admin;
pub mod containers;
pub mod deprecated;
pub mod enrich;
pub mod health;
pub mod http;
pub mod kernel;
pub mod pipeline;
pub mod policy;
pub mod respond;
pub mod response;
pub mod sinks;

pub use admin::AdminMetrics;
pub use containers::{ContainerFindingLabels, ContainerIdentity, ContainerSeries};
pub use enrich::{CriMetrics, KubeMetrics, RegistryMetrics};
pub use health::HealthMetrics;
pub use http::HttpMetrics;
pub use kernel::{KernelMetrics, KernelStatsSource};
pub use pipeline::{FindingLabels, PipelineMetrics};
pub use policy::PolicyMetrics;
pub use response::ResponseMetrics;
pub use sinks::{AlertmanagerTargetMetrics, SinkMetrics};

use prometheus_client::registry::Registry;

/// Queue of ephemeral-container events from the pod watch, in `userspace_drops`.
pub const KUBE_EVENTS_QUEUE: &str = "kube_ephemeral";

pub struct Metrics {
    registry: Registry,
    pub pipeline: PipelineMetrics,
    pub sinks: SinkMetrics,
    pub kernel: KernelMetrics,
    pub cri: CriMetrics,
    pub kube: KubeMetrics,
    pub registry_stats: RegistryMetrics,
    pub health: HealthMetrics,
    /// The HTTP listeners (src/server.rs): connections refused or cut.
    pub http: HttpMetrics,
    /// Series labelled by namespace, workload and container name.
    pub containers: ContainerSeries,
    /// Approvals, learn mode, modes, reloads.
    pub policy: PolicyMetrics,
    /// Evidence bundles and quarantines.
    pub response: ResponseMetrics,
    /// The admin API (src/admin/).
    pub admin: AdminMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
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
        let r = &mut registry;
        let pipeline = PipelineMetrics::register(r);
        let sinks = SinkMetrics::register(r);
        let kernel = KernelMetrics::register(r);
        let cri = CriMetrics::register(r);
        let mut kube = KubeMetrics::register(r);
        kube.events_dropped = pipeline.queue_counter(KUBE_EVENTS_QUEUE);
        let registry_stats = RegistryMetrics::register(r);
        let health = HealthMetrics::register(r);
        let containers = ContainerSeries::register(r);
        let http = HttpMetrics::register(r);
        let policy = PolicyMetrics::register(r);
        let response = ResponseMetrics::register(r);
        let admin = AdminMetrics::register(r);
        Self {
            registry,
            pipeline,
            sinks,
            kernel,
            cri,
            kube,
            registry_stats,
            health,
            http,
            containers,
            policy,
            response,
            admin,
        }
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
    use crate::abi;

    #[derive(Debug)]
    pub(super) struct Fixed;
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
        m.kernel.set_source(Box::new(Fixed));
        m.pipeline.declare_queue("events");
        m.pipeline.decode_error("truncated");
        m.pipeline.declare_findings([FindingLabels { kind: "binary", rule: "exec_new_binary", severity: "critical" }]);
        let text = m.encode();
        for needle in [
            "driftwatch_build_info{version=\"",
            "driftwatch_kernel_events_submitted_total{kind=\"exec\"} 5",
            "driftwatch_kernel_events_total{kind=\"exec\"} 5",
            "driftwatch_kernel_ringbuf_drops_total{kind=\"exec\"} 2",
            "driftwatch_kernel_execs_total{verdict=\"host_filtered\"} 9",
            "driftwatch_userspace_drops_total{queue=\"events\"} 0",
            "driftwatch_userspace_drops_total{queue=\"kube_ephemeral\"} 0",
            "driftwatch_decode_errors_total{reason=\"truncated\"} 1",
            "driftwatch_findings_total{kind=\"binary\",rule=\"exec_new_binary\",severity=\"critical\"} 0",
            "driftwatch_cri_lookups_total{result=\"hit\"} 0",
            "# HELP driftwatch_decode_errors Kernel records that failed to decode, by reason.\n",
            "# EOF",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
