//! End to end: a real Prometheus (Debian's package) scrapes a real agent and
//! evaluates the canonical rules file (alerts/driftwatch-rules.yaml); real drift
//! in a real pod (made through CRI, so the series carry namespace, workload and
//! container) makes the rules fire, and a real Alertmanager receives the alerts
//! with the right playbook_step (asserted through Alertmanager's API).
//!
//! Then every query of every dashboard (dashboards/*.json) runs against that
//! Prometheus: none may fail, and none may name a metric the agent does not
//! export, except the allowlist below.
mod support;

use serde_json::Value;
use std::{
    collections::BTreeSet,
    path::Path,
    time::{Duration, Instant},
};
use support::{
    agent::Agent,
    alertmanager::Alertmanager,
    cri::{Pod, PodSpec},
    prometheus::Prometheus,
};

/// Metrics the dashboards may query that the agent does not export, and why.
const ALLOWED_FOREIGN_METRICS: &[(&str, &str)] = &[
    // The kubelet's cAdvisor (scraped by kube-prometheus-stack): the agent exports
    // no process_* metrics, so CPU and memory of the agent container come from here.
    ("container_cpu_usage_seconds_total", "cAdvisor: agent CPU"),
    ("container_memory_working_set_bytes", "cAdvisor: agent memory"),
    ("container_memory_rss", "cAdvisor: agent RSS"),
    // Prometheus's own series for alerting rules (the playbook status panels).
    ("ALERTS", "Prometheus: firing alerts of the driftwatch rules"),
    // The responder (`driftwatch respond`, a Deployment of its own): the agent never
    // exports them (the overview's Response row).
    ("driftwatch_response_actions_total", "driftwatch respond: actions by action, result"),
    ("driftwatch_response_webhook_requests_total", "driftwatch respond: webhook requests by code"),
    ("driftwatch_response_webhook_rejected_total", "driftwatch respond: webhook rejections by reason"),
];

const PROMQL_WORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    // Aggregation operators (may be followed by `by (...)` instead of a parenthesis).
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

fn repo(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// Metric names a PromQL expression selects (a small tokenizer: strings, label
/// matchers, ranges and grouping label lists removed; calls and keywords skipped).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut s = String::new();
    let mut chars = expr.chars().peekable();
    // Drop string literals, {...} and [...].
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                for d in chars.by_ref() {
                    if d == c {
                        break;
                    }
                }
            }
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            '[' => depth_bracket += 1,
            ']' => depth_bracket -= 1,
            _ if depth_brace > 0 || depth_bracket > 0 => {}
            _ => s.push(c),
        }
    }
    // Tokenize; drop label lists after grouping keywords.
    let b = s.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            let tok = &s[start..i];
            let mut j = i;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            let call = j < b.len() && b[j] == b'(';
            if ["by", "without", "on", "ignoring", "group_left", "group_right"].contains(&tok) && call {
                while j < b.len() && b[j] != b')' {
                    j += 1;
                }
                i = j + 1;
                continue;
            }
            if !call && !PROMQL_WORDS.contains(&tok) {
                names.insert(tok.to_string());
            }
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Every query of a dashboard: panel targets and `label_values(<selector>, label)`
/// variables, with Grafana's variables replaced by values Prometheus accepts.
fn dashboard_queries(db: &Value) -> Vec<(String, String)> {
    let subst = |e: &str| {
        e.replace("$__rate_interval", "1m")
            .replace("$__interval", "15s")
            .replace("$__range", "1h")
            .replace("$namespace", ".*")
            .replace("$workload", ".*")
            .replace("$cluster", ".*")
            .replace("$job", ".*")
            .replace("$node", ".*")
    };
    let mut out = Vec::new();
    for p in db["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            out.push((format!("panel {:?}", p["title"].as_str().unwrap()), subst(t["expr"].as_str().unwrap())));
        }
    }
    for v in db["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            let q = v["query"]["query"].as_str().or(v["query"].as_str()).unwrap();
            let inner = q.strip_prefix("label_values(").and_then(|r| r.rsplit_once(',')).map(|(sel, _)| sel.trim());
            let sel = inner.unwrap_or_else(|| {
                panic!("variable {}: only label_values(selector, label) is supported: {q}", v["name"])
            });
            out.push((format!("variable {}", v["name"]), subst(sel)));
        }
    }
    out
}

/// Sample names in the agent's exposition (counters' _total, histograms'
/// _bucket/_sum/_count, info's _info included).
fn exported_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

/// Families the agent registers (`registry.register("name", ...)` in src/) whose
/// series only appear once something happened (no series, no exposition):
/// `driftwatch_<name>` and its counter / histogram sample names.
fn registered_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut stack = vec![repo("src")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for (i, _) in text.match_indices(".register(") {
                    let rest = text[i + ".register(".len()..].trim_start();
                    if let Some(lit) = rest.strip_prefix('"').and_then(|r| r.split_once('"')).map(|(l, _)| l) {
                        for suffix in ["", "_total", "_bucket", "_sum", "_count", "_info"] {
                            names.insert(format!("driftwatch_{lit}{suffix}"));
                        }
                    }
                }
            }
        }
    }
    names
}

#[test]
fn tokenizer_finds_metric_names() {
    let n = metric_names(
        r#"sum by (namespace, workload) (rate(driftwatch_container_findings_total{namespace=~"a|b"}[5m])) / on (x) group_left (y) foo_bar > 0 unless count(ALERTS{a="sum(x)"}) * 2.5e3"#,
    );
    assert_eq!(n, BTreeSet::from(["driftwatch_container_findings_total".into(), "foo_bar".into(), "ALERTS".into()]));
    assert_eq!(
        metric_names("histogram_quantile(0.99, sum by (le) (rate(x_bucket[1m])))"),
        BTreeSet::from(["x_bucket".into()])
    );
}

#[test]
fn drift_fires_the_rules_and_reaches_alertmanager_with_its_playbook_step() {
    if !support::privileged() {
        return;
    }
    let t0 = Instant::now();
    let am = Alertmanager::start();
    // Every optional sink on, so every metric a dashboard may use is exported:
    // the Alertmanager push (to the same Alertmanager) and OTLP (to a closed port).
    let dir = std::env::temp_dir().join(format!("driftwatch-e2e-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.yaml");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    std::fs::write(
        &cfg,
        format!("alertmanager:\n  url: {}\n  group_window_ms: 1000\notlp:\n  endpoint: http://{closed}\n  timeout_ms: 500\n", am.url()),
    )
    .unwrap();
    let endpoint = format!("unix://{}", support::containerd().address.display());
    let agent = Agent::start(&["--runtime-endpoint", &endpoint, "--config", cfg.to_str().unwrap()]);
    let prom = Prometheus::start(agent.addr, &[&repo("alerts/driftwatch-rules.yaml")], am.addr);
    prom.wait_for(r#"up{job="driftwatch"} == 1"#, Duration::from_secs(20));
    // No drift yet: no drift alert.
    assert!(prom.vector(r#"ALERTS{alertname=~"ContainerDrift.*|ContainerShell.*|ContainerPackage.*"}"#).is_empty());

    let spec = PodSpec::new("checkout-5f7c9d8b4-q8z2x", "checkout")
        .namespace("payments")
        .label("pod-template-hash", "5f7c9d8b4");
    let mut pod = Pod::run(&support::containerd().address, spec);
    let api = pod.start_container("api", &["/bin/sleep", "300"]);
    let (code, _, err) = api.exec_sync(&["/bin/cp", "/bin/busybox", "/tmp/busybox"]).expect("ExecSync cp");
    assert_eq!(code, 0, "{err}");
    let _ = api.exec_sync(&["/tmp/busybox", "true"]).expect("ExecSync drift");
    let _ = api.exec_sync(&["/bin/sh", "-c", "/bin/true; /bin/true"]).expect("ExecSync shell");
    agent.wait_for("binary drift", |f| f["container.id"] == api.id.as_str() && f["kind"] == "binary");
    agent.wait_for("shell", |f| f["container.id"] == api.id.as_str() && f["kind"] == "shell");
    let t_drift = Instant::now();

    // Alerts from the rules carry Prometheus's generatorURL (the agent's own push
    // of the same alert names carries the agent's, and a container_id label).
    let from_rules = |a: &Value, name: &str| {
        a["labels"]["alertname"] == name
            && a["generatorURL"].as_str().unwrap_or("").starts_with(&prom.url())
            && a["labels"]["namespace"] == "payments"
            && a["labels"]["workload"] == "checkout"
            && a["labels"]["container"] == "api"
    };
    let binary = am.wait_for("ContainerDriftBinary from the rules", Duration::from_secs(45), |a| {
        from_rules(a, "ContainerDriftBinary")
    });
    let t_alert = t_drift.elapsed();
    let l = &binary["labels"];
    assert_eq!(l["severity"], "critical", "{binary:#}");
    assert_eq!(l["playbook_step"], "isolate", "{binary:#}");
    assert_eq!(l["kind"], "binary", "{binary:#}");
    assert!(l.get("container_id").is_none(), "the rule's alert is per workload container: {binary:#}");
    let an = &binary["annotations"];
    assert_eq!(
        an["runbook_url"], "https://github.com/driftwatch/driftwatch/blob/main/docs/runbooks/ContainerDriftBinary.md",
        "{binary:#}"
    );
    assert_eq!(an["summary"], "Binary drift in payments/checkout container api", "{binary:#}");
    assert!(an["description"].as_str().unwrap().starts_with("1 running container(s) named api"), "{binary:#}");
    assert_eq!(binary["status"]["state"], "active", "{binary:#}");

    let shell = am.wait_for("ContainerShellSpawned from the rules", Duration::from_secs(30), |a| {
        from_rules(a, "ContainerShellSpawned")
    });
    assert_eq!(shell["labels"]["severity"], "warning", "{shell:#}");
    assert_eq!(shell["labels"]["playbook_step"], "validate", "{shell:#}");

    // The agent's direct push arrived too, with the same alert name and step.
    let pushed = am.wait_for("ContainerDriftBinary pushed by the agent", Duration::from_secs(20), |a| {
        a["labels"]["alertname"] == "ContainerDriftBinary" && a["labels"]["container_id"] == api.id.as_str()
    });
    assert_eq!(pushed["labels"]["playbook_step"], "isolate");

    // The container is alive: no "drift in an exited container", and the agent is healthy.
    let firing: Vec<String> =
        prom.alerts().iter().map(|a| format!("{} {}", a["labels"]["alertname"], a["state"])).collect();
    assert!(!firing.iter().any(|a| a.contains("ContainerDriftExited")), "{firing:?}");
    assert!(
        !firing.iter().any(|a| a.contains("DriftwatchSensorNotAttached") || a.contains("DriftwatchAgent")),
        "{firing:?}"
    );

    // Every dashboard query runs and names only metrics the agent exports.
    let exported = exported_names(&agent.metrics());
    let registered = registered_names();
    assert!(registered.contains("driftwatch_findings_total"), "{registered:?}");
    for m in ["driftwatch_otlp_records_total", "driftwatch_alertmanager_alerts_total", "driftwatch_drifted_containers"]
    {
        assert!(exported.contains(m), "{m} not exported; has {exported:?}");
    }
    let allowed: BTreeSet<&str> = ALLOWED_FOREIGN_METRICS.iter().map(|(m, _)| *m).collect();
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in ["dashboards/driftwatch-overview.json", "dashboards/driftwatch-agent-health.json"] {
        let db: Value = serde_json::from_str(&std::fs::read_to_string(repo(file)).unwrap()).unwrap();
        let queries = dashboard_queries(&db);
        assert!(queries.len() > 5, "{file}: {queries:?}");
        for (what, q) in queries {
            checked += 1;
            if let Err(e) = prom.query(&q) {
                problems.push(format!("{file} {what}: {q}: {e}"));
            }
            let names = metric_names(&q);
            if names.is_empty() {
                problems.push(format!("{file} {what}: no metric found in {q}"));
            }
            for n in names {
                if !exported.contains(&n) && registered.contains(&n) {
                    // Registered, no series yet (e.g. no decode error happened).
                    eprintln!("e2e_alert_rules: {file} {what}: {n}: registered by the agent, no series yet");
                } else if !exported.contains(&n) && !allowed.contains(n.as_str()) {
                    problems.push(format!("{file} {what}: {n} is not exported by the agent (nor allowlisted): {q}"));
                } else if exported.contains(&n) && prom.vector(&format!("count({n})")).is_empty() {
                    problems.push(format!("{file} {what}: {n} is exported but Prometheus has no series of it"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "dashboard queries:\n{}", problems.join("\n"));
    // The overview's table shows the drifted container.
    let table = prom.vector(
        r#"sum by (namespace, workload, container, kind) (driftwatch_drifted_containers{namespace=~".*", workload=~".*"}) > 0"#,
    );
    assert!(
        table.iter().any(|r| r["metric"]["workload"] == "checkout" && r["metric"]["kind"] == "binary"),
        "{table:#?}"
    );
    eprintln!(
        "e2e_alert_rules: alert at Alertmanager {:.1}s after the drift; {checked} dashboard queries checked; total {:.1}s",
        t_alert.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    drop(pod);
    let _ = std::fs::remove_dir_all(&dir);
}
