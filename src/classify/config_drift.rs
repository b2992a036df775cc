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

use super::{
    finding::ConfigFacts,
    rules::{self, Rule},
};
use crate::enrich::image::{ImageRef, digest_of_image_ref};
use std::collections::BTreeMap;

/// One config-drift verdict, before it becomes a finding.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    pub rule: &'static Rule,
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
    let issue = |rule, message: String, facts: ConfigFacts| Issue { rule, message, facts };
    match spec.digest() {
        None => {
            let tag = spec.tags().first().cloned().unwrap_or_else(|| "latest".into());
            out.push(issue(
                &rules::IMAGE_MUTABLE_TAG,
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
                    &rules::IMAGE_DIGEST_MISMATCH,
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
                &rules::IMAGE_DIGEST_NOT_APPROVED,
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
    let into = target.map(|t| format!(", targeting container {t}")).unwrap_or_default();
    Issue {
        rule: &rules::EPHEMERAL_CONTAINER_ADDED,
        message: format!("ephemeral container {name} ({image}) was added to running pod {pod}{into} (kubectl debug)"),
        facts: ConfigFacts {
            ephemeral_name: Some(name.to_owned()),
            ephemeral_image: Some(image.to_owned()),
            ephemeral_target: target.map(str::to_owned),
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        classify::{Classifier, PlaybookStep, Subject},
        config::Severity,
    };

    const IMAGE_MUTABLE_TAG: &str = rules::IMAGE_MUTABLE_TAG.name;
    const IMAGE_DIGEST_MISMATCH: &str = rules::IMAGE_DIGEST_MISMATCH.name;
    const IMAGE_DIGEST_NOT_APPROVED: &str = rules::IMAGE_DIGEST_NOT_APPROVED.name;
    const EPHEMERAL_CONTAINER_ADDED: &str = rules::EPHEMERAL_CONTAINER_ADDED.name;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn facts<'a>(spec: &'a str, image_ref: &'a str) -> ImageFacts<'a> {
        ImageFacts { container: "api", spec, spec_source: "pod_spec", image_ref }
    }

    fn rules(v: &[Issue]) -> Vec<&'static str> {
        v.iter().map(|i| i.rule.name).collect()
    }

    #[test]
    fn mutable_tag() {
        let r = format!("docker.io/library/busybox@{D1}");
        let v = check_image(&facts("busybox:1.36", &r), &Approved::new());
        assert_eq!(rules(&v), [IMAGE_MUTABLE_TAG]);
        assert_eq!(v[0].rule.severity(&crate::config::Config::default().rules), Severity::Info);
        assert_eq!(v[0].rule.step, PlaybookStep::Remediate);
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
        assert_eq!(v[0].rule.severity(&crate::config::Config::default().rules), Severity::Critical);
        assert_eq!(v[0].rule.step, PlaybookStep::Validate);
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
        assert_eq!(v[0].rule.severity(&crate::config::Config::default().rules), Severity::Warning);
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
        assert_eq!(i.rule.name, EPHEMERAL_CONTAINER_ADDED);
        assert_eq!(i.rule.severity(&crate::config::Config::default().rules), Severity::Warning);
        assert_eq!(i.rule.step, PlaybookStep::Validate);
        assert_eq!(i.facts.ephemeral_target.as_deref(), Some("app"));
        assert!(i.message.contains("debugger-x7") && i.message.contains("web-0"));
        let v = serde_json::to_value(&i.facts).unwrap();
        assert_eq!(v["driftwatch.ephemeral.image"], "busybox:1.36");
    }

    #[test]
    fn config_findings_carry_facts_and_no_process_keys() {
        let r = format!("docker.io/library/busybox@{D1}");
        let issue = check_image(&facts("busybox:1.36", &r), &Approved::new()).remove(0);
        let cl = Classifier::new(&crate::config::Config::default());
        let f = cl.config_finding(Subject { id: "abc", runtime: "containerd", pod_uid: None }, issue);
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
}
