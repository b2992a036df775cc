//! Direct push of findings to Alertmanager's v2 API (`POST /api/v2/alerts`),
//! for per-finding alerts without waiting for a Prometheus scrape.
//!
//! One alert per finding *group*: (alertname, container, rule). The first
//! finding of a group is pushed at once; later findings of the group within
//! `group_window_ms` update the same alert (same labels, so Alertmanager
//! deduplicates it) with a `count` annotation, so a storm of 10,000 execs is
//! one alert, re-sent at most once per window.
//!
//! Alertnames, one per drift kind (the `rule` label tells the rules apart):
//! `binary` -> `ContainerDriftBinary`, `shell` -> `ContainerShellSpawned`,
//! `package` -> `ContainerPackageManager`; a future kind `foo` becomes
//! `ContainerDriftFoo`. Labels: `alertname`, `severity`, `kind`, `rule`,
//! `playbook_step`, `container_id`, `node`, `mitre` (the rule's ATT&CK technique
//! ids, comma-separated, from `driftwatch.tags`), and, when the finding carries
//! Kubernetes metadata, `namespace`, `pod`, `container`, `workload` (read from
//! the finding's JSON keys, so new metadata flows through without code
//! changes here). Annotations: `summary`, `description`, `evidence` (the
//! latest finding's JSON), `count`, `first_seen`, `last_seen`, `runbook_url`
//! (`<runbook_base_url>/<alertname>.md`). `startsAt` is the first finding's
//! kernel time, `endsAt` the last one's plus `resolve_timeout_s`.
//!
//! Several Alertmanagers (`urls`, an HA pair): every alert goes to each. Each
//! URL is a *target* with its own task, queue, POST in flight, backoff and
//! counters, fed its own copy of the findings (shared `Arc`s): one that is down
//! or slow never delays the others.
//!
//! Bounded: at most `queue_size` groups are held per target; a finding that would need
//! a new group when every held group still waits for delivery is dropped and
//! counted. One POST is in flight at a time; failures are retried with
//! exponential backoff (`retry_initial_ms` doubling up to `retry_max_ms`),
//! and after `max_retries` the alerts are given up and counted. Counters, per
//! target (`target`: the URL's host:port) and in total (the sum over targets):
//! `driftwatch_alertmanager_target_alerts_total{target,result}`,
//! `driftwatch_alertmanager_target_requests_total{target,result}`,
//! `driftwatch_alertmanager_alerts_total{result="sent"|"failed"|"dropped"}`,
//! `driftwatch_alertmanager_requests_total{result="ok"|"error"}`.
//!
//! Transport: `https://` URLs over rustls (`alertmanager.tls`: CA file or the
//! system roots, a client certificate, src/tls.rs); a bearer token or basic
//! auth read from files before every POST (a rotated token is picked up), and
//! fixed extra headers such as `X-Scope-OrgID`.

use super::http::{Auth, Endpoint, PostError, backoff, extra_headers, post};
use crate::metrics::{AlertmanagerTargetMetrics, Metrics};
use crate::{
    classify::Finding,
    clock,
    config::{self, AlertmanagerUrl},
    tls::{self, ClientTls},
};
use bytes::Bytes;
use serde_json::{Map, Value, json};
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};
use tokio::{sync::mpsc, task::JoinHandle, time::Instant};

/// Queue name of the Alertmanager sink in `driftwatch_userspace_drops_total`.
pub const QUEUE: &str = "findings_alertmanager";

/// Alertmanager labels read from the finding's JSON keys, first present key wins.
/// Keys the finding does not carry yet are simply absent labels.
const METADATA_LABELS: &[(&str, &[&str])] = &[
    ("namespace", &["k8s.namespace.name"]),
    ("pod", &["k8s.pod.name"]),
    ("container", &["k8s.container.name"]),
    (
        "workload",
        &[
            "k8s.workload.name",
            "k8s.deployment.name",
            "k8s.statefulset.name",
            "k8s.daemonset.name",
            "k8s.cronjob.name",
            "k8s.job.name",
            "k8s.replicaset.name",
            "driftwatch.workload.name",
        ],
    ),
];

/// The alertname of a drift kind (see the module docs).
pub fn alertname(kind: &str) -> String {
    match kind {
        "binary" => "ContainerDriftBinary".into(),
        "shell" => "ContainerShellSpawned".into(),
        "package" => "ContainerPackageManager".into(),
        other => {
            let camel: String = other
                .split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(|w| {
                    let mut c = w.chars();
                    c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
                })
                .collect();
            format!("ContainerDrift{camel}")
        }
    }
}

fn str_of(v: &Map<String, Value>, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// The identity labels of a finding's alert.
pub fn labels(f: &Map<String, Value>, node: &str) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert("alertname".into(), alertname(&str_of(f, "kind")));
    for k in ["severity", "kind", "rule", "playbook_step"] {
        l.insert(k.into(), str_of(f, k));
    }
    l.insert("container_id".into(), str_of(f, "container.id"));
    let node = match str_of(f, "k8s.node.name") {
        n if n.is_empty() => node.to_string(),
        n => n,
    };
    l.insert("node".into(), node);
    // The rule's ATT&CK technique ids (`T1105,T1059`), for routing and silences.
    if let Some(Value::Array(tags)) = f.get("driftwatch.tags") {
        let ids: Vec<&str> =
            tags.iter().filter_map(Value::as_str).filter(|t| crate::classify::tags::is_technique(t)).collect();
        l.insert("mitre".into(), ids.join(","));
    }
    for (label, keys) in METADATA_LABELS {
        if let Some(v) = keys.iter().map(|k| str_of(f, k)).find(|v| !v.is_empty()) {
            l.insert((*label).into(), v);
        }
    }
    l.retain(|_, v| !v.is_empty());
    l
}

/// One Alertmanager (one configured URL): where to POST, and its `target` label.
#[derive(Clone)]
struct Target {
    url: AlertmanagerUrl,
    endpoint: Endpoint,
}

type GroupKey = (String, String, String);

struct Group {
    labels: BTreeMap<String, String>,
    latest: Arc<Finding>,
    first_time: String,
    count: u64,
    last_seen: Instant,
    /// Bumped by every finding; a delivery clears `due` only if nothing came since.
    version: u64,
    /// When the pending update should go out (`None`: delivered).
    due: Option<Instant>,
    last_sent: Option<Instant>,
}

/// Builds the v2 API alert objects.
struct Render {
    node: String,
    resolve: Duration,
    runbook_base: String,
    generator: String,
    clock: clock::BootClock,
}

impl Render {
    fn alert(&self, g: &Group) -> Value {
        let f = &g.latest;
        let alertname = g.labels.get("alertname").cloned().unwrap_or_default();
        let ends = clock::rfc3339(self.clock.wall(f.ktime_ns) + self.resolve);
        let args = f.command_args().join(" ");
        let description = format!(
            "{count} finding(s) of rule {rule} in container {cid} since {first}; latest at {last}: {exe} ({args}), parent {parent}, executable source {src}.",
            count = g.count,
            rule = f.rule,
            cid = f.container_id,
            first = g.first_time,
            last = f.time,
            exe = f.exe_path(),
            parent = f.parent_name(),
            src = f.exe_source(),
        );
        let mut alert = json!({
            "labels": g.labels,
            "annotations": {
                "summary": f.message,
                "description": description,
                "evidence": f.to_json(),
                "count": g.count.to_string(),
                "first_seen": g.first_time,
                "last_seen": f.time,
                "runbook_url": format!("{}/{alertname}.md", self.runbook_base.trim_end_matches('/')),
            },
            "startsAt": g.first_time,
            "endsAt": ends,
        });
        if !self.generator.is_empty() {
            alert["generatorURL"] = Value::String(self.generator.clone());
        }
        alert
    }
}

/// Settings of the sink, from `config.alertmanager`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub cfg: config::Alertmanager,
    /// `generatorURL` when the config leaves it empty.
    pub default_generator: String,
}

/// The senders feeding a started sink (one per target: register each with the
/// fan-out), and the sink.
pub type Started = (Vec<mpsc::Sender<Arc<Finding>>>, AlertmanagerSink);

/// A running Alertmanager sink: one task per target.
pub struct AlertmanagerSink {
    tasks: Vec<JoinHandle<()>>,
    /// The `target` labels, in URL order.
    pub targets: Vec<String>,
}

impl AlertmanagerSink {
    /// `None` when no URL is configured. Loads the TLS files (the system roots
    /// when no `ca_file` is set) when a URL is https://; errors are configuration errors.
    pub fn start(s: Settings, metrics: Arc<Metrics>) -> Result<Option<Started>, String> {
        let urls = s.cfg.targets();
        if urls.is_empty() {
            return Ok(None);
        }
        let urls = urls
            .iter()
            .map(|u| AlertmanagerUrl::parse(u).map_err(|e| format!("alertmanager: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let connector = if urls.iter().any(|u| u.https) {
            let t =
                ClientTls::load(s.cfg.tls.files()).map_err(|e| format!("alertmanager.tls.{}: {e}", e.field.key()))?;
            tracing::info!(
                roots = t.roots_source(),
                client_certificate = t.has_client_certificate(),
                "alertmanager: TLS"
            );
            t.https_connector()
        } else {
            tls::http_connector()
        };
        let auth = Arc::new(Auth::new(&s.cfg.bearer_token_file, &s.cfg.basic_auth));
        if *auth != Auth::None && urls.iter().any(|u| !u.https) {
            tracing::warn!("alertmanager: credentials are sent over plain http:// to some URLs; use https://");
        }
        let headers = Arc::new(extra_headers("alertmanager", &s.cfg.headers)?);
        let labels: Vec<String> = urls.iter().map(|u| u.label.clone()).collect();
        metrics.sinks.declare_alertmanager(&labels.iter().map(String::as_str).collect::<Vec<_>>());
        let s = Arc::new(s);
        let (mut senders, mut tasks) = (Vec::new(), Vec::new());
        for url in urls {
            let m = metrics.sinks.alertmanager_target(&url.label);
            let endpoint =
                Endpoint::new(url.https, &url.authority, &url.path, connector.clone(), auth.clone(), headers.clone())?;
            let target = Target { url, endpoint };
            let (tx, rx) = mpsc::channel(s.cfg.queue_size.clamp(16, 1024));
            tasks.push(tokio::spawn(run(rx, target, s.clone(), m)));
            senders.push(tx);
        }
        Ok(Some((senders, AlertmanagerSink { tasks, targets: labels })))
    }

    /// Waits for the final delivery attempt of every target (the senders must be closed).
    pub async fn shutdown(self, limit: Duration) {
        let aborts: Vec<_> = self.tasks.iter().map(|t| t.abort_handle()).collect();
        if tokio::time::timeout(limit, futures::future::join_all(self.tasks)).await.is_err() {
            aborts.iter().for_each(|a| a.abort());
            tracing::warn!("alertmanager: final delivery did not finish in {limit:?}; abandoned");
        }
    }
}

struct InFlight {
    task: JoinHandle<Result<(), PostError>>,
    /// (group, version at send time)
    sent: Vec<(GroupKey, u64)>,
}

async fn run(mut rx: mpsc::Receiver<Arc<Finding>>, target: Target, s: Arc<Settings>, mut m: AlertmanagerTargetMetrics) {
    let label = target.url.label.clone();
    let c = &s.cfg;
    let window = Duration::from_millis(c.group_window_ms);
    let resolve = Duration::from_secs(c.resolve_timeout_s);
    let timeout = Duration::from_millis(c.timeout_ms);
    let render = Render {
        node: crate::node::name().to_string(),
        resolve,
        runbook_base: c.runbook_base_url.clone(),
        generator: if c.generator_url.is_empty() { s.default_generator.clone() } else { c.generator_url.clone() },
        clock: clock::BootClock::new(),
    };
    let mut groups: HashMap<GroupKey, Group> = HashMap::new();
    let mut inflight: Option<InFlight> = None;
    let mut attempt: u32 = 0;
    let mut retry_at: Option<Instant> = None;
    let mut open = true;
    let mut final_deadline: Option<Instant> = None;
    let mut tick = tokio::time::interval(window.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now = Instant::now();
        // Deliver what is due, one POST at a time, respecting the backoff.
        if inflight.is_none() && retry_at.is_none_or(|t| now >= t) {
            let due: Vec<GroupKey> = groups
                .iter()
                .filter(|(_, g)| g.due.is_some_and(|d| !open || d <= now))
                .map(|(k, _)| k.clone())
                .collect();
            if !due.is_empty() {
                let alerts: Vec<Value> = due.iter().map(|k| render.alert(&groups[k])).collect();
                let sent = due.iter().map(|k| (k.clone(), groups[k].version)).collect();
                let body = Bytes::from(serde_json::to_vec(&alerts).unwrap_or_default());
                let t = target.clone();
                inflight =
                    Some(InFlight { task: tokio::spawn(async move { post(&t.endpoint, body, timeout).await }), sent });
            }
        }
        m.set_queued(groups.values().filter(|g| g.due.is_some()).count());
        let pending = groups.values().any(|g| g.due.is_some());
        if !open && inflight.is_none() && (!pending || final_deadline.is_some_and(|d| now >= d)) {
            let left = groups.values().filter(|g| g.due.is_some()).count() as u64;
            if left > 0 {
                m.alerts("failed", left);
                tracing::warn!(target = %label, alerts = left, "alertmanager: undelivered alerts at shutdown");
            }
            m.set_queued(0);
            return;
        }
        let next_due = groups.values().filter_map(|g| g.due).min().map(|d| match retry_at {
            Some(r) => d.max(r),
            None => d,
        });
        tokio::select! {
            r = async { (&mut inflight.as_mut().expect("guarded").task).await }, if inflight.is_some() => {
                let done = inflight.take().expect("guarded");
                let n = done.sent.len() as u64;
                let r = r.unwrap_or_else(|e| Err(PostError::Retry(format!("task: {e}"))));
                m.request(r.is_ok());
                let give_up = match &r {
                    Ok(()) => {
                        m.alerts("sent", n);
                        attempt = 0;
                        retry_at = None;
                        false
                    }
                    Err(PostError::Permanent(e)) => {
                        tracing::warn!(target = %label, error = %e, alerts = n, "alertmanager rejected the alerts; not retried");
                        true
                    }
                    Err(PostError::Retry(e)) => {
                        attempt += 1;
                        if attempt > c.max_retries || !open {
                            tracing::warn!(target = %label, error = %e, alerts = n, attempts = attempt, "alertmanager unreachable; alerts given up");
                            true
                        } else {
                            let backoff = backoff(c.retry_initial_ms, c.retry_max_ms, attempt);
                            if attempt == 1 {
                                tracing::warn!(target = %label, error = %e, alerts = n, retry_in = ?backoff, "alertmanager push failed; retrying");
                            }
                            retry_at = Some(Instant::now() + backoff);
                            false
                        }
                    }
                };
                if give_up {
                    m.alerts("failed", n);
                    attempt = 0;
                    retry_at = None;
                }
                if r.is_ok() || give_up {
                    for (k, v) in &done.sent {
                        if let Some(g) = groups.get_mut(k) && g.version == *v {
                            g.due = None;
                            g.last_sent = Some(Instant::now());
                        }
                    }
                }
            }
            f = rx.recv(), if open => match f {
                Some(f) => ingest(&mut groups, f, &render, c.queue_size, window, &m),
                None => {
                    open = false;
                    final_deadline = Some(Instant::now() + timeout);
                    retry_at = None;
                }
            },
            _ = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() && inflight.is_none() => {}
            _ = tick.tick() => {
                // Forget groups quiet for longer than the resolve timeout.
                groups.retain(|_, g| g.due.is_some() || g.last_seen.elapsed() < resolve);
            }
        }
    }
}

fn ingest(
    groups: &mut HashMap<GroupKey, Group>,
    f: Arc<Finding>,
    render: &Render,
    cap: usize,
    window: Duration,
    metrics: &AlertmanagerTargetMetrics,
) {
    let Ok(Value::Object(json)) = serde_json::to_value(&*f) else { return };
    let labels = labels(&json, &render.node);
    let key: GroupKey =
        (labels.get("alertname").cloned().unwrap_or_default(), f.container_id.to_string(), f.rule.to_string());
    let now = Instant::now();
    if let Some(g) = groups.get_mut(&key) {
        g.count += 1;
        g.version += 1;
        g.last_seen = now;
        g.labels = labels;
        g.latest = f;
        if g.due.is_none() {
            // Coalesce: at most one update per window.
            g.due = Some(g.last_sent.map_or(now, |t| (t + window).max(now)));
        }
        return;
    }
    if groups.len() >= cap {
        // Make room: forget the delivered group seen longest ago; if every
        // group still waits for delivery, this finding is dropped.
        let victim =
            groups.iter().filter(|(_, g)| g.due.is_none()).min_by_key(|(_, g)| g.last_seen).map(|(k, _)| k.clone());
        match victim {
            Some(k) => {
                groups.remove(&k);
            }
            None => {
                metrics.alerts("dropped", 1);
                return;
            }
        }
    }
    groups.insert(
        key,
        Group {
            labels,
            first_time: f.time.to_string(),
            latest: f,
            count: 1,
            last_seen: now,
            version: 0,
            due: Some(now),
            last_sent: None,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alertnames() {
        assert_eq!(alertname("binary"), "ContainerDriftBinary");
        assert_eq!(alertname("shell"), "ContainerShellSpawned");
        assert_eq!(alertname("package"), "ContainerPackageManager");
        assert_eq!(alertname("file_write"), "ContainerDriftFileWrite");
    }

    #[test]
    fn labels_take_metadata_when_present() {
        let v = json!({
            "kind": "binary", "rule": "exec_new_binary", "severity": "critical", "playbook_step": "isolate",
            "container.id": "abc", "k8s.namespace.name": "prod", "k8s.pod.name": "web-1",
            "k8s.container.name": "app", "k8s.deployment.name": "web",
            "driftwatch.tags": ["container", "mitre_execution", "T1105", "T1059.004"],
        });
        let l = labels(v.as_object().unwrap(), "node-1");
        assert_eq!(l["alertname"], "ContainerDriftBinary");
        assert_eq!(l["namespace"], "prod");
        assert_eq!(l["workload"], "web");
        assert_eq!(l["container"], "app");
        assert_eq!(l["node"], "node-1");
        assert_eq!(l["mitre"], "T1105,T1059.004");
        let v = json!({"kind": "shell", "rule": "shell_in_container", "severity": "warning",
                       "playbook_step": "validate", "container.id": "abc"});
        let l = labels(v.as_object().unwrap(), "n");
        assert!(!l.contains_key("namespace") && !l.contains_key("workload"), "{l:?}");
        assert_eq!(l["alertname"], "ContainerShellSpawned");
    }

    #[test]
    fn target_parsing() {
        let t = AlertmanagerUrl::parse("http://127.0.0.1:9093/").unwrap();
        assert_eq!((t.authority.as_str(), t.path.as_str(), t.https), ("127.0.0.1:9093", "/api/v2/alerts", false));
        assert_eq!(t.label, "127.0.0.1:9093");
        let t = AlertmanagerUrl::parse("http://am.monitoring/prefix").unwrap();
        assert_eq!((t.authority.as_str(), t.path.as_str()), ("am.monitoring:80", "/prefix/api/v2/alerts"));
        assert_eq!(t.label, "am.monitoring:80/prefix");
        let t = AlertmanagerUrl::parse("https://am-0.monitoring").unwrap();
        assert_eq!((t.authority.as_str(), t.https), ("am-0.monitoring:443", true));
        let t = AlertmanagerUrl::parse("https://[::1]:9093").unwrap();
        assert_eq!(t.label, "[::1]:9093");
        for bad in ["ftp://am:9093", "am:9093", "http://user:pw@am:9093", "http://am:9093/?x=1", "http:///x"] {
            assert!(AlertmanagerUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
