//! HTTP endpoints: `/metrics` (OpenMetrics), `/healthz` (liveness) and
//! `/readyz` (readiness), as `crate::health` defines them.

use crate::{health::Health, metrics::Metrics};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Concurrent connections served; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 64;

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

/// Binds the listener (so bind errors surface before the sensor loads).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `cancel` fires.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<Health>, cancel: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (metrics, health) = (metrics.clone(), health.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let svc = service_fn(move |req: Request<Incoming>| {
                let r = route(req.method(), req.uri().path(), &metrics, &health);
                async move { Ok::<_, std::convert::Infallible>(r) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            // A scrape must not hang a connection slot forever.
            match tokio::time::timeout(Duration::from_secs(60), conn).await {
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "http connection error"),
                Err(_) => tracing::debug!(%peer, "http connection timed out"),
                Ok(Ok(())) => {}
            }
        });
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
}
