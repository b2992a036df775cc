//! The audit trail: one JSON line on stdout per decision, its count in
//! `driftwatch_response_actions_total{action,result}`, and (OTLP on) a log
//! event `driftwatch.response.<action>`.

use super::webhook::{Alert, Target};
use crate::{config::Severity, metrics::respond::RespondMetrics, sink::event::NodeEvent};
use serde::Serialize;
use serde_json::{Map, Value};
use std::io::Write;

/// The outcome of a decision, as audited and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Acted,
    DryRun,
    Refused,
    Failed,
    Acknowledged,
}

impl Outcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Acted => "acted",
            Self::DryRun => "dry_run",
            Self::Refused => "refused",
            Self::Failed => "failed",
            Self::Acknowledged => "acknowledged",
        }
    }
}

/// One audit line.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub time: String,
    pub fingerprint: String,
    pub alertname: String,
    pub namespace: String,
    pub pod: String,
    pub container_id: String,
    pub rule: String,
    pub playbook_step: String,
    /// isolate | evict | label | none.
    pub action: &'static str,
    pub result: Outcome,
    pub reason: String,
}

impl Record {
    pub fn new(
        alert: &Alert,
        target: Option<&Target>,
        action: &'static str,
        result: Outcome,
        reason: String,
    ) -> Record {
        let label = |k: &str| alert.labels.get(k).cloned().unwrap_or_default();
        let now = time::OffsetDateTime::now_utc();
        Record {
            time: now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            fingerprint: alert.fingerprint.clone(),
            alertname: label("alertname"),
            namespace: target.map_or_else(|| label("namespace"), |t| t.namespace.clone()),
            pod: target.map_or_else(|| label("pod"), |t| t.pod.clone()),
            container_id: target.map_or_else(|| label("container_id"), |t| t.container_id.clone()),
            rule: label("rule"),
            playbook_step: label("playbook_step"),
            action,
            result,
            reason,
        }
    }

    /// The OTLP log event `driftwatch.response.<action>` of a decision that
    /// acted, would have (dry run), was refused or failed; none for an acknowledgement.
    pub fn node_event(&self) -> Option<NodeEvent> {
        let severity = match self.result {
            Outcome::Acknowledged => return None,
            Outcome::Acted | Outcome::DryRun => Severity::Info,
            Outcome::Refused | Outcome::Failed => Severity::Warning,
        };
        let name = match self.action {
            "isolate" => "driftwatch.response.isolate",
            "evict" => "driftwatch.response.evict",
            "investigate" => "driftwatch.response.investigate",
            "label" => "driftwatch.response.label",
            _ => "driftwatch.response.none",
        };
        let mut attributes = Map::new();
        for (k, v) in [
            ("k8s.namespace.name", &self.namespace),
            ("k8s.pod.name", &self.pod),
            ("container.id", &self.container_id),
            ("rule", &self.rule),
            ("playbook_step", &self.playbook_step),
            ("alertname", &self.alertname),
            ("fingerprint", &self.fingerprint),
            ("reason", &self.reason),
        ] {
            if !v.is_empty() {
                attributes.insert(k.to_string(), Value::String(v.clone()));
            }
        }
        attributes.insert("action".into(), Value::String(self.action.into()));
        attributes.insert("result".into(), Value::String(self.result.as_str().into()));
        let body = format!("{} {} {}/{}: {}", self.action, self.result.as_str(), self.namespace, self.pod, self.reason);
        Some(NodeEvent { name, severity, body, attributes })
    }

    /// Writes the line and counts it.
    pub fn emit(&self, m: &RespondMetrics) {
        m.action(self.action, self.result.as_str());
        if let Ok(mut line) = serde_json::to_vec(self) {
            line.push(b'\n');
            let mut out = std::io::stdout().lock();
            // A closed stdout must not stop the responder; the counter still holds.
            let _ = out.write_all(&line).and_then(|()| out.flush());
        }
    }
}
