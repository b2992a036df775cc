//! Enrichment: which container an event belongs to, and what the node knows
//! about it.
//!
//! - [`cgroup`]: the container id from the cgroup path the kernel captured at
//!   event time (race-free: the process may already be gone);
//! - [`cri`]: the container runtime's client (pod, image, labels);
//! - [`kube`]: this node's pods from the Kubernetes API (owner workloads, specs);
//! - [`overlay`]: a container's layers and volumes, from its mounts;
//! - [`atomic_volume`]: Secret/ConfigMap volumes the kubelet swaps atomically;
//! - [`image`], [`workload`]: image references and workloads, parsed.
//!
//! What is known per container is kept by the registry (`crate::containers`).

pub mod atomic_volume;
pub mod cgroup;
pub mod cri;
pub mod environ;
pub mod image;
pub mod kube;
pub mod memo;
pub mod overlay;
pub mod workload;

pub use cgroup::{CgroupLayout, ContainerRef};

use crate::event::Process;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrichError {
    /// The process is not in a recognisable container cgroup (a host process
    /// in a private mount namespace, for example).
    #[error("no container id in cgroup path {path:?} of pid {pid}")]
    NotContainer { pid: u32, path: String },
}

impl EnrichError {
    /// Bounded metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotContainer { .. } => "not_container",
        }
    }
}

impl CgroupLayout {
    /// Runtime implied by the layout, as the OTel `container.runtime.name` value.
    pub fn runtime(&self) -> &'static str {
        match self {
            Self::ContainerdCgroupfs | Self::ContainerdSystemd => "containerd",
            Self::CrioCgroupfs | Self::CrioSystemd => "cri-o",
            Self::DockerCgroupfs | Self::DockerSystemd => "docker",
            Self::PodmanSystemd => "podman",
            Self::KubepodsCgroupfs => "cri",
        }
    }
}

/// The container of a process, from the cgroup path the kernel captured.
pub fn container_of(p: &Process) -> Result<ContainerRef, EnrichError> {
    container_of_with(p, |path| cgroup::container_from_cgroup_path(path))
}

/// [`container_of`] with the path parsed by `from_path` (the pipeline's memo).
pub fn container_of_with(
    p: &Process,
    from_path: impl FnOnce(&std::sync::Arc<str>) -> Option<ContainerRef>,
) -> Result<ContainerRef, EnrichError> {
    if let Some(c) = from_path(&p.cgroup_path) {
        return Ok(c);
    }
    // The kernel keeps only the last few path components; a deeper layout may
    // need the full path, which /proc still has if the process is alive.
    if let Ok(bytes) = std::fs::read(format!("/proc/{}/cgroup", p.tgid))
        && let Some(c) = cgroup::container_from_proc_cgroup(&crate::escape::lossless_vec(bytes).0)
    {
        return Ok(c);
    }
    Err(EnrichError::NotContainer { pid: p.tgid, path: p.cgroup_path.to_string() })
}
