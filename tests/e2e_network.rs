//! Network drift end to end, on the real kernel in real containers: endpoints
//! opened during a workload's learning window are its baseline; after it, a
//! new listener or destination is a finding, and the same port opened by a new
//! program is too. Baselines survive an agent restart. The host is never
//! reported. All traffic stays on the container's own loopback.
mod support;

use serde_json::Value;
use std::time::Duration;
use support::{RunSpec, agent::Agent};

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let cfg = dir.join("net.yaml");
    let text = format!(
        "rules:\n  network:\n    learning_window_s: 3\n    ignore_loopback: false\n    allowed_ports: []\n    state_dir: {}\n",
        dir.join("state").display()
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// Runs `args` under busybox `timeout` so a listener stops by itself; the
/// program is exec'd, so the kernel sees its own name.
fn briefly(c: &support::Container, args: &[&str]) {
    let mut full = vec!["/bin/timeout", "1"];
    full.extend_from_slice(args);
    let _ = c.exec(&full);
}

fn network(agent: &Agent, c: &support::Container) -> Vec<Value> {
    agent.findings_of(&c.id).into_iter().filter(|f| f["kind"] == "network").collect()
}

#[test]
fn baseline_learning_then_drift_then_restart() {
    if !support::privileged() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("dw-net-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = config(&dir);
    let agent = Agent::start(&["--config", cfg.to_str().unwrap()]);
    // Learning window: the container's own processes open a listener and a
    // destination, which become the baseline (an exec session's would not:
    // tests/e2e_exec_session.rs).
    let own = "/bin/timeout 1 /bin/nc -l -p 8080; /bin/timeout 1 /bin/nc 127.0.0.2 9000; exec /bin/sleep 300";
    let c = support::containerd().run(RunSpec::new(&["/bin/sh", "-c", own]));
    {
        std::thread::sleep(Duration::from_millis(2500)); // the entrypoint's endpoints are open
        support::settle(&agent, &c);
        assert!(network(&agent, &c).is_empty(), "learning: {:#?}", network(&agent, &c));
        std::thread::sleep(Duration::from_millis(3500));

        // After the window: the learned endpoints are quiet ...
        briefly(&c, &["/bin/nc", "-l", "-p", "8080"]);
        // ... a new program on the learned port, and a new destination, are not.
        briefly(&c, &["/bin/httpd", "-f", "-p", "8080"]);
        briefly(&c, &["/bin/nc", "127.0.0.3", "9001"]);
        support::settle(&agent, &c);
        let mut f = network(&agent, &c);
        f.sort_by_key(|v| v["rule"].as_str().unwrap_or("").to_string());
        assert_eq!(f.len(), 2, "{f:#?}");
        let dest = &f[0];
        assert_eq!(dest["rule"], "network_new_destination");
        assert_eq!(dest["server.address"], "127.0.0.3");
        assert_eq!(dest["server.port"], 9001);
        assert_eq!(dest["network.transport"], "tcp");
        assert_eq!(dest["network.type"], "ipv4");
        assert_eq!(dest["driftwatch.network.direction"], "outbound");
        assert_eq!(dest["process.executable.name"], "nc");
        let listen = &f[1];
        assert_eq!(listen["rule"], "network_new_listener");
        assert_eq!(listen["server.port"], 8080);
        assert_eq!(listen["process.executable.name"], "httpd");
        assert_eq!(listen["driftwatch.network.direction"], "listen");
        assert_eq!(listen["severity"], "warning");
        assert_eq!(listen["playbook_step"], "validate");
        assert_eq!(listen["container.id"], c.id.as_str());
        assert_eq!(listen["driftwatch.baseline.workload"], format!("container/{}", c.id));
        assert!(listen.get("process.command_args").is_none(), "exec-only keys stay out: {listen:#}");
    }
    drop(agent); // the agent stops and saves its baselines

    let saved = std::fs::read_to_string(dir.join("state/network-baselines.json")).expect("baseline persisted");
    assert!(saved.contains(&c.id), "{saved}");
    let agent = Agent::start(&["--config", cfg.to_str().unwrap()]);
    briefly(&c, &["/bin/nc", "-l", "-p", "8080"]); // learned before the restart
    briefly(&c, &["/bin/nc", "-l", "-p", "7070"]); // the window did not start over
    support::settle(&agent, &c);
    let f = network(&agent, &c);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0]["server.port"], 7070);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn repeats_are_folded_in_the_kernel_and_the_host_is_quiet() {
    if !support::privileged() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("dw-net-fold-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = config(&dir);
    let agent = Agent::start(&["--config", cfg.to_str().unwrap()]);
    let c = support::containerd().run(RunSpec::sleeper());
    // 20 connection attempts to one destination from one program: one event.
    let loop_ = "i=0; while [ $i -lt 20 ]; do timeout 1 nc 127.0.0.4 9100; i=$((i+1)); done";
    c.exec_ok(&["/bin/sh", "-c", loop_]);
    // The host doing the same is never seen.
    let _ = std::process::Command::new("/bin/busybox")
        .args(["timeout", "1", "nc", "127.0.0.1", "18999"])
        .stderr(std::process::Stdio::null())
        .status();
    support::settle(&agent, &c);
    let folded = agent.metric("driftwatch_kernel_net_folded_total{kind=\"net\"}").unwrap_or(0.0);
    assert!(folded >= 19.0, "repeats folded in the kernel: {folded}\n{}", agent.metrics());
    let host: Vec<Value> = agent.findings().into_iter().filter(|f| f["server.port"] == 18999).collect();
    assert!(host.is_empty(), "{host:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A connection in a pod's first milliseconds, before the agent has listed
/// the runtime: the finding waits for the pod's metadata, like an exec's, and
/// is judged against the workload's baseline, not the container's.
#[test]
fn a_new_pods_first_connection_carries_its_pod() {
    if !support::privileged() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("dw-net-new-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("net.yaml");
    let text = "rules:\n  network:\n    learning_window_s: 0\n    ignore_loopback: false\n    allowed_ports: []\n    state_dir: \"\"\n";
    std::fs::write(&cfg, text).unwrap();
    let endpoint = format!("unix://{}", support::containerd().address.display());
    let agent = Agent::start(&["--config", cfg.to_str().unwrap(), "--runtime-endpoint", &endpoint]);
    let spec = support::cri::PodSpec::new("payments-api-6c9f7b5d4f-n3w9q", "payments-api")
        .namespace("shop")
        .label("pod-template-hash", "6c9f7b5d4f");
    let mut pod = support::cri::Pod::run(&support::containerd().address, spec);
    // The entrypoint itself connects, microseconds after the container starts
    // (nc exits at once: nobody listens).
    let c = pod.start_container("api", &["/bin/nc", "127.0.0.9", "9099"]);
    let f = agent.wait_for("the first connection", |f| f["container.id"] == c.id.as_str() && f["kind"] == "network");
    assert_eq!(f["rule"], "network_new_destination", "{f:#}");
    assert_eq!(f["driftwatch.metadata.complete"], true, "{f:#}");
    assert_eq!(f["k8s.pod.name"], "payments-api-6c9f7b5d4f-n3w9q");
    assert_eq!(f["k8s.namespace.name"], "shop");
    assert_eq!(f["k8s.container.name"], "api");
    assert_eq!(f["container.image.name"], "localhost/driftwatch-test");
    assert_eq!(f["driftwatch.baseline.workload"], "shop/Deployment/payments-api/api");
    drop(pod);
    let _ = std::fs::remove_dir_all(&dir);
}
