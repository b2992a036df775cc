//! Findings as JSON lines on stdout (one object per line).

use crate::classify::Finding;
use crate::metrics::Metrics;
use std::{
    io::Write,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
};
use tokio::sync::mpsc;

/// The stdout sink's thread, and how many findings it has written (or
/// failed to): what its queue took beyond that is still unwritten (a blocked
/// pipe holds them), which the shutdown counts as dropped.
pub struct StdoutSink {
    thread: JoinHandle<()>,
    done: Arc<AtomicU64>,
}

impl StdoutSink {
    /// Writes findings until the channel closes, on its own thread so a slow
    /// stdout (a full pipe) never blocks a tokio worker; its bounded queue
    /// absorbs bursts and counts what overflows.
    pub fn start(rx: mpsc::Receiver<Arc<Finding>>, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let done = Arc::new(AtomicU64::new(0));
        let d = done.clone();
        let thread = std::thread::Builder::new().name("dw-stdout".into()).spawn(move || run(rx, metrics, d))?;
        Ok(Self { thread, done })
    }

    /// Findings written or failed so far, as a counter that outlives the sink.
    pub fn done(&self) -> Arc<AtomicU64> {
        self.done.clone()
    }

    /// Waits for the thread (after the queue's sender is gone).
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

fn run(mut rx: mpsc::Receiver<Arc<Finding>>, metrics: Arc<Metrics>, done: Arc<AtomicU64>) {
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
        let flushed = out.flush().is_ok();
        done.fetch_add(batch.len() as u64, Ordering::SeqCst);
        metrics.sinks.sink_results("stdout", true, ok as u64);
        metrics.sinks.sink_results("stdout", false, (batch.len() - ok) as u64);
        if !flushed {
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
