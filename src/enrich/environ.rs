//! Environments of container processes, read from /proc for the execs the
//! kernel flagged (`DW_EXEC_ENV_CHANGED`): only to name variables; values are
//! compared here and never kept.

use std::{collections::HashMap, sync::Mutex};

/// Environment bytes read per process at most (the kernel scans 4 KiB).
const MAX_ENVIRON: u64 = 256 * 1024;
/// Mount namespaces whose main process is remembered.
const MAX_MAINS: usize = 4096;

/// `/proc/<pid>/environ`, bounded; `None` when the process is gone.
pub fn environ(pid: u32) -> Option<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(format!("/proc/{pid}/environ")).ok()?;
    let mut v = Vec::new();
    f.take(MAX_ENVIRON).read_to_end(&mut v).ok()?;
    Some(v)
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.iter().rposition(|&b| b == b')')? + 1..];
    std::str::from_utf8(rest).ok()?.split_whitespace().nth(19)?.parse().ok()
}

/// The node-wide cache of main processes.
pub fn main_of(pid: u32) -> Option<u32> {
    static MAINS: std::sync::LazyLock<Mains> = std::sync::LazyLock::new(Mains::default);
    MAINS.main_of(pid)
}

/// The main process of the container `pid` runs in: the oldest live process
/// of its mount namespace (runc's init creates it; the entrypoint
/// re-executing itself keeps its pid). Cached per namespace and checked.
#[derive(Default)]
pub struct Mains {
    by_ns: Mutex<HashMap<u32, u32>>,
}

impl Mains {
    pub fn main_of(&self, pid: u32) -> Option<u32> {
        let ns = crate::procfs::mntns_of(&format!("/proc/{pid}/ns/mnt"))?;
        let cached = crate::locks::lock(&self.by_ns).get(&ns).copied();
        if let Some(m) = cached
            && crate::procfs::mntns_of(&format!("/proc/{m}/ns/mnt")) == Some(ns)
        {
            return Some(m);
        }
        // One pass over /proc, once per container (or when its main changed).
        let mut oldest: Option<(u64, u32)> = None;
        for e in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            if crate::procfs::mntns_of(&format!("/proc/{p}/ns/mnt")) != Some(ns) {
                continue;
            }
            if let Some(t) = start_time(p)
                && oldest.is_none_or(|o| (t, p) < o)
            {
                oldest = Some((t, p));
            }
        }
        let main = oldest?.1;
        let mut map = crate::locks::lock(&self.by_ns);
        if map.len() >= MAX_MAINS {
            map.clear();
        }
        map.insert(ns, main);
        Some(main)
    }
}
