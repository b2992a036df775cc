//! The admin API: the investigator's tools served by the agent to the node
//! (`driftwatch quarantine`, the cluster-side responder, a human with
//! `kubectl port-forward`), on its own listener, never the metrics port.
//!
//! - `GET  /v1/containers/{id}/diff[?hash_limit=N]`  the filesystem diff
//! - `GET  /v1/containers/{id}/processes`            the process list
//! - `GET  /v1/quarantine`                           quarantined containers
//! - `POST|DELETE /v1/containers/{id}/quarantine`    apply / release
//! - `POST /v1/containers/{id}/evidence`             capture a bundle now
//! - `GET  /healthz`
//!
//! `admin_addr` is a Unix socket by default (`/run/driftwatch/admin.sock`,
//! mode 0600: root on the node); a TCP address only with a bearer token
//! (`admin_token_file`), checked on every request. Answers are JSON, errors
//! `{"error": "..."}`. Backend calls walk filesystems: they run on the
//! blocking pool, [`Limits::busy`] at a time; beyond that the answer is 503
//! with `Retry-After`.

mod client;
mod routes;

pub use client::{CALL_TIMEOUT, ClientError, call};
pub use routes::{Call, TEMPLATES, check_id};

use crate::{
    admission::{Admission, Refusal, Slot},
    config::AdminAddr,
    metrics::admin::AdminMetrics,
};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Request, Response, StatusCode, body::Incoming, header, http::request::Parts, server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::{
    os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::UnixListener,
    sync::Semaphore,
};
use tokio_util::sync::CancellationToken;

/// What the agent does for each route. Calls block (filesystem walks, bpf
/// map updates): the server runs them on the blocking pool. `id` is 1-64
/// lower-case hex characters, already checked; a unique prefix is the
/// backend's to resolve (404 when nothing matches, 409 when ambiguous).
///
/// Status conventions the CLI relies on: 404 unknown container; 409 for
/// `quarantine_release` of a container that is not quarantined (the CLI
/// exits 1 then) and for an ambiguous prefix; 503 when the backend cannot
/// act now (e.g. the sensor is not loaded).
pub trait Backend: Send + Sync + 'static {
    fn diff(&self, id: &str, hash_limit: Option<u64>) -> Result<serde_json::Value, ApiError>;
    fn processes(&self, id: &str) -> Result<serde_json::Value, ApiError>;
    fn quarantine_list(&self) -> Result<serde_json::Value, ApiError>;
    fn quarantine_apply(&self, id: &str) -> Result<serde_json::Value, ApiError>;
    fn quarantine_release(&self, id: &str) -> Result<serde_json::Value, ApiError>;
    fn capture(&self, id: &str) -> Result<serde_json::Value, ApiError>;
}

/// An answer other than 200: its status and a message for `{"error": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }
}

/// Why the admin listener cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin_addr {addr}: a TCP listener needs a bearer token (admin_token_file), refusing to serve without one")]
    TokenRequired { addr: String },
    #[error("admin socket directory {}: {source}", .path.display())]
    SocketDir { path: PathBuf, source: std::io::Error },
    #[error("admin socket {}: another process is serving on it (a second agent?)", .path.display())]
    InUse { path: PathBuf },
    #[error("admin socket {}: something that is not a socket is there; not replacing it", .path.display())]
    NotASocket { path: PathBuf },
    #[error("admin_addr {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
}

impl AdminError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TokenRequired { .. } => "token_required",
            Self::SocketDir { .. } => "socket_dir",
            Self::InUse { .. } => "in_use",
            Self::NotASocket { .. } => "not_a_socket",
            Self::Bind { .. } => "bind",
        }
    }
}

/// The listener's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections held at once; beyond, new ones are closed at accept.
    pub max_connections: usize,
    /// Per peer address (TCP only: every Unix peer is root on the node).
    pub max_per_peer: usize,
    /// Backend calls running at once; beyond, 503.
    pub busy: usize,
    /// A connection that has not sent its request head by then is closed.
    pub header_timeout: Duration,
    /// No connection lives longer (a diff of a large container takes a while).
    pub deadline: Duration,
    /// Largest request body accepted (no route takes one).
    pub max_body: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            max_per_peer: 8,
            busy: 2,
            header_timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(300),
            max_body: 1024,
        }
    }
}

/// Seconds a client told 503 waits before trying again.
const RETRY_AFTER_S: &str = "2";
/// Request head bytes buffered at most.
const MAX_REQUEST_BUF: usize = 16 * 1024;

struct State {
    backend: Arc<dyn Backend>,
    token: Option<Vec<u8>>,
    metrics: AdminMetrics,
    busy: Arc<Semaphore>,
    limits: Limits,
}

/// Serves the admin API on `addr` until `cancel` fires (then removes its
/// Unix socket). A TCP `addr` needs `token`.
pub async fn serve(
    addr: AdminAddr,
    token: Option<String>,
    backend: Arc<dyn Backend>,
    metrics: AdminMetrics,
    cancel: CancellationToken,
) -> Result<(), AdminError> {
    serve_with(addr, token, backend, metrics, Limits::default(), cancel).await
}

/// [`serve`] with explicit limits (tests use small ones).
pub async fn serve_with(
    addr: AdminAddr,
    token: Option<String>,
    backend: Arc<dyn Backend>,
    metrics: AdminMetrics,
    limits: Limits,
    cancel: CancellationToken,
) -> Result<(), AdminError> {
    bind(addr, token).await?.serve(backend, metrics, limits, cancel).await;
    Ok(())
}

/// A bound admin listener: the agent binds before it spawns the server, so a
/// bind error stops startup with its cause instead of a guess by timeout.
pub struct AdminListener {
    token: Option<Vec<u8>>,
    bound: Bound,
}

enum Bound {
    Tcp(tokio::net::TcpListener),
    /// The socket, its path and inode (removed at exit only if still ours).
    Unix(UnixListener, PathBuf, u64),
}

/// Binds `addr`; a TCP address needs a non-empty `token`.
pub async fn bind(addr: AdminAddr, token: Option<String>) -> Result<AdminListener, AdminError> {
    let token = token.map(|t| t.trim().as_bytes().to_vec()).filter(|t| !t.is_empty());
    let bound = match addr {
        AdminAddr::Tcp(a) => {
            if token.is_none() {
                return Err(AdminError::TokenRequired { addr: addr.to_string() });
            }
            let l = crate::server::bind(a).await.map_err(|source| AdminError::Bind { addr: a.to_string(), source })?;
            tracing::info!(addr = %a, "admin API listening (TCP, bearer token)");
            Bound::Tcp(l)
        }
        AdminAddr::Unix(path) => {
            let (l, ino) = bind_unix(&path)?;
            tracing::info!(path = %path.display(), "admin API listening (Unix socket, mode 0600)");
            Bound::Unix(l, path, ino)
        }
    };
    Ok(AdminListener { token, bound })
}

impl AdminListener {
    /// Serves until `cancel` fires, then removes its Unix socket.
    pub async fn serve(
        self,
        backend: Arc<dyn Backend>,
        metrics: AdminMetrics,
        limits: Limits,
        cancel: CancellationToken,
    ) {
        metrics.declare();
        let busy = Arc::new(Semaphore::new(limits.busy));
        let state = Arc::new(State { backend, token: self.token, metrics, busy, limits });
        let admission = Admission::new(limits.max_connections, limits.max_per_peer);
        match self.bound {
            Bound::Tcp(l) => loop {
                let (stream, peer) = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = l.accept() => match r {
                        Ok(v) => v,
                        Err(e) => { accept_failed(&e).await; continue; }
                    },
                };
                match admission.admit(Some(peer.ip().to_canonical())) {
                    Ok(slot) => drop(tokio::spawn(connection(stream, slot, state.clone()))),
                    Err(refusal) => {
                        state.metrics.rejected(refusal_reason(refusal));
                        let _ = stream.set_zero_linger();
                    }
                }
            },
            Bound::Unix(l, path, ino) => {
                serve_unix(&l, &admission, &state, &cancel).await;
                // Only our own socket: a newer agent may have replaced it already.
                if std::fs::symlink_metadata(&path).is_ok_and(|m| m.ino() == ino) {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
}

async fn serve_unix(l: &UnixListener, admission: &Arc<Admission>, state: &Arc<State>, cancel: &CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            r = l.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => { accept_failed(&e).await; continue; }
            },
        };
        match admission.admit(None) {
            Ok(slot) => drop(tokio::spawn(connection(stream, slot, state.clone()))),
            Err(refusal) => state.metrics.rejected(refusal_reason(refusal)),
        }
    }
}

/// The `reason` label of `driftwatch_admin_connections_rejected_total`.
fn refusal_reason(r: Refusal) -> &'static str {
    match r {
        Refusal::PeerLimit => "peer_limit",
        Refusal::Full => "full",
    }
}

async fn accept_failed(e: &std::io::Error) {
    // EMFILE and friends: let connections end before trying again.
    tracing::warn!(error = %e, "admin API: accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Creates the socket's directory (0700 when we create it), replaces a stale
/// socket, and binds so that the socket appears under its name only once it
/// is 0600: bound under a temporary name, chmod'ed, renamed.
fn bind_unix(path: &Path) -> Result<(UnixListener, u64), AdminError> {
    let dir_err = |source| AdminError::SocketDir { path: path.parent().unwrap_or(path).to_path_buf(), source };
    let bind_err = |source| AdminError::Bind { addr: format!("unix://{}", path.display()), source };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("/"));
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(dir_err)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(dir_err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(AdminError::InUse { path: path.to_path_buf() });
            }
            std::fs::remove_file(path).map_err(bind_err)?;
        }
        Ok(_) => return Err(AdminError::NotASocket { path: path.to_path_buf() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let l = std::os::unix::net::UnixListener::bind(&tmp).map_err(bind_err)?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| l.set_nonblocking(true))
        .and_then(|()| std::fs::symlink_metadata(path));
    let ino = match placed {
        Ok(m) => m.ino(),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(bind_err(e));
        }
    };
    Ok((UnixListener::from_std(l).map_err(bind_err)?, ino))
}

/// Serves the one request of a connection within the limits.
async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(stream: S, _slot: Slot, state: Arc<State>) {
    let limits = state.limits;
    let st = state.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let st = st.clone();
        // The head only: no route takes a body, and the parts are Sync.
        let (parts, _body) = req.into_parts();
        async move { Ok::<_, std::convert::Infallible>(handle(&st, &parts).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(false)
        .max_buf_size(MAX_REQUEST_BUF)
        .serve_connection(TokioIo::new(stream), svc);
    match tokio::time::timeout(limits.deadline, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.is_timeout() => state.metrics.rejected("header_timeout"),
        Ok(Err(e)) => tracing::debug!(error = %e, "admin API connection error"),
        Err(_) => state.metrics.rejected("deadline"),
    }
}

/// One request: authenticate, route, call, answer; counted by route template.
async fn handle(state: &State, req: &Parts) -> Response<Full<Bytes>> {
    let (template, routed) = routes::route(&req.method, req.uri.path(), req.uri.query());
    let r = answer(state, req, routed).await;
    state.metrics.request(template, r.status().as_u16());
    r
}

async fn answer(state: &State, req: &Parts, routed: Result<Call, routes::Refused>) -> Response<Full<Bytes>> {
    if let Some(token) = &state.token
        && !authorized(&req.headers, token)
    {
        let mut r = error(401, "missing or wrong bearer token (Authorization: Bearer <admin_token_file contents>)");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer realm=\"driftwatch\""));
        return r;
    }
    let length = req.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if req.headers.contains_key(header::TRANSFER_ENCODING) || length.is_some_and(|n| n > state.limits.max_body) {
        return error(413, "request bodies are not accepted: every route takes its arguments in the path");
    }
    let call = match routed {
        Ok(c) => c,
        Err(refused) => {
            let mut r = error(refused.error.status, &refused.error.message);
            if let Some(allow) = refused.allow {
                r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(allow));
            }
            return r;
        }
    };
    if call == Call::Health {
        return json(StatusCode::OK, &serde_json::json!({"status": "ok"}));
    }
    let Ok(permit) = state.busy.clone().try_acquire_owned() else {
        let mut r = error(503, "busy: other admin requests are running; try again shortly");
        r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static(RETRY_AFTER_S));
        return r;
    };
    let backend = state.backend.clone();
    // The permit lives as long as the call, even when the client hangs up.
    let done = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        dispatch(backend.as_ref(), call)
    })
    .await;
    match done {
        Ok(Ok(v)) => json(StatusCode::OK, &v),
        Ok(Err(e)) => error(e.status, &e.message),
        Err(e) => {
            tracing::error!(error = %e, "admin API: a backend call failed");
            error(500, "the request failed inside the agent (see its log)")
        }
    }
}

fn dispatch(b: &dyn Backend, call: Call) -> Result<serde_json::Value, ApiError> {
    match call {
        Call::Health => Ok(serde_json::json!({"status": "ok"})),
        Call::Diff { id, hash_limit } => b.diff(&id, hash_limit),
        Call::Processes { id } => b.processes(&id),
        Call::QuarantineList => b.quarantine_list(),
        Call::QuarantineApply { id } => b.quarantine_apply(&id),
        Call::QuarantineRelease { id } => b.quarantine_release(&id),
        Call::Capture { id } => b.capture(&id),
    }
}

/// `Authorization: Bearer <token>`, compared in constant time.
fn authorized(headers: &hyper::HeaderMap, token: &[u8]) -> bool {
    let Some(v) = headers.get(header::AUTHORIZATION) else { return false };
    let v = v.as_bytes();
    let Some(given) = v.strip_prefix(b"Bearer ").or_else(|| v.strip_prefix(b"bearer ")) else { return false };
    constant_time_eq(given, token)
}

/// Equal, in a time that depends on the lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let diff = a.iter().zip(b).fold(a.len() ^ b.len(), |acc, (x, y)| acc | usize::from(x ^ y));
    std::hint::black_box(diff) == 0
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    r
}

fn error(status: u16, message: &str) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(status)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, &serde_json::json!({ "error": message }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        let mut h = hyper::HeaderMap::new();
        assert!(!authorized(&h, b"t"));
        h.insert(header::AUTHORIZATION, "Bearer t".parse().unwrap());
        assert!(authorized(&h, b"t"));
        h.insert(header::AUTHORIZATION, "Basic t".parse().unwrap());
        assert!(!authorized(&h, b"t"));
    }
}
