//! Reading a layer directory whose names the container controls: every name
//! is opened relative to its parent's descriptor and never through a
//! symlink, so an entry swapped for a symlink mid-walk cannot lead the walk
//! (or a hash) out of the layer onto the host.

use std::{
    ffi::{CString, OsStr, OsString},
    fs::File,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::ffi::{OsStrExt, OsStringExt},
    },
    path::Path,
};

/// What an entry is, as the diff reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// Devices, fifos, sockets.
    Other,
}

/// An entry's `lstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    /// The whole `st_mode` (type and permission bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub rdev: u64,
}

impl Meta {
    fn of(st: &libc::stat) -> Meta {
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        };
        Meta {
            kind,
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size.max(0) as u64,
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec,
            rdev: st.st_rdev,
        }
    }

    /// Permission bits with setuid, setgid and sticky.
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }

    /// overlayfs's classic whiteout: a character device 0:0.
    pub fn is_char_whiteout(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFCHR && self.rdev == 0
    }
}

/// The overlayfs xattrs of a directory or file (`trusted.overlay.*`, or
/// `user.overlay.*` on a `userxattr` mount).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlay {
    /// `opaque` = "y": the directory hides what the layers below have.
    pub opaque: bool,
    /// `opaque` = "x" (6.8+) or `whiteouts` (6.7): some entries are xattr whiteouts.
    pub xattr_whiteouts: bool,
    /// A zero-size file with `whiteout`: the xattr form of a whiteout.
    pub whiteout: bool,
    /// `metacopy`: the upper file holds metadata only, its data is below.
    pub metacopy: bool,
    /// `redirect`: where below a renamed directory (or metacopy file) comes from.
    pub redirect: Option<Vec<u8>>,
}

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name with a NUL byte"))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// The overlay xattrs of an open descriptor.
fn overlay_of(fd: RawFd) -> io::Result<Overlay> {
    let mut list = vec![0u8; 256];
    let n = loop {
        // SAFETY: the buffer is valid for its length.
        let n = unsafe { libc::flistxattr(fd, list.as_mut_ptr().cast(), list.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) if list.len() < 1 << 16 => list.resize(list.len() * 4, 0),
            // A filesystem without xattrs has no overlay markers.
            Some(libc::ENOTSUP) => return Ok(Overlay::default()),
            _ => return Err(e),
        }
    };
    let mut o = Overlay::default();
    for name in list[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Some(key) = name.strip_prefix(b"trusted.overlay.").or_else(|| name.strip_prefix(b"user.overlay.")) else {
            continue;
        };
        match key {
            b"opaque" => match get(fd, name)?.as_deref() {
                Some(b"y") => o.opaque = true,
                Some(b"x") => o.xattr_whiteouts = true,
                _ => {}
            },
            b"whiteouts" => o.xattr_whiteouts = true,
            b"whiteout" => o.whiteout = true,
            b"metacopy" => o.metacopy = true,
            b"redirect" => o.redirect = get(fd, name)?.filter(|r| !r.is_empty()),
            _ => {}
        }
    }
    Ok(o)
}

/// One xattr's value (at most 4 KiB: overlay values are short), `None` when
/// it vanished meanwhile.
fn get(fd: RawFd, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let name = CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "xattr name"))?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: name is NUL-terminated, the buffer is valid for its length.
    let n = unsafe { libc::fgetxattr(fd, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENODATA) { Ok(None) } else { Err(e) };
    }
    buf.truncate(n as usize);
    Ok(Some(buf))
}

/// An open directory of a layer, with its overlay xattrs.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    pub overlay: Overlay,
}

impl Dir {
    /// A layer's root (a host path from mountinfo, so symlinks in it are the
    /// host's own and followed).
    pub fn open(path: &Path) -> io::Result<Dir> {
        let p = cstr(path.as_os_str())?;
        // SAFETY: p is NUL-terminated; the descriptor returned is owned below.
        let fd = check(unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) })?;
        // SAFETY: fd was just opened and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let overlay = overlay_of(fd.as_raw_fd())?;
        Ok(Dir { fd, overlay })
    }

    /// The subdirectory `name`, which must be a directory and not a symlink.
    pub fn open_dir(&self, name: &OsStr) -> io::Result<Dir> {
        let n = cstr(name)?;
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: n is NUL-terminated; the descriptor returned is owned below.
        let fd = check(unsafe { libc::openat(self.fd.as_raw_fd(), n.as_ptr(), flags) })?;
        // SAFETY: fd was just opened and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let overlay = overlay_of(fd.as_raw_fd())?;
        Ok(Dir { fd, overlay })
    }

    /// `lstat` of `name`.
    pub fn stat(&self, name: &OsStr) -> io::Result<Meta> {
        let n = cstr(name)?;
        // SAFETY: an all-zero stat is valid; fstatat fills it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: n is NUL-terminated, st is a valid out pointer.
        check(unsafe { libc::fstatat(self.fd.as_raw_fd(), n.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
        Ok(Meta::of(&st))
    }

    /// The names in this directory (not `.` and `..`), in no order.
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        // fdopendir takes ownership of its descriptor: give it a duplicate,
        // which also starts its own reading from the top (rewinddir).
        // SAFETY: fcntl on a descriptor we own.
        let dup = check(unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
        // SAFETY: dup is a fresh directory descriptor.
        let dirp = unsafe { libc::fdopendir(dup) };
        if dirp.is_null() {
            let e = io::Error::last_os_error();
            // SAFETY: fdopendir failed, so dup is still ours to close.
            unsafe { libc::close(dup) };
            return Err(e);
        }
        // SAFETY: dirp is a valid DIR*.
        unsafe { libc::rewinddir(dirp) };
        let mut out = Vec::new();
        let result = loop {
            // SAFETY: errno is thread-local; cleared to tell end from error.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: dirp is valid until closedir below.
            let ent = unsafe { libc::readdir(dirp) };
            if ent.is_null() {
                let e = io::Error::last_os_error();
                break if e.raw_os_error().unwrap_or(0) == 0 { Ok(()) } else { Err(e) };
            }
            // SAFETY: d_name is NUL-terminated within the entry readdir returned.
            let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
            if name != b"." && name != b".." {
                out.push(OsString::from_vec(name.to_vec()));
            }
        };
        // SAFETY: dirp is valid; this also closes dup.
        unsafe { libc::closedir(dirp) };
        result.map(|()| out)
    }

    /// The target of the symlink `name`.
    pub fn readlink(&self, name: &OsStr) -> io::Result<Vec<u8>> {
        let n = cstr(name)?;
        let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
        // SAFETY: n is NUL-terminated, the buffer is valid for its length.
        let len = unsafe { libc::readlinkat(self.fd.as_raw_fd(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if len < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.truncate(len as usize);
        Ok(buf)
    }

    /// Opens the regular file `name` for reading: never through a symlink,
    /// never blocking on a fifo, without touching its access time when the
    /// kernel lets us. Fails on anything that is not a regular file now.
    pub fn open_file(&self, name: &OsStr) -> io::Result<File> {
        let n = cstr(name)?;
        let base = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
        // SAFETY: n is NUL-terminated.
        let mut fd = unsafe { libc::openat(self.fd.as_raw_fd(), n.as_ptr(), base | libc::O_NOATIME) };
        if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
            // O_NOATIME needs ownership or CAP_FOWNER.
            // SAFETY: as above.
            fd = unsafe { libc::openat(self.fd.as_raw_fd(), n.as_ptr(), base) };
        }
        check(fd)?;
        // SAFETY: fd was just opened and is owned by nobody else.
        let f = unsafe { File::from_raw_fd(fd) };
        if !f.metadata()?.file_type().is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "no longer a regular file"));
        }
        Ok(f)
    }
}

/// The overlay xattrs of an open file.
pub fn overlay_of_file(f: &File) -> io::Result<Overlay> {
    overlay_of(f.as_raw_fd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_stats_links_and_refuses_symlinks() {
        let root = std::env::temp_dir().join(format!("dw-fsat-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("l")).unwrap();
        let d = Dir::open(&root).unwrap();
        let mut names = d.names().unwrap();
        names.sort();
        assert_eq!(names, ["d", "f", "l"]);
        // A second listing of the same directory starts over.
        assert_eq!(d.names().unwrap().len(), 3);
        assert_eq!(d.stat(OsStr::new("l")).unwrap().kind, Kind::Symlink);
        assert_eq!(d.stat(OsStr::new("f")).unwrap().size, 1);
        assert_eq!(d.readlink(OsStr::new("l")).unwrap(), b"/etc");
        assert!(d.open_dir(OsStr::new("l")).is_err(), "a symlink to a directory is not walked");
        assert!(d.open_file(OsStr::new("l")).is_err(), "a symlink is not opened");
        assert!(d.open_file(OsStr::new("d")).is_err());
        assert!(d.open_file(OsStr::new("f")).is_ok());
        assert_eq!(d.open_dir(OsStr::new("d")).unwrap().overlay, Overlay::default());
        let _ = std::fs::remove_dir_all(&root);
    }
}
