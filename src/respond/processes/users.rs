//! User names from a container's own `/etc/passwd`, read through
//! `/proc/<pid>/root` with `openat2(RESOLVE_IN_ROOT)`: a symlink in the
//! container (`/etc/passwd -> /host/etc/shadow`, `../../..`) resolves inside
//! the container's root, never the agent's. Only a regular file, and only its
//! first [`MAX_PASSWD`] bytes, are read. Where any of that cannot be done
//! (a kernel before 5.6, a special file), the name is left out.

use std::{
    collections::HashMap,
    ffi::CString,
    fs::File,
    io::Read,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    os::unix::fs::MetadataExt,
};

/// Bytes of a passwd file read at most.
pub const MAX_PASSWD: u64 = 1 << 20;

/// `struct open_how` (linux/openat2.h); libc's is non-exhaustive.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens `rel` below the directory `root` as if `root` were `/`.
fn open_in_root(root: &File, rel: &str) -> Option<File> {
    let path = CString::new(rel).ok()?;
    let how = OpenHow {
        // O_NONBLOCK: a FIFO planted at /etc/passwd must not hang the scan.
        flags: (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 reads `path` and `how` (ours, alive for the call) and
    // returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(libc::SYS_openat2, root.as_raw_fd(), path.as_ptr(), &how as *const OpenHow, size_of::<OpenHow>())
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    Some(File::from(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
}

/// `name:passwd:uid:...` lines -> uid -> name (the first line of a uid wins).
pub fn parse_passwd(text: &str) -> HashMap<u32, String> {
    let mut m = HashMap::new();
    for line in text.lines() {
        let mut f = line.split(':');
        let (Some(name), Some(_), Some(uid)) = (f.next(), f.next(), f.next()) else { continue };
        if name.is_empty() || name.starts_with('#') || name.starts_with('+') || name.starts_with('-') {
            continue;
        }
        if let Ok(uid) = uid.trim().parse::<u32>() {
            m.entry(uid).or_insert_with(|| name.to_string());
        }
    }
    m
}

/// The passwd table of `pid`'s root directory, if it can be read safely.
fn passwd_of_root(root: &File) -> Option<HashMap<u32, String>> {
    let f = open_in_root(root, "etc/passwd")?;
    if !f.metadata().ok()?.file_type().is_file() {
        return None;
    }
    let mut buf = Vec::new();
    f.take(MAX_PASSWD).read_to_end(&mut buf).ok()?;
    Some(parse_passwd(&String::from_utf8_lossy(&buf)))
}

/// Names per root directory: the processes of a container share one root,
/// so its passwd file is read once.
#[derive(Debug, Default)]
pub struct Users {
    by_root: HashMap<(u64, u64), Option<HashMap<u32, String>>>,
}

impl Users {
    /// The name of `uid` in the passwd file of `pid`'s root (None: unknown,
    /// or not readable safely).
    pub fn name(&mut self, pid: u32, uid: u32) -> Option<String> {
        let root = File::open(format!("/proc/{pid}/root")).ok()?;
        let meta = root.metadata().ok()?;
        self.by_root
            .entry((meta.dev(), meta.ino()))
            .or_insert_with(|| passwd_of_root(&root))
            .as_ref()?
            .get(&uid)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let m = parse_passwd(
            "root:x:0:0:root:/root:/bin/sh\n#c:x:5:5\nnobody:x:65534:65534::/:/bin/false\nbad\ndup:x:0:0\n+nis::::\n",
        );
        assert_eq!(m.get(&0).map(String::as_str), Some("root"));
        assert_eq!(m.get(&65534).map(String::as_str), Some("nobody"));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = std::env::temp_dir().join(format!("dw-users-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let outside = dir.join("outside");
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("passwd"), "secret:x:0:0::/:/bin/sh\n").unwrap();
        // An absolute symlink to a host file: resolved inside `root`, where it does not exist.
        std::os::unix::fs::symlink(outside.join("passwd"), root.join("etc/passwd")).unwrap();
        let r = File::open(&root).unwrap();
        assert!(passwd_of_root(&r).is_none(), "the host's file must not be read");
        // A relative one climbing out: clamped at the root.
        std::fs::remove_file(root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("../../outside/passwd", root.join("etc/passwd")).unwrap();
        assert!(passwd_of_root(&r).is_none());
        // A symlink inside the root is followed.
        std::fs::remove_file(root.join("etc/passwd")).unwrap();
        std::fs::write(root.join("etc/passwd.real"), "app:x:1000:1000::/:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd.real", root.join("etc/passwd")).unwrap();
        assert_eq!(passwd_of_root(&r).unwrap().get(&1000).map(String::as_str), Some("app"));
        // A directory is not read.
        std::fs::remove_file(root.join("etc/passwd")).unwrap();
        std::fs::create_dir(root.join("etc/passwd")).unwrap();
        assert!(passwd_of_root(&r).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn our_own_root() {
        let mut u = Users::default();
        assert_eq!(u.name(std::process::id(), 0).as_deref(), Some("root"));
    }
}
