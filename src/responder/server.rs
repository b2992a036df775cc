//! The responder's HTTP server: `POST /v1/alerts` (Alertmanager's webhook),
//! `GET /metrics`, `GET /healthz`. Every bad request is answered 4xx and
//! counted by reason; nothing a sender does can stop the server.

use super::{
    audit::{Outcome, Record},
    decide::{Action, Decider, Verdict},
    kube::{Kube, NotDone, event_reason, evidence_patch},
    node_agent::NodeAgents,
    webhook::{self, Alert, Rejection, Target},
};
use crate::{
    metrics::{Metrics, respond::RespondMetrics},
    sink::event::NodeEvents,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use k8s_openapi::api::core::v1::Pod;
use prometheus_client::registry::Registry;
use std::{path::PathBuf, sync::Arc, time::Duration};
use tokio::{
    net::TcpListener,
    sync::{Mutex, Semaphore},
};
use tokio_util::sync::CancellationToken;

/// Connections served at once (Alertmanager replicas keep a few open).
const MAX_CONNECTIONS: usize = 64;
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Responder {
    pub decider: Mutex<Decider>,
    pub kube: Kube,
    /// The node agents' admin API (config `node_agent`), for evidence capture.
    pub node_agents: Option<NodeAgents>,
    /// OTLP log events of the decisions (config `otlp:`), and the sink's own metrics.
    pub events: Option<(NodeEvents, Arc<Metrics>)>,
    pub metrics: RespondMetrics,
    pub registry: Registry,
    /// Empty: no token (only allowed while everything is dry-run).
    pub token_file: PathBuf,
    /// `webhook.tls.client_ca_file` is set: `/v1/alerts` needs a verified client certificate.
    pub require_client_cert: bool,
    pub max_body_bytes: usize,
}

type Resp = Response<Full<Bytes>>;

fn reply(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    r
}

fn json(status: u16, v: &serde_json::Value) -> Resp {
    reply(status, "application/json", format!("{v}\n"))
}

/// Equal, in a time that depends on the lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let diff = a.iter().zip(b).fold(a.len() ^ b.len(), |acc, (x, y)| acc | usize::from(x ^ y));
    std::hint::black_box(diff) == 0
}

/// Serves until `cancel`; over TLS with `tls`.
pub async fn serve(
    listener: TcpListener,
    r: Arc<Responder>,
    tls: Option<Arc<rustls::ServerConfig>>,
    cancel: CancellationToken,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = tokio::select! {
            () = cancel.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "responder: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
        let r = r.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => serve_connection(r, stream, false).await,
                Some(a) => match tokio::time::timeout(HEADER_TIMEOUT, a.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        // The verifier rejected any certificate not of the CA: one present is verified.
                        let verified = tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                        serve_connection(r, tls, verified).await
                    }
                    Ok(Err(e)) => {
                        r.metrics.rejected(Rejection::Tls.reason());
                        tracing::warn!(error = %e, "responder: TLS handshake failed");
                    }
                    Err(_) => r.metrics.rejected(Rejection::Tls.reason()),
                },
            }
            drop(slot);
        });
    }
}

/// `client_cert`: the connection presented a client certificate of the configured CA.
async fn serve_connection<S>(r: Arc<Responder>, stream: S, client_cert: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let r = r.clone();
        async move { Ok::<_, std::convert::Infallible>(route(&r, req, client_cert).await) }
    });
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

async fn route(r: &Responder, req: Request<Incoming>, client_cert: bool) -> Resp {
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => reply(200, "text/plain", "ok\n"),
        (&Method::GET, "/metrics") => {
            let mut text = String::new();
            match prometheus_client::encoding::text::encode(&mut text, &r.registry) {
                Ok(()) => {
                    if let Some((_, m)) = &r.events {
                        text = with_otlp_series(&text, &m.encode());
                    }
                    reply(200, "application/openmetrics-text; version=1.0.0; charset=utf-8", text)
                }
                Err(_) => reply(500, "text/plain", "encoding failed\n"),
            }
        }
        (&Method::POST, "/v1/alerts") => match alerts(r, req, client_cert).await {
            Ok(v) => json(200, &v),
            Err((why, msg)) => rejected(r, why, &msg),
        },
        (_, "/v1/alerts" | "/metrics" | "/healthz") => rejected(r, Rejection::Method, "method not allowed"),
        _ => rejected(r, Rejection::NotFound, "not found"),
    };
    r.metrics.request(resp.status().as_u16());
    resp
}

/// The responder's exposition plus the OTLP sink's own series
/// (`driftwatch_otlp_*`), which the sink counts in an agent-style registry.
fn with_otlp_series(own: &str, sink: &str) -> String {
    let otlp = |l: &&str| {
        l.strip_prefix("# HELP ")
            .or_else(|| l.strip_prefix("# TYPE "))
            .or_else(|| l.strip_prefix("# UNIT "))
            .unwrap_or(l)
            .starts_with("driftwatch_otlp_")
    };
    let body = own.strip_suffix("# EOF\n").unwrap_or(own);
    let mut out = String::with_capacity(own.len() + 1024);
    out.push_str(body);
    for l in sink.lines().filter(otlp) {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str("# EOF\n");
    out
}

fn rejected(r: &Responder, why: Rejection, msg: &str) -> Resp {
    r.metrics.rejected(why.reason());
    if !matches!(why, Rejection::NotFound | Rejection::Method) {
        tracing::warn!(reason = why.reason(), error = msg, "responder: webhook request rejected");
    }
    json(why.status(), &serde_json::json!({"error": msg, "reason": why.reason()}))
}

fn authorized(headers: &hyper::HeaderMap, token: &[u8]) -> bool {
    let Some(v) = headers.get(header::AUTHORIZATION) else { return false };
    let v = v.as_bytes();
    let Some(given) = v.strip_prefix(b"Bearer ").or_else(|| v.strip_prefix(b"bearer ")) else { return false };
    constant_time_eq(given, token)
}

async fn alerts(
    r: &Responder,
    req: Request<Incoming>,
    client_cert: bool,
) -> Result<serde_json::Value, (Rejection, String)> {
    // Each configured credential is required: the client certificate, the bearer token, or both.
    // (Probes and scrapes reach /healthz and /metrics without one.)
    if r.require_client_cert && !client_cert {
        return Err((Rejection::Unauthorized, "a client certificate is required (webhook.tls.client_ca_file)".into()));
    }
    if !r.token_file.as_os_str().is_empty() {
        // Read at every request: a rotated Secret is picked up without a restart.
        // A small file on a tmpfs (a mounted Secret): a blocking read is fine here.
        let token = std::fs::read(&r.token_file)
            .map_err(|e| (Rejection::TokenUnreadable, format!("token file {}: {e}", r.token_file.display())))?;
        let token = token.trim_ascii();
        if token.is_empty() || !authorized(req.headers(), token) {
            return Err((Rejection::Unauthorized, "missing or wrong bearer token".into()));
        }
    }
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > r.max_body_bytes as u64) {
        return Err((Rejection::TooLarge, format!("body over {} bytes", r.max_body_bytes)));
    }
    let body = match Limited::new(req.into_body(), r.max_body_bytes).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err((Rejection::TooLarge, format!("body over {} bytes", r.max_body_bytes)));
        }
        Err(e) => return Err((Rejection::Malformed, format!("body: {e}"))),
    };
    let payload = webhook::parse(&body)?;
    let mut out = Vec::with_capacity(payload.alerts.len());
    for alert in &payload.alerts {
        let (rec, acted) = decide_and_act(r, alert).await;
        let isolated = acted.filter(|_| rec.action == Action::Isolate.as_str());
        // The isolation is audited before its capture starts: a slow or failing agent delays
        // no audit line and blocks nothing.
        record_decision(r, &mut out, &rec);
        if let Some((t, pod)) = isolated
            && r.node_agents.is_some()
        {
            record_decision(r, &mut out, &capture_after_isolate(r, alert, &t, &pod).await);
        }
        // The step this one leads to (`escalate`), as an alert of that step.
        if matches!(rec.result, Outcome::Acted | Outcome::DryRun)
            && let Some(next) = escalation(r, alert).await
        {
            let (rec, _) = decide_and_act(r, &next).await;
            record_decision(r, &mut out, &rec);
        }
    }
    Ok(serde_json::json!({"decisions": out}))
}

/// One decision: its entry in the answer, its audit line and count, its OTLP event.
fn record_decision(r: &Responder, out: &mut Vec<serde_json::Value>, rec: &Record) {
    out.push(serde_json::json!({"fingerprint": rec.fingerprint, "action": rec.action,
                                "result": rec.result, "reason": rec.reason}));
    rec.emit(&r.metrics);
    if let (Some((events, _)), Some(e)) = (&r.events, rec.node_event()) {
        events.emit(e);
    }
}

/// Isolate's evidence capture, audited as its own decision (action `investigate`).
async fn capture_after_isolate(r: &Responder, alert: &Alert, t: &Target, pod: &Pod) -> Record {
    let a = Action::Investigate;
    match capture(r, t, pod).await {
        Ok(what) => {
            r.kube.event(t, pod, event_reason(a, "acted"), false, &what).await;
            Record::new(alert, Some(t), a.as_str(), Outcome::Acted, what)
        }
        Err(why) => {
            let msg = format!("evidence capture after isolate failed: {why}");
            r.kube.event(t, pod, event_reason(a, "failed"), true, &msg).await;
            Record::new(alert, Some(t), a.as_str(), Outcome::Failed, msg)
        }
    }
}

/// Asks the agent on the pod's node for an evidence bundle and links it from
/// the pod (`driftwatch.io/evidence=<node>:<path>`).
async fn capture(r: &Responder, t: &Target, pod: &Pod) -> Result<String, String> {
    let Some(agents) = &r.node_agents else { return Err("no node_agent configured".into()) };
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
        .ok_or("the pod has no spec.nodeName (not scheduled)")?;
    let ev = agents.capture(node, &t.container_id).await?;
    let location = ev.location();
    match r.kube.patch(t, evidence_patch(&location), "annotate pod with the evidence").await {
        Ok(()) => Ok(format!("evidence bundle {location}")),
        Err(NotDone::Failed(why) | NotDone::Refused(why)) => Err(format!("bundle {location} written, but {why}")),
    }
}

/// `alert` relabelled with the step its own leads to, if `escalate` names one.
async fn escalation(r: &Responder, alert: &Alert) -> Option<Alert> {
    let step = alert.labels.get("playbook_step")?;
    let to = *r.decider.lock().await.config().escalate.get(step)?;
    let mut next = alert.clone();
    next.labels.insert("playbook_step".into(), to.as_str().into());
    Some(next)
}

/// Decides and carries out one alert: its record, and the target and pod when it acted.
async fn decide_and_act(r: &Responder, alert: &Alert) -> (Record, Option<(Target, Pod)>) {
    let verdict = r.decider.lock().await.decide(alert, std::time::Instant::now());
    let (t, action, dry_run) = match verdict {
        Verdict::Acknowledge { target, action, reason } => {
            let a = action.map_or("none", |a| a.as_str());
            return (Record::new(alert, target.as_ref(), a, Outcome::Acknowledged, reason), None);
        }
        Verdict::Refuse { target, action, reason } => {
            let a = action.map_or("none", |a| a.as_str());
            return (Record::new(alert, target.as_ref(), a, Outcome::Refused, reason), None);
        }
        Verdict::Act { target, action, dry_run } => (target, action, dry_run),
    };
    let a = action.as_str();
    // Dry-run reads the pod too (no write), so it reports the refusals acting would meet.
    let pod = match r.kube.check(&t, action).await {
        Ok(p) => p,
        Err((pod, NotDone::Refused(why))) => {
            if let (Some(p), false) = (pod, dry_run) {
                r.kube.event(&t, &p, event_reason(action, "refused"), true, &format!("{a} refused: {why}")).await;
            }
            return (Record::new(alert, Some(&t), a, Outcome::Refused, why), None);
        }
        Err((_, NotDone::Failed(why))) => return (Record::new(alert, Some(&t), a, Outcome::Failed, why), None),
    };
    if dry_run {
        return (Record::new(alert, Some(&t), a, Outcome::DryRun, format!("dry run: would {a} the pod")), None);
    }
    let done = match r.kube.act(&t, action, &pod).await {
        Ok(what) if action == Action::Investigate => match &r.node_agents {
            None => Ok(format!("{what}; no node_agent configured: no evidence captured")),
            Some(_) => capture(r, &t, &pod).await.map(|ev| format!("{what}; {ev}")).map_err(NotDone::Failed),
        },
        other => other,
    };
    match done {
        Ok(what) => {
            let msg = format!("{what} (rule {}, container {})", t.rule, t.container_id);
            r.kube.event(&t, &pod, event_reason(action, "acted"), false, &msg).await;
            (Record::new(alert, Some(&t), a, Outcome::Acted, what), Some((t, pod)))
        }
        Err(NotDone::Refused(why)) => {
            r.kube.event(&t, &pod, event_reason(action, "refused"), true, &format!("{a} refused: {why}")).await;
            (Record::new(alert, Some(&t), a, Outcome::Refused, why), None)
        }
        Err(NotDone::Failed(why)) => {
            r.kube.event(&t, &pod, event_reason(action, "failed"), true, &format!("{a} failed: {why}")).await;
            (Record::new(alert, Some(&t), a, Outcome::Failed, why), None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_series_join_the_exposition_before_eof() {
        let own = "# TYPE driftwatch_response_actions counter\ndriftwatch_response_actions_total 1\n# EOF\n";
        let sink = "# HELP driftwatch_otlp_records Records.\n# TYPE driftwatch_otlp_records counter\n\
                    driftwatch_otlp_records_total{result=\"exported\"} 2\n# TYPE driftwatch_findings counter\n\
                    driftwatch_findings_total 0\n# EOF\n";
        assert_eq!(
            with_otlp_series(own, sink),
            "# TYPE driftwatch_response_actions counter\ndriftwatch_response_actions_total 1\n\
             # HELP driftwatch_otlp_records Records.\n# TYPE driftwatch_otlp_records counter\n\
             driftwatch_otlp_records_total{result=\"exported\"} 2\n# EOF\n"
        );
    }

    #[test]
    fn bearer_tokens_compare_exactly() {
        let mut h = hyper::HeaderMap::new();
        assert!(!authorized(&h, b"s3cret"));
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authorized(&h, b"s3cret"));
        assert!(!authorized(&h, b"s3cre") && !authorized(&h, b"s3cret2") && !authorized(&h, b"S3cret"));
        h.insert(header::AUTHORIZATION, "Basic s3cret".parse().unwrap());
        assert!(!authorized(&h, b"s3cret"));
    }
}
