//! HTTP endpoints: `/metrics` (OpenMetrics), `/healthz` (the process serves),
//! `/readyz` (the sensor is attached, its ring-buffer reader runs, and the
//! container registry's task keeps its rounds).

use crate::metrics::Metrics;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Concurrent connections served; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 64;

type Check = Box<dyn Fn() -> Result<(), &'static str> + Send + Sync>;

/// Readiness: nothing is ready before [`Health::watch`], and nothing after
/// [`Health::stop`]; in between, what the watched parts say.
#[derive(Default)]
pub struct Health {
    check: std::sync::RwLock<Option<Check>>,
    stopping: AtomicBool,
}

impl Health {
    /// Ready from now on while the reader thread runs and the registry's task
    /// keeps its rounds.
    pub fn watch(&self, reader_alive: Arc<AtomicBool>, registry: Arc<crate::containers::Registry>) {
        let check: Check = Box::new(move || {
            if !reader_alive.load(Ordering::SeqCst) {
                return Err("the ring-buffer reader stopped");
            }
            if !registry.alive() {
                return Err("the container registry's task is not running");
            }
            Ok(())
        });
        *crate::locks::write(&self.check) = Some(check);
    }

    /// Shutting down: not ready any more.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Ok, or why not.
    pub fn ready(&self) -> Result<(), &'static str> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err("shutting down");
        }
        match &*crate::locks::read(&self.check) {
            Some(check) => check(),
            None => Err("eBPF programs not attached yet"),
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
        "/metrics" => reply(StatusCode::OK, OPENMETRICS, metrics.encode()),
        "/healthz" => reply(StatusCode::OK, TEXT, "ok\n"),
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
        let h = Health::default();
        assert_eq!(route(&Method::GET, "/readyz", &m, &h).status(), StatusCode::SERVICE_UNAVAILABLE);
        *crate::locks::write(&h.check) = Some(Box::new(|| Ok(())));
        assert_eq!(route(&Method::GET, "/readyz", &m, &h).status(), StatusCode::OK);
        *crate::locks::write(&h.check) = Some(Box::new(|| Err("the ring-buffer reader stopped")));
        let r = route(&Method::GET, "/readyz", &m, &h);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        h.stop();
        assert_eq!(route(&Method::GET, "/readyz", &m, &h).status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(route(&Method::GET, "/healthz", &m, &h).status(), StatusCode::OK);
        let r = route(&Method::GET, "/metrics", &m, &h);
        assert_eq!(r.headers()[header::CONTENT_TYPE], OPENMETRICS);
        assert_eq!(route(&Method::GET, "/nope", &m, &h).status(), StatusCode::NOT_FOUND);
        assert_eq!(route(&Method::POST, "/metrics", &m, &h).status(), StatusCode::METHOD_NOT_ALLOWED);
    }
}
