//! End to end: real drift in a real container -> the agent with
//! `outputs.stdout.format: falco` and `outputs.falcosidekick` -> stdout lines
//! that are Falco events, and the same events POSTed to a falcosidekick
//! stand-in; with the receiver down the agent keeps detecting and writing,
//! and counts every event it could not deliver.
//!
//! Run with: DRIFTWATCH_PRIVILEGED_TESTS=1 cargo test --test e2e_falco
mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::{
    RunSpec,
    agent::Agent,
    falcosidekick::{Mode, Receiver},
    otlp::config_file,
};

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Falco event of container `id`'s rule `rule`.
fn is_event(e: &Value, id: &str, rule: &str) -> bool {
    e["output_fields"]["container.full_id"] == id && e["rule"] == rule
}

#[test]
fn stdout_and_falcosidekick_get_falco_events() {
    if !support::privileged() {
        return;
    }
    let rx = Receiver::start(Mode::Ok);
    let cfg = config_file(
        "falco-out",
        &format!("outputs:\n  stdout:\n    format: falco\n  falcosidekick:\n    url: {}\n", rx.url()),
    );
    let agent = Agent::start(&["--config", cfg.to_str().unwrap()]);
    let c = support::containerd().run(RunSpec::sleeper());
    c.exec_ok(&["/bin/cp", "/bin/busybox", "/tmp/busybox"]);
    c.exec_ok(&["/tmp/busybox", "true"]);
    let e = agent.wait_for("the binary event on stdout", |e| is_event(e, &c.id, "exec_new_binary"));
    assert_eq!(e["source"], "driftwatch");
    assert_eq!(e["priority"], "Critical");
    assert!(e["tags"].as_array().unwrap().contains(&"T1105".into()), "{e:#}");
    let f = &e["output_fields"];
    assert_eq!(f["container.id"], &c.id[..12]);
    assert_eq!(f["proc.exepath"], "/tmp/busybox");
    assert_eq!(f["proc.cmdline"], "busybox true");
    assert!(f["proc.pid"].as_u64().is_some_and(|p| p > 0) && f["evt.time"].as_u64().is_some(), "{e:#}");
    assert!(e["output"].as_str().unwrap().contains("Critical container"), "{e:#}");
    wait_until("the event at falcosidekick", Duration::from_secs(15), || {
        rx.posts().iter().any(|p| is_event(&p.body, &c.id, "exec_new_binary"))
    });
    let posted = rx.posts().into_iter().find(|p| is_event(&p.body, &c.id, "exec_new_binary")).expect("found");
    assert_eq!(posted.path, "/");
    assert_eq!(posted.body, e, "falcosidekick gets the stdout line");
    wait_until("sent counted", Duration::from_secs(10), || {
        agent.metric("driftwatch_falcosidekick_events_total{result=\"sent\"}").unwrap_or(0.0) >= 1.0
    });
    // Every line on stdout is a Falco event.
    for l in agent.findings() {
        assert!(l["output_fields"].is_object() && l["priority"].is_string(), "{l:#}");
    }
}

#[test]
fn falcosidekick_down_costs_counted_events_not_detection() {
    if !support::privileged() {
        return;
    }
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let cfg = config_file(
        "falco-down",
        &format!(
            "outputs:\n  falcosidekick:\n    url: http://{dead}\n    queue_size: 4\n    max_retries: 1\n    retry_initial_ms: 1000\n    retry_max_ms: 1000\n"
        ),
    );
    let agent = Agent::start(&["--config", cfg.to_str().unwrap()]);
    let c = support::containerd().run(RunSpec::sleeper());
    // Each event takes a second to give up (one retry after 1 s): 50 findings
    // overflow a queue of 4 whatever the machine's speed.
    c.exec_ok(&["/bin/cp", "/bin/busybox", "/tmp/bb"]);
    c.exec_ok(&["/bin/sh", "-c", "i=0; while [ $i -lt 50 ]; do /tmp/bb true; i=$((i+1)); done"]);
    let ours = || agent.findings_of(&c.id).iter().filter(|f| f["process.executable.path"] == "/tmp/bb").count();
    wait_until("every finding on stdout (format json)", Duration::from_secs(30), || ours() >= 50);
    let g = |r: &str| agent.metric(&format!("driftwatch_falcosidekick_events_total{{result=\"{r}\"}}")).unwrap();
    let handoff = || agent.metric("driftwatch_userspace_drops_total{queue=\"findings_falcosidekick\"}").unwrap();
    // Read stdout first: a finding counted after it only adds.
    wait_until("every event accounted", Duration::from_secs(60), || {
        let on_stdout = agent.findings().len() as f64;
        g("failed") + g("dropped") + handoff() >= on_stdout
            && agent.metric("driftwatch_falcosidekick_queued_events") == Some(0.0)
    });
    assert_eq!(g("sent"), 0.0);
    assert!(g("failed") >= 1.0 && g("dropped") >= 1.0, "{}", agent.metrics());
    assert!(agent.metric("driftwatch_falcosidekick_requests_total{result=\"error\"}").unwrap() >= 2.0);
    assert_eq!(agent.metric("driftwatch_userspace_drops_total{queue=\"findings_stdout\"}"), Some(0.0));
    // Still detecting, still ready.
    c.exec_ok(&["/bin/sh", "-c", ": still-detecting"]);
    agent.wait_for("a shell afterwards", |f| {
        f["container.id"] == c.id.as_str() && f["process.command_args"].to_string().contains("still-detecting")
    });
    assert_eq!(support::agent::http_get(agent.addr, "/readyz").unwrap().0, 200);
}
