//! Findings as JSON lines on stdout (one object per line): the finding's own
//! JSON, or Falco's event (`outputs.stdout.format`).

use crate::classify::Finding;
use crate::config::OutputFormat;
use crate::metrics::Metrics;
use bytes::Bytes;
use std::{
    io::Write,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};
use tokio::sync::mpsc;

/// How far the stdout sink has got: what its queue took (`sent`, counted by
/// the fan-out), what it wrote or failed to (`done`), and when it last moved.
/// The difference is unwritten: a blocked pipe holds it.
#[derive(Clone, Debug)]
pub struct Progress {
    sent: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    last_ms: Arc<AtomicU64>,
    epoch: Instant,
}

impl Progress {
    fn new(sent: Arc<AtomicU64>) -> Self {
        Self { sent, done: Arc::new(AtomicU64::new(0)), last_ms: Arc::new(AtomicU64::new(0)), epoch: Instant::now() }
    }

    /// Findings taken and not written yet.
    pub fn pending(&self) -> u64 {
        self.sent.load(Ordering::SeqCst).saturating_sub(self.done.load(Ordering::SeqCst))
    }

    /// Time since the sink last finished writing (or started).
    pub fn since_progress(&self) -> Duration {
        self.epoch.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::SeqCst)))
    }

    fn advanced(&self, n: u64) {
        self.done.fetch_add(n, Ordering::SeqCst);
        self.last_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::SeqCst);
    }
}

/// The stdout sink's thread.
pub struct StdoutSink {
    thread: JoinHandle<()>,
    progress: Progress,
}

impl StdoutSink {
    /// Writes findings until the channel closes, on its own thread so a slow
    /// stdout (a full pipe) never blocks a tokio worker; its bounded queue
    /// absorbs bursts and counts what overflows. `sent` counts what the
    /// queue took (`Fanout::add`).
    pub fn start<T: Line>(rx: mpsc::Receiver<T>, sent: Arc<AtomicU64>, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let progress = Progress::new(sent);
        let p = progress.clone();
        let thread = std::thread::Builder::new().name("dw-stdout".into()).spawn(move || run(rx, metrics, p))?;
        Ok(Self { thread, progress })
    }

    /// Starts the sink in `format`, behind a queue of `cap` findings named
    /// `queue`, registered with `fanout`.
    pub fn start_on(
        format: OutputFormat,
        cap: usize,
        queue: &'static str,
        fanout: &mut super::Fanout,
        metrics: &Arc<Metrics>,
    ) -> std::io::Result<Self> {
        metrics.sinks.declare_sink("stdout");
        match format {
            OutputFormat::Json => {
                let (tx, rx) = mpsc::channel(cap);
                let sent = fanout.add(queue, tx, metrics);
                Self::start(rx, sent, metrics.clone())
            }
            OutputFormat::Falco => {
                let (tx, rx) = mpsc::channel(cap);
                let sent = fanout.add_falco(queue, tx, metrics);
                Self::start::<Bytes>(rx, sent, metrics.clone())
            }
        }
    }

    /// How far it has got, as a handle that outlives the sink.
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// Waits for the thread (after the queue's sender is gone).
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// What the stdout sink writes, one line each.
pub trait Line: Send + 'static {
    /// Writes the line and its newline; `buf` is reused from line to line.
    fn write_to<W: Write>(&self, out: &mut W, buf: &mut Vec<u8>) -> std::io::Result<()>;
}

impl Line for Arc<Finding> {
    fn write_to<W: Write>(&self, out: &mut W, buf: &mut Vec<u8>) -> std::io::Result<()> {
        write_line(out, self, buf)
    }
}

/// A rendered event (a Falco event), written as it is.
impl Line for Bytes {
    fn write_to<W: Write>(&self, out: &mut W, buf: &mut Vec<u8>) -> std::io::Result<()> {
        buf.clear();
        buf.extend_from_slice(self);
        buf.push(b'\n');
        out.write_all(buf)
    }
}

fn run<T: Line>(mut rx: mpsc::Receiver<T>, metrics: Arc<Metrics>, progress: Progress) {
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
        let ok = batch.iter().filter(|f| f.write_to(&mut out, &mut buf).is_ok()).count();
        let flushed = out.flush().is_ok();
        progress.advanced(batch.len() as u64);
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
