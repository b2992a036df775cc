//! Findings of one container leave in the order their events reached the
//! pipeline, which is the order the kernel saw them: some findings wait (for
//! metadata, an image comparison, a script's layer) and others do not, and
//! without this a process's later finding could overtake its earlier one.
//!
//! Each finding takes a ticket of its container where the pipeline handles
//! its event (synchronously, in event order). A finding that is ready while
//! an earlier ticket of its container is still open is held until that one
//! is settled: sent, or given up (a ticket dropped unsent). Every wait in
//! front of a held finding is bounded (metadata wait, blocking-step limit),
//! so holds are too; a lane is forgotten as soon as it has nothing open.

use crate::id::Id;
use std::collections::{BTreeMap, HashMap};

/// Per-key sequence numbers and the values waiting for their turn.
pub struct Order<T> {
    /// By container id (FxHash: see `containers::Ids`).
    lanes: HashMap<Id, Lane<T>, rustc_hash::FxBuildHasher>,
    held: usize,
}

struct Lane<T> {
    /// Next ticket to hand out.
    issued: u64,
    /// Oldest ticket not settled yet.
    next: u64,
    /// Settled out of turn: `None` when given up.
    held: BTreeMap<u64, Option<T>>,
}

impl<T> Default for Order<T> {
    fn default() -> Self {
        Self { lanes: HashMap::default(), held: 0 }
    }
}

impl<T> Order<T> {
    /// The next ticket of `key`.
    pub fn ticket(&mut self, key: Id) -> u64 {
        let lane = self.lanes.entry(key).or_insert(Lane { issued: 0, next: 0, held: BTreeMap::new() });
        lane.issued += 1;
        lane.issued - 1
    }

    /// Settles ticket `seq` of `key` with `value` (None: given up) and hands
    /// `out` every value now due, in ticket order.
    pub fn settle(&mut self, key: &Id, seq: u64, value: Option<T>, mut out: impl FnMut(T)) {
        let Some(lane) = self.lanes.get_mut(key) else {
            // Not issued here (cannot happen): never lose the value.
            value.into_iter().for_each(out);
            return;
        };
        if seq != lane.next {
            lane.held.insert(seq, value);
            self.held += 1;
            return;
        }
        value.into_iter().for_each(&mut out);
        lane.next += 1;
        while let Some(v) = lane.held.remove(&lane.next) {
            self.held -= 1;
            v.into_iter().for_each(&mut out);
            lane.next += 1;
        }
        if lane.next == lane.issued {
            self.lanes.remove(key);
        }
    }

    /// Values held for an earlier ticket.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Keys with an open ticket.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.lanes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settle(o: &mut Order<&'static str>, key: &str, seq: u64, v: Option<&'static str>) -> Vec<&'static str> {
        let mut got = Vec::new();
        o.settle(&Id::from(key), seq, v, |x| got.push(x));
        got
    }

    #[test]
    fn in_turn_goes_at_once_and_the_lane_is_forgotten() {
        let mut o = Order::default();
        let t = o.ticket("c1".into());
        assert_eq!(settle(&mut o, "c1", t, Some("a")), ["a"]);
        assert_eq!((o.open(), o.held()), (0, 0));
        // A new lane starts over.
        assert_eq!(o.ticket("c1".into()), 0);
    }

    #[test]
    fn a_later_finding_waits_for_the_earlier_one() {
        let mut o = Order::default();
        let (a, b, c) = (o.ticket("c1".into()), o.ticket("c1".into()), o.ticket("c1".into()));
        let other = o.ticket("c2".into());
        assert!(settle(&mut o, "c1", c, Some("c")).is_empty());
        assert!(settle(&mut o, "c1", b, Some("b")).is_empty());
        // Another container is not held by c1's.
        assert_eq!(settle(&mut o, "c2", other, Some("x")), ["x"]);
        assert_eq!(o.held(), 2);
        assert_eq!(settle(&mut o, "c1", a, Some("a")), ["a", "b", "c"]);
        assert_eq!((o.open(), o.held()), (0, 0));
    }

    #[test]
    fn a_ticket_given_up_releases_those_behind_it() {
        let mut o = Order::default();
        let (a, b, c) = (o.ticket("c1".into()), o.ticket("c1".into()), o.ticket("c1".into()));
        assert!(settle(&mut o, "c1", b, Some("b")).is_empty());
        assert_eq!(settle(&mut o, "c1", a, None), ["b"]);
        // c is still open: the lane stays until it settles.
        assert_eq!(o.open(), 1);
        assert!(settle(&mut o, "c1", c, None).is_empty());
        assert_eq!(o.open(), 0);
    }

    #[test]
    fn any_settle_order_gives_ticket_order() {
        // Every permutation of 5 tickets comes out 0..5.
        fn perms(v: Vec<u64>) -> Vec<Vec<u64>> {
            if v.len() <= 1 {
                return vec![v];
            }
            (0..v.len())
                .flat_map(|i| {
                    let mut rest = v.clone();
                    let x = rest.remove(i);
                    perms(rest).into_iter().map(move |mut p| {
                        p.insert(0, x);
                        p
                    })
                })
                .collect()
        }
        for p in perms((0..5).collect()) {
            let mut o: Order<u64> = Order::default();
            (0..5).for_each(|_| {
                o.ticket("k".into());
            });
            let mut got = Vec::new();
            for seq in &p {
                o.settle(&"k".into(), *seq, Some(*seq), |x| got.push(x));
            }
            assert_eq!(got, (0..5).collect::<Vec<_>>(), "settled in order {p:?}");
            assert_eq!((o.open(), o.held()), (0, 0));
        }
    }
}
