//! The response steps the agent takes itself, at the finding: evidence
//! capture (Investigate) and the node quarantine (Isolate), each for the
//! playbook steps the config lists. Runs in [`super::Emitter::emit`] after
//! the policy gate and redaction, before the sinks: the finding that goes
//! out says what was done (`driftwatch.action`, `driftwatch.evidence.path`).

use crate::{
    classify::{Finding, KILLED, KILLED_QUARANTINED, QUARANTINED},
    containers::Registry,
    respond::{
        evidence::Capture,
        quarantine::{Quarantine, QuarantineError},
    },
};
use std::sync::Arc;

pub struct Responder {
    pub registry: Arc<Registry>,
    pub capture: Option<Arc<Capture>>,
    pub quarantine: Option<Arc<QuarantineCtl>>,
    /// Each container's policy mode, for `response.quarantine.modes`.
    pub gate: Option<Arc<super::PolicyGate>>,
}

impl Responder {
    /// Takes the configured steps for `f`; never fails the finding.
    pub fn act(&self, f: &mut Finding) {
        let step = f.playbook_step.as_str();
        let wants_q = self.quarantine.as_ref().is_some_and(|q| q.wants(step) && self.mode_allows(q, &f.container_id));
        let wants_c = self.capture.as_ref().is_some_and(|c| c.wants(step));
        if !wants_q && !wants_c {
            return;
        }
        if wants_q && let Some(q) = &self.quarantine {
            let pid = live_pid(&self.registry, &f.container_id);
            let reason = format!("{} ({})", f.rule, step);
            let attrs = match serde_json::to_value(&f.k8s) {
                Ok(serde_json::Value::Object(m)) => m,
                _ => Default::default(),
            };
            if q.ensure(&f.container_id, pid, &reason, attrs.clone()) {
                f.action = Some(match f.action {
                    Some(a) if a == KILLED => KILLED_QUARANTINED,
                    _ => QUARANTINED,
                });
                // The pod is the unit of isolation: a sidecar reached over
                // loopback (a mesh proxy) would otherwise relay for it.
                if let Some(meta) = self.registry.cached(&f.container_id) {
                    q.mark_pod(&meta.sandbox_id, &reason);
                }
                let why = format!("same pod as {} ({reason})", short(&f.container_id));
                for (id, sib_pid) in pod_siblings(&self.registry, &f.container_id) {
                    q.ensure(&id, sib_pid, &why, attrs.clone());
                }
            }
        }
        if wants_c && let Some(c) = &self.capture {
            // The line only when the bundle keeps it (a storm's later findings are not).
            let line = || f.to_json();
            let facts = || {
                let mut v = serde_json::to_value(&f.k8s).unwrap_or_default();
                v["container.runtime.name"] = f.container_runtime.into();
                v
            };
            f.evidence_path = c.request(&f.container_id, line, facts).map(|p| p.display().to_string());
        }
    }
}

impl Responder {
    /// `response.quarantine.modes`: empty, or the container's mode is listed.
    fn mode_allows(&self, q: &QuarantineCtl, id: &str) -> bool {
        if q.modes.is_empty() {
            return true;
        }
        let (Some(gate), Some(meta)) = (&self.gate, self.registry.cached(id)) else { return false };
        q.modes.iter().any(|m| m == gate.mode_of(&meta).0.as_str())
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// The other running containers of `id`'s pod, each with a live pid.
pub fn pod_siblings(registry: &Registry, id: &str) -> Vec<(String, u32)> {
    let Some(sandbox) = registry.cached(id).map(|m| m.sandbox_id.clone()).filter(|s| !s.is_empty()) else {
        return Vec::new();
    };
    registry
        .running()
        .iter()
        .filter(|c| c.id != id)
        .filter(|c| registry.cached(&c.id).is_some_and(|m| m.sandbox_id == sandbox && m.is_pod_container()))
        .filter_map(|c| match live_pid(registry, &c.id) {
            0 => None,
            pid => Some((c.id.clone(), pid)),
        })
        .collect()
}

/// A live process of container `id`: the registry's last scan (usually its
/// first process, which lives as long as the container) when it still runs,
/// else the first in a `/proc` walk (pid order: usually the oldest); 0: none.
/// Never the finding's own process: it is often a command that exits a
/// moment later (a quarantine or capture that used it raced its exit, and a
/// zombie has no namespaces left to tell a pod's network from the host's).
pub fn live_pid(registry: &Registry, id: &str) -> u32 {
    let scanned = registry.get(id).map_or(0, |c| c.scanned_pid());
    if crate::procfs::runs_in(scanned, id) {
        return scanned;
    }
    crate::procfs::live_pid_of(id).unwrap_or(0)
}

/// The node quarantine as the pipeline and the admin API use it: the
/// programs are loaded on first use (never on a node that does not use it),
/// every action is counted, logged and sent as an OTLP event.
pub struct QuarantineCtl {
    pin_dir: std::path::PathBuf,
    allow: Vec<crate::config::AllowRule>,
    on_steps: Vec<String>,
    modes: Vec<String>,
    open: std::sync::Mutex<Option<Arc<Quarantine>>>,
    /// Quarantined ids, so a burst of findings does not ask the kernel again.
    known: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Quarantined pods (sandbox id -> why): a container the pod starts
    /// later (the kubelet restarts one whose probes the quarantine cut) is
    /// quarantined too, until a person releases the pod.
    pods: std::sync::Mutex<std::collections::HashMap<String, PodMark>>,
    metrics: Arc<crate::metrics::Metrics>,
    events: crate::sink::event::NodeEvents,
}

impl QuarantineCtl {
    pub fn new(
        cfg: &crate::config::Quarantine,
        metrics: Arc<crate::metrics::Metrics>,
        events: crate::sink::event::NodeEvents,
    ) -> Self {
        let allow = cfg.allow.iter().filter_map(|a| crate::config::AllowRule::parse(a).ok()).collect();
        QuarantineCtl {
            pin_dir: cfg.pin_dir.clone().into(),
            allow,
            on_steps: cfg.on_steps.clone(),
            modes: cfg.modes.clone(),
            open: Default::default(),
            known: Default::default(),
            pods: Default::default(),
            metrics,
            events,
        }
    }

    pub fn wants(&self, step: &str) -> bool {
        self.on_steps.iter().any(|s| s == step)
    }

    /// Quarantines made by an earlier agent (pins in `pin_dir`): opened at
    /// startup so they are listed, counted and pruned.
    pub fn has_pins(&self) -> bool {
        std::fs::read_dir(&self.pin_dir).is_ok_and(|mut d| d.next().is_some())
    }

    /// The loaded manager, loading it on first use.
    pub fn manager(&self) -> Result<Arc<Quarantine>, String> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = &*open {
            return Ok(q.clone());
        }
        let q = Arc::new(Quarantine::open(&self.pin_dir, &self.allow).map_err(|e| e.to_string())?);
        tracing::info!(pin_dir = %self.pin_dir.display(), took_ms = q.opened_in.as_secs_f64() * 1e3, "quarantine programs loaded");
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.extend(q.list().into_iter().map(|e| e.container_id));
        self.metrics.response.set_quarantined(known.len());
        *open = Some(q.clone());
        Ok(q)
    }

    /// The pipeline's call: quarantines `id` unless it already is; whether it
    /// is quarantined now. Failures are counted and logged.
    pub fn ensure(&self, id: &str, pid: u32, reason: &str, attrs: serde_json::Map<String, serde_json::Value>) -> bool {
        if self.known.lock().unwrap_or_else(|p| p.into_inner()).contains(id) {
            return true;
        }
        self.apply(id, pid, reason, attrs).is_ok()
    }

    /// Quarantines `id` (idempotent); the entry as JSON.
    pub fn apply(
        &self,
        id: &str,
        pid: u32,
        reason: &str,
        mut attrs: serde_json::Map<String, serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        let result = self.manager().and_then(|q| {
            if pid == 0 {
                return Err(format!("container {id} has no running process: nothing to find its cgroup by"));
            }
            match q.apply(id, pid, reason) {
                // The process exited under us: once more with one that runs now.
                Err(QuarantineError::NoProcess { .. }) if let Some(again) = crate::procfs::live_pid_of(id) => {
                    q.apply(id, again, reason)
                }
                r => r,
            }
            .map_err(|e| e.to_string())
        });
        match result {
            Ok(a) => {
                let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
                known.insert(id.to_string());
                self.metrics.response.set_quarantined(known.len());
                drop(known);
                self.metrics.response.quarantine_action("apply", if a.already { "already" } else { "ok" });
                let v = entry_json(&a.entry);
                if !a.already {
                    attrs.insert("container.id".into(), id.into());
                    attrs.insert("driftwatch.quarantine.reason".into(), reason.into());
                    attrs.insert("driftwatch.cgroup.path".into(), a.entry.cgroup_path.display().to_string().into());
                    attrs.insert("driftwatch.quarantine.took_ms".into(), (a.took.as_secs_f64() * 1e3).into());
                    self.events.emit(crate::sink::event::NodeEvent {
                        name: "driftwatch.quarantine.applied",
                        severity: crate::config::Severity::Warning,
                        body: format!(
                            "container {id} quarantined: all traffic but the allow list is dropped ({reason})"
                        ),
                        attributes: attrs,
                    });
                }
                Ok(v)
            }
            Err(e) => {
                self.metrics.response.quarantine_action("apply", "failed");
                tracing::warn!(container = id, error = %e, "quarantine failed");
                Err(e)
            }
        }
    }

    /// Lifts the quarantine of `id`; whether there was one. `why`: released
    /// (by a person) or container_gone.
    pub fn release(&self, id: &str, why: &'static str) -> Result<bool, String> {
        let q = match self.manager() {
            Ok(q) => q,
            // Nothing loaded and nothing pinned: nothing to release.
            Err(_) if !self.has_pins() => return Ok(false),
            Err(e) => return Err(e),
        };
        let action = if why == "container_gone" { "prune" } else { "release" };
        match q.release(id) {
            Ok(was) => {
                let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
                known.remove(id);
                self.metrics.response.set_quarantined(known.len());
                drop(known);
                if was {
                    self.metrics.response.quarantine_action(action, "ok");
                    let mut attrs = serde_json::Map::new();
                    attrs.insert("container.id".into(), id.into());
                    attrs.insert("driftwatch.quarantine.released_because".into(), why.into());
                    self.events.emit(crate::sink::event::NodeEvent {
                        name: "driftwatch.quarantine.released",
                        severity: crate::config::Severity::Info,
                        body: format!("container {id}: quarantine lifted ({why})"),
                        attributes: attrs,
                    });
                }
                Ok(was)
            }
            Err(e) => {
                self.metrics.response.quarantine_action(action, "failed");
                Err(e.to_string())
            }
        }
    }

    /// Whether `id` is quarantined, as far as this agent knows.
    pub fn is_quarantined(&self, id: &str) -> bool {
        self.known.lock().unwrap_or_else(|p| p.into_inner()).contains(id)
    }

    /// The quarantined containers (loaded only if something is pinned).
    pub fn list(&self) -> Result<Vec<serde_json::Value>, String> {
        let loaded = self.open.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let q = match loaded {
            Some(q) => q,
            None if self.has_pins() => self.manager()?,
            None => return Ok(Vec::new()),
        };
        Ok(q.list().iter().map(entry_json).collect())
    }

    /// Releases quarantines of containers `live` says are gone; refreshes
    /// the gauges and drop counters.
    pub fn prune(&self, live: &dyn Fn(&str) -> bool) {
        let Some(q) = self.open.lock().unwrap_or_else(|p| p.into_inner()).clone() else { return };
        let released = q.prune(live);
        if !released.is_empty() {
            for id in &released {
                self.metrics.response.quarantine_action("prune", "ok");
                let mut attrs = serde_json::Map::new();
                attrs.insert("container.id".into(), id.as_str().into());
                attrs.insert("driftwatch.quarantine.released_because".into(), "container_gone".into());
                self.events.emit(crate::sink::event::NodeEvent {
                    name: "driftwatch.quarantine.released",
                    severity: crate::config::Severity::Info,
                    body: format!("container {id} is gone: its quarantine is removed"),
                    attributes: attrs,
                });
            }
            // What is pinned now, also releases made through the admin API.
            *self.known.lock().unwrap_or_else(|p| p.into_inner()) =
                q.list().into_iter().map(|e| e.container_id).collect();
        }
        self.metrics.response.set_quarantined(self.known.lock().unwrap_or_else(|p| p.into_inner()).len());
        let (ingress, egress) = q.dropped();
        self.metrics.response.set_dropped(ingress, egress);
    }
}

/// A quarantined pod.
#[derive(Debug, Clone)]
pub struct PodMark {
    pub reason: String,
    /// When a container of it last ran (marks of pods gone for long are dropped).
    pub seen: std::time::Instant,
}

/// Marks of pods with no running container for this long are forgotten
/// (past the kubelet's longest restart back-off, 5 min).
pub const POD_MARK_TTL: std::time::Duration = std::time::Duration::from_secs(600);

impl QuarantineCtl {
    /// Remembers that `sandbox`'s pod is quarantined.
    pub fn mark_pod(&self, sandbox: &str, reason: &str) {
        if sandbox.is_empty() {
            return;
        }
        let mut pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
        pods.entry(sandbox.to_string())
            .or_insert_with(|| PodMark { reason: reason.to_string(), seen: std::time::Instant::now() })
            .seen = std::time::Instant::now();
    }

    /// Forgets the pod's mark (a person released it).
    pub fn unmark_pod(&self, sandbox: &str) {
        self.pods.lock().unwrap_or_else(|p| p.into_inner()).remove(sandbox);
    }

    /// Why `sandbox`'s pod is quarantined, if it is.
    pub fn pod_reason(&self, sandbox: &str) -> Option<String> {
        self.pods.lock().unwrap_or_else(|p| p.into_inner()).get(sandbox).map(|m| m.reason.clone())
    }

    /// Quarantines the running containers of quarantined pods that are not
    /// yet (restarted ones), refreshes the marks and drops stale ones.
    pub fn follow_pods(&self, registry: &Registry) {
        // Pods quarantined before this agent started (pins) are marked once
        // the registry knows them.
        let known: Vec<String> = self.known.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        for id in known {
            if let Some(meta) = registry.cached(&id)
                && meta.is_pod_container()
            {
                self.mark_pod(&meta.sandbox_id, "quarantined before the agent restarted");
            }
        }
        if self.pods.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            return;
        }
        let mut running_sandboxes = std::collections::HashSet::new();
        for c in registry.running() {
            let Some(meta) = registry.cached(&c.id) else { continue };
            if !meta.is_pod_container() {
                continue;
            }
            running_sandboxes.insert(meta.sandbox_id.clone());
            let Some(reason) = self.pod_reason(&meta.sandbox_id) else { continue };
            if self.is_quarantined(&c.id) {
                continue;
            }
            let pid = live_pid(registry, &c.id);
            if pid != 0 {
                let mut attrs = serde_json::Map::new();
                attrs.insert("k8s.namespace.name".into(), meta.namespace.clone().into());
                attrs.insert("k8s.pod.name".into(), meta.pod_name.clone().into());
                attrs.insert("k8s.container.name".into(), meta.container_name.clone().into());
                let _ = self.apply(&c.id, pid, &format!("pod quarantined: {reason}"), attrs);
            }
        }
        let now = std::time::Instant::now();
        self.pods.lock().unwrap_or_else(|p| p.into_inner()).retain(|sandbox, m| {
            if running_sandboxes.contains(sandbox) {
                m.seen = now;
            }
            now.duration_since(m.seen) < POD_MARK_TTL
        });
    }
}

/// An entry as the admin API and `driftwatch quarantine list` show it.
pub fn entry_json(e: &crate::respond::quarantine::Entry) -> serde_json::Value {
    let since = time::OffsetDateTime::from(e.since);
    serde_json::json!({
        "container.id": e.container_id,
        "driftwatch.cgroup.path": e.cgroup_path.display().to_string(),
        "since": crate::clock::rfc3339(since),
        "reason": e.reason,
        "host_network": e.host_network,
        "dropped": {"ingress": e.ingress_dropped, "egress": e.egress_dropped},
    })
}
