//! Enrichment: which container an event belongs to.
//!
//! Today: the container id from the cgroup path the kernel captured at exec
//! time (race-free: the process may already be gone), with /proc as a fallback.
//! Runtime (CRI) and Kubernetes metadata plug in here later.

pub mod cgroup;
pub mod cri;
pub mod image;
pub mod kube;
mod locks;
pub mod overlay;
pub mod workload;

pub use cgroup::{CgroupLayout, ContainerRef};

use crate::event::ExecEvent;

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

/// Resolves the container of an exec event.
pub fn container_of(ev: &ExecEvent) -> Result<ContainerRef, EnrichError> {
    container_from_path_or_pid(&ev.cgroup_path, ev.tgid)
}

/// The container of a process, from the cgroup path the kernel captured.
pub fn container_from_path_or_pid(cgroup_path: &str, tgid: u32) -> Result<ContainerRef, EnrichError> {
    if let Some(c) = cgroup::container_from_cgroup_path(cgroup_path) {
        return Ok(c);
    }
    // The kernel keeps only the last few path components; a deeper layout may
    // need the full path, which /proc still has if the process is alive.
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{tgid}/cgroup"))
        && let Some(c) = cgroup::container_from_proc_cgroup(&text)
    {
        return Ok(c);
    }
    Err(EnrichError::NotContainer { pid: tgid, path: cgroup_path.to_string() })
}
