//! The last userspace stage before the sinks: a finding gets its pod
//! metadata (waiting a bounded time for the runtime when the registry does
//! not have it yet), its workload, its counters and per-container series, and
//! goes to every sink's queue. Shared by the event pipeline and the
//! configuration-drift task.

use super::{
    order::Order,
    pod_facts::{PodFactsMemo, pod_facts, runtime_name},
    policy::{Gate, PolicyGate},
    redact::Redaction,
};
use crate::{
    classify::{Finding, finding::Boxed},
    containers::{Change, Registry},
    enrich::cri::{ContainerMeta, Lookup},
    metrics::{ContainerFindingLabels, FindingLabels, Metrics},
    sink::Fanout,
};
use std::{ops::ControlFlow, sync::Arc, time::Duration};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

/// Findings waiting (for metadata or an image comparison) at once; beyond
/// it they go out at once, incomplete.
pub const MAX_WAITING: usize = 512;

/// Reasons a finding goes out without complete metadata, beyond the
/// runtime's own (`cri::UNAVAILABLE_REASONS`). `not_cached` is no longer
/// given (network findings wait for metadata too) but stays pre-created: its
/// series is part of the metrics contract.
pub const INCOMPLETE_REASONS: [&str; 4] = ["not_found", "no_runtime", "backlog", "not_cached"];

pub struct Emitter {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    fanout: Fanout,
    metadata_wait: Duration,
    waiting: Arc<Semaphore>,
    /// Secrets replaced before the fan-out; None: redaction is off.
    redaction: Option<Redaction>,
    /// Each container's findings in ticket (event) order.
    order: std::sync::Mutex<Order<Boxed>>,
    /// Approvals and learn mode; None: every finding goes out.
    policy: Option<Arc<PolicyGate>>,
    /// Evidence capture and quarantine (src/pipeline/respond.rs).
    responder: Option<Arc<super::respond::Responder>>,
    /// Each container's pod facts, shared by its findings.
    facts: PodFactsMemo,
}

/// A finding's place in its container's order ([`super::order`]), taken
/// where the pipeline handles its event. Sent with the finding, or dropped
/// unsent when the event turns out not to be one: either way the findings
/// behind it go on.
pub struct Ticket {
    emitter: Arc<Emitter>,
    container: crate::id::Id,
    seq: u64,
    settled: bool,
}

impl Ticket {
    fn settle(mut self, f: Option<Boxed>) {
        self.settled = true;
        self.emitter.settle(&self.container, self.seq, f);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.settled {
            self.emitter.settle(&self.container, self.seq, None);
        }
    }
}

/// What a finding's emitter already found of its container, so that it is
/// not looked up again.
enum Known<'a> {
    /// Nothing: the registry is asked, and the API for the workload.
    Nothing,
    /// The runtime's metadata (the pod facts hold the API's workload).
    Meta(&'a ContainerMeta),
    /// The registry has no metadata (the pod facts say why).
    NoMeta,
}

/// A finding's place among the bounded number that may wait; counted in the
/// `findings_waiting` gauge while held.
pub struct WaitSlot {
    _permit: OwnedSemaphorePermit,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for WaitSlot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Emitter {
    pub fn new(registry: Arc<Registry>, metrics: Arc<Metrics>, fanout: Fanout, metadata_wait: Duration) -> Self {
        Self {
            registry,
            metrics,
            fanout,
            metadata_wait,
            waiting: Arc::new(Semaphore::new(MAX_WAITING)),
            redaction: None,
            order: Default::default(),
            policy: None,
            responder: None,
            facts: PodFactsMemo::default(),
        }
    }

    /// The next place in `container`'s order: take it while handling the
    /// event, before anything that may wait.
    pub fn ticket(self: &Arc<Self>, container: &str) -> Ticket {
        let container = crate::id::Id::key(container);
        let seq = crate::locks::lock(&self.order).ticket(container);
        Ticket { emitter: self.clone(), container, seq, settled: false }
    }

    /// Sends what is due under the lock: two tasks releasing findings of one
    /// container must not interleave their sends. Sending never blocks.
    fn settle(&self, container: &crate::id::Id, seq: u64, f: Option<Boxed>) {
        let mut order = crate::locks::lock(&self.order);
        order.settle(container, seq, f, |f| self.fanout.send(f, &self.metrics));
        self.metrics.pipeline.findings_held.set(order.held() as i64);
    }

    /// Redacts every finding before it reaches any sink.
    pub fn with_redaction(mut self, redaction: Option<Redaction>) -> Self {
        self.redaction = redaction;
        self
    }

    /// Judges every finding by the policy before it goes out.
    pub fn with_responder(mut self, r: Arc<super::respond::Responder>) -> Self {
        self.responder = Some(r);
        self
    }

    pub fn with_policy(mut self, policy: Arc<PolicyGate>) -> Self {
        self.policy = Some(policy);
        self
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Longest a finding waits for its container's metadata.
    pub fn metadata_wait(&self) -> Duration {
        self.metadata_wait
    }

    /// A waiting slot, or None when `MAX_WAITING` findings already wait.
    pub fn wait_slot(&self) -> Option<WaitSlot> {
        let permit = self.waiting.clone().try_acquire_owned().ok()?;
        self.metrics.pipeline.findings_waiting.inc();
        Some(WaitSlot { _permit: permit, gauge: self.metrics.pipeline.findings_waiting.clone() })
    }

    /// Waits until no finding is held any more (at shutdown).
    pub async fn drain(&self) {
        let _ = self.waiting.acquire_many(MAX_WAITING as u32).await;
    }

    /// Adds pod metadata (waiting a bounded time for the runtime) and emits.
    pub fn enrich(self: &Arc<Self>, t: Ticket, f: Boxed) {
        match self.registry.settled(&f.container_id) {
            Some(Lookup::Found(meta)) => return self.found(t, f, &meta),
            Some(Lookup::NotFound) => return self.incomplete(t, f, "not_found"),
            Some(Lookup::Unavailable(reason)) => return self.incomplete(t, f, reason),
            None => {}
        }
        if self.registry.cri().is_none() {
            self.incomplete(t, f, "no_runtime");
            return;
        }
        let Some(slot) = self.wait_slot() else {
            self.incomplete(t, f, "backlog");
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match me.registry.resolve(&f.container_id, me.metadata_wait).await {
                Lookup::Found(meta) => me.found(t, f, &meta),
                Lookup::NotFound => me.incomplete(t, f, "not_found"),
                Lookup::Unavailable(reason) => me.incomplete(t, f, reason),
            }
        });
    }

    /// Emits with the container's metadata (`f` as the classifier made it:
    /// its pod facts hold at most the cgroup's pod uid).
    pub fn found(&self, t: Ticket, mut f: Boxed, meta: &Arc<ContainerMeta>) {
        f.container_runtime = runtime_name(f.container_runtime, meta);
        let api_workload = (!meta.namespace.is_empty() && !meta.pod_name.is_empty())
            .then(|| self.registry.workload(&meta.namespace, &meta.pod_name))
            .flatten();
        f.k8s = self.facts.found(&f.container_id, meta, f.k8s.pod_uid.as_deref(), api_workload, |id| self.running(id));
        self.emit_with(t, f, Known::Meta(meta));
    }

    /// Emits without metadata, saying why (`f` as the classifier made it).
    pub fn incomplete(&self, t: Ticket, mut f: Boxed, reason: &'static str) {
        self.metrics.pipeline.enrich_failure(reason);
        f.k8s = self.facts.missing(&f.container_id, reason, f.k8s.pod_uid.as_deref(), |id| self.running(id));
        self.emit_with(t, f, Known::NoMeta);
    }

    /// Whether container `id` still runs (the pod facts memo keeps those when full).
    fn running(&self, id: &str) -> bool {
        self.registry.get(id).is_some_and(|c| c.is_running())
    }

    /// The workload of a finding: the owner the Kubernetes API resolved
    /// (Pod -> ReplicaSet -> Deployment, Job -> CronJob, ...) when the API
    /// knows the pod; else what [`apply_metadata`] derived from the
    /// controller labels (node-only heuristic).
    pub fn apply_workload(&self, f: &mut Finding) {
        if let (Some(ns), Some(pod)) = (&f.k8s.namespace, &f.k8s.pod_name)
            && let Some((kind, name)) = self.registry.workload(ns, pod)
        {
            let k = f.k8s_mut();
            k.workload_kind = Some(kind);
            k.workload_name = Some(name);
        }
    }

    /// Redacts a finding, counts it and hands it to the sinks: the one place
    /// findings leave the pipeline, so no sink sees a secret it carried; in
    /// its container's order (`t`).
    pub fn emit(&self, t: Ticket, f: Boxed) {
        self.emit_with(t, f, Known::Nothing);
    }

    /// [`Self::emit`] with what the caller already knows of the container.
    fn emit_with(&self, t: Ticket, mut f: Boxed, known: Known<'_>) {
        if let Known::Nothing = known {
            self.apply_workload(&mut f);
        }
        // Approvals see what the kernel saw (before redaction).
        if let Some(p) = &self.policy {
            let gate = match known {
                Known::Nothing => p.judge(&mut f),
                Known::Meta(m) => p.judge_with(&mut f, Some(m)),
                Known::NoMeta => p.judge_with(&mut f, None),
            };
            if gate == Gate::Hold {
                return t.settle(None);
            }
        }
        if let Some(r) = &self.redaction {
            r.apply(&mut f);
        }
        if let Some(r) = &self.responder {
            r.act(&mut f);
        }
        let labels = FindingLabels { kind: f.kind.as_str(), rule: f.rule, severity: f.severity.as_str() };
        // Config drift is judged when a container is found, not at a kernel event.
        let latency = (f.kind != crate::classify::Kind::Config)
            .then(|| crate::clock::BootClock::since_ns(f.ktime_ns) as f64 / 1e9);
        self.metrics.pipeline.finding(&labels, latency);
        fn label(v: &Option<String>) -> &str {
            v.as_deref().unwrap_or_default()
        }
        self.metrics.containers.finding_in_pod(
            &f.container_id,
            f.k8s.pod_name.as_deref().unwrap_or_default(),
            ContainerFindingLabels {
                namespace: label(&f.k8s.namespace),
                workload: label(&f.k8s.workload_name),
                container: label(&f.k8s.container_name),
                kind: labels.kind,
                rule: labels.rule,
                severity: labels.severity,
            },
        );
        t.settle(Some(f));
    }
}

/// Copies what the runtime knows about the container into the finding. The
/// workload set here is the label heuristic; [`Emitter::emit`] replaces it
/// with the API's owner when the Kubernetes API knows the pod.
pub fn apply_metadata(f: &mut Finding, m: &ContainerMeta) {
    f.container_runtime = runtime_name(f.container_runtime, m);
    f.k8s = Arc::new(pod_facts(m, f.k8s.pod_uid.as_deref(), None).into());
}

/// How often gone containers' series are retired.
const SERIES_SWEEP: Duration = Duration::from_secs(5);

/// Retires the per-container series of containers the registry says are
/// gone: their drifted gauges drop at the next sweep, their finding series go
/// after the linger period.
pub fn retire_series(registry: Arc<Registry>, metrics: Arc<Metrics>, cancel: CancellationToken) {
    let changes = Arc::new(std::sync::Mutex::new(registry.subscribe()));
    crate::tasks::spawn_every(SERIES_SWEEP, cancel, move || {
        let (changes, metrics, registry) = (changes.clone(), metrics.clone(), registry.clone());
        async move {
            let now = std::time::Instant::now();
            let mut rx = crate::locks::lock(&changes);
            loop {
                match rx.try_recv() {
                    Ok(Change::Gone(c)) => metrics.containers.gone(&c.id, now),
                    Ok(Change::Added(_)) => {}
                    Err(broadcast::error::TryRecvError::Lagged(n)) => {
                        // Missed notices: ask the registry about every container with series.
                        metrics.registry_stats.lagged.inc_by(n);
                        for id in metrics.containers.live_ids() {
                            if !registry.get(&id).is_some_and(|c| c.is_running()) {
                                metrics.containers.gone(&id, now);
                            }
                        }
                    }
                    Err(broadcast::error::TryRecvError::Empty) => break,
                    Err(broadcast::error::TryRecvError::Closed) => return ControlFlow::Break(()),
                }
            }
            metrics.containers.expire(now);
            ControlFlow::Continue(())
        }
    });
}
