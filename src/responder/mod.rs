//! `driftwatch respond`: the receiver of Alertmanager's webhook that carries
//! out the playbook steps on pods (isolate, evict, label), with dry-run, a
//! dedup window, rate limits and an audit trail.
//!
//! The data: [`webhook`] (payload -> alerts) -> [`decide`] (pure: alert ->
//! verdict, holding dedup and rate limits) -> [`kube`] (check the pod, act,
//! leave an Event; [`node_agent`] for evidence bundles) -> [`audit`] (one JSON line and a counter per decision);
//! [`server`] is the HTTP side, [`config`] the YAML.

pub mod audit;
pub mod config;
pub mod decide;
pub mod kube;
pub mod node_agent;
pub mod server;
pub mod tls;
pub mod webhook;

use crate::{
    metrics::{Metrics, respond::RespondMetrics},
    sink::{
        event::NodeEvents,
        otlp::{OtlpSink, Settings},
    },
};
use config::RespondConfig;
use std::{path::PathBuf, sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// Serves the webhook on `listen` (host:port) until SIGINT or SIGTERM.
pub async fn run(listen: &str, cfg: RespondConfig) -> Result<(), String> {
    // What `Client::try_default` does (in-cluster, else KUBECONFIG), minus
    // kube's own retry of 429s (up to 15 times, minutes apart): the eviction
    // retries on its own short schedule and then reports (kube.rs).
    let mut kc = ::kube::Config::infer().await.map_err(|e| format!("kubernetes config: {e}"))?;
    kc.default_retry = false;
    let client = ::kube::Client::try_from(kc).map_err(|e| format!("kubernetes client: {e}"))?;
    let tls = cfg.webhook.tls.as_ref().map(tls::server_config).transpose()?;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("--listen {listen}: {e}"))?;
    let local = listener.local_addr().map_err(|e| format!("--listen {listen}: {e}"))?;
    let own_ns = std::env::var("POD_NAMESPACE").ok();
    let mtls = cfg.webhook.tls.as_ref().is_some_and(|t| !t.client_ca_file.is_empty());
    tracing::info!(listen = %local, tls = tls.is_some(), mtls, dry_run = cfg.dry_run, steps = ?cfg.steps, "responder listening");
    if cfg.webhook.token_file.is_empty() && !mtls {
        tracing::warn!("responder: webhook.token_file is empty: the webhook accepts anyone (dry-run only)");
    }
    let (registry, metrics) = RespondMetrics::new();
    let otlp = start_otlp(&cfg.otlp)?;
    let events = otlp.as_ref().map(|o| (NodeEvents::new(Some(o.sink.events()), o.metrics.clone()), o.metrics.clone()));
    let r = Arc::new(server::Responder {
        events,
        node_agents: cfg.node_agent.as_ref().map(|n| node_agent::NodeAgents::new(client.clone(), n, own_ns.as_deref())),
        kube: kube::Kube::new(client, cfg.isolate.allow_dns, cfg.evict.allow_unowned),
        token_file: PathBuf::from(&cfg.webhook.token_file),
        require_client_cert: mtls,
        max_body_bytes: cfg.webhook.max_body_bytes,
        decider: tokio::sync::Mutex::new(decide::Decider::new(cfg, own_ns.as_deref())),
        metrics,
        registry,
    });
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.cancel();
    });
    server::serve(listener, r, tls, cancel).await;
    if let Some(o) = otlp {
        // The events still queued go out before the process ends.
        drop(o.findings);
        o.sink.shutdown(OTLP_FLUSH).await;
    }
    tracing::info!("responder stopped");
    Ok(())
}

/// The final OTLP flush takes at most this long.
const OTLP_FLUSH: Duration = Duration::from_secs(5);

/// The OTLP sink of the audit's log events, when `otlp:` (or the environment) turns it on.
struct Otlp {
    sink: OtlpSink,
    /// Never fed (the responder has no findings); closing it ends the sink.
    findings: tokio::sync::mpsc::Sender<Arc<crate::classify::finding::Finding>>,
    /// The sink's counters (`driftwatch_otlp_*`), served on the responder's /metrics.
    metrics: Arc<Metrics>,
}

fn start_otlp(c: &crate::config::Otlp) -> Result<Option<Otlp>, String> {
    let Some(settings) = Settings::resolve(c).map_err(|e| e.to_string())? else { return Ok(None) };
    let metrics = Arc::new(Metrics::new());
    let endpoint = settings.endpoint.clone().unwrap_or_else(|| "(from OTEL_EXPORTER_OTLP_*)".into());
    let (findings, sink) = OtlpSink::start(settings, metrics.clone()).map_err(|e| e.to_string())?;
    tracing::info!(%endpoint, "responder: OTLP log events on (driftwatch.response.<action>)");
    Ok(Some(Otlp { sink, findings, metrics }))
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
