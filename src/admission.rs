//! Connections a listener holds at once, in total and per peer: the metrics
//! and health listeners and the admin API admit through the same book.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The peer already holds its share (told so whether or not the listener is full).
    PeerLimit,
    /// The listener holds all the connections it may.
    Full,
}

/// The book of held connections.
#[derive(Debug)]
pub struct Admission {
    max_connections: usize,
    max_per_peer: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_peer: HashMap<IpAddr, usize>,
}

/// An admitted connection's place, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    peer: Option<IpAddr>,
}

impl Admission {
    pub fn new(max_connections: usize, max_per_peer: usize) -> Arc<Self> {
        Arc::new(Self { max_connections, max_per_peer, held: Mutex::new(Held::default()) })
    }

    /// A slot for one more connection. `peer` is None where every peer is
    /// the same principal (a Unix socket's root): only the total counts.
    pub fn admit(self: &Arc<Self>, peer: Option<IpAddr>) -> Result<Slot, Refusal> {
        let mut held = crate::locks::lock(&self.held);
        if let Some(p) = peer
            && held.by_peer.get(&p).is_some_and(|&n| n >= self.max_per_peer)
        {
            return Err(Refusal::PeerLimit);
        }
        if held.total >= self.max_connections {
            return Err(Refusal::Full);
        }
        held.total += 1;
        if let Some(p) = peer {
            *held.by_peer.entry(p).or_default() += 1;
        }
        Ok(Slot { admission: self.clone(), peer })
    }

    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let held = crate::locks::lock(&self.held);
        (held.total, held.by_peer.len())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = crate::locks::lock(&self.admission.held);
        held.total -= 1;
        if let Some(p) = self.peer
            && let Some(n) = held.by_peer.get_mut(&p)
        {
            *n -= 1;
            if *n == 0 {
                held.by_peer.remove(&p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_peer_then_total_and_slots_come_back() {
        let a = Admission::new(3, 2);
        let (p1, p2, p3): (IpAddr, IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap());
        let s1 = a.admit(Some(p1)).unwrap();
        let s2 = a.admit(Some(p1)).unwrap();
        assert_eq!(a.admit(Some(p1)).unwrap_err(), Refusal::PeerLimit);
        let s3 = a.admit(Some(p2)).unwrap();
        assert_eq!(a.admit(Some(p2)).unwrap_err(), Refusal::Full);
        assert_eq!(a.admit(None).unwrap_err(), Refusal::Full);
        assert_eq!(a.admit(Some(p1)).unwrap_err(), Refusal::PeerLimit, "a peer at its share is told so, full or not");
        drop(s1);
        let s4 = a.admit(Some(p3)).unwrap();
        assert_eq!(a.held(), (3, 3));
        drop((s2, s3, s4));
        assert_eq!(a.held(), (0, 0));
        let u = a.admit(None).unwrap();
        assert_eq!(a.held(), (1, 0), "a Unix peer counts in the total only");
        drop(u);
        assert_eq!(a.held(), (0, 0));
    }
}
