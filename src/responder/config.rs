//! The responder's YAML config (`driftwatch respond --config FILE`): what acts,
//! where, how often. Everything has a safe default: dry-run, no steps.

use crate::config::ConfigError;
use serde::Deserialize;
use std::{collections::BTreeMap, path::Path};

/// A playbook step the responder can carry out (`respond.steps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Isolate,
    Investigate,
    Evict,
    /// `label` or its alias `annotate`.
    #[serde(alias = "annotate")]
    Label,
}

impl Step {
    pub const fn as_str(self) -> &'static str {
        match self {
            Step::Isolate => "isolate",
            Step::Investigate => "investigate",
            Step::Evict => "evict",
            Step::Label => "label",
        }
    }

    /// A finding's `playbook_step` label, if the responder knows it.
    pub fn parse(s: &str) -> Option<Step> {
        match s {
            "isolate" => Some(Step::Isolate),
            "investigate" => Some(Step::Investigate),
            "evict" => Some(Step::Evict),
            "label" | "annotate" => Some(Step::Label),
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    respond: RespondConfig,
    /// The audit's OTLP log events, as the agent's `otlp:` (and `OTEL_EXPORTER_OTLP_*`).
    #[serde(default)]
    otlp: crate::config::Otlp,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RespondConfig {
    /// Log and count what would be done; touch nothing.
    pub dry_run: bool,
    /// The playbook steps that act (none by default).
    pub steps: Vec<Step>,
    pub webhook: Webhook,
    pub isolate: Isolate,
    pub evict: Evict,
    pub label: Label,
    /// One action per (pod, action) within this window; later alerts are acknowledged.
    pub dedup_window_s: u64,
    pub rate_limits: RateLimits,
    /// Never acted on (the responder's own namespace, `POD_NAMESPACE`, is added).
    pub protected_namespaces: Vec<String>,
    /// Per-namespace overrides of `steps` and `dry_run`.
    pub namespaces: BTreeMap<String, NamespaceOverride>,
    /// The node agents' admin API, for evidence capture (investigate, and
    /// isolate's capture); absent: investigate only labels, isolate captures nothing.
    pub node_agent: Option<NodeAgent>,
    /// Steps that lead to another: `{isolate: evict}` evicts a pod right after
    /// isolating it (and capturing its evidence, with `node_agent`). No agent
    /// finding carries `evict` (the shipped rules' evict alert is per workload),
    /// so this is how a drifted pod is evicted through Alertmanager. The next
    /// step goes through the same checks (enabled steps, dedup, rate limits,
    /// protected namespaces, dry-run) as an alert of that step; one level only.
    pub escalate: BTreeMap<String, Step>,
    /// The file's top-level `otlp:` section (not under `respond:`, as in the agent's config).
    #[serde(skip)]
    pub otlp: crate::config::Otlp,
}

impl Default for RespondConfig {
    fn default() -> Self {
        RespondConfig {
            dry_run: true,
            steps: Vec::new(),
            webhook: Webhook::default(),
            isolate: Isolate::default(),
            evict: Evict::default(),
            label: Label::default(),
            dedup_window_s: 600,
            rate_limits: RateLimits::default(),
            protected_namespaces: vec!["kube-system".into()],
            namespaces: BTreeMap::new(),
            node_agent: None,
            escalate: BTreeMap::new(),
            otlp: crate::config::Otlp::default(),
        }
    }
}

/// How to reach the agent on a pod's node: the running pod matching `selector`
/// in `namespace` on the pod's node, at its pod IP and `port` (the agent's TCP
/// `admin_addr`), with the agent's `admin_token_file` token.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeAgent {
    /// The agents' namespace; "": the responder's own (`POD_NAMESPACE`).
    pub namespace: String,
    /// Label selector of the agent pods (`k=v,k=v`).
    pub selector: String,
    pub port: u16,
    /// File holding the admin API's bearer token.
    pub token_file: String,
    /// A capture (diff, process list, copies of the drifted files) takes at most this long.
    pub timeout_s: u64,
}

impl Default for NodeAgent {
    fn default() -> Self {
        NodeAgent {
            namespace: String::new(),
            selector: "app.kubernetes.io/name=driftwatch,app.kubernetes.io/component=agent".into(),
            port: 8791,
            token_file: String::new(),
            timeout_s: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Webhook {
    /// File holding the bearer token Alertmanager sends (`http_config.authorization`).
    pub token_file: String,
    pub max_body_bytes: usize,
    /// Serve HTTPS, and with `client_ca_file` require a client certificate (mTLS).
    pub tls: Option<WebhookTls>,
}

impl Default for Webhook {
    fn default() -> Self {
        Webhook { token_file: String::new(), max_body_bytes: 1 << 20, tls: None }
    }
}

/// `respond.webhook.tls`: PEM files, read at startup.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookTls {
    pub cert_file: String,
    pub key_file: String,
    /// CA bundle the client certificate must chain to; "": no client certificate asked.
    pub client_ca_file: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Isolate {
    /// Let the isolated pod resolve names (UDP and TCP 53 to the kube-dns pods).
    pub allow_dns: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Evict {
    /// Evict pods no controller owns (nothing recreates them).
    pub allow_unowned: bool,
}

/// The `label` step has no settings yet; the section exists so it can grow.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Label {}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    pub global: Limit,
    pub per_namespace: Limit,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits { global: Limit { max: 20, window_s: 600 }, per_namespace: Limit { max: 5, window_s: 600 } }
    }
}

/// At most `max` actions in any `window_s` seconds.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub max: u32,
    pub window_s: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct NamespaceOverride {
    pub steps: Option<Vec<Step>>,
    pub dry_run: Option<bool>,
}

/// Largest webhook body accepted: Alertmanager groups are KBs, not tens of MBs.
const MAX_BODY_LIMIT: usize = 64 << 20;

impl RespondConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<RespondConfig, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        Self::from_yaml(&text, &file)
    }

    /// Parses `text` (named `file` in errors): unknown keys and bad values name their field and line.
    pub fn from_yaml(text: &str, file: &str) -> Result<RespondConfig, ConfigError> {
        let parsed: Result<Option<File>, _> =
            serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(text));
        let cfg = match parsed {
            Ok(f) => {
                let f = f.unwrap_or_default();
                RespondConfig { otlp: f.otlp, ..f.respond }
            }
            Err(e) => {
                let location = e
                    .inner()
                    .location()
                    .map(|l| format!("line {}, column {}: ", l.line(), l.column()))
                    .unwrap_or_default();
                let mut message = e.inner().to_string();
                if let Some(i) = message.rfind(" at line ") {
                    message.truncate(i);
                }
                let message = match e.path().to_string() {
                    root if root == "." => message,
                    field => format!("{field}: {message}"),
                };
                return Err(ConfigError::Parse { file: file.to_string(), location, message });
            }
        };
        cfg.validate(file)?;
        Ok(cfg)
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            file: file.to_string(),
            location: String::new(),
            field: format!("respond.{field}"),
            message,
        };
        let b = self.webhook.max_body_bytes;
        if b == 0 || b > MAX_BODY_LIMIT {
            return Err(invalid("webhook.max_body_bytes", format!("{b} must be between 1 and {MAX_BODY_LIMIT}")));
        }
        for (name, l) in [("global", self.rate_limits.global), ("per_namespace", self.rate_limits.per_namespace)] {
            if l.window_s == 0 {
                return Err(invalid(&format!("rate_limits.{name}.window_s"), "must be at least 1".into()));
            }
        }
        for (from, to) in &self.escalate {
            match Step::parse(from) {
                None => {
                    return Err(invalid(
                        &format!("escalate.{from}"),
                        "not a playbook step (isolate, investigate, evict, label)".into(),
                    ));
                }
                Some(f) if f == *to => {
                    return Err(invalid(&format!("escalate.{from}"), "a step cannot lead to itself".into()));
                }
                Some(_) => {}
            }
        }
        let acts = !self.dry_run || self.namespaces.values().any(|o| o.dry_run == Some(false));
        let mtls = self.webhook.tls.as_ref().is_some_and(|t| !t.client_ca_file.trim().is_empty());
        if acts && self.webhook.token_file.trim().is_empty() && !mtls {
            return Err(invalid(
                "webhook.token_file",
                "required when dry_run is false anywhere (or webhook.tls.client_ca_file): \
                 an unauthenticated webhook must not evict pods"
                    .into(),
            ));
        }
        if let Some(t) = &self.webhook.tls {
            for (k, v) in [("cert_file", &t.cert_file), ("key_file", &t.key_file)] {
                if v.trim().is_empty() {
                    return Err(invalid(&format!("webhook.tls.{k}"), "required with webhook.tls".into()));
                }
            }
        }
        if let Some(n) = &self.node_agent {
            if n.token_file.trim().is_empty() {
                return Err(invalid(
                    "node_agent.token_file",
                    "required: the agents' admin API takes a bearer token".into(),
                ));
            }
            if n.port == 0 {
                return Err(invalid("node_agent.port", "must be the agents' admin port (1-65535)".into()));
            }
            if n.timeout_s == 0 {
                return Err(invalid("node_agent.timeout_s", "must be at least 1".into()));
            }
            let selector_ok = !n.selector.is_empty()
                && n.selector
                    .split(',')
                    .all(|kv| kv.split_once('=').is_some_and(|(k, v)| !k.is_empty() && !v.is_empty()));
            if !selector_ok {
                return Err(invalid(
                    "node_agent.selector",
                    format!("{:?} is not a label selector k=v[,k=v]", n.selector),
                ));
            }
            if !n.namespace.is_empty() && !is_dns_label(&n.namespace) {
                return Err(invalid("node_agent.namespace", format!("{:?} is not a namespace name", n.namespace)));
            }
        }
        for ns in self.namespaces.keys() {
            if !is_dns_label(ns) {
                return Err(invalid(&format!("namespaces.{ns}"), "not a namespace name".into()));
            }
        }
        Ok(())
    }

    /// Whether `ns` acts in dry-run, and the steps that act there.
    pub fn for_namespace(&self, ns: &str) -> (bool, &[Step]) {
        let o = self.namespaces.get(ns);
        let dry = o.and_then(|o| o.dry_run).unwrap_or(self.dry_run);
        let steps = o.and_then(|o| o.steps.as_deref()).unwrap_or(&self.steps);
        (dry, steps)
    }
}

/// An RFC 1123 label: what namespace names are.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An RFC 1123 subdomain: what pod names are.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_safe_default() {
        let c = RespondConfig::from_yaml("", "r.yaml").unwrap();
        assert!(c.dry_run && c.steps.is_empty());
        assert_eq!(c.protected_namespaces, ["kube-system"]);
        assert_eq!(c.rate_limits.per_namespace, Limit { max: 5, window_s: 600 });
        assert_eq!(c.webhook.max_body_bytes, 1 << 20);
    }

    #[test]
    fn full_contract_parses() {
        let y = "respond:\n  dry_run: false\n  steps: [isolate, evict, annotate]\n  webhook: {token_file: /t, max_body_bytes: 2048}\n  \
                 isolate: {allow_dns: true}\n  evict: {allow_unowned: true}\n  label: {}\n  dedup_window_s: 5\n  \
                 rate_limits: {global: {max: 1, window_s: 2}, per_namespace: {max: 3, window_s: 4}}\n  \
                 protected_namespaces: [a]\n  namespaces: {payments: {steps: [isolate], dry_run: true}}\n  \
                 node_agent: {namespace: dw, selector: 'app=dw', port: 8791, token_file: /a, timeout_s: 9}\n";
        let c = RespondConfig::from_yaml(y, "r.yaml").unwrap();
        assert_eq!(c.steps, [Step::Isolate, Step::Evict, Step::Label]);
        assert!(c.isolate.allow_dns && c.evict.allow_unowned);
        assert_eq!(c.for_namespace("payments"), (true, &[Step::Isolate][..]));
        assert_eq!(c.for_namespace("other"), (false, &c.steps[..]));
        let n = c.node_agent.unwrap();
        assert_eq!((n.namespace.as_str(), n.selector.as_str(), n.port, n.timeout_s), ("dw", "app=dw", 8791, 9));
        let c = RespondConfig::from_yaml("respond:\n  node_agent: {token_file: /t}\n", "r.yaml").unwrap();
        assert_eq!(c.node_agent.unwrap().selector, NodeAgent::default().selector);
    }

    #[test]
    fn errors_name_file_field_and_line() {
        let e = RespondConfig::from_yaml("respond:\n  dry_run: true\n  isolate: {alow_dns: true}\n", "r.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("r.yaml") && e.contains("line 3") && e.contains("respond.isolate") && e.contains("alow_dns"),
            "{e}"
        );
        let e = RespondConfig::from_yaml("respond:\n  steps: [isolate, nuke]\n", "r.yaml").unwrap_err().to_string();
        assert!(e.contains("respond.steps[1]") && e.contains("nuke") && e.contains("line 2"), "{e}");
        let e = RespondConfig::from_yaml("respnd: {}\n", "r.yaml").unwrap_err().to_string();
        assert!(e.contains("respnd"), "{e}");
        let e = RespondConfig::from_yaml("respond:\n  dry_run: false\n", "r.yaml").unwrap_err().to_string();
        assert!(e.contains("respond.webhook.token_file"), "{e}");
        let mtls = "respond:\n  dry_run: false\n  webhook: {tls: {cert_file: /c, key_file: /k, client_ca_file: /ca}}\n";
        assert!(RespondConfig::from_yaml(mtls, "r.yaml").is_ok(), "a client certificate authenticates too");
        let e = RespondConfig::from_yaml("respond:\n  webhook: {tls: {cert_file: /c}}\n", "r.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("respond.webhook.tls.key_file"), "{e}");
        let e =
            RespondConfig::from_yaml("respond:\n  webhook: {max_body_bytes: 0}\n", "r.yaml").unwrap_err().to_string();
        assert!(e.contains("respond.webhook.max_body_bytes"), "{e}");
        let e = RespondConfig::from_yaml("respond:\n  rate_limits: {global: {max: 1, window_s: 0}}\n", "r.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rate_limits.global.window_s"), "{e}");
        for (y, field) in [
            ("node_agent: {port: 8791}", "node_agent.token_file"),
            ("node_agent: {token_file: /t, port: 0}", "node_agent.port"),
            ("node_agent: {token_file: /t, selector: 'app'}", "node_agent.selector"),
            ("node_agent: {token_file: /t, namespace: 'A_b'}", "node_agent.namespace"),
            ("node_agent: {token_file: /t, timeout_s: 0}", "node_agent.timeout_s"),
        ] {
            let e = RespondConfig::from_yaml(&format!("respond:\n  {y}\n"), "r.yaml").unwrap_err().to_string();
            assert!(e.contains(field), "{y}: {e}");
        }
    }

    #[test]
    fn otlp_is_the_agents_section() {
        let c =
            RespondConfig::from_yaml("respond: {}\notlp:\n  endpoint: http://c:4317\n  timeout_ms: 500\n", "r.yaml")
                .unwrap();
        assert_eq!((c.otlp.endpoint.as_str(), c.otlp.timeout_ms), ("http://c:4317", 500));
        let e = RespondConfig::from_yaml("otlp: {endpont: x}\n", "r.yaml").unwrap_err().to_string();
        assert!(e.contains("otlp") && e.contains("endpont"), "{e}");
    }

    #[test]
    fn names() {
        assert!(is_dns_label("kube-system") && !is_dns_label("Kube") && !is_dns_label("a/b") && !is_dns_label(""));
        assert!(is_dns_subdomain("web-1.x") && !is_dns_subdomain("../x"));
    }
}
