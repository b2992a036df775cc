//! The admin API's client (the CLI's `quarantine` verbs): one HTTP/1.1
//! request over the Unix socket or TCP, with a timeout and errors that say
//! what to check.

use crate::config::AdminAddr;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, header};
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// A whole call (connect, request, answer) takes at most this long: a diff of
/// a large container hashes its files.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(300);
/// An agent that runs accepts at once.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read.
const MAX_ANSWER: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no admin socket at {path}: is the agent running (driftwatch run) with admin_addr unix://{path}? (--admin-addr)"
    )]
    NoSocket { path: String },
    #[error(
        "nothing answers at {addr} (connection refused): is the agent running, with admin_addr {addr}? (--admin-addr)"
    )]
    Refused { addr: String },
    #[error("permission denied on {path}: the admin socket is root's (mode 0600); run as root on the node")]
    Denied { path: String },
    #[error("cannot connect to the admin API at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("the admin API at {addr} did not answer within {secs} s")]
    Timeout { addr: String, secs: u64 },
    #[error("talking to the admin API at {addr}: {reason}")]
    Http { addr: String, reason: String },
    #[error("the admin API at {addr} answered {status} with something that is not JSON: {start:?}")]
    NotJson { addr: String, status: u16, start: String },
}

impl ClientError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoSocket { .. } => "no_socket",
            Self::Refused { .. } => "refused",
            Self::Denied { .. } => "denied",
            Self::Connect { .. } => "connect",
            Self::Timeout { .. } => "timeout",
            Self::Http { .. } => "http",
            Self::NotJson { .. } => "not_json",
        }
    }
}

/// Sends `method path` (path with its query) and returns the status and the
/// JSON answer; an error status is an `Ok` (its body says `{"error": ...}`).
pub async fn call(
    addr: &AdminAddr,
    token: Option<&str>,
    method: Method,
    path: &str,
) -> Result<(u16, serde_json::Value), ClientError> {
    let shown = addr.to_string();
    match tokio::time::timeout(CALL_TIMEOUT, call_inner(addr, token, method, path)).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Timeout { addr: shown, secs: CALL_TIMEOUT.as_secs() }),
    }
}

async fn call_inner(
    addr: &AdminAddr,
    token: Option<&str>,
    method: Method,
    path: &str,
) -> Result<(u16, serde_json::Value), ClientError> {
    let shown = addr.to_string();
    let connect_err = |e: std::io::Error| match (e.kind(), addr) {
        (std::io::ErrorKind::NotFound, AdminAddr::Unix(p)) => ClientError::NoSocket { path: p.display().to_string() },
        (std::io::ErrorKind::PermissionDenied, AdminAddr::Unix(p)) => {
            ClientError::Denied { path: p.display().to_string() }
        }
        (std::io::ErrorKind::ConnectionRefused, _) => ClientError::Refused { addr: shown.clone() },
        _ => ClientError::Connect { addr: shown.clone(), reason: e.to_string() },
    };
    let timeout = || ClientError::Timeout { addr: shown.clone(), secs: CONNECT_TIMEOUT.as_secs() };
    let host = match addr {
        AdminAddr::Unix(_) => "localhost".to_string(),
        AdminAddr::Tcp(a) => a.to_string(),
    };
    let mut b = Request::builder().method(method).uri(path).header(header::HOST, host);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {}", t.trim()));
    }
    let request = b
        .body(Full::new(Bytes::new()))
        .map_err(|e| ClientError::Http { addr: shown.clone(), reason: format!("bad request {path:?}: {e}") })?;
    match addr {
        AdminAddr::Unix(p) => {
            let s = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::UnixStream::connect(p))
                .await
                .map_err(|_| timeout())?
                .map_err(connect_err)?;
            exchange(s, request, &shown).await
        }
        AdminAddr::Tcp(a) => {
            let s = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(a))
                .await
                .map_err(|_| timeout())?
                .map_err(connect_err)?;
            exchange(s, request, &shown).await
        }
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    request: Request<Full<Bytes>>,
    addr: &str,
) -> Result<(u16, serde_json::Value), ClientError> {
    let http = |reason: String| ClientError::Http { addr: addr.to_string(), reason };
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| http(e.to_string()))?;
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "admin client connection");
        }
    });
    let resp = sender.send_request(request).await.map_err(|e| http(e.to_string()))?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| http(format!("reading the answer: {e}")))?
        .to_bytes();
    driver.abort();
    match serde_json::from_slice(&body) {
        Ok(v) => Ok((status, v)),
        Err(_) => Err(ClientError::NotJson {
            addr: addr.to_string(),
            status,
            start: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        }),
    }
}
