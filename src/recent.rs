//! The values kept last, at most `N`, the oldest replaced first: the small
//! caches of the per-event path (a node's events come from a handful of
//! cgroups and containers at a time), bounded with no eviction policy to
//! tune. The callers decide what a hit is (equal bytes, the same `Arc`).

pub struct Recent<T, const N: usize> {
    slots: [Option<T>; N],
    next: usize,
    filled: usize,
}

impl<T, const N: usize> Default for Recent<T, N> {
    fn default() -> Self {
        Self { slots: std::array::from_fn(|_| None), next: 0, filled: 0 }
    }
}

impl<T, const N: usize> Recent<T, N> {
    /// A kept value that `hit` accepts.
    pub fn find(&self, mut hit: impl FnMut(&T) -> bool) -> Option<&T> {
        self.slots.iter().flatten().find(|v| hit(v))
    }

    /// Keeps `v`, in place of the oldest once `N` are kept.
    pub fn push(&mut self, v: T) {
        self.push_reusing(|_| v);
    }

    /// Keeps the value `fill` makes out of the one it replaces (None while
    /// fewer than `N` are kept): a caller reuses that value's allocation.
    pub fn push_reusing(&mut self, fill: impl FnOnce(Option<T>) -> T) {
        let old = self.slots[self.next].take();
        if old.is_none() {
            self.filled += 1;
        }
        self.slots[self.next] = Some(fill(old));
        self.next = (self.next + 1) % N;
    }

    /// Values kept (`N` at most).
    pub fn len(&self) -> usize {
        self.filled
    }

    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_n_and_replaces_the_oldest() {
        let mut r = Recent::<u32, 3>::default();
        assert!(r.is_empty() && r.find(|_| true).is_none());
        for v in 0..5 {
            r.push(v);
            assert_eq!(r.len(), (v as usize + 1).min(3));
        }
        // 0 and 1 were replaced, oldest first; 2, 3 and 4 are kept.
        assert!((0..2).all(|v| r.find(|&x| x == v).is_none()));
        assert!((2..5).all(|v| r.find(|&x| x == v) == Some(&v)));
        r.push(5);
        assert!(r.find(|&x| x == 2).is_none() && r.find(|&x| x == 5).is_some() && r.len() == 3);
    }

    #[test]
    fn push_reusing_hands_over_the_value_it_replaces() {
        let mut r = Recent::<String, 2>::default();
        let mut given = Vec::new();
        for v in ["a", "b", "c", "d"] {
            r.push_reusing(|old| {
                given.push(old.clone());
                let mut s = old.unwrap_or_default();
                s.clear();
                s.push_str(v);
                s
            });
        }
        assert_eq!(given, [None, None, Some("a".to_string()), Some("b".to_string())]);
        assert_eq!(r.len(), 2);
        assert!(r.find(|s| s == "c").is_some() && r.find(|s| s == "d").is_some() && r.find(|s| s == "a").is_none());
    }
}
