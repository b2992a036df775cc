//! Enrichment's groups: the container runtime (CRI), the Kubernetes API and
//! the container registry that joins them, with their cache sizes.
//!
//! Each group is `Clone` (the handles share their series) and `Default` (an
//! unregistered group, for tests and for code that runs without an agent).

use super::{pipeline::ReasonLabel, sinks::ResultLabel};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// CRI client: connection and lookups.
#[derive(Clone, Debug, Default)]
pub struct CriMetrics {
    pub connected: Gauge,
    connects: Family<ResultLabel, Counter>,
    lookups: Family<ResultLabel, Counter>,
}

impl CriMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Self::default();
        r.register("cri_connected", "1 while the container runtime (CRI) answers, else 0", m.connected.clone());
        r.register(
            "cri_connects",
            "Connection attempts to the container runtime, by result (ok, failed); ok beyond the first are reconnects",
            m.connects.clone(),
        );
        r.register(
            "cri_lookups",
            "Container metadata lookups, by result (hit: from the registry; miss: asked the runtime)",
            m.lookups.clone(),
        );
        for result in ["ok", "failed"] {
            let _ = m.connects.get_or_create(&ResultLabel { result });
        }
        for result in ["hit", "miss"] {
            let _ = m.lookups.get_or_create(&ResultLabel { result });
        }
        m
    }

    pub fn connect(&self, ok: bool) {
        self.connects.get_or_create(&ResultLabel { result: if ok { "ok" } else { "failed" } }).inc();
    }

    pub fn lookup(&self, hit: bool) {
        self.lookups.get_or_create(&ResultLabel { result: if hit { "hit" } else { "miss" } }).inc();
    }

    /// (ok, failed) connection attempts so far.
    pub fn connects(&self) -> (u64, u64) {
        let get = |result| self.connects.get_or_create(&ResultLabel { result }).get();
        (get("ok"), get("failed"))
    }

    /// (hits, misses) so far.
    pub fn lookups(&self) -> (u64, u64) {
        let get = |result| self.lookups.get_or_create(&ResultLabel { result }).get();
        (get("hit"), get("miss"))
    }
}

/// Kubernetes API: the pod watch and owner lookups.
#[derive(Clone, Debug, Default)]
pub struct KubeMetrics {
    enabled: Gauge,
    errors: Family<ReasonLabel, Counter>,
    pub lists: Counter,
    pub owner_gets: Counter,
    pub pods: Gauge,
    /// `driftwatch_userspace_drops_total{queue="kube_ephemeral"}`: ephemeral-container events refused by a full queue.
    pub events_dropped: Counter,
}

impl KubeMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Self::default();
        r.register(
            "kubernetes_api_enabled",
            "1 when pods are watched through the Kubernetes API, 0 in node-only mode",
            m.enabled.clone(),
        );
        r.register(
            "kubernetes_watch_errors",
            "Pod watch errors, by reason (forbidden: 403, retried with backoff; gone: 410, relisted; other)",
            m.errors.clone(),
        );
        r.register(
            "kubernetes_pod_lists",
            "Complete lists of this node's pods (the first, then one per relist)",
            m.lists.clone(),
        );
        r.register(
            "kubernetes_owner_gets",
            "GETs of a pod's intermediate owner (ReplicaSet, Job) to find its workload; cached",
            m.owner_gets.clone(),
        );
        r.register("kubernetes_pods", "Pods of this node in the API index", m.pods.clone());
        m
    }

    /// Pre-creates the series (called at startup): `enabled` 0 is node-only mode.
    pub fn declare(&self, enabled: bool) {
        self.enabled.set(enabled as i64);
        for reason in ["forbidden", "gone", "other"] {
            let _ = self.errors.get_or_create(&ReasonLabel { reason });
        }
    }

    /// A pod-watch error: `forbidden` (403), `gone` (410, relisted), `other`.
    pub fn error(&self, reason: &'static str) {
        self.errors.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn errors(&self, reason: &'static str) -> u64 {
        self.errors.get_or_create(&ReasonLabel { reason }).get()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabel {
    cache: &'static str,
}

/// The container registry: what it tracks, and what it let go.
#[derive(Clone, Debug, Default)]
pub struct RegistryMetrics {
    /// Containers known (running, or ended within the grace period).
    pub tracked: Gauge,
    /// Containers running now (processes or the runtime say so).
    pub running: Gauge,
    entries: Family<CacheLabel, Gauge>,
    /// Entries dropped to stay within the registry's bound.
    pub evicted: Counter,
    /// Added/Gone notices a slow consumer missed (it resynchronises).
    pub lagged: Counter,
}

impl RegistryMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Self::default();
        r.register(
            "containers_tracked",
            "Containers the agent knows: running, or ended within the grace period",
            m.tracked.clone(),
        );
        r.register(
            "containers_running",
            "Containers running on this node, as the last /proc scan and runtime listing saw them",
            m.running.clone(),
        );
        r.register(
            "cache_entries",
            "Entries of the agent's bounded caches, by cache (copy_up verdicts, container filesystems, kubernetes pod owners, container cgroup paths, ...)",
            m.entries.clone(),
        );
        r.register(
            "containers_evicted",
            "Containers dropped from the registry to stay within its bound",
            m.evicted.clone(),
        );
        r.register(
            "container_changes_lagged",
            "Container added/gone notices a slow consumer missed (it resynchronises from the registry)",
            m.lagged.clone(),
        );
        m
    }

    /// Sets the size of one cache (`copy_up`, `filesystem`, `kube_owners`, `container_paths`, ...).
    pub fn cache_entries(&self, cache: &'static str, n: usize) {
        self.entries.get_or_create(&CacheLabel { cache }).set(n as i64);
    }

    /// The gauge of one cache's size, at 0, for a hot path that sets it
    /// without looking its series up each time.
    pub fn cache_gauge(&self, cache: &'static str) -> prometheus_client::metrics::gauge::Gauge {
        self.entries.get_or_create(&CacheLabel { cache }).clone()
    }
}
