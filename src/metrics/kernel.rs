//! The kernel's own counters (per-CPU array `kstats`), read and summed at
//! scrape time, plus the sensor's build and attach facts.

use super::deprecated;
use crate::abi;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::Gauge, info::Info},
    registry::Registry,
};
use std::sync::{Arc, OnceLock};

/// Reads the kernel's per-CPU counters (summed) at scrape time.
pub trait KernelStatsSource: Send + Sync + std::fmt::Debug {
    fn read(&self) -> Option<abi::dw_kstats>;
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    abi_version: String,
    bpf_objects: &'static str,
    /// The commit built from: DRIFTWATCH_GIT_REVISION at build time
    /// (scripts/build-image.sh and the Dockerfile set it), else "unknown".
    git_revision: &'static str,
    /// The running kernel (uname -r): BPF behaviour follows it.
    kernel_release: String,
}

/// The running kernel's release, "unknown" when /proc does not say.
fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The sensor group: kernel counters, attached programs, build info.
#[derive(Debug)]
pub struct KernelMetrics {
    collector: Arc<KernelCollector>,
    programs_attached: Gauge,
}

impl KernelMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let programs_attached = Gauge::default();
        r.register("bpf_programs_attached", "eBPF programs loaded and attached", programs_attached.clone());
        r.register(
            "build",
            "Build information",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                abi_version: abi::DW_ABI_VERSION.to_string(),
                bpf_objects: "driftwatch.bpf.o",
                git_revision: option_env!("DRIFTWATCH_GIT_REVISION").unwrap_or("unknown"),
                kernel_release: kernel_release(),
            }),
        );
        let collector = Arc::new(KernelCollector::default());
        r.register_collector(Box::new(collector.clone()));
        Self { collector, programs_attached }
    }

    /// Where the kernel counters are read from (once, after the sensor loaded).
    pub fn set_source(&self, src: Box<dyn KernelStatsSource>) {
        let _ = self.collector.source.set(src);
    }

    pub fn set_programs_attached(&self, n: i64) {
        self.programs_attached.set(n);
    }
}

#[derive(Debug, Default)]
struct KernelCollector {
    source: OnceLock<Box<dyn KernelStatsSource>>,
}

fn kind_name(i: usize) -> Option<&'static str> {
    match i as u32 {
        abi::DW_KIND_EXEC => Some("exec"),
        abi::DW_KIND_NET => Some("net"),
        abi::DW_KIND_FILE => Some("file"),
        abi::DW_KIND_MAP => Some("map"),
        _ => None,
    }
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(&'static str, &'static str, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (key, value, v) in values {
        let labels = [(*key, *value)];
        let fam = m.encode_family(&labels)?;
        ConstCounter::new(*v).encode(fam)?;
    }
    Ok(())
}

impl Collector for KernelCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = self.source.get().and_then(|s| s.read()) else { return Ok(()) };
        let per_kind = |arr: &[u64]| -> Vec<(&'static str, &'static str, u64)> {
            arr.iter().enumerate().filter_map(|(i, v)| kind_name(i).map(|k| ("kind", k, *v))).collect()
        };
        let submitted = per_kind(&s.submitted);
        counter(
            &mut enc,
            "kernel_events_submitted",
            "Records the kernel submitted to the ring buffer, by kind.",
            &submitted,
        )?;
        // The same values under the old name, for one release (deprecated::OLD_NAMES).
        counter(&mut enc, "kernel_events", &(deprecated::help("kernel_events_submitted_total") + "."), &submitted)?;
        counter(
            &mut enc,
            "kernel_ringbuf_drops",
            "Records the kernel could not reserve in the full ring buffer (lost), by kind.",
            &per_kind(&s.ringbuf_full),
        )?;
        let c = |i: u32| s.counters[i as usize];
        counter(
            &mut enc,
            "kernel_execs",
            "Execs seen by the kernel sensor, by in-kernel verdict.",
            &[
                ("verdict", "host_filtered", c(abi::DW_KSTAT_HOST_EXEC_FILTERED)),
                ("verdict", "container_filtered", c(abi::DW_KSTAT_EXEC_FILTERED)),
                ("verdict", "not_container_filtered", c(abi::DW_KSTAT_NOT_CONTAINER_FILTERED)),
                (
                    "verdict",
                    "container_sent",
                    c(abi::DW_KSTAT_CONTAINER_EXEC).saturating_sub(c(abi::DW_KSTAT_EXEC_FILTERED)),
                ),
            ],
        )?;
        counter(
            &mut enc,
            "kernel_table_full",
            "Kernel map updates that failed because the table was full.",
            &[
                ("table", "procs", c(abi::DW_KSTAT_PROC_TABLE_FULL)),
                ("table", "seen_mntns", c(abi::DW_KSTAT_MNTNS_TABLE_FULL)),
                ("table", "net_seen", c(abi::DW_KSTAT_NET_TABLE_FULL)),
            ],
        )?;
        counter(
            &mut enc,
            "kernel_net_folded",
            "Network events the kernel folded into one already sent (same container, program and endpoint).",
            &[("kind", "net", c(abi::DW_KSTAT_NET_FOLDED))],
        )?;
        counter(
            &mut enc,
            "kernel_file_folded",
            "File write opens the kernel folded into one already sent (same container and inode).",
            &[("kind", "file", c(abi::DW_KSTAT_FILE_FOLDED))],
        )?;
        counter(
            &mut enc,
            "kernel_file_rate_limited",
            "File events over the per-container rate (rules.file.events_per_sec), dropped in the kernel.",
            &[("kind", "file", c(abi::DW_KSTAT_FILE_RATE_LIMITED))],
        )?;
        counter(
            &mut enc,
            "kernel_file_scratch_filtered",
            "File events on scratch paths (rules.file.ignore_prefixes) dropped in the kernel, before the rate limit.",
            &[("kind", "file", c(abi::DW_KSTAT_FILE_SCRATCH))],
        )?;
        counter(
            &mut enc,
            "kernel_exec_mappings",
            "Files container processes mapped executable (mmap, mprotect), by in-kernel verdict: image_filtered \
             (image files, dropped), drift (judged not from the image), folded (drift already sent for the same \
             container and inode, dropped), lost (no room to hold the verdict until the syscall's exit).",
            &[
                ("verdict", "image_filtered", c(abi::DW_KSTAT_MAP_FILTERED)),
                ("verdict", "folded", c(abi::DW_KSTAT_MAP_FOLDED)),
                ("verdict", "drift", c(abi::DW_KSTAT_MAP_EXEC).saturating_sub(c(abi::DW_KSTAT_MAP_FILTERED))),
                ("verdict", "lost", c(abi::DW_KSTAT_MAP_LOST)),
            ],
        )?;
        counter(
            &mut enc,
            "kernel_protect_execs",
            "Binary drift in protect-mode containers, by what the kernel did: killed before its first instruction, \
             approved (ran), kill_failed (bpf_send_signal refused; ran).",
            &[
                ("result", "killed", c(abi::DW_KSTAT_PROTECT_KILLED)),
                ("result", "approved", c(abi::DW_KSTAT_PROTECT_APPROVED)),
                ("result", "kill_failed", c(abi::DW_KSTAT_PROTECT_KILL_FAILED)),
            ],
        )?;
        counter(
            &mut enc,
            "kernel_paths_truncated",
            "Paths the kernel cut to fit its buffer (the tail is kept), by kind: executables, files.",
            &[
                ("kind", "exec", c(abi::DW_KSTAT_PATH_TRUNCATED)),
                ("kind", "file", c(abi::DW_KSTAT_FILE_PATH_TRUNCATED)),
            ],
        )?;
        Ok(())
    }
}
