//! Kubernetes API (optional): the pods of this node, their owner workloads and
//! specs, for the `workload` label and the config-drift checks.
//!
//! - **Only this node's pods**: one watch with the field selector
//!   `spec.nodeName=<NODE_NAME>` (kube-runtime's watcher: list, then watch from
//!   the list's resourceVersion). A `410 Gone` (resourceVersion too old) makes
//!   the watcher relist, and the index is replaced atomically at the end of the
//!   relist (`Init` .. `InitDone`), so pods deleted meanwhile do not linger.
//! - **Forbidden is not fatal**: a `403` (RBAC missing) is logged once, counted
//!   (`driftwatch_kube_errors_total{reason="forbidden"}`), retried with the
//!   watcher's exponential backoff; the agent keeps running on node-only data.
//! - **Owners**: Pod -> ReplicaSet -> Deployment and Job -> CronJob need one GET
//!   of the intermediate object, cached (these links never change); StatefulSet,
//!   DaemonSet, ReplicationController and Job come from the pod's own
//!   controller reference. A GET that fails (403, 404) falls back to what names
//!   and labels say (`pod-template-hash`, CronJob job names).
//! - **Reads never wait**: [`KubeIndex::workload`] and [`KubeIndex::pod`] read a
//!   map filled by the watch task.
//!
//! Without API access (node-only mode) the pipeline uses the label heuristic of
//! [`super::workload`] and the config-drift checks that CRI alone allows.

use crate::{
    config::{KubeMode, Kubernetes},
    metrics::KubeMetrics,
};
use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::ReplicaSet,
    batch::v1::Job,
    core::v1::{Container, Pod},
};
use kube::{
    Api, Client,
    api::ObjectMeta,
    runtime::{WatchStreamExt, watcher},
};
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::locks::{lock, read, write};

/// Features that need the API, named in the node-only log line.
pub const API_ONLY_FEATURES: &str = "owner workloads from the API (the workload label falls back to controller labels), \
     ephemeral-container detection (kubectl debug), image checks against the pod spec (the runtime's image name is used)";

/// Owner lookups cached (ReplicaSets and Jobs); the cache is cleared when full.
const MAX_OWNERS: usize = 8192;
/// A failed owner GET is retried after this long.
const NEGATIVE_OWNER_TTL: Duration = Duration::from_secs(60);
/// Ephemeral-container events waiting for the config-drift task.
const EVENT_QUEUE: usize = 1024;

/// A container as the pod spec declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecContainer {
    pub name: String,
    /// As written in the spec.
    pub image: String,
    /// `securityContext.readOnlyRootFilesystem`.
    pub read_only_root: bool,
    /// An init container.
    pub init: bool,
    /// Exec commands the kubelet runs in it: (`probe` | `lifecycle_hook`, argv).
    pub exec_commands: Vec<(&'static str, Vec<String>)>,
    /// (volume name, mount path) of its volume mounts.
    pub mounts: Vec<(String, String)>,
}

/// Volume name -> the objects a Secret, ConfigMap or projected volume shows.
fn volume_objects(spec: &k8s_openapi::api::core::v1::PodSpec) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for v in spec.volumes.iter().flatten() {
        let object = if let Some(s) = &v.secret {
            s.secret_name.clone()
        } else if let Some(c) = &v.config_map {
            Some(c.name.clone())
        } else if let Some(p) = &v.projected {
            let names: Vec<String> = p
                .sources
                .iter()
                .flatten()
                .filter_map(|s| {
                    s.secret.as_ref().map(|x| x.name.clone()).or_else(|| s.config_map.as_ref().map(|x| x.name.clone()))
                })
                .collect();
            (!names.is_empty()).then(|| names.join(","))
        } else {
            None
        };
        if let Some(o) = object.filter(|o| !o.is_empty()) {
            out.insert(v.name.clone(), o);
        }
    }
    out
}

/// The exec commands of a container's probes and lifecycle hooks.
fn exec_commands(c: &Container) -> Vec<(&'static str, Vec<String>)> {
    let probes = [&c.liveness_probe, &c.readiness_probe, &c.startup_probe];
    let mut v: Vec<(&'static str, Vec<String>)> = probes
        .into_iter()
        .filter_map(|p| p.as_ref()?.exec.as_ref()?.command.clone())
        .map(|cmd| ("probe", cmd))
        .collect();
    if let Some(l) = &c.lifecycle {
        for h in [&l.post_start, &l.pre_stop].into_iter().flatten() {
            if let Some(cmd) = h.exec.as_ref().and_then(|e| e.command.clone()) {
                v.push(("lifecycle_hook", cmd));
            }
        }
    }
    v
}

/// An ephemeral container (`kubectl debug`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EphemeralSpec {
    pub name: String,
    pub image: String,
    pub target: Option<String>,
}

/// What the index keeps of one pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodEntry {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// (kind, name) of the owning workload; `("Pod", name)` for a bare pod.
    pub workload: Option<(&'static str, String)>,
    /// Containers and init containers.
    pub containers: Vec<SpecContainer>,
    pub ephemeral: Vec<EphemeralSpec>,
    /// Runtime container id (without `containerd://`) -> container name, from the status.
    pub container_ids: HashMap<String, String>,
    /// Volume name -> the Secret/ConfigMap it shows (projected: its sources, comma-separated).
    pub volume_objects: HashMap<String, String>,
}

impl PodEntry {
    pub fn container(&self, name: &str) -> Option<&SpecContainer> {
        self.containers.iter().find(|c| c.name == name)
    }
}

/// An ephemeral container seen for the first time (once per pod uid and name).
#[derive(Debug, Clone, PartialEq)]
pub struct EphemeralAdded {
    pub pod: Arc<PodEntry>,
    pub spec: EphemeralSpec,
    /// Its runtime id, when the status already has it.
    pub container_id: Option<String>,
}

type OwnerKey = (String, &'static str, String);
/// (kind, name) of a workload.
pub type WorkloadRef = (&'static str, String);

/// This node's pods from the API. See the module docs.
pub struct KubeIndex {
    node: String,
    pods: RwLock<HashMap<(String, String), Arc<PodEntry>>>,
    /// Ephemeral containers already reported, by pod uid.
    ephemeral_seen: Mutex<HashMap<String, HashSet<String>>>,
    owners: Mutex<HashMap<OwnerKey, (Instant, Option<WorkloadRef>)>>,
    synced: AtomicBool,
    forbidden_logged: AtomicBool,
    events: mpsc::Sender<EphemeralAdded>,
    events_rx: Mutex<Option<mpsc::Receiver<EphemeralAdded>>>,
    metrics: KubeMetrics,
}

impl std::fmt::Debug for KubeIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeIndex").field("node", &self.node).finish_non_exhaustive()
    }
}

/// How the client is configured, from `kubernetes:` and the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    InCluster,
    Kubeconfig(std::path::PathBuf),
}

/// Decides whether the API is used: `None` is node-only mode.
pub fn source(cfg: &Kubernetes) -> Option<Source> {
    if cfg.enabled == KubeMode::Off {
        return None;
    }
    if !cfg.kubeconfig.is_empty() {
        return Some(Source::Kubeconfig(cfg.kubeconfig.clone().into()));
    }
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return Some(Source::InCluster);
    }
    let home = std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".kube/config"));
    let found =
        std::env::var_os("KUBECONFIG").map(std::path::PathBuf::from).into_iter().chain(home).find(|p| p.is_file());
    match (found, cfg.enabled) {
        (Some(p), _) => Some(Source::Kubeconfig(p)),
        // `true` with nothing found: in-cluster config will say what is missing.
        (None, KubeMode::On) => Some(Source::InCluster),
        (None, _) => None,
    }
}

/// Builds a client from `src`.
pub async fn client(src: &Source) -> Result<Client, String> {
    let config = match src {
        Source::InCluster => kube::Config::incluster().map_err(|e| format!("in-cluster config: {e}"))?,
        Source::Kubeconfig(p) => {
            let kc = kube::config::Kubeconfig::read_from(p).map_err(|e| format!("kubeconfig {}: {e}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", p.display()))?
        }
    };
    Client::try_from(config).map_err(|e| format!("kubernetes client: {e}"))
}

/// Starts the index from the config, or logs node-only mode once and returns None.
pub async fn start(
    cfg: &Kubernetes,
    node: &str,
    metrics: KubeMetrics,
    cancel: CancellationToken,
) -> Option<Arc<KubeIndex>> {
    let Some(src) = source(cfg) else {
        tracing::info!(disabled = API_ONLY_FEATURES, "Kubernetes API not configured: node-only mode");
        return None;
    };
    match client(&src).await {
        Ok(c) => {
            tracing::info!(source = ?src, node, "watching this node's pods through the Kubernetes API");
            Some(KubeIndex::spawn(c, node, metrics, cancel))
        }
        Err(e) => {
            tracing::warn!(error = %e, disabled = API_ONLY_FEATURES, "Kubernetes API unavailable: node-only mode");
            None
        }
    }
}

impl KubeIndex {
    /// An empty index (no task); [`Self::spawn`] fills one from the API.
    pub fn new(node: &str, metrics: KubeMetrics) -> Arc<KubeIndex> {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        Arc::new(KubeIndex {
            node: node.to_string(),
            pods: RwLock::new(HashMap::new()),
            ephemeral_seen: Mutex::new(HashMap::new()),
            owners: Mutex::new(HashMap::new()),
            synced: AtomicBool::new(false),
            forbidden_logged: AtomicBool::new(false),
            events: tx,
            events_rx: Mutex::new(Some(rx)),
            metrics,
        })
    }

    /// Starts the watch task; ephemeral-container events are available from
    /// [`Self::take_events`].
    pub fn spawn(client: Client, node: &str, metrics: KubeMetrics, cancel: CancellationToken) -> Arc<KubeIndex> {
        let idx = Self::new(node, metrics);
        let me = idx.clone();
        tokio::spawn(async move { me.run(client, cancel).await });
        idx
    }

    /// The ephemeral-container event stream (once).
    pub fn take_events(&self) -> Option<mpsc::Receiver<EphemeralAdded>> {
        lock(&self.events_rx).take()
    }

    /// The first list has completed.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// The owning workload of a pod on this node, from the cache.
    pub fn workload(&self, namespace: &str, pod: &str) -> Option<(&'static str, String)> {
        self.pod(namespace, pod).and_then(|p| p.workload.clone())
    }

    /// The pod, from the cache.
    pub fn pod(&self, namespace: &str, pod: &str) -> Option<Arc<PodEntry>> {
        read(&self.pods).get(&(namespace.to_string(), pod.to_string())).cloned()
    }

    /// Owner lookups cached (ReplicaSets, Jobs).
    pub fn owners_cached(&self) -> usize {
        lock(&self.owners).len()
    }

    /// The watch loop: runs until `cancel`.
    pub async fn run(self: Arc<Self>, client: Client, cancel: CancellationToken) {
        let api: Api<Pod> = Api::all(client.clone());
        let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", self.node));
        let mut stream = watcher(api, wc).default_backoff().boxed();
        let mut pending: Option<HashMap<(String, String), Arc<PodEntry>>> = None;
        loop {
            let ev = tokio::select! {
                _ = cancel.cancelled() => return,
                ev = stream.next() => ev,
            };
            let Some(ev) = ev else { return };
            match ev {
                Ok(watcher::Event::Init) => pending = Some(HashMap::new()),
                Ok(watcher::Event::InitApply(p)) => {
                    let e = Arc::new(self.entry(&client, &p).await);
                    pending.get_or_insert_default().insert(key(&e), e);
                }
                Ok(watcher::Event::InitDone) => {
                    let fresh = pending.take().unwrap_or_default();
                    let entries: Vec<Arc<PodEntry>> = fresh.values().cloned().collect();
                    self.metrics.pods.set(fresh.len() as i64);
                    *write(&self.pods) = fresh;
                    let live: HashSet<&str> = entries.iter().map(|e| e.uid.as_str()).collect();
                    lock(&self.ephemeral_seen).retain(|uid, _| live.contains(uid.as_str()));
                    self.metrics.lists.inc();
                    self.synced.store(true, Ordering::Relaxed);
                    self.forbidden_logged.store(false, Ordering::Relaxed);
                    for e in entries {
                        self.note_ephemeral(&e);
                    }
                }
                Ok(watcher::Event::Apply(p)) => {
                    let e = Arc::new(self.entry(&client, &p).await);
                    let mut pods = write(&self.pods);
                    pods.insert(key(&e), e.clone());
                    self.metrics.pods.set(pods.len() as i64);
                    drop(pods);
                    self.note_ephemeral(&e);
                }
                Ok(watcher::Event::Delete(p)) => {
                    let (ns, name) = (p.metadata.namespace.unwrap_or_default(), p.metadata.name.unwrap_or_default());
                    let mut pods = write(&self.pods);
                    pods.remove(&(ns, name));
                    self.metrics.pods.set(pods.len() as i64);
                    drop(pods);
                    if let Some(uid) = p.metadata.uid {
                        lock(&self.ephemeral_seen).remove(&uid);
                    }
                }
                Err(e) => self.watch_error(&e),
            }
        }
    }

    fn watch_error(&self, e: &watcher::Error) {
        let code = match e {
            watcher::Error::InitialListFailed(kube::Error::Api(s))
            | watcher::Error::WatchStartFailed(kube::Error::Api(s))
            | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code,
            watcher::Error::WatchError(s) => s.code,
            _ => 0,
        };
        let reason = match code {
            403 => "forbidden",
            410 => "gone",
            _ => "other",
        };
        match reason {
            "forbidden" => {
                if !self.forbidden_logged.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        error = %e,
                        "Kubernetes API forbids listing/watching pods (RBAC: get, list, watch pods; get replicasets, jobs); \
                         retrying with backoff, node-only data meanwhile"
                    );
                }
            }
            "gone" => {
                tracing::debug!("pod watch expired (410 Gone): relisting");
            }
            _ => tracing::warn!(error = %e, "pod watch failed; retrying with backoff"),
        }
        self.metrics.error(reason);
    }

    /// Reports ephemeral containers of `e` not reported before.
    fn note_ephemeral(&self, e: &Arc<PodEntry>) {
        if e.ephemeral.is_empty() {
            return;
        }
        let mut seen = lock(&self.ephemeral_seen);
        let set = seen.entry(e.uid.clone()).or_default();
        for spec in &e.ephemeral {
            if set.insert(spec.name.clone()) {
                let container_id = e.container_ids.iter().find(|(_, n)| **n == spec.name).map(|(id, _)| id.clone());
                let ev = EphemeralAdded { pod: e.clone(), spec: spec.clone(), container_id };
                if self.events.try_send(ev).is_err() {
                    // Counted: userspace_drops{queue="kube_ephemeral"}.
                    self.metrics.events_dropped.inc();
                    tracing::warn!(pod = %e.name, "ephemeral-container queue full or closed; event dropped");
                }
            }
        }
    }

    /// Builds the index entry of a pod, resolving its owner.
    async fn entry(&self, client: &Client, p: &Pod) -> PodEntry {
        let meta = &p.metadata;
        let namespace = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let workload = self.owner_of(client, &namespace, meta).await;
        let spec = p.spec.as_ref();
        let to_spec = |c: &Container, init: bool| SpecContainer {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            read_only_root: c.security_context.as_ref().and_then(|s| s.read_only_root_filesystem).unwrap_or(false),
            init,
            exec_commands: exec_commands(c),
            mounts: c.volume_mounts.iter().flatten().map(|m| (m.name.clone(), m.mount_path.clone())).collect(),
        };
        let containers = spec
            .map(|s| {
                let app = s.containers.iter().map(|c| to_spec(c, false));
                // A restartable init container (restartPolicy: Always) is a sidecar, not a one-off step.
                let init = |c: &Container| c.restart_policy.as_deref() != Some("Always");
                app.chain(s.init_containers.iter().flatten().map(|c| to_spec(c, init(c)))).collect()
            })
            .unwrap_or_default();
        let ephemeral = spec
            .and_then(|s| s.ephemeral_containers.as_ref())
            .map(|v| {
                v.iter()
                    .map(|c| EphemeralSpec {
                        name: c.name.clone(),
                        image: c.image.clone().unwrap_or_default(),
                        target: c.target_container_name.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut container_ids = HashMap::new();
        if let Some(st) = &p.status {
            let all = st
                .container_statuses
                .iter()
                .flatten()
                .chain(st.init_container_statuses.iter().flatten())
                .chain(st.ephemeral_container_statuses.iter().flatten());
            for cs in all {
                if let Some(id) = cs.container_id.as_deref().map(strip_scheme).filter(|s| !s.is_empty()) {
                    container_ids.insert(id.to_string(), cs.name.clone());
                }
            }
        }
        PodEntry {
            namespace,
            name,
            uid: meta.uid.clone().unwrap_or_default(),
            workload,
            containers,
            ephemeral,
            container_ids,
            volume_objects: spec.map(volume_objects).unwrap_or_default(),
        }
    }

    /// Pod -> owning workload (see the module docs).
    async fn owner_of(&self, client: &Client, ns: &str, meta: &ObjectMeta) -> Option<(&'static str, String)> {
        let name = meta.name.clone().unwrap_or_default();
        let Some(owner) = controller_of(meta) else { return Some(("Pod", name)) };
        let labels = meta.labels.clone().unwrap_or_default();
        match owner.0.as_str() {
            "ReplicaSet" => {
                let rs = owner.1;
                let fallback =
                    deployment_from_hash(&rs, &labels).map_or(("ReplicaSet", rs.clone()), |d| ("Deployment", d));
                self.cached_owner(ns, "ReplicaSet", &rs, fallback, || async {
                    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
                    let got = api.get(&rs).await.map_err(|e| e.to_string())?;
                    Ok(match controller_of(&got.metadata) {
                        Some((k, n)) if k == "Deployment" => ("Deployment", n),
                        _ => ("ReplicaSet", rs.clone()),
                    })
                })
                .await
            }
            "Job" => {
                let job = owner.1;
                let fallback = cronjob_from_job(&job).map_or(("Job", job.clone()), |c| ("CronJob", c));
                self.cached_owner(ns, "Job", &job, fallback, || async {
                    let api: Api<Job> = Api::namespaced(client.clone(), ns);
                    let got = api.get(&job).await.map_err(|e| e.to_string())?;
                    Ok(match controller_of(&got.metadata) {
                        Some((k, n)) if k == "CronJob" => ("CronJob", n),
                        _ => ("Job", job.clone()),
                    })
                })
                .await
            }
            "StatefulSet" => Some(("StatefulSet", owner.1)),
            "DaemonSet" => Some(("DaemonSet", owner.1)),
            "ReplicationController" => Some(("ReplicationController", owner.1)),
            // Static (mirror) pods are owned by their Node: the pod is the workload.
            "Node" => Some(("Pod", name)),
            // Another controller (a CRD): not a kind we name; the label heuristic decides.
            _ => None,
        }
    }

    async fn cached_owner<F, Fut>(
        &self,
        ns: &str,
        kind: &'static str,
        name: &str,
        fallback: (&'static str, String),
        get: F,
    ) -> Option<(&'static str, String)>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(&'static str, String), String>>,
    {
        let k: OwnerKey = (ns.to_string(), kind, name.to_string());
        let now = Instant::now();
        if let Some((at, v)) = lock(&self.owners).get(&k) {
            match v {
                Some(w) => return Some(w.clone()),
                None if now.duration_since(*at) < NEGATIVE_OWNER_TTL => return Some(fallback),
                None => {}
            }
        }
        self.metrics.owner_gets.inc();
        let got = get().await;
        let mut owners = lock(&self.owners);
        if owners.len() >= MAX_OWNERS {
            owners.clear();
        }
        match got {
            Ok(w) => {
                owners.insert(k, (now, Some(w.clone())));
                Some(w)
            }
            Err(e) => {
                tracing::debug!(kind, name, error = %e, "owner lookup failed; using names and labels");
                owners.insert(k, (now, None));
                Some(fallback)
            }
        }
    }
}

fn key(e: &PodEntry) -> (String, String) {
    (e.namespace.clone(), e.name.clone())
}

/// The controller owner reference (kind, name), else the first owner.
pub fn controller_of(meta: &ObjectMeta) -> Option<(String, String)> {
    let refs = meta.owner_references.as_ref()?;
    refs.iter().find(|r| r.controller == Some(true)).or_else(|| refs.first()).map(|r| (r.kind.clone(), r.name.clone()))
}

/// `<deploy>-<pod-template-hash>` -> deploy.
fn deployment_from_hash(rs: &str, labels: &BTreeMap<String, String>) -> Option<String> {
    let hash = labels.get("pod-template-hash")?;
    rs.strip_suffix(hash.as_str())?.strip_suffix('-').filter(|d| !d.is_empty()).map(str::to_string)
}

/// `<cronjob>-<scheduled minute>` -> cronjob.
fn cronjob_from_job(job: &str) -> Option<String> {
    let (prefix, suffix) = job.rsplit_once('-')?;
    (!prefix.is_empty() && suffix.len() >= 8 && suffix.bytes().all(|b| b.is_ascii_digit())).then(|| prefix.to_string())
}

/// `containerd://<id>` -> `<id>`.
pub fn strip_scheme(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(json: serde_json::Value) -> ObjectMeta {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn controller_reference_wins_over_other_owners() {
        let m = meta(serde_json::json!({"name": "p", "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "1"},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d4f", "uid": "2", "controller": true}
        ]}));
        assert_eq!(controller_of(&m), Some(("ReplicaSet".into(), "web-5d4f".into())));
        assert_eq!(controller_of(&meta(serde_json::json!({"name": "p"}))), None);
    }

    #[test]
    fn owner_fallbacks_from_names() {
        let l = BTreeMap::from([("pod-template-hash".to_string(), "5d4f".to_string())]);
        assert_eq!(deployment_from_hash("web-api-5d4f", &l).as_deref(), Some("web-api"));
        assert_eq!(deployment_from_hash("web-api-zzzz", &l), None);
        assert_eq!(deployment_from_hash("-5d4f", &l), None);
        assert_eq!(cronjob_from_job("backup-28391520").as_deref(), Some("backup"));
        assert_eq!(cronjob_from_job("migrate"), None);
        assert_eq!(cronjob_from_job("migrate-v2"), None);
        assert_eq!(strip_scheme("containerd://abc"), "abc");
        assert_eq!(strip_scheme("abc"), "abc");
    }

    #[test]
    fn source_follows_config_and_environment() {
        let off = Kubernetes { enabled: KubeMode::Off, kubeconfig: "/x".into() };
        assert_eq!(source(&off), None);
        let explicit = Kubernetes { enabled: KubeMode::Auto, kubeconfig: "/etc/kc".into() };
        assert_eq!(source(&explicit), Some(Source::Kubeconfig("/etc/kc".into())));
    }

    #[tokio::test]
    async fn cached_owner_gets_once_and_falls_back() {
        let idx = KubeIndex::new("n", KubeMetrics::default());
        let calls = std::sync::atomic::AtomicU32::new(0);
        for _ in 0..3 {
            let w = idx
                .cached_owner("shop", "ReplicaSet", "web-5d4f", ("ReplicaSet", "web-5d4f".into()), || async {
                    calls.fetch_add(1, Ordering::Relaxed);
                    Ok(("Deployment", "web".to_string()))
                })
                .await;
            assert_eq!(w, Some(("Deployment", "web".into())));
        }
        assert_eq!(calls.load(Ordering::Relaxed), 1, "cached");
        let w = idx
            .cached_owner("shop", "Job", "backup-28391520", ("CronJob", "backup".into()), || async {
                Err("403 forbidden".to_string())
            })
            .await;
        assert_eq!(w, Some(("CronJob", "backup".into())), "GET failed: names decide");
        assert_eq!(idx.metrics.owner_gets.get(), 2);
    }

    #[test]
    fn ephemeral_containers_are_reported_once_per_pod() {
        let idx = KubeIndex::new("n", KubeMetrics::default());
        let mut rx = idx.take_events().unwrap();
        let mut e = PodEntry {
            namespace: "shop".into(),
            name: "web-0".into(),
            uid: "u1".into(),
            workload: Some(("StatefulSet", "web".into())),
            containers: vec![],
            ephemeral: vec![EphemeralSpec { name: "debugger".into(), image: "busybox".into(), target: None }],
            container_ids: HashMap::from([("abc".to_string(), "debugger".to_string())]),
            volume_objects: HashMap::new(),
        };
        idx.note_ephemeral(&Arc::new(e.clone()));
        idx.note_ephemeral(&Arc::new(e.clone()));
        let ev = rx.try_recv().unwrap();
        assert_eq!(ev.container_id.as_deref(), Some("abc"));
        assert!(rx.try_recv().is_err(), "once");
        e.ephemeral.push(EphemeralSpec {
            name: "debugger-2".into(),
            image: "alpine".into(),
            target: Some("app".into()),
        });
        idx.note_ephemeral(&Arc::new(e));
        assert_eq!(rx.try_recv().unwrap().spec.name, "debugger-2");
    }
}
