//! A finding's `message`, written into a reused buffer: the message is the
//! one text of a finding made from scratch (the rest is moved from the event
//! or shared with the container's other findings), and a fresh `String` for
//! it was a heap allocation and a free per finding. A finding leaves the
//! pipeline on the thread that made it (the events thread writes stdout
//! itself), so its buffer goes back to that thread's few spare ones when the
//! finding is dropped and the next message is written into it.

use std::{
    cell::RefCell,
    fmt,
    ops::{Deref, DerefMut},
};

/// Spare buffers a thread keeps: a look of a storm holds a few dozen
/// findings at once; beyond it buffers are freed.
const SPARE: usize = 64;

/// A buffer that grew past this (a long package command line) is freed, not
/// kept: the spares stay small.
const KEEP_UP_TO: usize = 1024;

thread_local! {
    static SPARES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// The text of a finding's message; derefs to its `String`.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct Message(String);

impl Message {
    /// An empty message, in one of this thread's spare buffers when it has one.
    pub fn new() -> Self {
        let spare = SPARES.try_with(|s| s.try_borrow_mut().ok()?.pop()).ok().flatten();
        Self(spare.unwrap_or_default())
    }

    /// `parts` one after the other (without `format!`'s machinery).
    pub fn concat(parts: &[&str]) -> Self {
        let mut m = Self::new();
        m.0.reserve(parts.iter().map(|p| p.len()).sum());
        parts.iter().for_each(|p| m.0.push_str(p));
        m
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        let mut s = std::mem::take(&mut self.0);
        if s.capacity() == 0 || s.capacity() > KEEP_UP_TO {
            return;
        }
        s.clear();
        // A thread being torn down has no spares left to keep it in: freed.
        let _ = SPARES.try_with(|spares| {
            if let Ok(mut spares) = spares.try_borrow_mut()
                && spares.len() < SPARE
            {
                spares.push(s);
            }
        });
    }
}

impl Deref for Message {
    type Target = String;
    fn deref(&self) -> &String {
        &self.0
    }
}

impl DerefMut for Message {
    fn deref_mut(&mut self) -> &mut String {
        &mut self.0
    }
}

impl fmt::Write for Message {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.push_str(s);
        Ok(())
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Self {
        Self::concat(&[s])
    }
}

impl PartialEq<str> for Message {
    fn eq(&self, o: &str) -> bool {
        self.0 == o
    }
}

impl PartialEq<&str> for Message {
    fn eq(&self, o: &&str) -> bool {
        self.0 == *o
    }
}

impl serde::Serialize for Message {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spare buffers of this test's thread (each test runs on its own).
    fn spares() -> Vec<*const u8> {
        SPARES.with(|s| s.borrow().iter().map(|b| b.as_ptr()).collect())
    }

    #[test]
    fn a_dropped_message_lends_its_buffer_to_the_next_one_on_the_thread() {
        let first = Message::concat(&["a shell (sh) started in container ", "0123456789ab"]);
        assert_eq!(first, "a shell (sh) started in container 0123456789ab");
        let buf = first.as_ptr();
        drop(first);
        assert_eq!(spares(), vec![buf], "kept, emptied");
        let next = Message::concat(&["container ", "x"]);
        assert_eq!((next.as_ptr(), next.as_str()), (buf, "container x"), "the same buffer, new text");
        assert!(spares().is_empty());
    }

    #[test]
    fn spares_are_bounded_in_number_and_size() {
        let many: Vec<Message> = (0..SPARE + 10).map(|i| Message::from(format!("m{i}"))).collect();
        drop(many);
        assert_eq!(spares().len(), SPARE, "at most SPARE kept");
        let big = Message::from("x".repeat(KEEP_UP_TO + 1));
        drop(big);
        assert_eq!(spares().len(), SPARE);
        SPARES.with(|s| s.borrow_mut().clear());
        drop(Message::from("y".repeat(KEEP_UP_TO + 1)));
        assert!(spares().is_empty(), "a grown buffer is freed");
        drop(Message::default());
        assert!(spares().is_empty(), "nothing to keep of an empty one");
    }

    #[test]
    fn a_message_dropped_on_another_thread_stays_there() {
        let m = Message::from("moved");
        std::thread::spawn(move || drop(m)).join().unwrap();
        assert!(spares().is_empty());
    }
}
