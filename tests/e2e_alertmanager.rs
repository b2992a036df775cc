//! End to end: real drift in a real container -> the agent -> a real
//! Alertmanager (Debian's prometheus-alertmanager) through its v2 API; over
//! HTTPS with a client certificate and basic auth (Alertmanager's own TLS), a
//! wrong CA and a wrong password; several URLs (every alert to each, one that
//! never answers delays none of the others; bearer token and X-Scope-OrgID
//! seen by a TLS proxy in front of one); and an Alertmanager that is down:
//! retries, a bounded queue, counted failures and drops, and detection goes on.
//!
//! Run with: DRIFTWATCH_PRIVILEGED_TESTS=1 cargo test --test e2e_alertmanager
mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::{
    RunSpec,
    agent::Agent,
    alertmanager::{Alertmanager, WebTls},
    otlp::config_file,
    tls::{Handshake, HttpsProxy, Pki},
};

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn finding_becomes_alert_with_labels_and_annotations() {
    if !support::privileged() {
        return;
    }
    let am = Alertmanager::start();
    let cfg = config_file(
        "am-push",
        &format!(
            "alertmanager:\n  url: {}\n  group_window_ms: 300\n  runbook_base_url: https://example.test/runbooks\n  generator_url: http://driftwatch.test/metrics\n",
            am.url()
        ),
    );
    let agent = Agent::start(&["--config", cfg.to_str().unwrap()]);
    let c = support::containerd().run(RunSpec::sleeper());
    c.exec_ok(&["/bin/cp", "/bin/busybox", "/tmp/busybox"]);
    c.exec_ok(&["/tmp/busybox", "true"]);
    let f = agent.wait_for("dropped binary", |f| f["container.id"] == c.id.as_str() && f["kind"] == "binary");
    let ours = |a: &Value, alertname: &str| {
        a["labels"]["container_id"] == c.id.as_str() && a["labels"]["alertname"] == alertname
    };
    let a = am.wait_for("the binary alert", Duration::from_secs(15), |a| ours(a, "ContainerDriftBinary"));
    let l = &a["labels"];
    assert_eq!(l["severity"], "critical");
    assert_eq!(l["kind"], "binary");
    assert_eq!(l["rule"], "exec_new_binary");
    assert_eq!(l["playbook_step"], "isolate");
    assert_eq!(l["mitre"], "T1105", "the rule's ATT&CK technique ids");
    assert!(l["node"].as_str().is_some_and(|n| !n.is_empty()), "{a:#}");
    // Kubernetes metadata labels appear exactly when the finding carries them.
    for (label, key) in
        [("namespace", "k8s.namespace.name"), ("container", "k8s.container.name"), ("pod", "k8s.pod.name")]
    {
        assert_eq!(
            l.get(label).is_some(),
            f.get(key).is_some_and(|v| v.as_str().is_some_and(|s| !s.is_empty())),
            "{a:#}"
        );
    }
    let an = &a["annotations"];
    assert_eq!(an["runbook_url"], "https://example.test/runbooks/ContainerDriftBinary.md");
    assert_eq!(an["summary"], f["message"]);
    assert_eq!(an["count"], "1");
    let evidence: Value = serde_json::from_str(an["evidence"].as_str().unwrap()).unwrap();
    assert_eq!(evidence, f, "the evidence annotation is the JSON finding");
    assert!(an["description"].as_str().unwrap().contains("/tmp/busybox"), "{a:#}");
    assert_eq!(a["generatorURL"], "http://driftwatch.test/metrics");
    assert_eq!(a["status"]["state"], "active", "{a:#}");
    // startsAt is the kernel time of the finding (Alertmanager keeps ms precision).
    assert_eq!(a["startsAt"].as_str().unwrap()[..19], f["time"].as_str().unwrap()[..19]);

    // A storm of one rule in one container: one alert, with a count.
    c.exec_ok(&["/bin/sh", "-c", "i=0; while [ $i -lt 50 ]; do /tmp/busybox true; i=$((i+1)); done"]);
    let a = am.wait_for("the grouped alert", Duration::from_secs(15), |a| {
        ours(a, "ContainerDriftBinary")
            && a["annotations"]["count"].as_str().and_then(|s| s.parse::<u64>().ok()) >= Some(51)
    });
    assert_eq!(a["labels"]["rule"], "exec_new_binary");
    let same: Vec<Value> = am.alerts().into_iter().filter(|a| ours(a, "ContainerDriftBinary")).collect();
    assert_eq!(same.len(), 1, "one alert per (alertname, container, rule): {same:#?}");
    let sent = agent.metric("driftwatch_alertmanager_alerts_total{result=\"sent\"}").unwrap();
    assert!(sent < 40.0, "a storm is coalesced, not one POST per finding: sent {sent}");

    // A shell: its own alertname.
    c.exec_ok(&["/bin/sh", "-c", ": am-shell"]);
    let a = am.wait_for("the shell alert", Duration::from_secs(15), |a| ours(a, "ContainerShellSpawned"));
    assert_eq!(a["labels"]["severity"], "warning");
    assert_eq!(a["labels"]["playbook_step"], "validate");
    assert_eq!(agent.metric("driftwatch_alertmanager_alerts_total{result=\"failed\"}"), Some(0.0));
    assert_eq!(agent.metric("driftwatch_alertmanager_alerts_total{result=\"dropped\"}"), Some(0.0));
    assert!(agent.metric("driftwatch_alertmanager_requests_total{result=\"ok\"}").unwrap() >= 2.0);
}

#[test]
fn alertmanager_down_retries_bounds_and_counts() {
    if !support::privileged() {
        return;
    }
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let cfg = config_file(
        "am-down",
        &format!(
            "alertmanager:\n  url: http://{dead}\n  queue_size: 4\n  max_retries: 3\n  retry_initial_ms: 1000\n  retry_max_ms: 2000\n  timeout_ms: 300\n  group_window_ms: 100\n"
        ),
    );
    let agent = Agent::start(&["--config", cfg.to_str().unwrap()]);
    let m = |s: &str| agent.metric(s).unwrap_or_else(|| panic!("no {s} in {}", agent.metrics()));
    // Eight different containers: eight groups for a queue of four.
    let cs: Vec<support::Container> = (0..8).map(|_| support::containerd().run(RunSpec::sleeper())).collect();
    for c in &cs {
        c.exec_ok(&["/bin/sh", "-c", ": am-down"]);
    }
    for c in &cs {
        agent.wait_for("shell", |f| f["container.id"] == c.id.as_str() && f["kind"] == "shell");
    }
    wait_until("retries exhausted", Duration::from_secs(40), || {
        m("driftwatch_alertmanager_alerts_total{result=\"failed\"}") > 0.0
            && m("driftwatch_alertmanager_queued_alerts") == 0.0
    });
    let errors = m("driftwatch_alertmanager_requests_total{result=\"error\"}");
    assert!(errors >= 4.0, "the first POST and its 3 retries: {errors}");
    assert_eq!(m("driftwatch_alertmanager_requests_total{result=\"ok\"}"), 0.0);
    assert_eq!(m("driftwatch_alertmanager_alerts_total{result=\"sent\"}"), 0.0);
    assert!(m("driftwatch_alertmanager_alerts_total{result=\"dropped\"}") > 0.0, "{}", agent.metrics());
    eprintln!(
        "alertmanager down: requests failed {errors}, alerts failed {}, dropped {}",
        m("driftwatch_alertmanager_alerts_total{result=\"failed\"}"),
        m("driftwatch_alertmanager_alerts_total{result=\"dropped\"}")
    );
    // Detection goes on.
    cs[0].exec_ok(&["/usr/bin/memexec", "/bin/busybox", "true"]);
    agent.wait_for("memfd", |f| f["container.id"] == cs[0].id.as_str() && f["rule"] == "exec_fileless_memfd");
}

const BASIC_USER: &str = "driftwatch";
const BASIC_PASSWORD: &str = "driftwatch-test-password";
/// bcrypt (cost 5) of BASIC_PASSWORD, for Alertmanager's `basic_auth_users`.
const BASIC_HASH: &str = "$2b$05$abcdefghijklmnopqrstuug2cSox4BYAfhzNjM47fmOYL/FOck60m";

fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// `driftwatch_alertmanager_target_<what>_total{target,result}` of one target.
fn target_metric(agent: &Agent, what: &str, target: &str, result: &str) -> f64 {
    agent
        .metric(&format!("driftwatch_alertmanager_target_{what}_total{{target=\"{target}\",result=\"{result}\"}}"))
        .unwrap_or_else(|| panic!("no {what} series for {target} in\n{}", agent.metrics()))
}

/// HTTPS to Alertmanager's own TLS (exporter-toolkit's web config) requiring
/// a client certificate and basic auth: the alert arrives with the configured
/// CA, client certificate and password file. The password file is read at
/// every POST: a wrong one is a 401, not retried, counted as failed. A wrong
/// CA fails the handshake: every attempt is counted, the alert given up.
#[test]
fn https_with_client_certificate_and_basic_auth_to_a_real_alertmanager() {
    if !support::privileged() {
        return;
    }
    let pki = Pki::new("am-tls");
    let other = Pki::new("am-other");
    let am = Alertmanager::start_tls(WebTls {
        pki: &pki,
        require_client_cert: true,
        basic_auth: Some((BASIC_USER, BASIC_PASSWORD, BASIC_HASH)),
    });
    let password = pki.dir.join("password");
    std::fs::write(&password, format!("{BASIC_PASSWORD}\n")).unwrap();
    let target = format!("127.0.0.1:{}", am.addr.port());
    let config = |name: &str, ca: &std::path::Path| {
        config_file(
            name,
            &format!(
                "alertmanager:\n  url: {}\n  group_window_ms: 300\n  max_retries: 1\n  retry_initial_ms: 200\n  timeout_ms: 2000\n\
                 \x20 tls:\n    ca_file: {}\n    cert_file: {}\n    key_file: {}\n\
                 \x20 basic_auth:\n    username: {BASIC_USER}\n    password_file: {}\n",
                am.url(),
                path(ca),
                path(&pki.client_cert),
                path(&pki.client_key),
                path(&password)
            ),
        )
    };
    let cfg = config("am-tls", &pki.ca);
    let agent = Agent::start(&["--config", cfg.to_str().unwrap()]);
    let c = support::containerd().run(RunSpec::sleeper());
    c.exec_ok(&["/bin/sh", "-c", ": am-tls"]);
    let ours = |a: &Value, alertname: &str| {
        a["labels"]["container_id"] == c.id.as_str() && a["labels"]["alertname"] == alertname
    };
    let a = am.wait_for("the shell alert over HTTPS", Duration::from_secs(15), |a| ours(a, "ContainerShellSpawned"));
    assert_eq!(a["labels"]["rule"], "shell_in_container");
    assert!(target_metric(&agent, "requests", &target, "ok") >= 1.0);
    assert!(target_metric(&agent, "alerts", &target, "sent") >= 1.0);
    assert!(agent.metric("driftwatch_alertmanager_requests_total{result=\"ok\"}").unwrap() >= 1.0);

    // The password file changes: the next POST uses it, Alertmanager says 401.
    std::fs::write(&password, "not-the-password\n").unwrap();
    c.exec_ok(&["/bin/cp", "/bin/busybox", "/tmp/busybox"]);
    c.exec_ok(&["/tmp/busybox", "true"]);
    agent.wait_for("dropped binary", |f| f["container.id"] == c.id.as_str() && f["kind"] == "binary");
    wait_until("the rejected alert counted", Duration::from_secs(15), || {
        target_metric(&agent, "alerts", &target, "failed") >= 1.0
    });
    assert!(agent.stderr().contains("401"), "{}", agent.stderr());
    assert!(!am.alerts().iter().any(|a| ours(a, "ContainerDriftBinary")), "a 401 delivers nothing");
    drop(agent);

    // A CA that did not sign Alertmanager's certificate: the handshake fails,
    // every attempt is counted, and the alert is given up, not dropped silently.
    std::fs::write(&password, format!("{BASIC_PASSWORD}\n")).unwrap();
    let cfg = config("am-wrong-ca", &other.ca);
    let agent = Agent::start(&["--config", cfg.to_str().unwrap()]);
    let c2 = support::containerd().run(RunSpec::sleeper());
    c2.exec_ok(&["/bin/sh", "-c", ": am-wrong-ca"]);
    agent.wait_for("shell", |f| f["container.id"] == c2.id.as_str() && f["kind"] == "shell");
    wait_until("the untrusted Alertmanager counted", Duration::from_secs(20), || {
        target_metric(&agent, "alerts", &target, "failed") >= 1.0
    });
    assert!(target_metric(&agent, "requests", &target, "error") >= 2.0, "the POST and its retry");
    assert_eq!(target_metric(&agent, "requests", &target, "ok"), 0.0);
    assert_eq!(agent.metric("driftwatch_alertmanager_alerts_total{result=\"sent\"}"), Some(0.0));
    let err = agent.stderr();
    assert!(err.contains("UnknownIssuer") || err.contains("invalid peer certificate"), "the cause is logged:\n{err}");
    assert!(!am.alerts().iter().any(|a| a["labels"]["container_id"] == c2.id.as_str()));
}

/// Three URLs: one that accepts connections and never answers (listed first),
/// a real Alertmanager over plain HTTP, and a second real Alertmanager behind
/// a TLS proxy that records the headers. Both Alertmanagers get the alert well
/// within the dead one's timeout; each URL has its own counters, and the totals
/// are their sum. The bearer token is re-read: a rotated token is sent next.
#[test]
fn every_alert_goes_to_every_url_and_a_dead_one_delays_no_other() {
    if !support::privileged() {
        return;
    }
    let pki = Pki::new("am-ha");
    let am1 = Alertmanager::start();
    let am2 = Alertmanager::start();
    let proxy = HttpsProxy::start(am2.addr, pki.server_config(false, &[b"http/1.1"]));
    // Never accepted: connections complete in the backlog, requests are never answered.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_addr = hole.local_addr().unwrap();
    let token = pki.dir.join("token");
    std::fs::write(&token, "token-1\n").unwrap();
    let timeout_ms = 6000;
    let cfg = config_file(
        "am-ha",
        &format!(
            "alertmanager:\n  urls:\n    - http://{hole_addr}\n    - {}\n    - {}\n  timeout_ms: {timeout_ms}\n  group_window_ms: 300\n\
             \x20 retry_initial_ms: 200\n  tls:\n    ca_file: {}\n  bearer_token_file: {}\n  headers:\n    X-Scope-OrgID: tenant-1\n",
            proxy.url(),
            am1.url(),
            path(&pki.ca),
            path(&token)
        ),
    );
    let agent = Agent::start(&["--config", cfg.to_str().unwrap()]);
    let (t_hole, t_proxy, t_am1) =
        (hole_addr.to_string(), format!("127.0.0.1:{}", proxy.addr.port()), format!("127.0.0.1:{}", am1.addr.port()));
    let c = support::containerd().run(RunSpec::sleeper());
    c.exec_ok(&["/bin/sh", "-c", ": am-ha"]);
    agent.wait_for("shell", |f| f["container.id"] == c.id.as_str() && f["kind"] == "shell");
    let t0 = Instant::now();
    let ours = |a: &Value, alertname: &str| {
        a["labels"]["container_id"] == c.id.as_str() && a["labels"]["alertname"] == alertname
    };
    let a1 = am1
        .wait_for("the alert at the first Alertmanager", Duration::from_secs(15), |a| ours(a, "ContainerShellSpawned"));
    let a2 = am2.wait_for("the alert at the second Alertmanager", Duration::from_secs(15), |a| {
        ours(a, "ContainerShellSpawned")
    });
    let took = t0.elapsed();
    assert_eq!(a1["labels"], a2["labels"], "the same alert at both");
    assert!(
        took < Duration::from_millis(timeout_ms / 2),
        "both Alertmanagers within {took:?}, not after the dead URL's {timeout_ms} ms timeout"
    );
    // What the TLS proxy saw: the token and the tenant header, over TLS.
    let seen = proxy.requests();
    let post = seen.iter().find(|r| r.method == "POST").unwrap_or_else(|| panic!("{seen:#?}"));
    assert_eq!(post.path, "/api/v2/alerts");
    assert_eq!(post.headers.get("authorization").map(String::as_str), Some("Bearer token-1"), "{post:#?}");
    assert_eq!(post.headers.get("x-scope-orgid").map(String::as_str), Some("tenant-1"), "{post:#?}");
    assert!(matches!(proxy.handshakes().first(), Some(Handshake::Done { client_cert: None })));
    // Per-URL counters: the dead one fails on its own.
    wait_until("the dead URL's timeout counted", Duration::from_secs(15), || {
        target_metric(&agent, "requests", &t_hole, "error") >= 1.0
    });
    assert_eq!(target_metric(&agent, "requests", &t_hole, "ok"), 0.0);
    assert_eq!(target_metric(&agent, "alerts", &t_hole, "sent"), 0.0);
    for t in [&t_proxy, &t_am1] {
        assert!(target_metric(&agent, "requests", t, "ok") >= 1.0, "{t}");
        assert!(target_metric(&agent, "alerts", t, "sent") >= 1.0, "{t}");
    }
    // The totals are the sums over the targets (read from one scrape; the
    // dead URL's retries keep counting meanwhile).
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.parse().ok()))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    wait_until("totals equal to the sums over the targets", Duration::from_secs(5), || {
        let m = agent.metrics();
        [("requests", "ok"), ("requests", "error"), ("alerts", "sent"), ("alerts", "failed")].iter().all(
            |(what, result)| {
                let sum: f64 = [&t_hole, &t_proxy, &t_am1]
                    .iter()
                    .map(|t| {
                        value(
                            &m,
                            &format!(
                                "driftwatch_alertmanager_target_{what}_total{{target=\"{t}\",result=\"{result}\"}}"
                            ),
                        )
                    })
                    .sum();
                sum == value(&m, &format!("driftwatch_alertmanager_{what}_total{{result=\"{result}\"}}"))
            },
        )
    });
    // A rotated token is read at the next POST.
    std::fs::write(&token, "token-2\n").unwrap();
    c.exec_ok(&["/usr/bin/memexec", "/bin/busybox", "true"]);
    am2.wait_for("the memfd alert", Duration::from_secs(15), |a| ours(a, "ContainerDriftBinary"));
    assert!(
        proxy.requests().iter().any(|r| r.headers.get("authorization").map(String::as_str) == Some("Bearer token-2")),
        "{:#?}",
        proxy.requests()
    );
    drop(hole);
}
