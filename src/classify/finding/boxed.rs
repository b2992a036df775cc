//! A finding on the heap, in an allocation reused from finding to finding.
//!
//! A `Finding` is ~740 bytes. Passed by value from the classifier through
//! the emitter, the order and the fan-out, it was copied about ten times a
//! finding (~1,100 instructions of `memcpy`, 8% of a shell finding's
//! userspace work). Boxed, each hand-over moves a pointer; the box goes back
//! to its thread's pool when the finding is dropped, so a storm allocates
//! nothing for it either.

use super::Finding;
use std::{
    cell::RefCell,
    mem::{ManuallyDrop, MaybeUninit},
    ops::{Deref, DerefMut},
    sync::atomic::{AtomicUsize, Ordering},
};

/// Boxes a thread keeps for its next findings: the events thread's findings
/// are dropped where they were made (the stdout sink writes them in place),
/// so a handful is always enough; past it a box is freed.
const POOL_MAX: usize = 16;

/// Its `cache` label in `driftwatch_cache_entries`: the spare boxes of
/// every thread (each `POOL_MAX` at most).
pub const POOL_CACHE: &str = "finding_boxes";

/// Spare boxes of every thread, for the gauge.
static POOLED: AtomicUsize = AtomicUsize::new(0);

/// A thread's spare boxes; counted in [`POOLED`] while the thread lives (as
/// the JSON writer's rule headers are in theirs).
// The boxes themselves are the point: their allocations are what is kept.
#[allow(clippy::vec_box)]
struct Pool(Vec<Box<MaybeUninit<Finding>>>);

impl Drop for Pool {
    fn drop(&mut self) {
        POOLED.fetch_sub(self.0.len(), Ordering::Relaxed);
    }
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool(Vec::with_capacity(POOL_MAX)));
}

/// A finding on the heap (always initialised; see the module comment).
pub struct Boxed(ManuallyDrop<Box<MaybeUninit<Finding>>>);

impl Boxed {
    pub fn new(f: Finding) -> Self {
        let spare = POOL.try_with(|p| p.borrow_mut().0.pop()).ok().flatten();
        if spare.is_some() {
            POOLED.fetch_sub(1, Ordering::Relaxed);
        }
        let mut b = spare.unwrap_or_else(Box::new_uninit);
        b.write(f);
        Self(ManuallyDrop::new(b))
    }

    /// The finding itself (for an `Arc` shared by the queued sinks); the
    /// box goes back to the pool.
    pub fn into_inner(self) -> Finding {
        let mut me = ManuallyDrop::new(self);
        // SAFETY: the box is initialised (`new`) and is read once, here; `me`
        // is never dropped, so the finding is not dropped twice.
        let (f, b) = unsafe { (me.0.assume_init_read(), ManuallyDrop::take(&mut me.0)) };
        recycle(b);
        f
    }
}

/// Keeps an emptied box for the thread's next finding (frees it past
/// `POOL_MAX`, or while the thread ends).
fn recycle(b: Box<MaybeUninit<Finding>>) {
    let _ = POOL.try_with(|p| {
        let p = &mut p.borrow_mut().0;
        if p.len() < POOL_MAX {
            p.push(b);
            POOLED.fetch_add(1, Ordering::Relaxed);
        }
    });
}

/// Spare boxes every thread keeps ([`POOL_CACHE`]).
pub fn pooled() -> usize {
    POOLED.load(Ordering::Relaxed)
}

/// Spare boxes this thread keeps.
#[cfg(test)]
fn pooled_here() -> usize {
    POOL.try_with(|p| p.borrow().0.len()).unwrap_or(0)
}

impl Drop for Boxed {
    fn drop(&mut self) {
        // SAFETY: initialised until here (`new`); dropped once, then the
        // emptied box is taken out of the `ManuallyDrop` that is never used again.
        let b = unsafe {
            self.0.assume_init_drop();
            ManuallyDrop::take(&mut self.0)
        };
        recycle(b);
    }
}

impl Deref for Boxed {
    type Target = Finding;
    fn deref(&self) -> &Finding {
        // SAFETY: initialised from `new` until drop.
        unsafe { self.0.assume_init_ref() }
    }
}

impl DerefMut for Boxed {
    fn deref_mut(&mut self) -> &mut Finding {
        // SAFETY: initialised from `new` until drop.
        unsafe { self.0.assume_init_mut() }
    }
}

impl From<Finding> for Boxed {
    fn from(f: Finding) -> Self {
        Self::new(f)
    }
}

impl std::fmt::Debug for Boxed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl Clone for Boxed {
    fn clone(&self) -> Self {
        Self::new((**self).clone())
    }
}

impl serde::Serialize for Boxed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

impl PartialEq for Boxed {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A finding that owns heap text and shares an `Arc`, so that a double
    /// drop or a leak shows in the count.
    fn finding(node: &Arc<str>, i: usize) -> Finding {
        let c = crate::classify::Classifier::new(&crate::config::Config::default());
        let s = crate::classify::Subject { id: "c", runtime: "containerd", pod_uid: None };
        let mut f = c.finding(
            &crate::classify::rules::SHELL_IN_CONTAINER,
            s,
            1,
            "m",
            crate::classify::Detail::Exec(Default::default()),
        );
        (f.node_name, f.approval) = (node.clone(), Some(format!("a{i}")));
        f
    }

    #[test]
    fn boxes_are_reused_and_their_findings_dropped_exactly_once() {
        let node: Arc<str> = "node-a".into();
        let before = pooled_here();
        let kept: Vec<Boxed> = (0..3 * POOL_MAX).map(|i| Boxed::new(finding(&node, i))).collect();
        assert_eq!(Arc::strong_count(&node), 1 + 3 * POOL_MAX);
        assert_eq!(kept[5].approval.as_deref(), Some("a5"));
        drop(kept);
        // Every finding dropped; the pool keeps at most POOL_MAX boxes.
        assert_eq!(Arc::strong_count(&node), 1);
        assert_eq!(pooled_here(), POOL_MAX.max(before));
        assert!(pooled() >= POOL_MAX);
        // A reused box holds the new finding, not the old one's text.
        let mut b = Boxed::new(finding(&node, 7));
        assert_eq!(pooled_here(), POOL_MAX - 1);
        b.approval = None;
        let f = b.clone().into_inner();
        assert_eq!((f.approval, &*f.node_name), (None, "node-a"));
        assert_eq!(Arc::strong_count(&node), 3);
        drop(b);
        assert_eq!(Arc::strong_count(&node), 2, "the clone's finding lives on outside its box");
        assert_eq!(pooled_here(), POOL_MAX);
    }
}
