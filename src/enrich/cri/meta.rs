//! What the runtime says about a container, combined from its answers
//! (ContainerStatus, ListContainers, PodSandboxStatus); any part may be missing.

use k8s_cri::v1 as api;
use std::collections::{BTreeMap, HashMap};

/// Everything the runtime knows about one container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerMeta {
    pub container_id: String,
    /// `ContainerStatus.metadata.name`; empty for a pod sandbox (pause container).
    pub container_name: String,
    pub pod_name: String,
    pub namespace: String,
    pub pod_uid: String,
    pub sandbox_id: String,
    /// As the runtime reports it, e.g. `busybox:1.36`, `docker.io/library/busybox:1.36`.
    /// Empty for a pod sandbox.
    pub image: String,
    /// `imageRef`: `repo@sha256:…` when the runtime knows a repo digest, else the
    /// image id `sha256:…` (containerd 1.6 does that for images it did not pull).
    pub image_ref: String,
    pub pod_labels: BTreeMap<String, String>,
    pub pod_annotations: BTreeMap<String, String>,
    /// `RuntimeName` from `Version()`: `containerd`, `cri-o`, ...
    pub runtime: String,
}

impl ContainerMeta {
    /// `container.runtime.name` of the runtime that answered.
    pub fn runtime_name(&self) -> &'static str {
        match self.runtime.as_str() {
            "containerd" => "containerd",
            "cri-o" => "cri-o",
            "docker" => "docker",
            _ => "cri",
        }
    }

    /// A pod's own container (not a sandbox, not a container outside pods).
    pub fn is_pod_container(&self) -> bool {
        !self.container_name.is_empty() && !self.pod_name.is_empty()
    }
}

/// A pod, as its sandbox describes it.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct PodInfo {
    pub(super) sandbox_id: String,
    name: String,
    namespace: String,
    uid: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

impl PodInfo {
    pub(super) fn from_status(s: &api::PodSandboxStatus) -> PodInfo {
        PodInfo::new(&s.id, s.metadata.as_ref(), &s.labels, &s.annotations)
    }
    pub(super) fn from_listed(s: &api::PodSandbox) -> PodInfo {
        PodInfo::new(&s.id, s.metadata.as_ref(), &s.labels, &s.annotations)
    }
    fn new(
        id: &str,
        md: Option<&api::PodSandboxMetadata>,
        labels: &HashMap<String, String>,
        annotations: &HashMap<String, String>,
    ) -> PodInfo {
        let md = md.cloned().unwrap_or_default();
        PodInfo {
            sandbox_id: id.to_owned(),
            name: md.name,
            namespace: md.namespace,
            uid: md.uid,
            // The kubelet copies these into the sandbox labels; they are not the pod's.
            labels: labels.iter().filter(|(k, _)| !is_kubelet_label(k)).map(|(k, v)| (k.clone(), v.clone())).collect(),
            annotations: annotations.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }
}

fn is_kubelet_label(k: &str) -> bool {
    matches!(k, "io.kubernetes.pod.name" | "io.kubernetes.pod.namespace" | "io.kubernetes.pod.uid")
}

/// Combines what the runtime said; any part may be missing.
pub(super) fn build_meta(
    id: &str,
    status: Option<&api::ContainerStatus>,
    listed: Option<&api::Container>,
    pod: Option<&PodInfo>,
    runtime: &str,
) -> ContainerMeta {
    let label = |k: &str| -> String {
        status
            .and_then(|s| s.labels.get(k))
            .or_else(|| listed.and_then(|c| c.labels.get(k)))
            .cloned()
            .unwrap_or_default()
    };
    let first = |vals: [Option<&str>; 2]| vals.into_iter().flatten().find(|v| !v.is_empty()).map(str::to_owned);
    let container_name = first([
        status.and_then(|s| s.metadata.as_ref()).map(|m| m.name.as_str()),
        listed.and_then(|c| c.metadata.as_ref()).map(|m| m.name.as_str()),
    ])
    .unwrap_or_else(|| label("io.kubernetes.container.name"));
    let pod_field = |get: fn(&PodInfo) -> &str, key: &str| {
        pod.map(get).filter(|v| !v.is_empty()).map(str::to_owned).unwrap_or_else(|| label(key))
    };
    let image_specs = [status.and_then(|s| s.image.as_ref()), listed.and_then(|c| c.image.as_ref())];
    ContainerMeta {
        container_id: id.to_owned(),
        container_name,
        pod_name: pod_field(|p| &p.name, "io.kubernetes.pod.name"),
        namespace: pod_field(|p| &p.namespace, "io.kubernetes.pod.namespace"),
        pod_uid: pod_field(|p| &p.uid, "io.kubernetes.pod.uid"),
        sandbox_id: first([listed.map(|c| c.pod_sandbox_id.as_str()), pod.map(|p| p.sandbox_id.as_str())])
            .unwrap_or_default(),
        image: pick_image(image_specs.into_iter().flatten().flat_map(|s| [&s.user_specified_image, &s.image])),
        image_ref: first([status.map(|s| s.image_ref.as_str()), listed.map(|c| c.image_ref.as_str())])
            .unwrap_or_default(),
        pod_labels: pod.map(|p| p.labels.clone()).unwrap_or_default(),
        pod_annotations: pod.map(|p| p.annotations.clone()).unwrap_or_default(),
        runtime: runtime.to_owned(),
    }
}

/// The first image that is a name rather than a bare image id: the kubelet sends the
/// id in `CreateContainer`, and runtimes differ in whether they map it back.
fn pick_image<'a>(candidates: impl Iterator<Item = &'a String>) -> String {
    let mut fallback = None;
    for c in candidates.filter(|c| !c.is_empty()) {
        if crate::enrich::image::digest_of_image_ref(c) == Some(c.as_str()) {
            fallback.get_or_insert(c);
            continue;
        }
        return c.clone();
    }
    fallback.cloned().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "1234abcd-5678-90ef-1234-567890abcdef";

    fn map(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn meta_from_partial_answers_never_panics() {
        let m = build_meta("id", None, None, None, "containerd");
        assert_eq!((m.container_id.as_str(), m.pod_name.as_str(), m.image.as_str()), ("id", "", ""));
        // Labels stand in for a missing sandbox.
        let st = api::ContainerStatus {
            labels: map(&[
                ("io.kubernetes.pod.name", "p"),
                ("io.kubernetes.pod.namespace", "ns"),
                ("io.kubernetes.pod.uid", UID),
                ("io.kubernetes.container.name", "c"),
            ]),
            image: Some(api::ImageSpec { image: format!("sha256:{}", "ab".repeat(32)), ..Default::default() }),
            ..Default::default()
        };
        let m = build_meta("id", Some(&st), None, None, "x");
        assert_eq!((m.pod_name.as_str(), m.namespace.as_str(), m.pod_uid.as_str()), ("p", "ns", UID));
        assert_eq!(m.container_name, "c");
        assert_eq!(m.image, format!("sha256:{}", "ab".repeat(32)), "an id is better than nothing");
        // A user_specified_image (containerd >= 1.7) wins over the id.
        let mut st2 = st.clone();
        if let Some(i) = st2.image.as_mut() {
            i.user_specified_image = "busybox:1.36".into();
        }
        assert_eq!(build_meta("id", Some(&st2), None, None, "x").image, "busybox:1.36");
    }
}
