//! Container ids and pod uids held inline. One of each is made for every
//! kernel event from a container (from its cgroup path) and for every
//! finding's ordering ticket; as `String`s they were four heap allocations a
//! finding and two an event that is none.

use std::{borrow::Borrow, fmt, hash, ops::Deref};

/// Text of at most [`Id::MAX`] bytes: a container id (64 hex characters in
/// every runtime driftwatch knows) or a pod uid (36). Compares, hashes and
/// borrows as the `str` it holds, so maps keyed by it are looked up by `&str`.
#[derive(Clone, Copy)]
pub struct Id {
    len: u8,
    buf: [u8; Id::MAX],
}

impl Id {
    pub const MAX: usize = 64;

    /// `s`, or `None` when it is longer than [`Id::MAX`] bytes.
    pub fn new(s: &str) -> Option<Self> {
        let mut id = Self { len: 0, buf: [0; Self::MAX] };
        id.buf.get_mut(..s.len())?.copy_from_slice(s.as_bytes());
        id.len = s.len() as u8;
        Some(id)
    }

    /// `s` cut to its first [`Id::MAX`] bytes (at a character boundary): a
    /// key for what only needs to tell ids apart, never shown. No runtime
    /// makes longer ids; one that did would share its key with ids of the
    /// same 64-byte prefix.
    pub fn key(s: &str) -> Self {
        Self::new(crate::escape::cut(s, Self::MAX)).expect("cut to MAX bytes")
    }

    /// `s` with every `from` byte replaced by `to` (both ASCII), e.g. a
    /// systemd slice's pod uid with `_` for `-`.
    pub fn replaced(s: &str, from: u8, to: u8) -> Option<Self> {
        debug_assert!(from.is_ascii() && to.is_ascii());
        let mut id = Self::new(s)?;
        id.buf[..s.len()].iter_mut().filter(|b| **b == from).for_each(|b| *b = to);
        Some(id)
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: `buf[..len]` is a copy of a `str` (`new`), at most with one
        // ASCII byte replaced by another (`replaced`): still UTF-8.
        unsafe { std::str::from_utf8_unchecked(&self.buf[..self.len as usize]) }
    }
}

impl Deref for Id {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Id {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Id {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Id {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Id {}

impl PartialEq<str> for Id {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Id {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Id {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl hash::Hash for Id {
    // As the `str`: required by `Borrow<str>`.
    fn hash<H: hash::Hasher>(&self, h: &mut H) {
        self.as_str().hash(h)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// As the `str` (a finding's `container.id`).
impl serde::Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// For tests and literals: an id longer than [`Id::MAX`] is a bug at the call site.
impl From<&str> for Id {
    fn from(s: &str) -> Self {
        Self::new(s).unwrap_or_else(|| panic!("an id is at most {} bytes: {s:?}", Self::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, hash_map::DefaultHasher};
    use std::hash::{Hash, Hasher};

    fn h<T: Hash + ?Sized>(v: &T) -> u64 {
        let mut s = DefaultHasher::new();
        v.hash(&mut s);
        s.finish()
    }

    #[test]
    fn holds_up_to_64_bytes_and_behaves_as_its_str() {
        let full = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
        let id = Id::new(full).unwrap();
        assert_eq!((id.as_str(), id.len(), &id[..12]), (full, 64, "0f1e2d3c4b5a"));
        assert_eq!(h(&id), h(full), "hashes as its str (Borrow<str>)");
        assert!(Id::new(&format!("{full}0")).is_none());
        assert_eq!(Id::new("").unwrap().as_str(), "");
        assert_ne!(Id::from("ab"), Id::from("abc"), "the length counts, not the zero fill");
        let m: HashMap<Id, u8> = [(id, 1)].into();
        assert_eq!(m.get(full), Some(&1), "looked up by &str");
        assert_eq!(format!("{id} {:?}", Id::from("a\"b")), format!("{full} \"a\\\"b\""));
    }

    #[test]
    fn replaced_and_key() {
        let uid = Id::replaced("5f0c1a2b_3c4d_4e5f_8a9b_0c1d2e3f4a5b", b'_', b'-').unwrap();
        assert_eq!(uid, "5f0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b");
        let long = "é".repeat(40); // 80 bytes
        let k = Id::key(&long);
        assert_eq!(k.as_str(), "é".repeat(32), "cut at a character boundary");
        assert_eq!(Id::key("short").as_str(), "short");
    }
}
