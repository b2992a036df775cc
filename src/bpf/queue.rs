//! The events queue between draining the ring buffer and handling what was
//! drained (both on the events thread, `super::reader`): bounded in
//! **events** (not batches), and drift is never dropped while anything else
//! waits.
//!
//! Drains are appended as batches, but a batch is only a unit of hand-over:
//! capacity is counted in events. Bounding batches instead made the real buffer depend on
//! how full they were, and in a drift storm, where every drift exec forces a
//! reader wakeup, a batch holds about one event: 32 batches were ~32 events.
//!
//! Events are handed over in the order they were read, drift or not: a
//! process's write and then its exec reach the pipeline (and the findings
//! their sinks) in that order. Priority only decides what is shed when the
//! `capacity` events are used up: arriving non-drift events are dropped; an
//! arriving drift event ([`is_drift`]) takes the place of the newest queued
//! non-drift event; drift is dropped only when the queue holds nothing but
//! drift. (Handing drift over first bought nothing: the queue is bounded, so
//! the wait behind it is too, and it put findings out of time order.) Pushing
//! never blocks (slow handling must not back up into the kernel), so what does
//! not fit is dropped here and reported to the caller by kind.

use crate::event::{Event, ExeSource};
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

/// Most events kept in one queued batch: small arrivals are appended to the
/// lane's last batch up to this size (a storm of one-event batches then
/// costs the pipeline one hand-over per `BATCH`, not per event).
pub const BATCH: usize = 256;

/// Whether an event goes to the drift lane: an exec of a container (not its
/// entrypoint, which is never a finding) that the kernel judged drift (the
/// executed file or a `#!` script not from the image: upper layer, memfd,
/// deleted, tmpfs, volume), that descends from a drifted process, that
/// carries dynamic-loader variables its container did not start with, or a
/// `#!` script whose layer the kernel could not see (userspace judges it;
/// usually an image script, but it is how a dropped script shows up).
///
/// File and network events are not: their verdict is made later, in
/// userspace (scratch paths, image layers or volume, the workload's learned
/// baseline), most of them are not drift, and the kernel already bounds
/// them (folded per file and per endpoint, file events rate limited per
/// container). Giving them priority would let a write or connect storm crowd
/// out the execs that are drift for sure. Shells and package managers from
/// the image are findings too, but the cheapest to repeat and the most
/// numerous under load; they share the other lane.
pub fn is_drift(ev: &Event) -> bool {
    // An executable mapping reaches userspace only when it is drift.
    if let Event::Map(_) = ev {
        return true;
    }
    let Event::Exec(e) = ev else { return false };
    if e.flags.entrypoint() {
        return false;
    }
    e.flags.drift()
        || e.exe_source.is_drift()
        || e.flags.ancestor_drift()
        || e.flags.env_drift()
        || e.script.as_ref().is_some_and(|(_, src)| *src == ExeSource::Unknown || src.is_drift())
}

/// Events dropped, by kind (in [`Event::KINDS`] order) and lane.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// `[kind][drift as usize]`
    counts: [[u64; 2]; Event::KINDS.len()],
}

impl Dropped {
    fn add(&mut self, ev: &Event, drift: bool) {
        self.counts[ev.kind_index()][drift as usize] += 1;
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Drift events dropped.
    pub fn drift(&self) -> u64 {
        self.counts.iter().map(|c| c[1]).sum()
    }

    /// Dropped events of one kind, drift or not.
    pub fn of(&self, kind: &str, drift: bool) -> u64 {
        Event::KINDS.iter().position(|k| *k == kind).map_or(0, |i| self.counts[i][drift as usize])
    }

    /// (kind, drift, count) for every non-zero count.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, bool, u64)> + '_ {
        Event::KINDS
            .iter()
            .zip(&self.counts)
            .flat_map(|(kind, c)| [(*kind, false, c[0]), (*kind, true, c[1])].into_iter().filter(|(_, _, n)| *n > 0))
    }

    pub fn merge(&mut self, other: &Dropped) {
        for (a, b) in self.counts.iter_mut().flatten().zip(other.counts.iter().flatten()) {
            *a += b;
        }
    }
}

/// The (kind, drift) series of `driftwatch_events_dropped_total` that can
/// occur: only execs and executable mappings are ever drift (mappings always).
pub const DROP_SERIES: [(&str, bool); 5] =
    [("exec", true), ("exec", false), ("net", false), ("file", false), ("map", true)];

/// Newest-first shedding of the non-drift events of `batch`, at most `n`;
/// returns how many went. Only on overflow: it may allocate.
fn shed_newest_non_drift(batch: &mut Vec<Event>, n: usize, dropped: &mut Dropped) -> usize {
    let (mut need, mut from) = (n, batch.len());
    while from > 0 && need > 0 {
        from -= 1;
        if !is_drift(&batch[from]) {
            need -= 1;
        }
    }
    for ev in batch.split_off(from) {
        if is_drift(&ev) {
            batch.push(ev);
        } else {
            dropped.add(&ev, false);
        }
    }
    n - need
}

/// One FIFO of batches: the pipeline sees events in the order the reader
/// read them (a process's write before its exec stays before it), and
/// priority only decides what is shed.
#[derive(Default)]
struct State {
    batches: VecDeque<Vec<Event>>,
    events: usize,
    sender_gone: bool,
    receiver_gone: bool,
    /// Emptied batches, for the reader's next drains ([`Sender::batch`]).
    spare: Vec<Vec<Event>>,
}

/// Emptied batches kept for reuse. Events are held inline (~280 bytes), so a
/// drain's batch is a few KiB, a request that takes glibc's slow path (which
/// first consolidates its fast bins) if made afresh at every look.
const SPARE_BATCHES: usize = 2;

impl State {
    fn append(&mut self, mut evs: Vec<Event>) {
        if evs.is_empty() {
            return self.keep(evs);
        }
        self.events += evs.len();
        match self.batches.back_mut() {
            Some(last) if last.len() + evs.len() <= BATCH => {
                last.append(&mut evs);
                self.keep(evs);
            }
            _ => self.batches.push_back(evs),
        }
    }

    /// Keeps an emptied batch for reuse, up to [`SPARE_BATCHES`] of them.
    fn keep(&mut self, evs: Vec<Event>) {
        if evs.is_empty() && evs.capacity() > 0 && evs.capacity() <= BATCH && self.spare.len() < SPARE_BATCHES {
            self.spare.push(evs);
        }
    }

    fn pop(&mut self) -> Option<Vec<Event>> {
        let b = self.batches.pop_front()?;
        self.events -= b.len();
        Some(b)
    }

    /// Makes room for `arriving` within `cap`: sheds the newest non-drift
    /// events (the arriving ones first: they are the newest), then the
    /// newest arriving drift events.
    fn make_room(&mut self, arriving: &mut Vec<Event>, cap: usize, dropped: &mut Dropped) {
        let mut excess = (self.events + arriving.len()).saturating_sub(cap);
        if excess == 0 {
            return;
        }
        excess -= shed_newest_non_drift(arriving, excess, dropped);
        for b in self.batches.iter_mut().rev() {
            if excess == 0 {
                break;
            }
            let k = shed_newest_non_drift(b, excess, dropped);
            self.events -= k;
            excess -= k;
        }
        self.batches.retain(|b| !b.is_empty());
        if excess > 0 {
            let keep = arriving.len() - excess;
            arriving.drain(keep..).for_each(|ev| dropped.add(&ev, true));
        }
    }
}

struct Shared {
    state: Mutex<State>,
    capacity: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        crate::locks::lock(&self.state)
    }
}

/// A queue of at most `capacity` events (at least 1).
pub fn channel(capacity: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared { state: Mutex::default(), capacity: capacity.max(1) });
    (Sender { shared: shared.clone() }, Receiver { shared })
}

/// The reader's end. Dropping it ends the pipeline once the queue is empty.
pub struct Sender {
    shared: Arc<Shared>,
}

impl Sender {
    /// Queues a batch without ever blocking; returns what did not fit (or
    /// everything, once the pipeline is gone).
    pub fn push(&self, mut batch: Vec<Event>) -> Dropped {
        let mut dropped = Dropped::default();
        let mut st = self.shared.lock();
        if st.receiver_gone {
            batch.iter().for_each(|ev| dropped.add(ev, is_drift(ev)));
            return dropped;
        }
        st.make_room(&mut batch, self.shared.capacity, &mut dropped);
        st.append(batch);
        dropped
    }

    /// An empty batch to fill: a spare one when there is one.
    pub fn batch(&self) -> Vec<Event> {
        self.shared.lock().spare.pop().unwrap_or_default()
    }

    /// Events the queue holds at most.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// True once the pipeline's end is gone.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().receiver_gone
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.shared.lock().sender_gone = true;
    }
}

/// The pipeline's end.
pub struct Receiver {
    shared: Arc<Shared>,
}

impl Receiver {
    /// The next batch at once; `Err(closed)` when empty.
    pub fn try_recv(&mut self) -> Result<Vec<Event>, bool> {
        let mut st = self.shared.lock();
        st.pop().ok_or(st.sender_gone)
    }

    /// Gives back a batch whose events were all taken, for reuse.
    pub fn recycle(&mut self, mut batch: Vec<Event>) {
        batch.clear();
        self.shared.lock().keep(batch);
    }

    /// Events queued now: (drift, other). Walks the queue: for tests and
    /// diagnostics, not the hot path.
    pub fn len(&self) -> (usize, usize) {
        let st = self.shared.lock();
        let drift = st.batches.iter().flatten().filter(|ev| is_drift(ev)).count();
        (drift, st.events - drift)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.receiver_gone = true;
        st.batches.clear();
        st.events = 0;
    }
}

/// Rate-limits the log line about drops: the first drop is logged at once,
/// later ones at most once per `every`, always with the totals so far.
#[derive(Debug)]
pub struct DropLog {
    every: Duration,
    last: Option<Instant>,
    total: Dropped,
}

impl DropLog {
    pub fn new(every: Duration) -> Self {
        Self { every, last: None, total: Dropped::default() }
    }

    /// Adds `d` to the totals; returns the totals when a line is due.
    pub fn note(&mut self, d: &Dropped, now: Instant) -> Option<Dropped> {
        if d.total() == 0 {
            return None;
        }
        self.total.merge(d);
        if self.last.is_some_and(|t| now.duration_since(t) < self.every) {
            return None;
        }
        self.last = Some(now);
        Some(self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        abi,
        event::{ExecEvent, ExecFlags, FileEvent, FileOp, NetEvent, NetOp, Process, Transport},
    };

    fn proc(tgid: u32) -> Process {
        Process {
            ktime_ns: 0,
            tgid,
            ppid: 1,
            uid: 0,
            mntns_id: 1,
            origin: Default::default(),
            comm: "x".into(),
            cgroup_path: "k8s.io/0123".into(),
            comm_escaped: false,
            cgroup_path_escaped: false,
        }
    }

    fn exec(tgid: u32, flags: u32, src: ExeSource, script: Option<ExeSource>) -> Event {
        Event::Exec(ExecEvent {
            proc: proc(tgid),
            gid: 0,
            flags: ExecFlags(flags),
            exe_source: src,
            script: script.map(|s| ("/run.sh".to_string(), s)),
            ino: 1,
            env_loader: 0,
            parent_comm: "sh".into(),
            path: "/bin/x".into(),
            args: Default::default(),
            parent_comm_escaped: false,
            path_escaped: false,
            args_escaped: false,
            script_escaped: false,
        })
    }

    fn drift(tgid: u32) -> Event {
        exec(tgid, abi::DW_EXEC_DRIFT, ExeSource::UpperLayer, None)
    }

    fn shell(tgid: u32) -> Event {
        exec(tgid, 0, ExeSource::Image, None)
    }

    fn net(tgid: u32) -> Event {
        Event::Net(NetEvent {
            proc: proc(tgid),
            op: NetOp::Connect,
            transport: Transport::Tcp,
            addr: [10, 0, 0, 1].into(),
            port: 443,
        })
    }

    fn file(tgid: u32) -> Event {
        Event::File(FileEvent {
            proc: proc(tgid),
            op: FileOp::Write,
            path: "/etc/x".into(),
            target: None,
            source: ExeSource::UpperLayer,
            mode: 0,
            owner: None,
            path_truncated: false,
            target_truncated: false,
            path_escaped: false,
            target_escaped: false,
        })
    }

    #[test]
    fn emptied_batches_are_reused_a_bounded_number() {
        let (tx, mut rx) = channel(1000);
        let fresh = tx.batch();
        assert_eq!(fresh.capacity(), 0, "nothing to reuse yet");
        let mut a = Vec::with_capacity(16);
        a.extend([shell(1), shell(2)]);
        let a_buf = a.as_ptr();
        tx.push(a);
        // A small arrival is appended to the queued batch: its own is kept.
        let mut b = Vec::with_capacity(16);
        b.push(shell(3));
        let b_buf = b.as_ptr();
        tx.push(b);
        let got = tx.batch();
        assert_eq!((got.as_ptr(), got.len(), got.capacity()), (b_buf, 0, 16), "the merged arrival's batch");
        let batch = rx.try_recv().unwrap();
        assert_eq!(tgids(&batch), [1, 2, 3]);
        rx.recycle(batch);
        let again = tx.batch();
        assert_eq!(again.as_ptr(), a_buf, "a handled batch comes back empty, for the next drain");
        for _ in 0..SPARE_BATCHES + 3 {
            rx.recycle(Vec::with_capacity(8));
        }
        let kept = (0..SPARE_BATCHES + 3).filter(|_| tx.batch().capacity() > 0).count();
        assert_eq!(kept, SPARE_BATCHES, "at most SPARE_BATCHES kept");
        rx.recycle(Vec::with_capacity(BATCH * 2));
        assert_eq!(tx.batch().capacity(), 0, "an outgrown batch is freed");
        // An empty push (a drain that read nothing) gives its batch back too.
        tx.push(Vec::with_capacity(4));
        assert_eq!(tx.batch().capacity(), 4);
    }

    fn tgids(b: &[Event]) -> Vec<u32> {
        b.iter().map(|e| e.process().tgid).collect()
    }

    fn drain(rx: &mut Receiver) -> Vec<u32> {
        let mut out = Vec::new();
        while let Ok(b) = rx.try_recv() {
            out.extend(tgids(&b));
        }
        out
    }

    #[test]
    fn what_is_drift() {
        use abi::{DW_EXEC_ANCESTOR_DRIFT, DW_EXEC_DRIFT, DW_EXEC_ENTRYPOINT, DW_EXEC_ENV_DRIFT, DW_EXEC_SCRIPT};
        assert!(is_drift(&drift(1)));
        // The source alone, in case a verdict bit is ever missing.
        assert!(is_drift(&exec(1, 0, ExeSource::Memfd, None)));
        assert!(is_drift(&exec(1, DW_EXEC_ANCESTOR_DRIFT, ExeSource::Image, None)));
        assert!(is_drift(&exec(1, DW_EXEC_ENV_DRIFT, ExeSource::Image, None)));
        // A #! script: unknown to the kernel (userspace judges it), or dropped.
        assert!(is_drift(&exec(1, DW_EXEC_SCRIPT, ExeSource::Image, Some(ExeSource::Unknown))));
        assert!(is_drift(&exec(1, DW_EXEC_SCRIPT, ExeSource::Image, Some(ExeSource::Volume))));
        assert!(!is_drift(&exec(1, DW_EXEC_SCRIPT, ExeSource::Image, Some(ExeSource::Image))));
        // Image binaries (shells, package managers), entrypoints, files, network.
        assert!(!is_drift(&shell(1)));
        assert!(!is_drift(&exec(1, DW_EXEC_ENTRYPOINT | DW_EXEC_DRIFT, ExeSource::UpperLayer, None)));
        assert!(!is_drift(&net(1)));
        assert!(!is_drift(&file(1)));
    }

    #[test]
    fn bounded_in_events_not_batches() {
        let (tx, mut rx) = channel(100);
        // 100 one-event batches fit; the 101st event does not.
        for i in 0..100 {
            assert_eq!(tx.push(vec![shell(i)]).total(), 0);
        }
        let d = tx.push(vec![shell(100)]);
        assert_eq!((d.total(), d.of("exec", false)), (1, 1));
        assert_eq!(rx.len(), (0, 100));
        // Small arrivals share batches: 100 events come out in one hand-over.
        let b = rx.try_recv().unwrap();
        assert_eq!(tgids(&b), (0..100).collect::<Vec<_>>());
        assert!(rx.is_empty());
        // One batch larger than the room left is cut to fit.
        let d = tx.push((0..150).map(net).collect());
        assert_eq!((d.total(), d.of("net", false)), (50, 50));
        assert_eq!(drain(&mut rx), (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn drift_displaces_newest_non_drift_and_order_is_kept() {
        let (tx, mut rx) = channel(10);
        assert_eq!(tx.push((0..6).map(net).chain((6..10).map(file)).collect()).total(), 0);
        // Full of non-drift: three drift execs take the places of the three newest.
        let d = tx.push(vec![drift(100), shell(101), drift(102), drift(103)]);
        assert_eq!(d.drift(), 0);
        assert_eq!((d.of("file", false), d.of("exec", false), d.total()), (3, 1, 4));
        assert_eq!(rx.len(), (3, 7));
        // Arrival order: the pipeline sees a process's events as they happened.
        assert_eq!(drain(&mut rx), vec![0, 1, 2, 3, 4, 5, 6, 100, 102, 103]);
    }

    #[test]
    fn drift_is_dropped_only_when_the_queue_holds_only_drift() {
        let (tx, mut rx) = channel(4);
        assert_eq!(tx.push(vec![net(1), drift(2), drift(3)]).total(), 0);
        let d = tx.push(vec![drift(4), drift(5), drift(6), net(7)]);
        // net(1) made room for drift(5); then the queue held only drift:
        // drift(6) and net(7) did not fit.
        assert_eq!((d.drift(), d.of("exec", true), d.of("net", false)), (1, 1, 2));
        assert_eq!(d.iter().collect::<Vec<_>>(), vec![("exec", true, 1), ("net", false, 2)]);
        assert_eq!(drain(&mut rx), vec![2, 3, 4, 5]);
    }

    #[test]
    fn closing_either_end() {
        let (tx, mut rx) = channel(8);
        tx.push(vec![drift(1), net(2)]);
        drop(tx);
        // What was queued is still handed over, then the end.
        assert_eq!(drain(&mut rx), vec![1, 2]);
        assert_eq!(rx.try_recv(), Err(true));
        let (tx, rx) = channel(8);
        assert!(!tx.is_closed());
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(tx.push(vec![drift(1), net(2)]).total(), 2);
    }

    #[test]
    fn drop_log_says_the_first_drop_at_once_then_once_a_minute() {
        let mut log = DropLog::new(Duration::from_secs(60));
        let (tx, _rx) = channel(1);
        tx.push(vec![net(0)]);
        let one = tx.push(vec![net(1)]);
        let t0 = Instant::now();
        assert_eq!(log.note(&Dropped::default(), t0), None);
        assert_eq!(log.note(&one, t0).map(|d| d.total()), Some(1));
        assert_eq!(log.note(&one, t0 + Duration::from_secs(30)), None);
        // The next line carries everything so far.
        let next = log.note(&one, t0 + Duration::from_secs(61)).unwrap();
        assert_eq!((next.total(), next.of("net", false)), (3, 3));
    }
}
