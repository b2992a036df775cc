//! End to end: the drift policy on a real kernel with real CRI pods.
//! Approvals scope findings (namespace, executable, kind), count what they
//! hide, expire, and can be sent as info; the policy reloads on SIGHUP and
//! on a file change while findings stream (a bad file keeps the running
//! policy and names its line); learn mode learns a workload's drift, which
//! monitor mode then approves as `learned`.
mod support;

use std::time::{Duration, Instant};
use support::{
    agent::Agent,
    cri::{CriContainer, Pod, PodSpec},
};

fn endpoint() -> String {
    format!("unix://{}", support::containerd().address.display())
}

fn run(c: &CriContainer, cmd: &[&str]) {
    let (code, _, err) = c.exec_sync(cmd).unwrap_or_else(|e| panic!("ExecSync {cmd:?}: {e}"));
    assert_eq!(code, 0, "{cmd:?}: {err}");
}

fn wait_until(what: &str, agent: &Agent, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "{what} not seen in 20 s; stderr:\n{}", agent.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn binaries(agent: &Agent, c: &CriContainer, path: &str) -> usize {
    agent.findings_of(&c.id).iter().filter(|f| f["kind"] == "binary" && f["process.executable.path"] == path).count()
}

const POLICY: &str = "kubernetes:\n  enabled: false\npolicy:\n  approvals:\n\
    \x20   - name: tmp-tools\n      match: {namespace: policy-a, kind: binary, executable: '/tmp/tools/*'}\n\
    \x20     reason: build tools of the policy-a team\n\
    \x20   - name: old-waiver\n      match: {namespace: policy-b, executable: /tmp/other/busybox}\n\
    \x20     reason: expired waiver\n      expires: 2020-01-31\n";

#[test]
fn approvals_scope_count_expire_and_reload() {
    if !support::privileged() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("driftwatch-e2e-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("policy.yaml");
    std::fs::write(&cfg, POLICY).unwrap();
    let agent = Agent::start(&["--runtime-endpoint", &endpoint(), "--config", cfg.to_str().unwrap()]);
    let sock = &support::containerd().address;
    let mut pa = Pod::run(sock, PodSpec::new("alpha-0", "alpha").namespace("policy-a"));
    let mut pb = Pod::run(sock, PodSpec::new("beta-0", "beta").namespace("policy-b"));
    let a = pa.start_container("app", &["/bin/sleep", "600"]);
    let b = pb.start_container("app", &["/bin/sleep", "600"]);
    for c in [&a, &b] {
        run(c, &["/bin/mkdir", "-p", "/tmp/tools", "/tmp/other"]);
        run(c, &["/bin/cp", "/bin/busybox", "/tmp/tools/busybox"]);
        run(c, &["/bin/cp", "/bin/busybox", "/tmp/other/busybox"]);
    }
    // In scope: approved. Out of scope (another namespace, another executable): findings.
    for c in [&a, &b] {
        run(c, &["/tmp/tools/busybox", "true"]);
        run(c, &["/tmp/other/busybox", "true"]);
    }
    agent.wait_for("b tool1", |f| {
        f["container.id"] == b.id.as_str() && f["process.executable.path"] == "/tmp/tools/busybox"
    });
    agent.wait_for("a other", |f| {
        f["container.id"] == a.id.as_str() && f["process.executable.path"] == "/tmp/other/busybox"
    });
    // The expired waiver does not hide b's /tmp/other, and says so once.
    agent.wait_for("b other", |f| {
        f["container.id"] == b.id.as_str() && f["process.executable.path"] == "/tmp/other/busybox"
    });
    let approved =
        "driftwatch_findings_approved_total{kind=\"binary\",rule=\"exec_new_binary\",approval=\"tmp-tools\"}";
    wait_until("approved counter", &agent, || agent.metric(approved) == Some(1.0));
    assert_eq!(binaries(&agent, &a, "/tmp/tools/busybox"), 0, "approved: {:#?}", agent.findings_of(&a.id));

    // A good reload by file change: approved findings now go out as info.
    let with_emit = POLICY.replace("policy:\n", "policy:\n  emit_approved: true\n");
    std::fs::write(&cfg, &with_emit).unwrap();
    wait_until("reload", &agent, || agent.stderr().contains("config reloaded"));
    assert!(agent.stderr().contains("emit_approved: true"), "logs what changed: {}", agent.stderr());
    run(&a, &["/tmp/tools/busybox", "true"]);
    let f = agent.wait_for("approved as info", |f| {
        f["container.id"] == a.id.as_str() && f["process.executable.path"] == "/tmp/tools/busybox"
    });
    assert_eq!(f["driftwatch.approval"], "tmp-tools", "{f:#}");
    assert_eq!(f["severity"], "info");

    // A bad reload (SIGHUP) keeps the running policy and names file, line and field;
    // findings keep streaming across it and none is lost.
    let bad = with_emit.replace("      reason: build tools of the policy-a team\n", "");
    std::fs::write(&cfg, &bad).unwrap();
    // SAFETY: kill(2) on the agent's pid.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    for _ in 0..20 {
        run(&b, &["/tmp/other/busybox", "true"]);
    }
    wait_until("rejected reload", &agent, || agent.stderr().contains("config reload rejected"));
    let line = agent.stderr().lines().find(|l| l.contains("config reload rejected")).unwrap().to_string();
    assert!(line.contains(cfg.to_str().unwrap()) && line.contains("approvals[0]") && line.contains("reason"), "{line}");
    let failures = "driftwatch_config_reload_failures_total";
    assert!(agent.metric(failures).unwrap_or(0.0) >= 1.0, "{}", agent.metrics());
    run(&a, &["/tmp/tools/busybox", "true"]);
    wait_until("old policy still applies", &agent, || {
        agent.findings_of(&a.id).iter().filter(|f| f["driftwatch.approval"] == "tmp-tools").count() == 2
    });
    wait_until("no finding lost", &agent, || binaries(&agent, &b, "/tmp/other/busybox") == 21);
    // The expired waiver was logged once, though it matched 22 findings.
    let expired = agent.stderr().lines().filter(|l| l.contains("old-waiver") && l.contains("expired")).count();
    assert_eq!(expired, 1, "{}", agent.stderr());
    // Restoring a good file reloads again.
    std::fs::write(&cfg, POLICY).unwrap();
    wait_until("second reload", &agent, || agent.stderr().matches("config reloaded").count() >= 2);
    drop(pa);
    drop(pb);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn learn_mode_learns_then_monitor_approves_what_was_learned() {
    if !support::privileged() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("driftwatch-e2e-learn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("learn.yaml");
    let learn = format!(
        "kubernetes:\n  enabled: false\nrules:\n  network:\n    state_dir: {}\npolicy:\n  modes:\n    - match: {{namespace: policy-learn}}\n      mode: learn\n",
        dir.display()
    );
    std::fs::write(&cfg, &learn).unwrap();
    let agent = Agent::start(&["--runtime-endpoint", &endpoint(), "--config", cfg.to_str().unwrap()]);
    let sock = &support::containerd().address;
    // The annotation chooses learn too, for a pod outside the rule's namespace.
    let mut p = Pod::run(sock, PodSpec::new("trainee-0", "trainee").namespace("policy-learn"));
    let mut q = Pod::run(
        sock,
        PodSpec::new("annotated-0", "annotated").namespace("policy-other").annotation("driftwatch.io/mode", "learn"),
    );
    let c = p.start_container("app", support::cri::TRIGGER_LOOP);
    let d = q.start_container("app", support::cri::TRIGGER_LOOP);
    let setup = "mkdir -p /tmp/learned /tmp/unlearned && cp /bin/busybox /tmp/learned/busybox && \
                 cp /bin/busybox /tmp/unlearned/busybox";
    // Learned: what the container's own processes run.
    assert_eq!(c.run_in_tree(&format!("{setup} && /tmp/learned/busybox true")), 0);
    assert_eq!(d.run_in_tree(&format!("{setup} && /tmp/learned/busybox true")), 0);
    let learned = "driftwatch_findings_learned_total{kind=\"binary\",rule=\"exec_new_binary\"}";
    wait_until("learned", &agent, || agent.metric(learned) == Some(2.0));
    wait_until("mode gauge", &agent, || agent.metric("driftwatch_workload_mode{mode=\"learn\"}") >= Some(2.0));
    assert_eq!(binaries(&agent, &c, "/tmp/learned/busybox") + binaries(&agent, &d, "/tmp/learned/busybox"), 0);
    // Never learned: an exec session's drift is reported even in learn mode.
    run(&c, &["/tmp/unlearned/busybox", "true"]);
    let f = agent.wait_for("exec session in learn mode", |f| {
        f["container.id"] == c.id.as_str() && f["process.executable.path"] == "/tmp/unlearned/busybox"
    });
    assert_eq!(f["driftwatch.process.origin"], "exec_session", "{f:#}");
    // Monitor now (the rule removed): what was learned is approved, the rest is drift.
    std::fs::write(&cfg, learn.replace("mode: learn", "mode: monitor")).unwrap();
    wait_until("reload", &agent, || agent.stderr().contains("config reloaded"));
    assert_eq!(c.run_in_tree("/tmp/learned/busybox true"), 0);
    assert_eq!(c.run_in_tree("/tmp/unlearned/busybox true"), 0);
    wait_until("new drift from the container's tree", &agent, || binaries(&agent, &c, "/tmp/unlearned/busybox") == 2);
    let by_learned =
        "driftwatch_findings_approved_total{kind=\"binary\",rule=\"exec_new_binary\",approval=\"learned\"}";
    wait_until("approved as learned", &agent, || agent.metric(by_learned) == Some(1.0));
    assert_eq!(binaries(&agent, &c, "/tmp/learned/busybox"), 0);
    // What the container learned does not approve an exec session running it.
    run(&c, &["/tmp/learned/busybox", "true"]);
    let f = agent.wait_for("exec session of a learned binary", |f| {
        f["container.id"] == c.id.as_str() && f["process.executable.path"] == "/tmp/learned/busybox"
    });
    assert_eq!(f["driftwatch.process.origin"], "exec_session", "{f:#}");
    drop(agent);
    // Saved at shutdown, in the state directory.
    let saved = std::fs::read_to_string(dir.join("learned.json")).expect("learned.json saved");
    assert!(saved.contains("exec_new_binary|/tmp/learned/busybox"), "{saved}");
    drop(p);
    drop(q);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Exec probes and lifecycle hooks are approved by construction, from the
/// pod spec. No apiserver runs here: the agent reads a real Pod object from a
/// local server (tests/support/kubeapi.rs) that matches the CRI pod.
#[test]
fn probe_and_hook_commands_from_the_pod_spec_are_approved() {
    if !support::privileged() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let node = "node-e2e-policy";
    let mut object =
        support::kubeapi::pod("policy-probe", "probed-0", node, None, serde_json::json!({"app": "probed"}));
    object["spec"]["containers"] = serde_json::json!([{
        "name": "app", "image": "localhost/driftwatch-test:1",
        "readinessProbe": {"exec": {"command": ["/bin/sh", "-c", "echo ready"]}},
        "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "echo bye"]}}}
    }]);
    object["status"] = serde_json::json!({"phase": "Running"});
    let state = support::kubeapi::State { pods: vec![object], ..Default::default() };
    let api = rt.block_on(support::kubeapi::FakeApi::start(state));
    let dir = std::env::temp_dir().join(format!("driftwatch-e2e-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("probe.yaml");
    std::fs::write(&cfg, format!("kubernetes:\n  enabled: true\n  kubeconfig: {}\n", api.kubeconfig.display()))
        .unwrap();
    let agent = Agent::start_with_env(
        &["--runtime-endpoint", &endpoint(), "--config", cfg.to_str().unwrap()],
        &[("NODE_NAME", node), ("RUST_LOG", "info")],
    );
    let sock = &support::containerd().address;
    let mut p = Pod::run(sock, PodSpec::new("probed-0", "probed").namespace("policy-probe"));
    let c = p.start_container("app", &["/bin/sleep", "600"]);
    run(&c, &["/bin/sh", "-c", "echo ready"]);
    run(&c, &["/bin/sh", "-c", "echo bye"]);
    run(&c, &["/bin/sh", "-c", "echo other"]);
    let f = agent.wait_for("the other shell", |f| f["container.id"] == c.id.as_str() && f["kind"] == "shell");
    assert_eq!(f["process.command_args"], serde_json::json!(["/bin/sh", "-c", "echo other"]), "{f:#}");
    for approval in ["probe", "lifecycle_hook"] {
        let series = format!(
            "driftwatch_findings_approved_total{{kind=\"shell\",rule=\"shell_in_container\",approval=\"{approval}\"}}"
        );
        wait_until(&series, &agent, || agent.metric(&series) == Some(1.0));
    }
    std::thread::sleep(Duration::from_millis(500));
    let shells = agent.findings_of(&c.id).into_iter().filter(|f| f["kind"] == "shell").count();
    assert_eq!(shells, 1, "{:#?}", agent.findings_of(&c.id));
    drop(p);
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
