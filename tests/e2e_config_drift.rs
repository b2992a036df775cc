//! End to end: configuration drift in node-only mode. A pod made through CRI
//! exactly as the kubelet makes it, whose container runs the test image by a
//! mutable tag (`localhost/driftwatch-test:1`), yields exactly one
//! `config`/`image_mutable_tag` finding (once per container, not per exec),
//! the writable-rootfs posture gauge for its workload, and exec drift in the
//! same container is still reported. (The Kubernetes API side is tested
//! against a fake apiserver in tests/kube_api.rs: no apiserver runs here.)
mod support;

use std::time::Duration;
use support::{
    agent::Agent,
    cri::{Pod, PodSpec},
};

fn endpoint() -> String {
    format!("unix://{}", support::containerd().address.display())
}

#[test]
fn mutable_tag_is_one_config_finding_and_exec_drift_still_works() {
    if !support::privileged() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("driftwatch-e2e-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("node-only.yaml");
    std::fs::write(&cfg, "kubernetes:\n  enabled: false\n").unwrap();
    let agent = Agent::start(&["--runtime-endpoint", &endpoint(), "--config", cfg.to_str().unwrap()]);
    let spec = PodSpec::new("checkout-7d9f8b6c5d-c0nf1", "checkout")
        .namespace("payments")
        .label("pod-template-hash", "7d9f8b6c5d");
    let mut pod = Pod::run(&support::containerd().address, spec);
    let api = pod.start_container("api", &["/bin/sleep", "300"]);

    let f = agent.wait_for("config finding", |f| f["container.id"] == api.id.as_str() && f["kind"] == "config");
    assert_eq!(f["rule"], "image_mutable_tag", "{f:#}");
    assert_eq!(f["severity"], "info");
    assert_eq!(f["playbook_step"], "remediate");
    assert_eq!(f["k8s.namespace.name"], "payments");
    assert_eq!(f["k8s.pod.name"], "checkout-7d9f8b6c5d-c0nf1");
    assert_eq!(f["k8s.container.name"], "api");
    assert_eq!(f["k8s.workload.kind"], "Deployment");
    assert_eq!(f["k8s.workload.name"], "checkout");
    assert_eq!(f["container.image.name"], "localhost/driftwatch-test");
    assert_eq!(f["driftwatch.image.spec"], "localhost/driftwatch-test:1");
    assert_eq!(f["driftwatch.image.spec_source"], "runtime", "node-only: the image the kubelet passed");
    assert!(f.get("driftwatch.image.pinned_digest").is_none(), "{f:#}");
    assert!(f["message"].as_str().unwrap_or("").contains("mutable tag"), "{f:#}");
    assert!(f.get("process.pid").is_none() && f.get("process.user.id").is_none(), "no process keys: {f:#}");
    assert_eq!(f["driftwatch.metadata.complete"], true);

    // Exec drift in the same container is still judged per exec.
    let (code, _, err) = api.exec_sync(&["/bin/cp", "/bin/busybox", "/tmp/busybox"]).expect("ExecSync cp");
    assert_eq!(code, 0, "{err}");
    let _ = api.exec_sync(&["/tmp/busybox", "true"]).expect("ExecSync run");
    let b = agent.wait_for("binary finding", |f| f["container.id"] == api.id.as_str() && f["kind"] == "binary");
    assert_eq!(b["rule"], "exec_new_binary");
    assert!(b.get("process.pid").is_some());

    // Two more listing rounds (every 5 s) and execs: still one config finding.
    let _ = api.exec_sync(&["/tmp/busybox", "true"]);
    std::thread::sleep(Duration::from_secs(11));
    let config: Vec<_> = agent.findings_of(&api.id).into_iter().filter(|f| f["kind"] == "config").collect();
    assert_eq!(config.len(), 1, "once per container: {config:#?}");
    // The pause container is not judged.
    let ours = |f: &&serde_json::Value| f["kind"] == "config" && f["k8s.pod.name"] == "checkout-7d9f8b6c5d-c0nf1";
    assert!(agent.findings().iter().filter(ours).all(|f| f["k8s.container.name"] == "api"));

    // Posture: the container's root filesystem is writable (containerd's runtime spec).
    let series = "driftwatch_container_writable_rootfs{namespace=\"payments\",workload=\"checkout\",container=\"api\"}";
    assert_eq!(agent.metric(series), Some(1.0), "{}", agent.metrics());
    let counter = "driftwatch_findings_total{kind=\"config\",rule=\"image_mutable_tag\",severity=\"info\"}";
    assert!(agent.metric(counter).unwrap_or(0.0) >= 1.0, "{}", agent.metrics());
    assert!(agent.stderr().contains("node-only mode"), "{}", agent.stderr());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A restarted agent judges every running container again, but does not
/// report its configuration findings twice: what was reported is kept in the
/// state directory, like the network baselines.
#[test]
fn a_restarted_agent_does_not_report_a_mutable_tag_twice() {
    if !support::privileged() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("driftwatch-e2e-config-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("c.yaml");
    let state = dir.join("state");
    std::fs::write(
        &cfg,
        format!("kubernetes:\n  enabled: false\nrules:\n  network:\n    state_dir: {}\n", state.display()),
    )
    .unwrap();
    let args = ["--runtime-endpoint", &endpoint(), "--config", cfg.to_str().unwrap()];
    let spec = PodSpec::new("cart-5b6c7d8e9f-r3st4", "cart").namespace("shop").label("pod-template-hash", "5b6c7d8e9f");
    let mut pod = Pod::run(&support::containerd().address, spec);
    let api = pod.start_container("api", &["/bin/sleep", "300"]);
    {
        let first = Agent::start(&args);
        let f = first.wait_for("config finding", |f| f["container.id"] == api.id.as_str() && f["kind"] == "config");
        assert_eq!(f["rule"], "image_mutable_tag");
        // Dropped: SIGTERM, and the memory is saved on the way out.
    }
    assert!(state.join("config-findings.json").exists(), "memory saved at shutdown");
    let second = Agent::start(&args);
    let reason = "driftwatch_execs_not_findings_total{reason=\"already_reported\"}";
    let t0 = std::time::Instant::now();
    while second.metric(reason).unwrap_or(0.0) < 1.0 {
        assert!(t0.elapsed() < Duration::from_secs(20), "never judged again:\n{}", second.metrics());
        std::thread::sleep(Duration::from_millis(200));
    }
    let again: Vec<_> = second.findings_of(&api.id).into_iter().filter(|f| f["kind"] == "config").collect();
    assert!(again.is_empty(), "reported twice: {again:#?}");
    drop(pod);
    let _ = std::fs::remove_dir_all(&dir);
}
