//! Faults the agent must survive and tell the truth about, injected for real
//! (real agent, real kernel, real containers): stdout blocked (a log pipe
//! nobody reads) makes it not ready, with the reason, and SIGTERM still exits
//! within `pipeline.shutdown_timeout_ms`, counting and saying what it could
//! not write; a second signal exits at once; a runtime that does not answer
//! makes it not ready. Liveness stays up through all of it (a restart would
//! not help). SIGKILL in a storm leaves state a new agent can use; agents
//! sharing a state directory all start; hostile (valid UTF-8) names come out
//! exact, one JSON line each. The rest of the fault suite (OTLP, Alertmanager,
//! ring buffer, storms, bad configs) is listed in the README's "Tests".
mod support;

use std::{
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use support::{RunSpec, agent::http_get};

/// The agent with stdout piped to nobody: the pipe fills and writes block.
struct Stuck {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    _stdout: std::process::ChildStdout,
}

/// The agent with `yaml` as its config file.
fn start_stuck(yaml: &str) -> Stuck {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("dw-faults-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("c.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .args(["run", "--metrics-addr", &addr.to_string(), "--config", cfg.to_str().unwrap()])
        .env("DRIFTWATCH_RUNTIME_ENDPOINT", "unix:///run/driftwatch-test/no-such.sock")
        // Its own admin socket: other tests' agents run beside it.
        .env("DRIFTWATCH_ADMIN_ADDR", format!("unix://{}", dir.join("admin.sock").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn driftwatch");
    let stderr = Arc::new(Mutex::new(String::new()));
    let err = child.stderr.take().unwrap();
    let e = stderr.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            e.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let stdout = child.stdout.take().unwrap(); // held open, never read
    let t0 = Instant::now();
    while !matches!(http_get(addr, "/readyz"), Ok((200, _, _))) {
        assert!(t0.elapsed() < Duration::from_secs(60), "not ready:\n{}", stderr.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    Stuck { child, addr, stderr, _stdout: stdout }
}

impl Drop for Stuck {
    /// Never leave an agent behind: it would judge every container of the
    /// machine from then on.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn metric(addr: SocketAddr, series: &str) -> f64 {
    let body = http_get(addr, "/metrics").map(|r| r.2).unwrap_or_default();
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// Far more findings than a pipe holds (64 KiB, about 60 findings): a dropped
/// binary run 400 times.
fn drift_storm(s: &Stuck) -> support::Container {
    let c = support::containerd().run(RunSpec::sleeper());
    c.exec_ok(&[
        "/bin/sh",
        "-c",
        "cp /bin/busybox /tmp/bb && i=0; while [ $i -lt 400 ]; do /tmp/bb true; i=$((i+1)); done",
    ]);
    let findings = "driftwatch_findings_total{kind=\"binary\",rule=\"exec_new_binary\",severity=\"critical\"}";
    let t0 = Instant::now();
    while metric(s.addr, findings) < 400.0 {
        assert!(t0.elapsed() < Duration::from_secs(90), "storm not judged: {}", metric(s.addr, findings));
        std::thread::sleep(Duration::from_millis(100));
    }
    c
}

/// Waits for the process to exit, at most `limit`; kills it (and fails) otherwise.
fn exits_within(s: &mut Stuck, limit: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        if let Ok(Some(status)) = s.child.try_wait() {
            assert!(status.success(), "exit status {status}:\n{}", s.stderr.lock().unwrap());
            return t0.elapsed();
        }
        if t0.elapsed() > limit {
            let _ = s.child.kill();
            let _ = s.child.wait();
            panic!("still running {limit:?} after SIGTERM:\n{}", s.stderr.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigterm(s: &Stuck) {
    // SAFETY: plain kill(2) on our child's pid.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
}

#[test]
fn sigterm_with_stdout_blocked_exits_by_the_deadline_and_counts_what_it_lost() {
    if !support::privileged() {
        return;
    }
    let mut s = start_stuck("pipeline:\n  shutdown_timeout_ms: 2000\n");
    let _c = drift_storm(&s);
    sigterm(&s);
    let took = exits_within(&mut s, Duration::from_secs(10));
    let log = s.stderr.lock().unwrap().clone();
    eprintln!("shutdown with stdout blocked took {took:?}");
    assert!(took >= Duration::from_millis(1900), "the deadline is 2 s: {took:?}\n{log}");
    assert!(took < Duration::from_secs(5), "{took:?}\n{log}");
    let line = log.lines().find(|l| l.contains("shutdown cut short")).unwrap_or_else(|| panic!("no account:\n{log}"));
    let unwritten: u64 = line
        .split("unwritten=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    // Every agent judges every container of the node: a test running beside
    // this one adds its own storm, so only "some, and said" is asserted.
    assert!(unwritten > 0, "{line}");
}

#[test]
fn a_second_signal_exits_at_once() {
    if !support::privileged() {
        return;
    }
    let mut s = start_stuck("pipeline:\n  shutdown_timeout_ms: 60000\n");
    let _c = drift_storm(&s);
    sigterm(&s);
    std::thread::sleep(Duration::from_millis(500));
    sigterm(&s);
    let took = exits_within(&mut s, Duration::from_secs(10));
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(s.stderr.lock().unwrap().contains("shutdown cut short by a second signal"));
}

/// Polls `path` until its status is `want`, at most `limit`; returns the body.
fn until_status(s: &Stuck, path: &str, want: u16, limit: Duration) -> String {
    let t0 = Instant::now();
    loop {
        if let Ok((code, _, body)) = http_get(s.addr, path)
            && code == want
        {
            return body;
        }
        assert!(t0.elapsed() < limit, "{path} never answered {want}:\n{}", s.stderr.lock().unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_blocked_stdout_makes_the_agent_unready_and_says_why() {
    if !support::privileged() {
        return;
    }
    let s = start_stuck("pipeline:\n  sink_stall_timeout_ms: 1000\n");
    let _c = drift_storm(&s);
    let body = until_status(&s, "/readyz", 503, Duration::from_secs(15));
    assert!(body.contains("wait for stdout"), "{body}");
    let (live, _, _) = http_get(s.addr, "/healthz").unwrap();
    assert_eq!(live, 200, "a restart would not unblock a pipe: still live");
    assert_eq!(metric(s.addr, "driftwatch_health_check{check=\"stdout\"}"), 0.0);
    assert_eq!(metric(s.addr, "driftwatch_health_check{check=\"reader\"}"), 1.0);
    assert!(metric(s.addr, "driftwatch_sink_queue_depth{queue=\"findings_stdout\"}") > 0.0);
    assert_eq!(metric(s.addr, "driftwatch_sink_queue_capacity{queue=\"findings_stdout\"}"), 8192.0);
}

#[test]
fn a_runtime_that_does_not_answer_makes_the_agent_unready() {
    if !support::privileged() {
        return;
    }
    // The endpoint points at no socket (start_stuck sets it).
    let s = start_stuck("runtime:\n  unready_after_s: 2\n");
    let body = until_status(&s, "/readyz", 503, Duration::from_secs(15));
    assert!(body.contains("container runtime has not answered"), "{body}");
    assert_eq!(http_get(s.addr, "/healthz").unwrap().0, 200);
    assert_eq!(metric(s.addr, "driftwatch_health_check{check=\"runtime\"}"), 0.0);
    assert_eq!(metric(s.addr, "driftwatch_health_check{check=\"stdout\"}"), 1.0);
}

/// Two agents on one state directory (a rollout surge, a second instance
/// started by hand) both start: neither mistakes the other's write probe or
/// temporary state file for a broken directory.
#[test]
fn agents_sharing_a_state_directory_all_start() {
    if !support::privileged() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("driftwatch-shared-state-{}", std::process::id()));
    let cfg =
        support::otlp::config_file("shared-state", &format!("rules:\n  network:\n    state_dir: {}\n", dir.display()));
    let agents: Vec<support::agent::Agent> = std::thread::scope(|s| {
        let starts: Vec<_> =
            (0..4).map(|_| s.spawn(|| support::agent::Agent::start(&["--config", cfg.to_str().unwrap()]))).collect();
        starts.into_iter().map(|h| h.join().expect("an agent did not start")).collect()
    });
    assert_eq!(agents.len(), 4);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.contains("write-test"))
        .collect();
    assert!(leftovers.is_empty(), "write probes left behind: {leftovers:?}");
}

/// SIGKILL in the middle of a drift storm: no shutdown code runs, yet the
/// state the agent kept (network baselines, reported configuration findings:
/// written whole, renamed into place) is intact, and a new agent on it starts,
/// does not report the configuration finding again and goes on detecting the
/// storm. (Findings the killed agent had not written yet are gone with it:
/// what SIGKILL costs is at most the agent's queues, and the restart gap.)
#[test]
fn sigkill_mid_storm_leaves_state_a_new_agent_can_use() {
    if !support::privileged() {
        return;
    }
    use support::{
        agent::Agent,
        cri::{Pod, PodSpec},
    };
    let dir = std::env::temp_dir().join(format!("driftwatch-sigkill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (cfg, state) = (dir.join("c.yaml"), dir.join("state"));
    std::fs::write(
        &cfg,
        format!("kubernetes:\n  enabled: false\nrules:\n  network:\n    state_dir: {}\n", state.display()),
    )
    .unwrap();
    let endpoint = format!("unix://{}", support::containerd().address.display());
    let args = ["--runtime-endpoint", &endpoint, "--config", cfg.to_str().unwrap()];
    let spec =
        PodSpec::new("storm-7d8e9f0a1b-k1ll9", "storm").namespace("shop").label("pod-template-hash", "7d8e9f0a1b");
    let mut pod = Pod::run(&support::containerd().address, spec);
    let api = pod.start_container("api", &["/bin/sleep", "300"]);
    let ours =
        |a: &Agent| a.findings_of(&api.id).iter().filter(|f| f["process.executable.path"] == "/tmp/killbb").count();
    let first = Agent::start(&args);
    first.wait_for("config finding", |f| f["container.id"] == api.id.as_str() && f["rule"] == "image_mutable_tag");
    let memory = state.join("config-findings.json");
    let t0 = Instant::now();
    while !memory.exists() {
        assert!(t0.elapsed() < Duration::from_secs(30), "reported configuration findings never saved");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::scope(|s| {
        let storm = s.spawn(|| {
            api.exec_sync(&[
                "/bin/sh",
                "-c",
                // Until the test says stop (the new agent may take seconds to attach on a
                // busy node), at most 10,000 execs.
                "rm -f /tmp/stop; cp /bin/busybox /tmp/killbb && i=0; \
                 while [ ! -e /tmp/stop ] && [ $i -lt 10000 ]; do /tmp/killbb true; i=$((i+1)); done",
            ])
        });
        let t0 = Instant::now();
        while ours(&first) < 200 {
            assert!(t0.elapsed() < Duration::from_secs(60), "storm not seen: {}", ours(&first));
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: plain kill(2) on our child's pid.
        unsafe { libc::kill(first.pid() as i32, libc::SIGKILL) };
        let before = ours(&first);
        // Every state file left is whole JSON (a half-written one would be a temporary).
        for e in std::fs::read_dir(&state).unwrap().map(Result::unwrap) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") {
                let text = std::fs::read(e.path()).unwrap();
                serde_json::from_slice::<serde_json::Value>(&text).unwrap_or_else(|err| panic!("{name}: {err}"));
            }
        }
        let second = Agent::start(&args);
        let t0 = Instant::now();
        while ours(&second) < 100 {
            let done = storm.is_finished();
            assert!(
                !done || ours(&second) > 0,
                "the storm ended before the new agent saw it: {} findings",
                ours(&second)
            );
            assert!(t0.elapsed() < Duration::from_secs(60), "new agent sees no storm: {}", ours(&second));
            std::thread::sleep(Duration::from_millis(20));
        }
        let m = second.metrics();
        for bad in ["state_corrupt", "state_io"] {
            let series = format!("driftwatch_enrich_failures_total{{reason=\"{bad}\"}}");
            assert_eq!(second.metric(&series).unwrap_or(0.0), 0.0, "{bad}:\n{m}\n{}", second.stderr());
        }
        let again: Vec<_> = second.findings_of(&api.id).into_iter().filter(|f| f["kind"] == "config").collect();
        assert!(again.is_empty(), "configuration finding reported again after SIGKILL: {again:#?}");
        eprintln!("sigkill mid-storm: {before} storm findings before the kill, {} after the restart", ours(&second));
        api.exec_sync(&["/bin/touch", "/tmp/stop"]).expect("stop the storm");
        let (code, _, err) = storm.join().unwrap().expect("storm exec");
        assert_eq!(code, 0, "{err}");
    });
    drop(pod);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Names built to break a log line or a parser (newline, quotes, a JSON
/// fragment, a terminal escape, a right-to-left override, a long name) are
/// valid UTF-8: each comes out exactly as it is, unmarked, in one valid JSON
/// line per finding.
#[test]
fn hostile_names_come_out_exact_in_one_json_line_each() {
    if !support::privileged() {
        return;
    }
    let agent = support::agent::Agent::start(&[]);
    let c = support::containerd().run(RunSpec::sleeper());
    let long = format!("/tmp/{}", "l".repeat(200));
    let names = [
        "/tmp/new\nline".to_string(),
        "/tmp/quote\"d".to_string(),
        "/tmp/back\\slash".to_string(),
        "/tmp/\"},{\"rule\":\"none\"".to_string(),
        "/tmp/\u{1b}[31mred".to_string(),
        "/tmp/\u{202e}fdp.exe".to_string(),
        "/tmp/tab\there".to_string(),
        long,
    ];
    for n in &names {
        c.exec_ok(&["/bin/cp", "/usr/bin/hello", n]);
        c.exec_ok(&[n]);
    }
    for n in &names {
        let f = agent.wait_for(&format!("{n:?}"), |f| {
            f["container.id"] == c.id.as_str() && f["process.executable.path"] == n.as_str()
        });
        assert_eq!(f["rule"], "exec_new_binary", "{f:#}");
        assert!(f.get("driftwatch.exe.path_escaped").is_none(), "valid UTF-8 is not escaped: {f:#}");
    }
    assert!(agent.bad_stdout_lines().is_empty(), "{:?}", agent.bad_stdout_lines());
    for n in &names {
        let count = agent.findings_of(&c.id).iter().filter(|f| f["process.executable.path"] == n.as_str()).count();
        assert_eq!(count, 1, "{n:?}");
    }
}
