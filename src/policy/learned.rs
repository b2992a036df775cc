//! What learn mode saw, per workload: the signatures of the findings its
//! containers would have produced (rule + executable, file or endpoint).
//! Later, in monitor or protect mode, a finding whose signature was learned
//! for its workload is approved as `learned`. Bounded: a full workload stops
//! learning (counted by the caller), the number of workloads is capped.

use super::Subject;
use crate::locks::lock;
use serde::{Deserialize, Serialize};
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

/// Most signatures kept per workload.
pub const MAX_PER_WORKLOAD: usize = 2048;
/// Most workloads kept.
pub const MAX_WORKLOADS: usize = 4096;

/// What a finding is, without what varies between runs (pids, arguments).
pub fn signature(s: &Subject) -> String {
    let endpoint = s.endpoint.map(|(ip, port)| format!("{}:{port}", ip.map(|i| i.to_string()).unwrap_or_default()));
    format!(
        "{}|{}|{}|{}",
        s.rule,
        s.executable.unwrap_or_default(),
        s.file_paths.first().copied().unwrap_or_default(),
        endpoint.unwrap_or_default()
    )
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Store {
    workloads: BTreeMap<String, BTreeSet<String>>,
}

#[derive(Debug)]
pub struct Learned {
    store: Mutex<(Store, bool)>,
    path: Option<PathBuf>,
    /// Signatures kept, readable without the lock (every finding asks).
    total: AtomicUsize,
}

/// Result of [`Learned::learn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    New,
    Known,
    Full,
}

impl Learned {
    /// Loads `path` when it exists (None: memory only). A bad file is
    /// reported and ignored: learning starts over.
    pub fn open(path: Option<&Path>) -> (Learned, Option<String>) {
        let mut warning = None;
        let store = match path.map(std::fs::read) {
            Some(Ok(bytes)) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                warning = Some(format!("{}: {e}; learned baselines start empty", path.unwrap().display()));
                Store::default()
            }),
            Some(Err(e)) if e.kind() != std::io::ErrorKind::NotFound => {
                warning = Some(format!("{}: {e}; learned baselines start empty", path.unwrap().display()));
                Store::default()
            }
            _ => Store::default(),
        };
        let total = AtomicUsize::new(store.workloads.values().map(BTreeSet::len).sum());
        (Learned { store: Mutex::new((store, false)), path: path.map(Path::to_path_buf), total }, warning)
    }

    pub fn learn(&self, workload: &str, sig: String) -> Learn {
        let mut g = lock(&self.store);
        let (store, dirty) = &mut *g;
        if !store.workloads.contains_key(workload) && store.workloads.len() >= MAX_WORKLOADS {
            return Learn::Full;
        }
        let set = store.workloads.entry(workload.to_string()).or_default();
        if set.contains(&sig) {
            return Learn::Known;
        }
        if set.len() >= MAX_PER_WORKLOAD {
            return Learn::Full;
        }
        set.insert(sig);
        self.total.fetch_add(1, Ordering::Relaxed);
        *dirty = true;
        Learn::New
    }

    pub fn knows(&self, workload: &str, sig: &str) -> bool {
        lock(&self.store).0.workloads.get(workload).is_some_and(|s| s.contains(sig))
    }

    /// The signatures learned for one workload (protect mode puts the
    /// binary ones in the kernel).
    pub fn of(&self, workload: &str) -> Vec<String> {
        lock(&self.store).0.workloads.get(workload).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }

    /// Signatures learned, over all workloads.
    pub fn len(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the file when something changed (atomically: a temporary file
    /// named by pid, then a rename).
    pub fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let bytes = {
            let mut g = lock(&self.store);
            if !g.1 {
                return Ok(());
            }
            g.1 = false;
            serde_json::to_vec(&g.0).map_err(std::io::Error::other)?
        };
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_persists_and_bounds() {
        let dir = std::env::temp_dir().join(format!("dw-learned-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("learned.json");
        let (l, w) = Learned::open(Some(&path));
        assert!(w.is_none());
        let s = Subject { kind: "binary", rule: "exec_new_binary", executable: Some("/tmp/x"), ..Default::default() };
        assert_eq!(l.learn("ns/Deployment/a/c", signature(&s)), Learn::New);
        assert_eq!(l.learn("ns/Deployment/a/c", signature(&s)), Learn::Known);
        assert!(l.knows("ns/Deployment/a/c", &signature(&s)));
        assert!(!l.knows("ns/Deployment/b/c", &signature(&s)), "per workload");
        l.save().unwrap();
        let (again, _) = Learned::open(Some(&path));
        assert!(again.knows("ns/Deployment/a/c", &signature(&s)));
        for i in 0..MAX_PER_WORKLOAD {
            let _ = again.learn("w", format!("s{i}"));
        }
        assert_eq!(again.learn("w", "one-more".into()), Learn::Full);
        std::fs::write(&path, b"{not json").unwrap();
        let (bad, w) = Learned::open(Some(&path));
        assert!(bad.is_empty() && w.unwrap().contains("learned baselines start empty"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
