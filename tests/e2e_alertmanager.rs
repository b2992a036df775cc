//! End to end: real drift in a real container -> the agent -> a real
//! Alertmanager (Debian's prometheus-alertmanager) through its v2 API; and an
//! Alertmanager that is down: retries, a bounded queue, counted failures and
//! drops, and detection goes on.
//!
//! Run with: DRIFTWATCH_PRIVILEGED_TESTS=1 cargo test --test e2e_alertmanager
mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::{RunSpec, agent::Agent, alertmanager::Alertmanager, otlp::config_file};

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
