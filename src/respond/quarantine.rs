//! Node quarantine, the playbook's Isolate step on the node: cgroup_skb
//! programs on a container's cgroup v2 directory drop all of its traffic but
//! what `response.quarantine.allow` names (and loopback inside its own
//! network namespace), on any CNI, from the next packet on: established
//! connections included. The kernel side is bpf::quarantine; this is the
//! policy: which cgroup is the container's, what is recorded, what is pruned.
//!
//! Everything lives in bpffs under `pin_dir` (maps, and two pinned links per
//! container): a quarantine survives the agent, and the next agent lists and
//! releases it. The record kept per container (id, cgroup, since, reason,
//! drop counts) is the `q_entries` map, keyed by cgroup id.

use crate::{
    abi,
    bpf::quarantine::{AllowData, LINKS, Netns, QBpfError, QuarantineBpf},
    config::AllowRule,
    enrich::cgroup::container_from_cgroup_path,
};
use std::{
    net::IpAddr,
    os::{raw::c_char, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// statfs f_type of a bpf filesystem.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    #[error("quarantine pin_dir {dir}: {reason}")]
    PinDir { dir: PathBuf, reason: String },
    #[error(
        "node quarantine needs CAP_BPF and CAP_NET_ADMIN (or CAP_SYS_ADMIN): this process has {0}; \
         measured on Linux 6.18: loading cgroup_skb programs needs CAP_BPF, attaching them to a cgroup CAP_NET_ADMIN"
    )]
    NotPrivileged(String),
    #[error("{0:?} is not a container id (letters, digits, '-', '_', '.'; at most 79)")]
    BadContainerId(String),
    #[error("cannot read the cgroup of pid {pid}: {reason}")]
    NoProcess { pid: u32, reason: String },
    #[error("cannot find the cgroup v2 directory of pid {pid}: {reason}")]
    Cgroup { pid: u32, reason: String },
    #[error("refusing to quarantine cgroup {cgroup:?} of pid {pid} for container {container_id}: {reason}")]
    NotContainer { container_id: String, pid: u32, cgroup: String, reason: String },
    #[error(transparent)]
    Kernel(#[from] QBpfError),
    #[error("the quarantine state lock is poisoned (a panic while holding it)")]
    Poisoned,
}

impl QuarantineError {
    /// Bounded metric/log label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::PinDir { .. } => "pin_dir",
            Self::NotPrivileged(_) => "not_privileged",
            Self::BadContainerId(_) => "bad_container_id",
            Self::NoProcess { .. } => "no_process",
            Self::Cgroup { .. } => "cgroup",
            Self::NotContainer { .. } => "not_container",
            Self::Kernel(e) => e.kind(),
            Self::Poisoned => "poisoned",
        }
    }
}

/// One quarantined container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub container_id: String,
    /// Its cgroup v2 directory, as this agent's mounts show it.
    pub cgroup_path: PathBuf,
    pub cgroup_id: u64,
    pub since: SystemTime,
    pub reason: String,
    /// It shares the node's network namespace: loopback is cut too.
    pub host_network: bool,
    /// Packets to and from its sockets dropped so far.
    pub ingress_dropped: u64,
    pub egress_dropped: u64,
}

/// What [`Quarantine::apply`] did.
#[derive(Debug, Clone)]
pub struct Applied {
    pub entry: Entry,
    /// The container was quarantined already: nothing changed.
    pub already: bool,
    /// From the call to both links attached and pinned.
    pub took: Duration,
}

/// The programs' counters over every quarantined container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub ingress_allowed: u64,
    pub ingress_dropped: u64,
    pub egress_allowed: u64,
    pub egress_dropped: u64,
}

pub struct Quarantine {
    pin_dir: PathBuf,
    bpf: Mutex<QuarantineBpf>,
    /// How long [`Quarantine::open`] took (programs loaded, maps opened).
    pub opened_in: Duration,
}

impl Quarantine {
    /// Loads the programs and opens (or creates) the maps pinned in
    /// `pin_dir`, then makes the allow map hold `allow`: quarantines made
    /// by an earlier agent stay in force and take the new allow list.
    pub fn open(pin_dir: &Path, allow: &[AllowRule]) -> Result<Quarantine, QuarantineError> {
        let t0 = Instant::now();
        check_privileges()?;
        prepare_pin_dir(pin_dir)?;
        let mut bpf = QuarantineBpf::load(pin_dir)?;
        bpf.set_allow(&allow_keys(allow))?;
        Ok(Quarantine { pin_dir: pin_dir.to_path_buf(), bpf: Mutex::new(bpf), opened_in: t0.elapsed() })
    }

    /// Cuts the container `container_id`, of which `pid` is a process, off
    /// the network. Applying twice is a no-op (`already`).
    pub fn apply(&self, container_id: &str, pid: u32, reason: &str) -> Result<Applied, QuarantineError> {
        let t0 = Instant::now();
        check_id(container_id)?;
        let cgroup = container_cgroup(container_id, pid)?;
        let dir = std::fs::File::open(&cgroup.dir)
            .map_err(|e| QuarantineError::Cgroup { pid, reason: format!("opening {}: {e}", cgroup.dir.display()) })?;
        let cgroup_id = dir
            .metadata()
            .map_err(|e| QuarantineError::Cgroup { pid, reason: format!("{}: {e}", cgroup.dir.display()) })?
            .ino();
        let netns = netns_of(pid)?;
        let link_dir = self.pin_dir.join(container_id);
        let mut bpf = self.bpf.lock().map_err(|_| QuarantineError::Poisoned)?;
        if let Some(e) = bpf.entry(cgroup_id).filter(|e| c_str(&e.container_id) == container_id)
            && LINKS.iter().all(|l| link_dir.join(l).exists())
        {
            return Ok(Applied { entry: entry_of(&e), already: true, took: t0.elapsed() });
        }
        // A half-made quarantine (an agent stopped mid-apply) is made again.
        remove_links(&link_dir);
        std::fs::create_dir_all(&link_dir).map_err(|e| QuarantineError::PinDir {
            dir: self.pin_dir.clone(),
            reason: format!("creating {}: {e}", link_dir.display()),
        })?;
        let mut record = abi::dw_quarantine {
            cgroup_id,
            since_unix_ns: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64),
            flags: if netns == Netns::Host { abi::DW_Q_HOST_NETNS } else { 0 },
            ..Default::default()
        };
        put_c_str(&mut record.container_id, container_id);
        put_c_str(&mut record.cgroup_path, &cgroup.dir.to_string_lossy());
        put_c_str(&mut record.reason, reason);
        // The record first, so the programs count drops from the first packet.
        bpf.put_entry(&record)?;
        if let Err(e) = bpf.attach(&dir, &cgroup.v2_path, netns, &link_dir) {
            bpf.remove_entry(cgroup_id);
            let _ = std::fs::remove_dir(&link_dir);
            return Err(e.into());
        }
        let took = t0.elapsed();
        tracing::debug!(container_id, cgroup = %cgroup.dir.display(), ?took, "quarantined");
        Ok(Applied { entry: entry_of(&record), already: false, took })
    }

    /// Lifts the container's quarantine; false when it had none.
    pub fn release(&self, container_id: &str) -> Result<bool, QuarantineError> {
        check_id(container_id)?;
        let mut bpf = self.bpf.lock().map_err(|_| QuarantineError::Poisoned)?;
        let link_dir = self.pin_dir.join(container_id);
        let had_links = link_dir.is_dir();
        remove_links(&link_dir);
        let mut had_entry = false;
        for e in bpf.entries() {
            if c_str(&e.container_id) == container_id {
                bpf.remove_entry(e.cgroup_id);
                had_entry = true;
            }
        }
        Ok(had_links || had_entry)
    }

    /// Every quarantined container, oldest first.
    pub fn list(&self) -> Vec<Entry> {
        let Ok(bpf) = self.bpf.lock() else { return Vec::new() };
        let mut out: Vec<Entry> = bpf.entries().iter().map(entry_of).collect();
        out.sort_by(|a, b| a.since.cmp(&b.since).then_with(|| a.container_id.cmp(&b.container_id)));
        out
    }

    /// Releases the quarantines of containers that are gone: `live` says no,
    /// or their cgroup no longer exists (its links are inert then). Also
    /// removes link pins no record names. Returns how many were released.
    pub fn prune(&self, live: &dyn Fn(&str) -> bool) -> Vec<String> {
        let mut released = Vec::new();
        for e in self.list() {
            let cgroup_alive =
                std::fs::metadata(&e.cgroup_path).is_ok_and(|m| m.ino() == e.cgroup_id) || path_truncated(&e);
            if (!live(&e.container_id) || !cgroup_alive) && self.release(&e.container_id).unwrap_or(false) {
                tracing::info!(container_id = %e.container_id, cgroup_alive, "quarantine of a gone container released");
                released.push(e.container_id);
            }
        }
        let known: Vec<String> = self.list().into_iter().map(|e| e.container_id).collect();
        for d in std::fs::read_dir(&self.pin_dir).into_iter().flatten().flatten() {
            let name = d.file_name().to_string_lossy().into_owned();
            if d.path().is_dir() && check_id(&name).is_ok() && !known.contains(&name) {
                remove_links(&d.path());
            }
        }
        released
    }

    /// Packets dropped (ingress, egress) over every quarantined container,
    /// since the maps were first pinned.
    pub fn dropped(&self) -> (u64, u64) {
        let c = self.counters();
        (c.ingress_dropped, c.egress_dropped)
    }

    pub fn counters(&self) -> Counters {
        let Ok(bpf) = self.bpf.lock() else { return Counters::default() };
        let s = bpf.stats();
        Counters {
            ingress_allowed: s.ingress_allowed,
            ingress_dropped: s.ingress_dropped,
            egress_allowed: s.egress_allowed,
            egress_dropped: s.egress_dropped,
        }
    }
}

/// Fails at start, not at the first finding, when attaching would be refused.
fn check_privileges() -> Result<(), QuarantineError> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(caps) =
        status.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
    else {
        return Ok(()); // unknown: let the kernel say
    };
    let has = |c: u32| caps & (1 << c) != 0;
    if (has(CAP_BPF) || has(CAP_SYS_ADMIN)) && (has(CAP_NET_ADMIN) || has(CAP_SYS_ADMIN)) {
        return Ok(());
    }
    let names: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN")]
        .iter()
        .filter(|(c, _)| has(*c))
        .map(|(_, n)| *n)
        .collect();
    Err(QuarantineError::NotPrivileged(if names.is_empty() { "none of them".into() } else { names.join(", ") }))
}

/// The pin directory exists (made if needed), is on a bpffs and writable.
fn prepare_pin_dir(dir: &Path) -> Result<(), QuarantineError> {
    let bad = |reason: String| QuarantineError::PinDir { dir: dir.to_path_buf(), reason };
    std::fs::create_dir_all(dir).map_err(|e| bad(format!("cannot create it: {e}")))?;
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|_| bad("has a NUL byte".into()))?;
    // SAFETY: statfs writes one struct statfs into `st`; `c` is NUL terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(bad(format!("statfs: {}", std::io::Error::last_os_error())));
    }
    if st.f_type as i64 != BPF_FS_MAGIC {
        return Err(bad(format!(
            "not on a bpf filesystem (filesystem type {:#x}): pins elsewhere cannot be made; use a directory \
             under /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf; in a pod, a hostPath volume for /sys/fs/bpf)",
            st.f_type
        )));
    }
    // SAFETY: access only reads the path.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
        return Err(bad(format!("not writable: {}", std::io::Error::last_os_error())));
    }
    Ok(())
}

/// `q_allow` keys for the rules: (prefix length, port then address bits).
pub fn allow_keys(rules: &[AllowRule]) -> Vec<(u32, AllowData)> {
    rules
        .iter()
        .map(|r| {
            let (addr, bits) = match r.net {
                IpAddr::V4(a) => (a.to_ipv6_mapped().octets(), 96 + u32::from(r.prefix.min(32))),
                IpAddr::V6(a) => (a.octets(), u32::from(r.prefix.min(128))),
            };
            let mut data: AllowData = [0; 20];
            data[..2].copy_from_slice(&r.port.to_be_bytes());
            data[2..18].copy_from_slice(&addr);
            // Bits past the prefix are zeroed: the trie compares only the prefix,
            // but two rules for one network must make one key.
            for (i, b) in data[2..18].iter_mut().enumerate() {
                let keep = bits.saturating_sub(8 * i as u32).min(8);
                *b &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
            }
            (16 + bits, data)
        })
        .collect()
}

/// A container id is a path component of the pin directory: no '/', no dots only.
fn check_id(id: &str) -> Result<(), QuarantineError> {
    let ok = !id.is_empty()
        && id.len() < abi::DW_Q_ID_LEN as usize
        && id.bytes().any(|b| b != b'.')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok { Ok(()) } else { Err(QuarantineError::BadContainerId(id.to_string())) }
}

/// A container's cgroup: its `0::` path and the directory to open.
#[derive(Debug, PartialEq)]
struct Cgroup {
    v2_path: String,
    dir: PathBuf,
}

/// The cgroup v2 directory of `pid`, which must be the container's own.
fn container_cgroup(container_id: &str, pid: u32) -> Result<Cgroup, QuarantineError> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| QuarantineError::NoProcess { pid, reason: format!("/proc/{pid}/cgroup: {e}") })?;
    let path = v2_path(&text).ok_or_else(|| QuarantineError::Cgroup {
        pid,
        reason: "no cgroup v2 line (0::) in its /proc/<pid>/cgroup: quarantine needs cgroup v2 \
                 (or the unified hierarchy of a hybrid node)"
            .into(),
    })?;
    let refuse = |reason: String| QuarantineError::NotContainer {
        container_id: container_id.to_string(),
        pid,
        cgroup: path.to_string(),
        reason,
    };
    if path.split('/').all(|c| c.is_empty() || c == "..") {
        return Err(refuse("it is the root cgroup (a host process, or a cgroup namespace's root)".into()));
    }
    if path.ends_with(" (deleted)") {
        return Err(refuse("the cgroup is being removed".into()));
    }
    match container_from_cgroup_path(path) {
        Some(c) if c.id == container_id => {}
        Some(c) => return Err(refuse(format!("it is container {}'s (the pid was reused?)", c.id))),
        None => return Err(refuse("no container id in it: not a container's cgroup".into())),
    }
    if std::fs::read_to_string("/proc/self/cgroup").ok().as_deref().and_then(v2_path) == Some(path) {
        return Err(refuse("it is the agent's own cgroup".into()));
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| QuarantineError::Cgroup { pid, reason: format!("/proc/self/mountinfo: {e}") })?;
    let dir =
        cgroup_dir(&cgroup2_mounts(&mountinfo), path).map_err(|reason| QuarantineError::Cgroup { pid, reason })?;
    Ok(Cgroup { v2_path: path.to_string(), dir })
}

/// The path of the `0::` line of a /proc/<pid>/cgroup text.
fn v2_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|l| l.strip_prefix("0::")).map(str::trim_end)
}

/// (root of the mount in the hierarchy, mount point) of every cgroup2 mount.
fn cgroup2_mounts(mountinfo: &str) -> Vec<(String, PathBuf)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            if post.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            let mut f = pre.split_whitespace().skip(3);
            Some((unescape(f.next()?), PathBuf::from(unescape(f.next()?))))
        })
        .collect()
}

/// mountinfo's octal escapes (`\040` for a space) undone.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4).and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(char::from(c));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The directory of cgroup v2 `path` under one of the `mounts`. Both are
/// relative to the reader's cgroup namespace (leading `..` outside it), so
/// the path is matched against each mount's root component by component.
fn cgroup_dir(mounts: &[(String, PathBuf)], path: &str) -> Result<PathBuf, String> {
    if mounts.is_empty() {
        return Err("no cgroup2 filesystem is mounted (see /proc/self/mountinfo)".into());
    }
    let comps = |p: &str| p.split('/').filter(|c| !c.is_empty()).map(str::to_string).collect::<Vec<String>>();
    let want = comps(path);
    mounts
        .iter()
        .filter_map(|(root, at)| {
            let root = comps(root);
            // A rest that climbs (`..`) is above the mount: not under it.
            let rest = want.strip_prefix(root.as_slice()).filter(|r| !r.iter().any(|c| c == ".."))?;
            Some((root.len(), rest.iter().fold(at.clone(), |p, c| p.join(c))))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, dir)| dir)
        .ok_or_else(|| {
            format!(
                "cgroup {path} is outside every cgroup2 mount of the agent (roots {}): the agent runs in a cgroup \
                 namespace without the node's cgroup2 filesystem; mount it (a hostPath volume for /sys/fs/cgroup)",
                mounts.iter().map(|(r, at)| format!("{r} at {}", at.display())).collect::<Vec<_>>().join(", ")
            )
        })
}

/// Whether `pid` shares the node's network namespace. Unknown counts as
/// the node's: then loopback is cut too, the safe side.
fn netns_of(pid: u32) -> Result<Netns, QuarantineError> {
    let own = match std::fs::metadata(format!("/proc/{pid}/ns/net")) {
        Ok(m) => Some(m.ino()),
        // Exited (a zombie has no namespaces): not evidence of the host's.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(QuarantineError::NoProcess { pid, reason: format!("/proc/{pid}/ns/net: {e} (it exited)") });
        }
        // Unreadable (no CAP_SYS_PTRACE): judged as the host's, as before.
        Err(_) => None,
    };
    let ino = |p: &str| std::fs::metadata(p).map(|m| m.ino()).ok();
    // The node's: init's, or kthreadd's (kernel threads live in the initial
    // namespace) where pid 1 is hidden; both need hostPID and CAP_SYS_PTRACE.
    let host = ino("/proc/1/ns/net").or_else(|| {
        let kthreadd = std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd");
        kthreadd.then(|| ino("/proc/2/ns/net")).flatten()
    });
    Ok(match (own, host) {
        (Some(a), Some(h)) if a != h => Netns::Pod,
        _ => Netns::Host,
    })
}

/// Removes a container's link pins (which detaches them) and its directory.
fn remove_links(dir: &Path) {
    for l in LINKS {
        let _ = std::fs::remove_file(dir.join(l));
    }
    let _ = std::fs::remove_dir(dir);
}

fn entry_of(e: &abi::dw_quarantine) -> Entry {
    Entry {
        container_id: c_str(&e.container_id),
        cgroup_path: PathBuf::from(c_str(&e.cgroup_path)),
        cgroup_id: e.cgroup_id,
        since: UNIX_EPOCH + Duration::from_nanos(e.since_unix_ns),
        reason: c_str(&e.reason),
        host_network: e.flags & abi::DW_Q_HOST_NETNS != 0,
        ingress_dropped: e.ingress_dropped,
        egress_dropped: e.egress_dropped,
    }
}

/// A recorded cgroup path that filled its field may be cut: not checked.
fn path_truncated(e: &Entry) -> bool {
    e.cgroup_path.as_os_str().len() >= abi::DW_Q_PATH_LEN as usize - 1
}

/// `s` into a NUL-terminated field, cut at a character boundary if too long.
fn put_c_str(field: &mut [c_char], s: &str) {
    let s = crate::escape::cut(s, field.len().saturating_sub(1));
    for (d, b) in field.iter_mut().zip(s.as_bytes().iter().chain(std::iter::repeat(&0))) {
        *d = *b as c_char;
    }
}

fn c_str(field: &[c_char]) -> String {
    let bytes: Vec<u8> = field.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> AllowRule {
        AllowRule::parse(s).unwrap()
    }

    #[test]
    fn allow_keys_put_the_port_first_and_map_ipv4() {
        let keys = allow_keys(&[rule("10.0.0.5/32:8789"), rule("10.1.2.3/8"), rule("[fd00::1/64]:53")]);
        let (p, d) = keys[0];
        assert_eq!(p, 16 + 96 + 32);
        assert_eq!(&d[..2], &[0x22, 0x55], "8789 big endian");
        assert_eq!(&d[2..18], &std::net::Ipv4Addr::new(10, 0, 0, 5).to_ipv6_mapped().octets());
        assert_eq!(&d[18..], &[0, 0]);
        // Host bits are cleared: 10.1.2.3/8 is 10.0.0.0/8, any port.
        let (p, d) = keys[1];
        assert_eq!(p, 16 + 96 + 8);
        assert_eq!(&d[..2], &[0, 0]);
        assert_eq!(&d[2..18], &std::net::Ipv4Addr::new(10, 0, 0, 0).to_ipv6_mapped().octets());
        let (p, d) = keys[2];
        assert_eq!(p, 16 + 64);
        assert_eq!(&d[..2], &[0, 53]);
        assert_eq!(&d[2..10], &[0xfd, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&d[10..18], &[0; 8], "host bits of fd00::1/64 cleared");
        // A prefix that is not byte aligned keeps its leading bits only.
        let (_, d) = allow_keys(&[rule("10.255.0.0/12")])[0];
        assert_eq!(d[15], 0xf0);
        assert_eq!(allow_keys(&[rule("0.0.0.0/0")])[0].0, 16 + 96);
    }

    #[test]
    fn the_key_data_is_the_abi_key_after_its_prefix_length() {
        use std::mem::{offset_of, size_of};
        assert_eq!(size_of::<abi::dw_qallow_key>(), 4 + size_of::<AllowData>());
        assert_eq!(offset_of!(abi::dw_qallow_key, port_be), 4);
        assert_eq!(offset_of!(abi::dw_qallow_key, addr), 6);
    }

    #[test]
    fn container_ids_are_safe_path_components() {
        for ok in ["0123abcd", &"a".repeat(64), "my-ctr_1.2"] {
            assert!(check_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "../x", &"a".repeat(80), "x y", "nul\0"] {
            let e = check_id(bad).unwrap_err();
            assert_eq!(e.kind(), "bad_container_id", "{bad}");
        }
    }

    #[test]
    fn v2_path_is_the_unified_line() {
        let hybrid = "12:memory:/kubepods/besteffort/podx/abc\n1:name=systemd:/x\n0::/kubepods/besteffort/podx/abc\n";
        assert_eq!(v2_path(hybrid), Some("/kubepods/besteffort/podx/abc"));
        assert_eq!(v2_path("0::/\n"), Some("/"));
        assert_eq!(v2_path("4:cpu:/a\n"), None);
    }

    const MOUNTINFO: &str = "\
25 1 0:23 / /sys rw - sysfs sysfs rw
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
42 31 0:39 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
46 23 0:40 / /sys/fs/bpf rw,relatime - bpf bpf rw,mode=755
";

    #[test]
    fn cgroup_dir_joins_the_path_under_the_cgroup2_mount() {
        let mounts = cgroup2_mounts(MOUNTINFO);
        assert_eq!(mounts, vec![("/".to_string(), PathBuf::from("/sys/fs/cgroup/unified"))]);
        assert_eq!(
            cgroup_dir(&mounts, "/kubepods/besteffort/pod1/abc").unwrap(),
            PathBuf::from("/sys/fs/cgroup/unified/kubepods/besteffort/pod1/abc")
        );
        let e = cgroup_dir(&[], "/a").unwrap_err();
        assert!(e.contains("no cgroup2"), "{e}");
    }

    #[test]
    fn cgroup_dir_in_a_cgroup_namespace() {
        // The agent in its own cgroup namespace sees cgroups above its root
        // as `/..`; a hostPath mount of the node's cgroup2 has a root of
        // `/../..` too, and lines up.
        let mounts = vec![
            ("/".to_string(), PathBuf::from("/sys/fs/cgroup")),
            ("/../..".to_string(), PathBuf::from("/host/cgroup")),
        ];
        assert_eq!(
            cgroup_dir(&mounts, "/../../kubepods/pod1/abc").unwrap(),
            PathBuf::from("/host/cgroup/kubepods/pod1/abc")
        );
        let own_only = &mounts[..1];
        let e = cgroup_dir(own_only, "/../../kubepods/pod1/abc").unwrap_err();
        assert!(e.contains("hostPath") && e.contains("/../../kubepods/pod1/abc"), "{e}");
        // Inside the namespace's own tree, its own mount does.
        assert_eq!(cgroup_dir(own_only, "/sub").unwrap(), PathBuf::from("/sys/fs/cgroup/sub"));
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape(r"/bad\x"), r"/bad\x");
    }

    #[test]
    fn c_strings_round_trip_and_cut_at_a_char_boundary() {
        let mut f = [0 as c_char; 8];
        put_c_str(&mut f, "abc");
        assert_eq!(c_str(&f), "abc");
        put_c_str(&mut f, "abcdefghij");
        assert_eq!(c_str(&f), "abcdefg");
        put_c_str(&mut f, "abcd\u{e9}\u{e9}");
        assert_eq!(c_str(&f), "abcd\u{e9}");
        put_c_str(&mut f, "");
        assert_eq!(c_str(&f), "");
    }

    #[test]
    fn an_exited_process_is_no_process_not_the_host_network() {
        assert!(netns_of(std::process::id()).is_ok());
        // Not reaped yet: a zombie, whose /proc entry and cgroup remain.
        let mut child = crate::procfs::spawn_zombie();
        let pid = child.id();
        let got = netns_of(pid);
        child.wait().expect("reap");
        assert!(matches!(got, Err(QuarantineError::NoProcess { pid: p, .. }) if p == pid), "{got:?}");
    }

    #[test]
    fn a_pin_dir_off_bpffs_is_named() {
        let dir = std::env::temp_dir().join(format!("dwq-not-bpffs-{}", std::process::id()));
        let e = prepare_pin_dir(&dir).unwrap_err();
        let _ = std::fs::remove_dir(&dir);
        assert_eq!(e.kind(), "pin_dir");
        let msg = e.to_string();
        assert!(msg.contains(&dir.display().to_string()) && msg.contains("not on a bpf filesystem"), "{msg}");
        let e = prepare_pin_dir(Path::new("/proc/version/x")).unwrap_err().to_string();
        assert!(e.contains("/proc/version/x") && e.contains("cannot create"), "{e}");
    }
}
