//! Sinks: where findings go. Each sink has its own bounded queue, so a slow or
//! dead sink never stalls the pipeline or the other sinks; what a full queue
//! refuses is counted (`driftwatch_userspace_drops_total{queue}`).

pub mod alertmanager;
pub mod json;
pub mod otlp;

use crate::{classify::Finding, metrics::Metrics};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Hands each finding to every registered sink's queue.
#[derive(Default)]
pub struct Fanout {
    sinks: Vec<(&'static str, mpsc::Sender<Arc<Finding>>)>,
}

impl Fanout {
    /// Registers a sink; `queue` names its queue in metrics.
    pub fn add(&mut self, queue: &'static str, tx: mpsc::Sender<Arc<Finding>>, metrics: &Metrics) {
        metrics.pipeline.declare_queue(queue);
        self.sinks.push((queue, tx));
    }

    pub fn send(&self, f: Finding, metrics: &Metrics) {
        let f = Arc::new(f);
        for (queue, tx) in &self.sinks {
            if tx.try_send(f.clone()).is_err() {
                metrics.pipeline.queue_drops(queue, 1);
            }
        }
    }
}

/// The optional network sinks (OTLP log events, Alertmanager), started from the config.
#[derive(Default)]
pub struct NetworkSinks {
    otlp: Option<otlp::OtlpSink>,
    alertmanager: Option<alertmanager::AlertmanagerSink>,
}

impl NetworkSinks {
    /// Starts the sinks the config enables and registers them with `fanout`.
    /// Must run inside the tokio runtime. An error is a configuration error.
    pub fn start(cfg: &crate::config::Config, metrics: &Arc<Metrics>, fanout: &mut Fanout) -> Result<Self, String> {
        let mut sinks = NetworkSinks::default();
        if let Some(s) = otlp::Settings::resolve(&cfg.otlp).map_err(|e| e.to_string())? {
            let (protocol, endpoint) = (s.protocol, s.endpoint.clone());
            let tls = s
                .tls
                .as_ref()
                .map(|t| format!("roots {}, client certificate {}", t.roots_source(), t.has_client_certificate()));
            let (tx, sink) = otlp::OtlpSink::start(s, metrics.clone()).map_err(|e| e.to_string())?;
            fanout.add(otlp::QUEUE, tx, metrics);
            sinks.otlp = Some(sink);
            tracing::info!(
                ?protocol,
                endpoint = endpoint.as_deref().unwrap_or("(from OTEL_* environment)"),
                tls = tls.as_deref().unwrap_or("off"),
                "findings export as OTLP log events"
            );
        }
        let settings = alertmanager::Settings {
            cfg: cfg.alertmanager.clone(),
            default_generator: format!("http://{}:{}/metrics", crate::node::name(), cfg.metrics_addr.port()),
        };
        if let Some((senders, sink)) = alertmanager::AlertmanagerSink::start(settings, metrics.clone())? {
            // One hand-off queue per target: a target that falls behind drops its own copies only.
            for tx in senders {
                fanout.add(alertmanager::QUEUE, tx, metrics);
            }
            tracing::info!(targets = ?sink.targets, "findings push to Alertmanager");
            sinks.alertmanager = Some(sink);
        }
        Ok(sinks)
    }

    /// Final flush, bounded by each sink's timeout (call after the fan-out is dropped).
    pub async fn shutdown(self, cfg: &crate::config::Config) {
        let otlp_limit = std::time::Duration::from_millis(cfg.otlp.timeout_ms * 2 + 1000);
        let am_limit = std::time::Duration::from_millis(cfg.alertmanager.timeout_ms * 2 + 1000);
        let a = async {
            if let Some(s) = self.otlp {
                s.shutdown(otlp_limit).await;
            }
        };
        let b = async {
            if let Some(s) = self.alertmanager {
                s.shutdown(am_limit).await;
            }
        };
        tokio::join!(a, b);
    }
}
