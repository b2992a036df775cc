//! The userspace stages after decoding: enrich -> classify -> sinks, one
//! event at a time, for batches handed over by the ring-buffer reader.

use crate::{
    classify::Classifier,
    enrich,
    event::Event,
    sink::{Fanout, metrics::Metrics},
};
use std::sync::Arc;
use tokio::sync::mpsc;

pub struct Pipeline {
    pub classifier: Classifier,
    pub fanout: Fanout,
    pub metrics: Arc<Metrics>,
}

impl Pipeline {
    /// Judges one event; findings go to every sink's queue.
    pub fn handle(&self, ev: Event) {
        let Event::Exec(ev) = ev;
        let container = match enrich::container_of(&ev) {
            Ok(c) => c,
            Err(e) => {
                self.metrics.enrich_failure(e.reason());
                tracing::trace!(error = %e, "exec outside a container");
                return;
            }
        };
        match self.classifier.exec(&ev, &container) {
            Ok(f) => {
                self.metrics.finding(&f);
                self.fanout.send(f, &self.metrics);
            }
            Err(reason) => self.metrics.no_finding(reason.as_str()),
        }
    }

    /// Runs until the reader closes its end.
    pub async fn run(self, mut rx: mpsc::Receiver<Vec<Event>>) {
        while let Some(batch) = rx.recv().await {
            for ev in batch {
                self.handle(ev);
            }
        }
    }
}
