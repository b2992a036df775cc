//! Findings as JSON lines on stdout (one object per line).

use crate::classify::Finding;
use crate::metrics::Metrics;
use std::{io::Write, sync::Arc};
use tokio::sync::mpsc;

/// Writes findings until the channel closes. Runs on a blocking thread so a
/// slow stdout (a full pipe) never blocks a tokio worker; its bounded queue
/// absorbs bursts and counts what overflows.
pub fn run_stdout(mut rx: mpsc::Receiver<Arc<Finding>>, metrics: Arc<Metrics>) {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut buf = Vec::with_capacity(4096);
    while let Some(f) = rx.blocking_recv() {
        let mut batch = vec![f];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
            if batch.len() >= 256 {
                break;
            }
        }
        // Counted once per batch: each update is a lock and a label-set hash.
        let ok = batch.iter().filter(|f| write_line(&mut out, f, &mut buf).is_ok()).count();
        metrics.sinks.sink_results("stdout", true, ok as u64);
        metrics.sinks.sink_results("stdout", false, (batch.len() - ok) as u64);
        if out.flush().is_err() {
            metrics.sinks.sink_results("stdout", false, 1);
        }
    }
}

/// One finding as a JSON line (what the stdout sink writes per finding).
/// Serializes into `buf`, reused from finding to finding (no `String` per
/// finding), then writes it: the same bytes as [`Finding::to_json`] plus the
/// newline, and never half an object in `out`, even if serializing failed.
pub fn write_line(out: &mut impl Write, f: &Finding, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.clear();
    if serde_json::to_writer(&mut *buf, f).is_err() {
        buf.clear();
    }
    buf.push(b'\n');
    out.write_all(buf)
}
