//! Exec sessions end to end (issue 11), on the real kernel with real
//! containerd + runc: every finding about a process says where the process
//! came from, `driftwatch.process.origin: container` (the entrypoint and what
//! it started) or `exec_session` (`runc exec`, `ctr task exec`, CRI ExecSync
//! as `kubectl exec` uses it, and what they started). An exec session's
//! listener is a finding even inside the learning window and never enters
//! the baseline; the entrypoint's is learned.
//!
//! Run with: DRIFTWATCH_PRIVILEGED_TESTS=1 cargo test --test e2e_exec_session
mod support;

use serde_json::Value;
use std::{collections::BTreeSet, path::PathBuf, time::Duration};
use support::{RunSpec, agent::Agent};

/// A long learning window: everything these tests do happens inside it.
fn config(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("dw-origin-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("agent.yaml");
    let text = format!(
        "rules:\n  network:\n    learning_window_s: 600\n    ignore_loopback: false\n    allowed_ports: []\n    state_dir: {}\n",
        dir.join("state").display()
    );
    std::fs::write(&cfg, text).unwrap();
    (dir, cfg)
}

fn origin(f: &Value) -> &str {
    f["driftwatch.process.origin"].as_str().unwrap_or_else(|| panic!("no driftwatch.process.origin: {f:#}"))
}

/// The one finding of `rule` whose process ran or wrote `path`.
fn by_path<'a>(all: &'a [Value], rule: &str, path: &str) -> &'a Value {
    let key = if rule == "file_written" { "file.path" } else { "process.executable.path" };
    let hits: Vec<&Value> = all.iter().filter(|f| f["rule"] == rule && f[key] == path).collect();
    assert_eq!(hits.len(), 1, "one {rule} finding for {path}: {all:#?}");
    hits[0]
}

/// Listening ports of `workload` in the persisted baseline.
fn learned_ports(dir: &std::path::Path, workload: &str) -> BTreeSet<u64> {
    let text = std::fs::read_to_string(dir.join("state/network-baselines.json")).expect("baseline persisted");
    let v: Value = serde_json::from_str(&text).unwrap();
    v["workloads"][workload]["endpoints"]
        .as_array()
        .unwrap_or_else(|| panic!("no baseline for {workload}: {text}"))
        .iter()
        .filter(|e| e["listen"] == true)
        .map(|e| e["port"].as_u64().unwrap())
        .collect()
}

/// A container with its own pid namespace (its entrypoint is pid 1 there).
#[test]
fn entrypoint_tree_is_container_and_exec_sessions_are_exec_session() {
    if !support::privileged() {
        return;
    }
    let (dir, cfg) = config("ctr");
    let c_id;
    {
        let agent = Agent::start(&["--config", cfg.to_str().unwrap()]);
        // The entrypoint's children drop and run a binary at once, and open
        // two listeners after the exec session below is done: 9998 as the
        // session did before (not folded into the session's), 8081.
        let entry = "cp /bin/busybox /root/bb-entry && /root/bb-entry true; sleep 5; \
                     timeout 1 nc -l -p 9998; timeout 1 nc -l -p 8081; exec sleep 300";
        let c = support::containerd().run(RunSpec::new(&["/bin/sh", "-c", entry]));
        c_id = c.id.clone();
        // runc exec (the process and its children) ...
        let session = "cp /bin/busybox /root/bb-exec && /root/bb-exec true; \
                       timeout 1 nc -l -p 9998; timeout 1 nc -l -p 9999";
        let _ = c.exec(&["/bin/sh", "-c", session]);
        // ... and through containerd and the shim (the kubectl exec path).
        let _ = c.exec_ctr(&["/bin/sh", "-c", "cp /bin/busybox /root/bb-ctr && /root/bb-ctr true"]);
        std::thread::sleep(Duration::from_secs(6)); // the entrypoint's listeners are done
        support::settle(&agent, &c);
        let all = agent.findings_of(&c.id);

        // The entrypoint's children: container.
        assert_eq!(origin(by_path(&all, "exec_new_binary", "/root/bb-entry")), "container");
        assert_eq!(origin(by_path(&all, "file_written", "/root/bb-entry")), "container");
        // The exec sessions' processes and their children: exec_session.
        for path in ["/root/bb-exec", "/root/bb-ctr"] {
            assert_eq!(origin(by_path(&all, "exec_new_binary", path)), "exec_session", "{path}");
            assert_eq!(origin(by_path(&all, "file_written", path)), "exec_session", "{path}");
        }
        let shell = all
            .iter()
            .find(|f| f["rule"] == "shell_in_container" && f["process.command_args"].to_string().contains("bb-exec"))
            .unwrap_or_else(|| panic!("the session's shell: {all:#?}"));
        assert_eq!(origin(shell), "exec_session", "{shell:#}");
        // Every finding about a process says its origin; config findings
        // (about a container, no process) do not.
        for f in &all {
            if f["kind"] == "config" {
                assert!(f.get("driftwatch.process.origin").is_none(), "{f:#}");
            } else {
                assert!(matches!(origin(f), "container" | "exec_session"), "{f:#}");
            }
        }

        // Inside the learning window: the session's listeners are findings,
        // the entrypoint's (8081, and 9998 after the session's) are learned.
        let mut net: Vec<&Value> = all.iter().filter(|f| f["kind"] == "network").collect();
        net.sort_by_key(|f| f["server.port"].as_u64());
        let ports: Vec<u64> = net.iter().map(|f| f["server.port"].as_u64().unwrap()).collect();
        assert_eq!(ports, [9998, 9999], "{net:#?}");
        for f in &net {
            assert_eq!(f["rule"], "network_new_listener", "{f:#}");
            assert_eq!(origin(f), "exec_session", "{f:#}");
            assert!(f["message"].as_str().unwrap().contains("exec session"), "{f:#}");
        }
    } // the agent stops and saves its baselines
    let learned = learned_ports(&dir, &format!("container/{c_id}"));
    assert_eq!(learned, BTreeSet::from([8081, 9998]), "the entrypoint's listeners only");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits until every finding of `c` judged before now is out (like
/// `support::settle`, through ExecSync).
fn settle_cri(agent: &Agent, c: &support::cri::CriContainer, marker: &str) {
    let (code, _, err) = c.exec_sync(&["/bin/sh", "-c", &format!(": {marker}")]).expect("ExecSync");
    assert_eq!(code, 0, "{err}");
    agent.wait_for("sentinel shell", |f| {
        f["container.id"] == c.id.as_str() && f["process.command_args"].to_string().contains(marker)
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while agent.metric("driftwatch_findings_waiting") != Some(0.0) {
        assert!(std::time::Instant::now() < deadline, "findings still waiting:\n{}", agent.metrics());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A pod sharing one pid namespace (`shareProcessNamespace: true`): pid 1 is
/// the pause process, so the entrypoint is known as the namespace's first
/// exec. ExecSync is what `kubectl exec` uses.
#[test]
fn cri_exec_sync_in_a_pod_sharing_its_pid_namespace() {
    if !support::privileged() {
        return;
    }
    let (dir, cfg) = config("cri");
    let agent = Agent::start(&["--config", cfg.to_str().unwrap()]);
    let spec =
        support::cri::PodSpec::new(&format!("origin-{}", std::process::id()), "origin").share_process_namespace();
    let mut pod = support::cri::Pod::run(&support::containerd().address, spec);
    let entry = "sleep 2; cp /bin/busybox /root/bb-app && /root/bb-app true; timeout 1 nc -l -p 7071; exec sleep 300";
    let c = pod.start_container("app", &["/bin/sh", "-c", entry]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", c.pid)).unwrap_or_default();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap_or_default().to_string();
    assert!(!nspid.ends_with("\t1"), "the entrypoint is not pid 1 of the pod's namespace: {nspid}");
    let session = "cp /bin/busybox /root/bb-sync && /root/bb-sync true; timeout 1 nc -l -p 7072";
    // The copy runs (as busybox it finds no applet named bb-sync): its exec is what counts.
    c.exec_sync(&["/bin/sh", "-c", session]).expect("ExecSync");
    std::thread::sleep(Duration::from_secs(3)); // the entrypoint's listener is done
    settle_cri(&agent, &c, &format!("sentinel-cri-{}", std::process::id()));
    let all = agent.findings_of(&c.id);
    assert_eq!(origin(by_path(&all, "exec_new_binary", "/root/bb-app")), "container");
    assert_eq!(origin(by_path(&all, "exec_new_binary", "/root/bb-sync")), "exec_session");
    let net: Vec<&Value> = all.iter().filter(|f| f["kind"] == "network").collect();
    assert_eq!(net.len(), 1, "the session's listener only: {net:#?}");
    assert_eq!(net[0]["server.port"], 7072);
    assert_eq!(origin(net[0]), "exec_session");
    drop(pod);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Processes that predate the agent have no lineage: the kernel walks up to
/// the topmost ancestor in the container. The entrypoint (pid 1) and an exec
/// session both started before the agent; what each starts after it is
/// attributed to its tree.
#[test]
fn processes_that_predate_the_agent() {
    if !support::privileged() {
        return;
    }
    let (dir, cfg) = config("pre");
    let wait = "while [ ! -e /tmp/go ]; do sleep 1; done";
    let entry = format!("{wait}; cp /bin/busybox /root/bb-old-entry && /root/bb-old-entry true; exec sleep 300");
    let c = support::containerd().run(RunSpec::new(&["/bin/sh", "-c", &entry]));
    let session = format!("{wait}; cp /bin/busybox /root/bb-old-exec && /root/bb-old-exec true");
    let started = std::thread::scope(|s| {
        let h = s.spawn(|| c.exec(&["/bin/sh", "-c", &session]));
        std::thread::sleep(Duration::from_secs(1)); // the session's shell is waiting
        let agent = Agent::start(&["--config", cfg.to_str().unwrap()]);
        c.exec_ok(&["/bin/touch", "/tmp/go"]);
        let _ = h.join();
        std::thread::sleep(Duration::from_secs(2)); // the entrypoint's loop sees it too
        support::settle(&agent, &c);
        agent.findings_of(&c.id)
    });
    assert_eq!(origin(by_path(&started, "exec_new_binary", "/root/bb-old-entry")), "container");
    assert_eq!(origin(by_path(&started, "exec_new_binary", "/root/bb-old-exec")), "exec_session");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The hard case: a pod sharing its pid namespace, started before the agent.
/// Its entrypoint is not pid 1 and its first exec is long past; the agent
/// seeds each running namespace's oldest process as its main process.
#[test]
fn a_pod_sharing_its_pid_namespace_that_predates_the_agent() {
    if !support::privileged() {
        return;
    }
    let (dir, cfg) = config("pre-cri");
    let spec = support::cri::PodSpec::new(&format!("origin-pre-{}", std::process::id()), "origin-pre")
        .share_process_namespace();
    let mut pod = support::cri::Pod::run(&support::containerd().address, spec);
    let wait = "while [ ! -e /tmp/go ]; do sleep 1; done";
    let entry = format!("{wait}; cp /bin/busybox /root/bb-old-app && /root/bb-old-app true; exec sleep 300");
    let c = pod.start_container("app", &["/bin/sh", "-c", &entry]);
    let session = format!("{wait}; cp /bin/busybox /root/bb-old-sync && /root/bb-old-sync true");
    let all = std::thread::scope(|s| {
        let h = s.spawn(|| c.exec_sync(&["/bin/sh", "-c", &session]));
        std::thread::sleep(Duration::from_secs(1)); // the session's shell is waiting
        let agent = Agent::start(&["--config", cfg.to_str().unwrap()]);
        c.exec_sync(&["/bin/touch", "/tmp/go"]).expect("ExecSync");
        let _ = h.join();
        std::thread::sleep(Duration::from_secs(2)); // the entrypoint's loop sees it too
        settle_cri(&agent, &c, &format!("sentinel-pre-cri-{}", std::process::id()));
        agent.findings_of(&c.id)
    });
    assert_eq!(origin(by_path(&all, "exec_new_binary", "/root/bb-old-app")), "container");
    assert_eq!(origin(by_path(&all, "exec_new_binary", "/root/bb-old-sync")), "exec_session");
    drop(pod);
    let _ = std::fs::remove_dir_all(&dir);
}
