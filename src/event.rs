//! Decoding ring-buffer records into owned, validated events.
//!
//! Records are bounds-checked and copied out field by field; nothing from the
//! kernel is transmuted into a Rust enum. Bad records become a [`DecodeError`]
//! whose [`DecodeError::reason`] is a metric label. Names are bytes to the
//! kernel: each becomes text through [`crate::escape`], with a `*_escaped`
//! flag saying whether it had to be escaped.

mod map;

pub use map::MapEvent;
#[cfg(test)]
pub(crate) use map::tests as map_tests;

use crate::{abi, escape};
use std::mem::size_of;

/// A name or argument of an exec: stored inline up to 24 bytes (a comm, most
/// arguments and many executable paths), so decoding an event does not
/// allocate once per name. Derefs to `str`; serializes as a string.
pub use compact_str::CompactString as Text;

/// A command line's arguments: the first four inline (a shell's `sh -c CMD`,
/// most package-manager runs), so an exec costs no heap allocation for them.
pub type Args = smallvec::SmallVec<[Text; 4]>;

/// Appends `args` joined by single spaces (as `ps` prints a command line) to
/// `out`, a buffer the caller reuses: `[Text]::join` allocates a new one.
pub fn push_command_line(out: &mut String, args: &[Text]) {
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(a);
    }
}

/// Where an executed file came from (mirrors `enum dw_exe_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExeSource {
    Unknown,
    Image,
    UpperLayer,
    Memfd,
    Deleted,
    Tmpfs,
    Volume,
}

impl ExeSource {
    fn from_raw(v: u32) -> Result<Self, DecodeError> {
        Ok(match v {
            abi::DW_SRC_UNKNOWN => Self::Unknown,
            abi::DW_SRC_IMAGE => Self::Image,
            abi::DW_SRC_UPPER => Self::UpperLayer,
            abi::DW_SRC_MEMFD => Self::Memfd,
            abi::DW_SRC_DELETED => Self::Deleted,
            abi::DW_SRC_TMPFS => Self::Tmpfs,
            abi::DW_SRC_VOLUME => Self::Volume,
            other => return Err(DecodeError::BadValue { field: "exe_source", value: other as u64 }),
        })
    }

    /// The JSON value of `driftwatch.exe.source`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Image => "image",
            Self::UpperLayer => "upper_layer",
            Self::Memfd => "memfd",
            Self::Deleted => "deleted",
            Self::Tmpfs => "tmpfs",
            Self::Volume => "volume",
        }
    }

    /// True when the file is not part of the container image.
    pub fn is_drift(self) -> bool {
        matches!(self, Self::UpperLayer | Self::Memfd | Self::Deleted | Self::Tmpfs | Self::Volume)
    }
}

/// Where a container process came from (mirrors `enum dw_origin`): the
/// container's own process tree, descended from its init, or an exec session
/// (`kubectl exec`, CRI ExecSync, `runc exec`, `nsenter`) and what it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    #[default]
    Container,
    ExecSession,
}

impl Origin {
    fn from_raw(v: u32) -> Result<Self, DecodeError> {
        Ok(match v {
            abi::DW_ORIGIN_CONTAINER => Self::Container,
            abi::DW_ORIGIN_EXEC_SESSION => Self::ExecSession,
            other => return Err(DecodeError::BadValue { field: "origin", value: other as u64 }),
        })
    }

    /// The JSON value of `driftwatch.process.origin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Container => "container",
            Self::ExecSession => "exec_session",
        }
    }
}

/// `DW_EXEC_*` flag bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExecFlags(pub u32);

impl ExecFlags {
    pub fn drift(self) -> bool {
        self.0 & abi::DW_EXEC_DRIFT != 0
    }
    pub fn entrypoint(self) -> bool {
        self.0 & abi::DW_EXEC_ENTRYPOINT != 0
    }
    pub fn tty(self) -> bool {
        self.0 & abi::DW_EXEC_TTY != 0
    }
    pub fn ancestor_drift(self) -> bool {
        self.0 & abi::DW_EXEC_ANCESTOR_DRIFT != 0
    }
    pub fn path_truncated(self) -> bool {
        self.0 & abi::DW_EXEC_PATH_TRUNC != 0
    }
    pub fn args_truncated(self) -> bool {
        self.0 & abi::DW_EXEC_ARGS_TRUNC != 0
    }
    pub fn script(self) -> bool {
        self.0 & abi::DW_EXEC_SCRIPT != 0
    }
    pub fn env_drift(self) -> bool {
        self.0 & abi::DW_EXEC_ENV_DRIFT != 0
    }
    /// A variable added or changed against the entrypoint's environment.
    pub fn env_changed(self) -> bool {
        self.0 & abi::DW_EXEC_ENV_CHANGED != 0
    }
    /// Protect mode killed the new image before it ran.
    pub fn killed(self) -> bool {
        self.0 & abi::DW_EXEC_KILLED != 0
    }
    /// Sent only because `--emit-all-execs` is on: the kernel's filter found
    /// nothing in it, and it woke nobody (read at the drain timer).
    pub fn unfiltered(self) -> bool {
        self.0 & abi::DW_EXEC_UNFILTERED != 0
    }
}

/// The process facts every record carries, from its common header and the
/// fields each kind adds after it: who did it, in which container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// Kernel timestamp (CLOCK_BOOTTIME ns) of the event.
    pub ktime_ns: u64,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// Never-reused mount namespace id.
    pub mntns_id: u64,
    /// The container's own process tree or an exec session (decided in the kernel).
    pub origin: Origin,
    /// Task name (15 bytes at most: stored inline).
    pub comm: Text,
    /// Cgroup path tail as the kernel saw it, root first ("k8s.io/<id>"):
    /// shared by the events of a cgroup.
    pub cgroup_path: std::sync::Arc<str>,
    /// `comm` was not UTF-8 and is escaped (`crate::escape`).
    pub comm_escaped: bool,
    pub cgroup_path_escaped: bool,
}

#[cfg(test)]
impl Process {
    /// The container process unit tests judge: tgid 10 (parent 9) as root in
    /// mount namespace 5, from the container's own tree.
    pub fn for_test(comm: &str, cgroup_path: &str) -> Self {
        Self {
            ktime_ns: 1,
            tgid: 10,
            ppid: 9,
            uid: 0,
            mntns_id: 5,
            origin: Origin::default(),
            comm: comm.into(),
            cgroup_path: cgroup_path.into(),
            comm_escaped: false,
            cgroup_path_escaped: false,
        }
    }
}

/// A process executed a new image inside a container (`DW_KIND_EXEC`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecEvent {
    pub proc: Process,
    pub gid: u32,
    pub flags: ExecFlags,
    pub exe_source: ExeSource,
    /// Set when the kernel ran a script through its `#!` interpreter.
    pub script: Option<(String, ExeSource)>,
    pub ino: u64,
    /// `DW_ENV_*`: dynamic-loader variables in the new image's environment.
    pub env_loader: u16,
    pub parent_comm: Text,
    pub path: Text,
    pub args: Args,
    /// Names that were not UTF-8 and are escaped (`crate::escape`); one flag
    /// for all of `args`, each escaped once one must be.
    pub parent_comm_escaped: bool,
    pub path_escaped: bool,
    pub args_escaped: bool,
    pub script_escaped: bool,
}

/// What a network event opened (`DW_NET_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetOp {
    /// connect(): an outbound connection to `addr:port`.
    Connect,
    /// listen(): a TCP listener on `addr:port`.
    Listen,
    /// bind() of a UDP socket: a UDP listener on `addr:port`.
    BindUdp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// A container process opened a network endpoint (`DW_KIND_NET`); the kernel
/// sends each (container, program, endpoint) once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetEvent {
    pub proc: Process,
    pub op: NetOp,
    pub transport: Transport,
    pub addr: std::net::IpAddr,
    pub port: u16,
}

/// What a file event did (`DW_FILE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileOp {
    Write,
    Delete,
    Rename,
    Chmod,
    Link,
    Symlink,
    Chown,
    Mkdir,
    Truncate,
}

impl FileOp {
    /// The JSON value of `driftwatch.file.operation`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Write => "write",
            Self::Delete => "delete",
            Self::Rename => "rename",
            Self::Chmod => "chmod",
            Self::Link => "link",
            Self::Symlink => "symlink",
            Self::Chown => "chown",
            Self::Mkdir => "mkdir",
            Self::Truncate => "truncate",
        }
    }
}

/// A container process changed a file (`DW_KIND_FILE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEvent {
    pub proc: Process,
    pub op: FileOp,
    /// As the container sees it.
    pub path: String,
    /// The new name, for renames.
    pub target: Option<String>,
    /// Where the opened file lives; `Unknown` for named operations.
    pub source: ExeSource,
    pub mode: u32,
    /// chown: the new owner (`u32::MAX`: unchanged).
    pub owner: Option<(u32, u32)>,
    /// `path` did not fit in the kernel's buffer: its tail is kept.
    pub path_truncated: bool,
    /// `target` did not fit: its tail is kept.
    pub target_truncated: bool,
    /// `path` (`target`) was not UTF-8 and is escaped (`crate::escape`).
    pub path_escaped: bool,
    pub target_escaped: bool,
}

/// Every kind of record the agent understands. Not boxed: a box was a heap
/// allocation per event, and an event moves only a few times (into a batch,
/// out to the pipeline), where copying a few hundred bytes costs less than
/// `malloc` and `free`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Event {
    Exec(ExecEvent),
    Net(NetEvent),
    File(FileEvent),
    Map(MapEvent),
}

impl Event {
    /// Every kind's metric label, in `DW_KIND_*` order.
    pub const KINDS: [&'static str; 4] = ["exec", "net", "file", "map"];

    /// Metric label of the kind (one of [`Self::KINDS`]).
    pub fn kind(&self) -> &'static str {
        Self::KINDS[self.kind_index()]
    }

    /// Index of the kind in [`Self::KINDS`].
    pub fn kind_index(&self) -> usize {
        match self {
            Self::Exec(_) => 0,
            Self::Net(_) => 1,
            Self::File(_) => 2,
            Self::Map(_) => 3,
        }
    }

    /// Who did it.
    pub fn process(&self) -> &Process {
        match self {
            Self::Exec(e) => &e.proc,
            Self::Net(e) => &e.proc,
            Self::File(e) => &e.proc,
            Self::Map(e) => &e.proc,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {got} bytes is shorter than the {need}-byte {what}")]
    Truncated { what: &'static str, need: usize, got: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u16),
    #[error("header size {declared} does not match the {got}-byte record")]
    BadSize { declared: u16, got: usize },
    #[error("field {field} has invalid value {value}")]
    BadValue { field: &'static str, value: u64 },
}

impl DecodeError {
    /// Every [`Self::reason`], for pre-created metric series.
    pub const REASONS: [&'static str; 4] = ["truncated", "unknown_kind", "bad_size", "bad_value"];

    /// Bounded metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Truncated { .. } => "truncated",
            Self::UnknownKind(_) => "unknown_kind",
            Self::BadSize { .. } => "bad_size",
            Self::BadValue { .. } => "bad_value",
        }
    }
}

/// Checks that `buf` holds a whole `T`.
fn long_enough<T>(buf: &[u8], what: &'static str) -> Result<(), DecodeError> {
    if buf.len() < size_of::<T>() {
        return Err(DecodeError::Truncated { what, need: size_of::<T>(), got: buf.len() });
    }
    Ok(())
}

/// Copies a POD struct out of a byte slice after checking its length.
fn read_pod<T: Copy>(buf: &[u8], what: &'static str) -> Result<T, DecodeError> {
    long_enough::<T>(buf, what)?;
    // SAFETY: length checked above; T is a bindgen POD of integers and byte
    // arrays (any bit pattern valid); read_unaligned tolerates any alignment.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<T>()) })
}

/// A record's struct read in place, after checking its length: only the
/// bytes a field's use touches are read. Copying a whole exec record (2 KiB,
/// mostly unused buffer tails, just written by another CPU) was a fifth of
/// the events thread's CPU in a shell storm: cache misses, not work. Ring
/// buffer records are 8-byte aligned; a buffer that is not aligned for `T`
/// (a test's) is copied instead.
fn view_pod<'a, T: Copy>(buf: &'a [u8], what: &'static str) -> Result<std::borrow::Cow<'a, T>, DecodeError> {
    if buf.as_ptr().align_offset(std::mem::align_of::<T>()) != 0 {
        return read_pod(buf, what).map(std::borrow::Cow::Owned);
    }
    long_enough::<T>(buf, what)?;
    // SAFETY: length and alignment checked above; T is a bindgen POD of
    // integers and byte arrays (any bit pattern valid); the reference
    // borrows `buf`, so it cannot outlive the record.
    Ok(std::borrow::Cow::Borrowed(unsafe { &*buf.as_ptr().cast::<T>() }))
}

fn c_bytes(raw: &[std::ffi::c_char]) -> &[u8] {
    // SAFETY: c_char and u8 have the same size and alignment.
    unsafe { std::slice::from_raw_parts(raw.as_ptr().cast::<u8>(), raw.len()) }
}

/// A NUL-terminated name from a fixed buffer, and whether it is escaped.
fn c_str(raw: &[std::ffi::c_char]) -> (Text, bool) {
    let b = c_bytes(raw);
    escape::lossless(until_nul(b))
}

/// [`c_str_len`] as a `String`: a file's path, usually longer than inline text.
fn c_string_len(raw: &[std::ffi::c_char], len: u16) -> (String, bool) {
    escape::lossless(name_of_len(raw, len))
}

/// `b` up to its first NUL (all of it without one). memchr, not a byte loop:
/// a cgroup name is ~80 bytes and an exec has six names.
#[inline]
fn until_nul(b: &[u8]) -> &[u8] {
    &b[..memchr::memchr(0, b).unwrap_or(b.len())]
}

/// A name of `len` bytes from a fixed buffer (len clamped to the buffer).
fn c_str_len(raw: &[std::ffi::c_char], len: u16) -> (Text, bool) {
    escape::lossless(name_of_len(raw, len))
}

/// The bytes of a name of `len` bytes in a fixed buffer, up to a NUL.
fn name_of_len(raw: &[std::ffi::c_char], len: u16) -> &[u8] {
    let b = c_bytes(raw);
    until_nul(&b[..(len as usize).min(b.len())])
}

/// argv as the kernel copied it: each argument ends with a NUL (empty ones
/// too: `sh -c '' x` is not `sh -c x`); bytes after the last NUL are an
/// argument cut short. One validation of the whole buffer: NUL is ASCII, so
/// it is UTF-8 exactly when every argument is.
fn split_args(raw: &[std::ffi::c_char], len: u16) -> (Args, bool) {
    let b = c_bytes(raw);
    let b = match b.get(..len as usize) {
        Some(b) => b,
        // Not a length the kernel sends (it cuts argv at the buffer): the
        // arguments end at the last non-NUL byte's NUL, zero fill follows.
        None => &b[..b.iter().rposition(|&c| c != 0).map_or(0, |i| (i + 2).min(b.len()))],
    };
    if b.is_empty() {
        return (Args::new(), false);
    }
    let b = b.strip_suffix(&[0]).unwrap_or(b);
    match std::str::from_utf8(b) {
        // memchr, not `str::split(char)` (its char searcher: ~190 instructions a call).
        Ok(s) => (split_nul(s).map(Text::from).collect(), false),
        Err(_) => (b.split(|&c| c == 0).map(|a| escape::escaped(a).into()).collect(), true),
    }
}

/// The parts of `s` between NULs (as `s.split('\0')`: empty ones too).
fn split_nul(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        match memchr::memchr(0, r.as_bytes()) {
            // NUL is ASCII: both sides of it are on character boundaries.
            Some(i) => {
                rest = Some(&r[i + 1..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// Decodes one ring-buffer record.
pub fn decode(buf: &[u8]) -> Result<Event, DecodeError> {
    let hdr: abi::dw_header = read_pod(buf, "header")?;
    if (hdr.size as usize) > buf.len() || (hdr.size as usize) < size_of::<abi::dw_header>() {
        return Err(DecodeError::BadSize { declared: hdr.size, got: buf.len() });
    }
    match hdr.kind as u32 {
        abi::DW_KIND_EXEC => decode_exec(&buf[..hdr.size as usize]).map(Event::Exec),
        abi::DW_KIND_NET => decode_net(&buf[..hdr.size as usize]).map(Event::Net),
        abi::DW_KIND_FILE => decode_file(&buf[..hdr.size as usize]).map(Event::File),
        abi::DW_KIND_MAP => map::decode_map(&buf[..hdr.size as usize]).map(Event::Map),
        _ => Err(DecodeError::UnknownKind(hdr.kind)),
    }
}

/// Slots of [`cgroup_path`]'s cache of the paths it decoded last.
const CGROUP_SLOTS: usize = 16;

/// A path the cache holds, with the kernel's key for it (0: none came).
struct CachedPath {
    key: u64,
    path: std::sync::Arc<str>,
}

/// The decoding thread's buffer for a cgroup path being assembled, and its
/// cache of the paths decoded last ([`CGROUP_SLOTS`] of them).
#[derive(Default)]
struct CgroupPaths {
    buf: Vec<u8>,
    slots: crate::recent::Recent<CachedPath, CGROUP_SLOTS>,
}

thread_local! {
    static CGROUP_PATHS: std::cell::RefCell<CgroupPaths> = std::cell::RefCell::default();
}

/// Its `cache` label in `driftwatch_cache_entries`: the cgroup paths the
/// events thread decoded last ([`CGROUP_SLOTS`] at most).
pub const CGROUP_PATHS_CACHE: &str = "cgroup_paths";

/// Paths this thread's decoder holds ([`CGROUP_PATHS_CACHE`]).
pub fn cgroup_paths_cached() -> usize {
    CGROUP_PATHS.with_borrow(|c| c.slots.len())
}

/// Cgroup path components, leaf first in the record, as a path root first,
/// and whether it is escaped. A node's events come from a handful of cgroups
/// at a time: a path decoded lately is shared, not allocated again (~100
/// bytes an event). The kernel's key for the cgroup (`cgroup_key`: its
/// kernfs node id, never reused in a boot) finds it without reading the
/// names at all: 512 bytes of the record, just written by another CPU, whose
/// reading was a sixth of the events thread's CPU with `--emit-all-execs`.
/// (A v1 cgroup renamed while its path is cached keeps its old name until the
/// slot is replaced: no runtime renames one.) Without a key the assembled
/// path is compared. Only UTF-8 paths are cached, so a hit is never escaped.
fn cgroup_path(levels: &CgroupLevels, key: u64) -> (std::sync::Arc<str>, bool) {
    CGROUP_PATHS.with_borrow_mut(|c| {
        if key != 0
            && let Some(hit) = c.slots.find(|p| p.key == key)
        {
            return (hit.path.clone(), false);
        }
        c.buf.clear();
        let names = levels.iter().map(|level| until_nul(c_bytes(level)));
        for name in names.rev().filter(|n| !n.is_empty()) {
            if !c.buf.is_empty() {
                c.buf.push(b'/');
            }
            c.buf.extend_from_slice(name);
        }
        if let Some(hit) = c.slots.find(|p| p.path.as_bytes() == c.buf) {
            let path = hit.path.clone();
            if key != 0 {
                // The same path under a key not seen yet (the cache filled
                // from keyless records, or a cgroup made again by that name).
                c.slots.push(CachedPath { key, path: path.clone() });
            }
            return (path, false);
        }
        let (path, escaped): (std::sync::Arc<str>, bool) = escape::lossless(&c.buf);
        if !escaped {
            c.slots.push(CachedPath { key, path: path.clone() });
        }
        (path, escaped)
    })
}

/// A name given as `dir/` (mkdir -p, rmdir dir/) is the same path as `dir`.
/// (On escaped text too: an escape never holds a `/` or a `.`.)
fn without_trailing_slash((mut p, escaped): (String, bool)) -> (String, bool) {
    while p.len() > 1 && p.ends_with('/') {
        p.pop();
    }
    (p, escaped)
}

/// The kernel joins a relative script name to the cwd (`/root/./run.sh`):
/// without `.` and empty components it is the path the container sees. `..`
/// stays (it is not resolved here), and a name that is not absolute (the
/// kernel kept only the tail of an over-long path) is left as it came.
fn clean_script_path(p: String) -> String {
    if !p.starts_with('/') {
        return p;
    }
    let parts: Vec<&str> = p.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    format!("/{}", parts.join("/"))
}

/// The last component of a path (all of it without a `/`). Every exec looks
/// up several names by their basename: memrchr instead of `str::rsplit`,
/// whose char searcher was ~190 instructions a call.
#[inline]
pub fn basename(s: &str) -> &str {
    // `/` is ASCII: the byte after it starts a character.
    memchr::memrchr(b'/', s.as_bytes()).map_or(s, |i| &s[i + 1..])
}

/// The non-empty components of a path, last first.
pub fn components_rev(path: &str) -> impl Iterator<Item = &str> {
    let mut end = Some(path.len());
    std::iter::from_fn(move || {
        let e = end?;
        let start = match memchr::memrchr(b'/', &path.as_bytes()[..e]) {
            Some(i) => {
                end = Some(i);
                i + 1
            }
            None => {
                end = None;
                0
            }
        };
        Some(&path[start..e])
    })
    .filter(|c| !c.is_empty())
}

/// `p` without `.` and empty components (`..` stays; a relative name is left as it is).
pub fn clean_path(p: &str) -> String {
    clean_script_path(p.to_string())
}

type CgroupLevels = [[std::ffi::c_char; abi::DW_CGROUP_NAME_LEN as usize]; abi::DW_CGROUP_LEVELS as usize];

/// The process part of a record: its header plus the fields every kind repeats.
fn process(
    hdr: &abi::dw_header,
    ppid: u32,
    uid: u32,
    mntns_id: u64,
    comm: &[std::ffi::c_char],
    (cgroup, cgroup_key): (&CgroupLevels, u64),
    origin: u32,
) -> Result<Process, DecodeError> {
    let origin = Origin::from_raw(origin)?;
    let ((comm, comm_escaped), (cgroup_path, cgroup_path_escaped)) = (c_str(comm), cgroup_path(cgroup, cgroup_key));
    Ok(Process {
        ktime_ns: hdr.ktime_ns,
        tgid: hdr.tgid,
        ppid,
        uid,
        mntns_id,
        origin,
        comm,
        cgroup_path,
        comm_escaped,
        cgroup_path_escaped,
    })
}

fn decode_file(buf: &[u8]) -> Result<FileEvent, DecodeError> {
    let r = view_pod::<abi::dw_file>(buf, "file record")?;
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
        other => return Err(DecodeError::BadValue { field: "op", value: other as u64 }),
    };
    let target =
        matches!(op, FileOp::Rename | FileOp::Link | FileOp::Symlink).then(|| c_string_len(&r.path2, r.path2_len));
    let (path, path_escaped) = without_trailing_slash(c_string_len(&r.path, r.path_len));
    Ok(FileEvent {
        proc: process(&r.hdr, r.ppid, r.uid, r.mntns_id, &r.comm, (&r.cgroup, r.cgroup_key), r.origin)?,
        op,
        path,
        path_escaped,
        target_escaped: target.as_ref().is_some_and(|t| t.1),
        target: target.map(|t| t.0),
        source: ExeSource::from_raw(r.source)?,
        mode: r.mode,
        owner: (op == FileOp::Chown).then_some((r.owner_uid, r.owner_gid)),
        path_truncated: r.flags as u32 & abi::DW_FILE_PATH_TRUNC != 0,
        target_truncated: matches!(op, FileOp::Rename | FileOp::Link | FileOp::Symlink)
            && r.flags as u32 & abi::DW_FILE_PATH2_TRUNC != 0,
    })
}

fn decode_net(buf: &[u8]) -> Result<NetEvent, DecodeError> {
    let r = view_pod::<abi::dw_net>(buf, "net record")?;
    let op = match r.op as u32 {
        abi::DW_NET_CONNECT => NetOp::Connect,
        abi::DW_NET_LISTEN => NetOp::Listen,
        abi::DW_NET_BIND_UDP => NetOp::BindUdp,
        other => return Err(DecodeError::BadValue { field: "op", value: other as u64 }),
    };
    let transport = match r.sock_type {
        1 => Transport::Tcp,
        2 => Transport::Udp,
        other => return Err(DecodeError::BadValue { field: "sock_type", value: other as u64 }),
    };
    let addr = match r.family {
        2 => std::net::IpAddr::from([r.addr[0], r.addr[1], r.addr[2], r.addr[3]]),
        10 => std::net::IpAddr::from(r.addr),
        other => return Err(DecodeError::BadValue { field: "family", value: other as u64 }),
    };
    Ok(NetEvent {
        proc: process(&r.hdr, r.ppid, r.uid, r.mntns_id, &r.comm, (&r.cgroup, r.cgroup_key), r.origin)?,
        op,
        transport,
        addr,
        port: r.port,
    })
}

fn decode_exec(buf: &[u8]) -> Result<ExecEvent, DecodeError> {
    let r = view_pod::<abi::dw_exec>(buf, "exec record")?;
    let flags = ExecFlags(r.flags);
    let (script, script_escaped) = if flags.script() {
        let (path, escaped) = c_string_len(&r.script, r.script_len);
        (Some((clean_script_path(path), ExeSource::from_raw(r.script_source)?)), escaped)
    } else {
        (None, false)
    };
    let ((parent_comm, parent_comm_escaped), (path, path_escaped)) =
        (c_str(&r.parent_comm), c_str_len(&r.path, r.path_len));
    let (args, args_escaped) = split_args(&r.args, r.args_len);
    Ok(ExecEvent {
        proc: process(&r.hdr, r.ppid, r.uid, r.mntns_id, &r.comm, (&r.cgroup, r.cgroup_key), r.origin)?,
        gid: r.gid,
        flags,
        exe_source: ExeSource::from_raw(r.exe_source)?,
        script,
        ino: r.exe_ino,
        env_loader: r.env_loader,
        parent_comm,
        path,
        args,
        parent_comm_escaped,
        path_escaped,
        args_escaped,
        script_escaped,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn basenames_and_components_match_the_std_splits() {
        for p in
            ["", "/", "a", "/a", "a/", "/a/b", "//x//yé/", "kubepods.slice/kubepods-pod1.slice/cri-containerd-1.scope"]
        {
            assert_eq!(basename(p), p.rsplit('/').next().unwrap_or(p), "{p:?}");
            let ours: Vec<&str> = components_rev(p).collect();
            let std: Vec<&str> = p.rsplit('/').filter(|c| !c.is_empty()).collect();
            assert_eq!(ours, std, "{p:?}");
        }
    }

    #[test]
    fn nul_splits_match_the_std_split() {
        for s in ["", "\0", "a", "a\0", "\0a", "a\0\0b", "/bin/sh\0-c\0:", "é\0ü\0\0"] {
            let ours: Vec<&str> = split_nul(s).collect();
            let std: Vec<&str> = s.split('\0').collect();
            assert_eq!(ours, std, "{s:?}");
        }
        assert_eq!(until_nul(b"ab\0cd\0"), b"ab");
        assert_eq!(until_nul(b"abc"), b"abc");
    }

    fn put(dst: &mut [std::ffi::c_char], s: &[u8]) {
        for (d, b) in dst.iter_mut().zip(s) {
            *d = *b as std::ffi::c_char;
        }
    }

    /// A well-formed exec record, as the kernel would write it.
    pub(crate) fn exec_record(f: impl FnOnce(&mut abi::dw_exec)) -> Vec<u8> {
        let mut r = abi::dw_exec::default();
        r.hdr.kind = abi::DW_KIND_EXEC as u16;
        r.hdr.size = size_of::<abi::dw_exec>() as u16;
        r.hdr.tgid = 42;
        r.hdr.pid = 42;
        r.ppid = 7;
        r.exe_source = abi::DW_SRC_UPPER;
        r.flags = abi::DW_EXEC_DRIFT;
        put(&mut r.comm, b"x");
        put(&mut r.parent_comm, b"sh");
        put(&mut r.path, b"/tmp/x");
        r.path_len = 6;
        put(&mut r.args, b"/tmp/x\0-v\0");
        r.args_len = 10;
        put(&mut r.cgroup[0], b"0123");
        put(&mut r.cgroup[1], b"k8s.io");
        f(&mut r);
        let mut v = vec![0u8; size_of::<abi::dw_exec>()];
        // SAFETY: writing a POD into a buffer of exactly its size.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast::<abi::dw_exec>(), r) };
        v
    }

    #[test]
    fn cgroup_paths_decoded_lately_are_shared_and_the_cache_stays_fixed() {
        let path_of = |leaf: &[u8]| {
            let rec = exec_record(|r| {
                r.cgroup[0] = [0; abi::DW_CGROUP_NAME_LEN as usize];
                put(&mut r.cgroup[0], leaf);
            });
            let Event::Exec(e) = decode(&rec).unwrap() else { panic!("not exec") };
            (e.proc.cgroup_path, e.proc.cgroup_path_escaped)
        };
        let (a, _) = path_of(b"aaaa");
        let (b, _) = path_of(b"aaaa");
        assert!(std::sync::Arc::ptr_eq(&a, &b), "the second event shares the first one's path");
        assert_eq!(&*a, "k8s.io/aaaa");
        // A path that is not UTF-8 is escaped anew each time, never cached.
        let (e1, esc1) = path_of(b"bad\xfe\xff");
        let (e2, esc2) = path_of(b"bad\xfe\xff");
        assert!(esc1 && esc2 && e1 == e2 && !std::sync::Arc::ptr_eq(&e1, &e2), "{e1}");
        // More paths than slots: the oldest are replaced, the count stays fixed.
        for i in 0..CGROUP_SLOTS {
            path_of(format!("other{i}").as_bytes());
        }
        let (c, _) = path_of(b"aaaa");
        assert!(!std::sync::Arc::ptr_eq(&a, &c) && a == c, "replaced, then decoded again");
        CGROUP_PATHS.with_borrow(|p| assert_eq!(p.slots.len(), CGROUP_SLOTS));
    }

    #[test]
    fn a_cgroup_key_seen_lately_finds_its_path_without_reading_the_names() {
        let decode_with = |key: u64, leaf: &[u8]| {
            let rec = exec_record(|r| {
                r.cgroup_key = key;
                r.cgroup[0] = [0; abi::DW_CGROUP_NAME_LEN as usize];
                put(&mut r.cgroup[0], leaf);
            });
            let Event::Exec(e) = decode(&rec).unwrap() else { panic!("not exec") };
            e.proc.cgroup_path
        };
        let key = (1 << 63) | 0x1_0000_4242;
        let a = decode_with(key, b"keyed");
        assert_eq!(&*a, "k8s.io/keyed");
        // The key decides: names that say otherwise are not read.
        let b = decode_with(key, b"never-read");
        assert!(std::sync::Arc::ptr_eq(&a, &b), "{b}");
        // Another key with the same names shares the path; without a key the names decide.
        let c = decode_with(key + 1, b"keyed");
        assert!(std::sync::Arc::ptr_eq(&a, &c));
        assert_eq!(&*decode_with(0, b"unkeyed"), "k8s.io/unkeyed");
        assert_eq!(&*decode_with(key + 2, b"other"), "k8s.io/other");
    }

    #[test]
    fn decodes_exec() {
        let Event::Exec(e) = decode(&exec_record(|_| {})).unwrap() else { panic!("not exec") };
        assert_eq!(e.proc.tgid, 42);
        assert_eq!(e.proc.ppid, 7);
        assert_eq!(e.path, "/tmp/x");
        assert_eq!(e.args.as_slice(), ["/tmp/x", "-v"]);
        assert_eq!(&*e.proc.cgroup_path, "k8s.io/0123");
        assert_eq!(e.exe_source, ExeSource::UpperLayer);
        assert!(e.flags.drift());
        assert_eq!(e.proc.comm, "x");
        assert_eq!(e.parent_comm, "sh");
        assert!(e.script.is_none());
    }

    #[test]
    fn rejects_truncated_and_garbage() {
        assert_eq!(decode(&[]).unwrap_err().reason(), "truncated");
        assert_eq!(decode(&[1, 0, 3]).unwrap_err().reason(), "truncated");
        let rec = exec_record(|_| {});
        // Cut anywhere inside the record: the declared size no longer fits.
        for cut in [32, 100, rec.len() - 1] {
            assert_eq!(decode(&rec[..cut]).unwrap_err().reason(), "bad_size", "cut {cut}");
        }
        // Header says a size smaller than the exec struct.
        let small = exec_record(|r| r.hdr.size = 40);
        assert_eq!(decode(&small).unwrap_err().reason(), "truncated");
        let unknown = exec_record(|r| r.hdr.kind = 999);
        assert_eq!(decode(&unknown).unwrap_err(), DecodeError::UnknownKind(999));
        let zero = exec_record(|r| r.hdr.kind = 0);
        assert_eq!(decode(&zero).unwrap_err().reason(), "unknown_kind");
        let bad_src = exec_record(|r| r.exe_source = 77);
        assert_eq!(decode(&bad_src).unwrap_err().reason(), "bad_value");
    }

    #[test]
    fn garbage_never_panics() {
        // Deterministic pseudo-random buffers of every small length.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for len in 0..2100 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode(&buf);
        }
    }

    #[test]
    fn empty_arguments_are_kept() {
        // Found by tests/properties (decode): empty arguments were dropped, so
        // `sh -c '' evil` (runs nothing) was reported as `sh -c evil`.
        let rec = exec_record(|r| {
            put(&mut r.args, b"sh\0-c\0\0evil\0");
            r.args_len = 12;
        });
        let Event::Exec(e) = decode(&rec).unwrap() else { panic!("not exec") };
        assert_eq!(e.args.as_slice(), ["sh", "-c", "", "evil"]);
        for (bytes, want) in [
            (&b""[..], &[][..]),
            (b"\0", &[""]),
            (b"a\0\0", &["a", ""]),
            (b"a\0b", &["a", "b"]), // cut mid-argument
            (b"a\0\0\0b\0", &["a", "", "", "b"]),
        ] {
            let rec = exec_record(|r| {
                r.args = [0; abi::DW_ARGS_LEN as usize];
                put(&mut r.args, bytes);
                r.args_len = bytes.len() as u16;
            });
            let Event::Exec(e) = decode(&rec).unwrap() else { panic!("not exec") };
            assert_eq!(e.args.as_slice(), want, "{bytes:?}");
        }
    }

    #[test]
    fn lengths_are_clamped_and_names_lossless() {
        let rec = exec_record(|r| {
            r.path_len = u16::MAX;
            r.args_len = u16::MAX;
            put(&mut r.comm, &[0xff, 0xfe, b'a']);
        });
        let Event::Exec(e) = decode(&rec).unwrap() else { panic!("not exec") };
        assert_eq!(e.path, "/tmp/x");
        assert_eq!(e.args.as_slice(), ["/tmp/x", "-v"]);
        assert_eq!((e.proc.comm.as_str(), e.proc.comm_escaped), ("\\xff\\xfea", true));
        assert!(!e.path_escaped && !e.args_escaped && !e.parent_comm_escaped && !e.proc.cgroup_path_escaped);
    }

    /// Issue 10: `bad\xff\xfe` and `bad\xfe\xff` printed alike (U+FFFD).
    #[test]
    fn names_that_are_not_utf8_stay_apart_and_are_marked() {
        let exec = |name: &[u8]| {
            let path = [b"/root/".as_slice(), name].concat();
            let rec = exec_record(|r| {
                put(&mut r.comm, name);
                put(&mut r.path, &path);
                r.path_len = path.len() as u16;
                // A valid argument with a literal backslash next to the bad one.
                let args = [path.as_slice(), b"\0a\\b\0"].concat();
                put(&mut r.args, &args);
                r.args_len = args.len() as u16;
                put(&mut r.cgroup[0], b"0123\\xff");
            });
            let Event::Exec(e) = decode(&rec).unwrap() else { panic!("not exec") };
            e
        };
        let (a, b) = (exec(b"bad\xff\xfe"), exec(b"bad\xfe\xff"));
        assert_eq!((a.path.as_str(), b.path.as_str()), ("/root/bad\\xff\\xfe", "/root/bad\\xfe\\xff"));
        assert_eq!((a.proc.comm.as_str(), b.proc.comm.as_str()), ("bad\\xff\\xfe", "bad\\xfe\\xff"));
        assert!(a.path_escaped && a.proc.comm_escaped && a.args_escaped && !a.parent_comm_escaped);
        // Every argument is in the escaped form once one must be: "a\b" -> "a\\b".
        assert_eq!(a.args.as_slice(), ["/root/bad\\xff\\xfe", "a\\\\b"]);
        assert_eq!(escape::raw(&a.args[1], a.args_escaped).as_ref(), b"a\\b");
        // A valid cgroup name with a literal "\xff" is left as it is.
        assert_eq!((&*a.proc.cgroup_path, a.proc.cgroup_path_escaped), ("k8s.io/0123\\xff", false));

        let mut r = abi::dw_file::default();
        r.hdr.kind = abi::DW_KIND_FILE as u16;
        r.hdr.size = size_of::<abi::dw_file>() as u16;
        r.op = abi::DW_FILE_RENAME as u16;
        put(&mut r.path, b"/etc/a\xff/");
        r.path_len = 8;
        put(&mut r.path2, b"/etc/\xfe\\");
        r.path2_len = 7;
        let mut v = vec![0u8; size_of::<abi::dw_file>()];
        // SAFETY: writing a POD into a buffer of exactly its size.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast::<abi::dw_file>(), r) };
        let Event::File(e) = decode(&v).unwrap() else { panic!("not file") };
        assert_eq!((e.path.as_str(), e.path_escaped), ("/etc/a\\xff", true));
        assert_eq!((e.target.as_deref(), e.target_escaped), (Some("/etc/\\xfe\\\\"), true));
    }

    pub(crate) fn net_record(f: impl FnOnce(&mut abi::dw_net)) -> Vec<u8> {
        let mut r = abi::dw_net::default();
        r.hdr.kind = abi::DW_KIND_NET as u16;
        r.hdr.size = size_of::<abi::dw_net>() as u16;
        r.hdr.tgid = 9;
        r.op = abi::DW_NET_CONNECT as u16;
        r.family = 2;
        r.sock_type = 1;
        r.port = 443;
        r.addr[..4].copy_from_slice(&[10, 1, 2, 3]);
        put(&mut r.comm, b"curl");
        put(&mut r.cgroup[0], b"abc");
        f(&mut r);
        let mut v = vec![0u8; size_of::<abi::dw_net>()];
        // SAFETY: writing a POD into a buffer of exactly its size.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast::<abi::dw_net>(), r) };
        v
    }

    #[test]
    fn decodes_net_v4_v6_and_rejects_bad_values() {
        let Event::Net(e) = decode(&net_record(|_| {})).unwrap() else { panic!("not net") };
        assert_eq!((e.op, e.transport, e.port), (NetOp::Connect, Transport::Tcp, 443));
        assert_eq!(e.addr, "10.1.2.3".parse::<std::net::IpAddr>().unwrap());
        assert_eq!(e.proc.comm, "curl");
        let v6 = net_record(|r| {
            r.family = 10;
            r.op = abi::DW_NET_BIND_UDP as u16;
            r.sock_type = 2;
            r.addr = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        });
        let Event::Net(e) = decode(&v6).unwrap() else { panic!("not net") };
        assert_eq!((e.op, e.transport), (NetOp::BindUdp, Transport::Udp));
        assert_eq!(e.addr, "::1".parse::<std::net::IpAddr>().unwrap());
        for bad in [net_record(|r| r.family = 1), net_record(|r| r.op = 9), net_record(|r| r.sock_type = 5)] {
            assert_eq!(decode(&bad).unwrap_err().reason(), "bad_value");
        }
        let rec = net_record(|_| {});
        assert_eq!(decode(&rec[..rec.len() - 1]).unwrap_err().reason(), "bad_size");
    }

    /// Issue 11: every kind carries the process's origin; an unknown value is
    /// rejected, never guessed.
    #[test]
    fn decodes_the_origin_of_every_kind() {
        let exec = |o| exec_record(|r| r.origin = o);
        let net = |o| net_record(|r| r.origin = o);
        let file = |o| {
            let mut r = abi::dw_file::default();
            r.hdr.kind = abi::DW_KIND_FILE as u16;
            r.hdr.size = size_of::<abi::dw_file>() as u16;
            r.op = abi::DW_FILE_WRITE as u16;
            r.origin = o;
            let mut v = vec![0u8; size_of::<abi::dw_file>()];
            // SAFETY: writing a POD into a buffer of exactly its size.
            unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast::<abi::dw_file>(), r) };
            v
        };
        for rec in [exec as fn(u32) -> Vec<u8>, net, file] {
            assert_eq!(decode(&rec(abi::DW_ORIGIN_CONTAINER)).unwrap().process().origin, Origin::Container);
            assert_eq!(decode(&rec(abi::DW_ORIGIN_EXEC_SESSION)).unwrap().process().origin, Origin::ExecSession);
            let err = decode(&rec(7)).unwrap_err();
            assert_eq!(err, DecodeError::BadValue { field: "origin", value: 7 });
        }
        assert_eq!((Origin::Container.as_str(), Origin::ExecSession.as_str()), ("container", "exec_session"));
        assert_eq!(serde_json::to_value(Origin::ExecSession).unwrap(), "exec_session");
    }

    #[test]
    fn decodes_file_events() {
        let mut r = abi::dw_file::default();
        r.hdr.kind = abi::DW_KIND_FILE as u16;
        r.hdr.size = size_of::<abi::dw_file>() as u16;
        r.op = abi::DW_FILE_RENAME as u16;
        put(&mut r.path, b"/etc/a");
        r.path_len = 6;
        put(&mut r.path2, b"/etc/b");
        r.path2_len = 6;
        r.source = abi::DW_SRC_UNKNOWN;
        let mut v = vec![0u8; size_of::<abi::dw_file>()];
        // SAFETY: writing a POD into a buffer of exactly its size.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast::<abi::dw_file>(), r) };
        let Event::File(e) = decode(&v).unwrap() else { panic!("not file") };
        assert_eq!((e.op, e.path.as_str(), e.target.as_deref()), (FileOp::Rename, "/etc/a", Some("/etc/b")));
        // SAFETY: as above.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast::<abi::dw_file>(), abi::dw_file { op: 99, ..r }) };
        assert_eq!(decode(&v).unwrap_err().reason(), "bad_value");
        // A name given with a trailing slash (mkdir -p) is the directory's path.
        let mut d = abi::dw_file { op: abi::DW_FILE_MKDIR as u16, ..r };
        put(&mut d.path, b"/etc/app//");
        d.path_len = 10;
        // SAFETY: as above.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast::<abi::dw_file>(), d) };
        let Event::File(e) = decode(&v).unwrap() else { panic!("not file") };
        assert_eq!((e.op, e.path.as_str(), e.target), (FileOp::Mkdir, "/etc/app", None));
        assert_eq!(decode(&v[..100]).unwrap_err().reason(), "bad_size");
    }

    #[test]
    fn script_source_is_decoded() {
        let rec = exec_record(|r| {
            r.flags |= abi::DW_EXEC_SCRIPT;
            r.script_source = abi::DW_SRC_TMPFS;
            put(&mut r.script, b"/scratch/run.sh");
            r.script_len = 15;
        });
        let Event::Exec(e) = decode(&rec).unwrap() else { panic!("not exec") };
        assert_eq!(e.script, Some(("/scratch/run.sh".to_string(), ExeSource::Tmpfs)));
        let rel = exec_record(|r| {
            r.flags |= abi::DW_EXEC_SCRIPT;
            put(&mut r.script, b"/root/./run.sh");
            r.script_len = 14;
        });
        let Event::Exec(e) = decode(&rel).unwrap() else { panic!("not exec") };
        assert_eq!(e.script.map(|s| s.0).as_deref(), Some("/root/run.sh"));
        for (given, clean) in
            [("/root/../x", "/root/../x"), ("//a//b/", "/a/b"), ("/", "/"), ("tail/run.sh", "tail/run.sh")]
        {
            assert_eq!(clean_script_path(given.to_string()), clean);
        }
    }
}
#[cfg(test)]
mod size {
    /// Events are held inline in the reader's batches and the events queue
    /// (`bpf::queue`): a field that grows the largest kind grows every event,
    /// whatever its kind. Arguments past the fourth, paths and script names
    /// are on the heap.
    #[test]
    fn an_event_stays_small() {
        assert!(size_of::<super::Event>() <= 288, "Event is {} bytes", size_of::<super::Event>());
        assert_eq!(size_of::<super::Event>(), size_of::<super::ExecEvent>(), "an exec is the largest kind");
    }
}
