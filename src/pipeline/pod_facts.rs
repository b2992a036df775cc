//! A finding's pod facts (`k8s.*` and `container.image.*` keys) built once
//! per container and shared by its findings, instead of copied out of the
//! runtime's metadata into each one: an image reference parsed, the workload
//! derived, a string per label formatted, ~25 allocations and ~16,000
//! instructions a finding of a kubelet pod (`shell_finding_pod` in
//! benches/pipeline.rs). A memo entry is good while its inputs are the same:
//! the registry's metadata (the same `Arc`: the registry replaces it when
//! the runtime says something new), the workload the Kubernetes API resolved,
//! and the pod uid of the cgroup (used when the runtime gives none). Findings
//! without metadata share one entry per reason the same way.

use crate::{
    classify::{PodFacts, SharedPodFacts},
    enrich::{
        cri::ContainerMeta,
        image::{ImageRef, digest_of_image_ref},
        kube::WorkloadRef,
        workload,
    },
    locks::lock,
};
use std::{collections::HashMap, sync::Arc, sync::Mutex};

/// Containers remembered. When full, the containers no longer running are
/// forgotten, and if that is not enough, all (a node runs ~100 pods by
/// default, so this is a bound, not a working size).
pub const MAX_CONTAINERS: usize = 512;

/// What an entry's facts were built from (a finding without metadata: its
/// facts say it all, the reason and the cgroup's pod uid).
enum Inputs {
    Found { meta: Arc<ContainerMeta>, fallback_uid: Option<String>, api_workload: Option<WorkloadRef> },
    Missing,
}

#[derive(Default)]
pub struct PodFactsMemo {
    by_container: Mutex<HashMap<String, (Inputs, Arc<SharedPodFacts>)>>,
}

impl PodFactsMemo {
    /// The facts of container `id` from its metadata; `fallback_uid`: the
    /// pod uid in its cgroup path; `api_workload`: the owner the Kubernetes
    /// API resolved for its pod; `running`: whether a container still runs
    /// (asked only when the memo is full).
    pub fn found(
        &self,
        id: &str,
        meta: &Arc<ContainerMeta>,
        fallback_uid: Option<&str>,
        api_workload: Option<WorkloadRef>,
        running: impl Fn(&str) -> bool,
    ) -> Arc<SharedPodFacts> {
        let fallback_uid = meta.pod_uid.is_empty().then_some(fallback_uid).flatten();
        let same = |known: &Inputs, _: &PodFacts| match known {
            // Pointer first: the registry keeps one Arc per metadata version.
            Inputs::Found { meta: m, fallback_uid: u, api_workload: w } => {
                (Arc::ptr_eq(m, meta) || **m == **meta) && u.as_deref() == fallback_uid && *w == api_workload
            }
            Inputs::Missing => false,
        };
        self.get(id, same, running, || {
            let facts = pod_facts(meta, fallback_uid, api_workload.clone());
            let fallback_uid = fallback_uid.map(str::to_string);
            (Inputs::Found { meta: meta.clone(), fallback_uid, api_workload: api_workload.clone() }, facts)
        })
    }

    /// The facts of a finding that goes out without metadata, for `reason`.
    pub fn missing(
        &self,
        id: &str,
        reason: &'static str,
        fallback_uid: Option<&str>,
        running: impl Fn(&str) -> bool,
    ) -> Arc<SharedPodFacts> {
        let same = |known: &Inputs, f: &PodFacts| {
            matches!(known, Inputs::Missing)
                && f.metadata_missing == Some(reason)
                && f.pod_uid.as_deref() == fallback_uid
        };
        self.get(id, same, running, || (Inputs::Missing, missing_facts(reason, fallback_uid.map(str::to_string))))
    }

    /// The entry of `id` when `same` says it was built from these inputs,
    /// else a new one from `build`. Allocates nothing on a hit.
    fn get(
        &self,
        id: &str,
        same: impl Fn(&Inputs, &PodFacts) -> bool,
        running: impl Fn(&str) -> bool,
        build: impl FnOnce() -> (Inputs, PodFacts),
    ) -> Arc<SharedPodFacts> {
        let mut memo = lock(&self.by_container);
        if let Some((known, facts)) = memo.get(id)
            && same(known, facts)
        {
            return facts.clone();
        }
        let (inputs, facts) = build();
        let facts = Arc::new(SharedPodFacts::from(facts));
        if memo.len() >= MAX_CONTAINERS && !memo.contains_key(id) {
            memo.retain(|id, _| running(id));
            if memo.len() >= MAX_CONTAINERS {
                memo.clear();
            }
        }
        memo.insert(id.to_string(), (inputs, facts.clone()));
        facts
    }

    /// Containers remembered now.
    pub fn len(&self) -> usize {
        lock(&self.by_container).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the runtime knows about a container as a finding's facts. The
/// workload is the API's owner when it resolved one for the pod
/// (`api_workload`, looked up by namespace and pod name: only for a pod's
/// container), else the heuristic from the pod's name and controller labels.
pub fn pod_facts(m: &ContainerMeta, fallback_uid: Option<&str>, api_workload: Option<WorkloadRef>) -> PodFacts {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let mut k = PodFacts {
        namespace: some(&m.namespace),
        pod_name: some(&m.pod_name),
        pod_uid: some(&m.pod_uid).or(fallback_uid.map(str::to_string)),
        container_name: some(&m.container_name),
        metadata_complete: true,
        ..Default::default()
    };
    if !m.pod_name.is_empty() {
        let w = workload::from_pod(&m.pod_name, &m.pod_labels);
        k.workload_kind = Some(w.kind);
        k.workload_name = Some(w.name);
    }
    if let Some((kind, name)) = api_workload {
        k.workload_kind = Some(kind);
        k.workload_name = Some(name);
    }
    if let Ok(r) = ImageRef::parse(&m.image) {
        k.image_name = Some(r.name());
        k.image_tags = Some(r.tags());
        k.image_repo_digests = r.repo_digest().map(|d| vec![d]);
    }
    if let Some(d) = digest_of_image_ref(&m.image_ref) {
        k.image_id = Some(d.to_string());
        if m.image_ref.contains('@') {
            k.image_repo_digests = Some(vec![m.image_ref.clone()]);
        }
    }
    k.pod_labels = m.pod_labels.iter().map(|(k, v)| (format!("k8s.pod.label.{k}"), v.clone())).collect();
    k
}

/// `container.runtime.name` once the runtime answered for the container: the
/// kubelet's cgroupfs layout (`kubepods/<qos>/pod<uid>/<id>`) does not say which
/// runtime made it (`cri`), the runtime that knows the container does.
pub fn runtime_name(from_cgroup: &'static str, m: &ContainerMeta) -> &'static str {
    match (from_cgroup, m.runtime_name()) {
        ("cri", answered) => answered,
        (layout, _) => layout,
    }
}

/// The facts of a finding without metadata: only the cgroup's pod uid.
fn missing_facts(reason: &'static str, pod_uid: Option<String>) -> PodFacts {
    PodFacts { pod_uid, metadata_complete: false, metadata_missing: Some(reason), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pod: &str) -> ContainerMeta {
        ContainerMeta {
            container_id: "c1".into(),
            container_name: "api".into(),
            pod_name: pod.into(),
            namespace: "shop".into(),
            pod_uid: "u1".into(),
            sandbox_id: "s1".into(),
            image: "registry.example.com/shop/api:v2".into(),
            image_ref: "sha256:1111111111111111111111111111111111111111111111111111111111111111".into(),
            pod_labels: [
                ("app".to_string(), "checkout".to_string()),
                ("pod-template-hash".into(), "7d9f8b6c5d".into()),
            ]
            .into(),
            pod_annotations: Default::default(),
            runtime: "containerd".into(),
        }
    }

    #[test]
    fn findings_of_a_container_share_its_facts_until_an_input_changes() {
        let memo = PodFactsMemo::default();
        let m = Arc::new(meta("checkout-7d9f8b6c5d-x2k4q"));
        let a = memo.found("c1", &m, None, None, |_| true);
        assert!(Arc::ptr_eq(&a, &memo.found("c1", &m, None, None, |_| true)), "same inputs: the same facts");
        assert_eq!(a.workload_kind, Some("Deployment"));
        assert_eq!(a.workload_name.as_deref(), Some("checkout"));
        assert_eq!(a.pod_labels.get("k8s.pod.label.app").map(String::as_str), Some("checkout"));
        assert!(a.metadata_complete);

        // The API resolved the owner: it replaces the label heuristic.
        let b = memo.found("c1", &m, None, Some(("StatefulSet", "db".into())), |_| true);
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!((b.workload_kind, b.workload_name.as_deref()), (Some("StatefulSet"), Some("db")));

        // New metadata (a new Arc with other content) builds new facts.
        let m2 = Arc::new(meta("web-0"));
        let c = memo.found("c1", &m2, None, None, |_| true);
        assert_eq!(c.pod_name.as_deref(), Some("web-0"));
        // An equal copy of the metadata is as good as the same Arc.
        let d = memo.found("c1", &Arc::new(meta("web-0")), None, None, |_| true);
        assert!(Arc::ptr_eq(&c, &d));
        assert_eq!(memo.len(), 1);
    }

    #[test]
    fn the_cgroups_pod_uid_counts_only_when_the_runtime_gives_none() {
        let memo = PodFactsMemo::default();
        let m = Arc::new(meta("p"));
        let a = memo.found("c1", &m, Some("from-cgroup"), None, |_| true);
        assert_eq!(a.pod_uid.as_deref(), Some("u1"));
        assert!(Arc::ptr_eq(&a, &memo.found("c1", &m, Some("other"), None, |_| true)), "ignored: the runtime said u1");
        let mut no_uid = meta("p");
        no_uid.pod_uid.clear();
        let no_uid = Arc::new(no_uid);
        assert_eq!(
            memo.found("c2", &no_uid, Some("from-cgroup"), None, |_| true).pod_uid.as_deref(),
            Some("from-cgroup")
        );
        assert_eq!(memo.found("c2", &no_uid, None, None, |_| true).pod_uid, None);
    }

    #[test]
    fn findings_without_metadata_share_facts_per_reason() {
        let memo = PodFactsMemo::default();
        let a = memo.missing("c1", "not_found", Some("u9"), |_| true);
        assert!(!a.metadata_complete);
        assert_eq!((a.metadata_missing, a.pod_uid.as_deref()), (Some("not_found"), Some("u9")));
        assert!(Arc::ptr_eq(&a, &memo.missing("c1", "not_found", Some("u9"), |_| true)));
        assert_eq!(memo.missing("c1", "timeout", Some("u9"), |_| true).metadata_missing, Some("timeout"));
        // Metadata that arrives later replaces the entry.
        assert!(memo.found("c1", &Arc::new(meta("p")), Some("u9"), None, |_| true).metadata_complete);
    }

    #[test]
    fn the_runtime_that_answered_names_a_container_the_cgroup_layout_does_not() {
        let m = meta("p");
        assert_eq!(runtime_name("cri", &m), "containerd");
        assert_eq!(runtime_name("cri-o", &m), "cri-o", "a layout that names its runtime is kept");
        let unnamed = ContainerMeta { runtime: String::new(), ..m };
        assert_eq!(runtime_name("cri", &unnamed), "cri");
    }

    #[test]
    fn the_memo_is_bounded() {
        let memo = PodFactsMemo::default();
        let running = |id: &str| id.ends_with('0');
        for i in 0..MAX_CONTAINERS {
            memo.missing(&format!("c{i}"), "not_found", None, running);
        }
        assert_eq!(memo.len(), MAX_CONTAINERS);
        // Full: the containers that stopped are forgotten, the running kept.
        memo.missing("new", "not_found", None, running);
        assert_eq!(memo.len(), MAX_CONTAINERS / 10 + 1 + 1, "c0, c10, ... c510, and the new one");
        // Full of running ones: starts over.
        for i in 0..MAX_CONTAINERS {
            memo.missing(&format!("r{i}0"), "not_found", None, |_| true);
        }
        assert!(memo.len() <= MAX_CONTAINERS);
    }
}
