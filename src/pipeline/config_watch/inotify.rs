//! A small inotify reader for volume directories: which watches saw the
//! `..data` link replaced. (libc directly: one syscall family, no new crate.)

use std::{
    collections::HashMap,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    os::unix::ffi::OsStrExt,
    path::Path,
};
use tokio::io::unix::AsyncFd;

/// The swap renames a new link over `..data` (IN_MOVED_TO); a writer that
/// recreates it instead shows IN_CREATE; a volume torn down, IN_DELETE_SELF.
const MASK: u32 = libc::IN_MOVED_TO | libc::IN_CREATE | libc::IN_DELETE_SELF | libc::IN_ONLYDIR;

pub struct Inotify {
    fd: AsyncFd<OwnedFd>,
    /// Watch descriptor -> users (containers of one pod share a volume directory).
    users: HashMap<i32, usize>,
}

impl Inotify {
    pub fn new() -> io::Result<Self> {
        // SAFETY: a plain syscall; the descriptor is owned at once.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `owned` stays open and the same descriptor for the AsyncFd's life.
        let fd = unsafe { AsyncFd::register(owned) }.map_err(|e| io::Error::other(format!("{e:?}")))?;
        Ok(Self { fd, users: HashMap::new() })
    }

    /// Watches `dir`; the same directory twice is one watch with two users.
    pub fn watch(&mut self, dir: &Path) -> io::Result<i32> {
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
        // SAFETY: valid descriptor and NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(self.fd.get_ref().as_raw_fd(), c.as_ptr(), MASK) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        *self.users.entry(wd).or_default() += 1;
        Ok(wd)
    }

    pub fn unwatch(&mut self, wd: i32) {
        let Some(n) = self.users.get_mut(&wd) else { return };
        *n -= 1;
        if *n == 0 {
            self.users.remove(&wd);
            // SAFETY: valid descriptor; a stale wd only returns EINVAL.
            unsafe { libc::inotify_rm_watch(self.fd.get_ref().as_raw_fd(), wd) };
        }
    }

    /// Waits for events; returns the watch descriptors that saw `..data`
    /// change (or their directory go away).
    pub async fn changed(&mut self) -> io::Result<Vec<i32>> {
        let mut buf = [0u8; 4096];
        loop {
            let mut guard = self.fd.readable().await?;
            let fd = self.fd.get_ref().as_raw_fd();
            // SAFETY: reading into a local buffer of its length.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    guard.clear_ready();
                    continue;
                }
                return Err(e);
            }
            let wds = parse(&buf[..n as usize]);
            if !wds.is_empty() {
                return Ok(wds);
            }
        }
    }
}

/// Watch descriptors of the events about `..data` (or a gone directory).
fn parse(mut b: &[u8]) -> Vec<i32> {
    const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
    let mut out = Vec::new();
    while b.len() >= HEADER {
        let wd = i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
        let mask = u32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
        let len = u32::from_ne_bytes([b[12], b[13], b[14], b[15]]) as usize;
        let end = (HEADER + len).min(b.len());
        let name = &b[HEADER..end];
        let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
        let relevant = name == crate::enrich::atomic_volume::DATA_LINK.as_bytes()
            || mask & (libc::IN_DELETE_SELF | libc::IN_Q_OVERFLOW) != 0;
        if relevant && !out.contains(&wd) {
            out.push(wd);
        }
        b = &b[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_data_swap_is_seen_other_files_are_not() {
        let d = std::env::temp_dir().join(format!("dw-inotify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        crate::enrich::atomic_volume::testing::write(&d, "..2026_01_01_00_00_00.1", &[("a", "1")]);
        let mut i = Inotify::new().unwrap();
        let wd = i.watch(&d).unwrap();
        assert_eq!(i.watch(&d).unwrap(), wd, "one watch per directory");
        std::fs::write(d.join("unrelated"), "x").unwrap();
        crate::enrich::atomic_volume::testing::write(&d, "..2026_01_01_00_00_01.2", &[("a", "2")]);
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), i.changed()).await.unwrap().unwrap();
        assert_eq!(got, [wd]);
        i.unwatch(wd);
        assert!(i.users.contains_key(&wd), "still used once");
        i.unwatch(wd);
        assert!(i.users.is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }
}
