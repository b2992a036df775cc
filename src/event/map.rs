//! Executable mappings (`DW_KIND_MAP`): a container process mapped a file
//! that is not from the image with `PROT_EXEC` (the dynamic loader mapping a
//! dropped library or program, a `dlopen`, an `mprotect`).

use super::{CgroupLevels, DecodeError, ExeSource, Process, c_str_len, c_string_len, process, split_args, view_pod};
use crate::abi;

/// A drifted executable mapping; the kernel sends each (container, inode) once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEvent {
    pub proc: Process,
    /// Where the mapped file lives (always a drift value: the kernel filters the image).
    pub source: ExeSource,
    pub ino: u64,
    /// `PROT_*` asked for.
    pub prot: u32,
    /// PROT_EXEC came from mprotect() on an existing file mapping.
    pub mprotect: bool,
    /// Protect mode sent SIGKILL before the mapped code ran.
    pub killed: bool,
    /// The mapped file, as the container sees it.
    pub path: String,
    /// The mapping process's executable (the loader for `ld.so /tmp/payload`).
    pub exe: super::Text,
    pub args: super::Args,
    pub path_truncated: bool,
    pub exe_truncated: bool,
    pub args_truncated: bool,
    /// Names that were not UTF-8 and are escaped (`crate::escape`).
    pub path_escaped: bool,
    pub exe_escaped: bool,
    pub args_escaped: bool,
}

pub(super) fn decode_map(buf: &[u8]) -> Result<MapEvent, DecodeError> {
    let r = view_pod::<abi::dw_map>(buf, "map record")?;
    let source = ExeSource::from_raw(r.source)?;
    let cgroup: &CgroupLevels = &r.cgroup;
    let flag = |bit: u32| r.flags & bit != 0;
    let ((path, path_escaped), (exe, exe_escaped)) = (c_string_len(&r.path, r.path_len), c_str_len(&r.exe, r.exe_len));
    let (args, args_escaped) = split_args(&r.args, r.args_len);
    Ok(MapEvent {
        proc: process(&r.hdr, r.ppid, r.uid, r.mntns_id, &r.comm, (cgroup, r.cgroup_key), r.origin)?,
        source,
        ino: r.ino,
        prot: r.prot,
        mprotect: flag(abi::DW_MAP_MPROTECT),
        killed: flag(abi::DW_MAP_KILLED),
        path,
        exe,
        args,
        path_truncated: flag(abi::DW_MAP_PATH_TRUNC),
        exe_truncated: flag(abi::DW_MAP_EXE_TRUNC),
        args_truncated: flag(abi::DW_MAP_ARGS_TRUNC),
        path_escaped,
        exe_escaped,
        args_escaped,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::{Event, decode};
    use super::*;
    use std::mem::size_of;

    fn put(dst: &mut [std::ffi::c_char], s: &[u8]) {
        for (d, b) in dst.iter_mut().zip(s) {
            *d = *b as std::ffi::c_char;
        }
    }

    /// A well-formed map record, as the kernel would write it.
    pub(crate) fn map_record(f: impl FnOnce(&mut abi::dw_map)) -> Vec<u8> {
        let mut r = abi::dw_map::default();
        r.hdr.kind = abi::DW_KIND_MAP as u16;
        r.hdr.size = size_of::<abi::dw_map>() as u16;
        r.hdr.tgid = 42;
        r.ppid = 7;
        r.ino = 99;
        r.source = abi::DW_SRC_UPPER;
        r.prot = 5;
        put(&mut r.comm, b"true");
        put(&mut r.path, b"/tmp/evil.so");
        r.path_len = 12;
        put(&mut r.exe, b"/usr/bin/true");
        r.exe_len = 13;
        put(&mut r.args, b"/bin/true\0");
        r.args_len = 10;
        put(&mut r.cgroup[0], b"0123");
        put(&mut r.cgroup[1], b"k8s.io");
        f(&mut r);
        let mut v = vec![0u8; size_of::<abi::dw_map>()];
        // SAFETY: writing a POD into a buffer of exactly its size.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast::<abi::dw_map>(), r) };
        v
    }

    #[test]
    fn decodes_map() {
        let Event::Map(e) = decode(&map_record(|_| {})).unwrap() else { panic!("not map") };
        assert_eq!((e.proc.tgid, e.proc.ppid, e.ino, e.prot), (42, 7, 99, 5));
        assert_eq!((e.path.as_str(), e.exe.as_str()), ("/tmp/evil.so", "/usr/bin/true"));
        assert_eq!(e.args.as_slice(), ["/bin/true"]);
        assert_eq!(e.source, ExeSource::UpperLayer);
        assert_eq!(&*e.proc.cgroup_path, "k8s.io/0123");
        assert!(!e.mprotect && !e.killed && !e.path_truncated);
        let flags = abi::DW_MAP_MPROTECT | abi::DW_MAP_KILLED | abi::DW_MAP_EXE_TRUNC;
        let Event::Map(e) = decode(&map_record(|r| r.flags = flags)).unwrap() else { panic!("not map") };
        assert!(e.mprotect && e.killed && e.exe_truncated && !e.args_truncated);
        assert_eq!(Event::Map(e).kind(), "map");
    }

    #[test]
    fn rejects_bad_map_records() {
        assert_eq!(decode(&map_record(|r| r.source = 77)).unwrap_err().reason(), "bad_value");
        assert_eq!(decode(&map_record(|r| r.origin = 9)).unwrap_err().reason(), "bad_value");
        let rec = map_record(|_| {});
        assert_eq!(decode(&rec[..rec.len() - 1]).unwrap_err().reason(), "bad_size");
        assert_eq!(decode(&map_record(|r| r.hdr.size = 40)).unwrap_err().reason(), "truncated");
        // Lengths beyond the buffers are clamped, never trusted.
        let Event::Map(e) = decode(&map_record(|r| r.path_len = u16::MAX)).unwrap() else { panic!("not map") };
        assert_eq!(e.path, "/tmp/evil.so");
    }
}
