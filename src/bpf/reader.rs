//! The ring-buffer reader: a dedicated OS thread (never a tokio worker) that
//! drains on a short timer and whenever the kernel forces a wakeup (drift),
//! and hands what it decoded to the pipeline through the events queue
//! (`super::queue`: bounded in events, drift first).

use super::queue::{self, DropLog, Dropped};
use crate::{
    event::{self, Event},
    metrics::Metrics,
};
use aya::maps::{MapData, RingBuf};
use std::{
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Queue name used in `driftwatch_userspace_drops_total`.
pub const QUEUE: &str = "events";

/// Most events handed to the pipeline in one message. One message per drain
/// (not per event) keeps the pipeline from waking for every record.
pub const BATCH: usize = queue::BATCH;

/// At most one log line about dropped events this often (the first at once).
const DROP_LOG_EVERY: Duration = Duration::from_secs(60);

/// Starts the reader thread. `alive` is cleared when the thread ends, for
/// whatever reason (stop requested, pipeline gone, panic).
pub fn spawn(
    mut ring: RingBuf<MapData>,
    interval: Duration,
    tx: queue::Sender,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    alive: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    metrics.pipeline.declare_queue(QUEUE);
    alive.store(true, Ordering::SeqCst);
    std::thread::Builder::new().name("dw-ringbuf".into()).spawn(move || {
        let _alive = ClearOnDrop(alive);
        let mut log = DropLog::new(DROP_LOG_EVERY);
        let fd = ring.as_raw_fd();
        let timeout = interval.as_millis().clamp(1, 1000) as i32;
        while !stop.load(Ordering::Relaxed) {
            let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd; the fd lives as long as `ring`.
            let _ = unsafe { libc::poll(&mut pfd, 1, timeout) };
            let mut batch = Vec::with_capacity(BATCH);
            let mut per_kind = [0u64; Event::KINDS.len()];
            while let Some(item) = ring.next() {
                match event::decode(&item) {
                    Ok(ev) => {
                        if let Some(i) = Event::KINDS.iter().position(|k| *k == ev.kind()) {
                            per_kind[i] += 1;
                        }
                        batch.push(ev);
                    }
                    Err(e) => {
                        metrics.pipeline.decode_error(e.reason());
                        tracing::debug!(error = %e, "undecodable kernel record");
                    }
                }
                drop(item);
                if batch.len() == BATCH {
                    send(&tx, std::mem::replace(&mut batch, Vec::with_capacity(BATCH)), &metrics, &mut log);
                }
            }
            for (kind, n) in Event::KINDS.iter().zip(per_kind) {
                if n > 0 {
                    metrics.pipeline.events(kind, n);
                }
            }
            if !batch.is_empty() {
                send(&tx, batch, &metrics, &mut log);
            }
            if tx.is_closed() {
                break;
            }
        }
    })
}

/// Clears the reader's liveness flag however the thread ends.
struct ClearOnDrop(Arc<AtomicBool>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Never blocks the reader: a stalled pipeline must not back up into the
/// kernel. What does not fit is counted, event by event, by kind and lane,
/// and said in the log at once the first time, then at most once a minute.
fn send(tx: &queue::Sender, batch: Vec<Event>, metrics: &Metrics, log: &mut DropLog) {
    let dropped = tx.push(batch);
    if dropped.total() == 0 {
        return;
    }
    metrics.pipeline.queue_drops(QUEUE, dropped.total());
    for (kind, drift, n) in dropped.iter() {
        metrics.pipeline.event_drops(kind, drift, n);
    }
    if let Some(total) = log.note(&dropped, Instant::now()) {
        warn_dropped(&total, tx.capacity());
    }
}

/// The log line about drops, with the totals since the start.
fn warn_dropped(total: &Dropped, capacity: usize) {
    tracing::warn!(
        dropped_total = total.total(),
        drift_execs = total.of("exec", true),
        other_execs = total.of("exec", false),
        net = total.of("net", false),
        file = total.of("file", false),
        queue_capacity = capacity,
        "events queue full: the pipeline is behind the kernel and events were dropped (drift is dropped last; \
         driftwatch_events_dropped_total counts them by kind); totals since start, next report in a minute at the earliest"
    );
}
