//! Checks that explain, in one line, why the sensor cannot load.

use super::BpfError;
use crate::procfs::mntns_of;
use std::path::Path;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability bits from /proc/self/status.
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

/// `tracefs`: syscall tracepoints are attached (file, mapping and network sensors).
pub fn check(btf: &Path, tracefs: bool) -> Result<(), BpfError> {
    if std::env::consts::ARCH != "x86_64" {
        return Err(BpfError::UnsupportedArch(std::env::consts::ARCH));
    }
    let caps = effective_caps().unwrap_or(0);
    let has = |c: u32| caps & (1u64 << c) != 0;
    if !(has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))) {
        return Err(BpfError::NotPrivileged);
    }
    if !btf.exists() {
        return Err(BpfError::NoBtf(btf.display().to_string()));
    }
    if tracefs
        && !["/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"].iter().any(|p| Path::new(p).exists())
    {
        return Err(BpfError::NoTracefs);
    }
    Ok(())
}

/// Mount namespace inode of the host. /proc/1 is the host's init when the
/// agent runs on the host or with hostPID; some sandboxes hide it, and then
/// the agent's own namespace stands in (correct when it runs on the host).
pub fn host_mntns() -> Result<(u32, &'static str), BpfError> {
    if let Some(ino) = mntns_of("/proc/1/ns/mnt") {
        return Ok((ino, "/proc/1/ns/mnt"));
    }
    mntns_of("/proc/self/ns/mnt").map(|ino| (ino, "/proc/self/ns/mnt")).ok_or(BpfError::NoMntns)
}
