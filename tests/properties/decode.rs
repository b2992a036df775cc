//! `event::decode`: any bytes are safe to decode, and records written the way
//! the kernel writes them (the bindgen structs of `abi.h`, any field values)
//! decode to exactly what they hold.
//!
//! Names are lossless: valid UTF-8 comes out byte for byte and unmarked; any
//! other name comes out escaped and marked, and unescapes to its exact bytes
//! (`driftwatch::escape`).

use driftwatch::abi;
use driftwatch::enrich::cgroup::container_from_cgroup_path;
use driftwatch::event::{DecodeError, Event, ExeSource, FileOp, NetOp, Origin, Transport, decode};
use proptest::prelude::*;
use std::ffi::c_char;
use std::mem::size_of;

const HDR: usize = size_of::<abi::dw_header>();
const CG_LEN: usize = abi::DW_CGROUP_NAME_LEN as usize;
const CG_LEVELS: usize = abi::DW_CGROUP_LEVELS as usize;

// --- reading under a guard page ---------------------------------------------------

/// A buffer that ends where an inaccessible page begins.
struct Guarded {
    base: *mut u8,
    room: usize,
}

impl Guarded {
    fn new() -> Guarded {
        // SAFETY: plain anonymous mappings; the pointer is checked.
        unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
            let room = 4 * page;
            let base = libc::mmap(
                std::ptr::null_mut(),
                room + page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(base, libc::MAP_FAILED, "mmap");
            let base = base.cast::<u8>();
            assert_eq!(libc::mprotect(base.add(room).cast(), page, libc::PROT_NONE), 0, "mprotect");
            Guarded { base, room }
        }
    }
}

thread_local! {
    static GUARD: Guarded = Guarded::new();
}

/// `decode(buf)` with `buf` copied so that its last byte is the last readable
/// byte before a `PROT_NONE` page: reading one byte past the record faults
/// (SIGSEGV) instead of passing silently. The copy is at an arbitrary alignment.
fn decode_guarded(buf: &[u8]) -> Result<Event, DecodeError> {
    GUARD.with(|g| {
        assert!(buf.len() <= g.room, "test buffer too large: {}", buf.len());
        // SAFETY: the destination lies inside the writable part of the mapping,
        // which only this thread uses; the slice does not outlive the call and
        // decode returns owned data.
        unsafe {
            let at = g.base.add(g.room - buf.len());
            std::ptr::copy_nonoverlapping(buf.as_ptr(), at, buf.len());
            decode(std::slice::from_raw_parts(at, buf.len()))
        }
    })
}

// --- records --------------------------------------------------------------------

/// The bytes of a record struct (the ABI structs have no padding: see src/abi.rs).
fn bytes_of<T: Copy>(r: &T) -> Vec<u8> {
    let mut v = vec![0u8; size_of::<T>()];
    // SAFETY: writing a POD into a buffer of exactly its size.
    unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast::<T>(), *r) };
    v
}

fn put(dst: &mut [c_char], src: &[u8]) {
    dst.fill(0);
    for (d, b) in dst.iter_mut().zip(src) {
        *d = *b as c_char;
    }
}

fn raw(src: &[c_char]) -> Vec<u8> {
    src.iter().map(|&c| c as u8).collect()
}

/// The bytes of a fixed buffer: valid text (ASCII, any Unicode, path-like),
/// raw bytes, with and without NULs, up to and beyond `max` bytes (a buffer the
/// kernel filled to the brim has no NUL terminator).
fn field_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::string::string_regex("[ -~]{0,40}").unwrap().prop_map(String::into_bytes),
        proptest::collection::vec(any::<char>(), 0..=max / 2)
            .prop_map(|v| v.into_iter().collect::<String>().into_bytes()),
        proptest::string::string_regex("(/[a-z0-9._-]{0,12}){0,6}/?").unwrap().prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..=max + 8),
        proptest::collection::vec(b'a'..=b'z', max..=max),
    ]
}

/// A length field: the content's length, anything up to the buffer, or any
/// u16 (a kernel bug or a corrupt record must not read past the buffer).
fn len_for(content: usize, max: usize) -> impl Strategy<Value = u16> {
    let content = content.min(max) as u16;
    prop_oneof![3 => Just(content), 1 => 0..=max as u16, 1 => any::<u16>()]
}

/// Bytes for a buffer of `max` and a length field for them.
fn sized_field(max: usize) -> impl Strategy<Value = (Vec<u8>, u16)> {
    field_bytes(max).prop_flat_map(move |b| {
        let n = b.len();
        (Just(b), len_for(n, max))
    })
}

/// `enum dw_exe_source` values, mostly valid.
fn source() -> impl Strategy<Value = u32> {
    prop_oneof![8 => 0u32..=6, 1 => 7u32..=16, 1 => any::<u32>()]
}

/// An argv as a list of arguments (empty ones included).
fn argv() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let arg = prop_oneof![
        4 => proptest::string::string_regex("[ -~]{0,24}").unwrap().prop_map(String::into_bytes),
        1 => Just(Vec::new()),
        1 => proptest::collection::vec(any::<char>().prop_filter("NUL ends an argument", |c| *c != '\0'), 0..8)
            .prop_map(|v| v.into_iter().collect::<String>().into_bytes()),
        1 => proptest::collection::vec(1u8..=255, 0..300),
    ];
    proptest::collection::vec(arg, 0..12)
}

/// Cgroup levels, leaf first, as the kernel fills them: names from real
/// layouts, random text, and 128-byte names with no NUL.
fn cgroup_levels() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let name = prop_oneof![
        3 => proptest::string::string_regex("[a-z0-9._:@-]{0,40}").unwrap().prop_map(String::into_bytes),
        1 => crate::hex(64).prop_map(String::into_bytes),
        1 => crate::hex(64).prop_map(|h| format!("cri-containerd-{h}.scope").into_bytes()),
        1 => field_bytes(CG_LEN),
    ];
    proptest::collection::vec(name, CG_LEVELS)
}

/// What the kernel writes for `argv`: each argument and its NUL, cut to the
/// buffer (then the length says the buffer's size and the flag is set).
fn argv_bytes(argv: &[Vec<u8>]) -> (Vec<u8>, bool) {
    let mut b: Vec<u8> = argv.iter().flat_map(|a| a.iter().copied().chain([0])).collect();
    let cut = b.len() > abi::DW_ARGS_LEN as usize;
    b.truncate(abi::DW_ARGS_LEN as usize);
    (b, cut)
}

/// A fixed buffer's bytes up to its last non-NUL byte, escaped.
fn shown(buf: &[c_char]) -> String {
    let b = raw(buf);
    let end = b.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
    b[..end].escape_ascii().to_string()
}

fn shown_levels(cg: &[[c_char; CG_LEN]]) -> Vec<String> {
    cg.iter().map(|l| shown(l)).collect()
}

/// Generated records print their fields, strings escaped, not 2 KiB of numbers.
#[derive(Clone)]
struct Net(abi::dw_net);
#[derive(Clone)]
struct File(abi::dw_file);

impl std::fmt::Debug for ExecIn {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let r = &self.rec;
        f.debug_struct("dw_exec")
            .field("hdr", &r.hdr)
            .field("ids", &(r.ppid, r.uid, r.gid, r.mntns, r.exe_ino, r.mntns_id, r.env_loader))
            .field("flags", &format_args!("{:#x}", r.flags))
            .field("sources", &(r.exe_source, r.script_source))
            .field("comm", &shown(&r.comm))
            .field("parent_comm", &shown(&r.parent_comm))
            .field("path", &(r.path_len, shown(&r.path)))
            .field("script", &(r.script_len, shown(&r.script)))
            .field("args", &(r.args_len, shown(&r.args)))
            .field("cgroup", &shown_levels(&r.cgroup))
            .field("origin", &r.origin)
            .field(
                "argv",
                &self
                    .argv
                    .as_ref()
                    .map(|(a, cut)| (a.iter().map(|a| a.escape_ascii().to_string()).collect::<Vec<_>>(), cut)),
            )
            .finish()
    }
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let r = &self.0;
        f.debug_struct("dw_net")
            .field("hdr", &r.hdr)
            .field("ids", &(r.mntns_id, r.ppid, r.uid))
            .field("op_family_type_port", &(r.op, r.family, r.sock_type, r.port))
            .field("addr", &r.addr)
            .field("comm", &shown(&r.comm))
            .field("cgroup", &shown_levels(&r.cgroup))
            .field("origin", &r.origin)
            .finish()
    }
}

impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let r = &self.0;
        f.debug_struct("dw_file")
            .field("hdr", &r.hdr)
            .field("ids", &(r.mntns_id, r.ino, r.ppid, r.uid))
            .field("op_flags_source", &(r.op, r.flags, r.source))
            .field("mode_owner", &(r.mode, r.owner_uid, r.owner_gid))
            .field("comm", &shown(&r.comm))
            .field("path", &(r.path_len, shown(&r.path)))
            .field("path2", &(r.path2_len, shown(&r.path2)))
            .field("cgroup", &shown_levels(&r.cgroup))
            .field("origin", &r.origin)
            .finish()
    }
}

#[derive(Clone)]
struct ExecIn {
    rec: abi::dw_exec,
    /// The argv the args buffer was made from, when its length field is the kernel's.
    argv: Option<(Vec<Vec<u8>>, bool)>,
}

fn exec_record() -> impl Strategy<Value = ExecIn> {
    let hdr = (any::<u64>(), any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>());
    let ids = (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>(), any::<u64>(), any::<u64>(), any::<u16>());
    let kinds = (any::<u32>(), any::<bool>(), source(), source());
    let names = (field_bytes(16), field_bytes(16), sized_field(512), sized_field(256));
    let args = prop_oneof![
        3 => argv().prop_map(|a| (a, None)),
        1 => sized_field(512).prop_map(|(b, l)| (vec![b], Some(l))),
    ];
    (hdr, ids, kinds, names, args, cgroup_levels(), origin()).prop_map(
        |(
            (ktime, cgid, cpu, tgid, pid),
            (ppid, uid, gid, mntns, ino, mntns_id, env),
            (flags, script, exe_source, script_source),
            (comm, parent, (path, path_len), (scr, script_len)),
            (args, args_len),
            cg,
            origin,
        )| {
            let mut r = abi::dw_exec { origin, ..Default::default() };
            r.hdr.kind = abi::DW_KIND_EXEC as u16;
            r.hdr.size = size_of::<abi::dw_exec>() as u16;
            (r.hdr.ktime_ns, r.hdr.cgroup_id, r.hdr.cpu, r.hdr.tgid, r.hdr.pid) = (ktime, cgid, cpu, tgid, pid);
            (r.ppid, r.uid, r.gid, r.mntns, r.exe_ino, r.mntns_id, r.env_loader) =
                (ppid, uid, gid, mntns, ino, mntns_id, env);
            r.flags = if script { flags | abi::DW_EXEC_SCRIPT } else { flags & !abi::DW_EXEC_SCRIPT };
            (r.exe_source, r.script_source) = (exe_source, script_source);
            put(&mut r.comm, &comm);
            put(&mut r.parent_comm, &parent);
            put(&mut r.path, &path);
            r.path_len = path_len;
            put(&mut r.script, &scr);
            r.script_len = script_len;
            for (level, name) in r.cgroup.iter_mut().zip(&cg) {
                put(level, name);
            }
            let argv = match args_len {
                Some(len) => {
                    put(&mut r.args, &args[0]);
                    r.args_len = len;
                    None
                }
                None => {
                    let (b, cut) = argv_bytes(&args);
                    put(&mut r.args, &b);
                    r.args_len = b.len() as u16;
                    Some((args, cut))
                }
            };
            ExecIn { rec: r, argv }
        },
    )
}

fn net_record() -> impl Strategy<Value = Net> {
    let hdr = (any::<u64>(), any::<u32>(), any::<u64>(), any::<u32>(), any::<u32>());
    let op = prop_oneof![8 => 1u16..=3, 1 => any::<u16>()];
    let family = prop_oneof![4 => Just(2u16), 4 => Just(10u16), 1 => any::<u16>()];
    let sock = prop_oneof![8 => 1u16..=2, 1 => any::<u16>()];
    let what = (op, family, sock, any::<u16>(), any::<[u8; 16]>());
    (hdr, what, field_bytes(16), cgroup_levels(), origin()).prop_map(
        |((ktime, tgid, mntns_id, ppid, uid), (op, family, sock_type, port, addr), comm, cg, origin)| {
            let mut r = abi::dw_net { origin, ..Default::default() };
            r.hdr.kind = abi::DW_KIND_NET as u16;
            r.hdr.size = size_of::<abi::dw_net>() as u16;
            (r.hdr.ktime_ns, r.hdr.tgid, r.mntns_id, r.ppid, r.uid) = (ktime, tgid, mntns_id, ppid, uid);
            (r.op, r.family, r.sock_type, r.port, r.addr) = (op, family, sock_type, port, addr);
            put(&mut r.comm, &comm);
            for (level, name) in r.cgroup.iter_mut().zip(&cg) {
                put(level, name);
            }
            Net(r)
        },
    )
}

fn file_record() -> impl Strategy<Value = File> {
    let hdr = (any::<u64>(), any::<u32>(), any::<u64>(), any::<u64>(), any::<u32>(), any::<u32>());
    let op = prop_oneof![8 => 1u16..=9, 1 => any::<u16>()];
    let what = (op, any::<u16>(), source(), any::<u32>(), any::<u32>(), any::<u32>());
    (hdr, what, field_bytes(16), sized_field(512), sized_field(256), cgroup_levels(), origin()).prop_map(
        |(
            (ktime, tgid, mntns_id, ino, ppid, uid),
            (op, flags, src, mode, ouid, ogid),
            comm,
            (path, path_len),
            (path2, path2_len),
            cg,
            origin,
        )| {
            let mut r = abi::dw_file { origin, ..Default::default() };
            r.hdr.kind = abi::DW_KIND_FILE as u16;
            r.hdr.size = size_of::<abi::dw_file>() as u16;
            (r.hdr.ktime_ns, r.hdr.tgid, r.mntns_id, r.ino, r.ppid, r.uid) = (ktime, tgid, mntns_id, ino, ppid, uid);
            (r.op, r.flags, r.source, r.mode, r.owner_uid, r.owner_gid) = (op, flags, src, mode, ouid, ogid);
            put(&mut r.comm, &comm);
            put(&mut r.path, &path);
            r.path_len = path_len;
            put(&mut r.path2, &path2);
            r.path2_len = path2_len;
            for (level, name) in r.cgroup.iter_mut().zip(&cg) {
                put(level, name);
            }
            File(r)
        },
    )
}

/// Any well-formed record of any kind, as bytes.
fn any_record() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        exec_record().prop_map(|e| bytes_of(&e.rec)),
        net_record().prop_map(|r| bytes_of(&r.0)),
        file_record().prop_map(|r| bytes_of(&r.0)),
    ]
}

// --- the model: what each field must decode to -----------------------------------

/// Bytes of a string field: the first `len` bytes (clamped to the buffer), up to
/// the first NUL.
fn str_bytes(buf: &[c_char], len: Option<u16>) -> Vec<u8> {
    let b = raw(buf);
    let b = &b[..len.map_or(b.len(), |l| (l as usize).min(b.len()))];
    b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())].to_vec()
}

/// Checks a decoded name against the bytes it came from: lossless (the text,
/// unescaped when marked, is exactly those bytes), marked exactly when they
/// are not UTF-8, and unchanged text when they are.
fn same_name(got: &str, escaped: bool, want: &[u8], what: &str) -> Result<(), TestCaseError> {
    let raw = driftwatch::escape::raw(got, escaped);
    prop_assert_eq!(raw.as_ref(), want, "{} {:?} (escaped: {})", what, got, escaped);
    prop_assert_eq!(escaped, std::str::from_utf8(want).is_err(), "{} {:?}: marked wrongly", what, got);
    Ok(())
}

/// Like [`same_name`] for one of a list marked as a whole (argv): once one
/// item is escaped, all are.
fn same_in_list(got: &str, escaped: bool, want: &[u8], what: &str) -> Result<(), TestCaseError> {
    let raw = driftwatch::escape::raw(got, escaped);
    prop_assert_eq!(raw.as_ref(), want, "{} {:?} (escaped: {})", what, got, escaped);
    Ok(())
}

/// `enum dw_origin`: mostly valid, sometimes not.
fn origin() -> impl Strategy<Value = u32> {
    prop_oneof![8 => 0u32..=1, 1 => any::<u32>()]
}

fn origin_of(v: u32) -> Option<Origin> {
    match v {
        abi::DW_ORIGIN_CONTAINER => Some(Origin::Container),
        abi::DW_ORIGIN_EXEC_SESSION => Some(Origin::ExecSession),
        _ => None,
    }
}

fn source_of(v: u32) -> Option<ExeSource> {
    Some(match v {
        abi::DW_SRC_UNKNOWN => ExeSource::Unknown,
        abi::DW_SRC_IMAGE => ExeSource::Image,
        abi::DW_SRC_UPPER => ExeSource::UpperLayer,
        abi::DW_SRC_MEMFD => ExeSource::Memfd,
        abi::DW_SRC_DELETED => ExeSource::Deleted,
        abi::DW_SRC_TMPFS => ExeSource::Tmpfs,
        abi::DW_SRC_VOLUME => ExeSource::Volume,
        _ => return None,
    })
}

/// The cgroup path the levels (leaf first) spell, root first, when every
/// level is valid UTF-8.
fn cgroup_path(levels: &[[c_char; CG_LEN]]) -> Option<String> {
    let mut names = Vec::new();
    for l in levels.iter().rev() {
        let b = str_bytes(l, None);
        if !b.is_empty() {
            names.push(String::from_utf8(b).ok()?);
        }
    }
    Some(names.join("/"))
}

fn check_process(
    p: &driftwatch::event::Process,
    comm: &[c_char],
    cg: &[[c_char; CG_LEN]],
) -> Result<(), TestCaseError> {
    same_name(&p.comm, p.comm_escaped, &str_bytes(comm, None), "comm")?;
    if let Some(want) = cgroup_path(cg) {
        prop_assert_eq!(&*p.cgroup_path, want.as_str());
    }
    Ok(())
}

/// The path the kernel's `/root/./run.sh` names: no `.` or empty components.
fn clean_script(p: &str) -> String {
    if !p.starts_with('/') {
        return p.to_string();
    }
    let parts: Vec<&str> = p.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    format!("/{}", parts.join("/"))
}

fn check_exec(input: &ExecIn, got: Result<Event, DecodeError>) -> Result<(), TestCaseError> {
    let r = &input.rec;
    let script = r.flags & abi::DW_EXEC_SCRIPT != 0;
    let (Some(exe_source), Some(script_source), Some(origin)) = (
        source_of(r.exe_source),
        if script { source_of(r.script_source) } else { Some(ExeSource::Unknown) },
        origin_of(r.origin),
    ) else {
        prop_assert_eq!(got.map_err(|e| e.reason()).err(), Some("bad_value"));
        return Ok(());
    };
    let got = got.map_err(|e| TestCaseError::fail(format!("well-formed exec record rejected: {e}")))?;
    let Event::Exec(e) = got else { return Err(TestCaseError::fail(format!("not an exec: {got:?}"))) };
    prop_assert_eq!(e.proc.ktime_ns, r.hdr.ktime_ns);
    prop_assert_eq!((e.proc.tgid, e.proc.ppid, e.proc.uid, e.gid), (r.hdr.tgid, r.ppid, r.uid, r.gid));
    prop_assert_eq!((e.proc.mntns_id, e.ino, e.env_loader), (r.mntns_id, r.exe_ino, r.env_loader));
    prop_assert_eq!(e.flags.0, r.flags);
    prop_assert_eq!(e.exe_source, exe_source);
    prop_assert_eq!(e.proc.origin, origin);
    check_process(&e.proc, &r.comm, &r.cgroup)?;
    same_name(&e.parent_comm, e.parent_comm_escaped, &str_bytes(&r.parent_comm, None), "parent_comm")?;
    same_name(&e.path, e.path_escaped, &str_bytes(&r.path, Some(r.path_len)), "path")?;
    match (&e.script, script) {
        (Some((path, src)), true) => {
            prop_assert_eq!(*src, script_source);
            let want = str_bytes(&r.script, Some(r.script_len));
            if let Ok(want) = std::str::from_utf8(&want) {
                prop_assert_eq!(path, &clean_script(want));
            }
        }
        (None, false) => {}
        (s, _) => return Err(TestCaseError::fail(format!("script {s:?} with flags {:#x}", r.flags))),
    }
    // argv: each argument, in order, empty ones too; a cut buffer ends with
    // the part of its last argument that fitted.
    let args_buf = str_args(&raw(&r.args), r.args_len);
    prop_assert_eq!(e.args.len(), args_buf.len(), "args {:?} from {:?}", e.args, args_buf);
    for (g, w) in e.args.iter().zip(&args_buf) {
        same_in_list(g, e.args_escaped, w, "argument")?;
    }
    prop_assert_eq!(e.args_escaped, args_buf.iter().any(|a| std::str::from_utf8(a).is_err()), "argv marked wrongly");
    if let Some((argv, cut)) = &input.argv {
        if !cut {
            prop_assert_eq!(&args_buf, argv, "argv does not round-trip");
        } else {
            prop_assert!(args_buf.len() <= argv.len());
        }
    }
    Ok(())
}

/// The arguments a NUL-separated argv buffer of `len` bytes holds: every
/// NUL ends one (empty arguments included); bytes after the last NUL are an
/// argument cut short. A length past the buffer (never the kernel's) reads
/// up to the last non-NUL byte and its terminator.
fn str_args(buf: &[u8], len: u16) -> Vec<Vec<u8>> {
    let b = match buf.get(..len as usize) {
        Some(b) => b,
        None => &buf[..buf.iter().rposition(|&c| c != 0).map_or(0, |i| (i + 2).min(buf.len()))],
    };
    if b.is_empty() {
        return Vec::new();
    }
    let b = b.strip_suffix(&[0]).unwrap_or(b);
    b.split(|&c| c == 0).map(<[u8]>::to_vec).collect()
}

fn check_net(r: &abi::dw_net, got: Result<Event, DecodeError>) -> Result<(), TestCaseError> {
    let op = match r.op as u32 {
        abi::DW_NET_CONNECT => Some(NetOp::Connect),
        abi::DW_NET_LISTEN => Some(NetOp::Listen),
        abi::DW_NET_BIND_UDP => Some(NetOp::BindUdp),
        _ => None,
    };
    let transport = match r.sock_type {
        1 => Some(Transport::Tcp),
        2 => Some(Transport::Udp),
        _ => None,
    };
    let addr: Option<std::net::IpAddr> = match r.family {
        2 => Some([r.addr[0], r.addr[1], r.addr[2], r.addr[3]].into()),
        10 => Some(r.addr.into()),
        _ => None,
    };
    let (Some(op), Some(transport), Some(addr), Some(origin)) = (op, transport, addr, origin_of(r.origin)) else {
        prop_assert_eq!(got.map_err(|e| e.reason()).err(), Some("bad_value"));
        return Ok(());
    };
    let got = got.map_err(|e| TestCaseError::fail(format!("well-formed net record rejected: {e}")))?;
    let Event::Net(e) = got else { return Err(TestCaseError::fail(format!("not a net event: {got:?}"))) };
    prop_assert_eq!((e.op, e.transport, e.addr, e.port), (op, transport, addr, r.port));
    prop_assert_eq!((e.proc.tgid, e.proc.ppid, e.proc.uid), (r.hdr.tgid, r.ppid, r.uid));
    prop_assert_eq!((e.proc.ktime_ns, e.proc.mntns_id, e.proc.origin), (r.hdr.ktime_ns, r.mntns_id, origin));
    check_process(&e.proc, &r.comm, &r.cgroup)
}

fn check_file(r: &abi::dw_file, got: Result<Event, DecodeError>) -> Result<(), TestCaseError> {
    let op = match r.op as u32 {
        abi::DW_FILE_WRITE => FileOp::Write,
        abi::DW_FILE_DELETE => FileOp::Delete,
        abi::DW_FILE_RENAME => FileOp::Rename,
        abi::DW_FILE_CHMOD => FileOp::Chmod,
        abi::DW_FILE_LINK => FileOp::Link,
        abi::DW_FILE_SYMLINK => FileOp::Symlink,
        abi::DW_FILE_CHOWN => FileOp::Chown,
        abi::DW_FILE_MKDIR => FileOp::Mkdir,
        abi::DW_FILE_TRUNCATE => FileOp::Truncate,
        _ => {
            prop_assert_eq!(got.map_err(|e| e.reason()).err(), Some("bad_value"));
            return Ok(());
        }
    };
    let (Some(source), Some(origin)) = (source_of(r.source), origin_of(r.origin)) else {
        prop_assert_eq!(got.map_err(|e| e.reason()).err(), Some("bad_value"));
        return Ok(());
    };
    let got = got.map_err(|e| TestCaseError::fail(format!("well-formed file record rejected: {e}")))?;
    let Event::File(e) = got else { return Err(TestCaseError::fail(format!("not a file event: {got:?}"))) };
    let two_names = matches!(op, FileOp::Rename | FileOp::Link | FileOp::Symlink);
    prop_assert_eq!((e.op, e.source, e.mode), (op, source, r.mode));
    prop_assert_eq!(e.owner, (op == FileOp::Chown).then_some((r.owner_uid, r.owner_gid)));
    prop_assert_eq!(e.path_truncated, r.flags as u32 & abi::DW_FILE_PATH_TRUNC != 0);
    prop_assert_eq!(e.target_truncated, two_names && r.flags as u32 & abi::DW_FILE_PATH2_TRUNC != 0);
    prop_assert_eq!((e.proc.tgid, e.proc.ppid, e.proc.uid, e.proc.origin), (r.hdr.tgid, r.ppid, r.uid, origin));
    check_process(&e.proc, &r.comm, &r.cgroup)?;
    // `dir/` (mkdir -p) is the path `dir`; "/" stays "/".
    let mut path = str_bytes(&r.path, Some(r.path_len));
    while path.len() > 1 && path.ends_with(b"/") {
        path.pop();
    }
    same_name(&e.path, e.path_escaped, &path, "path")?;
    match (&e.target, two_names) {
        (Some(t), true) => same_name(t, e.target_escaped, &str_bytes(&r.path2, Some(r.path2_len)), "target")?,
        (None, false) => {}
        (t, _) => return Err(TestCaseError::fail(format!("target {t:?} for {op:?}"))),
    }
    Ok(())
}

/// `rec` with its header's kind and size replaced.
fn with_header(mut rec: Vec<u8>, kind: u16, size: u16) -> Vec<u8> {
    rec[0..2].copy_from_slice(&kind.to_ne_bytes());
    rec[2..4].copy_from_slice(&size.to_ne_bytes());
    rec
}

fn record_size(kind: u16) -> Option<usize> {
    match kind as u32 {
        abi::DW_KIND_EXEC => Some(size_of::<abi::dw_exec>()),
        abi::DW_KIND_NET => Some(size_of::<abi::dw_net>()),
        abi::DW_KIND_FILE => Some(size_of::<abi::dw_file>()),
        _ => None,
    }
}

proptest! {
    #![proptest_config(crate::config())]

    /// Any bytes: no panic, no read past the end, and the answer is an event
    /// or an error with a known reason label.
    #[test]
    fn any_bytes_decode_safely(buf in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2200),
        // Garbage behind a plausible header, so the kind decoders run too.
        (1u16..=3, proptest::collection::vec(any::<u8>(), 0..2200)).prop_map(|(k, mut b)| {
            b.resize(b.len().max(HDR), 0);
            let n = b.len() as u16;
            with_header(b, k, n)
        }),
    ]) {
        match decode_guarded(&buf) {
            Ok(ev) => prop_assert!(Event::KINDS.contains(&ev.kind())),
            Err(e) => prop_assert!(DecodeError::REASONS.contains(&e.reason()), "{e:?}"),
        }
    }

    /// The header decides first, and exactly: too short for a header is
    /// `truncated`; a declared size outside [header, buffer] is `bad_size`; an
    /// unknown kind is `unknown_kind`; a declared size below the kind's struct
    /// is `truncated`.
    #[test]
    fn header_size_and_kind_are_checked(
        rec in any_record(),
        kind in prop_oneof![3 => 1u16..=3, 1 => any::<u16>()],
        size in prop_oneof![
            Just(None),
            (0usize..HDR).prop_map(Some),
            (HDR..2100).prop_map(Some),
            any::<u16>().prop_map(|s| Some(s as usize)),
        ],
        cut in 0usize..2100,
    ) {
        let n = rec.len();
        let size = size.unwrap_or(n) as u16;
        let buf = with_header(rec, kind, size);
        let buf = &buf[..cut.min(n)];
        let want = if buf.len() < HDR {
            Err("truncated")
        } else if (size as usize) < HDR || size as usize > buf.len() {
            Err("bad_size")
        } else {
            match record_size(kind) {
                None => Err("unknown_kind"),
                Some(need) if (size as usize) < need => Err("truncated"),
                Some(_) => Ok(()),
            }
        };
        match (decode_guarded(buf), want) {
            (Err(e), Err(reason)) => prop_assert_eq!(e.reason(), reason, "{:?}", e),
            // A whole record of a known kind decodes or has a bad field value.
            (Err(e), Ok(())) => prop_assert_eq!(e.reason(), "bad_value", "{:?}", e),
            (Ok(ev), Ok(())) => prop_assert_eq!(Some(ev.kind()), Event::KINDS.get(kind as usize - 1).copied()),
            (Ok(ev), Err(reason)) => prop_assert!(false, "decoded {:?}, expected {}", ev, reason),
        }
    }

    /// Bytes after the record (ring-buffer padding, a future, longer record of
    /// the same kind) change nothing.
    #[test]
    fn bytes_after_the_record_are_ignored(
        rec in any_record(),
        tail in proptest::collection::vec(any::<u8>(), 1..64),
        declare_tail in any::<bool>(),
    ) {
        let alone = decode_guarded(&rec);
        let size = if declare_tail { rec.len() + tail.len() } else { rec.len() };
        let kind = u16::from_ne_bytes([rec[0], rec[1]]);
        let mut longer = with_header(rec, kind, size as u16);
        longer.extend_from_slice(&tail);
        prop_assert_eq!(decode_guarded(&longer), alone);
    }

    /// Exec records: every field round-trips; lengths past the buffers are
    /// clamped; a buffer filled to the brim (no NUL) is read whole; argv comes
    /// back argument by argument.
    #[test]
    fn exec_records_round_trip(input in exec_record()) {
        check_exec(&input, decode_guarded(&bytes_of(&input.rec)))?;
    }

    #[test]
    fn net_records_round_trip(rec in net_record()) {
        check_net(&rec.0, decode_guarded(&bytes_of(&rec.0)))?;
    }

    #[test]
    fn file_records_round_trip(rec in file_record()) {
        check_file(&rec.0, decode_guarded(&bytes_of(&rec.0)))?;
    }

    /// A container's cgroup path, cut to the kernel's last four levels, still
    /// names the container after decoding.
    #[test]
    fn container_survives_the_kernel_cgroup_levels(
        shape in crate::cgroup::container_path(),
    ) {
        let comps: Vec<&str> = shape.path.split('/').filter(|c| !c.is_empty()).collect();
        // The id's component is within the last four (the probe sends those).
        prop_assume!(shape.depth_from_leaf < CG_LEVELS);
        let mut r = abi::dw_exec::default();
        r.hdr.kind = abi::DW_KIND_EXEC as u16;
        r.hdr.size = size_of::<abi::dw_exec>() as u16;
        for (level, name) in r.cgroup.iter_mut().zip(comps.iter().rev()) {
            put(level, name.as_bytes());
        }
        let Ok(Event::Exec(e)) = decode_guarded(&bytes_of(&r)) else { return Err(TestCaseError::fail("decode")) };
        let c = container_from_cgroup_path(&e.proc.cgroup_path);
        prop_assert_eq!(c.map(|c| c.id.to_string()), Some(shape.id.clone()), "{}", e.proc.cgroup_path);
    }
}
