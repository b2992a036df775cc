//! Learned network baselines, per workload: during a learning window after a
//! workload is first seen, the endpoints its programs open are recorded as
//! expected; after it, an endpoint not in the baseline is network drift.
//! Baselines survive restarts (a JSON file in the state directory, written
//! atomically) and are bounded (endpoints per workload, workloads per node).

use crate::event::{NetOp, Transport};
use serde::{Deserialize, Serialize};
use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

/// One expected endpoint. Listeners are keyed by port only (any local
/// address); destinations by address and port. The program is part of the
/// key: a port learned for nginx is not expected from a new `nc`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Endpoint {
    pub listen: bool,
    pub transport: Transport,
    pub addr: Option<IpAddr>,
    pub port: u16,
    /// The task name (15 bytes at most: inline, no heap allocation per event
    /// judged).
    pub program: crate::event::Text,
}

impl Endpoint {
    pub fn new(op: NetOp, transport: Transport, addr: IpAddr, port: u16, program: &str) -> Self {
        let listen = !matches!(op, NetOp::Connect);
        Self { listen, transport, addr: (!listen).then_some(addr), port, program: program.into() }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Workload {
    /// Unix seconds when the workload was first seen.
    first_seen: u64,
    endpoints: BTreeSet<Endpoint>,
    /// The learning window ended early because the baseline was full.
    full: bool,
}

/// What an endpoint is to its workload's baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Inside the learning window: recorded as expected.
    Learned,
    /// In the baseline.
    Expected,
    /// Not in the baseline, after the learning window: drift.
    New,
}

#[derive(Debug, Serialize, Deserialize)]
struct File {
    version: u32,
    workloads: HashMap<String, Workload>,
}

pub struct Baselines {
    path: Option<PathBuf>,
    window: Duration,
    max_endpoints: usize,
    max_workloads: usize,
    workloads: HashMap<String, Workload>,
    dirty: bool,
}

/// A baseline file that could not be read or written.
pub type BaselineError = crate::state::StateError;

/// The baselines' file, for messages and metric labels.
pub const STATE: crate::state::Kind =
    crate::state::Kind { what: "baseline", corrupt: "baseline_corrupt", io: "baseline_io" };

const FILE_NAME: &str = "network-baselines.json";

impl Baselines {
    /// Loads `dir/network-baselines.json` (None: in memory only). A missing
    /// file is an empty baseline; a corrupt one is set aside, reported, and
    /// replaced by an empty baseline: the agent keeps running.
    pub fn load(
        dir: Option<&Path>,
        window: Duration,
        max_endpoints: usize,
        max_workloads: usize,
    ) -> (Self, Option<BaselineError>) {
        let path = dir.map(|d| d.join(FILE_NAME));
        let mut me =
            Self { path: path.clone(), window, max_endpoints, max_workloads, workloads: HashMap::new(), dirty: false };
        let Some(path) = path else { return (me, None) };
        match crate::state::load::<File>(STATE, &path, 1) {
            Ok(Some(f)) => {
                me.workloads = f.workloads;
                (me, None)
            }
            Ok(None) => (me, None),
            Err(e) => (me, Some(e)),
        }
    }

    /// Judges an endpoint of workload `key` at unix time `now`, learning it
    /// inside the window.
    pub fn observe(&mut self, key: &str, ep: Endpoint, now: u64) -> Verdict {
        self.judge(key, ep, now, true)
    }

    /// Judges an endpoint; `learn: false` (an exec session's) never enters
    /// the baseline: outside it, the endpoint is new even inside the window.
    pub fn judge(&mut self, key: &str, ep: Endpoint, now: u64, learn: bool) -> Verdict {
        if !self.workloads.contains_key(key) {
            if self.workloads.len() >= self.max_workloads {
                // Bounded: a node never holds more workloads than this. The
                // oldest baseline makes room.
                if let Some(oldest) = self.workloads.iter().min_by_key(|(_, w)| w.first_seen).map(|(k, _)| k.clone()) {
                    self.workloads.remove(&oldest);
                }
            }
            self.workloads.insert(key.to_string(), Workload { first_seen: now, ..Default::default() });
            self.dirty = true;
        }
        let Some(w) = self.workloads.get_mut(key) else { return Verdict::New };
        if w.endpoints.contains(&ep) {
            return Verdict::Expected;
        }
        // What someone ran by hand in an exec session is not the workload's
        // normal: it is judged, never learned.
        if !learn {
            return Verdict::New;
        }
        let learning = !w.full && now.saturating_sub(w.first_seen) < self.window.as_secs();
        if !learning {
            return Verdict::New;
        }
        if w.endpoints.len() >= self.max_endpoints {
            w.full = true;
            self.dirty = true;
            return Verdict::New;
        }
        w.endpoints.insert(ep);
        self.dirty = true;
        Verdict::Learned
    }

    /// Writes the file if anything changed (temp file + rename: a crash never
    /// leaves half a baseline).
    pub fn save(&mut self) -> Result<(), BaselineError> {
        let Some(path) = &self.path else { return Ok(()) };
        if !self.dirty {
            return Ok(());
        }
        crate::state::save(STATE, path, &File { version: 1, workloads: self.workloads.clone() })?;
        self.dirty = false;
        Ok(())
    }

    pub fn workloads(&self) -> usize {
        self.workloads.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(port: u16, program: &str) -> Endpoint {
        Endpoint::new(NetOp::Listen, Transport::Tcp, "0.0.0.0".parse().unwrap(), port, program)
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dw-baseline-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn learning_window_then_drift() {
        let (mut b, err) = Baselines::load(None, Duration::from_secs(60), 16, 16);
        assert!(err.is_none());
        assert_eq!(b.observe("shop/api", ep(8080, "nginx"), 1000), Verdict::Learned);
        assert_eq!(b.observe("shop/api", ep(8080, "nginx"), 1030), Verdict::Expected);
        assert_eq!(b.observe("shop/api", ep(8080, "nginx"), 5000), Verdict::Expected);
        // After the window: a new port, or the same port by a new program.
        assert_eq!(b.observe("shop/api", ep(9090, "nginx"), 1061), Verdict::New);
        assert_eq!(b.observe("shop/api", ep(8080, "nc"), 1061), Verdict::New);
        // Another workload learns on its own clock.
        assert_eq!(b.observe("shop/web", ep(9090, "nginx"), 1061), Verdict::Learned);
        // Destinations are keyed by address too.
        let d = |a: &str| Endpoint::new(NetOp::Connect, Transport::Tcp, a.parse().unwrap(), 443, "curl");
        assert_eq!(b.observe("shop/web", d("10.0.0.1"), 1062), Verdict::Learned);
        assert_eq!(b.observe("shop/web", d("10.0.0.2"), 2000), Verdict::New);
    }

    #[test]
    fn exec_sessions_are_never_learned() {
        let (mut b, _) = Baselines::load(None, Duration::from_secs(60), 16, 16);
        // Inside the window: new to the baseline, and still new later.
        assert_eq!(b.judge("w", ep(9999, "nc"), 1000, false), Verdict::New);
        assert_eq!(b.judge("w", ep(9999, "nc"), 1001, false), Verdict::New);
        assert_eq!(b.observe("w", ep(9999, "nc"), 1002), Verdict::Learned, "the container's own learns it");
        // What the container learned is expected from an exec session too.
        assert_eq!(b.judge("w", ep(9999, "nc"), 1003, false), Verdict::Expected);
        assert_eq!(b.judge("w", ep(8080, "nc"), 1003, false), Verdict::New);
        // An exec session starts the workload's clock like anything else.
        assert_eq!(b.judge("x", ep(1, "a"), 1000, false), Verdict::New);
        assert_eq!(b.observe("x", ep(1, "a"), 1061), Verdict::New, "window over");
    }

    #[test]
    fn zero_window_learns_nothing() {
        let (mut b, _) = Baselines::load(None, Duration::ZERO, 16, 16);
        assert_eq!(b.observe("w", ep(1, "a"), 10), Verdict::New);
        assert_eq!(b.observe("w", ep(1, "a"), 10), Verdict::New);
    }

    #[test]
    fn bounded() {
        let (mut b, _) = Baselines::load(None, Duration::from_secs(60), 2, 2);
        assert_eq!(b.observe("w", ep(1, "a"), 0), Verdict::Learned);
        assert_eq!(b.observe("w", ep(2, "a"), 0), Verdict::Learned);
        assert_eq!(b.observe("w", ep(3, "a"), 0), Verdict::New, "full: stops learning");
        assert_eq!(b.observe("w", ep(4, "a"), 1), Verdict::New);
        b.observe("x", ep(1, "a"), 5);
        b.observe("y", ep(1, "a"), 6);
        assert_eq!(b.workloads(), 2, "oldest workload evicted");
    }

    #[test]
    fn survives_restart() {
        let d = dir("restart");
        let (mut b, _) = Baselines::load(Some(&d), Duration::from_secs(60), 16, 16);
        b.observe("w", ep(8080, "nginx"), 100);
        b.save().unwrap();
        let (mut b2, err) = Baselines::load(Some(&d), Duration::from_secs(60), 16, 16);
        assert!(err.is_none());
        assert_eq!(b2.observe("w", ep(8080, "nginx"), 10_000), Verdict::Expected);
        assert_eq!(b2.observe("w", ep(9090, "nginx"), 10_000), Verdict::New, "window did not restart");
    }

    #[test]
    fn corrupt_file_is_reported_set_aside_and_replaced() {
        let d = dir("corrupt");
        std::fs::write(d.join(FILE_NAME), b"{ not json").unwrap();
        let (mut b, err) = Baselines::load(Some(&d), Duration::from_secs(60), 16, 16);
        let err = err.expect("corrupt file reported");
        assert_eq!(err.reason(), "baseline_corrupt");
        let msg = err.to_string();
        assert!(msg.contains(FILE_NAME) && msg.contains("empty baseline"), "{msg}");
        assert!(d.join("network-baselines.json.corrupt").exists());
        assert_eq!(b.observe("w", ep(1, "a"), 0), Verdict::Learned, "fresh baseline works");
        b.save().unwrap();
        let (_, err) = Baselines::load(Some(&d), Duration::from_secs(60), 16, 16);
        assert!(err.is_none());
        std::fs::write(d.join(FILE_NAME), br#"{"version":7,"workloads":{}}"#).unwrap();
        let (_, err) = Baselines::load(Some(&d), Duration::from_secs(60), 16, 16);
        assert!(err.unwrap().to_string().contains("unsupported version 7"));
    }
}
