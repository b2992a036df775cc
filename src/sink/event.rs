//! Events about what the agent did on the node (an evidence bundle written,
//! a container quarantined or released): not drift findings, but the audit
//! trail of the response. Each is logged and, with OTLP on, exported as a log
//! event named `driftwatch.evidence.captured`, `driftwatch.quarantine.applied`
//! or `driftwatch.quarantine.released`.

use crate::config::Severity;
use serde_json::{Map, Value};
use std::sync::Arc;
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq)]
pub struct NodeEvent {
    /// The OTLP `EventName`.
    pub name: &'static str,
    pub severity: Severity,
    /// One readable line (the log record's body).
    pub body: String,
    /// Attributes, named like findings name them (`container.id`, ...).
    pub attributes: Map<String, Value>,
}

/// Where node events go: the log, and the OTLP sink when it runs.
#[derive(Clone, Default)]
pub struct NodeEvents {
    otlp: Option<mpsc::Sender<Arc<NodeEvent>>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl NodeEvents {
    pub fn new(otlp: Option<mpsc::Sender<Arc<NodeEvent>>>, metrics: Arc<crate::metrics::Metrics>) -> Self {
        NodeEvents { otlp, metrics: Some(metrics) }
    }

    /// Never waits: a full OTLP queue drops the event and counts it.
    pub fn emit(&self, e: NodeEvent) {
        let attrs = Value::Object(e.attributes.clone());
        match e.severity {
            Severity::Info => tracing::info!(event = e.name, attributes = %attrs, "{}", e.body),
            _ => tracing::warn!(event = e.name, attributes = %attrs, "{}", e.body),
        }
        if let Some(tx) = &self.otlp
            && tx.try_send(Arc::new(e)).is_err()
            && let Some(m) = &self.metrics
        {
            m.sinks.otlp_records("dropped", 1);
        }
    }
}
