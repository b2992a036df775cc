//! Sinks: where findings go. Each sink has its own bounded queue, so a slow or
//! dead sink never stalls the pipeline or the other sinks; what a full queue
//! refuses is counted (`driftwatch_userspace_drops_total{queue}`).

pub mod json;
pub mod metrics;

use crate::classify::Finding;
use metrics::Metrics;
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
        metrics.declare_queue(queue);
        self.sinks.push((queue, tx));
    }

    pub fn send(&self, f: Finding, metrics: &Metrics) {
        let f = Arc::new(f);
        for (queue, tx) in &self.sinks {
            if tx.try_send(f.clone()).is_err() {
                metrics.queue_drop(queue);
            }
        }
    }
}
