//! The one `/proc` scanner: which containers have processes right now (with
//! one live pid each, to read a container's mounts through), and which mount
//! namespaces are in use. The container registry takes a snapshot every few
//! seconds; the sensor seeds and prunes its namespace tables from one.

use std::collections::HashMap;

/// What one pass over `/proc` saw.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Container id -> one live pid of it.
    pub containers: HashMap<String, u32>,
    /// Mount namespace inode -> a `/proc/<pid>/ns/mnt` link to open it by
    /// (only when asked for: it costs one readlink per process).
    pub mntns: HashMap<u32, String>,
    /// Processes other than pid 1 whose mount namespace could not be read for lack
    /// of permission (an agent in a pod without CAP_SYS_PTRACE; only when asked for).
    pub mntns_denied: usize,
}

/// Mount namespace inode number behind a `/proc/<pid>/ns/mnt` link.
pub fn mntns_of(link: &str) -> Option<u32> {
    let target = std::fs::read_link(link).ok()?;
    let s = target.to_str()?;
    s.strip_prefix("mnt:[")?.strip_suffix(']')?.parse().ok()
}

/// The pids in `/proc`.
fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
}

/// The container `pid` runs in, from its cgroup.
pub fn container_of(pid: u32) -> Option<String> {
    // Bytes, not `read_to_string`: a cgroup name that is not UTF-8 (a process
    // may create one below its container's) must not hide the container.
    let text = crate::escape::lossless_vec(std::fs::read(format!("/proc/{pid}/cgroup")).ok()?).0;
    crate::enrich::cgroup::container_from_proc_cgroup(&text).map(|c| c.id.to_string())
}

/// Scans `/proc`; `with_mntns` also reads every process's mount namespace.
pub fn scan(with_mntns: bool) -> Snapshot {
    let mut snap = Snapshot::default();
    for pid in pids() {
        if let Some(id) = container_of(pid) {
            snap.containers.entry(id).or_insert(pid);
        }
        if with_mntns {
            let link = format!("/proc/{pid}/ns/mnt");
            if let Some(ns) = mntns_of(&link) {
                snap.mntns.entry(ns).or_insert(link);
            } else if pid != 1
                && std::fs::read_link(&link).is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
            {
                snap.mntns_denied += 1;
            }
        }
    }
    snap
}

/// Field `n` (1-based, `n >= 3`) of `/proc/<pid>/stat`.
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // After the comm's closing parenthesis (a comm may hold any byte): field 3 on.
    let rest = &stat[stat.iter().rposition(|&b| b == b')')? + 1..];
    std::str::from_utf8(rest).ok()?.split_whitespace().nth(n - 3).map(str::to_string)
}

/// The start time of `pid` (clock ticks after boot, field 22 of its stat).
fn start_time(pid: u32) -> Option<u64> {
    stat_field(pid, 22)?.parse().ok()
}

/// Mount namespace inode -> its oldest live process (the container's main
/// process: runc's init creates the namespace and outlives nothing in it).
/// One pass over `/proc`, at startup.
pub fn oldest_by_mntns() -> HashMap<u32, u32> {
    let mut oldest: HashMap<u32, (u64, u32)> = HashMap::new();
    for pid in pids() {
        let (Some(ns), Some(t)) = (mntns_of(&format!("/proc/{pid}/ns/mnt")), start_time(pid)) else { continue };
        let e = oldest.entry(ns).or_insert((t, pid));
        if (t, pid) < *e {
            *e = (t, pid);
        }
    }
    oldest.into_iter().map(|(ns, (_, pid))| (ns, pid)).collect()
}

/// One live pid of `container_id`: the scan, stopped at the first match
/// (for a container the periodic scan has not seen yet). In pid order, so
/// usually its oldest process, the one that lives as long as it does.
pub fn live_pid_of(container_id: &str) -> Option<u32> {
    pids().find(|&pid| runs_in(pid, container_id))
}

/// Whether `pid` runs (see [`runs`]) in container `container_id`.
pub fn runs_in(pid: u32, container_id: &str) -> bool {
    pid != 0 && container_of(pid).is_some_and(|id| id == container_id) && runs(pid)
}

/// Whether `pid` exists and is not a zombie: a zombie still shows its
/// cgroup in `/proc` but has no namespaces or mounts left to act on.
pub fn runs(pid: u32) -> bool {
    // Field 3, the state.
    stat_field(pid, 3).is_some_and(|s| !matches!(s.as_str(), "Z" | "X" | "x"))
}

/// A child that has exited and is not reaped: a zombie (the caller reaps it).
#[cfg(test)]
pub fn spawn_zombie() -> std::process::Child {
    let child = std::process::Command::new("/bin/true").spawn().expect("spawn /bin/true");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while runs(child.id()) {
        assert!(std::time::Instant::now() < deadline, "pid {} never exited", child.id());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child
}

/// The executable of `pid` as its own mount namespace names it (None when
/// the process is gone or unreadable).
pub fn exe_path(pid: u32) -> Option<String> {
    if pid == 0 {
        return None;
    }
    let p = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let s = p.to_string_lossy();
    Some(s.strip_suffix(" (deleted)").unwrap_or(&s).to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sees_our_own_mount_namespace() {
        let me = super::mntns_of("/proc/self/ns/mnt").expect("own mntns");
        assert!(super::scan(true).mntns.contains_key(&me));
        assert!(super::scan(false).mntns.is_empty());
        assert!(super::mntns_of("/nonexistent").is_none());
        // This test's process is younger than pid 1 of its namespace's oldest.
        let oldest = super::oldest_by_mntns()[&me];
        assert!(super::start_time(oldest) <= super::start_time(std::process::id()));
    }

    #[test]
    fn a_zombie_does_not_run() {
        assert!(super::runs(std::process::id()));
        assert!(!super::runs(0) && !super::runs(u32::MAX));
        let mut child = super::spawn_zombie();
        let pid = child.id();
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("a zombie keeps its /proc entry");
        assert!(state.contains(") Z "), "{state}");
        // Its cgroup is still shown: only `runs` tells it from a live process.
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("a zombie's cgroup");
        assert!(cgroup.contains("0::"), "{cgroup}");
        child.wait().expect("reap");
    }
}
