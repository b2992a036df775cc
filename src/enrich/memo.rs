//! The last containers found by cgroup path. Parsing a path (component
//! splits, id and pod-uid checks) was ~1,700 instructions an event, and a
//! node's events come from a handful of cgroups at a time: a hit is a hash
//! and a compare. Direct-mapped and fixed in size ([`SLOTS`] paths), so it
//! needs no eviction (its fill is exported as
//! `driftwatch_cache_entries{cache="container_paths"}`); only paths that name
//! a container are kept (the rest fall back to `/proc`, which can change).
//! The decoder shares one `Arc` per cgroup path (`event::cgroup_path`), so a
//! path this memo holds is first looked for by address: 16 compares instead
//! of hashing ~150 bytes (~230 instructions an event).

use super::{ContainerRef, cgroup::container_from_cgroup_path};
use std::{
    hash::{BuildHasher, Hasher},
    sync::Arc,
};

/// Paths remembered at most.
pub const SLOTS: usize = 16;

/// Its `cache` label in `driftwatch_cache_entries`.
pub const CACHE: &str = "container_paths";

#[derive(Default)]
pub struct ContainerMemo {
    /// Each slot keeps the `Arc` of the path it was found by: while held,
    /// its address names that path alone.
    slots: [Option<(Arc<str>, ContainerRef)>; SLOTS],
    filled: usize,
}

impl ContainerMemo {
    /// Slots in use.
    pub fn len(&self) -> usize {
        self.filled
    }

    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// [`container_from_cgroup_path`] of `path`, remembered.
    pub fn container(&mut self, path: &Arc<str>) -> Option<ContainerRef> {
        if let Some((_, c)) = self.slots.iter().flatten().find(|(p, _)| Arc::ptr_eq(p, path)) {
            return Some(c.clone());
        }
        let mut h = rustc_hash::FxBuildHasher.build_hasher();
        h.write(path.as_bytes());
        let slot = &mut self.slots[h.finish() as usize % SLOTS];
        if let Some((p, c)) = slot
            && **p == **path
        {
            // The same path in another `Arc` (decoded again): found by it next time.
            *p = path.clone();
            return Some(c.clone());
        }
        let c = container_from_cgroup_path(path)?;
        if slot.is_none() {
            self.filled += 1;
        }
        *slot = Some((path.clone(), c.clone()));
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn remembers_what_the_parser_says_for_every_path() {
        let mut m = ContainerMemo::default();
        let paths: Vec<String> = (0..3 * SLOTS)
            .map(|i| {
                format!(
                    "kubepods-besteffort-pod{i:08}_0000_0000_0000_000000000000.slice/cri-containerd-{}{i:04x}.scope",
                    &A[..60]
                )
            })
            .chain(["user.slice/session-1.scope".to_string(), format!("docker/{A}"), String::new()])
            .collect();
        // Twice over, so that hits, misses and replaced slots all answer.
        for _ in 0..2 {
            for p in &paths {
                // A fresh `Arc` each time (a path decoded again) and the same one.
                let shared: Arc<str> = p.as_str().into();
                assert_eq!(m.container(&shared), container_from_cgroup_path(p), "{p}");
                assert_eq!(m.container(&shared), container_from_cgroup_path(p), "{p}");
            }
        }
        let paths: Vec<Arc<str>> = paths.iter().map(|p| p.as_str().into()).collect();
        assert!(m.container(&paths[0]).is_some_and(|c| c.pod_uid.is_some()));
        // 49 container paths hashed over 16 slots: most in use, never more;
        // hits and replacements do not count again.
        let filled = m.len();
        assert!((SLOTS / 2..=SLOTS).contains(&filled), "{filled}");
        for p in &paths {
            m.container(p);
        }
        assert_eq!(m.len(), filled);
        assert_eq!(m.container(&"user.slice/session-1.scope".into()), None);
    }
}
