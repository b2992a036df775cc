//! What `/healthz` and `/readyz` mean, decided from facts about the agent's
//! parts (a pure [`evaluate`], so every rule is tested without a kernel):
//!
//! | check | fails when | readiness | liveness |
//! |---|---|---|---|
//! | `sensor` | the eBPF programs are not attached yet, or the agent shuts down | yes | no |
//! | `reader` | the ring-buffer reader thread has ended | yes | yes: a restart brings it back |
//! | `registry` | the container registry's task has not completed a round for 3 scan intervals; for 60 s, liveness too | yes | after 60 s |
//! | `stdout` | findings wait for stdout and none was written for `pipeline.sink_stall_timeout_ms` (a log pipe nobody reads) | yes | no: a restart does not unblock a pipe |
//! | `runtime` | the container runtime has not answered for `runtime.unready_after_s` (findings lack pod metadata) | yes | no |
//!
//! Readiness is "the agent is detecting and delivering now"; liveness is
//! "restarting it would help". Every check is also the gauge
//! `driftwatch_health_check{check}` (1 passing, 0 failing), so an unready agent
//! is visible in Prometheus (the chart's Service publishes not-ready
//! addresses: scraping never depends on readiness).

use crate::{
    containers::Registry,
    locks,
    metrics::Metrics,
    sink::{QueueProbe, json},
};
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

/// Every check, in the order they are reported.
pub const CHECKS: [&str; 5] = ["sensor", "reader", "registry", "stdout", "runtime"];

/// A registry silent this long makes the agent not live (the kubelet restarts it).
const REGISTRY_DEAD: Duration = Duration::from_secs(60);

/// The facts the checks are decided from.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub attached: bool,
    pub stopping: bool,
    pub reader_alive: bool,
    /// The registry's loop completed a round recently (its own rule).
    pub registry_alive: bool,
    /// Time since the registry's last round (None: none yet).
    pub registry_silent: Option<Duration>,
    /// Findings waiting for stdout, and time since it last wrote.
    pub stdout_pending: u64,
    pub stdout_stalled: Duration,
    /// How long the runtime has not answered (None: it answers, or is not used).
    pub runtime_down: Option<Duration>,
}

/// Thresholds from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub stdout_stall: Duration,
    pub runtime_down: Duration,
}

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub check: &'static str,
    /// Why it fails (None: passing).
    pub failing: Option<String>,
    /// A failure here also fails liveness.
    pub fatal: bool,
}

/// Decides every check.
pub fn evaluate(f: &Facts, l: &Limits) -> Vec<Verdict> {
    let v = |check, failing: Option<String>, fatal| Verdict { check, failing, fatal };
    let sensor = match (f.stopping, f.attached) {
        (true, _) => Some("shutting down".to_string()),
        (_, false) => Some("eBPF programs not attached yet".to_string()),
        _ => None,
    };
    let reader = (f.attached && !f.reader_alive).then(|| "the ring-buffer reader stopped".to_string());
    let registry = (f.attached && !f.registry_alive).then(|| match f.registry_silent {
        Some(d) => format!("the container registry's task has not completed a round for {}s", d.as_secs()),
        None => "the container registry's task has not completed a round yet".to_string(),
    });
    let registry_dead = f.attached && f.registry_silent.is_some_and(|d| d >= REGISTRY_DEAD);
    let stdout = (f.stdout_pending > 0 && f.stdout_stalled >= l.stdout_stall).then(|| {
        format!(
            "{} findings wait for stdout, none written for {}s (is anything reading the agent's output?)",
            f.stdout_pending,
            f.stdout_stalled.as_secs()
        )
    });
    let runtime = f
        .runtime_down
        .filter(|d| *d >= l.runtime_down)
        .map(|d| format!("the container runtime has not answered for {}s (findings lack pod metadata)", d.as_secs()));
    vec![
        v("sensor", sensor, false),
        v("reader", reader.clone(), reader.is_some()),
        v("registry", registry, registry_dead),
        v("stdout", stdout, false),
        v("runtime", runtime, false),
    ]
}

/// The live parts the facts are read from.
struct Parts {
    reader_alive: Arc<AtomicBool>,
    registry: Arc<Registry>,
    stdout: json::Progress,
    queues: QueueProbe,
}

/// Readiness and liveness of the running agent: nothing is ready before
/// [`Health::watch`], and nothing after [`Health::stop`].
pub struct Health {
    parts: std::sync::RwLock<Option<Parts>>,
    stopping: AtomicBool,
    limits: Limits,
}

impl Default for Limits {
    /// The configuration's defaults: 30 s for stdout, 120 s for the runtime.
    fn default() -> Self {
        Self { stdout_stall: Duration::from_secs(30), runtime_down: Duration::from_secs(120) }
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl Health {
    pub fn new(limits: Limits) -> Self {
        Self { parts: std::sync::RwLock::new(None), stopping: AtomicBool::new(false), limits }
    }

    /// The sensor is attached: its reader, the registry, stdout and the sink
    /// queues are watched from now on.
    pub fn watch(
        &self,
        reader_alive: Arc<AtomicBool>,
        registry: Arc<Registry>,
        stdout: json::Progress,
        queues: QueueProbe,
    ) {
        *locks::write(&self.parts) = Some(Parts { reader_alive, registry, stdout, queues });
    }

    /// Shutting down: not ready any more.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    fn facts(&self) -> Facts {
        let mut f = Facts { stopping: self.stopping.load(Ordering::SeqCst), ..Default::default() };
        if let Some(p) = &*locks::read(&self.parts) {
            f.attached = true;
            f.reader_alive = p.reader_alive.load(Ordering::SeqCst);
            f.registry_alive = p.registry.alive();
            f.registry_silent = p.registry.silent_for();
            f.stdout_pending = p.stdout.pending();
            f.stdout_stalled = p.stdout.since_progress();
            f.runtime_down =
                p.registry.cri().and_then(|c| c.down_for()).filter(|_| self.limits.runtime_down > Duration::ZERO);
        }
        f
    }

    /// Every check, now.
    pub fn verdicts(&self) -> Vec<Verdict> {
        evaluate(&self.facts(), &self.limits)
    }

    /// Ready, or every reason why not.
    pub fn ready(&self) -> Result<(), String> {
        let why: Vec<String> = self.verdicts().into_iter().filter_map(|v| v.failing).collect();
        if why.is_empty() { Ok(()) } else { Err(why.join("; ")) }
    }

    /// Live (restarting would not help), or why not.
    pub fn live(&self) -> Result<(), String> {
        let why: Vec<String> = self.verdicts().into_iter().filter(|v| v.fatal).filter_map(|v| v.failing).collect();
        if why.is_empty() { Ok(()) } else { Err(why.join("; ")) }
    }

    /// Sets `driftwatch_health_check{check}` and the sink queues' depths
    /// (before a scrape).
    pub fn export(&self, metrics: &Metrics) {
        for v in self.verdicts() {
            metrics.health.set(v.check, v.failing.is_none());
        }
        if let Some(p) = &*locks::read(&self.parts) {
            for (queue, depth, capacity) in p.queues.depths() {
                metrics.health.queue(queue, depth, capacity);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits { stdout_stall: Duration::from_secs(30), runtime_down: Duration::from_secs(120) };

    fn healthy() -> Facts {
        Facts {
            attached: true,
            reader_alive: true,
            registry_alive: true,
            registry_silent: Some(Duration::from_secs(1)),
            ..Default::default()
        }
    }

    fn failing(f: &Facts) -> Vec<(&'static str, bool)> {
        evaluate(f, &L).into_iter().filter(|v| v.failing.is_some()).map(|v| (v.check, v.fatal)).collect()
    }

    #[test]
    fn a_healthy_agent_passes_every_check() {
        assert!(failing(&healthy()).is_empty());
        assert_eq!(evaluate(&healthy(), &L).iter().map(|v| v.check).collect::<Vec<_>>(), CHECKS);
    }

    #[test]
    fn before_attach_and_while_stopping_not_ready_but_live() {
        assert_eq!(failing(&Facts::default()), [("sensor", false)]);
        assert_eq!(failing(&Facts { stopping: true, ..healthy() }), [("sensor", false)]);
    }

    #[test]
    fn a_dead_reader_fails_readiness_and_liveness() {
        assert_eq!(failing(&Facts { reader_alive: false, ..healthy() }), [("reader", true)]);
    }

    #[test]
    fn a_silent_registry_is_unready_then_dead() {
        let quiet = Facts { registry_alive: false, registry_silent: Some(Duration::from_secs(20)), ..healthy() };
        assert_eq!(failing(&quiet), [("registry", false)]);
        let dead = Facts { registry_alive: false, registry_silent: Some(Duration::from_secs(61)), ..healthy() };
        assert_eq!(failing(&dead), [("registry", true)]);
    }

    #[test]
    fn a_blocked_stdout_is_unready_only_while_findings_wait() {
        let stuck = Facts { stdout_pending: 12, stdout_stalled: Duration::from_secs(31), ..healthy() };
        assert_eq!(failing(&stuck), [("stdout", false)]);
        let msg = evaluate(&stuck, &L)[3].failing.clone().unwrap();
        assert!(msg.contains("12 findings") && msg.contains("31s"), "{msg}");
        // Idle for an hour with nothing to write: fine.
        assert!(
            failing(&Facts { stdout_pending: 0, stdout_stalled: Duration::from_secs(3600), ..healthy() }).is_empty()
        );
        // Writing slowly but moving: fine.
        assert!(
            failing(&Facts { stdout_pending: 500, stdout_stalled: Duration::from_secs(2), ..healthy() }).is_empty()
        );
    }

    #[test]
    fn an_unreachable_runtime_is_unready_after_its_limit() {
        assert!(failing(&Facts { runtime_down: Some(Duration::from_secs(119)), ..healthy() }).is_empty());
        assert_eq!(failing(&Facts { runtime_down: Some(Duration::from_secs(120)), ..healthy() }), [("runtime", false)]);
    }
}
