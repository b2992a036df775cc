//! The process list of a container (`driftwatch ps`, `GET
//! /v1/containers/{id}/processes`): its processes found in `/proc` by cgroup,
//! where each executable comes from, where each process came from (the
//! container's own tree or an exec session) and the sockets of the
//! container's network namespace, per process.
//!
//! Everything is read from `/proc` in userspace, bounded ([`MAX_PROCESSES`],
//! [`MAX_FDS`], [`MAX_FDS_TOTAL`], the socket tables' size); a process that exits during the scan
//! is left out, not an error.

mod sockets;
mod users;

pub use sockets::Socket;

use crate::{enrich::overlay, event::ExeSource, event::Origin};
use serde::Serialize;
use std::{
    collections::{HashMap, HashSet},
    io::Read,
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt},
    path::Path,
};

/// Processes listed at most.
pub const MAX_PROCESSES: usize = 4096;
/// File descriptors looked at per process (for its sockets) at most.
pub const MAX_FDS: usize = 16_384;
/// File descriptors looked at in all (one readlink each) at most.
pub const MAX_FDS_TOTAL: usize = 262_144;
/// Network namespaces whose tables are read at most.
pub const MAX_NETNS: usize = 8;
/// Sockets listed per namespace that no listed process holds, at most.
pub const MAX_NOT_HELD: usize = 1024;
/// Bytes of a command line read at most.
const MAX_CMDLINE: u64 = 64 << 10;

/// Why a container's processes cannot be listed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PsError {
    #[error("{0:?} is not a container id (64 lower-case hex characters)")]
    BadId(String),
    #[error("container {0} has no process on this node")]
    NoProcesses(String),
    #[error("cannot read /proc: {0}")]
    Proc(String),
}

impl PsError {
    /// A metric label / API status hint.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadId(_) => "bad_id",
            Self::NoProcesses(_) => "no_processes",
            Self::Proc(_) => "proc",
        }
    }
}

/// What `driftwatch ps --output json` prints and the admin API returns.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessList {
    #[serde(rename = "container.id")]
    pub container_id: String,
    /// By pid.
    pub processes: Vec<Process>,
    /// The network namespaces the processes are in (one, unless a process
    /// made its own), with the sockets none of the listed processes holds.
    pub network_namespaces: Vec<NetNs>,
    /// Which bounds were hit: `processes`, `fds`, `sockets`, `network_namespaces`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub truncated: Vec<&'static str>,
}

/// One process.
#[derive(Debug, Clone, Serialize)]
pub struct Process {
    #[serde(rename = "process.pid")]
    pub pid: u32,
    /// The pid as the container sees it (its own pid namespace).
    #[serde(rename = "driftwatch.process.ns_pid")]
    pub ns_pid: u32,
    #[serde(rename = "process.parent_pid")]
    pub parent_pid: u32,
    /// Effective user id.
    #[serde(rename = "process.user.id")]
    pub uid: u32,
    /// From the container's own /etc/passwd; absent when unknown.
    #[serde(rename = "process.user.name", skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// RFC 3339, UTC.
    #[serde(rename = "process.start_time")]
    pub start_time: String,
    /// As the container names it; empty for a zombie.
    #[serde(rename = "process.executable.path")]
    pub exe_path: String,
    /// The kernel's comm.
    #[serde(rename = "process.executable.name")]
    pub exe_name: String,
    /// The arguments joined by spaces (for reading; `process.command_args` is exact).
    #[serde(rename = "process.command_line")]
    pub command_line: String,
    #[serde(rename = "process.command_args")]
    pub command_args: Vec<String>,
    #[serde(rename = "driftwatch.exe.source")]
    pub exe_source: &'static str,
    #[serde(rename = "driftwatch.process.origin")]
    pub origin: Origin,
    #[serde(rename = "driftwatch.exe.path_escaped", skip_serializing_if = "is_false")]
    pub exe_path_escaped: bool,
    #[serde(rename = "driftwatch.process.args_escaped", skip_serializing_if = "is_false")]
    pub args_escaped: bool,
    /// TCP listeners and unconnected UDP sockets it holds.
    pub listening: Vec<Socket>,
    /// Its other sockets (connected, closing, ...).
    pub connections: Vec<Socket>,
}

/// A network namespace of the container.
#[derive(Debug, Clone, Serialize)]
pub struct NetNs {
    /// Its inode (`ls -l /proc/<pid>/ns/net`).
    pub inode: u64,
    /// The node's own namespace (a hostNetwork pod): its sockets are the
    /// node's, so none are listed here (the processes' own still are).
    pub host_network: bool,
    /// Sockets no listed process holds: another container of the pod, a
    /// connection in TIME_WAIT, a process gone since.
    pub listening: Vec<Socket>,
    pub connections: Vec<Socket>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What `/proc/<pid>/stat` and `status` say of one process.
#[derive(Debug, Clone, Default, PartialEq)]
struct Stat {
    comm: Vec<u8>,
    ppid: u32,
    session: u32,
    /// Clock ticks after boot.
    start_ticks: u64,
}

/// Fields of a stat line after the comm (which may hold any byte, `)` too).
fn parse_stat(raw: &[u8]) -> Option<Stat> {
    let open = raw.iter().position(|&b| b == b'(')?;
    let close = raw.iter().rposition(|&b| b == b')')?;
    let comm = raw.get(open + 1..close)?.to_vec();
    let rest = std::str::from_utf8(raw.get(close + 1..)?).ok()?;
    // Field 3 (state) is rest[0]: ppid 4, session 6, starttime 22.
    let f: Vec<&str> = rest.split_whitespace().take(20).collect();
    Some(Stat {
        comm,
        ppid: f.get(1)?.parse().ok()?,
        session: f.get(3)?.parse().ok()?,
        start_ticks: f.get(19)?.parse().ok()?,
    })
}

/// Effective uid and innermost namespace pid from `/proc/<pid>/status`.
fn parse_status(text: &str) -> Option<(u32, u32, usize)> {
    let mut uid = None;
    let mut ns = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("Uid:") {
            uid = v.split_whitespace().nth(1).and_then(|u| u.parse().ok());
        } else if let Some(v) = line.strip_prefix("NSpid:") {
            let levels: Vec<u32> = v.split_whitespace().filter_map(|p| p.parse().ok()).collect();
            ns = levels.last().map(|&p| (p, levels.len()));
        }
    }
    let (ns_pid, depth) = ns?;
    Some((uid?, ns_pid, depth))
}

/// A process as read, before the cross-process parts (origin, sockets).
struct Raw {
    pid: u32,
    stat: Stat,
    uid: u32,
    ns_pid: u32,
    /// Pid namespaces it is nested in (1: the node's).
    ns_depth: usize,
    exe_link: Option<String>,
    args: Vec<Vec<u8>>,
    netns: Option<u64>,
    mntns: Option<u64>,
    socket_inodes: HashSet<u64>,
}

fn ns_inode(pid: u32, kind: &str) -> Option<u64> {
    let t = std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok()?;
    let s = t.to_str()?;
    s.strip_prefix(kind)?.strip_prefix(":[")?.strip_suffix(']')?.parse().ok()
}

fn read_bounded(path: &str, max: u64) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    std::fs::File::open(path).ok()?.take(max).read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// Reads one process; None when it is gone (or its stat is unreadable).
/// `fd_budget`: descriptors left to look at in this scan.
fn read_raw(pid: u32, fd_budget: &mut usize, fds_truncated: &mut bool) -> Option<Raw> {
    let stat = parse_stat(&std::fs::read(format!("/proc/{pid}/stat")).ok()?)?;
    let (uid, ns_pid, ns_depth) = parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)?;
    let exe_link = std::fs::read_link(format!("/proc/{pid}/exe")).ok().map(|p| p.to_string_lossy().into_owned());
    let cmdline = read_bounded(&format!("/proc/{pid}/cmdline"), MAX_CMDLINE).unwrap_or_default();
    let mut args: Vec<Vec<u8>> = cmdline.split(|&b| b == 0).map(<[u8]>::to_vec).collect();
    if args.last().is_some_and(Vec::is_empty) {
        args.pop();
    }
    Some(Raw {
        pid,
        stat,
        uid,
        ns_pid,
        ns_depth,
        exe_link,
        args,
        netns: ns_inode(pid, "net"),
        mntns: ns_inode(pid, "mnt"),
        socket_inodes: {
            let (inodes, seen) = sockets::socket_inodes(pid, MAX_FDS.min(*fd_budget), fds_truncated);
            *fd_budget -= seen;
            inodes
        },
    })
}

const TMPFS_MAGIC: i64 = 0x0102_1994;
const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;

/// The filesystem type of the file `/proc/<pid>/exe` points at (the very
/// file the process runs, whatever its path says now).
fn exe_fs_type(pid: u32) -> Option<i64> {
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH).open(format!("/proc/{pid}/exe")).ok()?;
    // SAFETY: fstatfs writes into the statfs we own, on a descriptor we hold.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::fstatfs(f.as_raw_fd(), &mut st) } == 0).then_some(st.f_type as i64)
}
/// `driftwatch.exe.source` of a running process, as the kernel would have
/// said at its exec: memfd, deleted, tmpfs, else the overlay's verdict
/// (image, upper_layer) or a volume.
fn exe_source(pid: u32, link: &str, fs: Option<&overlay::ContainerFs>) -> ExeSource {
    if link.starts_with("/memfd:") {
        return ExeSource::Memfd;
    }
    if link.ends_with(" (deleted)") {
        return ExeSource::Deleted;
    }
    let path = Path::new(link);
    match (exe_fs_type(pid), fs) {
        (Some(TMPFS_MAGIC), _) => ExeSource::Tmpfs,
        (Some(OVERLAYFS_SUPER_MAGIC), Some(fs)) => overlay::script_source(fs, path),
        (Some(_), Some(fs)) if fs.on_volume(path) => ExeSource::Volume,
        _ => ExeSource::Unknown,
    }
}

/// The container's init among `procs`: pid 1 of its own pid namespace, else
/// (a pod sharing one pid namespace, whose pid 1 is the pause process) its
/// oldest process.
fn find_init(procs: &[Raw]) -> Option<u32> {
    procs
        .iter()
        .find(|p| p.ns_pid == 1 && p.ns_depth > 1)
        .or_else(|| procs.iter().min_by_key(|p| (p.stat.start_ticks, p.pid)))
        .map(|p| p.pid)
}

/// Where each process came from, from its ancestry and its session.
///
/// runc starts the init and every exec'd process alike, each a session leader
/// with a parent outside the container. A process whose ancestry (parents in
/// the container) does not reach the init came in from outside: an exec
/// session. One that reaches it is of the container's tree, unless it is an
/// exec session's orphan: the kernel hands an orphan to the pid namespace's
/// init, but it keeps its session, so its session is neither the init's nor
/// one made on its way up (a daemon's `setsid`), and its leader, if still
/// alive, is an exec session's. A double-forking daemon of the entrypoint
/// whose session leader has exited looks the same and is called
/// `exec_session` too: rare (daemon(3) forks once), and the safe side.
fn origins(procs: &[Raw], init: Option<u32>) -> HashMap<u32, Origin> {
    let by_pid: HashMap<u32, &Raw> = procs.iter().map(|p| (p.pid, p)).collect();
    let init_session = init.and_then(|i| by_pid.get(&i)).map(|p| p.stat.session);
    // The chain from `pid` up through parents in the container.
    let chain = |pid: u32| -> Vec<u32> {
        let mut c = vec![pid];
        let mut cur = pid;
        while let Some(p) = by_pid.get(&cur) {
            let parent = p.stat.ppid;
            if Some(cur) == init || !by_pid.contains_key(&parent) || c.len() > MAX_PROCESSES || c.contains(&parent) {
                break;
            }
            c.push(parent);
            cur = parent;
        }
        c
    };
    // Without the session rule (for the leaders it points at).
    let by_tree = |pid: u32| if chain(pid).last().copied() == init { Origin::Container } else { Origin::ExecSession };
    procs
        .iter()
        .map(|p| {
            let c = chain(p.pid);
            let origin = if c.last().copied() != init {
                Origin::ExecSession
            } else if Some(p.stat.session) == init_session || c.contains(&p.stat.session) {
                Origin::Container
            } else if by_pid.contains_key(&p.stat.session) {
                by_tree(p.stat.session)
            } else {
                Origin::ExecSession
            };
            (p.pid, origin)
        })
        .collect()
}

/// Lists the processes of `container_id` (a full id), reading only `/proc`.
pub fn list(container_id: &str) -> Result<ProcessList, PsError> {
    list_with(container_id, &|_| None)
}

/// [`list`], with the origin of a pid taken from `known` when it knows it
/// (the agent's kernel lineage, which saw every fork) rather than inferred.
pub fn list_with(container_id: &str, known: &dyn Fn(u32) -> Option<Origin>) -> Result<ProcessList, PsError> {
    if container_id.len() != 64 || !container_id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(PsError::BadId(container_id.to_string()));
    }
    let mut truncated = Vec::new();
    let (mut fds_truncated, mut fd_budget) = (false, MAX_FDS_TOTAL);
    let mut procs = Vec::new();
    let dir = std::fs::read_dir("/proc").map_err(|e| PsError::Proc(e.to_string()))?;
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if crate::procfs::container_of(pid).as_deref() != Some(container_id) {
            continue;
        }
        if procs.len() >= MAX_PROCESSES {
            truncated.push("processes");
            break;
        }
        if let Some(r) = read_raw(pid, &mut fd_budget, &mut fds_truncated) {
            procs.push(r);
        }
    }
    if procs.is_empty() {
        return Err(PsError::NoProcesses(container_id.to_string()));
    }
    if fds_truncated {
        truncated.push("fds");
    }
    procs.sort_by_key(|p| p.pid);
    let init = find_init(&procs);
    let inferred = origins(&procs, init);
    let clock = crate::clock::BootClock::new();
    // SAFETY: sysconf has no preconditions.
    let hz = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as u64,
        _ => 100,
    };
    let mut users = users::Users::default();
    let mut fs_by_mntns: HashMap<u64, Option<overlay::ContainerFs>> = HashMap::new();
    let mut out: Vec<Process> = Vec::with_capacity(procs.len());
    for r in &procs {
        let fs = match r.mntns {
            Some(ns) => fs_by_mntns.entry(ns).or_insert_with(|| overlay::container_fs_of(r.pid)).as_ref(),
            None => None,
        };
        let link = r.exe_link.clone().unwrap_or_default();
        let source = if link.is_empty() { ExeSource::Unknown } else { exe_source(r.pid, &link, fs) };
        let shown = link.strip_suffix(" (deleted)").unwrap_or(&link);
        let (exe_name, _) = crate::escape::lossless(&r.stat.comm);
        let args_escaped = r.args.iter().any(|a| std::str::from_utf8(a).is_err());
        let command_args: Vec<String> = r
            .args
            .iter()
            .map(|a| if args_escaped { crate::escape::escaped(a) } else { String::from_utf8_lossy(a).into_owned() })
            .collect();
        let ticks_ns = r.stat.start_ticks.saturating_mul(1_000_000_000 / hz);
        out.push(Process {
            pid: r.pid,
            ns_pid: r.ns_pid,
            parent_pid: r.stat.ppid,
            uid: r.uid,
            user_name: users.name(r.pid, r.uid),
            start_time: crate::clock::rfc3339(clock.wall(ticks_ns)).to_string(),
            // readlink gave text already (lossy); an exe whose name is not
            // UTF-8 is marked so its replacement characters are not trusted.
            exe_path_escaped: shown.contains('\u{fffd}'),
            exe_path: shown.to_string(),
            exe_name,
            command_line: command_args.join(" "),
            command_args,
            exe_source: source.as_str(),
            origin: known(r.pid).unwrap_or_else(|| inferred.get(&r.pid).copied().unwrap_or_default()),
            args_escaped,
            listening: Vec::new(),
            connections: Vec::new(),
        });
    }
    let network_namespaces = attach_sockets(&procs, &mut out, &mut truncated);
    Ok(ProcessList { container_id: container_id.to_string(), processes: out, network_namespaces, truncated })
}

/// Reads each network namespace's tables once and hands every socket to the
/// processes holding it; the rest are listed per namespace.
fn attach_sockets(procs: &[Raw], out: &mut [Process], truncated: &mut Vec<&'static str>) -> Vec<NetNs> {
    // The node's namespace: pid 1's (the agent sees the node's pids), else,
    // where pid 1 cannot be read, the agent's own (it runs with hostNetwork).
    let host_netns = ns_inode(1, "net").or_else(|| ns_inode(std::process::id(), "net"));
    let mut holders: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, r) in procs.iter().enumerate() {
        for ino in &r.socket_inodes {
            holders.entry(*ino).or_default().push(i);
        }
    }
    // Namespace -> the processes in it (any of them can show its tables).
    let mut by_ns: Vec<(u64, Vec<u32>)> = Vec::new();
    for r in procs {
        let Some(ns) = r.netns else { continue };
        match by_ns.iter_mut().find(|(n, _)| *n == ns) {
            Some((_, pids)) => pids.push(r.pid),
            None => by_ns.push((ns, vec![r.pid])),
        }
    }
    if by_ns.len() > MAX_NETNS {
        by_ns.truncate(MAX_NETNS);
        truncated.push("network_namespaces");
    }
    let mut result = Vec::new();
    let (mut tables_truncated, mut list_full) = (false, false);
    for (inode, pids) in by_ns {
        let host_network = Some(inode) == host_netns;
        let mut ns = NetNs { inode, host_network, listening: Vec::new(), connections: Vec::new() };
        // The first member still alive shows the namespace's tables.
        let read = pids.iter().any(|&pid| {
            sockets::read_tables(pid, &mut tables_truncated, |row| {
                let (listening, socket) = (row.socket.is_listening(), row.socket);
                match holders.get(&row.inode) {
                    Some(idx) if row.inode != 0 => {
                        for &i in idx {
                            let p = &mut out[i];
                            if listening { &mut p.listening } else { &mut p.connections }.push(socket.clone());
                        }
                    }
                    _ if host_network => {}
                    _ => {
                        let list = if listening { &mut ns.listening } else { &mut ns.connections };
                        if list.len() < MAX_NOT_HELD {
                            list.push(socket);
                        } else {
                            list_full = true;
                        }
                    }
                }
            })
        });
        if read {
            result.push(ns);
        }
    }
    if tables_truncated || list_full {
        truncated.push("sockets");
    }
    result
}

#[cfg(test)]
mod tests;
