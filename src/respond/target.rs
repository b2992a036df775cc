//! Which container a `driftwatch diff` / `ps` argument names: a container id
//! or unique prefix, or `namespace/pod[/container]` (through CRI), and a live
//! process of it to read its mounts and namespaces through.

use crate::enrich::cri::{ContainerMeta, Cri, CriConfig, Link};
use std::{path::PathBuf, sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// A container found on this node.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub id: String,
    /// One live process of the container (0 when it has none).
    pub pid: u32,
    /// What the runtime says of it (None without CRI, e.g. a `ctr` container).
    pub meta: Option<Arc<ContainerMeta>>,
}

/// Why a name does not resolve; the message names the argument.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TargetError {
    #[error("no container on this node matches {0:?}")]
    NotFound(String),
    #[error("{spec:?} matches {} containers: {}; give more of the id", .ids.len(), .ids.join(", "))]
    Ambiguous { spec: String, ids: Vec<String> },
    #[error("{spec:?} names a pod with {} containers ({}); add /<container>", .names.len(), .names.join(", "))]
    WhichContainer { spec: String, names: Vec<String> },
    #[error("{0:?} is not a container id (hex) nor namespace/pod[/container]")]
    BadSpec(String),
    #[error("container {0} has no running process on this node: nothing to read its filesystem through")]
    NotRunning(String),
    #[error("looking up {spec:?} needs the container runtime (CRI), which did not answer: {reason}")]
    NoRuntime { spec: String, reason: String },
}

/// What the argument asks for.
#[derive(Debug, Clone, PartialEq)]
enum Spec<'a> {
    IdPrefix(&'a str),
    Pod { namespace: &'a str, pod: &'a str, container: Option<&'a str> },
}

fn parse(spec: &str) -> Result<Spec<'_>, TargetError> {
    let bad = || TargetError::BadSpec(spec.to_string());
    let parts: Vec<&str> = spec.split('/').collect();
    // Kubernetes names: lower-case alphanumerics, '-' and '.'; never "." or "..".
    let name = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    };
    if parts.len() > 1 && !parts.iter().all(|p| name(p)) {
        return Err(bad());
    }
    match parts.as_slice() {
        [id] if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(Spec::IdPrefix(id)),
        [ns, pod] if !ns.is_empty() && !pod.is_empty() => Ok(Spec::Pod { namespace: ns, pod, container: None }),
        [ns, pod, c] if !ns.is_empty() && !pod.is_empty() && !c.is_empty() => {
            Ok(Spec::Pod { namespace: ns, pod, container: Some(c) })
        }
        _ => Err(bad()),
    }
}

/// Resolves `spec` on this node. `endpoint`: the CRI socket (None: the
/// usual sockets are probed). An id prefix resolves from `/proc` when the
/// runtime does not answer.
pub async fn resolve(spec: &str, endpoint: Option<PathBuf>) -> Result<Resolved, TargetError> {
    let parsed = parse(spec)?;
    let live = crate::procfs::scan(false).containers;
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let cfg = CriConfig { endpoint, request_timeout: Duration::from_secs(3) };
    let cri = Cri::spawn(cfg, Default::default(), cancel);
    let listing = match wait_up(&cri).await {
        Ok(()) => cri.list(|_| false).await.map_err(|r| r.to_string()),
        Err(r) => Err(r),
    };
    let chosen: (String, Option<Arc<ContainerMeta>>) = match (&parsed, listing) {
        (Spec::IdPrefix(p), Ok(l)) => {
            let mut ids: Vec<(String, Option<Arc<ContainerMeta>>)> =
                l.containers.into_iter().filter(|c| c.id.starts_with(p)).map(|c| (c.id, c.meta)).collect();
            // Containers outside CRI (ctr, a runtime without CRI) are found through /proc.
            for id in live.keys().filter(|id| id.starts_with(p)) {
                if !ids.iter().any(|(i, _)| i == id) {
                    ids.push((id.clone(), None));
                }
            }
            one(spec, ids)?
        }
        (Spec::IdPrefix(p), Err(_)) => {
            let ids = live.keys().filter(|id| id.starts_with(p)).map(|id| (id.clone(), None)).collect();
            one(spec, ids)?
        }
        (Spec::Pod { namespace, pod, container }, Ok(l)) => {
            let in_pod: Vec<_> = l
                .containers
                .into_iter()
                .filter_map(|c| c.meta.map(|m| (c.id, c.running, m)))
                .filter(|(_, _, m)| m.is_pod_container() && m.namespace == *namespace && m.pod_name == *pod)
                .collect();
            let named: Vec<_> = match container {
                Some(name) => in_pod.iter().filter(|(_, _, m)| m.container_name == *name).collect(),
                None => in_pod.iter().collect(),
            };
            // A restarted container leaves its exited predecessor listed: prefer the running one.
            let running: Vec<_> = named.iter().filter(|(_, r, _)| *r).copied().collect();
            let pick = if running.is_empty() { named } else { running };
            match pick.as_slice() {
                [] => return Err(TargetError::NotFound(spec.to_string())),
                [(id, _, m)] => (id.clone(), Some(m.clone())),
                many if container.is_none() => {
                    let mut names: Vec<String> = many.iter().map(|(_, _, m)| m.container_name.clone()).collect();
                    names.sort();
                    names.dedup();
                    if names.len() > 1 {
                        return Err(TargetError::WhichContainer { spec: spec.to_string(), names });
                    }
                    (many[0].0.clone(), Some(many[0].2.clone()))
                }
                many => (many[0].0.clone(), Some(many[0].2.clone())),
            }
        }
        (Spec::Pod { .. }, Err(reason)) => return Err(TargetError::NoRuntime { spec: spec.to_string(), reason }),
    };
    let (id, meta) = chosen;
    let pid = live.get(&id).copied().unwrap_or(0);
    Ok(Resolved { id, pid, meta })
}

fn one(
    spec: &str,
    mut ids: Vec<(String, Option<Arc<ContainerMeta>>)>,
) -> Result<(String, Option<Arc<ContainerMeta>>), TargetError> {
    ids.sort_by(|a, b| a.0.cmp(&b.0));
    match ids.len() {
        0 => Err(TargetError::NotFound(spec.to_string())),
        1 => Ok(ids.remove(0)),
        _ => Err(TargetError::Ambiguous { spec: spec.to_string(), ids: ids.into_iter().map(|(i, _)| i).collect() }),
    }
}

/// Waits a few seconds for the first connection; the reason when it fails.
async fn wait_up(cri: &Cri) -> Result<(), String> {
    let mut link = cri.link();
    let wait = async {
        loop {
            if *link.borrow_and_update() == Link::Up {
                return Ok(());
            }
            if let Some(r) = cri.never_up() {
                return Err(r.to_string());
            }
            if link.changed().await.is_err() {
                return Err("connect".to_string());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait).await.unwrap_or_else(|_| Err("timeout".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(parse("abc123").unwrap(), Spec::IdPrefix("abc123"));
        assert_eq!(parse("ns/p").unwrap(), Spec::Pod { namespace: "ns", pod: "p", container: None });
        assert_eq!(parse("ns/p/c").unwrap(), Spec::Pod { namespace: "ns", pod: "p", container: Some("c") });
        for bad in ["", "xyz", "ns/", "/p", "a/b/c/d", "ns//c", "../etc"] {
            assert!(matches!(parse(bad), Err(TargetError::BadSpec(_))), "{bad}");
        }
    }
}
