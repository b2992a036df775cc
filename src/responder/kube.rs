//! The Kubernetes side of the actions: read the pod and check the alert's
//! container is still in it, then label it, isolate it with a deny-all
//! NetworkPolicy it owns, or evict it through the Eviction API; and leave a
//! core/v1 Event on the pod for each decision.

use super::{decide::Action, webhook::Target};
use k8s_openapi::api::{
    core::v1::{Event, Pod},
    networking::v1::NetworkPolicy,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use std::time::Duration;

pub const QUARANTINE_LABEL: &str = "driftwatch.io/quarantine";
pub const DRIFTED_LABEL: &str = "driftwatch.io/drifted";
pub const DRIFTED_CONTAINER_ANNOTATION: &str = "driftwatch.io/drifted-container";
/// `<node>:<path>` of the evidence bundle the node agent wrote.
pub const EVIDENCE_ANNOTATION: &str = "driftwatch.io/evidence";
const COMPONENT: &str = "driftwatch-responder";

/// Eviction retries on 429 (a PodDisruptionBudget holds): attempts and first delay, doubling.
const EVICT_ATTEMPTS: u32 = 5;
const EVICT_BACKOFF: Duration = Duration::from_millis(250);

/// An action that did not happen, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotDone {
    /// The pod is not the one the alert is about (gone, replaced) or may not be touched.
    Refused(String),
    /// The API said no or could not be reached.
    Failed(String),
}

/// The 12-character id of the quarantine label (values are at most 63 characters).
pub fn short_id(container_id: &str) -> &str {
    &container_id[..container_id.len().min(12)]
}

/// A label value from a rule name: [A-Za-z0-9._-], at most 63, alphanumeric at both ends.
pub fn label_value(s: &str) -> String {
    let v: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).take(63).collect();
    v.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string()
}

pub fn policy_name(t: &Target) -> String {
    format!("driftwatch-quarantine-{}", short_id(&t.container_id))
}

/// The deny-all NetworkPolicy selecting exactly the quarantined pod, owned by it.
pub fn network_policy(t: &Target, pod_uid: &str, allow_dns: bool) -> Value {
    let egress = if allow_dns {
        json!([{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}])
    } else {
        json!([])
    };
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": policy_name(t),
            "namespace": t.namespace,
            "labels": {"app.kubernetes.io/managed-by": "driftwatch"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": t.pod, "uid": pod_uid}],
        },
        "spec": {
            "podSelector": {"matchLabels": {QUARANTINE_LABEL: short_id(&t.container_id)}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": egress,
        },
    })
}

/// The merge patch marking the pod: drifted rule and container, and the quarantine id when isolating.
pub fn label_patch(t: &Target, isolate: bool) -> Value {
    let mut labels = json!({DRIFTED_LABEL: label_value(&t.rule)});
    if isolate {
        labels[QUARANTINE_LABEL] = json!(short_id(&t.container_id));
    }
    json!({"metadata": {"labels": labels, "annotations": {DRIFTED_CONTAINER_ANNOTATION: t.container_id}}})
}

/// The merge patch linking the pod to its evidence bundle (`<node>:<path>`).
pub fn evidence_patch(location: &str) -> Value {
    json!({"metadata": {"annotations": {EVIDENCE_ANNOTATION: location}}})
}

/// The policy/v1 Eviction of the pod.
pub fn eviction(t: &Target) -> Value {
    json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": t.pod, "namespace": t.namespace}})
}

fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// The pod's bare container ids (regular, init and ephemeral containers).
fn container_ids(p: &Pod) -> Vec<String> {
    let Some(s) = &p.status else { return Vec::new() };
    [&s.container_statuses, &s.init_container_statuses, &s.ephemeral_container_statuses]
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|c| c.container_id.as_deref())
        .map(super::webhook::bare_container_id)
        .collect()
}

pub struct Kube {
    client: Client,
    allow_dns: bool,
    allow_unowned: bool,
}

impl Kube {
    pub fn new(client: Client, allow_dns: bool, allow_unowned: bool) -> Kube {
        Kube { client, allow_dns, allow_unowned }
    }

    /// Reads the pod and checks it still runs the alert's container (and, for
    /// an eviction, that a controller owns it). A refusal carries the pod when
    /// there is one, for the Event.
    pub async fn check(&self, t: &Target, action: Action) -> Result<Pod, (Option<Pod>, NotDone)> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &t.namespace);
        let pod = match pods.get(&t.pod).await {
            Ok(p) => p,
            Err(e) if api_code(&e) == Some(404) => return Err((None, NotDone::Refused("pod no longer exists".into()))),
            Err(e) => return Err((None, NotDone::Failed(format!("get pod: {e}")))),
        };
        if !container_ids(&pod).contains(&t.container_id) {
            let why = format!(
                "no container of the pod has id {} any more (the pod was replaced or restarted)",
                short_id(&t.container_id)
            );
            return Err((Some(pod), NotDone::Refused(why)));
        }
        let owned = pod.metadata.owner_references.iter().flatten().any(|o| o.controller == Some(true));
        if action == Action::Evict && !owned && !self.allow_unowned {
            let why = "no controller owns the pod (evict.allow_unowned is false)".to_string();
            return Err((Some(pod), NotDone::Refused(why)));
        }
        Ok(pod)
    }

    /// Carries out `action` on the checked `pod`; a short description of what was done.
    pub async fn act(&self, t: &Target, action: Action, pod: &Pod) -> Result<String, NotDone> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &t.namespace);
        let label = |isolate| async move {
            pods.patch(&t.pod, &PatchParams::default(), &Patch::Merge(label_patch(t, isolate)))
                .await
                .map(|_| ())
                .map_err(|e| NotDone::Failed(format!("label pod: {e}")))
        };
        match action {
            Action::Label | Action::Investigate => {
                label(false).await?;
                Ok(format!("labelled {DRIFTED_LABEL}={}", label_value(&t.rule)))
            }
            Action::Isolate => {
                // The policy first: a quarantine label never selects a pod no policy isolates.
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let np: NetworkPolicy = serde_json::from_value(network_policy(t, &uid, self.allow_dns))
                    .map_err(|e| NotDone::Failed(format!("network policy: {e}")))?;
                let nps: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), &t.namespace);
                let created = match nps.create(&PostParams::default(), &np).await {
                    Ok(_) => "created",
                    Err(e) if api_code(&e) == Some(409) => "already present",
                    Err(e) => return Err(NotDone::Failed(format!("create network policy: {e}"))),
                };
                label(true).await?;
                Ok(format!(
                    "network policy {} {created}; labelled {QUARANTINE_LABEL}={}",
                    policy_name(t),
                    short_id(&t.container_id)
                ))
            }
            Action::Evict => {
                label(false).await?;
                self.evict(t).await
            }
        }
    }

    /// A merge patch of the pod's metadata (`what` names it in errors).
    pub async fn patch(&self, t: &Target, patch: Value, what: &str) -> Result<(), NotDone> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &t.namespace);
        pods.patch(&t.pod, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(|_| ())
            .map_err(|e| NotDone::Failed(format!("{what}: {e}")))
    }

    async fn evict(&self, t: &Target) -> Result<String, NotDone> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &t.namespace);
        let mut delay = EVICT_BACKOFF;
        for attempt in 1..=EVICT_ATTEMPTS {
            let r: Result<Value, _> =
                pods.create_subresource("eviction", &t.pod, &PostParams::default(), &eviction(t)).await;
            match r {
                Ok(_) => return Ok(format!("evicted (attempt {attempt})")),
                Err(e) if api_code(&e) == Some(404) => return Err(NotDone::Refused("pod no longer exists".into())),
                Err(e) if api_code(&e) == Some(429) && attempt < EVICT_ATTEMPTS => {
                    tracing::info!(namespace = %t.namespace, pod = %t.pod, attempt, retry_in = ?delay,
                                   "eviction refused for now (disruption budget); retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => return Err(NotDone::Failed(format!("evict (attempt {attempt}): {e}"))),
            }
        }
        Err(NotDone::Failed("evict: retries exhausted".into()))
    }

    /// A core/v1 Event on the pod; failures are logged, never fatal.
    pub async fn event(&self, t: &Target, pod: &Pod, reason: &str, warning: bool, message: &str) {
        let now = time::OffsetDateTime::now_utc();
        let stamp = now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let ev = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("{}.{:x}", t.pod, now.unix_timestamp_nanos()), "namespace": t.namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": t.pod, "namespace": t.namespace,
                               "uid": pod.metadata.uid},
            "reason": reason, "message": message, "type": if warning { "Warning" } else { "Normal" },
            "source": {"component": COMPONENT}, "reportingComponent": "driftwatch.io/responder",
            "reportingInstance": std::env::var("HOSTNAME").unwrap_or_default(),
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        });
        let events: Api<Event> = Api::namespaced(self.client.clone(), &t.namespace);
        let posted = match serde_json::from_value::<Event>(ev) {
            Ok(ev) => events.create(&PostParams::default(), &ev).await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = posted {
            tracing::warn!(namespace = %t.namespace, pod = %t.pod, error = %e, "responder: event not recorded");
        }
    }
}

/// The Event reason of a decision.
pub fn event_reason(action: Action, result: &str) -> &'static str {
    match (action, result) {
        (_, "refused") => "DriftwatchRefused",
        (_, "failed") => "DriftwatchActionFailed",
        (Action::Isolate, _) => "DriftwatchIsolated",
        (Action::Evict, _) => "DriftwatchEvicted",
        (Action::Investigate, _) => "DriftwatchInvestigated",
        (Action::Label, _) => "DriftwatchLabelled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            namespace: "shop".into(),
            pod: "web-1".into(),
            container_id: "0123456789abcdef".into(),
            playbook_step: "isolate".into(),
            rule: "exec_new_binary".into(),
        }
    }

    #[test]
    fn policy_denies_everything_but_optional_dns() {
        let p = network_policy(&target(), "uid-1", false);
        assert_eq!(p["spec"]["podSelector"], json!({"matchLabels": {"driftwatch.io/quarantine": "0123456789ab"}}));
        assert_eq!(p["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(p["spec"]["egress"], json!([]));
        assert_eq!(p["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        let p = network_policy(&target(), "uid-1", true);
        assert_eq!(p["spec"]["egress"][0]["ports"][1], json!({"protocol": "TCP", "port": 53}));
        assert_eq!(p["spec"]["ingress"], json!([]));
        serde_json::from_value::<NetworkPolicy>(p).expect("a valid NetworkPolicy");
    }

    #[test]
    fn label_values_are_valid() {
        assert_eq!(label_value("exec_new_binary"), "exec_new_binary");
        assert_eq!(label_value("_a b/c_"), "a_b_c");
        assert_eq!(label_value(&"x".repeat(80)).len(), 63);
    }
}
