//! Loading, attaching and feeding the eBPF sensor (ebpf/driftwatch.bpf.c).

pub mod btf_min;
pub mod cadence;
pub mod look;
pub mod preflight;
pub mod protect;
pub mod quarantine;
pub mod queue;
pub mod reader;

use crate::{abi, config, metrics::KernelStatsSource, procfs};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{
        HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{BtfTracePoint, ProgramError, TracePoint},
};
use std::{collections::HashMap, sync::Mutex};

/// The compiled sensor, embedded in the binary (empty when built with
/// DRIFTWATCH_BPF_STUB=1).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/driftwatch.bpf.o"));

/// Refuses the empty placeholder object of a DRIFTWATCH_BPF_STUB=1 build.
fn check_object(object: &[u8]) -> Result<(), BpfError> {
    if object.is_empty() { Err(BpfError::StubObject) } else { Ok(()) }
}

/// Programs and their tracepoints, attached in this order: exit and fork
/// first so lineage is kept from the moment exec starts reporting.
pub const PROGRAMS: [(&str, &str); 3] =
    [("dw_exit", "sched_process_exit"), ("dw_fork", "sched_process_fork"), ("dw_exec", "sched_process_exec")];

/// The file sensor's program (`sensor.files`) and the syscall tracepoints it
/// is attached to: one per syscall it judges (the `DW_NR_*` of
/// ebpf/helpers/fileops.h), so no other syscall runs it. A tracepoint this
/// kernel lacks (fchmodat2 before 6.6) is skipped.
pub const FILE_PROGRAM: (&str, &[&str]) = (
    "dw_file_exit",
    &[
        "sys_exit_open",
        "sys_exit_openat",
        "sys_exit_openat2",
        "sys_exit_creat",
        "sys_exit_truncate",
        "sys_exit_rename",
        "sys_exit_renameat",
        "sys_exit_renameat2",
        "sys_exit_mkdir",
        "sys_exit_mkdirat",
        "sys_exit_rmdir",
        "sys_exit_link",
        "sys_exit_linkat",
        "sys_exit_unlink",
        "sys_exit_unlinkat",
        "sys_exit_symlink",
        "sys_exit_symlinkat",
        "sys_exit_chmod",
        "sys_exit_fchmod",
        "sys_exit_fchmodat",
        "sys_exit_fchmodat2",
        "sys_exit_chown",
        "sys_exit_fchown",
        "sys_exit_lchown",
        "sys_exit_fchownat",
    ],
);

/// Syscall tracepoints (category syscalls) of the network sensor, program ->
/// tracepoints: they fire only for their own syscalls. They need tracefs.
/// Every syscall program is on a `sys_exit_*` tracepoint: one enabled
/// `sys_enter_*` tracepoint makes every syscall of the node pay the entry
/// side's dispatch too (README "Benchmark", "Exits only").
pub const SYSCALL_PROGRAMS: [(&str, &[&str]); 3] =
    [("dw_connect", &["sys_exit_connect"]), ("dw_listen", &["sys_exit_listen"]), ("dw_bind", &["sys_exit_bind"])];

/// Syscall tracepoints of the executable-mapping sensor (ebpf/helpers/mapping.h):
/// files mapped with PROT_EXEC by mmap, or given it by mprotect (`sensor.mappings`).
/// The mprotect program needs bpf_find_vma (Linux 5.17+); a kernel that refuses
/// it keeps the mmap program (logged).
pub const MAPPING_PROGRAMS: [(&str, &str); 2] =
    [("dw_mmap_exit", "sys_exit_mmap"), ("dw_mprotect_exit", "sys_exit_mprotect")];

#[cfg(test)]
mod tests {
    #[test]
    fn scratch_prefixes_cover_the_directory_and_what_is_under_it() {
        let ps = ["/tmp/".to_string(), "/var/log".into(), format!("/{}/", "x".repeat(70)), "/".into()];
        let (entries, userspace_only) = super::scratch_prefix_entries(&ps);
        let shown: Vec<(u32, String)> = entries
            .iter()
            .map(|(bits, d)| (*bits, String::from_utf8_lossy(&d[..*bits as usize / 8]).into_owned()))
            .collect();
        assert_eq!(
            shown,
            [
                (40, "/tmp/".to_string()),
                (40, "/tmp\0".into()),
                (72, "/var/log/".into()),
                (72, "/var/log\0".into()),
                (8, "/".into()),
                (8, "\0".into()),
            ]
        );
        assert_eq!(userspace_only, [ps[2].as_str()]);
    }

    /// Every syscall the file program decodes (a `DW_NR_*` of fileops.h) has
    /// its tracepoint in the list, and nothing else is listed: a syscall added
    /// to one side only would never run the program, or run it for nothing.
    #[test]
    fn file_tracepoints_are_exactly_the_decoded_syscalls() {
        let header = include_str!("../../ebpf/helpers/fileops.h");
        let mut decoded: Vec<String> = header
            .lines()
            .filter_map(|l| l.strip_prefix("#define DW_NR_"))
            .map(|l| format!("sys_exit_{}", l.split_whitespace().next().unwrap().to_lowercase()))
            .collect();
        let mut listed: Vec<String> = super::FILE_PROGRAM.1.iter().map(|s| s.to_string()).collect();
        decoded.sort();
        listed.sort();
        assert_eq!(decoded.len(), 25);
        assert_eq!(decoded, listed);
    }

    /// No program sits on a `sys_enter_*` tracepoint, in the attach tables or
    /// in the object's sections: a single enabled entry tracepoint makes every
    /// syscall of the node pay the entry side's dispatch (getppid loop 0.77
    /// with both sides, 0.79 with exits only, README "Benchmark", "Exits
    /// only").
    #[test]
    fn syscall_programs_are_on_exit_tracepoints_only() {
        let tables = super::SYSCALL_PROGRAMS
            .iter()
            .flat_map(|(_, tps)| tps.iter().copied())
            .chain(super::MAPPING_PROGRAMS.iter().map(|(_, tp)| *tp))
            .chain(super::FILE_PROGRAM.1.iter().copied());
        for tp in tables {
            assert!(tp.starts_with("sys_exit_"), "{tp}");
        }
        let source = include_str!("../../ebpf/driftwatch.bpf.c");
        let sections: Vec<&str> = source.lines().filter(|l| l.starts_with("SEC(\"tracepoint/syscalls/")).collect();
        assert_eq!(sections.len(), 6, "{sections:?}");
        assert!(sections.iter().all(|l| l.contains("/sys_exit_")), "{sections:?}");
    }

    #[test]
    fn verifier_complaint_is_the_prose_before_the_statistics() {
        let log = "0: R1=ctx() R10=fp0\n; int x = 1; @ a.c:3\n1202: (85) call bpf_probe_read_kernel#113\n\
                   invalid access to memory, mem_size=1912 off=632 size=1536\n\
                   R1 min value is outside of the allowed memory range\n\
                   verification time 145406 usec\nstack depth 224\n\
                   processed 26488 insns (limit 1000000) max_states_per_insn 10\n";
        assert_eq!(
            super::verifier_complaint(log),
            "invalid access to memory, mem_size=1912 off=632 size=1536 / R1 min value is outside of the allowed memory range"
        );
        assert_eq!(super::verifier_complaint(""), "no verifier message");
    }

    #[test]
    fn stub_object_is_refused() {
        let e = super::check_object(&[]).unwrap_err();
        assert_eq!(e.kind(), "stub_object");
        assert!(e.to_string().contains("DRIFTWATCH_BPF_STUB=1"), "{e}");
        assert!(super::check_object(b"\x7fELF").is_ok());
    }

    /// The loader thread cannot open the kernel BTF (so aya does not parse
    /// it); the rest of the process still can open files afterwards.
    #[test]
    fn the_loader_thread_opens_no_files_and_no_other_thread_is_affected() {
        let probe =
            || (std::fs::File::open("/proc/self/status").map_err(|e| e.kind()).err(), std::env::current_dir().is_ok());
        let on_thread = super::without_opening_files(probe).expect("seccomp filter installs without privileges");
        assert_eq!(on_thread, (Some(std::io::ErrorKind::NotFound), true), "open fails, other syscalls do not");
        assert!(std::fs::File::open("/proc/self/status").is_ok(), "this thread still opens files");
        assert!(std::thread::spawn(|| std::fs::File::open("/proc/self/status").is_ok()).join().unwrap());
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("this binary was built with DRIFTWATCH_BPF_STUB=1: it has no eBPF programs; rebuild without it")]
    StubObject,
    #[error("not privileged: run as root, or grant CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)")]
    NotPrivileged,
    #[error(
        "kernel BTF missing ({0}): the kernel needs CONFIG_DEBUG_INFO_BTF=y, or pass --btf FILE with BTF for this kernel"
    )]
    NoBtf(String),
    #[error(
        "tracefs is not mounted (no /sys/kernel/tracing/events): mount it with `mount -t tracefs nodev /sys/kernel/tracing` (in a pod: a hostPath volume for /sys/kernel/tracing)"
    )]
    NoTracefs,
    #[error("cannot read the host mount namespace from /proc/1/ns/mnt or /proc/self/ns/mnt: is /proc mounted?")]
    NoMntns,
    #[error(
        "the eBPF sensor supports x86_64 only (this is {0}): its file sensor decodes x86_64 syscall numbers and registers"
    )]
    UnsupportedArch(&'static str),
    #[error("cannot parse kernel BTF: {0}")]
    Btf(#[from] aya::BtfError),
    #[error("cannot load the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("the kernel verifier rejected program {program} ({tracepoint}): {reason}")]
    Rejected { program: &'static str, tracepoint: &'static str, reason: String },
    #[error("cannot attach program {program} to tracepoint {tracepoint}: {source}")]
    Attach {
        program: &'static str,
        tracepoint: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("eBPF map {map}: {reason}")]
    Map { map: &'static str, reason: String },
}

impl BpfError {
    /// Bounded metric/log label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::StubObject => "stub_object",
            Self::NotPrivileged => "not_privileged",
            Self::NoBtf(_) => "no_btf",
            Self::NoMntns => "no_mntns",
            Self::UnsupportedArch(_) => "unsupported_arch",
            Self::NoTracefs => "no_tracefs",
            Self::Btf(_) => "btf",
            Self::Load(_) => "load",
            Self::Rejected { .. } => "verifier",
            Self::Attach { .. } => "attach",
            Self::Map { .. } => "map",
        }
    }
}

/// The verifier's complaint, for a one-line error (the full log goes to debug logs).
fn verifier_reason(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError { io_error, verifier_log } => {
            let log = verifier_log.to_string();
            tracing::debug!(verifier_log = %log, "verifier log");
            format!("{io_error}; verifier: {} (RUST_LOG=debug prints the full log)", verifier_complaint(&log))
        }
        other => other.to_string(),
    }
}

/// The prose after the last instruction line of a verifier log, before its
/// statistics: that is where the verifier says what it refused.
pub fn verifier_complaint(log: &str) -> String {
    let mut reason: Vec<&str> = log
        .lines()
        .rev()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .skip_while(|l| {
            l.starts_with("processed ") || l.starts_with("verification time") || l.starts_with("stack depth")
        })
        .take_while(|l| !l.starts_with(|c: char| c.is_ascii_digit() || c == ';'))
        .take(3)
        .collect();
    reason.reverse();
    if reason.is_empty() { "no verifier message".to_string() } else { reason.join(" / ") }
}

pub struct Sensor {
    /// Owns the programs and their links: dropping it detaches everything.
    _ebpf: Ebpf,
    ring: Option<RingBuf<MapData>>,
    look: Option<look::Look>,
    kstats: Option<PerCpuArray<MapData, abi::dw_kstats>>,
    preexisting: Option<Preexisting>,
    not_container: Option<NotContainer>,
    drift_marks: Option<DriftMarks>,
    protect: Option<protect::ProtectMaps>,
    pub host_mntns: u32,
    pub attached: usize,
}

/// Load-time settings of the sensor.
#[derive(Debug, Clone)]
pub struct SensorOptions {
    pub ringbuf_bytes: u32,
    /// Kernel BTF to use instead of /sys/kernel/btf/vmlinux.
    pub btf_path: Option<std::path::PathBuf>,
    /// Send every container exec, not only interesting ones (benchmarks).
    pub emit_all_execs: bool,
    /// File events per container per second; the excess is counted and dropped in the kernel.
    pub file_events_per_sec: u32,
    /// Records that are not drift wake the reader at most this often (ms; 0: never).
    pub wake_interval_ms: u64,
    /// Attach the network sensor's syscall tracepoints.
    pub network: bool,
    /// Attach the file sensor's syscall hooks.
    pub files: bool,
    /// Attach the executable-mapping sensor's syscall tracepoints (mmap, mprotect).
    pub mappings: bool,
    /// Scratch space (`rules.file.ignore_prefixes`): file events under it are
    /// dropped in the kernel, before the per-container rate limit.
    pub scratch_prefixes: Vec<String>,
}

impl SensorOptions {
    pub fn from_config(c: &config::Sensor) -> Self {
        Self {
            ringbuf_bytes: c.ringbuf_bytes,
            btf_path: None,
            emit_all_execs: false,
            file_events_per_sec: 100,
            wake_interval_ms: c.wake_interval_ms,
            network: c.network,
            files: c.files,
            mappings: c.mappings,
            scratch_prefixes: Vec::new(),
        }
    }
}

/// The scratch_prefixes LPM trie's entries for `prefixes` (struct
/// dw_prefix_key): each directory as "dir/" (what is under it) and "dir\0"
/// (itself), as `under()` in classify/file.rs matches. Prefixes too long
/// for the key, or past the map's size, are returned apart: userspace
/// still judges them, the kernel just cannot drop them early.
pub fn scratch_prefix_entries(prefixes: &[String]) -> (Vec<(u32, [u8; PREFIX_LEN])>, Vec<&str>) {
    let (mut entries, mut userspace_only) = (Vec::new(), Vec::new());
    for p in prefixes {
        let dir = p.trim_end_matches('/').as_bytes();
        if dir.len() + 1 > PREFIX_LEN || entries.len() + 2 > abi::DW_PREFIX_MAX as usize {
            userspace_only.push(p.as_str());
            continue;
        }
        for end in [b'/', 0] {
            let mut data = [0u8; PREFIX_LEN];
            data[..dir.len()].copy_from_slice(dir);
            data[dir.len()] = end;
            entries.push(((dir.len() as u32 + 1) * 8, data));
        }
    }
    (entries, userspace_only)
}

const PREFIX_LEN: usize = abi::DW_PREFIX_LEN as usize;

/// The typedefs the kernel attaches each `tp_btf` program by (`btf_trace_<tracepoint>`).
fn tp_btf_typedefs() -> Vec<String> {
    PROGRAMS.iter().map(|(_, tp)| format!("btf_trace_{tp}")).collect()
}

/// The kernel's BTF for loading the sensor, cut down to what the sensor
/// reads from it (`btf_min`; the whole one, ~15 MB while parsed, was most of
/// the agent's startup peak); the full BTF when it cannot be cut (said in the log).
fn kernel_btf(path: &std::path::Path) -> Result<Btf, BpfError> {
    let raw = std::fs::read(path).map_err(|e| BpfError::NoBtf(format!("{}: {e}", path.display())))?;
    match btf_min::minimal(&raw, OBJECT, &tp_btf_typedefs()) {
        Ok(min) => {
            drop(raw);
            Ok(Btf::parse(&min, aya::Endianness::default())?)
        }
        Err(e) => {
            tracing::info!(btf = %path.display(), "using the whole kernel BTF (more memory while loading): {e}");
            Ok(Btf::parse(&raw, aya::Endianness::default())?)
        }
    }
}

/// An `EbpfLoader` that has not parsed the kernel's BTF. aya's
/// `EbpfLoader::new` parses /sys/kernel/btf/vmlinux at once (~15 MB, most of
/// the agent's startup peak) even when the caller then gives its own BTF or
/// none: built where opening files fails, it starts without. Where that cannot
/// be arranged, the loader is built as usual and its BTF dropped.
pub(crate) fn loader_without_kernel_btf() -> EbpfLoader<'static> {
    let mut loader = without_opening_files(EbpfLoader::new).unwrap_or_else(|| {
        tracing::debug!("cannot build the eBPF loader without the kernel BTF; building it with");
        EbpfLoader::new()
    });
    loader.btf(None);
    loader
}

/// Runs `f` on a thread of its own whose `open`/`openat` calls fail with
/// ENOENT (a seccomp filter: per thread, needs no capability, gone with the
/// thread); `None` when the filter cannot be installed.
fn without_opening_files<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W, sock_filter};
    let stmt = |code: u32, k: u32| sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jeq = |k: u32, jt: u8, jf: u8| sock_filter { code: (BPF_JMP | BPF_JEQ | BPF_K) as u16, jt, jf, k };
    const ARCH_X86_64: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
    let enoent = libc::SECCOMP_RET_ERRNO | libc::ENOENT as u32;
    // seccomp_data: nr at offset 0, arch at 4.
    let filter = [
        stmt(BPF_LD | BPF_W | BPF_ABS, 4),
        jeq(ARCH_X86_64, 0, 3),
        stmt(BPF_LD | BPF_W | BPF_ABS, 0),
        jeq(libc::SYS_openat as u32, 2, 0),
        jeq(libc::SYS_open as u32, 1, 0),
        stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW),
        stmt(BPF_RET | BPF_K, enoent),
    ];
    let thread = std::thread::Builder::new().name("dw-loader".into()).spawn(move || {
        let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr().cast_mut() };
        // SAFETY: both prctls act on this thread only (no TSYNC); the filter
        // outlives the call, which copies it.
        let filtered = unsafe {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
                && libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const libc::sock_fprog) == 0
        };
        filtered.then(f)
    });
    thread.ok()?.join().ok().flatten()
}

impl Sensor {
    /// Loads and attaches the sensor; `names` fills the kernel's name filter.
    pub fn load(opts: &SensorOptions, names: &HashMap<String, u32>) -> Result<Self, BpfError> {
        check_object(OBJECT)?;
        let btf_path = opts.btf_path.clone().unwrap_or_else(|| "/sys/kernel/btf/vmlinux".into());
        preflight::check(&btf_path, opts.network || opts.files || opts.mappings)?;
        let (host_mntns, source) = preflight::host_mntns()?;
        if source != "/proc/1/ns/mnt" {
            let why = std::fs::read_link("/proc/1/ns/mnt").err().map(|e| e.to_string()).unwrap_or_default();
            tracing::warn!(
                "cannot read /proc/1/ns/mnt ({why}); treating the agent's own mount namespace as the host's \
                 (correct when the agent runs on the host; in a pod, use hostPID and CAP_SYS_PTRACE)"
            );
        }
        let emit_all: u8 = opts.emit_all_execs.into();
        let wake_gap_ns = opts.wake_interval_ms * 1_000_000;
        let seed = protect::random_seed();
        #[allow(clippy::needless_late_init)] // declared first: it must outlive the loader that borrows it
        let btf;
        let mut loader = loader_without_kernel_btf();
        btf = kernel_btf(&btf_path)?;
        let mut ebpf = loader
            .btf(Some(&btf))
            .override_global("host_mntns", &host_mntns, true)
            .override_global("emit_all_execs", &emit_all, true)
            .override_global("file_events_per_sec", &opts.file_events_per_sec, true)
            .override_global("protect_seed", &seed, true)
            .override_global("wake_gap_ns", &wake_gap_ns, true)
            .map_max_entries("events", opts.ringbuf_bytes)
            .load(OBJECT)?;

        let mut names_map: BpfHashMap<_, [u8; 16], u32> = BpfHashMap::try_from(
            ebpf.map_mut("exec_names").ok_or(BpfError::Map { map: "exec_names", reason: "missing".into() })?,
        )
        .map_err(|e| BpfError::Map { map: "exec_names", reason: e.to_string() })?;
        for (name, class) in names {
            let mut key = [0u8; 16];
            let n = name.len().min(15);
            key[..n].copy_from_slice(&name.as_bytes()[..n]);
            names_map
                .insert(key, class, 0)
                .map_err(|e| BpfError::Map { map: "exec_names", reason: format!("insert {name:?}: {e}") })?;
        }
        let (entries, userspace_only) = scratch_prefix_entries(&opts.scratch_prefixes);
        let mut scratch: LpmTrie<_, [u8; PREFIX_LEN], u8> = LpmTrie::try_from(
            ebpf.map_mut("scratch_prefixes")
                .ok_or(BpfError::Map { map: "scratch_prefixes", reason: "missing".into() })?,
        )
        .map_err(|e| BpfError::Map { map: "scratch_prefixes", reason: e.to_string() })?;
        for (bits, data) in &entries {
            scratch
                .insert(&Key::new(*bits, *data), 1, 0)
                .map_err(|e| BpfError::Map { map: "scratch_prefixes", reason: e.to_string() })?;
        }
        if !userspace_only.is_empty() {
            tracing::info!(
                prefixes = ?userspace_only,
                "these rules.file.ignore_prefixes are judged in userspace only (longer than {} bytes, or past {} prefixes)",
                PREFIX_LEN - 1,
                abi::DW_PREFIX_MAX / 2
            );
        }
        let by_inode = seed_preexisting(&mut ebpf, host_mntns)?;

        let mut attached = 0;
        // Sensors switched off are neither loaded nor attached: no syscall hook,
        // no slow syscall path for the node.
        for (program, tracepoint) in PROGRAMS {
            let prog: &mut BtfTracePoint = ebpf
                .program_mut(program)
                .ok_or(BpfError::Map { map: "programs", reason: format!("{program} missing from object") })?
                .try_into()
                .map_err(|e: ProgramError| BpfError::Attach { program, tracepoint, source: e })?;
            prog.load(tracepoint, &btf).map_err(|e| BpfError::Rejected {
                program,
                tracepoint,
                reason: verifier_reason(&e),
            })?;
            prog.attach().map_err(|source| BpfError::Attach { program, tracepoint, source })?;
            attached += 1;
        }
        // The parsed BTF is needed no more: free it before the ring buffer is
        // mapped (its pages count in RSS from the mmap on), so the agent's
        // peak holds one of the two, not both. The same for the code that
        // parsed the configuration and loaded the programs.
        drop(loader);
        drop(btf);
        crate::heap::trim();
        let released = crate::heap::release_code();
        tracing::debug!(bytes = released, "startup code released");
        for (program, tracepoints) in SYSCALL_PROGRAMS.into_iter().filter(|_| opts.network) {
            let prog = load_syscall_program(&mut ebpf, program, tracepoints[0])?;
            for tracepoint in tracepoints.iter().copied() {
                prog.attach("syscalls", tracepoint).map_err(|source| BpfError::Attach {
                    program,
                    tracepoint,
                    source,
                })?;
            }
            attached += 1;
        }

        if opts.files {
            attach_file_program(&mut ebpf)?;
            attached += 1;
        }
        for (program, tracepoint) in MAPPING_PROGRAMS.into_iter().filter(|_| opts.mappings) {
            match attach_syscall(&mut ebpf, program, tracepoint) {
                Ok(()) => attached += 1,
                Err(e) if program.starts_with("dw_mprotect") => {
                    tracing::warn!(error = %e, "mprotect(PROT_EXEC) of file mappings is not judged on this kernel");
                }
                Err(e) => return Err(e),
            }
        }

        let ring = RingBuf::try_from(
            ebpf.take_map("events").ok_or(BpfError::Map { map: "events", reason: "missing".into() })?,
        )
        .map_err(|e| BpfError::Map { map: "events", reason: e.to_string() })?;
        let look =
            look::Look::new(ebpf.take_map("reader").ok_or(BpfError::Map { map: "reader", reason: "missing".into() })?)
                .map_err(|reason| BpfError::Map { map: "reader", reason })?;
        let kstats = PerCpuArray::try_from(
            ebpf.take_map("kstats").ok_or(BpfError::Map { map: "kstats", reason: "missing".into() })?,
        )
        .map_err(|e| BpfError::Map { map: "kstats", reason: e.to_string() })?;
        let nc = BpfHashMap::try_from(
            ebpf.take_map("not_container_mntns")
                .ok_or(BpfError::Map { map: "not_container_mntns", reason: "missing".into() })?,
        )
        .map_err(|e| BpfError::Map { map: "not_container_mntns", reason: e.to_string() })?;
        let pre = BpfHashMap::try_from(
            ebpf.take_map("preexisting_mntns")
                .ok_or(BpfError::Map { map: "preexisting_mntns", reason: "missing".into() })?,
        )
        .map_err(|e| BpfError::Map { map: "preexisting_mntns", reason: e.to_string() })?;
        let procs = BpfHashMap::try_from(
            ebpf.take_map("procs").ok_or(BpfError::Map { map: "procs", reason: "missing".into() })?,
        )
        .map_err(|e| BpfError::Map { map: "procs", reason: e.to_string() })?;
        let protect = protect::ProtectMaps::new(
            take_hash(&mut ebpf, "protect_mntns")?,
            take_hash(&mut ebpf, "protect_allow")?,
            take_hash(&mut ebpf, "script_killed")?,
            seed,
        );
        Ok(Self {
            _ebpf: ebpf,
            ring: Some(ring),
            look: Some(look),
            kstats: Some(kstats),
            // Only the inode-number fallback needs pruning.
            preexisting: by_inode.then_some(Preexisting { map: pre }),
            not_container: Some(NotContainer(Mutex::new(nc))),
            drift_marks: Some(DriftMarks(Mutex::new(procs))),
            protect: Some(protect),
            host_mntns,
            attached,
        })
    }

    /// The ring buffer, for the reader thread (once).
    pub fn take_ring(&mut self) -> Option<RingBuf<MapData>> {
        self.ring.take()
    }

    /// The reader's side of the wake gate, for the reader thread (once).
    pub fn take_look(&mut self) -> Option<look::Look> {
        self.look.take()
    }

    /// The preexisting-namespace table, for the pruning task (once).
    pub fn take_preexisting(&mut self) -> Option<Preexisting> {
        self.preexisting.take()
    }

    /// The not-a-container cache, for the pipeline (once).
    pub fn take_not_container(&mut self) -> Option<NotContainer> {
        self.not_container.take()
    }

    /// The lineage table, for drift only userspace can judge (once).
    pub fn take_drift_marks(&mut self) -> Option<DriftMarks> {
        self.drift_marks.take()
    }

    /// Protect mode's maps, for the pipeline (once).
    pub fn take_protect(&mut self) -> Option<protect::ProtectMaps> {
        self.protect.take()
    }

    /// The kernel counters, for the metrics collector (once).
    pub fn take_kstats(&mut self) -> Option<Box<dyn KernelStatsSource>> {
        self.kstats.take().map(|m| Box::new(KStats(Mutex::new(m))) as Box<dyn KernelStatsSource>)
    }
}

/// Loads the syscall-tracepoint program `program` (`tracepoint`: the one its
/// errors name).
fn load_syscall_program<'a>(
    ebpf: &'a mut Ebpf,
    program: &'static str,
    tracepoint: &'static str,
) -> Result<&'a mut TracePoint, BpfError> {
    let prog: &mut TracePoint = ebpf
        .program_mut(program)
        .ok_or(BpfError::Map { map: "programs", reason: format!("{program} missing from object") })?
        .try_into()
        .map_err(|e: ProgramError| BpfError::Attach { program, tracepoint, source: e })?;
    prog.load().map_err(|e| BpfError::Rejected { program, tracepoint, reason: verifier_reason(&e) })?;
    Ok(prog)
}

/// Loads `program` and attaches it to the syscall tracepoint `tracepoint`.
fn attach_syscall(ebpf: &mut Ebpf, program: &'static str, tracepoint: &'static str) -> Result<(), BpfError> {
    let prog = load_syscall_program(ebpf, program, tracepoint)?;
    prog.attach("syscalls", tracepoint).map_err(|source| BpfError::Attach { program, tracepoint, source })?;
    Ok(())
}

/// Loads the file sensor's program and attaches it to each of its syscall
/// tracepoints this kernel has (tracefs lists them); at least the opens must
/// attach, or the sensor would be silently blind.
fn attach_file_program(ebpf: &mut Ebpf) -> Result<(), BpfError> {
    let (program, tracepoints) = FILE_PROGRAM;
    let prog = load_syscall_program(ebpf, program, tracepoints[0])?;
    let mut missing = Vec::new();
    for tracepoint in tracepoints.iter().copied() {
        if let Err(source) = prog.attach("syscalls", tracepoint) {
            if matches!(tracepoint, "sys_exit_open" | "sys_exit_openat") {
                return Err(BpfError::Attach { program, tracepoint, source });
            }
            tracing::debug!(tracepoint, error = %source, "file sensor tracepoint not attached");
            missing.push(tracepoint);
        }
    }
    if !missing.is_empty() {
        tracing::info!(?missing, "this kernel lacks these syscall tracepoints; the file sensor judges the others");
    }
    Ok(())
}

/// A hash map taken out of the object, by name.
fn take_hash<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<BpfHashMap<MapData, K, V>, BpfError> {
    let map = ebpf.take_map(name).ok_or(BpfError::Map { map: name, reason: "missing".into() })?;
    BpfHashMap::try_from(map).map_err(|e| BpfError::Map { map: name, reason: e.to_string() })
}

/// NS_GET_MNTNS_ID (Linux 6.8+): the namespace's never-reused id, the same
/// value the kernel program keys `seen_mntns` by.
pub fn mntns_unique_id(link: &str) -> Option<u64> {
    const NS_GET_MNTNS_ID: libc::c_ulong = 0x8008_b705;
    let f = std::fs::File::open(link).ok()?;
    let mut id: u64 = 0;
    // SAFETY: the ioctl writes one u64 into `id`; the fd is valid for the call.
    let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), NS_GET_MNTNS_ID as _, &mut id) };
    (rc == 0).then_some(id)
}

/// Tells the kernel which mount namespaces predate the agent, so their next
/// exec (a `kubectl exec`) is not mistaken for a container entrypoint. With
/// NS_GET_MNTNS_ID their unique ids go straight into `seen_mntns`; older
/// kernels get the inode-number table, which must then be pruned.
fn seed_preexisting(ebpf: &mut Ebpf, host: u32) -> Result<bool, BpfError> {
    let snap = procfs::scan(true);
    if snap.mntns_denied > 0 {
        tracing::warn!(
            processes = snap.mntns_denied,
            "cannot read the mount namespace of {} processes (permission denied): containers already \
             running are not seeded, so the first exec in each will be taken for its entrypoint \
             (in a pod, grant CAP_SYS_PTRACE)",
            snap.mntns_denied
        );
    }
    let mut live = snap.mntns;
    live.remove(&host);
    // Each namespace's main process, for telling its tree from exec sessions
    // where it is not pid 1 (pods sharing a pid namespace, hostPID).
    let mains = procfs::oldest_by_mntns();
    let mut fallback = Vec::new();
    {
        let mut seen: BpfHashMap<_, u64, abi::dw_seen> = BpfHashMap::try_from(
            ebpf.map_mut("seen_mntns").ok_or(BpfError::Map { map: "seen_mntns", reason: "missing".into() })?,
        )
        .map_err(|e| BpfError::Map { map: "seen_mntns", reason: e.to_string() })?;
        for (ino, link) in &live {
            match mntns_unique_id(link) {
                Some(id) => {
                    // Its main process started before us: its environment is unknown.
                    let main_tgid = mains.get(ino).copied().unwrap_or(0);
                    let v = abi::dw_seen { main_tgid, env_loader: 0, flags: abi::DW_SEEN_ENV_UNKNOWN as u16 };
                    let _ = seen.insert(id, v, 0);
                }
                None => fallback.push(*ino),
            }
        }
    }
    if !fallback.is_empty() {
        let mut pre: BpfHashMap<_, u32, u8> = BpfHashMap::try_from(
            ebpf.map_mut("preexisting_mntns")
                .ok_or(BpfError::Map { map: "preexisting_mntns", reason: "missing".into() })?,
        )
        .map_err(|e| BpfError::Map { map: "preexisting_mntns", reason: e.to_string() })?;
        for ns in &fallback {
            let _ = pre.insert(ns, 1, 0);
        }
    }
    tracing::debug!(namespaces = live.len(), by_inode = fallback.len(), "seeded running container mount namespaces");
    Ok(!fallback.is_empty())
}

/// The preexisting-namespace table, pruned as those namespaces die: their
/// inode numbers are recycled, and a new container must not inherit one.
pub struct Preexisting {
    map: BpfHashMap<MapData, u32, u8>,
}

impl Preexisting {
    /// Removes namespaces no live process uses any more (`live`: a scan's
    /// mount namespaces); returns how many are left.
    pub fn prune(&mut self, live: &std::collections::HashMap<u32, String>) -> usize {
        let keys: Vec<u32> = self.map.keys().filter_map(Result::ok).collect();
        let mut left = 0;
        for k in keys {
            if live.contains_key(&k) {
                left += 1;
            } else {
                let _ = self.map.remove(&k);
            }
        }
        left
    }

    /// Prunes after every `/proc` snapshot (off the async workers) until no
    /// namespace that predates the agent is left.
    pub fn prune_on_scans(
        self,
        mut scans: tokio::sync::watch::Receiver<std::sync::Arc<procfs::Snapshot>>,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        let mut me = Some(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    changed = scans.changed() => if changed.is_err() { return },
                }
                let (Some(mut pre), snap) = (me.take(), scans.borrow_and_update().clone()) else { return };
                let Ok((pre, left)) = tokio::task::spawn_blocking(move || {
                    let left = pre.prune(&snap.mntns);
                    (pre, left)
                })
                .await
                else {
                    return;
                };
                if left == 0 {
                    return; // every container that predates the agent is gone
                }
                me = Some(pre);
            }
        });
    }
}

/// Mount namespaces userspace found not to be containers: the kernel drops
/// their execs from then on, so host services with a private mount namespace
/// cost one event each, not one per exec.
pub struct NotContainer(Mutex<BpfHashMap<MapData, u64, u8>>);

impl NotContainer {
    pub fn insert(&self, mntns_id: u64) {
        if let Ok(mut m) = self.0.lock() {
            let _ = m.insert(mntns_id, 1, 0);
        }
    }
}

/// Marks a process image as drift in the kernel's lineage table (`procs`) for
/// verdicts only userspace reaches (a `#!` script's layer): what it forks from
/// then on is reported as descending from drift, as for a dropped binary.
pub struct DriftMarks(Mutex<BpfHashMap<MapData, u32, abi::dw_proc>>);

/// BPF_EXIST: update only; an entry the exit hook removed stays removed.
const BPF_EXIST: u64 = 2;

impl DriftMarks {
    /// Marks `tgid` if it still runs the image exec'd at `exec_ktime_ns` (a
    /// reused pid or a later exec is left alone). True when marked.
    pub fn mark(&self, tgid: u32, exec_ktime_ns: u64) -> bool {
        let Ok(mut m) = self.0.lock() else { return false };
        let Ok(mut p) = m.get(&tgid, 0) else { return false };
        if p.exec_ktime_ns != exec_ktime_ns {
            return false;
        }
        p.flags |= abi::DW_PROC_DRIFTED;
        m.insert(tgid, p, BPF_EXIST).is_ok()
    }
}

struct KStats(Mutex<PerCpuArray<MapData, abi::dw_kstats>>);

impl std::fmt::Debug for KStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KStats")
    }
}

impl KernelStatsSource for KStats {
    fn read(&self) -> Option<abi::dw_kstats> {
        let map = self.0.lock().ok()?;
        let per_cpu = map.get(&0, 0).ok()?;
        let mut sum = abi::dw_kstats::default();
        for s in per_cpu.iter() {
            for (a, b) in sum.submitted.iter_mut().zip(s.submitted) {
                *a += b;
            }
            for (a, b) in sum.ringbuf_full.iter_mut().zip(s.ringbuf_full) {
                *a += b;
            }
            for (a, b) in sum.counters.iter_mut().zip(s.counters) {
                *a += b;
            }
        }
        Some(sum)
    }
}
