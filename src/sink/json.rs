//! Findings as JSON lines on stdout (one object per line).

use super::metrics::Metrics;
use crate::classify::Finding;
use std::{io::Write, sync::Arc};
use tokio::sync::mpsc;

/// Writes findings until the channel closes. Runs on a blocking thread so a
/// slow stdout (a full pipe) never blocks a tokio worker; its bounded queue
/// absorbs bursts and counts what overflows.
pub fn run_stdout(mut rx: mpsc::Receiver<Arc<Finding>>, metrics: Arc<Metrics>) {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    while let Some(f) = rx.blocking_recv() {
        let mut batch = vec![f];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
            if batch.len() >= 256 {
                break;
            }
        }
        for f in &batch {
            let ok = out.write_all(f.to_json().as_bytes()).and_then(|_| out.write_all(b"\n")).is_ok();
            metrics.sink_result("stdout", ok);
        }
        if out.flush().is_err() {
            metrics.sink_result("stdout", false);
        }
    }
}
