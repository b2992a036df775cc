//! End to end: drift in a pod made through CRI exactly as the kubelet makes it
//! (RunPodSandbox, CreateContainer, StartContainer on the real containerd CRI
//! plugin) comes out with its pod, namespace, container, workload and image;
//! containers the runtime does not know, and a runtime that is down, still
//! produce findings, marked incomplete.
mod support;

use serde_json::{Value, json};
use support::{
    RunSpec,
    agent::Agent,
    cri::{Pod, PodSpec},
};

fn endpoint() -> String {
    format!("unix://{}", support::containerd().address.display())
}

#[test]
fn pod_drift_is_fully_enriched() {
    if !support::privileged() {
        return;
    }
    let agent = Agent::start(&["--runtime-endpoint", &endpoint()]);
    let spec = PodSpec::new("checkout-7d9f8b6c5d-x2k4q", "checkout")
        .namespace("payments")
        .label("pod-template-hash", "7d9f8b6c5d");
    let uid = spec.uid.clone();
    let mut pod = Pod::run(&support::containerd().address, spec);
    let api = pod.start_container("api", &["/bin/sleep", "300"]);
    let (code, _, err) = api.exec_sync(&["/bin/cp", "/bin/busybox", "/tmp/busybox"]).expect("ExecSync cp");
    assert_eq!(code, 0, "{err}");
    let _ = api.exec_sync(&["/tmp/busybox", "true"]).expect("ExecSync run");

    let f =
        agent.wait_for("enriched binary finding", |f| f["container.id"] == api.id.as_str() && f["kind"] == "binary");
    assert_eq!(f["rule"], "exec_new_binary");
    assert_eq!(f["driftwatch.metadata.complete"], true, "{f:#}");
    // The kubelet's cgroupfs layout (kubepods/<qos>/pod<uid>/<id>) names no runtime: the one that answered does.
    assert_eq!(f["container.runtime.name"], "containerd", "{f:#}");
    assert_eq!(f["k8s.namespace.name"], "payments");
    assert_eq!(f["k8s.pod.name"], "checkout-7d9f8b6c5d-x2k4q");
    assert_eq!(f["k8s.pod.uid"], uid.as_str());
    assert_eq!(f["k8s.container.name"], "api");
    assert_eq!(f["k8s.workload.kind"], "Deployment");
    assert_eq!(f["k8s.workload.name"], "checkout");
    assert_eq!(f["k8s.pod.label.app"], "checkout");
    assert_eq!(f["container.image.name"], "localhost/driftwatch-test");
    assert_eq!(f["container.image.tags"], json!(["1"]));
    assert!(f["container.image.id"].as_str().unwrap_or("").starts_with("sha256:"), "{f:#}");
    assert!(!f["k8s.node.name"].as_str().unwrap_or("").is_empty(), "{f:#}");
    assert!(f.get("driftwatch.metadata.missing_reason").is_none(), "{f:#}");

    // Per-container series carry the bounded labels, never the pod name.
    let series =
        "driftwatch_drifted_containers{namespace=\"payments\",workload=\"checkout\",container=\"api\",kind=\"binary\"}";
    assert!(agent.metric(series).unwrap_or(0.0) >= 1.0, "{}", agent.metrics());
    assert!(!agent.metrics().contains("checkout-7d9f8b6c5d-x2k4q"), "pod names stay out of metrics");
}

#[test]
fn containers_unknown_to_the_runtime_are_reported_incomplete() {
    if !support::privileged() {
        return;
    }
    let agent = Agent::start(&["--runtime-endpoint", &endpoint()]);
    // Made with ctr, not through CRI: the runtime has no pod for it.
    let c = support::containerd().run(RunSpec::sleeper());
    c.exec_ok(&["/usr/bin/memexec", "/bin/busybox", "true"]);
    let f: Value = agent.wait_for("memfd finding", |f| f["container.id"] == c.id.as_str());
    assert_eq!(f["rule"], "exec_fileless_memfd");
    assert_eq!(f["driftwatch.metadata.complete"], false);
    assert_eq!(f["driftwatch.metadata.missing_reason"], "not_found");
    assert!(agent.metric("driftwatch_enrich_failures_total{reason=\"not_found\"}").unwrap_or(0.0) >= 1.0);
}

#[test]
fn a_runtime_that_is_down_costs_no_finding() {
    if !support::privileged() {
        return;
    }
    let agent = Agent::start(&["--runtime-endpoint", "unix:///run/driftwatch-test/no-such-runtime.sock"]);
    let c = support::containerd().run(RunSpec::sleeper());
    let t0 = std::time::Instant::now();
    c.exec_ok(&["/usr/bin/memexec", "/bin/busybox", "true"]);
    let f = agent.wait_for("finding without a runtime", |f| f["container.id"] == c.id.as_str());
    assert!(t0.elapsed() < std::time::Duration::from_secs(5), "bounded wait");
    assert_eq!(f["driftwatch.metadata.complete"], false);
    let reason = f["driftwatch.metadata.missing_reason"].as_str().unwrap_or("");
    assert_eq!(reason, "no_socket", "the configured socket does not exist: {f:#}");
    // The warning names the socket it could not reach.
    assert!(agent.stderr().contains("no-such-runtime.sock"), "{}", agent.stderr());
}

/// What an unset Helm value renders, `DRIFTWATCH_RUNTIME_ENDPOINT=` (and the
/// other variables empty), means "unset": the agent starts and auto-detects.
#[test]
fn empty_environment_variables_mean_unset() {
    if !support::privileged() {
        return;
    }
    let env = [("DRIFTWATCH_RUNTIME_ENDPOINT", ""), ("DRIFTWATCH_CONFIG", ""), ("DRIFTWATCH_BTF", " ")];
    let agent = Agent::start_with_env(&[], &env);
    let stderr = agent.stderr();
    // No error-level line (a warning may quote an OS error, e.g. a blocked /proc/1).
    assert!(!stderr.lines().any(|l| l.contains(" ERROR ")), "{stderr}");
    assert!(
        stderr.contains("auto-detect") || stderr.contains("CRI connected"),
        "auto-detection (a warning names the sockets it tried when none answers): {stderr}"
    );
}
