//! Container runtime metadata over CRI (`runtime.v1` gRPC on a Unix socket).
//!
//! Maps a container id (from the cgroup path) to its pod, namespace, container
//! name, image and pod labels/annotations, for containerd, CRI-O and cri-dockerd.
//!
//! Design, and why:
//! - **The hot path never waits.** [`Cri::cached`] is a read-locked map lookup. Only
//!   a miss goes to the runtime, and [`Cri::lookup`] bounds that wait; the fetch it
//!   starts is a separate task, so it still fills the cache after a caller gave up
//!   and concurrent misses for one id share a single fetch.
//! - **The cache is warmed** by listing containers and sandboxes every
//!   `refresh_interval`, so most events hit even for the first exec in a container.
//! - **Exited containers stay resolvable for `grace`**: events are judged after the
//!   fact, and a short-lived container (a `kubectl run --rm`, a crashing init
//!   container) is often gone by then — the most common source of `<NA>` fields.
//! - **Runtime restarts do not lose anything**: the cache outlives the connection,
//!   the background task reconnects with capped exponential backoff, and a lookup
//!   during the outage waits (bounded) for the reconnection instead of failing.
//! - **Authoritative sources**: pod name/namespace/uid come from the sandbox
//!   (`PodSandboxStatus.metadata`), falling back to the `io.kubernetes.pod.*` labels
//!   the kubelet puts on each container; the image from `ContainerStatus`, which
//!   resolves the image id the kubelet sends in `CreateContainer` to a name.
//!   `ListContainers` is the only call that names a container's sandbox.
//! - **Nothing the runtime sends can panic us**: every field is optional here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use super::locks::{lock, read, write};

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as api;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::sync::{Notify, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Uri};

/// Sockets probed, in this order, when no endpoint is configured. The first that
/// answers `Version()` wins: on a Docker host `/run/containerd/containerd.sock` is
/// Docker's containerd with CRI disabled, which fails `Version()` and is skipped.
pub const DEFAULT_ENDPOINTS: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/var/run/crio/crio.sock",
    "/run/crio/crio.sock",
    "/run/k3s/containerd/containerd.sock",
    "/var/snap/microk8s/common/run/containerd.sock",
    "/var/run/cri-dockerd.sock",
    "/run/cri-dockerd.sock",
];

/// Backoff between connection attempts: doubles from the first to the second.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));
/// How long a "no such container" answer is remembered. A CRI container is in the
/// runtime's store before its first process can run, so a negative answer for a
/// running process is final (a ctr-made container); remembering it spares the
/// runtime one call per exec in such containers.
const NEGATIVE_TTL: Duration = Duration::from_secs(30);
/// ContainerStatus calls in flight at once while warming the cache.
const WARM_CONCURRENCY: usize = 8;
/// How long a fetch waits for a lost connection to come back before giving up.
const RECONNECT_WAIT: Duration = Duration::from_secs(15);

/// Everything the runtime knows about one container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerMeta {
    pub container_id: String,
    /// `ContainerStatus.metadata.name`; empty for a pod sandbox (pause container).
    pub container_name: String,
    pub pod_name: String,
    pub namespace: String,
    pub pod_uid: String,
    pub sandbox_id: String,
    /// As the runtime reports it, e.g. `busybox:1.36`, `docker.io/library/busybox:1.36`.
    /// Empty for a pod sandbox.
    pub image: String,
    /// `imageRef`: `repo@sha256:…` when the runtime knows a repo digest, else the
    /// image id `sha256:…` (containerd 1.6 does that for images it did not pull).
    pub image_ref: String,
    pub pod_labels: BTreeMap<String, String>,
    pub pod_annotations: BTreeMap<String, String>,
    /// `RuntimeName` from `Version()`: `containerd`, `cri-o`, ...
    pub runtime: String,
}

/// Configuration of [`Cri::spawn`].
#[derive(Debug, Clone)]
pub struct CriConfig {
    /// Socket path; `None` probes [`DEFAULT_ENDPOINTS`].
    pub endpoint: Option<PathBuf>,
    /// Timeout of each RPC (and of each connection attempt).
    pub request_timeout: Duration,
    /// Keep exited containers' metadata this long after they leave the runtime.
    pub grace: Duration,
    /// Most containers cached (also bounds the sandbox and negative caches).
    pub max_entries: usize,
    /// How often the cache is re-listed from the runtime.
    pub refresh_interval: Duration,
}

impl Default for CriConfig {
    fn default() -> Self {
        CriConfig {
            endpoint: None,
            request_timeout: Duration::from_secs(2),
            grace: Duration::from_secs(300),
            max_entries: 16_384,
            refresh_interval: Duration::from_secs(10),
        }
    }
}

/// Result of [`Cri::lookup`].
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Found(Arc<ContainerMeta>),
    /// The runtime answered: no such container or sandbox (not a CRI container,
    /// e.g. made with `ctr`).
    NotFound,
    /// No answer. Reason label: `no_endpoint` | `connect` | `timeout` | `rpc`.
    Unavailable(&'static str),
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CriStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to ask the runtime (or join a fetch in flight).
    pub misses: u64,
    /// Successful connections after the first one.
    pub reconnects: u64,
    /// Failed connection attempts.
    pub connect_failures: u64,
    /// Cache entries dropped to stay within `max_entries`.
    pub evictions: u64,
    /// Entries dropped because their container was gone for longer than `grace`.
    pub expired: u64,
}

/// Parses a `--runtime-endpoint` value: a path or `unix:///path`.
pub fn parse_endpoint(s: &str) -> Result<PathBuf, String> {
    let path = match s.split_once("://") {
        Some(("unix", p)) => p,
        Some((scheme, _)) => {
            return Err(format!("runtime endpoint {s:?}: only unix:// sockets are supported, not {scheme}://"));
        }
        None => s,
    };
    if !path.starts_with('/') {
        return Err(format!("runtime endpoint {s:?}: expected an absolute socket path"));
    }
    Ok(PathBuf::from(path))
}

/// The connection state lookups wait on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// The first connection attempt has not finished.
    Starting,
    Up,
    /// `ever_up` tells a runtime restart (worth waiting for) from a missing runtime.
    Down {
        ever_up: bool,
        reason: &'static str,
    },
}

#[derive(Clone)]
struct Conn {
    client: RuntimeServiceClient<Channel>,
    endpoint: PathBuf,
    runtime: String,
}

/// CRI client and metadata cache. See the module docs.
pub struct Cri {
    /// Fetch tasks need an owned handle; `Cri` only exists inside the Arc of `spawn`.
    me: Weak<Cri>,
    cfg: CriConfig,
    cache: RwLock<Cache>,
    conn: Mutex<Option<Conn>>,
    link: watch::Sender<Link>,
    /// Wakes the background task early: an RPC saw the connection fail.
    kick: Notify,
    /// Fetches in flight, so concurrent misses for one id make one call.
    inflight: Mutex<HashMap<String, watch::Receiver<Option<Lookup>>>>,
    stats: Stats,
}

#[derive(Default)]
struct Stats {
    hits: AtomicU64,
    misses: AtomicU64,
    reconnects: AtomicU64,
    connect_failures: AtomicU64,
}

impl Cri {
    /// Starts the background task (needs a tokio runtime): finds the endpoint,
    /// connects with backoff, warms and refreshes the cache until `cancel`.
    pub fn spawn(cfg: CriConfig, cancel: CancellationToken) -> Arc<Cri> {
        let cri = Arc::new_cyclic(|me| Cri {
            me: me.clone(),
            cache: RwLock::new(Cache::new(cfg.max_entries, cfg.grace)),
            cfg,
            conn: Mutex::new(None),
            link: watch::Sender::new(Link::Starting),
            kick: Notify::new(),
            inflight: Mutex::new(HashMap::new()),
            stats: Stats::default(),
        });
        tokio::spawn(background(Arc::downgrade(&cri), cancel));
        cri
    }

    /// Cache hit: immediate. Miss: one ContainerStatus (+ ListContainers,
    /// PodSandboxStatus) fetch shared by concurrent callers, awaited at most `max_wait`.
    pub async fn lookup(&self, container_id: &str, max_wait: Duration) -> Lookup {
        let now = Instant::now();
        {
            let cache = read(&self.cache);
            if let Some(m) = cache.get(container_id, now) {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return Lookup::Found(m);
            }
            if cache.is_negative(container_id, now) {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return Lookup::NotFound;
            }
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        // A runtime that was never reachable will not be within max_wait either:
        // answer now instead of holding the event.
        if let Link::Down { ever_up: false, reason } = *self.link.borrow() {
            return Lookup::Unavailable(reason);
        }
        let mut rx = self.start_fetch(container_id);
        match tokio::time::timeout(max_wait, rx.wait_for(Option::is_some)).await {
            Ok(Ok(v)) => v.clone().unwrap_or(Lookup::Unavailable("rpc")),
            // The fetch task was dropped (runtime shutting down).
            Ok(Err(_)) => Lookup::Unavailable("rpc"),
            Err(_) => Lookup::Unavailable("timeout"),
        }
    }

    /// Cached metadata only (exited containers within their grace period included).
    pub fn cached(&self, container_id: &str) -> Option<Arc<ContainerMeta>> {
        read(&self.cache).get(container_id, Instant::now())
    }

    /// The last RPC or connection attempt reached the runtime.
    pub fn connected(&self) -> bool {
        *self.link.borrow() == Link::Up
    }

    /// The socket in use (or configured, before the first connection).
    pub fn endpoint(&self) -> Option<PathBuf> {
        lock(&self.conn).as_ref().map(|c| c.endpoint.clone()).or_else(|| self.cfg.endpoint.clone())
    }

    pub fn stats(&self) -> CriStats {
        let c = read(&self.cache);
        CriStats {
            hits: self.stats.hits.load(Ordering::Relaxed),
            misses: self.stats.misses.load(Ordering::Relaxed),
            reconnects: self.stats.reconnects.load(Ordering::Relaxed),
            connect_failures: self.stats.connect_failures.load(Ordering::Relaxed),
            evictions: c.evictions,
            expired: c.expired,
        }
    }

    /// Joins the fetch in flight for `id`, or starts one.
    fn start_fetch(&self, id: &str) -> watch::Receiver<Option<Lookup>> {
        let mut inflight = lock(&self.inflight);
        if let Some(rx) = inflight.get(id) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(None);
        inflight.insert(id.to_owned(), rx.clone());
        drop(inflight);
        // The fetch outlives this call (and its caller's timeout), so it owns an Arc.
        let me = self.me.upgrade();
        let id = id.to_owned();
        tokio::spawn(async move {
            let out = match &me {
                Some(cri) => cri.fetch(&id).await,
                None => Lookup::Unavailable("rpc"),
            };
            if let Some(cri) = &me {
                lock(&cri.inflight).remove(&id);
            }
            let _ = tx.send(Some(out));
        });
        rx
    }

    /// Asks the runtime about `id` and caches a complete answer. A connection that
    /// broke under us (runtime restart not noticed yet) is re-established and the
    /// call retried once, so an event during a restart still resolves.
    async fn fetch(&self, id: &str) -> Lookup {
        for attempt in 0..2 {
            let conn = match self.wait_link().await {
                Ok(c) => c,
                Err(reason) => return Lookup::Unavailable(reason),
            };
            match self.fetch_once(&conn, id).await {
                Ok(found) => return found,
                Err(e) if e.reason() == "connect" && attempt == 0 => {
                    self.set_link(Link::Down { ever_up: true, reason: "connect" });
                    self.kick.notify_one();
                }
                Err(e) => return Lookup::Unavailable(e.reason()),
            }
        }
        Lookup::Unavailable("connect")
    }

    async fn fetch_once(&self, conn: &Conn, id: &str) -> Result<Lookup, RpcError> {
        let t = self.cfg.request_timeout;
        let mut c1 = conn.client.clone();
        let mut c2 = conn.client.clone();
        let status_req = api::ContainerStatusRequest { container_id: id.to_owned(), verbose: false };
        let list_req = api::ListContainersRequest {
            filter: Some(api::ContainerFilter { id: id.to_owned(), ..Default::default() }),
        };
        let (status, listed) =
            tokio::join!(rpc(t, c1.container_status(status_req)), rpc(t, c2.list_containers(list_req)));
        let status = match status {
            Ok(s) => s.status,
            Err(RpcError::NotFound) => return Ok(self.fetch_sandbox_as_container(conn, id).await),
            Err(e) => return Err(e),
        };
        let Some(status) = status else {
            return Err(RpcError::Status(tonic::Code::Internal, "ContainerStatus without status".into()));
        };
        let listed = listed.ok().and_then(|l| l.containers.into_iter().find(|c| c.id == id));
        let sandbox_id = listed.as_ref().map(|c| c.pod_sandbox_id.clone()).unwrap_or_default();
        let pod = self.pod(conn, &sandbox_id).await;
        let complete = pod.is_some();
        let meta = Arc::new(build_meta(id, Some(&status), listed.as_ref(), pod.as_deref(), &conn.runtime));
        // A partial answer (sandbox unknown) is returned but not cached: the next
        // lookup or refresh gets another chance at the pod's labels.
        if complete {
            write(&self.cache).insert(meta.clone(), Instant::now());
        }
        Ok(Lookup::Found(meta))
    }

    /// A pod's pause container runs processes too; its id is a sandbox id.
    async fn fetch_sandbox_as_container(&self, conn: &Conn, id: &str) -> Lookup {
        match self.pod(conn, id).await {
            Some(pod) => {
                let meta = Arc::new(build_meta(id, None, None, Some(&pod), &conn.runtime));
                write(&self.cache).insert(meta.clone(), Instant::now());
                Lookup::Found(meta)
            }
            None => {
                write(&self.cache).insert_negative(id, Instant::now());
                Lookup::NotFound
            }
        }
    }

    /// Sandbox info, from the cache or PodSandboxStatus.
    async fn pod(&self, conn: &Conn, sandbox_id: &str) -> Option<Arc<PodInfo>> {
        if sandbox_id.is_empty() {
            return None;
        }
        if let Some(p) = read(&self.cache).sandboxes.get(sandbox_id) {
            return Some(p.clone());
        }
        let mut c = conn.client.clone();
        let req = api::PodSandboxStatusRequest { pod_sandbox_id: sandbox_id.to_owned(), verbose: false };
        let status = rpc(self.cfg.request_timeout, c.pod_sandbox_status(req)).await.ok()?.status?;
        let pod = Arc::new(PodInfo::from_status(&status));
        write(&self.cache).insert_sandbox(pod.clone());
        Some(pod)
    }

    /// The connection, waiting for it while it is being (re)established.
    async fn wait_link(&self) -> Result<Conn, &'static str> {
        let mut rx = self.link.subscribe();
        let wait = match *rx.borrow() {
            Link::Up => Duration::ZERO,
            Link::Starting => self.cfg.request_timeout.max(Duration::from_secs(1)),
            Link::Down { ever_up: true, .. } => RECONNECT_WAIT,
            Link::Down { ever_up: false, reason } => return Err(reason),
        };
        // From Starting, any outcome ends the wait; from a restart, only Up does.
        let settled = |l: &Link| matches!(l, Link::Up | Link::Down { ever_up: false, .. });
        let _ = tokio::time::timeout(wait, rx.wait_for(settled)).await;
        match (*rx.borrow(), lock(&self.conn).clone()) {
            (Link::Up, Some(c)) => Ok(c),
            (Link::Down { reason, .. }, _) => Err(reason),
            _ => Err("connect"),
        }
    }

    fn set_link(&self, l: Link) {
        self.link.send_if_modified(|cur| {
            let changed = *cur != l;
            *cur = l;
            changed
        });
    }

    /// Lists sandboxes and containers; statuses for containers not cached yet; ages
    /// out containers that left the runtime.
    async fn refresh(&self, conn: &Conn) -> Result<(), RpcError> {
        let t = self.cfg.request_timeout;
        let started = Instant::now();
        let mut c = conn.client.clone();
        let pods = rpc(t, c.list_pod_sandbox(api::ListPodSandboxRequest { filter: None })).await?.items;
        let containers = rpc(t, c.list_containers(api::ListContainersRequest { filter: None })).await?.containers;
        let pods: HashMap<String, Arc<PodInfo>> =
            pods.iter().map(|p| (p.id.clone(), Arc::new(PodInfo::from_listed(p)))).collect();
        let listed: HashSet<String> = containers.iter().map(|c| c.id.clone()).chain(pods.keys().cloned()).collect();
        let new: Vec<api::Container> = {
            let mut cache = write(&self.cache);
            cache.replace_sandboxes(&pods);
            containers.into_iter().filter(|c| !cache.entries.contains_key(&c.id)).collect()
        };

        let sem = Arc::new(Semaphore::new(WARM_CONCURRENCY));
        let mut set = tokio::task::JoinSet::new();
        for listed_c in new {
            let (sem, mut client) = (sem.clone(), conn.client.clone());
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let req = api::ContainerStatusRequest { container_id: listed_c.id.clone(), verbose: false };
                let status = rpc(t, client.container_status(req)).await.ok().and_then(|r| r.status);
                (listed_c, status)
            });
        }
        while let Some(joined) = set.join_next().await {
            let Ok((listed_c, status)) = joined else { continue };
            let pod = pods.get(&listed_c.pod_sandbox_id);
            let meta = build_meta(&listed_c.id, status.as_ref(), Some(&listed_c), pod.map(|p| &**p), &conn.runtime);
            write(&self.cache).insert(Arc::new(meta), Instant::now());
        }
        // Sandboxes resolve as containers too (their pause process), once looked up.
        write(&self.cache).reconcile(&listed, started, Instant::now());
        Ok(())
    }

    /// One connection attempt over the configured or auto-detected endpoints.
    async fn connect(&self) -> Result<Conn, &'static str> {
        let candidates: Vec<PathBuf> = match &self.cfg.endpoint {
            Some(p) => vec![p.clone()],
            None => {
                // The endpoint that worked last goes first: a restarted runtime comes
                // back on the same socket.
                let last = lock(&self.conn).as_ref().map(|c| c.endpoint.clone());
                let defaults = DEFAULT_ENDPOINTS.iter().map(PathBuf::from).filter(|p| last.as_ref() != Some(p));
                last.clone().into_iter().chain(defaults).collect()
            }
        };
        detect(&candidates, self.cfg.request_timeout).await
    }
}

/// The background task: connect (with backoff), refresh, repeat.
async fn background(weak: Weak<Cri>, cancel: CancellationToken) {
    let mut backoff = BACKOFF.0;
    let mut ever_up = false;
    loop {
        let Some(cri) = weak.upgrade() else { return };
        let conn = lock(&cri.conn).clone().filter(|_| cri.connected());
        let next = match conn {
            None => match cri.connect().await {
                Ok(conn) => {
                    tracing::info!(endpoint = %conn.endpoint.display(), runtime = %conn.runtime, "CRI connected");
                    if ever_up {
                        cri.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    ever_up = true;
                    backoff = BACKOFF.0;
                    *lock(&cri.conn) = Some(conn.clone());
                    cri.set_link(Link::Up);
                    // Catch up on what changed while we were away, right away.
                    match cri.refresh(&conn).await {
                        Ok(()) => cri.cfg.refresh_interval,
                        Err(e) => cri.lost(&e, ever_up),
                    }
                }
                Err(reason) => {
                    cri.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                    if *cri.link.borrow() != (Link::Down { ever_up, reason }) {
                        tracing::warn!(reason, "CRI runtime not reachable; retrying with backoff");
                    }
                    cri.set_link(Link::Down { ever_up, reason });
                    let wait = backoff;
                    backoff = (backoff * 2).min(BACKOFF.1);
                    wait
                }
            },
            Some(conn) => match cri.refresh(&conn).await {
                Ok(()) => cri.cfg.refresh_interval,
                Err(e) => cri.lost(&e, ever_up),
            },
        };
        tokio::select! {
            _ = cancel.cancelled() => {
                // Not `ever_up`: nothing will reconnect, so lookups must not wait.
                cri.set_link(Link::Down { ever_up: false, reason: "connect" });
                return;
            }
            _ = tokio::time::sleep(next) => {}
            _ = cri.kick.notified() => {}
        }
    }
}

impl Cri {
    /// A refresh failed: a transport failure means reconnect now; anything else
    /// (a runtime bug, a slow answer) is retried at the next refresh.
    fn lost(&self, e: &RpcError, ever_up: bool) -> Duration {
        let reason = e.reason();
        if reason == "connect" || reason == "timeout" {
            tracing::warn!(reason, error = %e, "CRI connection lost; reconnecting");
            self.set_link(Link::Down { ever_up, reason: "connect" });
            Duration::ZERO
        } else {
            tracing::warn!(error = %e, "CRI refresh failed");
            self.cfg.refresh_interval
        }
    }
}

/// First candidate whose socket answers `Version()`.
async fn detect(candidates: &[PathBuf], timeout: Duration) -> Result<Conn, &'static str> {
    let mut reason = "no_endpoint";
    for path in candidates {
        // A missing socket is not a connection failure: nothing is installed there.
        if std::fs::symlink_metadata(path).is_err() {
            continue;
        }
        reason = "connect";
        let Ok(Ok(channel)) = tokio::time::timeout(timeout, connect_unix(path)).await else {
            tracing::debug!(path = %path.display(), "CRI endpoint does not accept connections");
            continue;
        };
        let mut client = RuntimeServiceClient::new(channel);
        match rpc(timeout, client.version(api::VersionRequest { version: "v1".into() })).await {
            Ok(v) => {
                let runtime = if v.runtime_name.is_empty() { "cri".to_owned() } else { v.runtime_name };
                return Ok(Conn { client, endpoint: path.clone(), runtime });
            }
            Err(e) => {
                // E.g. Docker's containerd (CRI disabled) answers Unimplemented.
                tracing::debug!(path = %path.display(), error = %e, "CRI endpoint does not answer Version()");
            }
        }
    }
    Err(reason)
}

/// A gRPC channel over a Unix socket. The URI is a placeholder the connector ignores.
pub async fn connect_unix(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
}

#[derive(Debug, thiserror::Error)]
enum RpcError {
    #[error("not found")]
    NotFound,
    #[error("no answer in time")]
    Timeout,
    #[error("{0:?}: {1}")]
    Status(tonic::Code, String),
}

impl RpcError {
    fn reason(&self) -> &'static str {
        match self {
            RpcError::NotFound => "rpc",
            RpcError::Timeout => "timeout",
            RpcError::Status(tonic::Code::Unavailable | tonic::Code::Cancelled, _) => "connect",
            RpcError::Status(tonic::Code::DeadlineExceeded, _) => "timeout",
            RpcError::Status(..) => "rpc",
        }
    }
}

async fn rpc<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, RpcError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) if s.code() == tonic::Code::NotFound => Err(RpcError::NotFound),
        Ok(Err(s)) => Err(RpcError::Status(s.code(), s.message().chars().take(200).collect())),
        Err(_) => Err(RpcError::Timeout),
    }
}

/// A pod, as its sandbox describes it.
#[derive(Debug, Clone, PartialEq, Default)]
struct PodInfo {
    sandbox_id: String,
    name: String,
    namespace: String,
    uid: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

impl PodInfo {
    fn from_status(s: &api::PodSandboxStatus) -> PodInfo {
        PodInfo::new(&s.id, s.metadata.as_ref(), &s.labels, &s.annotations)
    }
    fn from_listed(s: &api::PodSandbox) -> PodInfo {
        PodInfo::new(&s.id, s.metadata.as_ref(), &s.labels, &s.annotations)
    }
    fn new(
        id: &str,
        md: Option<&api::PodSandboxMetadata>,
        labels: &HashMap<String, String>,
        annotations: &HashMap<String, String>,
    ) -> PodInfo {
        let md = md.cloned().unwrap_or_default();
        PodInfo {
            sandbox_id: id.to_owned(),
            name: md.name,
            namespace: md.namespace,
            uid: md.uid,
            // The kubelet copies these into the sandbox labels; they are not the pod's.
            labels: labels.iter().filter(|(k, _)| !is_kubelet_label(k)).map(|(k, v)| (k.clone(), v.clone())).collect(),
            annotations: annotations.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }
}

fn is_kubelet_label(k: &str) -> bool {
    matches!(k, "io.kubernetes.pod.name" | "io.kubernetes.pod.namespace" | "io.kubernetes.pod.uid")
}

/// Combines what the runtime said; any part may be missing.
fn build_meta(
    id: &str,
    status: Option<&api::ContainerStatus>,
    listed: Option<&api::Container>,
    pod: Option<&PodInfo>,
    runtime: &str,
) -> ContainerMeta {
    let label = |k: &str| -> String {
        status
            .and_then(|s| s.labels.get(k))
            .or_else(|| listed.and_then(|c| c.labels.get(k)))
            .cloned()
            .unwrap_or_default()
    };
    let first = |vals: [Option<&str>; 2]| vals.into_iter().flatten().find(|v| !v.is_empty()).map(str::to_owned);
    let container_name = first([
        status.and_then(|s| s.metadata.as_ref()).map(|m| m.name.as_str()),
        listed.and_then(|c| c.metadata.as_ref()).map(|m| m.name.as_str()),
    ])
    .unwrap_or_else(|| label("io.kubernetes.container.name"));
    let pod_field = |get: fn(&PodInfo) -> &str, key: &str| {
        pod.map(get).filter(|v| !v.is_empty()).map(str::to_owned).unwrap_or_else(|| label(key))
    };
    let image_specs = [status.and_then(|s| s.image.as_ref()), listed.and_then(|c| c.image.as_ref())];
    ContainerMeta {
        container_id: id.to_owned(),
        container_name,
        pod_name: pod_field(|p| &p.name, "io.kubernetes.pod.name"),
        namespace: pod_field(|p| &p.namespace, "io.kubernetes.pod.namespace"),
        pod_uid: pod_field(|p| &p.uid, "io.kubernetes.pod.uid"),
        sandbox_id: first([listed.map(|c| c.pod_sandbox_id.as_str()), pod.map(|p| p.sandbox_id.as_str())])
            .unwrap_or_default(),
        image: pick_image(image_specs.into_iter().flatten().flat_map(|s| [&s.user_specified_image, &s.image])),
        image_ref: first([status.map(|s| s.image_ref.as_str()), listed.map(|c| c.image_ref.as_str())])
            .unwrap_or_default(),
        pod_labels: pod.map(|p| p.labels.clone()).unwrap_or_default(),
        pod_annotations: pod.map(|p| p.annotations.clone()).unwrap_or_default(),
        runtime: runtime.to_owned(),
    }
}

/// The first image that is a name rather than a bare image id: the kubelet sends the
/// id in `CreateContainer`, and runtimes differ in whether they map it back.
fn pick_image<'a>(candidates: impl Iterator<Item = &'a String>) -> String {
    let mut fallback = None;
    for c in candidates.filter(|c| !c.is_empty()) {
        if super::image::digest_of_image_ref(c) == Some(c.as_str()) {
            fallback.get_or_insert(c);
            continue;
        }
        return c.clone();
    }
    fallback.cloned().unwrap_or_default()
}

struct Entry {
    meta: Arc<ContainerMeta>,
    /// Last time the runtime listed (or returned) it.
    seen: Instant,
    /// When a listing first missed it.
    gone_since: Option<Instant>,
}

/// The bounded cache. Time is passed in, so tests drive it with a fake clock.
struct Cache {
    max: usize,
    grace: Duration,
    entries: HashMap<String, Entry>,
    sandboxes: HashMap<String, Arc<PodInfo>>,
    negative: HashMap<String, Instant>,
    evictions: u64,
    expired: u64,
}

impl Cache {
    fn new(max: usize, grace: Duration) -> Cache {
        Cache {
            max: max.max(1),
            grace,
            entries: HashMap::new(),
            sandboxes: HashMap::new(),
            negative: HashMap::new(),
            evictions: 0,
            expired: 0,
        }
    }

    fn get(&self, id: &str, now: Instant) -> Option<Arc<ContainerMeta>> {
        let e = self.entries.get(id)?;
        match e.gone_since {
            Some(g) if now.saturating_duration_since(g) >= self.grace => None,
            _ => Some(e.meta.clone()),
        }
    }

    fn insert(&mut self, meta: Arc<ContainerMeta>, now: Instant) {
        let id = meta.container_id.clone();
        self.negative.remove(&id);
        if !self.entries.contains_key(&id) && self.entries.len() >= self.max {
            self.evict_one();
        }
        self.entries.insert(id, Entry { meta, seen: now, gone_since: None });
    }

    /// Gone entries first, the longest gone first; then the least recently seen.
    fn evict_one(&mut self) {
        let victim = self
            .entries
            .iter()
            .min_by_key(|(_, e)| match e.gone_since {
                Some(g) => (0, g),
                None => (1, e.seen),
            })
            .map(|(k, _)| k.clone());
        if let Some(k) = victim {
            self.entries.remove(&k);
            self.evictions += 1;
        }
    }

    /// After a listing that started at `started`: entries listed are present;
    /// entries not listed (and not inserted since the listing began) start their
    /// grace period; entries gone longer than `grace` are dropped.
    fn reconcile(&mut self, listed: &HashSet<String>, started: Instant, now: Instant) {
        let grace = self.grace;
        let before = self.entries.len();
        self.entries.retain(|id, e| {
            if listed.contains(id) {
                e.seen = now;
                e.gone_since = None;
            } else if e.seen < started {
                let g = *e.gone_since.get_or_insert(now);
                return now.saturating_duration_since(g) < grace;
            }
            true
        });
        self.expired += (before - self.entries.len()) as u64;
        self.negative.retain(|id, t| !listed.contains(id) && now.saturating_duration_since(*t) < NEGATIVE_TTL);
    }

    fn is_negative(&self, id: &str, now: Instant) -> bool {
        self.negative.get(id).is_some_and(|t| now.saturating_duration_since(*t) < NEGATIVE_TTL)
    }

    fn insert_negative(&mut self, id: &str, now: Instant) {
        if self.negative.len() >= self.max {
            // Rare (a flood of non-CRI containers); forgetting costs one RPC each.
            self.negative.clear();
        }
        self.negative.insert(id.to_owned(), now);
    }

    fn replace_sandboxes(&mut self, listed: &HashMap<String, Arc<PodInfo>>) {
        self.sandboxes = listed.iter().take(self.max).map(|(k, v)| (k.clone(), v.clone())).collect();
    }

    fn insert_sandbox(&mut self, pod: Arc<PodInfo>) {
        if self.sandboxes.len() >= self.max {
            // Refilled by the next listing.
            self.sandboxes.clear();
        }
        self.sandboxes.insert(pod.sandbox_id.clone(), pod);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::task::{Context, Poll};
    use tonic::codegen::{Body, BoxFuture, StdError, http};

    const UID: &str = "1234abcd-5678-90ef-1234-567890abcdef";

    fn cid(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }
    fn sid(n: u8) -> String {
        format!("5{n:x}").repeat(32)
    }
    fn map(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    // ---- a fake CRI runtime on a Unix socket -------------------------------------

    #[derive(Default)]
    struct FakeState {
        runtime: String,
        version_unimplemented: bool,
        delay: Duration,
        containers: HashMap<String, (api::ContainerStatus, String)>,
        sandboxes: HashMap<String, api::PodSandboxStatus>,
        status_calls: u64,
    }

    #[derive(Clone)]
    struct Fake(Arc<Mutex<FakeState>>);

    impl Fake {
        fn new(runtime: &str) -> Fake {
            Fake(Arc::new(Mutex::new(FakeState { runtime: runtime.into(), ..Default::default() })))
        }
        fn add_pod(&self, sandbox: &str, name: &str) {
            let st = api::PodSandboxStatus {
                id: sandbox.into(),
                metadata: Some(api::PodSandboxMetadata {
                    name: name.into(),
                    uid: UID.into(),
                    namespace: "payments".into(),
                    attempt: 0,
                }),
                labels: map(&[("app", "checkout"), ("io.kubernetes.pod.name", name)]),
                annotations: map(&[("team", "shop")]),
                ..Default::default()
            };
            lock(&self.0).sandboxes.insert(sandbox.into(), st);
        }
        fn add_container(&self, id: &str, sandbox: &str, name: &str) {
            let st = api::ContainerStatus {
                id: id.into(),
                metadata: Some(api::ContainerMetadata { name: name.into(), attempt: 0 }),
                image: Some(api::ImageSpec { image: "docker.io/shop/api:v2".into(), ..Default::default() }),
                image_ref: format!("docker.io/shop/api@sha256:{}", "ab".repeat(32)),
                labels: map(&[
                    ("io.kubernetes.pod.name", "checkout-7d9f"),
                    ("io.kubernetes.pod.namespace", "payments"),
                    ("io.kubernetes.pod.uid", UID),
                    ("io.kubernetes.container.name", name),
                ]),
                ..Default::default()
            };
            lock(&self.0).containers.insert(id.into(), (st, sandbox.into()));
        }
        fn remove_container(&self, id: &str) {
            lock(&self.0).containers.remove(id);
        }
        fn status_calls(&self) -> u64 {
            lock(&self.0).status_calls
        }
        fn set_delay(&self, d: Duration) {
            lock(&self.0).delay = d;
        }

        /// Serves on `path` until `stop` is cancelled.
        async fn serve(&self, path: &Path, stop: CancellationToken) {
            let _ = std::fs::remove_file(path);
            let listener = tokio::net::UnixListener::bind(path).expect("bind fake socket");
            let svc = self.clone();
            tokio::spawn(async move {
                let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
                let _ = tonic::transport::Server::builder()
                    .add_service(svc)
                    .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                    .await;
            });
        }

        fn handle(&self, path: &str, body: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
            use prost::Message;
            let dec = |e: prost::DecodeError| tonic::Status::invalid_argument(e.to_string());
            let mut st = lock(&self.0);
            let out = match path {
                "/runtime.v1.RuntimeService/Version" => {
                    if st.version_unimplemented {
                        return Err(tonic::Status::unimplemented("cri disabled"));
                    }
                    api::VersionResponse {
                        version: "0.1.0".into(),
                        runtime_name: st.runtime.clone(),
                        runtime_version: "1.0".into(),
                        runtime_api_version: "v1".into(),
                    }
                    .encode_to_vec()
                }
                "/runtime.v1.RuntimeService/ContainerStatus" => {
                    st.status_calls += 1;
                    let req = api::ContainerStatusRequest::decode(&body[..]).map_err(dec)?;
                    let (s, _) =
                        st.containers.get(&req.container_id).ok_or_else(|| tonic::Status::not_found("nope"))?;
                    api::ContainerStatusResponse { status: Some(s.clone()), ..Default::default() }.encode_to_vec()
                }
                "/runtime.v1.RuntimeService/ListContainers" => {
                    let req = api::ListContainersRequest::decode(&body[..]).map_err(dec)?;
                    let want = req.filter.map(|f| f.id).unwrap_or_default();
                    let containers = st
                        .containers
                        .values()
                        .filter(|(s, _)| want.is_empty() || s.id == want)
                        .map(|(s, sb)| api::Container {
                            id: s.id.clone(),
                            pod_sandbox_id: sb.clone(),
                            metadata: s.metadata.clone(),
                            // Like the kubelet's CreateContainer: the image id.
                            image: Some(api::ImageSpec {
                                image: format!("sha256:{}", "cd".repeat(32)),
                                ..Default::default()
                            }),
                            image_ref: format!("sha256:{}", "cd".repeat(32)),
                            labels: s.labels.clone(),
                            ..Default::default()
                        })
                        .collect();
                    api::ListContainersResponse { containers }.encode_to_vec()
                }
                "/runtime.v1.RuntimeService/PodSandboxStatus" => {
                    let req = api::PodSandboxStatusRequest::decode(&body[..]).map_err(dec)?;
                    let s = st.sandboxes.get(&req.pod_sandbox_id).ok_or_else(|| tonic::Status::not_found("nope"))?;
                    api::PodSandboxStatusResponse { status: Some(s.clone()), ..Default::default() }.encode_to_vec()
                }
                "/runtime.v1.RuntimeService/ListPodSandbox" => {
                    let items = st
                        .sandboxes
                        .values()
                        .map(|s| api::PodSandbox {
                            id: s.id.clone(),
                            metadata: s.metadata.clone(),
                            labels: s.labels.clone(),
                            annotations: s.annotations.clone(),
                            ..Default::default()
                        })
                        .collect();
                    api::ListPodSandboxResponse { items }.encode_to_vec()
                }
                _ => return Err(tonic::Status::unimplemented(path.to_owned())),
            };
            Ok(out)
        }
    }

    /// Raw bytes in and out: the fake decodes and encodes the messages itself.
    #[derive(Default, Clone)]
    struct RawCodec;
    struct RawEnc;
    struct RawDec;
    impl tonic::codec::Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = RawEnc;
        type Decoder = RawDec;
        fn encoder(&mut self) -> RawEnc {
            RawEnc
        }
        fn decoder(&mut self) -> RawDec {
            RawDec
        }
    }
    impl tonic::codec::Encoder for RawEnc {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
            use bytes::BufMut;
            dst.put_slice(&item);
            Ok(())
        }
    }
    impl tonic::codec::Decoder for RawDec {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
            use bytes::Buf;
            let mut v = vec![0; src.remaining()];
            src.copy_to_slice(&mut v);
            Ok(Some(v))
        }
    }

    struct Method(Fake, String);
    impl tonic::server::UnaryService<Vec<u8>> for Method {
        type Response = Vec<u8>;
        type Future = BoxFuture<tonic::Response<Vec<u8>>, tonic::Status>;
        fn call(&mut self, req: tonic::Request<Vec<u8>>) -> Self::Future {
            let (fake, path) = (self.0.clone(), self.1.clone());
            Box::pin(async move {
                let delay = lock(&fake.0).delay;
                tokio::time::sleep(delay).await;
                fake.handle(&path, req.into_inner()).map(tonic::Response::new)
            })
        }
    }

    impl<B> tower::Service<http::Request<B>> for Fake
    where
        B: Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = BoxFuture<Self::Response, Infallible>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: http::Request<B>) -> Self::Future {
            let m = Method(self.clone(), req.uri().path().to_owned());
            Box::pin(async move { Ok(tonic::server::Grpc::new(RawCodec).unary(m, req).await) })
        }
    }
    impl tonic::server::NamedService for Fake {
        const NAME: &'static str = "runtime.v1.RuntimeService";
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dw-cri-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("tmpdir");
        d
    }

    fn cfg(endpoint: &Path) -> CriConfig {
        CriConfig {
            endpoint: Some(endpoint.to_path_buf()),
            request_timeout: Duration::from_secs(2),
            grace: Duration::from_secs(300),
            max_entries: 100,
            refresh_interval: Duration::from_secs(3600),
        }
    }

    async fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
        let t0 = Instant::now();
        while !f() {
            assert!(t0.elapsed() < limit, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // ---- tests ---------------------------------------------------------------------

    #[tokio::test]
    async fn detection_takes_the_first_endpoint_that_answers_version() {
        let d = tmpdir("detect");
        let stop = CancellationToken::new();
        let missing = d.join("missing.sock");
        // A socket file nobody listens on (runtime crashed): connection refused.
        let stale = d.join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
        // CRI disabled (Docker's containerd): Version is Unimplemented.
        let no_cri = d.join("nocri.sock");
        let f = Fake::new("containerd");
        lock(&f.0).version_unimplemented = true;
        f.serve(&no_cri, stop.clone()).await;
        let crio = d.join("crio.sock");
        Fake::new("cri-o").serve(&crio, stop.clone()).await;
        let ctrd = d.join("containerd.sock");
        Fake::new("containerd").serve(&ctrd, stop.clone()).await;

        let t = Duration::from_secs(2);
        let got = detect(&[missing.clone(), stale.clone(), no_cri.clone(), crio.clone(), ctrd.clone()], t).await;
        let conn = got.unwrap_or_else(|e| panic!("detect failed: {e}"));
        assert_eq!((conn.endpoint.as_path(), conn.runtime.as_str()), (crio.as_path(), "cri-o"));
        let conn = detect(&[ctrd.clone(), crio.clone()], t).await.expect("detect");
        assert_eq!(conn.runtime, "containerd");
        assert_eq!(detect(std::slice::from_ref(&missing), t).await.err(), Some("no_endpoint"));
        assert_eq!(detect(&[], t).await.err(), Some("no_endpoint"));
        assert_eq!(detect(&[missing, stale, no_cri], t).await.err(), Some("connect"));
        stop.cancel();
        let _ = std::fs::remove_dir_all(d);
    }

    #[tokio::test]
    async fn lookup_resolves_caches_and_coalesces() {
        let d = tmpdir("lookup");
        let sock = d.join("cri.sock");
        let stop = CancellationToken::new();
        let f = Fake::new("containerd");
        f.add_pod(&sid(1), "checkout-7d9f");
        f.serve(&sock, stop.clone()).await;
        let cancel = CancellationToken::new();
        let cri = Cri::spawn(cfg(&sock), cancel.clone());
        until("connected", Duration::from_secs(5), || cri.connected()).await;
        assert_eq!(cri.endpoint().as_deref(), Some(sock.as_path()));

        // Created after the warm-up listing: a miss, answered by the runtime.
        f.add_container(&cid(1), &sid(1), "api");
        f.set_delay(Duration::from_millis(150));
        let lookups = (0..10).map(|_| {
            let cri = cri.clone();
            tokio::spawn(async move { cri.lookup(&cid(1), Duration::from_secs(5)).await })
        });
        let mut results = Vec::new();
        for l in lookups {
            results.push(l.await.expect("join"));
        }
        assert_eq!(f.status_calls(), 1, "concurrent misses must share one ContainerStatus");
        let Lookup::Found(m) = &results[0] else { panic!("{:?}", results[0]) };
        assert!(results.iter().all(|r| r == &results[0]));
        let want = ContainerMeta {
            container_id: cid(1),
            container_name: "api".into(),
            pod_name: "checkout-7d9f".into(),
            namespace: "payments".into(),
            pod_uid: UID.into(),
            sandbox_id: sid(1),
            // ContainerStatus's name, not ListContainers' image id.
            image: "docker.io/shop/api:v2".into(),
            image_ref: format!("docker.io/shop/api@sha256:{}", "ab".repeat(32)),
            // The kubelet's io.kubernetes.pod.* copies are not the pod's labels.
            pod_labels: [("app".to_string(), "checkout".to_string())].into(),
            pod_annotations: [("team".to_string(), "shop".to_string())].into(),
            runtime: "containerd".into(),
        };
        assert_eq!(**m, want);

        // Now a hit: no call, immediate.
        f.set_delay(Duration::ZERO);
        let t0 = Instant::now();
        assert_eq!(cri.lookup(&cid(1), Duration::from_secs(5)).await, results[0]);
        assert!(t0.elapsed() < Duration::from_millis(50));
        assert_eq!(f.status_calls(), 1);
        assert_eq!(cri.cached(&cid(1)).as_deref(), Some(&want));

        // Unknown: NotFound, then remembered.
        assert_eq!(cri.lookup(&cid(9), Duration::from_secs(5)).await, Lookup::NotFound);
        assert_eq!(cri.lookup(&cid(9), Duration::from_secs(5)).await, Lookup::NotFound);
        assert_eq!(f.status_calls(), 2);

        // A sandbox id resolves to its pod (its pause process).
        let Lookup::Found(p) = cri.lookup(&sid(1), Duration::from_secs(5)).await else { panic!("sandbox") };
        assert_eq!(
            (p.pod_name.as_str(), p.container_name.as_str(), p.sandbox_id.clone()),
            ("checkout-7d9f", "", sid(1))
        );

        let s = cri.stats();
        assert!(s.hits >= 2 && s.misses >= 3, "{s:?}");
        cancel.cancel();
        stop.cancel();
        let _ = std::fs::remove_dir_all(d);
    }

    #[tokio::test]
    async fn slow_runtime_is_bounded_and_fills_the_cache_later() {
        let d = tmpdir("slow");
        let sock = d.join("cri.sock");
        let stop = CancellationToken::new();
        let f = Fake::new("containerd");
        f.add_pod(&sid(1), "p");
        f.serve(&sock, stop.clone()).await;
        let cancel = CancellationToken::new();
        let cri = Cri::spawn(cfg(&sock), cancel.clone());
        until("connected", Duration::from_secs(5), || cri.connected()).await;
        f.add_container(&cid(2), &sid(1), "api");
        f.set_delay(Duration::from_millis(500));
        let t0 = Instant::now();
        assert_eq!(cri.lookup(&cid(2), Duration::from_millis(50)).await, Lookup::Unavailable("timeout"));
        assert!(t0.elapsed() < Duration::from_millis(300), "{:?}", t0.elapsed());
        // The fetch went on without the caller.
        until("cache filled", Duration::from_secs(5), || cri.cached(&cid(2)).is_some()).await;
        cancel.cancel();
        stop.cancel();
        let _ = std::fs::remove_dir_all(d);
    }

    #[tokio::test]
    async fn missing_endpoint_is_unavailable_at_once() {
        let d = tmpdir("missing");
        let cancel = CancellationToken::new();
        let cri = Cri::spawn(cfg(&d.join("nothing.sock")), cancel.clone());
        let t0 = Instant::now();
        assert_eq!(cri.lookup(&cid(1), Duration::from_secs(10)).await, Lookup::Unavailable("no_endpoint"));
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        assert!(!cri.connected());
        // Later lookups do not wait either.
        let t0 = Instant::now();
        assert_eq!(cri.lookup(&cid(1), Duration::from_secs(10)).await, Lookup::Unavailable("no_endpoint"));
        assert!(t0.elapsed() < Duration::from_millis(50));
        cancel.cancel();
        let _ = std::fs::remove_dir_all(d);
    }

    #[tokio::test]
    async fn warm_up_grace_and_reconnect() {
        let d = tmpdir("warm");
        let sock = d.join("cri.sock");
        let f = Fake::new("containerd");
        f.add_pod(&sid(1), "p");
        f.add_container(&cid(1), &sid(1), "a");
        f.add_container(&cid(2), &sid(1), "b");
        let stop = CancellationToken::new();
        f.serve(&sock, stop.clone()).await;
        let cancel = CancellationToken::new();
        let mut c = cfg(&sock);
        c.refresh_interval = Duration::from_millis(50);
        c.grace = Duration::from_millis(400);
        let cri = Cri::spawn(c, cancel.clone());
        // Warmed without any lookup.
        until("warm", Duration::from_secs(5), || cri.cached(&cid(1)).is_some() && cri.cached(&cid(2)).is_some()).await;
        assert_eq!(cri.cached(&cid(1)).map(|m| m.pod_labels.len()), Some(1));

        // Gone from the runtime: still resolves during the grace period, then not.
        f.remove_container(&cid(2));
        let gone = Instant::now();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(cri.cached(&cid(2)).is_some(), "dropped before the grace period ended");
        until("expiry", Duration::from_secs(5), || cri.cached(&cid(2)).is_none()).await;
        assert!(gone.elapsed() >= Duration::from_millis(400));
        // ...and the next sweep drops it.
        until("sweep", Duration::from_secs(5), || cri.stats().expired == 1).await;

        // Runtime restart: the cache survives, lookups during the outage wait for it.
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = std::fs::remove_file(&sock);
        until("disconnected", Duration::from_secs(5), || !cri.connected()).await;
        f.add_container(&cid(3), &sid(1), "c");
        let cri2 = cri.clone();
        let pending = tokio::spawn(async move { cri2.lookup(&cid(3), Duration::from_secs(10)).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(cri.cached(&cid(1)).is_some(), "cache lost during the outage");
        let restarted = Instant::now();
        let stop2 = CancellationToken::new();
        f.serve(&sock, stop2.clone()).await;
        let got = pending.await.expect("join");
        assert!(matches!(&got, Lookup::Found(m) if m.container_name == "c"), "{got:?}");
        assert!(restarted.elapsed() < Duration::from_secs(6), "{:?}", restarted.elapsed());
        assert!(cri.connected());
        assert!(cri.stats().reconnects >= 1);
        cancel.cancel();
        stop2.cancel();
        let _ = std::fs::remove_dir_all(d);
    }

    // ---- pure parts ----------------------------------------------------------------

    fn meta(id: &str) -> Arc<ContainerMeta> {
        Arc::new(ContainerMeta {
            container_id: id.into(),
            container_name: String::new(),
            pod_name: String::new(),
            namespace: String::new(),
            pod_uid: String::new(),
            sandbox_id: String::new(),
            image: String::new(),
            image_ref: String::new(),
            pod_labels: BTreeMap::new(),
            pod_annotations: BTreeMap::new(),
            runtime: String::new(),
        })
    }

    #[test]
    fn cache_grace_with_a_fake_clock() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = Cache::new(10, s(300));
        c.insert(meta("a"), t0);
        c.insert(meta("b"), t0);
        let listed: HashSet<String> = ["a".to_string()].into();
        c.reconcile(&listed, t0 + s(1), t0 + s(10));
        assert!(c.get("b", t0 + s(10)).is_some());
        assert!(c.get("b", t0 + s(309)).is_some());
        assert!(c.get("b", t0 + s(310)).is_none(), "past grace even before the next sweep");
        // Listed again (a runtime hiccup): back to present.
        c.reconcile(&["a".to_string(), "b".to_string()].into(), t0 + s(20), t0 + s(20));
        assert!(c.get("b", t0 + s(1000)).is_some());
        c.reconcile(&listed, t0 + s(30), t0 + s(30));
        c.reconcile(&listed, t0 + s(330), t0 + s(330));
        assert!(!c.entries.contains_key("b"));
        assert_eq!(c.expired, 1);
        // Inserted after the listing started: not marked gone by that listing.
        c.insert(meta("late"), t0 + s(400));
        c.reconcile(&listed, t0 + s(399), t0 + s(401));
        assert!(c.entries["late"].gone_since.is_none());
    }

    #[test]
    fn cache_evicts_gone_first_then_oldest() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = Cache::new(3, s(300));
        c.insert(meta("old"), t0);
        c.insert(meta("gone"), t0 + s(5));
        c.insert(meta("new"), t0 + s(6));
        c.reconcile(&["old".to_string(), "new".to_string()].into(), t0 + s(7), t0 + s(8));
        c.insert(meta("x"), t0 + s(9));
        assert!(!c.entries.contains_key("gone"), "a gone entry goes first");
        assert_eq!(c.entries.len(), 3);
        c.insert(meta("y"), t0 + s(10));
        // old and new were both seen at +8 by the listing; x at +9, y at +10.
        assert!(c.entries.contains_key("x") && c.entries.contains_key("y"));
        assert_eq!(c.entries.len(), 3);
        assert_eq!(c.evictions, 2);
        // Re-inserting an existing id never evicts.
        c.insert(meta("y"), t0 + s(11));
        assert_eq!(c.evictions, 2);
        // Negative cache: TTL, cleared when listed, bounded.
        c.insert_negative("n", t0);
        assert!(c.is_negative("n", t0 + s(29)) && !c.is_negative("n", t0 + s(31)));
        for i in 0..10 {
            c.insert_negative(&i.to_string(), t0);
        }
        assert!(c.negative.len() <= 3);
        let mut zero = Cache::new(0, s(1));
        zero.insert(meta("a"), t0);
        zero.insert(meta("b"), t0);
        assert_eq!(zero.entries.len(), 1);
    }

    #[test]
    fn meta_from_partial_answers_never_panics() {
        let m = build_meta("id", None, None, None, "containerd");
        assert_eq!((m.container_id.as_str(), m.pod_name.as_str(), m.image.as_str()), ("id", "", ""));
        // Labels stand in for a missing sandbox.
        let st = api::ContainerStatus {
            labels: map(&[
                ("io.kubernetes.pod.name", "p"),
                ("io.kubernetes.pod.namespace", "ns"),
                ("io.kubernetes.pod.uid", UID),
                ("io.kubernetes.container.name", "c"),
            ]),
            image: Some(api::ImageSpec { image: format!("sha256:{}", "ab".repeat(32)), ..Default::default() }),
            ..Default::default()
        };
        let m = build_meta("id", Some(&st), None, None, "x");
        assert_eq!((m.pod_name.as_str(), m.namespace.as_str(), m.pod_uid.as_str()), ("p", "ns", UID));
        assert_eq!(m.container_name, "c");
        assert_eq!(m.image, format!("sha256:{}", "ab".repeat(32)), "an id is better than nothing");
        // A user_specified_image (containerd >= 1.7) wins over the id.
        let mut st2 = st.clone();
        if let Some(i) = st2.image.as_mut() {
            i.user_specified_image = "busybox:1.36".into();
        }
        assert_eq!(build_meta("id", Some(&st2), None, None, "x").image, "busybox:1.36");
    }

    #[test]
    fn endpoint_values() {
        assert_eq!(
            parse_endpoint("unix:///run/containerd/containerd.sock"),
            Ok("/run/containerd/containerd.sock".into())
        );
        assert_eq!(parse_endpoint("/var/run/crio/crio.sock"), Ok("/var/run/crio/crio.sock".into()));
        assert!(parse_endpoint("tcp://1.2.3.4:1").unwrap_err().contains("only unix://"));
        assert!(parse_endpoint("run/x.sock").unwrap_err().contains("absolute"));
        assert_eq!(DEFAULT_ENDPOINTS[0], "/run/containerd/containerd.sock");
    }
}
