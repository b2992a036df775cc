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
    cadence::Cadence,
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

/// Room a new batch starts with; it grows (doubling) up to [`BATCH`]. A
/// drain usually reads a handful of records, and a large request at every
/// wakeup takes glibc's slow path, which first consolidates its fast bins (4%
/// of the events thread's CPU in a shell storm, when every drain reserved all
/// of [`BATCH`]). Batches are reused (`queue::Sender::batch`), so this is
/// paid once, not per look.
const FIRST_ROOM: usize = 16;

/// At most one log line about dropped events this often (the first at once).
const DROP_LOG_EVERY: Duration = Duration::from_secs(60);

/// When the events thread looks at the ring buffer without being woken.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    /// With nothing read at the last look (`sensor.drain_interval_ms`).
    pub backstop: Duration,
    /// What the backstop grows to while nothing is read
    /// (`sensor.idle_drain_interval_ms`); only with the kernel's wake gate.
    pub idle_backstop: Duration,
    /// After a look that read records (`sensor.wake_interval_ms`; zero:
    /// the backstop).
    pub after_records: Duration,
}

/// What the events thread hands its decoded events to, on its own thread.
pub trait Handler: Send + 'static {
    /// Judges a chunk of events (at most [`CHUNK`]), in ring-buffer order,
    /// taking every one of them. They are moved out of the look's batch, which
    /// is then reused (`queue::Receiver::recycle`).
    fn handle(&mut self, chunk: &mut dyn Iterator<Item = Event>);
    /// Nothing is left to handle: the thread is about to sleep (or to end).
    /// What the handler held back for this look (a write) goes out now.
    fn idle(&mut self) {}
}

/// Starts the events thread: `handler` gets every decoded event, in ring-buffer
/// order, at most [`CHUNK`] at a time, on this thread, inside `rt` (so it may
/// spawn tokio tasks for what has to wait). `look`: where it tells the
/// kernel's wake gate when it looked (`super::look`). `capacity`: events the queue
/// holds at most. `alive` is cleared when the thread ends, for whatever
/// reason (stop requested, panic). At stop, what is queued is handled before
/// the thread ends.
#[allow(clippy::too_many_arguments)]
pub fn spawn<H: Handler>(
    mut ring: RingBuf<MapData>,
    look: Option<Look>,
    wait: Wait,
    capacity: usize,
    mut handler: H,
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
        // Without the gate's look (or with records that never wake the
        // reader) the backstop is how records are read: it never grows.
        let idle = if look.is_some() { wait.idle_backstop.min(Duration::from_secs(1)) } else { backstop };
        let mut cadence = Cadence::new(gap_ns, backstop, boot_ns()).idle_up_to(idle);
        let cgroup_paths = metrics.registry_stats.cache_gauge(event::CGROUP_PATHS_CACHE);
        while !stop.load(Ordering::Relaxed) {
            let d = drain(&mut ring, &tx, &metrics, &mut log);
            cadence.drained(d.timely);
            match rx.try_recv() {
                Ok(mut batch) => {
                    if batch.iter().any(timely) {
                        cadence.read_records();
                    }
                    // Drain between small chunks: while this thread judges, the
                    // kernel's ring buffer only waits for one chunk (a CPU-starved
                    // storm otherwise overflowed it with drift execs). What is
                    // drained meanwhile queues behind the rest of this batch.
                    let mut events = batch.drain(..);
                    while events.len() > 0 {
                        handler.handle(&mut events.by_ref().take(CHUNK));
                        let d = drain(&mut ring, &tx, &metrics, &mut log);
                        cadence.drained(d.timely);
                    }
                    drop(events);
                    rx.recycle(batch);
                }
                Err(_) => {
                    // Nothing queued: the look ends with the handler's write.
                    // Records that came during it are drained (a ring buffer
                    // with records would end the sleep at once). Those the
                    // kernel woke us for (drift) are judged now (another
                    // write); the rest waits in the queue for the next look,
                    // as records that come after the sleep began do (the
                    // kernel holds their wakeup until then), so that a look
                    // is one write.
                    handler.idle();
                    cgroup_paths.set(event::cgroup_paths_cached() as i64);
                    let late = drain(&mut ring, &tx, &metrics, &mut log);
                    cadence.drained(late.timely);
                    if late.urgent {
                        continue;
                    }
                    // Sleep until the kernel wakes us or the cadence's timer
                    // (`super::cadence`).
                    let plan = cadence.plan(boot_ns());
                    if plan.withdraw
                        && let Some(l) = &look
                    {
                        l.set(0);
                    }
                    if let Some(timeout) = plan.sleep {
                        let records = sleep_on(ring.as_raw_fd(), timeout);
                        // The kernel calls a ring buffer readable as soon as a
                        // record is reserved, before its program has written
                        // and committed it: ppoll then returns at once, and
                        // again, until the writer (on another CPU) is done.
                        // Such a return is not counted as a wakeup.
                        if records {
                            let d = drain(&mut ring, &tx, &metrics, &mut log);
                            if d.read == 0 {
                                cadence.nothing_yet(&plan);
                                std::hint::spin_loop();
                                continue;
                            }
                            cadence.drained(d.timely);
                        }
                        metrics.pipeline.reader_woke(records);
                    }
                    let looked = cadence.look(&plan, boot_ns());
                    if let Some(l) = &look {
                        l.set(looked);
                    }
                }
            }
        }
        while let Ok(mut batch) = rx.try_recv() {
            let mut events = batch.drain(..);
            while events.len() > 0 {
                handler.handle(&mut events.by_ref().take(CHUNK));
            }
        }
        handler.idle();
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

/// What a drain read.
struct Drained {
    /// Records read (decodable or not).
    read: usize,
    /// Whether the kernel forced a wakeup for any ([`forced_wakeup`]).
    urgent: bool,
    /// Whether any is [`timely`]: the cadence looks again one wake interval
    /// later only after those.
    timely: bool,
}

/// Moves every record the ring buffer holds into the queue, decoded.
fn drain(ring: &mut RingBuf<MapData>, tx: &queue::Sender, metrics: &Metrics, log: &mut DropLog) -> Drained {
    let mut batch = Vec::new();
    let mut per_kind = [0u64; Event::KINDS.len()];
    let (mut read, mut urgent, mut any_timely) = (0, false, false);
    while let Some(item) = ring.next() {
        read += 1;
        match event::decode(&item) {
            Ok(ev) => {
                per_kind[ev.kind_index()] += 1;
                urgent = urgent || forced_wakeup(&ev);
                any_timely = any_timely || timely(&ev);
                // A spare batch, taken only once there is a record for it.
                if batch.capacity() == 0 {
                    batch = tx.batch();
                    if batch.capacity() == 0 {
                        batch.reserve_exact(FIRST_ROOM);
                    }
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
    Drained { read, urgent, timely: any_timely }
}

/// Whether a record keeps the look cadence going: all but the execs only
/// `--emit-all-execs` sends (`DW_EXEC_UNFILTERED`, which the kernel lets
/// wait for the reader's timer: `DW_WAKE_LAZY` in ebpf/helpers/emit.h). A
/// stream of those alone is read at the idle timer (it backs off to
/// `sensor.idle_drain_interval_ms`, 1 s) or when the ring buffer is half
/// full, in large batches, not once per wake interval (`super::cadence`).
fn timely(ev: &Event) -> bool {
    !matches!(ev, Event::Exec(e) if e.flags.unfiltered())
}

/// Whether the kernel forced a wakeup for this record (`emit_submit`'s
/// `wake` in `ebpf/helpers/emit.h`): an exec it judged drift, a container's
/// entrypoint, an executable mapping (sent only when drift).
fn forced_wakeup(ev: &Event) -> bool {
    match ev {
        Event::Exec(e) => e.flags.drift() || e.flags.entrypoint(),
        Event::Map(_) => true,
        Event::Net(_) | Event::File(_) => false,
    }
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
