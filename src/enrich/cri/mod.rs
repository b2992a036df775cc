//! The container runtime's client: CRI (`runtime.v1` gRPC on a Unix socket),
//! for containerd, CRI-O and cri-dockerd.
//!
//! A client, not a cache: what it learns about containers is kept by the
//! container registry (`crate::containers`), which asks it on a miss
//! ([`Cri::fetch`]) and lists it every few seconds ([`Cri::list`]).
//!
//! Design, and why:
//! - **The first endpoint that answers `Version()` wins** when none is
//!   configured: on a Docker host `/run/containerd/containerd.sock` is
//!   Docker's containerd with CRI disabled, which fails `Version()`.
//! - **Runtime restarts lose nothing**: a background task reconnects with
//!   capped exponential backoff; a fetch during the outage waits (bounded) for
//!   the reconnection instead of failing; a runtime that never answered makes
//!   callers fail at once instead of waiting.
//! - **Authoritative sources**: pod name/namespace/uid come from the sandbox
//!   (`PodSandboxStatus.metadata`), falling back to the `io.kubernetes.pod.*`
//!   labels the kubelet puts on each container; the image from
//!   `ContainerStatus`, which resolves the image id the kubelet sends in
//!   `CreateContainer` to a name. `ListContainers` is the only call that names
//!   a container's sandbox. Sandboxes are cached here (bounded): every
//!   container of a pod needs its pod.
//! - **Nothing the runtime sends can panic us**: every field is optional here.

#[cfg(test)]
pub(crate) mod fake;
mod meta;

pub use meta::ContainerMeta;

use meta::{PodInfo, build_meta};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use crate::locks::{lock, read, write};
use crate::metrics::CriMetrics;

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as api;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::sync::{Notify, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Uri};

/// Sockets probed, in this order, when no endpoint is configured.
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
/// ContainerStatus calls in flight at once during a listing.
const LIST_CONCURRENCY: usize = 8;
/// How long a fetch waits for a lost connection to come back before giving up.
const RECONNECT_WAIT: Duration = Duration::from_secs(15);
/// Sandboxes remembered between listings.
const MAX_SANDBOXES: usize = 16_384;

/// Reasons a lookup can fail, as `driftwatch_enrich_failures_total` labels:
/// `no_endpoint` (auto-detection found no socket), `no_socket` (the
/// configured socket does not exist), `connect`, `timeout`, `rpc`.
pub const UNAVAILABLE_REASONS: [&str; 5] = ["no_endpoint", "no_socket", "connect", "timeout", "rpc"];

/// Configuration of [`Cri::spawn`].
#[derive(Debug, Clone)]
pub struct CriConfig {
    /// Socket path; `None` probes [`DEFAULT_ENDPOINTS`].
    pub endpoint: Option<PathBuf>,
    /// Timeout of each RPC (and of each connection attempt).
    pub request_timeout: Duration,
}

impl Default for CriConfig {
    fn default() -> Self {
        CriConfig { endpoint: None, request_timeout: Duration::from_secs(2) }
    }
}

/// What the runtime answered about one id.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Found(Arc<ContainerMeta>),
    /// The runtime answered: no such container or sandbox (not a CRI container,
    /// e.g. made with `ctr`).
    NotFound,
    /// No answer. Reason: one of [`UNAVAILABLE_REASONS`].
    Unavailable(&'static str),
}

/// A fetch's answer, and whether it is complete enough to keep (a container
/// whose sandbox is unknown yet is returned but asked again next time).
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    pub lookup: Lookup,
    pub complete: bool,
}

/// One container of a listing.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: String,
    pub running: bool,
    /// Its metadata, when the caller did not know it yet.
    pub meta: Option<Arc<ContainerMeta>>,
}

/// What the runtime listed: containers and the ids of its pod sandboxes.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub containers: Vec<Listed>,
    pub sandboxes: Vec<String>,
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

/// The connection state callers wait on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
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

/// The CRI client. See the module docs.
pub struct Cri {
    cfg: CriConfig,
    conn: Mutex<Option<Conn>>,
    link: watch::Sender<Link>,
    /// Wakes the background task early: an RPC saw the connection fail.
    kick: Notify,
    sandboxes: RwLock<HashMap<String, Arc<PodInfo>>>,
    metrics: CriMetrics,
    /// Since when the runtime has not answered (None while it does).
    down_since: Mutex<Option<std::time::Instant>>,
}

impl Cri {
    /// Starts the background task (needs a tokio runtime): finds the endpoint
    /// and keeps a connection to it, with backoff, until `cancel`.
    pub fn spawn(cfg: CriConfig, metrics: CriMetrics, cancel: CancellationToken) -> Arc<Cri> {
        let cri = Arc::new(Cri {
            cfg,
            conn: Mutex::new(None),
            link: watch::Sender::new(Link::Starting),
            kick: Notify::new(),
            sandboxes: RwLock::new(HashMap::new()),
            metrics,
            down_since: Mutex::new(Some(std::time::Instant::now())),
        });
        tokio::spawn(background(Arc::downgrade(&cri), cancel));
        cri
    }

    /// The last RPC or connection attempt reached the runtime.
    pub fn connected(&self) -> bool {
        *self.link.borrow() == Link::Up
    }

    /// The connection state, to wait on (the registry lists again on `Up`).
    pub fn link(&self) -> watch::Receiver<Link> {
        self.link.subscribe()
    }

    /// Why the runtime cannot answer at all, when it never has: callers
    /// should not wait for it.
    pub fn never_up(&self) -> Option<&'static str> {
        match *self.link.borrow() {
            Link::Down { ever_up: false, reason } => Some(reason),
            _ => None,
        }
    }

    /// The socket in use (or configured, before the first connection).
    pub fn endpoint(&self) -> Option<PathBuf> {
        lock(&self.conn).as_ref().map(|c| c.endpoint.clone()).or_else(|| self.cfg.endpoint.clone())
    }

    /// Asks the runtime about `id` (a container or a pod sandbox). A
    /// connection that broke under us (runtime restart not noticed yet) is
    /// re-established and the call retried once.
    pub async fn fetch(&self, id: &str) -> Fetched {
        let unavailable = |reason| Fetched { lookup: Lookup::Unavailable(reason), complete: false };
        for attempt in 0..2 {
            let conn = match self.wait_link().await {
                Ok(c) => c,
                Err(reason) => return unavailable(reason),
            };
            match self.fetch_once(&conn, id).await {
                Ok(found) => return found,
                Err(e) if e.reason() == "connect" && attempt == 0 => self.lost(&e),
                Err(e) => return unavailable(e.reason()),
            }
        }
        unavailable("connect")
    }

    async fn fetch_once(&self, conn: &Conn, id: &str) -> Result<Fetched, RpcError> {
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
            // A pod's pause container runs processes too; its id is a sandbox id.
            Err(RpcError::NotFound) => {
                let lookup = match self.pod(conn, id).await {
                    Some(pod) => Lookup::Found(Arc::new(build_meta(id, None, None, Some(&pod), &conn.runtime))),
                    None => Lookup::NotFound,
                };
                return Ok(Fetched { lookup, complete: true });
            }
            Err(e) => return Err(e),
        };
        let Some(status) = status else {
            return Err(RpcError::Status(tonic::Code::Internal, "ContainerStatus without status".into()));
        };
        let listed = listed.ok().and_then(|l| l.containers.into_iter().find(|c| c.id == id));
        let sandbox_id = listed.as_ref().map(|c| c.pod_sandbox_id.clone()).unwrap_or_default();
        let pod = self.pod(conn, &sandbox_id).await;
        let meta = Arc::new(build_meta(id, Some(&status), listed.as_ref(), pod.as_deref(), &conn.runtime));
        Ok(Fetched { lookup: Lookup::Found(meta), complete: pod.is_some() })
    }

    /// Sandbox info, from the cache or PodSandboxStatus.
    async fn pod(&self, conn: &Conn, sandbox_id: &str) -> Option<Arc<PodInfo>> {
        if sandbox_id.is_empty() {
            return None;
        }
        if let Some(p) = read(&self.sandboxes).get(sandbox_id) {
            return Some(p.clone());
        }
        let mut c = conn.client.clone();
        let req = api::PodSandboxStatusRequest { pod_sandbox_id: sandbox_id.to_owned(), verbose: false };
        let status = rpc(self.cfg.request_timeout, c.pod_sandbox_status(req)).await.ok()?.status?;
        let pod = Arc::new(PodInfo::from_status(&status));
        let mut sandboxes = write(&self.sandboxes);
        if sandboxes.len() >= MAX_SANDBOXES {
            // Refilled by the next listing.
            sandboxes.clear();
        }
        sandboxes.insert(pod.sandbox_id.clone(), pod.clone());
        Some(pod)
    }

    /// Lists sandboxes and containers; fetches the status of every listed
    /// container `known` says nothing about. Fails with a lookup reason.
    pub async fn list(&self, known: impl Fn(&str) -> bool) -> Result<Listing, &'static str> {
        let conn = match lock(&self.conn).clone().filter(|_| self.connected()) {
            Some(c) => c,
            None => return Err(self.never_up().unwrap_or("connect")),
        };
        self.list_with(&conn, known).await.map_err(|e| {
            self.lost(&e);
            e.reason()
        })
    }

    async fn list_with(&self, conn: &Conn, known: impl Fn(&str) -> bool) -> Result<Listing, RpcError> {
        let t = self.cfg.request_timeout;
        let mut c = conn.client.clone();
        let pods = rpc(t, c.list_pod_sandbox(api::ListPodSandboxRequest { filter: None })).await?.items;
        let containers = rpc(t, c.list_containers(api::ListContainersRequest { filter: None })).await?.containers;
        let pods: HashMap<String, Arc<PodInfo>> =
            pods.iter().map(|p| (p.id.clone(), Arc::new(PodInfo::from_listed(p)))).collect();
        *write(&self.sandboxes) = pods.iter().take(MAX_SANDBOXES).map(|(k, v)| (k.clone(), v.clone())).collect();

        let running = api::ContainerState::ContainerRunning as i32;
        let mut out =
            Listing { containers: Vec::with_capacity(containers.len()), sandboxes: pods.keys().cloned().collect() };
        let sem = Arc::new(Semaphore::new(LIST_CONCURRENCY));
        let mut set = tokio::task::JoinSet::new();
        for listed in containers {
            if known(&listed.id) {
                out.containers.push(Listed { id: listed.id.clone(), running: listed.state == running, meta: None });
                continue;
            }
            let (sem, mut client) = (sem.clone(), conn.client.clone());
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let req = api::ContainerStatusRequest { container_id: listed.id.clone(), verbose: false };
                let status = rpc(t, client.container_status(req)).await.ok().and_then(|r| r.status);
                (listed, status)
            });
        }
        while let Some(joined) = set.join_next().await {
            let Ok((listed, status)) = joined else { continue };
            let pod = pods.get(&listed.pod_sandbox_id);
            let meta = build_meta(&listed.id, status.as_ref(), Some(&listed), pod.map(|p| &**p), &conn.runtime);
            out.containers.push(Listed {
                id: listed.id.clone(),
                running: listed.state == running,
                meta: Some(Arc::new(meta)),
            });
        }
        Ok(out)
    }

    /// Whether the runtime enforces a read-only root filesystem (verbose
    /// ContainerStatus: `info.runtimeSpec.root.readonly`, containerd and
    /// CRI-O); `None` when it does not say.
    pub async fn readonly_rootfs(&self, id: &str) -> Option<bool> {
        let conn = lock(&self.conn).clone().filter(|_| self.connected())?;
        let mut c = conn.client.clone();
        let req = api::ContainerStatusRequest { container_id: id.to_owned(), verbose: true };
        let info = rpc(self.cfg.request_timeout, c.container_status(req)).await.ok()?.info;
        readonly_from_verbose_info(&info)
    }

    /// The runtime's current status of container `id` (resources, mounts,
    /// image): the configuration watch's refresh. `None` when not answered.
    pub async fn status(&self, id: &str) -> Option<api::ContainerStatus> {
        let conn = lock(&self.conn).clone().filter(|_| self.connected())?;
        let mut c = conn.client.clone();
        let req = api::ContainerStatusRequest { container_id: id.to_owned(), verbose: false };
        rpc(self.cfg.request_timeout, c.container_status(req)).await.ok()?.status
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

    /// How long the runtime has not answered (None while it does; counted
    /// from the start until the first connection).
    pub fn down_for(&self) -> Option<Duration> {
        lock(&self.down_since).map(|t| t.elapsed())
    }

    fn set_link(&self, l: Link) {
        self.metrics.connected.set((l == Link::Up) as i64);
        let mut down = lock(&self.down_since);
        match l {
            Link::Up => *down = None,
            _ => {
                down.get_or_insert_with(std::time::Instant::now);
            }
        }
        drop(down);
        self.link.send_if_modified(|cur| {
            let changed = *cur != l;
            *cur = l;
            changed
        });
    }

    /// An RPC failed: a transport failure means reconnect now; anything else
    /// (a runtime bug, a slow answer) is left to the next call.
    fn lost(&self, e: &RpcError) {
        let reason = e.reason();
        if reason == "connect" || reason == "timeout" {
            if self.connected() {
                tracing::warn!(reason, error = %e, "CRI connection lost; reconnecting");
            }
            self.set_link(Link::Down { ever_up: true, reason: "connect" });
            self.kick.notify_one();
        } else {
            tracing::warn!(error = %e, "CRI call failed");
        }
    }

    /// The socket tried, for messages: the configured one, or every default.
    fn describe_endpoint(&self) -> String {
        match &self.cfg.endpoint {
            Some(p) => p.display().to_string(),
            None => format!("auto-detect ({})", DEFAULT_ENDPOINTS.join(", ")),
        }
    }

    /// One connection attempt over the configured or auto-detected endpoints.
    async fn connect(&self) -> Result<Conn, &'static str> {
        let candidates: Vec<PathBuf> = match &self.cfg.endpoint {
            // The configured socket is not there: say so, rather than "no endpoint".
            Some(p) if std::fs::symlink_metadata(p).is_err() => return Err("no_socket"),
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

/// The background task: (re)connect with backoff whenever the link is down.
async fn background(weak: Weak<Cri>, cancel: CancellationToken) {
    let mut backoff = BACKOFF.0;
    let mut ever_up = false;
    loop {
        let Some(cri) = weak.upgrade() else { return };
        let wait = if cri.connected() {
            // Up: sleep until an RPC reports the connection lost.
            Duration::MAX
        } else {
            match cri.connect().await {
                Ok(conn) => {
                    tracing::info!(endpoint = %conn.endpoint.display(), runtime = %conn.runtime, "CRI connected");
                    cri.metrics.connect(true);
                    ever_up = true;
                    backoff = BACKOFF.0;
                    *lock(&cri.conn) = Some(conn);
                    cri.set_link(Link::Up);
                    Duration::MAX
                }
                Err(reason) => {
                    cri.metrics.connect(false);
                    if *cri.link.borrow() != (Link::Down { ever_up, reason }) {
                        tracing::warn!(reason, endpoint = %cri.describe_endpoint(), "CRI runtime not reachable; retrying with backoff");
                    }
                    cri.set_link(Link::Down { ever_up, reason });
                    let wait = backoff;
                    backoff = (backoff * 2).min(BACKOFF.1);
                    wait
                }
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => {
                // Not `ever_up`: nothing will reconnect, so callers must not wait.
                cri.set_link(Link::Down { ever_up: false, reason: "connect" });
                return;
            }
            _ = tokio::time::sleep(wait.min(Duration::from_secs(3600))) => {}
            _ = cri.kick.notified() => {}
        }
    }
}

/// What the runtime says of a container's root filesystem (verbose
/// ContainerStatus: `info.runtimeSpec.root.readonly`, containerd and CRI-O).
/// `None` when the runtime does not say.
pub fn readonly_from_verbose_info(info: &HashMap<String, String>) -> Option<bool> {
    let v: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    let root = v.get("runtimeSpec")?.get("root")?;
    Some(root.get("readonly").and_then(|b| b.as_bool()).unwrap_or(false))
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

#[cfg(test)]
mod tests {
    use super::fake::*;
    use super::*;
    use std::time::Instant;

    fn cfg(endpoint: &Path) -> CriConfig {
        CriConfig { endpoint: Some(endpoint.to_path_buf()), request_timeout: Duration::from_secs(2) }
    }

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
    async fn fetch_lists_and_reconnects() {
        let (d, sock, f, stop) = serve_one_pod("client").await;
        let cancel = CancellationToken::new();
        let metrics = CriMetrics::default();
        let cri = Cri::spawn(cfg(&sock), metrics.clone(), cancel.clone());
        until("connected", Duration::from_secs(5), || cri.connected()).await;
        assert_eq!(cri.endpoint().as_deref(), Some(sock.as_path()));

        let got = cri.fetch(&cid(1)).await;
        let Lookup::Found(m) = &got.lookup else { panic!("{got:?}") };
        assert!(got.complete);
        assert_eq!(
            (m.container_name.as_str(), m.pod_name.as_str(), m.namespace.as_str()),
            ("api", "checkout-7d9f", "payments")
        );
        // ContainerStatus's name, not ListContainers' image id.
        assert_eq!(m.image, "docker.io/shop/api:v2");
        // The kubelet's io.kubernetes.pod.* copies are not the pod's labels.
        assert_eq!(m.pod_labels, [("app".to_string(), "checkout".to_string())].into());
        assert_eq!(m.pod_annotations.get("team").map(String::as_str), Some("shop"));
        // A sandbox id resolves to its pod (its pause process); unknown ids are NotFound.
        let Lookup::Found(p) = cri.fetch(&sid(1)).await.lookup else { panic!("sandbox") };
        assert_eq!((p.pod_name.as_str(), p.container_name.as_str()), ("checkout-7d9f", ""));
        assert_eq!(cri.fetch(&cid(9)).await.lookup, Lookup::NotFound);

        // A listing fetches statuses only for what the caller does not know.
        f.add_container(&cid(2), &sid(1), "sidecar");
        let before = f.status_calls();
        let l = cri.list(|id| id == cid(1)).await.expect("listing");
        assert_eq!(f.status_calls(), before + 1);
        assert_eq!(l.sandboxes, vec![sid(1)]);
        let two = l.containers.iter().find(|c| c.id == cid(2)).expect("listed");
        assert!(two.running && two.meta.as_ref().is_some_and(|m| m.container_name == "sidecar"));
        assert!(l.containers.iter().any(|c| c.id == cid(1) && c.meta.is_none()));

        // Runtime restart: a fetch during the outage waits for the reconnection.
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = std::fs::remove_file(&sock);
        assert!(cri.list(|_| false).await.is_err());
        until("disconnected", Duration::from_secs(5), || !cri.connected()).await;
        let cri2 = cri.clone();
        let pending = tokio::spawn(async move { cri2.fetch(&cid(2)).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let restarted = Instant::now();
        let stop2 = CancellationToken::new();
        f.serve(&sock, stop2.clone()).await;
        let got = pending.await.expect("join");
        assert!(matches!(&got.lookup, Lookup::Found(m) if m.container_name == "sidecar"), "{got:?}");
        assert!(restarted.elapsed() < Duration::from_secs(6), "{:?}", restarted.elapsed());
        assert!(cri.connected());
        assert!(metrics.connects().0 >= 2, "{:?}", metrics.connects());
        cancel.cancel();
        stop2.cancel();
        let _ = std::fs::remove_dir_all(d);
    }

    #[tokio::test]
    async fn missing_endpoint_fails_at_once() {
        let d = tmpdir("missing");
        let cancel = CancellationToken::new();
        let cri = Cri::spawn(cfg(&d.join("nothing.sock")), CriMetrics::default(), cancel.clone());
        let t0 = Instant::now();
        assert_eq!(cri.fetch(&cid(1)).await.lookup, Lookup::Unavailable("no_socket"));
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        assert!(!cri.connected());
        assert_eq!(cri.never_up(), Some("no_socket"));
        let t0 = Instant::now();
        assert_eq!(cri.fetch(&cid(1)).await.lookup, Lookup::Unavailable("no_socket"));
        assert!(t0.elapsed() < Duration::from_millis(50));
        assert_eq!(cri.list(|_| false).await.err(), Some("no_socket"));
        cancel.cancel();
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn rootfs_readonly_from_verbose_info() {
        let info = |j: &str| HashMap::from([("info".to_string(), j.to_string())]);
        assert_eq!(
            readonly_from_verbose_info(&info(r#"{"runtimeSpec":{"root":{"path":"rootfs","readonly":true}}}"#)),
            Some(true)
        );
        assert_eq!(readonly_from_verbose_info(&info(r#"{"runtimeSpec":{"root":{"path":"rootfs"}}}"#)), Some(false));
        assert_eq!(readonly_from_verbose_info(&info(r#"{"pid":1}"#)), None);
        assert_eq!(readonly_from_verbose_info(&HashMap::new()), None);
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
