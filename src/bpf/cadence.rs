//! When the events thread looks at the ring buffer next: the timing rules of
//! [`super::reader`], kept apart from its syscalls so that each rule is
//! tested with made-up clocks (`cargo test cadence`).
//!
//! - After a look that read records, the next look is one wake interval
//!   after that look *began*: the kernel holds its wakeups until then
//!   (`super::look`), so the last records of a burst are read by this look.
//! - After a look that read nothing, the reader sleeps until the backstop
//!   timer or the kernel's next forced wakeup, and withdraws its look so that
//!   the next record wakes it at once.
//! - The backstop doubles at each look that read no record that may be a
//!   finding, up to the idle backstop (`sensor.idle_drain_interval_ms`); such
//!   a record brings it back. Only records nobody waits for (`--emit-all-execs`'
//!   extras) wait for it, and they do not bring it back: a stream of them is
//!   read about once a second (or when the ring buffer is half full), in
//!   large batches, not at every drain interval. Each look costs a wakeup and
//!   a pass over code and data that other CPUs evicted meanwhile (measured:
//!   ~55 µs a look, against ~1 µs an event). An idle agent wakes ~once a
//!   second instead of 20 times.
//! - A look due within the timer slack, or already past, is taken at once:
//!   such a sleep returns without the thread being switched out.
//! - A return with only records still being written (reserved, not
//!   committed) is no look: the cadence stays as it was.

use std::time::Duration;

/// The shortest sleep worth taking: the default timer slack of a thread
/// (`PR_GET_TIMERSLACK`, 50 µs). A shorter one may end before the thread is
/// switched out, and the look it waits for is that close anyway.
pub const MIN_SLEEP: Duration = Duration::from_micros(50);

/// The reader's look cadence (times in `CLOCK_BOOTTIME` nanoseconds).
#[derive(Debug)]
pub struct Cadence {
    /// One wake interval; 0: no cadence (every sleep is the backstop).
    gap_ns: u64,
    backstop: Duration,
    /// The longest an idle reader's backstop grows to.
    idle_backstop: Duration,
    /// The backstop the next idle sleep takes.
    sleeping: Duration,
    /// Whether the current look has read records that may be findings so far.
    busy: bool,
    /// When the current look began.
    looked: u64,
}

/// What to do before the next look, from [`Cadence::plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// How long to wait for records; None: look at once, without sleeping.
    pub sleep: Option<Duration>,
    /// Withdraw the look the kernel holds its wakeups for (the reader is idle).
    pub withdraw: bool,
    /// When the next look is due by the cadence (None: idle).
    due: Option<u64>,
    was_busy: bool,
    /// The backstop before this plan, for [`Cadence::nothing_yet`].
    was_sleeping: Duration,
}

impl Cadence {
    pub fn new(gap_ns: u64, backstop: Duration, now: u64) -> Self {
        Self { gap_ns, backstop, idle_backstop: backstop, sleeping: backstop, busy: false, looked: now }
    }

    /// Lets the backstop grow to `idle` (at least the backstop) while nothing is read.
    pub fn idle_up_to(mut self, idle: Duration) -> Self {
        self.idle_backstop = idle.max(self.backstop);
        self
    }

    /// The current look read records that may be findings.
    pub fn read_records(&mut self) {
        self.busy = true;
    }

    /// A drain read records, `timely` if any may be a finding (records that
    /// are not change nothing: they wait for whatever look comes next).
    pub fn drained(&mut self, timely: bool) {
        if timely {
            self.read_records();
        }
    }

    /// Ends the current look (nothing is left to handle): what to wait for.
    pub fn plan(&mut self, now: u64) -> Plan {
        let due = (self.busy && self.gap_ns > 0).then_some(self.looked + self.gap_ns);
        let was_sleeping = self.sleeping;
        if self.busy {
            self.sleeping = self.backstop;
        }
        let timeout = match due {
            Some(due) => Duration::from_nanos(due.saturating_sub(now)),
            None => {
                // This sleep's backstop; the next empty look's is twice it.
                let sleep = self.sleeping;
                self.sleeping = (sleep * 2).min(self.idle_backstop);
                sleep
            }
        };
        Plan {
            sleep: (timeout > MIN_SLEEP).then_some(timeout),
            withdraw: due.is_none(),
            due,
            was_busy: std::mem::replace(&mut self.busy, false),
            was_sleeping,
        }
    }

    /// The sleep of `plan` returned with a record readable, but none was
    /// committed yet (its writer, on another CPU, is still filling it): no
    /// look began. The cadence and the kernel's held look stay as they were.
    pub fn nothing_yet(&mut self, plan: &Plan) {
        self.busy = plan.was_busy;
        self.sleeping = plan.was_sleeping;
    }

    /// A look begins at `now` after `plan`; returns the time it counts from
    /// (for the kernel's wake gate). A look its timer began counts from when
    /// it was due, not from when the switch back in let it run (~0.1-0.2 ms
    /// on a VM), so the cadence stays one interval, not an interval plus the
    /// switch. A look that ran late (a long batch, a starved CPU) counts
    /// from now.
    pub fn look(&mut self, plan: &Plan, now: u64) -> u64 {
        self.looked = match plan.due {
            Some(due) if now >= due && now - due < self.gap_ns / 4 => due,
            _ => now,
        };
        self.looked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const BACKSTOP: Duration = Duration::from_millis(100);

    fn cadence() -> Cadence {
        Cadence::new(10 * MS, BACKSTOP, 1_000 * MS)
    }

    #[test]
    fn an_idle_reader_sleeps_to_the_backstop_and_withdraws_its_look() {
        let mut c = cadence();
        let p = c.plan(1_001 * MS);
        assert_eq!((p.sleep, p.withdraw), (Some(BACKSTOP), true));
        // Woken by the kernel at 1,050 ms: the look counts from then.
        assert_eq!(c.look(&p, 1_050 * MS), 1_050 * MS);
    }

    #[test]
    fn after_records_the_next_look_is_one_interval_after_this_one_began() {
        let mut c = cadence();
        c.read_records();
        let p = c.plan(1_003 * MS);
        assert_eq!((p.sleep, p.withdraw), (Some(Duration::from_millis(7)), false));
        // The timer fired at 1,010 ms; the switch back in took 0.2 ms.
        assert_eq!(c.look(&p, 1_010 * MS + 200_000), 1_010 * MS, "counted from when it was due");
        c.read_records();
        assert_eq!(c.plan(1_012 * MS).sleep, Some(Duration::from_millis(8)));
    }

    #[test]
    fn a_look_that_ran_late_counts_from_now() {
        let mut c = cadence();
        c.read_records();
        let p = c.plan(1_003 * MS);
        // A quarter of an interval late or more: the cadence restarts.
        assert_eq!(c.look(&p, 1_013 * MS), 1_013 * MS);
        // A look the kernel forced before it was due counts from then too.
        c.read_records();
        let p = c.plan(1_014 * MS);
        assert_eq!(c.look(&p, 1_015 * MS), 1_015 * MS);
    }

    #[test]
    fn a_look_due_within_the_timer_slack_or_past_is_taken_without_sleeping() {
        let mut c = cadence();
        c.read_records();
        let p = c.plan(1_010 * MS - 40_000);
        assert_eq!((p.sleep, p.withdraw), (None, false), "40 µs before it is due");
        assert_eq!(c.look(&p, 1_010 * MS - 39_000), 1_010 * MS - 39_000);
        c.read_records();
        let p = c.plan(1_030 * MS);
        assert_eq!((p.sleep, p.withdraw), (None, false), "already past (a long batch)");
        // Just past the slack, it sleeps.
        let mut c = cadence();
        c.read_records();
        assert_eq!(c.plan(1_010 * MS - 60_000).sleep, Some(Duration::from_micros(60)));
    }

    #[test]
    fn a_return_with_only_records_being_written_keeps_the_cadence() {
        let mut c = cadence();
        c.read_records();
        let p = c.plan(1_003 * MS);
        // ppoll returned at 1,004 ms (a record reserved on another CPU), and
        // nothing could be read yet: no look began.
        c.nothing_yet(&p);
        let again = c.plan(1_004 * MS);
        assert_eq!(
            (again.sleep, again.withdraw),
            (Some(Duration::from_millis(6)), false),
            "the same deadline, still held"
        );
        assert_eq!(c.look(&again, 1_010 * MS), 1_010 * MS);
        // An idle reader stays idle: its look stays withdrawn.
        let mut c = cadence();
        let p = c.plan(1_003 * MS);
        c.nothing_yet(&p);
        let again = c.plan(1_004 * MS);
        assert_eq!((again.sleep, again.withdraw), (Some(BACKSTOP), true));
    }

    #[test]
    fn an_idle_reader_backs_off_to_the_idle_backstop_and_a_record_that_may_be_a_finding_brings_it_back() {
        const IDLE: Duration = Duration::from_millis(1000);
        let mut c = cadence().idle_up_to(IDLE);
        let mut now = 1_000 * MS;
        let mut sleeps = vec![];
        for _ in 0..6 {
            let p = c.plan(now);
            assert!(p.withdraw, "idle: the next record that may be a finding wakes it");
            sleeps.push(p.sleep.unwrap().as_millis());
            now += p.sleep.unwrap().as_nanos() as u64;
            c.look(&p, now);
        }
        assert_eq!(sleeps, [100, 200, 400, 800, 1000, 1000]);
        // Records nobody waits for (not timely) are read: the backstop stays
        // long, so that a stream of them is read in large batches.
        c.drained(false);
        let p = c.plan(now);
        assert_eq!((p.sleep, p.withdraw), (Some(IDLE), true));
        c.look(&p, now + 1_000 * MS);
        // One that may be a finding brings it back (after its cadence's look).
        c.drained(true);
        let p = c.plan(now + 1_000 * MS);
        assert!(p.due.is_some());
        c.look(&p, now + 1_010 * MS);
        assert_eq!(c.plan(now + 1_010 * MS).sleep, Some(BACKSTOP));
        assert_eq!(c.plan(now + 1_110 * MS).sleep, Some(2 * BACKSTOP), "then it grows again");
        // After a storm of findings, the first empty look sleeps the short backstop.
        let mut c = cadence().idle_up_to(IDLE);
        for _ in 0..5 {
            c.plan(now);
        }
        c.drained(true);
        let p = c.plan(now);
        assert!(p.due.is_some());
        c.look(&p, now + 10 * MS);
        assert_eq!(c.plan(now + 10 * MS).sleep, Some(BACKSTOP));
        // A return with only records being written changes nothing.
        let mut c = cadence().idle_up_to(IDLE);
        let p = c.plan(now);
        c.nothing_yet(&p);
        assert_eq!(c.plan(now).sleep, p.sleep);
    }

    #[test]
    fn without_an_idle_backstop_the_backstop_never_grows() {
        let mut c = cadence();
        for _ in 0..5 {
            assert_eq!(c.plan(5 * MS).sleep, Some(BACKSTOP));
        }
    }

    #[test]
    fn without_a_wake_interval_every_sleep_is_the_backstop() {
        let mut c = Cadence::new(0, BACKSTOP, 0);
        c.read_records();
        let p = c.plan(5 * MS);
        assert_eq!((p.sleep, p.withdraw), (Some(BACKSTOP), true));
        assert_eq!(c.look(&p, 6 * MS), 6 * MS);
    }
}
