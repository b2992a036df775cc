//! The node quarantine's kernel side (ebpf/quarantine.bpf.c): loads its
//! cgroup_skb programs once, keeps its maps pinned in bpffs, and attaches a
//! container's pair of programs to its cgroup as links pinned under
//! `<pin_dir>/<container id>/`, so the quarantine outlives the agent. The
//! policy (which cgroup, state, pruning) is respond::quarantine's.
//!
//! Pins in `pin_dir`: `q_allow`, `q_entries`, `q_stats` (the maps, reused by
//! the next agent) and `<container id>/ingress`, `<container id>/egress`
//! (the links). The programs themselves are not pinned: each agent loads its
//! own, and a link keeps the program it was made with alive.

use crate::abi;
use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, MapInfo, MapType, PerCpuArray, lpm_trie::Key, lpm_trie::LpmTrie},
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, ProgramError, links::FdLink},
};
use std::{
    fs::File,
    path::{Path, PathBuf},
};

/// The compiled programs, embedded in the binary (empty when built with
/// DRIFTWATCH_BPF_STUB=1).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/quarantine.bpf.o"));

/// Names of the pinned maps in `pin_dir` (also their names in the object).
pub const MAPS: [&str; 3] = ["q_allow", "q_entries", "q_stats"];
/// Pin names of a container's links, in its directory under `pin_dir`.
pub const LINKS: [&str; 2] = ["egress", "ingress"];

/// The data of a `q_allow` key after its prefix length (see struct dw_qallow_key).
pub type AllowData = [u8; 20];

#[derive(Debug, thiserror::Error)]
pub enum QBpfError {
    #[error("this binary was built with DRIFTWATCH_BPF_STUB=1: it has no quarantine programs; rebuild without it")]
    StubObject,
    #[error("cannot load the quarantine programs: {0}")]
    Load(String),
    #[error("the kernel refused quarantine program {program}: {reason}")]
    Rejected { program: &'static str, reason: String },
    #[error(
        "{path} holds a pinned map that this agent cannot use ({reason}): a quarantine made by another \
         driftwatch version; release its quarantines or remove the pins, then restart"
    )]
    Incompatible { path: PathBuf, reason: String },
    #[error("quarantine map {map}: {reason}")]
    Map { map: &'static str, reason: String },
    #[error("cannot attach the {direction} quarantine program to cgroup {cgroup}: {reason}")]
    Attach { direction: &'static str, cgroup: String, reason: String },
    #[error("cannot pin {path}: {reason}")]
    Pin { path: PathBuf, reason: String },
}

impl QBpfError {
    /// Bounded metric/log label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::StubObject => "stub_object",
            Self::Load(_) => "load",
            Self::Rejected { .. } => "verifier",
            Self::Incompatible { .. } => "incompatible_pins",
            Self::Map { .. } => "map",
            Self::Attach { .. } => "attach",
            Self::Pin { .. } => "pin",
        }
    }
}

/// (type, key size, value size, max entries) each pinned map must have.
fn expected(map: &str) -> (MapType, u32, u32, u32) {
    use std::mem::size_of;
    match map {
        "q_allow" => (MapType::LpmTrie, size_of::<abi::dw_qallow_key>() as u32, 4, abi::DW_QALLOW_MAX),
        "q_entries" => (MapType::Hash, 8, size_of::<abi::dw_quarantine>() as u32, abi::DW_Q_MAX),
        _ => (MapType::PerCpuArray, 4, size_of::<abi::dw_qstats>() as u32, 1),
    }
}

/// Refuses maps pinned by an agent whose layout differs: the programs would
/// read them with the wrong shape.
fn check_pinned(pin_dir: &Path) -> Result<(), QBpfError> {
    for map in MAPS {
        let path = pin_dir.join(map);
        if !path.exists() {
            continue;
        }
        let bad = |reason: String| QBpfError::Incompatible { path: path.clone(), reason };
        let info = MapInfo::from_pin(&path).map_err(|e| bad(chain(&e)))?;
        let (ty, key, value, max) = expected(map);
        let have = (info.map_type().map_err(|e| bad(e.to_string()))?, info.key_size(), info.value_size());
        if have != (ty, key, value) || info.max_entries() != max {
            return Err(bad(format!(
                "type {:?}, key {} bytes, value {} bytes, {} entries; expected {ty:?}, {key}, {value}, {max}",
                have.0,
                have.1,
                have.2,
                info.max_entries()
            )));
        }
    }
    Ok(())
}

/// Which programs a container gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Netns {
    /// Its own network namespace: loopback stays allowed.
    Pod,
    /// The node's (hostNetwork): loopback reaches node services and is dropped.
    Host,
}

/// The loaded programs and the pinned maps.
pub struct QuarantineBpf {
    ebpf: Ebpf,
    allow: LpmTrie<MapData, AllowData, u32>,
    entries: BpfHashMap<MapData, u64, abi::dw_quarantine>,
    stats: PerCpuArray<MapData, abi::dw_qstats>,
}

impl QuarantineBpf {
    /// Loads the programs (once per agent) and opens the maps pinned in
    /// `pin_dir`, pinning new ones there when there are none. `pin_dir`
    /// must exist on a bpffs.
    pub fn load(pin_dir: &Path) -> Result<Self, QBpfError> {
        if OBJECT.is_empty() {
            return Err(QBpfError::StubObject);
        }
        check_pinned(pin_dir)?;
        let paths: Vec<(&str, PathBuf)> = MAPS.iter().map(|m| (*m, pin_dir.join(m))).collect();
        // No CO-RE in this object: it needs no kernel BTF (and parsing it is ~15 MB).
        let mut loader = super::loader_without_kernel_btf();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(OBJECT).map_err(|e| QBpfError::Load(chain(&e)))?;
        for program in ["dwq_in", "dwq_out", "dwq_in_host", "dwq_out_host"] {
            let p: &mut CgroupSkb = ebpf
                .program_mut(program)
                .ok_or(QBpfError::Rejected { program, reason: "missing from the object".into() })?
                .try_into()
                .map_err(|e: ProgramError| QBpfError::Rejected { program, reason: chain(&e) })?;
            p.load().map_err(|e| QBpfError::Rejected { program, reason: super::verifier_reason(&e) })?;
        }
        let allow = LpmTrie::try_from(take(&mut ebpf, "q_allow")?)
            .map_err(|e| QBpfError::Map { map: "q_allow", reason: chain(&e) })?;
        let entries = BpfHashMap::try_from(take(&mut ebpf, "q_entries")?)
            .map_err(|e| QBpfError::Map { map: "q_entries", reason: chain(&e) })?;
        let stats = PerCpuArray::try_from(take(&mut ebpf, "q_stats")?)
            .map_err(|e| QBpfError::Map { map: "q_stats", reason: chain(&e) })?;
        Ok(Self { ebpf, allow, entries, stats })
    }

    /// Makes `q_allow` hold exactly `keys` (prefix length, data): the
    /// programs of every quarantine, older agents' included, use it.
    pub fn set_allow(&mut self, keys: &[(u32, AllowData)]) -> Result<(), QBpfError> {
        let err = |e: aya::maps::MapError| QBpfError::Map { map: "q_allow", reason: chain(&e) };
        let old: Vec<Key<AllowData>> = self.allow.keys().filter_map(Result::ok).collect();
        for (i, (prefix, data)) in keys.iter().enumerate() {
            self.allow.insert(&Key::new(*prefix, *data), i as u32 + 1, 0).map_err(err)?;
        }
        for k in old {
            if !keys.iter().any(|(p, d)| *p == k.prefix_len() && *d == k.data()) {
                self.allow.remove(&k).map_err(err)?;
            }
        }
        Ok(())
    }

    /// Attaches the pair of programs to the cgroup `dir` (an open cgroup v2
    /// directory) and pins the links in `link_dir` (existing, on bpffs).
    /// On error nothing stays attached.
    pub fn attach(&mut self, dir: &File, cgroup: &str, netns: Netns, link_dir: &Path) -> Result<(), QBpfError> {
        let (ingress, egress) = match netns {
            Netns::Pod => ("dwq_in", "dwq_out"),
            Netns::Host => ("dwq_in_host", "dwq_out_host"),
        };
        let mut pinned = Vec::new();
        // Egress first: nothing leaves from the moment the first link is in.
        for (direction, program, ty) in
            [("egress", egress, CgroupSkbAttachType::Egress), ("ingress", ingress, CgroupSkbAttachType::Ingress)]
        {
            let attach_err = |reason: String| QBpfError::Attach { direction, cgroup: cgroup.to_string(), reason };
            let result = (|| {
                let p: &mut CgroupSkb = self
                    .ebpf
                    .program_mut(program)
                    .ok_or_else(|| attach_err("program missing".into()))?
                    .try_into()
                    .map_err(|e: ProgramError| attach_err(e.to_string()))?;
                let id = p.attach(dir, ty, CgroupAttachMode::Single).map_err(|e| {
                    let eperm =
                        matches!(&e, ProgramError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::EPERM));
                    let hint = if eperm {
                        " (attaching cgroup_skb programs needs CAP_NET_ADMIN or CAP_SYS_ADMIN)"
                    } else {
                        ""
                    };
                    attach_err(format!("{}{hint}", chain(&e)))
                })?;
                let link: FdLink = p
                    .take_link(id)
                    .map_err(|e| attach_err(e.to_string()))?
                    .try_into()
                    .map_err(|e: aya::programs::links::LinkError| attach_err(format!("not a bpf_link: {e}")))?;
                let path = link_dir.join(direction);
                link.pin(&path).map_err(|e| QBpfError::Pin { path: path.clone(), reason: chain(&e) })?;
                Ok::<PathBuf, QBpfError>(path)
            })();
            match result {
                Ok(path) => pinned.push(path),
                Err(e) => {
                    for p in pinned {
                        let _ = std::fs::remove_file(p);
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// The record of every quarantined cgroup.
    pub fn entries(&self) -> Vec<abi::dw_quarantine> {
        self.entries.iter().filter_map(Result::ok).map(|(_, v)| v).collect()
    }

    pub fn entry(&self, cgroup_id: u64) -> Option<abi::dw_quarantine> {
        self.entries.get(&cgroup_id, 0).ok()
    }

    pub fn put_entry(&mut self, e: &abi::dw_quarantine) -> Result<(), QBpfError> {
        self.entries.insert(e.cgroup_id, e, 0).map_err(|err| QBpfError::Map { map: "q_entries", reason: chain(&err) })
    }

    pub fn remove_entry(&mut self, cgroup_id: u64) {
        let _ = self.entries.remove(&cgroup_id);
    }

    /// The programs' counters, summed over the CPUs.
    pub fn stats(&self) -> abi::dw_qstats {
        let mut sum = abi::dw_qstats::default();
        if let Ok(per_cpu) = self.stats.get(&0, 0) {
            for s in per_cpu.iter() {
                sum.ingress_allowed += s.ingress_allowed;
                sum.ingress_dropped += s.ingress_dropped;
                sum.egress_allowed += s.egress_allowed;
                sum.egress_dropped += s.egress_dropped;
            }
        }
        sum
    }
}

/// An error with its sources: aya's Display leaves the errno in the source.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(&format!(": {text}"));
        }
        cur = c.source();
    }
    s
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, QBpfError> {
    ebpf.take_map(name).ok_or(QBpfError::Map { map: name, reason: "missing from the object".into() })
}
