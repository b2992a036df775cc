//! HTTP endpoints: `/metrics` (OpenMetrics), `/healthz` (liveness) and
//! `/readyz` (readiness), as `crate::health` defines them.
//!
//! Two listeners, each with its own connection budget: `metrics_addr` serves
//! all three paths, the optional `health_addr` only `/healthz` and `/readyz`
//! (the kubelet's probes), so a flood of the scrape port cannot starve the
//! probes. Every listener accepts without pause and decides at once: a peer
//! (IP address) holding its share, or a full listener, gets its connection
//! closed; an admitted connection must send its request head within a short
//! timeout and is served once (no keep-alive) within a deadline.

use crate::admission::{Admission, Refusal, Slot};
use crate::{health::Health, metrics::Metrics};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Pending connections the kernel queues for `accept` (capped by `net.core.somaxconn`).
const BACKLOG: u32 = 1024;

/// Largest request head a connection may buffer: probes and scrapes send well
/// under 1 KiB, and 256 slow connections must not hold hyper's 400 KB each.
const MAX_REQUEST_BUF: usize = 16 * 1024;

/// A listener's connection budget and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; beyond it, new ones are closed at accept.
    pub max_connections: usize,
    /// Connections one peer (IP address) may hold at once; beyond it, its new ones are closed at accept.
    pub max_per_peer: usize,
    /// A connection that has not sent a complete request head by then is closed.
    pub header_timeout: Duration,
    /// No connection lives longer (a client that reads the answer too slowly).
    pub deadline: Duration,
}

/// Which listener: what it serves and its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `metrics_addr`: `/metrics`, `/healthz`, `/readyz`.
    Metrics,
    /// `health_addr`: `/healthz` and `/readyz` only, for the kubelet's probes.
    Health,
}

impl Listener {
    /// The `listener` label of `driftwatch_http_connections_rejected_total`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Metrics => "metrics",
            Self::Health => "health",
        }
    }

    /// A scraper sends its request at once and reads a few tens of KB; a probe
    /// reads a line. 8 (4) connections per peer leave 32 (64) peers' worth of
    /// room, and at most 512 descriptors for both listeners.
    pub const fn limits(self) -> Limits {
        match self {
            Self::Metrics => Limits {
                max_connections: 256,
                max_per_peer: 8,
                header_timeout: Duration::from_secs(5),
                deadline: Duration::from_secs(30),
            },
            Self::Health => Limits {
                max_connections: 256,
                max_per_peer: 4,
                header_timeout: Duration::from_secs(2),
                deadline: Duration::from_secs(5),
            },
        }
    }
}

fn reply(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(ctype));
    r
}

/// Routes one request. Pure, so tests can call it without sockets.
pub fn route(method: &Method, path: &str, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != Method::GET && method != Method::HEAD {
        let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "method not allowed: use GET\n");
        r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/metrics" => {
            health.export(metrics);
            reply(StatusCode::OK, OPENMETRICS, metrics.encode())
        }
        "/healthz" => match health.live() {
            Ok(()) => reply(StatusCode::OK, TEXT, "ok\n"),
            Err(why) => reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("not live: {why}\n")),
        },
        "/readyz" => match health.ready() {
            Ok(()) => reply(StatusCode::OK, TEXT, "ready\n"),
            Err(why) => reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("not ready: {why}\n")),
        },
        _ => reply(StatusCode::NOT_FOUND, TEXT, "not found: try /metrics, /healthz or /readyz\n"),
    }
}

/// [`route`] as `listener` serves it: the health listener answers only its two paths.
pub fn route_on(
    listener: Listener,
    method: &Method,
    path: &str,
    metrics: &Metrics,
    health: &Health,
) -> Response<Full<Bytes>> {
    if listener == Listener::Health && !matches!(path, "/healthz" | "/readyz") {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: this is the health listener, try /healthz or /readyz (/metrics is on the metrics address)\n",
        );
    }
    route(method, path, metrics, health)
}

/// Binds a listener (so bind errors surface before the sensor loads).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Serves the metrics listener until `cancel` fires.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<Health>, cancel: CancellationToken) {
    serve_as(Listener::Metrics, listener, metrics, health, cancel).await
}

/// Serves `kind` on `listener` until `cancel` fires.
pub async fn serve_as(
    kind: Listener,
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    cancel: CancellationToken,
) {
    let name = kind.name();
    metrics.http.declare(name);
    let limits = kind.limits();
    let admission = Admission::new(limits.max_connections, limits.max_per_peer);
    // Refusals are counted; logged at most once a minute (a flood must not flood the log).
    let mut last_warned: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // EMFILE and friends: let connections end before trying again.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = match admission.admit(Some(peer.ip().to_canonical())) {
            Ok(slot) => slot,
            Err(refusal) => {
                let reason = match refusal {
                    Refusal::PeerLimit => "peer_limit",
                    Refusal::Full => "global_limit",
                };
                metrics.http.rejected(name, reason);
                if last_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    last_warned = Some(Instant::now());
                    tracing::warn!(listener = name, %peer, reason, "refusing HTTP connections (counted in driftwatch_http_connections_rejected_total)");
                }
                // A reset: no TIME_WAIT left behind per refused connection.
                let _ = stream.set_zero_linger();
                continue;
            }
        };
        tokio::spawn(connection(kind, stream, peer, slot, metrics.clone(), health.clone()));
    }
}

/// Serves one request on an admitted connection, within the listener's timeouts.
async fn connection(
    kind: Listener,
    stream: TcpStream,
    peer: SocketAddr,
    _slot: Slot,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) {
    let (name, limits) = (kind.name(), kind.limits());
    let m = metrics.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let r = route_on(kind, req.method(), req.uri().path(), &m, &health);
        async move { Ok::<_, std::convert::Infallible>(r) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(false)
        .max_buf_size(MAX_REQUEST_BUF)
        .serve_connection(TokioIo::new(stream), svc);
    match tokio::time::timeout(limits.deadline, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.is_timeout() => {
            metrics.http.rejected(name, "header_timeout");
            tracing::debug!(listener = name, %peer, "http connection sent no complete request in time");
        }
        Ok(Err(e)) => tracing::debug!(listener = name, %peer, error = %e, "http connection error"),
        Err(_) => {
            metrics.http.rejected(name, "deadline");
            tracing::debug!(listener = name, %peer, "http connection outlived its deadline");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let m = Metrics::new();
        let limits = crate::health::Limits { stdout_stall: Duration::from_secs(30), runtime_down: Duration::ZERO };
        let h = Health::new(limits);
        // Before the sensor is attached: live, not ready (health::evaluate decides the rest).
        assert_eq!(route(&Method::GET, "/readyz", &m, &h).status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(route(&Method::GET, "/healthz", &m, &h).status(), StatusCode::OK);
        let r = route(&Method::GET, "/metrics", &m, &h);
        assert_eq!(r.headers()[header::CONTENT_TYPE], OPENMETRICS);
        assert!(m.encode().contains("driftwatch_health_check{check=\"sensor\"} 0"), "{}", m.encode());
        assert_eq!(route(&Method::GET, "/nope", &m, &h).status(), StatusCode::NOT_FOUND);
        assert_eq!(route(&Method::POST, "/metrics", &m, &h).status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn health_listener_serves_only_the_probes() {
        let m = Metrics::new();
        let h = Health::default();
        let on = |path| route_on(Listener::Health, &Method::GET, path, &m, &h).status();
        assert_eq!(on("/healthz"), StatusCode::OK);
        assert_eq!(on("/readyz"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(on("/metrics"), StatusCode::NOT_FOUND);
        assert_eq!(on("/"), StatusCode::NOT_FOUND);
        assert_eq!(route_on(Listener::Metrics, &Method::GET, "/metrics", &m, &h).status(), StatusCode::OK);
        assert_eq!(
            route_on(Listener::Health, &Method::POST, "/healthz", &m, &h).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn limits_fit_the_probes() {
        for l in [Listener::Metrics, Listener::Health] {
            let lim = l.limits();
            assert!(lim.header_timeout <= Duration::from_secs(5) && lim.header_timeout < lim.deadline, "{l:?}");
            assert!(lim.max_per_peer >= 3, "{l:?}: the kubelet's startup, liveness and readiness probes at once");
            assert!(lim.max_connections >= 32 * lim.max_per_peer, "{l:?}: room for many peers");
        }
        let total: usize = [Listener::Metrics, Listener::Health].iter().map(|l| l.limits().max_connections).sum();
        assert!(total <= 512, "within a 1024 descriptor soft limit, with room for the rest of the agent");
    }
}
