//! The one `/proc` scanner: which containers have processes right now (with
//! one live pid each, to read a container's mounts through), and which mount
//! namespaces are in use. The container registry takes a snapshot every few
//! seconds; the sensor seeds and prunes its namespace tables from one.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

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
    mntns_in(&std::fs::read_link(link).ok()?)
}

/// The inode number in a mount namespace link's target (`mnt:[4026531841]`).
fn mntns_in(target: &std::path::Path) -> Option<u32> {
    target.to_str()?.strip_prefix("mnt:[")?.strip_suffix(']')?.parse().ok()
}

/// The pids in `/proc`.
fn pids() -> impl Iterator<Item = u32> {
    proc_entries().map(|(pid, _)| pid)
}

/// The container `pid` runs in, from its cgroup.
pub fn container_of(pid: u32) -> Option<String> {
    // Bytes, not `read_to_string`: a cgroup name that is not UTF-8 (a process
    // may create one below its container's) must not hide the container.
    let text = crate::escape::lossless_vec(std::fs::read(format!("/proc/{pid}/cgroup")).ok()?).0;
    crate::enrich::cgroup::container_from_proc_cgroup(&text).map(|c| c.id.to_string())
}

/// Scans `/proc` once, reading every process; `with_mntns` also reads every
/// process's mount namespace. For a one-off answer; the registry's periodic
/// scan keeps a [`Scanner`].
pub fn scan(with_mntns: bool) -> Snapshot {
    Scanner::new(Duration::ZERO).scan(with_mntns, Instant::now())
}

/// Its `cache` label in `driftwatch_cache_entries`: the processes the
/// periodic scan knows (one per process on the node).
pub const CACHE: &str = "proc_scan";

/// A process's mount namespace as a scan read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MntNs {
    Ns(u32),
    /// Not readable for lack of permission.
    Denied,
    /// Not readable otherwise (gone, a kernel thread's).
    Unreadable,
}

/// What a scan read about one process, for the scans after it.
#[derive(Debug)]
struct Seen {
    /// Its `/proc/<pid>` inode: a process that ends takes it along (procfs
    /// drops the directory's dentry at exit), so a pid reused since has
    /// another one.
    ino: u64,
    read_at: Instant,
    container: Option<String>,
    /// None until a scan with `with_mntns` read it.
    mntns: Option<MntNs>,
}

/// The periodic `/proc` scan with a memory: a process seen by an earlier
/// scan, by pid and `/proc/<pid>` inode number (the directory listing gives
/// both), is not read again until `reread_after` has passed. Reading each
/// process's cgroup and mount namespace every 5 s was ~40% of an idle
/// agent's CPU (perf: open, read, close of `/proc/<pid>/cgroup` and a
/// readlink, for every process); the listing alone is one `getdents` per
/// ~100 processes. Re-reading after a while catches a live process that
/// changed cgroup or namespace after it was read (a runtime's init, read in
/// the instant before it joined its container's cgroup). Bounded: it holds
/// only the processes of the last listing.
#[derive(Debug)]
pub struct Scanner {
    reread_after: Duration,
    seen: HashMap<u32, Seen>,
    /// Processes read (cgroup) so far, for the tests.
    reads: u64,
}

impl Scanner {
    /// `reread_after`: how long a process's answers are trusted (zero: read every process every scan).
    pub fn new(reread_after: Duration) -> Self {
        Self { reread_after, seen: HashMap::new(), reads: 0 }
    }

    /// Processes known from the last scan ([`CACHE`]).
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Processes whose cgroup was read so far.
    pub fn reads(&self) -> u64 {
        self.reads
    }

    /// One pass over `/proc`.
    pub fn scan(&mut self, with_mntns: bool, now: Instant) -> Snapshot {
        let read_mntns = |pid: u32| match std::fs::read_link(format!("/proc/{pid}/ns/mnt")) {
            Ok(target) => mntns_in(&target).map_or(MntNs::Unreadable, MntNs::Ns),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => MntNs::Denied,
            Err(_) => MntNs::Unreadable,
        };
        self.scan_from(proc_entries(), with_mntns, now, container_of, read_mntns)
    }

    /// A pass over `entries` (pid, `/proc/<pid>` inode, in pid order):
    /// `read_cgroup` and `read_mntns` only for processes not known.
    fn scan_from(
        &mut self,
        entries: impl Iterator<Item = (u32, u64)>,
        with_mntns: bool,
        now: Instant,
        read_cgroup: impl Fn(u32) -> Option<String>,
        read_mntns: impl Fn(u32) -> MntNs,
    ) -> Snapshot {
        let mut snap = Snapshot::default();
        let mut seen = HashMap::with_capacity(self.seen.len());
        for (pid, ino) in entries {
            let known = self
                .seen
                .remove(&pid)
                .filter(|s| ino != 0 && s.ino == ino && now.saturating_duration_since(s.read_at) < self.reread_after);
            let mut s = known.unwrap_or_else(|| {
                self.reads += 1;
                Seen { ino, read_at: now, container: read_cgroup(pid), mntns: None }
            });
            if with_mntns && s.mntns.is_none() {
                s.mntns = Some(read_mntns(pid));
            }
            if let Some(id) = &s.container
                && !snap.containers.contains_key(id)
            {
                snap.containers.insert(id.clone(), pid);
            }
            if with_mntns {
                match s.mntns {
                    Some(MntNs::Ns(ns)) => {
                        snap.mntns.entry(ns).or_insert_with(|| format!("/proc/{pid}/ns/mnt"));
                    }
                    Some(MntNs::Denied) if pid != 1 => snap.mntns_denied += 1,
                    _ => {}
                }
            }
            seen.insert(pid, s);
        }
        self.seen = seen;
        snap
    }
}

/// The pids in `/proc` with their directories' inode numbers.
fn proc_entries() -> impl Iterator<Item = (u32, u64)> {
    use std::os::unix::fs::DirEntryExt;
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()).map(|pid| (pid, e.ino())))
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
    fn a_scan_reads_only_processes_it_does_not_know() {
        use super::{MntNs, Scanner};
        use std::{cell::RefCell, time::Duration};
        let read = RefCell::new(Vec::new());
        let cgroup = |pid: u32| {
            read.borrow_mut().push(pid);
            pid.is_multiple_of(10).then(|| format!("c{}", pid / 100))
        };
        let mntns = |pid: u32| match pid {
            1 | 7 => MntNs::Denied,
            9 => MntNs::Unreadable,
            p => MntNs::Ns(p / 100),
        };
        let t0 = std::time::Instant::now();
        let mut s = Scanner::new(Duration::from_secs(60));
        let procs = [(1, 11), (7, 17), (9, 19), (110, 1110), (120, 1120), (210, 2210), (300, 3000)];
        let snap = s.scan_from(procs.into_iter(), true, t0, cgroup, mntns);
        assert_eq!(read.take(), [1, 7, 9, 110, 120, 210, 300]);
        // One pid a container, the first in pid order; the same for namespaces.
        assert_eq!(snap.containers.len(), 3);
        assert_eq!((snap.containers["c1"], snap.containers["c2"], snap.containers["c3"]), (110, 210, 300));
        assert_eq!(snap.mntns[&1], "/proc/110/ns/mnt");
        assert_eq!((snap.mntns.len(), snap.mntns_denied), (3, 1), "pid 1's denial is not counted");
        assert_eq!(s.len(), 7);

        // Later: 120 ended, 210's pid was reused (another inode), 400 is new.
        let later = [(1, 11), (7, 17), (9, 19), (110, 1110), (210, 9999), (300, 3000), (400, 4000)];
        let snap2 = s.scan_from(later.into_iter(), true, t0 + Duration::from_secs(5), cgroup, mntns);
        assert_eq!(read.take(), [210, 400], "only the new processes are read");
        assert_eq!(snap2.containers.len(), 4);
        assert_eq!((snap2.containers["c1"], snap2.containers["c4"]), (110, 400));
        assert_eq!((snap2.mntns.len(), snap2.mntns_denied), (4, 1));
        assert_eq!(s.len(), 7, "120 is forgotten");

        // After reread_after, every process is read again; an unknown inode (0) always.
        let snap3 = s.scan_from(later.into_iter(), false, t0 + Duration::from_secs(61), cgroup, mntns);
        assert_eq!(read.take(), [1, 7, 9, 110, 300], "those read at t0; 210 and 400 at t0 + 5 s");
        assert!(snap3.mntns.is_empty() && snap3.mntns_denied == 0, "not asked for");
        s.scan_from([(5, 0)].into_iter(), false, t0 + Duration::from_secs(62), cgroup, mntns);
        s.scan_from([(5, 0)].into_iter(), false, t0 + Duration::from_secs(63), cgroup, mntns);
        assert_eq!(read.take(), [5, 5]);
        assert_eq!((s.len(), s.reads()), (1, 16));
        // Without a memory, every scan reads every process.
        let mut once = Scanner::new(Duration::ZERO);
        once.scan_from(procs.into_iter(), false, t0, cgroup, mntns);
        once.scan_from(procs.into_iter(), false, t0, cgroup, mntns);
        assert_eq!(read.take().len(), 14);
    }

    #[test]
    fn the_periodic_scan_on_the_real_proc_rereads_only_new_processes() {
        let mut s = super::Scanner::new(std::time::Duration::from_secs(60));
        let t0 = std::time::Instant::now();
        let first = s.scan(true, t0);
        let n = s.reads();
        let me = super::mntns_of("/proc/self/ns/mnt").expect("own mntns");
        assert!(first.mntns.contains_key(&me) && n as usize >= s.len().min(2), "{n} {}", s.len());
        let mut child = std::process::Command::new("sleep").arg("5").spawn().expect("spawn sleep");
        let second = s.scan(true, t0);
        child.kill().and_then(|_| child.wait()).expect("end sleep");
        assert!(second.mntns.contains_key(&me));
        // Tests running beside this one start processes too, but not one per process on the node.
        let again = s.reads() - n;
        assert!(again >= 1 && again < n, "read {again} processes again of {n}");
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
