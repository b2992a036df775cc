//! The OpenTelemetry semantic conventions of the log events: which of the
//! finding's keys are attributes, the `security_rule.*` attributes of each
//! rule (computed once), the workload's `k8s.<kind>.name`, and the UUIDs
//! (version 5: stable across restarts and nodes) of rules and agents.

use crate::classify::{Finding, finding::Kind, rules};
use opentelemetry::{Key, logs::AnyValue};
use opentelemetry_semantic_conventions::attribute as sc;
use std::collections::HashMap;

/// The finding's keys that are not attributes: they only repeat the record's
/// timestamp, body and severity text, or (the workload) become `k8s.<kind>.name`.
const LEFT_OUT: [&str; 5] = ["time", "message", "severity", "k8s.workload.kind", "k8s.workload.name"];

/// Whether the finding's key `k` is left out of the attributes.
pub fn left_out(k: &str) -> bool {
    LEFT_OUT.contains(&k)
}

/// `security_rule.ruleset.name` of every finding.
pub const RULESET: &str = "driftwatch";

/// RFC 4122 namespace for URLs (appendix C); the rules' UUIDs are v5 UUIDs of `urn:driftwatch:rule:<name>` in it.
const NAMESPACE_URL: [u8; 16] = *b"\x6b\xa7\xb8\x11\x9d\xad\x11\xd1\x80\xb4\x00\xc0\x4f\xd4\x30\xc8";

/// The namespace the semantic conventions give for a `service.instance.id` derived from
/// an inherent ID (4d63009a-8d0f-11ee-aad7-4c796ed8e320).
const NAMESPACE_SERVICE_INSTANCE: [u8; 16] = *b"\x4d\x63\x00\x9a\x8d\x0f\x11\xee\xaa\xd7\x4c\x79\x6e\xd8\xe3\x20";

/// A version 5 (SHA-1, name-based) UUID, in its text form.
pub fn uuid5(namespace: &[u8; 16], name: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(namespace);
    ctx.update(name.as_bytes());
    let d = ctx.finish();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// `security_rule.uuid` of rule `name`: the same for a rule on every node and in every release.
pub fn rule_uuid(name: &str) -> String {
    uuid5(&NAMESPACE_URL, &format!("urn:driftwatch:rule:{name}"))
}

/// `service.instance.id` of the agent on `node` of `cluster`: one agent per node,
/// so stable across restarts and upgrades (the names themselves stay out of it).
pub fn instance_id(cluster: &str, node: &str) -> String {
    uuid5(&NAMESPACE_SERVICE_INSTANCE, &format!("driftwatch/{cluster}/{node}"))
}

/// The semantic-convention attribute of a workload kind (`k8s.workload.kind`);
/// `None` for a bare pod.
pub fn workload_key(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Deployment" => sc::K8S_DEPLOYMENT_NAME,
        "StatefulSet" => sc::K8S_STATEFULSET_NAME,
        "DaemonSet" => sc::K8S_DAEMONSET_NAME,
        "Job" => sc::K8S_JOB_NAME,
        "CronJob" => sc::K8S_CRONJOB_NAME,
        "ReplicaSet" => sc::K8S_REPLICASET_NAME,
        _ => return None,
    })
}

/// A rule's `security_rule.uuid` and `security_rule.reference`.
struct RuleFacts {
    uuid: String,
    reference: String,
}

/// The `security_rule.*` attributes, per rule, built once.
pub struct SecurityRules {
    rules: HashMap<&'static str, RuleFacts>,
    runbook_base: String,
}

impl SecurityRules {
    /// `security_rule.reference` is the runbook of the rule's alert: the
    /// Alertmanager push's `runbook_url` (`<runbook_base>/<alertname>.md`).
    pub fn new(runbook_base: &str) -> Self {
        let base = runbook_base.trim_end_matches('/').to_string();
        let rules = rules::ALL.iter().map(|r| (r.name, Self::facts(&base, r.name, r.kind))).collect();
        SecurityRules { rules, runbook_base: base }
    }

    fn facts(base: &str, name: &str, kind: Kind) -> RuleFacts {
        let alert = crate::sink::alertmanager::alertname(kind.as_str());
        RuleFacts { uuid: rule_uuid(name), reference: format!("{base}/{alert}.md") }
    }

    /// The finding's `security_rule.*` and workload attributes.
    pub fn attributes(&self, f: &Finding) -> Vec<(Key, AnyValue)> {
        let built;
        let facts = match self.rules.get(f.rule) {
            Some(x) => x,
            None => {
                built = Self::facts(&self.runbook_base, f.rule, f.kind);
                &built
            }
        };
        let mut v = vec![
            (Key::from_static_str(sc::SECURITY_RULE_NAME), AnyValue::from(f.rule)),
            (Key::from_static_str(sc::SECURITY_RULE_CATEGORY), AnyValue::from(f.kind.as_str())),
            (Key::from_static_str(sc::SECURITY_RULE_RULESET_NAME), AnyValue::from(RULESET)),
            (Key::from_static_str(sc::SECURITY_RULE_REFERENCE), AnyValue::from(facts.reference.clone())),
            (Key::from_static_str(sc::SECURITY_RULE_UUID), AnyValue::from(facts.uuid.clone())),
        ];
        if let (Some(kind), Some(name)) = (f.k8s.workload_kind, &f.k8s.workload_name)
            && let Some(key) = workload_key(kind)
        {
            v.push((Key::from_static_str(key), AnyValue::from(name.clone())));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid5_matches_rfc_4122() {
        // Python's uuid.uuid5(uuid.NAMESPACE_DNS, "python.org").
        let dns = *b"\x6b\xa7\xb8\x10\x9d\xad\x11\xd1\x80\xb4\x00\xc0\x4f\xd4\x30\xc8";
        assert_eq!(uuid5(&dns, "python.org"), "886313e1-3b8a-5372-9b90-0c9aee199e5d");
    }

    #[test]
    fn rule_uuids_are_stable_and_distinct() {
        let all: Vec<String> = rules::ALL.iter().map(|r| rule_uuid(r.name)).collect();
        for (i, u) in all.iter().enumerate() {
            assert_eq!(u.len(), 36);
            assert_eq!(&u[14..15], "5", "version 5: {u}");
            assert!(!all[i + 1..].contains(u), "{u} twice");
        }
        // Pinned: dashboards and SIEM rules key on it.
        assert_eq!(rule_uuid("exec_new_binary"), "0eaa94be-c6ab-5d40-b3a6-db08a872798b");
        assert_ne!(instance_id("", "a"), instance_id("", "b"));
        assert_ne!(instance_id("c1", "a"), instance_id("c2", "a"));
    }

    #[test]
    fn records_carry_the_security_conventions() {
        use opentelemetry::logs::AnyValue as V;
        let c = crate::classify::Classifier::new(&crate::config::Config::default());
        let subject = crate::classify::Subject { id: "abc", runtime: "containerd", pod_uid: None };
        let detail = crate::classify::Detail::Exec(Default::default());
        let mut f = c.finding(&rules::SHELL_IN_CONTAINER, subject, 1, "m", detail);
        f.k8s_mut().workload_kind = Some("StatefulSet");
        f.k8s_mut().workload_name = Some("db".into());
        let r = super::super::RecordBuilder::new("https://runbooks.example/").record(&f).expect("a record");
        let attrs: HashMap<String, V> = r.attributes_iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let s = |v: &str| V::String(v.to_string().into());
        assert_eq!(attrs[sc::SECURITY_RULE_NAME], s("shell_in_container"));
        assert_eq!(attrs[sc::SECURITY_RULE_CATEGORY], s("shell"));
        assert_eq!(attrs[sc::SECURITY_RULE_RULESET_NAME], s("driftwatch"));
        assert_eq!(attrs[sc::SECURITY_RULE_REFERENCE], s("https://runbooks.example/ContainerShellSpawned.md"));
        assert_eq!(attrs[sc::SECURITY_RULE_UUID], s(&rule_uuid("shell_in_container")));
        assert_eq!(attrs[sc::K8S_STATEFULSET_NAME], s("db"));
        for k in LEFT_OUT {
            assert!(!attrs.contains_key(k), "{k} repeats the record or is renamed");
        }
        assert_eq!(attrs["container.id"], s("abc"), "the finding's other keys stay");
        assert!(attrs.contains_key("driftwatch.tags"));
    }

    #[test]
    fn workloads_and_left_out_keys() {
        assert_eq!(workload_key("Deployment"), Some("k8s.deployment.name"));
        assert_eq!(workload_key("CronJob"), Some("k8s.cronjob.name"));
        assert_eq!(workload_key("Pod"), None);
        assert!(left_out("message") && left_out("time") && left_out("severity") && !left_out("rule"));
    }
}
