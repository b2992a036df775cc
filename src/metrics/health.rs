//! The agent's own health, for Prometheus: each readiness check, and how
//! full each sink's queue is (set before every scrape).

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabel {
    check: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: &'static str,
}

#[derive(Debug, Default)]
pub struct HealthMetrics {
    checks: Family<CheckLabel, Gauge>,
    depth: Family<QueueLabel, Gauge>,
    capacity: Family<QueueLabel, Gauge>,
}

impl HealthMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Self::default();
        r.register(
            "health_check",
            "1 when the agent's check passes, 0 when it fails (sensor, reader, registry, stdout, runtime; see /readyz)",
            m.checks.clone(),
        );
        r.register("sink_queue_depth", "Findings waiting in each sink's bounded queue", m.depth.clone());
        r.register("sink_queue_capacity", "Size of each sink's bounded queue", m.capacity.clone());
        m
    }

    pub fn set(&self, check: &'static str, ok: bool) {
        self.checks.get_or_create(&CheckLabel { check }).set(ok as i64);
    }

    pub fn queue(&self, queue: &'static str, depth: usize, capacity: usize) {
        self.depth.get_or_create(&QueueLabel { queue }).set(depth as i64);
        self.capacity.get_or_create(&QueueLabel { queue }).set(capacity as i64);
    }
}
