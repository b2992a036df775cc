//! Sinks: where findings go. Each sink has its own bounded queue, so a slow or
//! dead sink never stalls the pipeline or the other sinks; what a full queue
//! refuses is counted (`driftwatch_userspace_drops_total{queue}`).

pub mod alertmanager;
pub mod event;
pub mod falco;
pub mod falcosidekick;
mod http;
pub mod json;
pub mod otlp;

use crate::{
    classify::{Finding, finding::Boxed},
    metrics::Metrics,
};
use bytes::Bytes;
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};
use tokio::sync::mpsc;

/// What a sink's queue carries: findings, or findings already rendered as
/// Falco events (rendered once per finding, whatever the number of such sinks).
enum Feed {
    Findings(mpsc::Sender<Arc<Finding>>),
    Falco(mpsc::Sender<Bytes>),
    /// Written by the caller (`json::Stdout`), no queue of its own to wake.
    Stdout(Arc<json::Stdout>),
}

/// [`Feed`] without keeping the queue open.
enum WeakFeed {
    Findings(mpsc::WeakSender<Arc<Finding>>),
    Falco(mpsc::WeakSender<Bytes>),
    Stdout(std::sync::Weak<json::Stdout>),
}

/// One sink's queue: its name, its sender, and how many findings it took.
struct Queue {
    name: &'static str,
    tx: Feed,
    sent: Arc<AtomicU64>,
}

/// Hands each finding to every registered sink's queue.
#[derive(Default)]
pub struct Fanout {
    sinks: Vec<Queue>,
}

impl Fanout {
    /// Registers a sink; `queue` names its queue in metrics. Returns how many
    /// findings the queue has taken so far (for the shutdown's accounting).
    pub fn add(&mut self, queue: &'static str, tx: mpsc::Sender<Arc<Finding>>, metrics: &Metrics) -> Arc<AtomicU64> {
        self.register(queue, Feed::Findings(tx), metrics)
    }

    /// Registers a sink that takes findings as Falco events ([`falco::render`]).
    pub fn add_falco(&mut self, queue: &'static str, tx: mpsc::Sender<Bytes>, metrics: &Metrics) -> Arc<AtomicU64> {
        self.register(queue, Feed::Falco(tx), metrics)
    }

    /// Registers the stdout sink; `sent` counts what it took.
    pub fn add_stdout(&mut self, queue: &'static str, s: Arc<json::Stdout>, sent: Arc<AtomicU64>, metrics: &Metrics) {
        metrics.pipeline.declare_queue(queue);
        self.sinks.push(Queue { name: queue, tx: Feed::Stdout(s), sent });
    }

    fn register(&mut self, queue: &'static str, tx: Feed, metrics: &Metrics) -> Arc<AtomicU64> {
        metrics.pipeline.declare_queue(queue);
        let sent = Arc::new(AtomicU64::new(0));
        self.sinks.push(Queue { name: queue, tx, sent: sent.clone() });
        sent
    }

    /// A view of the queues' depths that does not keep them open.
    pub fn probe(&self) -> QueueProbe {
        QueueProbe(
            self.sinks
                .iter()
                .map(|q| match &q.tx {
                    Feed::Findings(tx) => (q.name, WeakFeed::Findings(tx.downgrade()), tx.max_capacity()),
                    Feed::Falco(tx) => (q.name, WeakFeed::Falco(tx.downgrade()), tx.max_capacity()),
                    Feed::Stdout(s) => (q.name, WeakFeed::Stdout(Arc::downgrade(s)), s.depth().1),
                })
                .collect(),
        )
    }

    pub fn send(&self, f: Boxed, metrics: &Metrics) {
        // One `Arc` for the sinks with a queue of their own; stdout (written
        // here) takes a borrow, so with stdout alone a finding costs no
        // allocation to hand over.
        if self.sinks.iter().any(|q| matches!(q.tx, Feed::Findings(_))) {
            let f = Arc::new(f.into_inner());
            self.offer(&f, Some(&f), metrics);
        } else {
            self.offer(&f, None, metrics);
        }
    }

    /// Offers `f` to every sink; `shared`: `f` for the queued sinks.
    fn offer(&self, f: &Finding, shared: Option<&Arc<Finding>>, metrics: &Metrics) {
        let mut falco: Option<Bytes> = None;
        for q in &self.sinks {
            let taken = match &q.tx {
                Feed::Findings(tx) => shared.is_some_and(|s| tx.try_send(s.clone()).is_ok()),
                Feed::Falco(tx) => tx.try_send(falco.get_or_insert_with(|| falco::render(f)).clone()).is_ok(),
                Feed::Stdout(s) => s.offer(f, &mut falco),
            };
            if taken {
                q.sent.fetch_add(1, Ordering::Relaxed);
            } else {
                metrics.pipeline.queue_drops(q.name, 1);
            }
        }
    }
}

/// Each sink queue's (name, depth, capacity), read without holding a sender
/// (the queues close when the pipeline ends, as they must at shutdown).
pub struct QueueProbe(Vec<(&'static str, WeakFeed, usize)>);

impl QueueProbe {
    pub fn depths(&self) -> Vec<(&'static str, usize, usize)> {
        self.0
            .iter()
            .map(|(name, weak, cap)| {
                let free = match weak {
                    WeakFeed::Findings(w) => w.upgrade().map(|tx| tx.capacity()),
                    WeakFeed::Falco(w) => w.upgrade().map(|tx| tx.capacity()),
                    WeakFeed::Stdout(w) => w.upgrade().map(|s| s.depth()).map(|(depth, cap)| cap - depth),
                };
                (*name, free.map_or(0, |free| cap - free), *cap)
            })
            .collect()
    }
}

/// The optional network sinks (OTLP log events, Alertmanager, falcosidekick), started from the config.
#[derive(Default)]
pub struct NetworkSinks {
    otlp: Option<otlp::OtlpSink>,
    alertmanager: Option<alertmanager::AlertmanagerSink>,
    falcosidekick: Option<falcosidekick::FalcosidekickSink>,
}

impl NetworkSinks {
    /// Starts the sinks the config enables and registers them with `fanout`.
    /// Must run inside the tokio runtime. An error is a configuration error.
    pub fn start(cfg: &crate::config::Config, metrics: &Arc<Metrics>, fanout: &mut Fanout) -> Result<Self, String> {
        let mut sinks = NetworkSinks::default();
        if let Some(s) = otlp::Settings::resolve_for(cfg).map_err(|e| e.to_string())? {
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
        if let Some((tx, sink)) = falcosidekick::FalcosidekickSink::start(&cfg.outputs.falcosidekick, metrics.clone())?
        {
            fanout.add_falco(falcosidekick::QUEUE, tx, metrics);
            tracing::info!(url = %sink.url, "findings push to falcosidekick as Falco events");
            sinks.falcosidekick = Some(sink);
        }
        Ok(sinks)
    }

    /// The OTLP sink's node-event queue, when OTLP is on.
    pub fn otlp_events(&self) -> Option<tokio::sync::mpsc::Sender<Arc<event::NodeEvent>>> {
        self.otlp.as_ref().map(|s| s.events())
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
        let fsk_limit = std::time::Duration::from_millis(cfg.outputs.falcosidekick.timeout_ms * 2 + 1000);
        let c = async {
            if let Some(s) = self.falcosidekick {
                s.shutdown(fsk_limit).await;
            }
        };
        tokio::join!(a, b, c);
    }
}
