//! The agent's side of the investigator's tools: what the admin API and
//! evidence capture read on this node (diff, processes, upper dir), the
//! quarantine and capture started from the config, and their clean-up when a
//! container goes away.

use crate::{
    admin::{ApiError, Backend},
    config::Config,
    containers::{Change, Registry},
    metrics::Metrics,
    pipeline::respond::{QuarantineCtl, Responder, live_pid},
    respond::{diff, evidence, processes},
    sink::event::{NodeEvent, NodeEvents},
};
use serde_json::{Value, json};
use std::{path::PathBuf, sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// The node as the admin API and evidence capture see it.
pub struct NodeView {
    pub registry: Arc<Registry>,
    pub hash_limit: u64,
    pub capture: Option<Arc<evidence::Capture>>,
    pub quarantine: Arc<QuarantineCtl>,
}

impl NodeView {
    /// The full id of the container `prefix` names: the registry's, then
    /// `/proc`'s (a container the registry has not seen yet).
    fn resolve(&self, prefix: &str) -> Result<String, ApiError> {
        let mut ids: Vec<String> =
            self.registry.running().iter().filter(|c| c.id.starts_with(prefix)).map(|c| c.id.clone()).collect();
        if ids.is_empty() {
            ids = crate::procfs::scan(false).containers.into_keys().filter(|id| id.starts_with(prefix)).collect();
        }
        ids.sort();
        ids.dedup();
        match ids.len() {
            0 => Err(ApiError::not_found(format!("no running container {prefix} on this node"))),
            1 => Ok(ids.remove(0)),
            n => Err(ApiError::conflict(format!(
                "{prefix} matches {n} containers: {}; give more of the id",
                ids.join(", ")
            ))),
        }
    }

    fn pid(&self, id: &str) -> Result<u32, ApiError> {
        match live_pid(&self.registry, id) {
            0 => Err(ApiError::not_found(format!("container {id} has no running process on this node"))),
            pid => Ok(pid),
        }
    }

    fn diff_value(&self, id: &str, pid: u32, hash_limit: u64) -> Result<Value, String> {
        let meta = self.registry.cached(id);
        let opts = diff::DiffOptions { hash_limit, ..Default::default() };
        let report = diff::diff_container(id, pid, meta.as_deref(), &opts).map_err(|e| e.to_string())?;
        serde_json::to_value(report).map_err(|e| e.to_string())
    }

    /// Pod and image facts of a container for bundles and events: the
    /// keys the diff report uses (`diff::PodInfo`).
    fn facts(&self, id: &str) -> Value {
        match self.registry.cached(id) {
            Some(m) => serde_json::to_value(diff::PodInfo::of(&m)).unwrap_or_else(|_| json!({})),
            None => json!({}),
        }
    }
}

impl evidence::Collect for NodeView {
    fn diff(&self, id: &str, hash_limit: u64) -> Result<Value, String> {
        self.diff_value(id, live_pid(&self.registry, id), hash_limit)
    }

    fn processes(&self, id: &str) -> Result<Value, String> {
        let list = processes::list(id).map_err(|e| e.to_string())?;
        serde_json::to_value(list).map_err(|e| e.to_string())
    }

    fn upper_dir(&self, id: &str) -> Option<PathBuf> {
        crate::enrich::overlay::container_fs_of(live_pid(&self.registry, id))?.overlay.map(|o| o.upper)
    }
}

/// `diff` errors that are the request's fault are 4xx, the rest 500.
fn diff_status(e: String) -> ApiError {
    if e.contains("no running process") { ApiError::not_found(e) } else { ApiError::internal(e) }
}

impl Backend for NodeView {
    fn diff(&self, id: &str, hash_limit: Option<u64>) -> Result<Value, ApiError> {
        let id = self.resolve(id)?;
        let pid = self.pid(&id)?;
        self.diff_value(&id, pid, hash_limit.unwrap_or(self.hash_limit)).map_err(diff_status)
    }

    fn processes(&self, id: &str) -> Result<Value, ApiError> {
        let id = self.resolve(id)?;
        evidence::Collect::processes(self, &id).map_err(ApiError::not_found)
    }

    fn quarantine_list(&self) -> Result<Value, ApiError> {
        let list = self.quarantine.list().map_err(ApiError::unavailable)?;
        Ok(json!({ "quarantined": list }))
    }

    fn quarantine_apply(&self, id: &str) -> Result<Value, ApiError> {
        let id = self.resolve(id)?;
        let pid = self.pid(&id)?;
        let attrs = match self.facts(&id) {
            Value::Object(m) => m,
            _ => Default::default(),
        };
        let mut v = self.quarantine.apply(&id, pid, "admin API", attrs.clone()).map_err(ApiError::unavailable)?;
        if let Some(meta) = self.registry.cached(&id) {
            self.quarantine.mark_pod(&meta.sandbox_id, "admin API");
        }
        // The pod is the unit of isolation (see pipeline::respond).
        let why = format!("same pod as {} (admin API)", &id[..id.len().min(12)]);
        let also: Vec<String> = crate::pipeline::respond::pod_siblings(&self.registry, &id)
            .into_iter()
            .filter(|(sib, pid)| self.quarantine.apply(sib, *pid, &why, attrs.clone()).is_ok())
            .map(|(sib, _)| sib)
            .collect();
        v["also_quarantined"] = json!(also);
        Ok(v)
    }

    fn quarantine_release(&self, id: &str) -> Result<Value, ApiError> {
        // A quarantined container may have no process left: match the list too.
        let listed: Vec<String> = self
            .quarantine
            .list()
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e["container.id"].as_str().map(str::to_string))
            .filter(|c| c.starts_with(id))
            .collect();
        let id = match listed.as_slice() {
            [one] => one.clone(),
            _ => self.resolve(id)?,
        };
        match self.quarantine.release(&id, "released") {
            Ok(true) => {
                if let Some(meta) = self.registry.cached(&id) {
                    self.quarantine.unmark_pod(&meta.sandbox_id);
                }
                // Its pod was quarantined with it: lift the pod's.
                let mut also = Vec::new();
                for (sib, _) in crate::pipeline::respond::pod_siblings(&self.registry, &id) {
                    if self.quarantine.is_quarantined(&sib) && self.quarantine.release(&sib, "released") == Ok(true) {
                        also.push(sib);
                    }
                }
                Ok(json!({"container.id": id, "released": true, "also_released": also}))
            }
            Ok(false) => Err(ApiError::conflict(format!("container {id} is not quarantined"))),
            Err(e) => Err(ApiError::unavailable(e)),
        }
    }

    fn capture(&self, id: &str) -> Result<Value, ApiError> {
        let Some(c) = &self.capture else {
            return Err(ApiError::unavailable(
                "evidence capture is off (response.capture.on_steps is empty): nowhere to write bundles",
            ));
        };
        let id = self.resolve(id)?;
        // A container with no process left is a 404, not a bundle of errors.
        self.pid(&id)?;
        let got = c.capture_now(self, &id, self.facts(&id));
        let body = json!({
            "container.id": id,
            "driftwatch.evidence.path": got.path.display().to_string(),
            "result": got.outcome.as_str(),
            "bytes": got.bytes,
            "files_copied": got.files_copied,
            "error": got.error,
        });
        match got.outcome {
            evidence::Outcome::Written => Ok(body),
            _ => Err(ApiError::internal(format!(
                "evidence for {id} not written: {}",
                got.error.unwrap_or_else(|| "unknown".into())
            ))),
        }
    }
}

/// What [`start`] built: the pipeline's responder and the admin backend.
pub struct Started {
    pub responder: Arc<Responder>,
    pub view: Arc<NodeView>,
}

/// Starts capture and quarantine from the config, and the clean-up that
/// follows containers going away.
pub fn start(
    cfg: &Config,
    registry: &Arc<Registry>,
    metrics: &Arc<Metrics>,
    events: NodeEvents,
    gate: Arc<crate::pipeline::PolicyGate>,
    cancel: &CancellationToken,
) -> Started {
    let quarantine = Arc::new(QuarantineCtl::new(&cfg.response.quarantine, metrics.clone(), events.clone()));
    // Load now when it is configured or an earlier agent left quarantines:
    // a failure shows at startup, and pinned ones are counted and pruned.
    if (!cfg.response.quarantine.on_steps.is_empty() || quarantine.has_pins())
        && let Err(e) = quarantine.manager()
    {
        tracing::warn!(error = %e, "quarantine unavailable: isolate findings will not cut containers off");
    }
    let view_for_capture = Arc::new(NodeView {
        registry: registry.clone(),
        hash_limit: cfg.response.capture.hash_limit_bytes,
        capture: None,
        quarantine: quarantine.clone(),
    });
    let capture = (!cfg.response.capture.on_steps.is_empty()).then(|| {
        let (m, ev) = (metrics.clone(), events.clone());
        let report: evidence::Report = Arc::new(move |c: &evidence::Captured| report(&m, &ev, c));
        evidence::Capture::start(cfg.response.capture.clone(), view_for_capture.clone(), report)
    });
    let view = Arc::new(NodeView {
        registry: registry.clone(),
        hash_limit: cfg.response.capture.hash_limit_bytes,
        capture: capture.clone(),
        quarantine: quarantine.clone(),
    });
    tokio::spawn(follow_containers(registry.clone(), quarantine.clone(), capture.clone(), cancel.clone()));
    let responder =
        Arc::new(Responder { registry: registry.clone(), capture, quarantine: Some(quarantine), gate: Some(gate) });
    Started { responder, view }
}

/// Metrics, log and OTLP event of one capture.
fn report(metrics: &Metrics, events: &NodeEvents, c: &evidence::Captured) {
    metrics.response.bundle(c.outcome.as_str(), c.bytes);
    let mut attrs = serde_json::Map::new();
    attrs.insert("container.id".into(), c.container_id.clone().into());
    attrs.insert("driftwatch.evidence.path".into(), c.path.display().to_string().into());
    attrs.insert("driftwatch.evidence.result".into(), c.outcome.as_str().into());
    attrs.insert("driftwatch.evidence.bytes".into(), c.bytes.into());
    attrs.insert("driftwatch.evidence.files_copied".into(), (c.files_copied as u64).into());
    if let Some(e) = &c.error {
        attrs.insert("error.message".into(), e.clone().into());
    }
    let (severity, body) = match c.outcome {
        evidence::Outcome::Written => (
            crate::config::Severity::Info,
            format!("evidence for container {} captured in {} ({} bytes)", c.container_id, c.path.display(), c.bytes),
        ),
        _ => (
            crate::config::Severity::Warning,
            format!(
                "evidence for container {} not captured ({}): {}",
                c.container_id,
                c.outcome.as_str(),
                c.error.as_deref().unwrap_or("unknown")
            ),
        ),
    };
    events.emit(NodeEvent { name: "driftwatch.evidence.captured", severity, body, attributes: attrs });
}

/// Releases the quarantine (and forgets the capture window) of a container
/// that is gone; every 10 s prunes quarantines whose container left no
/// process and refreshes the quarantine metrics.
async fn follow_containers(
    registry: Arc<Registry>,
    quarantine: Arc<QuarantineCtl>,
    capture: Option<Arc<evidence::Capture>>,
    cancel: CancellationToken,
) {
    let mut changes = registry.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            c = changes.recv() => match c {
                Ok(Change::Gone(c)) => {
                    if let Some(cap) = &capture {
                        cap.forget(&c.id);
                    }
                    if quarantine.is_quarantined(&c.id) {
                        let q = quarantine.clone();
                        let id = c.id.clone();
                        let _ = tokio::task::spawn_blocking(move || q.release(&id, "container_gone")).await;
                    }
                }
                Ok(Change::Added(_)) => {
                    // A container a quarantined pod (re)started: quarantined too.
                    let (q, r) = (quarantine.clone(), registry.clone());
                    let _ = tokio::task::spawn_blocking(move || q.follow_pods(&r)).await;
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                let (q, r) = (quarantine.clone(), registry.clone());
                let _ = tokio::task::spawn_blocking(move || {
                    // A full /proc scan (every process's cgroup), only once a
                    // quarantine is there to prune: none is the usual case.
                    let live = std::cell::OnceCell::new();
                    q.prune(&|id| live.get_or_init(|| crate::procfs::scan(false).containers).contains_key(id));
                    // Metadata may come after Added: catch up here too.
                    q.follow_pods(&r);
                })
                .await;
            }
        }
    }
}

/// Starts the admin API on `admin_addr` (off when it is empty). A listener
/// that cannot start is a startup error: the operator asked for it.
pub async fn serve_admin(
    cfg: &Config,
    view: Arc<NodeView>,
    metrics: &Arc<Metrics>,
    cancel: &CancellationToken,
) -> Result<(), super::AgentError> {
    let addr = match crate::config::AdminAddr::parse(&cfg.admin_addr) {
        Ok(Some(a)) => a,
        Ok(None) => return Ok(()),
        Err(e) => return Err(super::AgentError::Config(format!("admin_addr: {e}"))),
    };
    let token = match cfg.admin_token_file.as_str() {
        "" => None,
        f => Some(
            crate::config::secret_file(f, "admin token")
                .map_err(|e| super::AgentError::Config(format!("admin_token_file: {e}")))?,
        ),
    };
    let shown = addr.to_string();
    let listener = crate::admin::bind(addr, token)
        .await
        .map_err(|e| super::AgentError::Config(format!("admin API on {shown}: {e}")))?;
    let (m, c) = (metrics.admin.clone(), cancel.clone());
    tokio::spawn(listener.serve(view, m, crate::admin::Limits::default(), c));
    Ok(())
}
