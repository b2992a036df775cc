//! Alertmanager's webhook payload (version "4"), parsed and checked, and the
//! pod an alert names when the agent's own push labelled it.

use serde::Deserialize;
use std::collections::BTreeMap;

/// The payload version this receiver understands.
pub const VERSION: &str = "4";

/// The labels the agent's Alertmanager push (src/sink/alertmanager.rs) sets
/// on an alert about one container of one pod.
pub const NAMESPACE: &str = "namespace";
pub const POD: &str = "pod";
pub const CONTAINER_ID: &str = "container_id";
pub const PLAYBOOK_STEP: &str = "playbook_step";
pub const RULE: &str = "rule";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    pub version: String,
    #[serde(default)]
    pub group_key: String,
    #[serde(default)]
    pub receiver: String,
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// `firing` or `resolved`.
    pub status: String,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub fingerprint: String,
}

/// Why a request was refused: the `reason` label of
/// `driftwatch_response_webhook_rejected_total`, and its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Unauthorized,
    TooLarge,
    Malformed,
    Version,
    MissingLabels,
    NotFound,
    Method,
    /// The token file could not be read: the responder's fault, not the sender's.
    TokenUnreadable,
    /// A TLS handshake failed (no or a wrong client certificate, plain HTTP to HTTPS).
    Tls,
}

impl Rejection {
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::Version => "version",
            Self::MissingLabels => "missing_labels",
            Self::NotFound => "not_found",
            Self::Method => "method",
            Self::TokenUnreadable => "token_unreadable",
            Self::Tls => "tls",
        }
    }

    pub const fn status(self) -> u16 {
        match self {
            Self::Unauthorized | Self::Tls => 401,
            Self::TooLarge => 413,
            Self::Malformed | Self::Version | Self::MissingLabels => 400,
            Self::NotFound => 404,
            Self::Method => 405,
            Self::TokenUnreadable => 503,
        }
    }
}

/// Parses and checks a webhook body: JSON, version "4", and every alert with
/// a status and an `alertname` (what every Alertmanager alert carries).
pub fn parse(body: &[u8]) -> Result<Payload, (Rejection, String)> {
    let p: Payload = serde_json::from_slice(body).map_err(|e| (Rejection::Malformed, format!("payload: {e}")))?;
    if p.version != VERSION {
        return Err((Rejection::Version, format!("payload version {:?}, this receiver takes {VERSION:?}", p.version)));
    }
    for (i, a) in p.alerts.iter().enumerate() {
        if a.labels.get("alertname").is_none_or(|n| n.is_empty()) {
            return Err((Rejection::MissingLabels, format!("alerts[{i}]: no alertname label")));
        }
        if a.status != "firing" && a.status != "resolved" {
            return Err((
                Rejection::Malformed,
                format!("alerts[{i}]: status {:?} is neither firing nor resolved", a.status),
            ));
        }
    }
    Ok(p)
}

/// The container an alert names: the agent's labels, all present.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub namespace: String,
    pub pod: String,
    /// Bare (no `containerd://` scheme), lower case.
    pub container_id: String,
    pub playbook_step: String,
    pub rule: String,
}

impl Alert {
    /// The pod-level target, or `None` for alerts without the agent's labels
    /// (the Prometheus rules' workload-level alerts, for people).
    pub fn target(&self) -> Option<Target> {
        let get = |k: &str| self.labels.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        Some(Target {
            namespace: get(NAMESPACE)?.to_string(),
            pod: get(POD)?.to_string(),
            container_id: bare_container_id(get(CONTAINER_ID)?),
            playbook_step: get(PLAYBOOK_STEP)?.to_string(),
            rule: get(RULE).unwrap_or("unknown").to_string(),
        })
    }

    pub fn resolved(&self) -> bool {
        self.status == "resolved"
    }
}

/// `containerd://abc` -> `abc`: the kubelet prefixes the runtime's scheme.
pub fn bare_container_id(id: &str) -> String {
    id.rsplit_once("://").map_or(id, |(_, b)| b).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: serde_json::Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    fn alert(labels: serde_json::Value) -> serde_json::Value {
        json!({"status": "firing", "labels": labels, "annotations": {}, "startsAt": "2026-01-01T00:00:00Z",
               "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": "f00"})
    }

    #[test]
    fn version_four_with_agent_labels() {
        let b = body(json!({"version": "4", "groupKey": "{}:{}", "status": "firing", "receiver": "driftwatch",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "", "truncatedAlerts": 0,
            "alerts": [alert(json!({"alertname": "ContainerDriftBinary", "namespace": "shop", "pod": "web-1",
                                    "container_id": "containerd://ABC", "playbook_step": "isolate", "rule": "exec_new_binary"}))]}));
        let p = parse(&b).unwrap();
        let t = p.alerts[0].target().unwrap();
        assert_eq!((t.namespace.as_str(), t.pod.as_str(), t.container_id.as_str()), ("shop", "web-1", "abc"));
        assert_eq!(t.rule, "exec_new_binary");
    }

    #[test]
    fn rejections() {
        let r = |b: Vec<u8>| parse(&b).unwrap_err().0;
        assert_eq!(r(body(json!({"version": "3", "alerts": []}))), Rejection::Version);
        assert_eq!(r(b"{not json".to_vec()), Rejection::Malformed);
        assert_eq!(r(body(json!({"version": "4"}))), Rejection::Malformed);
        assert_eq!(r(body(json!({"version": "4", "alerts": [{"status": "firing"}]}))), Rejection::Malformed);
        assert_eq!(r(body(json!({"version": "4", "alerts": [alert(json!({"pod": "x"}))]}))), Rejection::MissingLabels);
        let mut a = alert(json!({"alertname": "A"}));
        a["status"] = json!("weird");
        assert_eq!(r(body(json!({"version": "4", "alerts": [a]}))), Rejection::Malformed);
    }

    #[test]
    fn workload_alerts_have_no_target() {
        let p = parse(&body(json!({"version": "4", "alerts": [alert(json!({"alertname": "ContainerDriftHigh",
            "namespace": "shop", "workload": "web", "playbook_step": "isolate"}))]})))
        .unwrap();
        assert!(p.alerts[0].target().is_none());
    }
}
