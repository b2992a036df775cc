//! Investigate and isolate end to end (issue 12 items 3-5), through the
//! agent: an isolate finding in a real CRI pod writes an evidence bundle and
//! quarantines the container; the admin API serves the diff and the process
//! list; `driftwatch quarantine` lists, releases and applies through it; the
//! quarantine outlives an agent restart and goes with the pod.
//! (The network semantics of the quarantine itself, TCP and UDP both ways,
//! other pods and the host untouched, are tests/e2e_quarantine.rs.)
//!
//! Run with: DRIFTWATCH_PRIVILEGED_TESTS=1 cargo test --test e2e_response -- --nocapture
mod support;

use serde_json::Value;
use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};
use support::{
    agent::Agent,
    cri::{Pod, PodSpec},
};

/// One test at a time: an agent acts on every container of the node, so a
/// test's quarantining agent would cut off another test's pods.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn endpoint() -> String {
    format!("unix://{}", support::containerd().address.display())
}

fn until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// GET/POST/DELETE on the agent's admin socket: (status, JSON body).
fn admin(agent: &Agent, method: &str, path: &str) -> (u16, Value) {
    let sock = agent.admin_addr.strip_prefix("unix://").expect("unix admin socket");
    let mut s = std::os::unix::net::UnixStream::connect(sock).expect("admin socket");
    write!(s, "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map_or("", |b| b.1);
    // A chunked body: the JSON is the first chunk's content.
    let body = if raw.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body.split_once("\r\n").map_or("", |b| b.1).rsplit_once("\r\n0\r\n").map_or("", |b| b.0)
    } else {
        body
    };
    (status, serde_json::from_str(body.trim()).unwrap_or(Value::Null))
}

/// `driftwatch quarantine ...` against the agent: (exit code, stdout JSON or text, stderr).
fn quarantine_cli(agent: &Agent, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .arg("quarantine")
        .args(args)
        .args(["--admin-addr", &agent.admin_addr, "--output", "json"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("driftwatch quarantine");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn listed(agent: &Agent) -> Vec<String> {
    let (_, v) = admin(agent, "GET", "/v1/quarantine");
    v["quarantined"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["container.id"].as_str().map(String::from))
        .collect()
}

fn bundle_entries(p: &Path) -> std::collections::HashMap<String, Vec<u8>> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(p).expect("bundle"));
    let mut ar = tar::Archive::new(gz);
    let mut out = std::collections::HashMap::new();
    for e in ar.entries().expect("tar") {
        let mut e = e.expect("entry");
        let name = e.path().unwrap().display().to_string();
        let mut b = Vec::new();
        e.read_to_end(&mut b).unwrap();
        out.insert(name, b);
    }
    out
}

fn nanos_of(rfc3339: &str) -> i128 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .expect("time")
        .unix_timestamp_nanos()
}

fn config(evidence: &Path, pins: &Path) -> PathBuf {
    let cfg = std::env::temp_dir().join(format!("driftwatch-response-{}.yaml", std::process::id()));
    let yaml = format!(
        "response:\n  capture:\n    on_steps: [isolate]\n    dir: {}\n    window_s: 300\n  quarantine:\n    on_steps: [isolate]\n    pin_dir: {}\n",
        evidence.display(),
        pins.display()
    );
    std::fs::write(&cfg, yaml).expect("config");
    cfg
}

#[test]
fn an_isolate_finding_captures_evidence_and_quarantines_its_container_until_released() {
    if !support::privileged() {
        return;
    }
    let _serial = serial();
    let evidence = std::env::temp_dir().join(format!("dw-evidence-e2e-{}", std::process::id()));
    let pins = PathBuf::from(format!("/sys/fs/bpf/dw-test-response-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&evidence);
    let cfg = config(&evidence, &pins);
    let args = ["--runtime-endpoint", &endpoint(), "--config", cfg.to_str().unwrap()];
    let agent = Agent::start(&args);

    let sock = &support::containerd().address;
    let mut pod = Pod::run(sock, PodSpec::new("shop-7c9d8b6f5e-resp1", "shop").namespace("respond"));
    let c = pod.start_container("app", &["/bin/sleep", "600"]);
    let sidecar = pod.start_container("sidecar", &["/bin/sleep", "600"]);
    let mut bystander_pod = Pod::run(sock, PodSpec::new("shop-7c9d8b6f5e-resp2", "shop").namespace("respond"));
    let b = bystander_pod.start_container("app", &["/bin/sleep", "600"]);

    // Before: nothing quarantined; the admin API answers for the container.
    assert!(listed(&agent).is_empty(), "{:?}", admin(&agent, "GET", "/v1/quarantine"));
    let short = &c.id[..12];
    let (code, ps) = admin(&agent, "GET", &format!("/v1/containers/{short}/processes"));
    assert_eq!(code, 200, "{ps}");
    assert_eq!(ps["container.id"], c.id.as_str());
    assert!(ps["processes"].as_array().unwrap().iter().any(|p| p["process.command_args"][0] == "/bin/sleep"), "{ps:#}");

    // A dropped binary runs: exec_new_binary, playbook step isolate.
    let (rc, _, err) = c.exec_sync(&["/bin/sh", "-c", "cp /bin/busybox /tmp/true && /tmp/true"]).unwrap();
    assert_eq!(rc, 0, "{err}");
    let f = agent.wait_for("the isolate finding", |f| {
        f["container.id"] == c.id.as_str()
            && f["rule"] == "exec_new_binary"
            && f["process.executable.path"] == "/tmp/true"
    });
    assert_eq!(f["playbook_step"], "isolate", "{f:#}");
    assert_eq!(f["driftwatch.action"], "quarantined", "{f:#}\nagent stderr:\n{}", agent.stderr());
    let bundle = PathBuf::from(f["driftwatch.evidence.path"].as_str().expect("evidence path"));
    assert!(bundle.starts_with(&evidence) && bundle.to_str().unwrap().ends_with(".tar.gz"), "{bundle:?}");

    // Quarantined: listed by the API and the CLI, counted; the bystander is not.
    let entry = until("the quarantine entry", Duration::from_secs(5), || {
        let (_, v) = admin(&agent, "GET", "/v1/quarantine");
        v["quarantined"].as_array()?.iter().find(|e| e["container.id"] == c.id.as_str()).cloned()
    });
    assert!(!listed(&agent).contains(&b.id));
    // The pod is the unit: its sidecar (which could relay over loopback) too.
    until("the sidecar quarantined", Duration::from_secs(5), || listed(&agent).contains(&sidecar.id).then_some(()));
    // A container the pod starts later (the kubelet restarting one whose
    // probes the quarantine cut) is quarantined too.
    let late = pod.start_container("restarted", &["/bin/sleep", "600"]);
    until("the pod's new container quarantined", Duration::from_secs(20), || {
        listed(&agent).contains(&late.id).then_some(())
    });
    let cut_ms = (nanos_of(entry["since"].as_str().unwrap()) - nanos_of(f["time"].as_str().unwrap())) as f64 / 1e6;
    println!("exec of the dropped binary -> container cut off: {cut_ms:.1} ms");
    assert!(cut_ms < 5_000.0, "{cut_ms} ms");
    let (code, out, err) = quarantine_cli(&agent, &["list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&c.id), "{out}");
    assert_eq!(agent.metric("driftwatch_quarantined_containers"), Some(3.0));

    // The evidence bundle: the diff names the dropped binary, whose copy is in it.
    until("the bundle file", Duration::from_secs(20), || bundle.exists().then_some(()));
    let e = bundle_entries(&bundle);
    let diff: Value = serde_json::from_slice(&e["diff.json"]).expect("diff.json");
    let dropped = diff["changes"].as_array().unwrap().iter().find(|ch| ch["path"] == "/tmp/true").cloned();
    let dropped = dropped.unwrap_or_else(|| panic!("no /tmp/true in {diff:#}"));
    assert_eq!((dropped["change"].as_str(), dropped["executable"].as_bool()), (Some("added"), Some(true)));
    let ps: Value = serde_json::from_slice(&e["processes.json"]).expect("processes.json");
    assert_eq!(ps["container.id"], c.id.as_str());
    let findings = String::from_utf8_lossy(&e["findings.jsonl"]).into_owned();
    assert!(findings.contains("exec_new_binary") && findings.contains("/tmp/true"), "{findings}");
    let copy = &e["files/tmp/true"];
    let busybox = std::fs::read(format!("/proc/{}/root/bin/busybox", c.pid)).expect("busybox");
    assert_eq!(copy.len(), busybox.len());
    assert!(copy == &busybox, "the copied executable is the dropped file");
    let manifest: Value = serde_json::from_slice(&e["manifest.json"]).expect("manifest");
    assert_eq!(manifest["container"]["k8s.pod.name"], "shop-7c9d8b6f5e-resp1", "{manifest:#}");
    until("the bundle counted", Duration::from_secs(5), || {
        (agent.metric("driftwatch_evidence_bundles_total{result=\"written\"}") == Some(1.0)).then_some(())
    });

    // The admin API's diff of the same container, by prefix.
    let (code, d) = admin(&agent, "GET", &format!("/v1/containers/{short}/diff"));
    assert_eq!(code, 200, "{d}");
    assert!(d["changes"].as_array().unwrap().iter().any(|ch| ch["path"] == "/tmp/true"), "{d:#}");
    // An on-demand bundle.
    let (code, v) = admin(&agent, "POST", &format!("/v1/containers/{short}/evidence"));
    assert_eq!(code, 200, "{v}");
    assert!(Path::new(v["driftwatch.evidence.path"].as_str().unwrap()).exists(), "{v}");

    // An agent restart keeps the quarantine (pinned) and lists it.
    drop(agent);
    assert!(pins.join(&c.id).exists(), "the pins outlive the agent");
    let agent = Agent::start(&args);
    until("the quarantine listed after a restart", Duration::from_secs(10), || {
        listed(&agent).contains(&c.id).then_some(())
    });
    assert_eq!(agent.metric("driftwatch_quarantined_containers"), Some(3.0));

    // Release (the pod's: the sidecar too); a second release says it is not quarantined (exit 1).
    // The restarted agent's registry must know the pod first.
    until("the pod known again", Duration::from_secs(10), || {
        let (code, _) = admin(&agent, "GET", &format!("/v1/containers/{}/processes", &sidecar.id[..12]));
        (code == 200).then_some(())
    });
    let (code, _, err) = quarantine_cli(&agent, &["release", short]);
    assert_eq!(code, 0, "{err}");
    assert!(!listed(&agent).contains(&c.id));
    assert!(!listed(&agent).contains(&sidecar.id), "the pod's sidecar is released with it");
    assert!(!listed(&agent).contains(&late.id), "and its restarted container");
    let (code, _, err) = quarantine_cli(&agent, &["release", short]);
    assert_eq!(code, 1, "{err}");
    assert!(!pins.join(&c.id).exists());

    // By hand, then the pod goes away: its quarantine goes with it.
    let (code, _, err) = quarantine_cli(&agent, &["apply", short]);
    assert_eq!(code, 0, "{err}");
    assert!(listed(&agent).contains(&c.id));
    drop(pod);
    // The gauge counts what the agent holds: the other tests of this file run
    // beside this one and every agent judges every container of the node, so
    // their isolate findings may be quarantined here too; it must match the list.
    until("the quarantine pruned with its pod", Duration::from_secs(30), || {
        let l = listed(&agent);
        (!l.contains(&c.id)
            && !pins.join(&c.id).exists()
            && agent.metric("driftwatch_quarantined_containers") == Some(l.len() as f64))
        .then_some(())
    });
    drop(bystander_pod);
    drop(agent);
    let _ = std::fs::remove_dir_all(&pins);
    let _ = std::fs::remove_dir_all(&evidence);
}

#[test]
fn the_admin_api_refuses_bad_ids_and_unknown_containers() {
    if !support::privileged() {
        return;
    }
    let _serial = serial();
    let agent = Agent::start(&["--runtime-endpoint", &endpoint()]);
    for (path, want) in [
        ("/v1/containers/0123456789ab/diff", 404),
        ("/v1/containers/0123456789ab/processes", 404),
        ("/v1/containers/../../etc/passwd/diff", 400),
        ("/v1/containers/%2e%2e/diff", 400),
        ("/v1/containers/ABC/diff", 400),
    ] {
        let (code, v) = admin(&agent, "GET", path);
        assert_eq!(code, want, "{path}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{path}: {v}");
    }
    // Capture is on by default, quarantine is not configured: a release of
    // an unknown container is a 404, not a crash.
    let (code, v) = admin(&agent, "DELETE", "/v1/containers/0123456789ab/quarantine");
    assert!(code == 404 || code == 409, "{code} {v}");
}

/// `response.quarantine.modes`: a workload opts in through its policy mode.
/// A protect pod's drift is killed and quarantined; a monitor pod's is not.
#[test]
fn quarantine_modes_limit_it_to_the_workloads_in_those_modes() {
    if !support::privileged() {
        return;
    }
    let _serial = serial();
    let pins = PathBuf::from(format!("/sys/fs/bpf/dw-test-modes-{}", std::process::id()));
    let cfg = std::env::temp_dir().join(format!("driftwatch-modes-{}.yaml", std::process::id()));
    let yaml = format!(
        "response:\n  capture:\n    on_steps: []\n  quarantine:\n    on_steps: [isolate]\n    modes: [protect]\n    pin_dir: {}\n",
        pins.display()
    );
    std::fs::write(&cfg, yaml).expect("config");
    let agent = Agent::start(&["--runtime-endpoint", &endpoint(), "--config", cfg.to_str().unwrap()]);
    let sock = &support::containerd().address;
    let guarded = PodSpec::new("vault-6f7d8c9b5a-qm0d1", "vault")
        .namespace("respond-modes")
        .annotation("driftwatch.io/mode", "protect");
    let mut gpod = Pod::run(sock, guarded);
    let g = gpod.start_container("app", &["/bin/sleep", "600"]);
    let mut mpod = Pod::run(sock, PodSpec::new("shop-5a6b7c8d9e-qm0d2", "shop").namespace("respond-modes"));
    let m = mpod.start_container("app", &["/bin/sleep", "600"]);
    // Protect mode is armed from the entrypoint: wait for it before the drift.
    until("protect mode armed", Duration::from_secs(15), || {
        agent.stderr().lines().any(|l| l.contains("protect mode armed") && l.contains(&g.id[..12])).then_some(())
    });
    for c in [&g, &m] {
        let _ = c.exec_sync(&["/bin/sh", "-c", "cp /bin/busybox /tmp/true && /tmp/true"]).unwrap();
    }
    let fg = agent.wait_for("the protect pod's finding", |f| {
        f["container.id"] == g.id.as_str() && f["rule"] == "exec_new_binary"
    });
    let fm = agent.wait_for("the monitor pod's finding", |f| {
        f["container.id"] == m.id.as_str() && f["rule"] == "exec_new_binary"
    });
    assert_eq!(fg["driftwatch.action"], "killed,quarantined", "{fg:#}");
    assert!(fm.get("driftwatch.action").is_none(), "{fm:#}");
    let now = listed(&agent);
    assert!(now.contains(&g.id) && !now.contains(&m.id), "{now:?}");
    drop(gpod);
    drop(mpod);
    until("the quarantine pruned", Duration::from_secs(30), || (!listed(&agent).contains(&g.id)).then_some(()));
    drop(agent);
    let _ = std::fs::remove_dir_all(&pins);
}
