//! Volumes the kubelet writes atomically (Secret, ConfigMap, projected,
//! downward API): recognised by their layout, not by where the kubelet root
//! is, and read as a snapshot of file hashes.
//!
//! The kubelet's atomic writer keeps the payload in a timestamped directory
//! (`..2026_12_02_08_05_46.123456789/`), points the `..data` symlink at it and
//! exposes every top-level entry as a symlink through `..data`. An update writes
//! a new timestamped directory, renames a fresh symlink over `..data` (the
//! swap), then removes the old directory. So a changed `..data` target is the
//! one signal of an update, and the payload is read through the resolved
//! directory name (never through `..data`, which may move under the walk).

use std::{
    collections::BTreeMap,
    io::{self, Read},
    path::{Path, PathBuf},
};

/// The link the atomic writer swaps.
pub const DATA_LINK: &str = "..data";
/// Files hashed per volume at most: a Secret or ConfigMap holds at most 1 MiB,
/// projected volumes a handful of sources.
pub const MAX_FILES: usize = 256;
/// Bytes hashed per volume at most (more is marked `truncated`).
pub const MAX_BYTES: u64 = 8 << 20;
/// Directory depth walked below the payload root.
const MAX_DEPTH: usize = 8;

/// The kind of a volume, from the kubelet's plugin directory name
/// (`.../volumes/kubernetes.io~secret/<name>`); `unknown` elsewhere.
pub fn kind_of(host_path: &Path) -> &'static str {
    let plugin = host_path.parent().and_then(Path::file_name).and_then(|n| n.to_str()).unwrap_or("");
    match plugin {
        "kubernetes.io~secret" => "secret",
        "kubernetes.io~configmap" => "configmap",
        "kubernetes.io~projected" => "projected",
        "kubernetes.io~downward-api" => "downward-api",
        _ => "unknown",
    }
}

/// The volume's name: its directory's name (the pod spec's volume name).
pub fn name_of(host_path: &Path) -> String {
    host_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// One reading of an atomic-writer volume.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The `..data` target: the timestamped payload directory's name.
    pub payload: String,
    /// Relative file path -> sha256 (lower-case hex) of its content.
    pub files: BTreeMap<String, String>,
    /// More than [`MAX_FILES`] files or [`MAX_BYTES`] bytes: the rest was not hashed.
    pub truncated: bool,
}

/// Why a volume could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading atomic-writer volume {path}: {source}")]
pub struct ReadError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// The current `..data` target of `dir`; `None` when `dir` is not laid out
/// by an atomic writer (no `..data` symlink to a `..`-named sibling).
pub fn payload_of(dir: &Path) -> Option<String> {
    let target = std::fs::read_link(dir.join(DATA_LINK)).ok()?;
    let t = target.to_str()?;
    (t.starts_with("..") && t != ".." && !t.contains('/')).then(|| t.to_owned())
}

/// Reads `dir` if it is an atomic-writer volume; `Ok(None)` if it is not.
/// A swap during the read is retried once from the new payload.
pub fn snapshot(dir: &Path) -> Result<Option<Snapshot>, ReadError> {
    let mut last = None;
    for _ in 0..2 {
        let Some(payload) = payload_of(dir) else { return Ok(None) };
        let root = dir.join(&payload);
        let mut snap = Snapshot { payload, ..Default::default() };
        let mut budget = MAX_BYTES;
        match walk(&root, &root, 0, &mut snap, &mut budget) {
            Ok(()) => return Ok(Some(snap)),
            // The old payload was removed under us: read the new one.
            Err(e) => last = Some(ReadError { path: root, source: e }),
        }
    }
    Err(last.unwrap_or_else(|| ReadError { path: dir.to_path_buf(), source: io::ErrorKind::NotFound.into() }))
}

fn walk(root: &Path, dir: &Path, depth: usize, snap: &mut Snapshot, budget: &mut u64) -> io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let ty = e.file_type()?;
        let path = e.path();
        if ty.is_dir() && depth < MAX_DEPTH {
            walk(root, &path, depth + 1, snap, budget)?;
        } else if ty.is_file() {
            if snap.files.len() >= MAX_FILES {
                snap.truncated = true;
                return Ok(());
            }
            let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
            match sha256_file(&path, budget)? {
                Some(h) => {
                    snap.files.insert(rel, h);
                }
                None => snap.truncated = true,
            }
        }
    }
    Ok(())
}

/// sha256 of a file, spending `budget`; `None` when the budget ran out.
fn sha256_file(path: &Path, budget: &mut u64) -> io::Result<Option<String>> {
    let mut f = std::fs::File::open(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n as u64 > *budget {
            *budget = 0;
            return Ok(None);
        }
        *budget -= n as u64;
        ctx.update(&buf[..n]);
    }
    Ok(Some(hex(ctx.finish().as_ref())))
}

fn hex(d: &[u8]) -> String {
    use std::fmt::Write;
    d.iter().fold(String::with_capacity(d.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Files added, removed and changed from `before` to `after`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl Changes {
    pub fn between(before: &Snapshot, after: &Snapshot) -> Changes {
        let mut c = Changes::default();
        for (k, v) in &after.files {
            match before.files.get(k) {
                None => c.added.push(k.clone()),
                Some(old) if old != v => c.changed.push(k.clone()),
                Some(_) => {}
            }
        }
        c.removed = before.files.keys().filter(|k| !after.files.contains_key(*k)).cloned().collect();
        c
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// A host path as this agent can open it: directly in the host's mount
/// namespace, else through the host's root (/proc/1/root, with hostPID).
pub fn reachable(p: &Path) -> PathBuf {
    if p.exists() {
        return p.to_path_buf();
    }
    Path::new("/proc/1/root").join(p.strip_prefix("/").unwrap_or(p))
}

#[cfg(test)]
pub mod testing {
    //! Lays a directory out exactly as the kubelet's atomic writer does.
    use std::{os::unix::fs::symlink, path::Path};

    /// Writes `files` as payload `stamp` of `dir` and swaps `..data` to it
    /// (symlink to a temporary name, then rename over `..data`), links the
    /// top-level names through `..data`, and removes the previous payload.
    pub fn write(dir: &Path, stamp: &str, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        let old = super::payload_of(dir);
        let payload = dir.join(stamp);
        for (name, content) in files {
            let p = payload.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        let tmp = dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        symlink(stamp, &tmp).unwrap();
        std::fs::rename(&tmp, dir.join(super::DATA_LINK)).unwrap();
        for (name, _) in files {
            let top = name.split('/').next().unwrap();
            let link = dir.join(top);
            if link.symlink_metadata().is_err() {
                symlink(format!("{}/{top}", super::DATA_LINK), link).unwrap();
            }
        }
        if let Some(old) = old {
            std::fs::remove_dir_all(dir.join(old)).unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dw-atomic-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn kinds_and_names_from_the_kubelet_path() {
        let p = Path::new("/var/lib/kubelet/pods/u/volumes/kubernetes.io~secret/db-creds");
        assert_eq!((kind_of(p), name_of(p).as_str()), ("secret", "db-creds"));
        let p = Path::new("/data/kubelet/pods/u/volumes/kubernetes.io~configmap/app");
        assert_eq!(kind_of(p), "configmap");
        assert_eq!(kind_of(Path::new("/x/kubernetes.io~projected/kube-api-access-1")), "projected");
        assert_eq!(kind_of(Path::new("/x/kubernetes.io~downward-api/info")), "downward-api");
        assert_eq!(kind_of(Path::new("/srv/config")), "unknown");
    }

    #[test]
    fn a_plain_directory_is_not_an_atomic_volume() {
        let d = tmp("plain");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("a"), "x").unwrap();
        assert!(snapshot(&d).unwrap().is_none());
        // A `..data` pointing out of the volume is not the writer's layout.
        std::os::unix::fs::symlink("/etc", d.join(DATA_LINK)).unwrap();
        assert!(snapshot(&d).unwrap().is_none());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn swap_changes_are_named_with_hashes() {
        let d = tmp("swap");
        testing::write(&d, "..2026_01_01_00_00_00.1", &[("user", "app"), ("password", "one"), ("tls/ca.crt", "ca")]);
        let a = snapshot(&d).unwrap().unwrap();
        assert_eq!(a.payload, "..2026_01_01_00_00_00.1");
        assert_eq!(a.files.keys().collect::<Vec<_>>(), ["password", "tls/ca.crt", "user"]);
        assert_eq!(a.files["user"], hex(ring::digest::digest(&ring::digest::SHA256, b"app").as_ref()));
        testing::write(&d, "..2026_01_01_00_00_01.2", &[("user", "app"), ("password", "two"), ("token", "t")]);
        let b = snapshot(&d).unwrap().unwrap();
        assert_ne!(a.payload, b.payload);
        assert!(!d.join("..2026_01_01_00_00_00.1").exists(), "old payload removed like the kubelet does");
        let c = Changes::between(&a, &b);
        assert_eq!(c.added, ["token"]);
        assert_eq!(c.removed, ["tls/ca.crt"]);
        assert_eq!(c.changed, ["password"]);
        assert!(Changes::between(&b, &b).is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn hashing_is_bounded() {
        let d = tmp("bounded");
        let names: Vec<String> = (0..MAX_FILES + 3).map(|i| format!("f{i:04}")).collect();
        let files: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "x")).collect();
        testing::write(&d, "..2026_01_01_00_00_00.1", &files);
        let s = snapshot(&d).unwrap().unwrap();
        assert_eq!(s.files.len(), MAX_FILES);
        assert!(s.truncated);
        let _ = std::fs::remove_dir_all(&d);
    }
}
