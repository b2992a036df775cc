//! The events thread: a dedicated OS thread (never a tokio worker) that
//! drains the ring buffer on a short timer and whenever the kernel forces a
//! wakeup (drift), and handles what it decoded on the same thread.
//!
//! One thread from the ring buffer to the sinks' queues: a hand-over to
//! another thread costs a wakeup, and on a VM a wakeup costs more than the
//! work of a batch (measured: ~140 us of agent CPU per context switch, five
//! switches per drain with a tokio task in between). Between the drain and
//! the handling sits the events queue (`super::queue`: bounded in events,
//! drift shed last): the ring buffer is drained again after every handled
//! chunk ([`CHUNK`] events), so a slow stretch of handling backs up into the
//! queue, where it is bounded and counted, not into the kernel.

use super::{
    look::Look,
    queue::{self, DropLog, Dropped},
};
use crate::{
    clock::boot_ns,
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

/// Most events decoded into one queued batch.
pub const BATCH: usize = queue::BATCH;

/// Most events judged between two drains of the ring buffer.
const CHUNK: usize = 32;

/// Room a drain's batch starts with; it grows (doubling) up to [`BATCH`]. A
/// drain usually reads a handful of records, and reserving all of [`BATCH`]
/// (4 KiB) took glibc's large-request path on every wakeup, which first
/// consolidates its fast bins: 4% of the events thread's CPU in a shell storm.
const FIRST_ROOM: usize = 16;

/// The shortest sleep worth taking: the default timer slack of a thread
/// (`PR_GET_TIMERSLACK`, 50 µs). A shorter one may end before the thread is
/// switched out, and the look it waits for is that close anyway.
const MIN_SLEEP: Duration = Duration::from_micros(50);

/// At most one log line about dropped events this often (the first at once).
const DROP_LOG_EVERY: Duration = Duration::from_secs(60);

/// When the events thread looks at the ring buffer without being woken.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    /// With nothing read at the last look (`sensor.drain_interval_ms`).
    pub backstop: Duration,
    /// After a look that read records (`sensor.wake_interval_ms`; zero:
    /// the backstop).
    pub after_records: Duration,
}

/// Starts the events thread: `handle` gets every decoded event, in ring-buffer
/// order, at most [`CHUNK`] at a time, on this thread, inside `rt` (so it may
/// spawn tokio tasks for what has to wait). `look`: where it tells the
/// kernel's wake gate when it looked (`super::look`). `capacity`: events the queue
/// holds at most. `alive` is cleared when the thread ends, for whatever
/// reason (stop requested, panic). At stop, what is queued is handled before
/// the thread ends.
#[allow(clippy::too_many_arguments)]
pub fn spawn<H: FnMut(Vec<Event>) + Send + 'static>(
    mut ring: RingBuf<MapData>,
    look: Option<Look>,
    wait: Wait,
    capacity: usize,
    mut handle: H,
    rt: tokio::runtime::Handle,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    alive: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    metrics.pipeline.declare_queue(QUEUE);
    alive.store(true, Ordering::SeqCst);
    std::thread::Builder::new().name("dw-ringbuf".into()).spawn(move || {
        let _alive = ClearOnDrop(alive);
        let _rt = rt.enter();
        let (tx, mut rx) = queue::channel(capacity);
        let mut log = DropLog::new(DROP_LOG_EVERY);
        let backstop = Duration::from_millis(wait.backstop.as_millis().clamp(1, 1000) as u64);
        let gap_ns = wait.after_records.min(Duration::from_secs(1)).as_nanos() as u64;
        let look = look.filter(|_| gap_ns > 0);
        // Whether the last wakeup found records, and when it began.
        let (mut busy, mut looked) = (false, boot_ns());
        while !stop.load(Ordering::Relaxed) {
            busy |= drain(&mut ring, &tx, &metrics, &mut log) > 0;
            match rx.try_recv() {
                Ok(mut batch) => {
                    busy = true;
                    // Drain between small chunks: while this thread judges, the
                    // kernel's ring buffer only waits for one chunk (a CPU-starved
                    // storm otherwise overflowed it with drift execs). What is
                    // drained meanwhile queues behind the rest of this batch.
                    while !batch.is_empty() {
                        handle(next_chunk(&mut batch));
                        drain(&mut ring, &tx, &metrics, &mut log);
                    }
                }
                Err(_) => {
                    // Nothing queued: sleep until the kernel wakes us or the timer.
                    // The kernel wakes the reader at most once per wake
                    // interval, so the last records of a burst (submitted
                    // within the interval of its wakeup) wake nobody: after
                    // records, look again one interval after this look began
                    // (the kernel holds its wakeups until then: `look`), not
                    // at the backstop timer. An idle node keeps the backstop,
                    // and withdraws the look so that the next record wakes it.
                    let due = (busy && gap_ns > 0).then_some(looked + gap_ns);
                    let timeout = match due {
                        Some(due) => Duration::from_nanos(due.saturating_sub(boot_ns())),
                        None => {
                            if let Some(l) = &look {
                                l.set(0);
                            }
                            backstop
                        }
                    };
                    let was_busy = std::mem::replace(&mut busy, false);
                    // A look due within the kernel's timer slack (or already
                    // due: the batch ran past it on a starved CPU) is taken at
                    // once: such a ppoll returns without sleeping (its timer
                    // fires before the switch), and is no wakeup.
                    if timeout > MIN_SLEEP {
                        let records = sleep_on(ring.as_raw_fd(), timeout);
                        // The kernel calls a ring buffer readable as soon as a
                        // record is reserved, before its program has written
                        // and committed it: ppoll then returns at once, and
                        // again, until the writer (on another CPU) is done.
                        // Nothing to read yet is no look: the cadence and the
                        // look the kernel holds wakeups for stay as they were,
                        // and the return is not counted as a wakeup.
                        if records && drain(&mut ring, &tx, &metrics, &mut log) == 0 {
                            busy = was_busy;
                            std::hint::spin_loop();
                            continue;
                        }
                        metrics.pipeline.reader_woke(records);
                    }
                    // A look its timer began counts from when it was due, not
                    // from when the switch back in let it run (~0.1-0.2 ms
                    // here): the cadence stays one interval, not an interval
                    // plus the switch. A look that ran late (a long batch, a
                    // starved CPU) counts from now.
                    let now = boot_ns();
                    looked = match due {
                        Some(due) if now >= due && now - due < gap_ns / 4 => due,
                        _ => now,
                    };
                    if let Some(l) = &look {
                        l.set(looked);
                    }
                }
            }
        }
        while let Ok(mut batch) = rx.try_recv() {
            while !batch.is_empty() {
                handle(next_chunk(&mut batch));
            }
        }
    })
}

/// Waits until the ring buffer has records, the kernel wakes it, or `timeout`
/// passes (nanosecond precision: the look cadence is one wake interval).
/// True when it returned with records to read, false at the timeout.
fn sleep_on(fd: std::os::fd::RawFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as _ };
    // SAFETY: one valid pollfd and timespec for the call; the fd lives as
    // long as the ring buffer, which outlives the call.
    (unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) }) > 0
}

/// The first [`CHUNK`] events of `batch`, leaving the rest in it.
fn next_chunk(batch: &mut Vec<Event>) -> Vec<Event> {
    let rest = if batch.len() > CHUNK { batch.split_off(CHUNK) } else { Vec::new() };
    std::mem::replace(batch, rest)
}

/// Moves every record the ring buffer holds into the queue, decoded.
/// Returns how many records it read.
fn drain(ring: &mut RingBuf<MapData>, tx: &queue::Sender, metrics: &Metrics, log: &mut DropLog) -> usize {
    let mut batch = Vec::new();
    let mut per_kind = [0u64; Event::KINDS.len()];
    let mut read = 0;
    while let Some(item) = ring.next() {
        read += 1;
        match event::decode(&item) {
            Ok(ev) => {
                per_kind[ev.kind_index()] += 1;
                if batch.capacity() == 0 {
                    batch.reserve_exact(FIRST_ROOM);
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
            send(tx, std::mem::take(&mut batch), metrics, log);
        }
    }
    for (kind, n) in Event::KINDS.iter().zip(per_kind) {
        if n > 0 {
            metrics.pipeline.events(kind, n);
        }
    }
    if !batch.is_empty() {
        send(tx, batch, metrics, log);
    }
    read
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
