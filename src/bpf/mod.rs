//! Loading, attaching and feeding the eBPF sensor (ebpf/driftwatch.bpf.c).

pub mod preflight;
pub mod reader;

use crate::{abi, config, sink::metrics::KernelStatsSource};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, ProgramError},
};
use std::{collections::HashMap, sync::Mutex};

/// The compiled sensor, embedded in the binary.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/driftwatch.bpf.o"));

/// Programs and their tracepoints, attached in this order: exit and fork
/// first so lineage is kept from the moment exec starts reporting.
pub const PROGRAMS: [(&str, &str); 3] =
    [("dw_exit", "sched_process_exit"), ("dw_fork", "sched_process_fork"), ("dw_exec", "sched_process_exec")];

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("not privileged: run as root, or grant CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)")]
    NotPrivileged,
    #[error(
        "kernel BTF missing (/sys/kernel/btf/vmlinux): the kernel needs CONFIG_DEBUG_INFO_BTF=y (Linux >= 5.8 with BTF)"
    )]
    NoBtf,
    #[error("cannot read the host mount namespace from /proc/1/ns/mnt or /proc/self/ns/mnt: is /proc mounted?")]
    NoMntns,
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
            Self::NotPrivileged => "not_privileged",
            Self::NoBtf => "no_btf",
            Self::NoMntns => "no_mntns",
            Self::Btf(_) => "btf",
            Self::Load(_) => "load",
            Self::Rejected { .. } => "verifier",
            Self::Attach { .. } => "attach",
            Self::Map { .. } => "map",
        }
    }
}

/// The last informative line of a verifier log (the full log goes to debug logs).
fn verifier_reason(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError { io_error, verifier_log } => {
            let log = verifier_log.to_string();
            tracing::debug!(verifier_log = %log, "verifier log");
            // The verifier's complaint is the prose after the last instruction
            // line, before its statistics.
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
            format!("{io_error}; verifier: {} (RUST_LOG=debug prints the full log)", reason.join(" / "))
        }
        other => other.to_string(),
    }
}

pub struct Sensor {
    /// Owns the programs and their links: dropping it detaches everything.
    _ebpf: Ebpf,
    ring: Option<RingBuf<MapData>>,
    kstats: Option<PerCpuArray<MapData, abi::dw_kstats>>,
    pub host_mntns: u32,
    pub attached: usize,
}

/// Load-time settings of the sensor.
#[derive(Debug, Clone)]
pub struct SensorOptions {
    pub ringbuf_bytes: u32,
    /// Send every container exec, not only interesting ones (benchmarks).
    pub emit_all_execs: bool,
}

impl SensorOptions {
    pub fn from_config(c: &config::Sensor) -> Self {
        Self { ringbuf_bytes: c.ringbuf_bytes, emit_all_execs: false }
    }
}

impl Sensor {
    /// Loads and attaches the sensor; `names` fills the kernel's name filter.
    pub fn load(opts: &SensorOptions, names: &HashMap<String, u32>) -> Result<Self, BpfError> {
        preflight::check()?;
        let (host_mntns, source) = preflight::host_mntns()?;
        if source != "/proc/1/ns/mnt" {
            tracing::warn!(
                "cannot read /proc/1/ns/mnt; treating the agent's own mount namespace as the host's \
                 (correct when the agent runs on the host; in a pod, use hostPID)"
            );
        }
        let btf = Btf::from_sys_fs()?;
        let emit_all: u8 = opts.emit_all_execs.into();
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global("host_mntns", &host_mntns, true)
            .override_global("emit_all_execs", &emit_all, true)
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
        seed_seen_mntns(&mut ebpf, host_mntns)?;

        let mut attached = 0;
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

        let ring = RingBuf::try_from(
            ebpf.take_map("events").ok_or(BpfError::Map { map: "events", reason: "missing".into() })?,
        )
        .map_err(|e| BpfError::Map { map: "events", reason: e.to_string() })?;
        let kstats = PerCpuArray::try_from(
            ebpf.take_map("kstats").ok_or(BpfError::Map { map: "kstats", reason: "missing".into() })?,
        )
        .map_err(|e| BpfError::Map { map: "kstats", reason: e.to_string() })?;
        Ok(Self { _ebpf: ebpf, ring: Some(ring), kstats: Some(kstats), host_mntns, attached })
    }

    /// The ring buffer, for the reader thread (once).
    pub fn take_ring(&mut self) -> Option<RingBuf<MapData>> {
        self.ring.take()
    }

    /// The kernel counters, for the metrics collector (once).
    pub fn take_kstats(&mut self) -> Option<Box<dyn KernelStatsSource>> {
        self.kstats.take().map(|m| Box::new(KStats(Mutex::new(m))) as Box<dyn KernelStatsSource>)
    }
}

/// Marks the mount namespaces of processes already running as seen, so their
/// next exec (a `kubectl exec`) is not mistaken for a container entrypoint.
fn seed_seen_mntns(ebpf: &mut Ebpf, host: u32) -> Result<(), BpfError> {
    let mut seen: BpfHashMap<_, u32, u8> = BpfHashMap::try_from(
        ebpf.map_mut("seen_mntns").ok_or(BpfError::Map { map: "seen_mntns", reason: "missing".into() })?,
    )
    .map_err(|e| BpfError::Map { map: "seen_mntns", reason: e.to_string() })?;
    let mut done = std::collections::HashSet::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return Ok(()) };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|s| s.bytes().all(|b| b.is_ascii_digit())) else { continue };
        let Some(ns) = preflight::mntns_of(&format!("/proc/{pid}/ns/mnt")) else { continue };
        if ns != host && done.insert(ns) {
            let _ = seen.insert(ns, 1, 0);
        }
    }
    tracing::debug!(namespaces = done.len(), "seeded running container mount namespaces");
    Ok(())
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
