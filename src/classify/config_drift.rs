//! Configuration drift (`kind: config`): how a container was deployed, judged
//! once per container (not per exec), with the facts that prove it.
//!
//! | rule | severity | playbook_step | why that severity |
//! |---|---|---|---|
//! | `image_mutable_tag` | info | remediate | posture, not an attack: the tag can be moved to other content later; fix the manifest (pin `@sha256:`) |
//! | `image_digest_mismatch` | critical | validate | the node runs other content than the digest the pod spec pins: the pin's guarantee is broken (tampered node store, or a registry/runtime resolving differently); validate before acting because an index digest vs a platform-manifest digest of one image can also differ |
//! | `image_digest_not_approved` | warning | validate | a policy violation that is often a rollout ahead of the approved list |
//! | `ephemeral_container_added` | warning | validate | `kubectl debug` put a new container (often a shell image) into a running pod: legitimate for on-call, drift otherwise |
//!
//! What is comparable: a pinned digest and an approved digest are manifest (or
//! index) digests. The running image is known as a repo digest
//! (`repo@sha256:…`, what the runtime pulled) or, for an image the runtime did
//! not pull, only as its image id (`sha256:…` of the config), which is not a
//! manifest digest. Only a repo digest of the same repository is compared with
//! a pin; an image id is compared with an approved list only by membership (list
//! image ids to approve locally built images). Anything else is not judged.

use super::{Finding, Kind, PlaybookStep};
use crate::{
    config::Severity,
    enrich::{
        cri::{ContainerMeta, Cri, Lookup},
        image::{ImageRef, digest_of_image_ref},
        kube::{EphemeralAdded, KubeIndex, PodEntry},
    },
    pipeline::Pipeline,
    sink::containers::ContainerIdentity,
};
use k8s_cri::v1::{self as api, runtime_service_client::RuntimeServiceClient};
use serde::Serialize;
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};
use tokio_util::sync::CancellationToken;

pub const IMAGE_MUTABLE_TAG: &str = "image_mutable_tag";
pub const IMAGE_DIGEST_MISMATCH: &str = "image_digest_mismatch";
pub const IMAGE_DIGEST_NOT_APPROVED: &str = "image_digest_not_approved";
pub const EPHEMERAL_CONTAINER_ADDED: &str = "ephemeral_container_added";

/// Every config rule with its fixed severity and playbook step.
pub const RULES: [(&str, Severity, PlaybookStep); 4] = [
    (IMAGE_MUTABLE_TAG, Severity::Info, PlaybookStep::Remediate),
    (IMAGE_DIGEST_MISMATCH, Severity::Critical, PlaybookStep::Validate),
    (IMAGE_DIGEST_NOT_APPROVED, Severity::Warning, PlaybookStep::Validate),
    (EPHEMERAL_CONTAINER_ADDED, Severity::Warning, PlaybookStep::Validate),
];

fn rule(name: &'static str) -> (&'static str, Severity, PlaybookStep) {
    RULES.iter().copied().find(|r| r.0 == name).expect("rule in RULES")
}

/// The facts of a config finding, serialized flat into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ConfigFacts {
    /// The image as written in the pod spec (or as the runtime reports it, see `spec_source`).
    #[serde(rename = "driftwatch.image.spec", skip_serializing_if = "Option::is_none")]
    pub image_spec: Option<String>,
    /// `pod_spec` (from the Kubernetes API) | `runtime` (node-only: what the kubelet passed to the runtime).
    #[serde(rename = "driftwatch.image.spec_source", skip_serializing_if = "Option::is_none")]
    pub spec_source: Option<&'static str>,
    #[serde(rename = "driftwatch.image.pinned_digest", skip_serializing_if = "Option::is_none")]
    pub pinned_digest: Option<String>,
    /// The running digest that was compared.
    #[serde(rename = "driftwatch.image.running_digest", skip_serializing_if = "Option::is_none")]
    pub running_digest: Option<String>,
    /// `repo_digest` (manifest digest the runtime pulled) | `image_id` (config digest only).
    #[serde(rename = "driftwatch.image.running_digest_kind", skip_serializing_if = "Option::is_none")]
    pub running_digest_kind: Option<&'static str>,
    /// Size of the policy's approved list for this image.
    #[serde(rename = "driftwatch.image.approved_digests_count", skip_serializing_if = "Option::is_none")]
    pub approved_count: Option<usize>,
    #[serde(rename = "driftwatch.ephemeral.name", skip_serializing_if = "Option::is_none")]
    pub ephemeral_name: Option<String>,
    #[serde(rename = "driftwatch.ephemeral.image", skip_serializing_if = "Option::is_none")]
    pub ephemeral_image: Option<String>,
    /// `targetContainerName`: whose namespaces the ephemeral container shares.
    #[serde(rename = "driftwatch.ephemeral.target", skip_serializing_if = "Option::is_none")]
    pub ephemeral_target: Option<String>,
}

/// One config-drift verdict, before it becomes a finding.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    pub rule: &'static str,
    pub severity: Severity,
    pub step: PlaybookStep,
    pub message: String,
    pub facts: ConfigFacts,
}

/// What is known about one container's image.
#[derive(Debug, Clone, Copy)]
pub struct ImageFacts<'a> {
    /// Container name, for messages.
    pub container: &'a str,
    /// As written in the pod spec, or as the runtime reports it.
    pub spec: &'a str,
    pub spec_source: &'static str,
    /// The running image: CRI `imageRef` / pod status `imageID` (`repo@sha256:…` or `sha256:…`).
    pub image_ref: &'a str,
}

/// Approved digests per normalised image name (`docker.io/library/busybox`).
pub type Approved = BTreeMap<String, Vec<String>>;

/// Normalises the policy's keys (`busybox` -> `docker.io/library/busybox`).
pub fn normalise_approved(raw: &BTreeMap<String, Vec<String>>) -> Approved {
    raw.iter().map(|(k, v)| (ImageRef::parse(k).map(|r| r.name()).unwrap_or_else(|_| k.clone()), v.clone())).collect()
}

/// The image rules for one container.
pub fn check_image(c: &ImageFacts, approved: &Approved) -> Vec<Issue> {
    let mut out = Vec::new();
    // A bare image id as "spec" (the runtime did not map it back) or garbage: nothing to judge.
    let Ok(spec) = ImageRef::parse(c.spec) else { return out };
    if digest_of_image_ref(c.spec) == Some(c.spec) {
        return out;
    }
    let running = digest_of_image_ref(c.image_ref).map(str::to_owned);
    let running_repo = c.image_ref.rsplit_once('@').and_then(|(n, _)| ImageRef::parse(n).ok()).map(|r| r.name());
    let running_kind = running.as_ref().map(|_| if running_repo.is_some() { "repo_digest" } else { "image_id" });
    let base = ConfigFacts {
        image_spec: Some(c.spec.to_owned()),
        spec_source: Some(c.spec_source),
        pinned_digest: spec.digest().map(str::to_owned),
        running_digest: running.clone(),
        running_digest_kind: running_kind,
        ..Default::default()
    };
    let issue = |name, message: String, facts: ConfigFacts| {
        let (rule, severity, step) = rule(name);
        Issue { rule, severity, step, message, facts }
    };
    match spec.digest() {
        None => {
            let tag = spec.tags().first().cloned().unwrap_or_else(|| "latest".into());
            out.push(issue(
                IMAGE_MUTABLE_TAG,
                format!(
                    "container {} runs image {} by the mutable tag {tag:?}, not pinned to a digest (@sha256:...)",
                    c.container, c.spec
                ),
                base.clone(),
            ));
        }
        Some(pinned) => {
            // Comparable only with a repo digest of the same repository.
            if let (Some(run), Some(repo)) = (&running, &running_repo)
                && *repo == spec.name()
                && run != pinned
            {
                out.push(issue(
                    IMAGE_DIGEST_MISMATCH,
                    format!(
                        "container {} runs {} but its pod spec pins {pinned} ({})",
                        c.container, c.image_ref, c.spec
                    ),
                    base.clone(),
                ));
            }
        }
    }
    if let Some(list) = approved.get(&spec.name())
        && let Some(run) = &running
    {
        let listed = list.iter().any(|d| d == run);
        // An image id can only prove membership: it is not a manifest digest.
        if !listed && running_kind == Some("repo_digest") {
            let facts = ConfigFacts { approved_count: Some(list.len()), ..base };
            out.push(issue(
                IMAGE_DIGEST_NOT_APPROVED,
                format!(
                    "container {} runs {} ({run}), which is not among the {} approved digests of {}",
                    c.container,
                    c.spec,
                    list.len(),
                    spec.name()
                ),
                facts,
            ));
        }
    }
    out
}

/// An ephemeral container found in a pod's spec.
pub fn ephemeral_added(pod: &str, name: &str, image: &str, target: Option<&str>) -> Issue {
    let (rule, severity, step) = rule(EPHEMERAL_CONTAINER_ADDED);
    let into = target.map(|t| format!(", targeting container {t}")).unwrap_or_default();
    Issue {
        rule,
        severity,
        step,
        message: format!("ephemeral container {name} ({image}) was added to running pod {pod}{into} (kubectl debug)"),
        facts: ConfigFacts {
            ephemeral_name: Some(name.to_owned()),
            ephemeral_image: Some(image.to_owned()),
            ephemeral_target: target.map(str::to_owned),
            ..Default::default()
        },
    }
}

// ---------------------------------------------------------------------------
// The task: finds containers as they appear and judges each once.

/// The runtime name as a `container.runtime.name` value.
fn runtime_name(r: &str) -> &'static str {
    match r {
        "containerd" => "containerd",
        "cri-o" => "cri-o",
        "docker" => "docker",
        _ => "cri",
    }
}

/// A config finding about the container described by `meta` (and the pod
/// entry, when the API knows it).
pub fn finding(node: &Arc<str>, container_id: &str, runtime: &str, issue: Issue) -> Finding {
    Finding {
        time: crate::clock::rfc3339(time::OffsetDateTime::now_utc()),
        kind: Kind::Config,
        rule: issue.rule,
        severity: issue.severity,
        playbook_step: issue.step,
        message: issue.message,
        container_id: container_id.to_string(),
        container_runtime: runtime_name(runtime),
        node_name: node.clone(),
        config: Some(Box::new(issue.facts)),
        // Now, on the boot clock (the latency histogram skips config findings).
        ktime_ns: crate::clock::BootClock::since_ns(0),
        ..Default::default()
    }
}

/// Settings of [`run`].
pub struct Settings {
    pub enabled: bool,
    pub approved: Approved,
    /// How often the runtime is listed for new containers.
    pub interval: Duration,
    /// Ticks a container waits for the API to know its pod before the runtime's
    /// image name is used instead.
    pub api_patience: u32,
}

/// What the runtime says of a container's root filesystem (verbose
/// ContainerStatus: `info.runtimeSpec.root.readonly`, containerd and CRI-O).
/// `None` when the runtime does not say.
pub fn readonly_from_verbose_info(info: &std::collections::HashMap<String, String>) -> Option<bool> {
    let v: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    let root = v.get("runtimeSpec")?.get("root")?;
    Some(root.get("readonly").and_then(|b| b.as_bool()).unwrap_or(false))
}

/// Runs until `cancel`: every `interval`, lists the runtime's running
/// containers and judges the new ones (image rules, writable-rootfs posture);
/// ephemeral containers come from the API's pod watch.
pub async fn run(
    settings: Settings,
    pipeline: Arc<Pipeline>,
    cri: Option<Arc<Cri>>,
    kube: Option<Arc<KubeIndex>>,
    cancel: CancellationToken,
) {
    let node: Arc<str> = super::node_name().into();
    let mut events = kube.as_ref().and_then(|k| k.take_events());
    let mut seen: HashSet<String> = HashSet::new();
    let mut waiting: HashMap<String, u32> = HashMap::new();
    let mut client: Option<RuntimeServiceClient<tonic::transport::Channel>> = None;
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            ev = async {
                match events.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                match ev {
                    Some(ev) if settings.enabled => ephemeral(&pipeline, &node, cri.as_deref(), ev),
                    Some(_) => {}
                    None => events = None,
                }
                continue;
            }
            _ = tick.tick() => {}
        }
        let Some(cri) = &cri else { continue };
        let Some(c) = connected(&mut client, cri).await else { continue };
        let req = api::ListContainersRequest {
            filter: Some(api::ContainerFilter {
                state: Some(api::ContainerStateValue { state: api::ContainerState::ContainerRunning as i32 }),
                ..Default::default()
            }),
        };
        let listed = match tokio::time::timeout(RPC_TIMEOUT, c.clone().list_containers(req)).await {
            Ok(Ok(r)) => r.into_inner().containers,
            _ => {
                client = None;
                continue;
            }
        };
        let ids: HashSet<String> = listed.iter().map(|c| c.id.clone()).collect();
        seen.retain(|id| ids.contains(id));
        waiting.retain(|id, _| ids.contains(id));
        for id in ids {
            if seen.contains(&id) {
                continue;
            }
            let meta = match cri.lookup(&id, RPC_TIMEOUT).await {
                Lookup::Found(m) => m,
                Lookup::NotFound => {
                    seen.insert(id);
                    continue;
                }
                Lookup::Unavailable(_) => continue,
            };
            if meta.container_name.is_empty() || meta.pod_name.is_empty() {
                seen.insert(id); // a sandbox, or not a pod's container
                continue;
            }
            let pod = kube.as_ref().and_then(|k| k.pod(&meta.namespace, &meta.pod_name));
            if pod.is_none() && kube.is_some() {
                let n = waiting.entry(id.clone()).or_insert(0);
                *n += 1;
                if *n <= settings.api_patience {
                    continue; // the watch has not seen the pod yet
                }
            }
            seen.insert(id.clone());
            judge(&settings, &pipeline, &node, &mut client, &meta, pod.as_deref()).await;
        }
    }
}

const RPC_TIMEOUT: Duration = Duration::from_secs(2);

async fn connected<'a>(
    client: &'a mut Option<RuntimeServiceClient<tonic::transport::Channel>>,
    cri: &Cri,
) -> Option<&'a mut RuntimeServiceClient<tonic::transport::Channel>> {
    if client.is_none() {
        let path = cri.endpoint()?;
        let ch = tokio::time::timeout(RPC_TIMEOUT, crate::enrich::cri::connect_unix(&path)).await.ok()?.ok()?;
        *client = Some(RuntimeServiceClient::new(ch));
    }
    client.as_mut()
}

/// Image rules and posture of one new container.
async fn judge(
    settings: &Settings,
    pipeline: &Pipeline,
    node: &Arc<str>,
    client: &mut Option<RuntimeServiceClient<tonic::transport::Channel>>,
    meta: &ContainerMeta,
    pod: Option<&PodEntry>,
) {
    let spec = pod.and_then(|p| p.container(&meta.container_name)).cloned();
    let ephemeral = pod.and_then(|p| p.ephemeral.iter().find(|e| e.name == meta.container_name));
    let (image, source) = match (&spec, ephemeral) {
        (Some(s), _) if !s.image.is_empty() => (s.image.clone(), "pod_spec"),
        (_, Some(e)) if !e.image.is_empty() => (e.image.clone(), "pod_spec"),
        _ => (meta.image.clone(), "runtime"),
    };
    if settings.enabled {
        let facts = ImageFacts {
            container: &meta.container_name,
            spec: &image,
            spec_source: source,
            image_ref: &meta.image_ref,
        };
        for issue in check_image(&facts, &settings.approved) {
            let mut f = finding(node, &meta.container_id, &meta.runtime, issue);
            crate::pipeline::apply_metadata(&mut f, meta);
            pipeline.emit(f);
        }
    }
    // Posture: what the runtime enforces, else what the spec asks for.
    let mut readonly = None;
    if let Some(c) = client.as_mut() {
        let req = api::ContainerStatusRequest { container_id: meta.container_id.clone(), verbose: true };
        if let Ok(Ok(r)) = tokio::time::timeout(RPC_TIMEOUT, c.container_status(req)).await {
            readonly = readonly_from_verbose_info(&r.into_inner().info);
        }
    }
    if let Some(ro) = readonly.or(spec.as_ref().map(|s| s.read_only_root)) {
        let mut f = Finding::default();
        crate::pipeline::apply_metadata(&mut f, meta);
        pipeline.apply_workload(&mut f);
        let who = ContainerIdentity {
            namespace: meta.namespace.clone(),
            workload: f.workload_name.unwrap_or_default(),
            container: meta.container_name.clone(),
            pod: meta.pod_name.clone(),
        };
        pipeline.metrics.containers.posture(&meta.container_id, &who, !ro);
    }
}

/// An ephemeral container appeared in a pod of this node.
fn ephemeral(pipeline: &Pipeline, node: &Arc<str>, cri: Option<&Cri>, ev: EphemeralAdded) {
    let issue = ephemeral_added(&ev.pod.name, &ev.spec.name, &ev.spec.image, ev.spec.target.as_deref());
    let id = ev.container_id.clone().unwrap_or_default();
    let meta = cri.and_then(|c| c.cached(&id).filter(|_| !id.is_empty()));
    let runtime = meta.as_ref().map(|m| m.runtime.as_str()).unwrap_or("cri");
    let mut f = finding(node, &id, runtime, issue);
    match &meta {
        Some(m) => crate::pipeline::apply_metadata(&mut f, m),
        None => {
            f.namespace = Some(ev.pod.namespace.clone());
            f.pod_name = Some(ev.pod.name.clone());
            f.pod_uid = Some(ev.pod.uid.clone()).filter(|u| !u.is_empty());
            f.container_name = Some(ev.spec.name.clone());
            f.metadata_complete = true;
        }
    }
    pipeline.emit(f);
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn facts<'a>(spec: &'a str, image_ref: &'a str) -> ImageFacts<'a> {
        ImageFacts { container: "api", spec, spec_source: "pod_spec", image_ref }
    }

    fn rules(v: &[Issue]) -> Vec<&'static str> {
        v.iter().map(|i| i.rule).collect()
    }

    #[test]
    fn mutable_tag() {
        let r = format!("docker.io/library/busybox@{D1}");
        let v = check_image(&facts("busybox:1.36", &r), &Approved::new());
        assert_eq!(rules(&v), [IMAGE_MUTABLE_TAG]);
        assert_eq!(v[0].severity, Severity::Info);
        assert_eq!(v[0].step, PlaybookStep::Remediate);
        assert_eq!(v[0].facts.image_spec.as_deref(), Some("busybox:1.36"));
        assert_eq!(v[0].facts.pinned_digest, None);
        assert_eq!(v[0].facts.running_digest.as_deref(), Some(D1));
        assert!(v[0].message.contains("\"1.36\""), "{}", v[0].message);
        // No tag at all is `latest`, mutable too.
        let v = check_image(&facts("nginx", ""), &Approved::new());
        assert_eq!(rules(&v), [IMAGE_MUTABLE_TAG]);
        assert!(v[0].message.contains("\"latest\""));
    }

    #[test]
    fn pinned_and_matching_is_quiet() {
        let spec = format!("busybox:1.36@{D1}");
        let r = format!("docker.io/library/busybox@{D1}");
        assert!(check_image(&facts(&spec, &r), &Approved::new()).is_empty());
    }

    #[test]
    fn digest_mismatch_only_when_comparable() {
        let spec = format!("busybox@{D1}");
        let r = format!("docker.io/library/busybox@{D2}");
        let v = check_image(&facts(&spec, &r), &Approved::new());
        assert_eq!(rules(&v), [IMAGE_DIGEST_MISMATCH]);
        assert_eq!(v[0].severity, Severity::Critical);
        assert_eq!(v[0].step, PlaybookStep::Validate);
        assert_eq!(v[0].facts.pinned_digest.as_deref(), Some(D1));
        assert_eq!(v[0].facts.running_digest.as_deref(), Some(D2));
        assert_eq!(v[0].facts.running_digest_kind, Some("repo_digest"));
        // A bare image id is a config digest: not comparable with a manifest pin.
        assert!(check_image(&facts(&spec, D2), &Approved::new()).is_empty());
        // A repo digest of another repository (same image id pulled elsewhere): not comparable.
        let other = format!("mirror.example.com/busybox@{D2}");
        assert!(check_image(&facts(&spec, &other), &Approved::new()).is_empty());
        // Nothing known about the running image: nothing judged.
        assert!(check_image(&facts(&spec, ""), &Approved::new()).is_empty());
    }

    #[test]
    fn approved_digests() {
        let raw = BTreeMap::from([("busybox".to_string(), vec![D1.to_string()])]);
        let approved = normalise_approved(&raw);
        assert!(approved.contains_key("docker.io/library/busybox"));
        let ok = format!("docker.io/library/busybox@{D1}");
        assert_eq!(rules(&check_image(&facts("busybox:1.36", &ok), &approved)), [IMAGE_MUTABLE_TAG]);
        let bad = format!("docker.io/library/busybox@{D2}");
        let v = check_image(&facts(&format!("busybox@{D2}"), &bad), &approved);
        assert_eq!(rules(&v), [IMAGE_DIGEST_NOT_APPROVED]);
        assert_eq!(v[0].facts.approved_count, Some(1));
        assert_eq!(v[0].severity, Severity::Warning);
        // An image id proves membership only.
        assert!(check_image(&facts(&format!("busybox@{D1}"), D2), &approved).is_empty());
        let listed_id = BTreeMap::from([("busybox".to_string(), vec![D2.to_string()])]);
        assert!(check_image(&facts(&format!("busybox@{D1}"), D2), &normalise_approved(&listed_id)).is_empty());
        // Images without a list are not judged by it.
        let v = check_image(&facts(&format!("nginx@{D2}"), &format!("docker.io/library/nginx@{D2}")), &approved);
        assert!(v.is_empty());
    }

    #[test]
    fn unjudgeable_specs() {
        assert!(check_image(&facts(D1, D1), &Approved::new()).is_empty(), "image id as spec");
        assert!(check_image(&facts("", ""), &Approved::new()).is_empty());
        assert!(check_image(&facts("Not An Image", ""), &Approved::new()).is_empty());
    }

    #[test]
    fn ephemeral() {
        let i = ephemeral_added("web-0", "debugger-x7", "busybox:1.36", Some("app"));
        assert_eq!(i.rule, EPHEMERAL_CONTAINER_ADDED);
        assert_eq!(i.severity, Severity::Warning);
        assert_eq!(i.step, PlaybookStep::Validate);
        assert_eq!(i.facts.ephemeral_target.as_deref(), Some("app"));
        assert!(i.message.contains("debugger-x7") && i.message.contains("web-0"));
        let v = serde_json::to_value(&i.facts).unwrap();
        assert_eq!(v["driftwatch.ephemeral.image"], "busybox:1.36");
    }

    #[test]
    fn config_findings_carry_facts_and_no_process_keys() {
        let node: Arc<str> = "node-1".into();
        let r = format!("docker.io/library/busybox@{D1}");
        let issue = check_image(&facts("busybox:1.36", &r), &Approved::new()).remove(0);
        let mut f = finding(&node, "abc", "containerd", issue);
        f.uid = 0;
        let v: serde_json::Value = serde_json::from_str(&f.to_json()).unwrap();
        assert_eq!(v["kind"], "config");
        assert_eq!(v["rule"], IMAGE_MUTABLE_TAG);
        assert_eq!(v["severity"], "info");
        assert_eq!(v["playbook_step"], "remediate");
        assert_eq!(v["container.id"], "abc");
        assert_eq!(v["driftwatch.image.spec"], "busybox:1.36");
        assert_eq!(v["driftwatch.image.spec_source"], "pod_spec");
        assert_eq!(v["driftwatch.image.running_digest"], D1);
        for k in v.as_object().unwrap().keys() {
            assert!(!k.starts_with("process.") && !k.starts_with("driftwatch.exe."), "{k} in {v:#}");
        }
        assert!(v.get("driftwatch.cgroup.path").is_none());
        // OTLP and Alertmanager build from the same serialization.
        assert_eq!(serde_json::to_value(&f).unwrap(), v);
    }

    #[test]
    fn rootfs_readonly_from_verbose_info() {
        let info = |j: &str| HashMap::from([("info".to_string(), j.to_string())]);
        assert_eq!(
            readonly_from_verbose_info(&info(r#"{"runtimeSpec":{"root":{"path":"rootfs","readonly":true}}}"#)),
            Some(true)
        );
        assert_eq!(readonly_from_verbose_info(&info(r#"{"runtimeSpec":{"root":{"path":"rootfs"}}}"#)), Some(false));
        assert_eq!(readonly_from_verbose_info(&info(r#"{"pid":1}"#)), None);
        assert_eq!(readonly_from_verbose_info(&HashMap::new()), None);
    }
}
