//! Protect mode end to end (issue 11 item 5): CRI pods on the private
//! containerd, the agent's kernel kill at exec, a monitor pod beside it.
//!
//! Run with: DRIFTWATCH_PRIVILEGED_TESTS=1 cargo test --test e2e_protect -- --nocapture
//! (the measured numbers are printed, never asserted).
mod support;

use serde_json::Value;
use std::{
    os::unix::process::ExitStatusExt,
    time::{Duration, Instant},
};
use support::{
    agent::Agent,
    cri::{CriContainer, Pod, PodSpec},
};

/// One test at a time: every agent arms every protect pod on the node, so a
/// test's agent without its approvals would kill what another's approves.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn endpoint() -> String {
    format!("unix://{}", support::containerd().address.display())
}

/// Approvals for the protect pod's namespace: one exact path, one tree.
const CONFIG: &str = r#"
policy:
  approvals:
    - name: guarded-tool
      reason: the on-call tool is copied in by the runbook
      match: {namespace: guarded, executable: /opt/tool/sh}
    - name: guarded-plugins
      reason: plugins are installed at start
      match: {namespace: guarded, executable: "/opt/plugins/**"}
    - name: guarded-by-parent
      reason: the kernel cannot check a parent
      match: {namespace: guarded, executable: /opt/parented/true, parent_executable: "/bin/*"}
"#;

fn run(c: &CriContainer, cmd: &[&str]) -> (i32, String) {
    let (code, out, err) = c.exec_sync(cmd).unwrap_or_else(|e| panic!("ExecSync {cmd:?}: {e}"));
    (code, format!("{out}{err}"))
}

fn sh(c: &CriContainer, script: &str) -> String {
    let (code, out) = run(c, &["/bin/sh", "-c", script]);
    assert_eq!(code, 0, "{script}: {out}");
    out.trim().to_string()
}

/// Waits for the agent's "armed" log line for `c`; returns its armed_after_ms.
fn armed_after_ms(agent: &Agent, c: &CriContainer) -> f64 {
    let short = &c.id[..12];
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = agent.stderr();
        if let Some(line) = log.lines().find(|l| l.contains("protect mode armed") && l.contains(short)) {
            let v = line.split("armed_after_ms=").nth(1).and_then(|r| r.split_whitespace().next());
            return v.and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
        }
        assert!(Instant::now() < deadline, "container {short} never armed:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn nanos_of(rfc3339: &str) -> i128 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).expect("time");
    t.unix_timestamp_nanos()
}

fn finding(agent: &Agent, c: &CriContainer, path: &str, argv_marker: &str) -> Value {
    agent.wait_for(&format!("finding for {path}"), |f| {
        f["container.id"] == c.id.as_str()
            && f["process.executable.path"] == path
            && f["process.command_args"].to_string().contains(argv_marker)
    })
}

/// Runs `argv` in `c` the way runc would, from this (host) process: joins the
/// container's cgroup and mount namespace in the child, then execs. Returns
/// the exit status and the wall time (ns) right after the wait returned.
fn exec_in(c: &CriContainer, argv: &[&str]) -> (std::process::ExitStatus, i128) {
    use std::{ffi::CString, os::unix::process::CommandExt};
    // The cgroup the sensor reads: v1 memory on a hybrid node, else v2.
    let lines = c.proc_cgroup();
    let dir = match lines.lines().find_map(|l| l.split_once(":memory:").map(|x| x.1.to_owned())) {
        Some(p) => format!("/sys/fs/cgroup/memory{p}"),
        None => format!("/sys/fs/cgroup{}", lines.lines().find_map(|l| l.strip_prefix("0::")).expect("cgroup v2")),
    };
    let procs = CString::new(format!("{dir}/cgroup.procs")).unwrap();
    let mnt = std::fs::File::open(format!("/proc/{}/ns/mnt", c.pid)).expect("mnt ns");
    let mnt_fd = std::os::fd::AsRawFd::as_raw_fd(&mnt);
    let mut cmd = std::process::Command::new(argv[0]);
    cmd.args(&argv[1..]);
    // SAFETY: only async-signal-safe calls (open, write, close, setns) on
    // memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            if libc::setns(mnt_fd, libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = cmd.status().expect("spawn into the container");
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    (status, now)
}

/// Time of `n` execs of an image binary (not a shell: the kernel's filtered
/// path), in ns per exec, measured inside the container (busybox has no
/// `date +%N`: /proc/uptime's centiseconds, over a loop long enough for them).
fn image_exec_ns(c: &CriContainer, n: u32) -> f64 {
    let script = format!(
        "cs() {{ read u _ < /proc/uptime; echo ${{u%.*}}${{u#*.}}; }}; i=0; s=$(cs); \
         while [ $i -lt {n} ]; do /usr/bin/hello >/dev/null; i=$((i+1)); done; echo $(( $(cs) - s ))"
    );
    sh(c, &script).parse::<f64>().expect("centiseconds") * 1e7 / f64::from(n)
}

/// Run time and count of the agent's own `dw_exec` program (several agents
/// may be loaded on the node: it is the one whose id the agent holds an fd of).
fn dw_exec_stats(agent: &Agent) -> Option<(Duration, u64)> {
    let mine: Vec<u32> = std::fs::read_dir(format!("/proc/{}/fdinfo", agent.pid()))
        .ok()?
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|t| t.lines().find_map(|l| l.strip_prefix("prog_id:")).and_then(|v| v.trim().parse().ok()))
        .collect();
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| mine.contains(&p.id()) && p.name_as_str() == Some("dw_exec"))
        .map(|p| (p.run_time(), p.run_count()))
}

/// Average run time of the agent's exec program over `f` (BPF run-time
/// statistics are on while the returned guard of `enable_stats` lives).
fn dw_exec_ns_during(agent: &Agent, f: impl FnOnce()) -> Option<f64> {
    let (t0, n0) = dw_exec_stats(agent)?;
    f();
    let (t1, n1) = dw_exec_stats(agent)?;
    (n1 > n0).then(|| (t1 - t0).as_nanos() as f64 / (n1 - n0) as f64)
}

#[test]
fn protect_pod_kills_binary_drift_before_it_runs_and_a_monitor_pod_beside_it_does_not() {
    if !support::privileged() {
        return;
    }
    let _serial = serial();
    let cfg = std::env::temp_dir().join(format!("driftwatch-protect-{}.yaml", std::process::id()));
    std::fs::write(&cfg, CONFIG).expect("config");
    let agent = Agent::start(&["--runtime-endpoint", &endpoint(), "--config", cfg.to_str().unwrap()]);
    let sock = &support::containerd().address;

    let guarded = PodSpec::new("vault-6f7d8c9b5a-pr0t3", "vault")
        .namespace("guarded")
        .label("pod-template-hash", "6f7d8c9b5a")
        .annotation("driftwatch.io/mode", "protect");
    let mut gpod = Pod::run(sock, guarded);
    let g = gpod.start_container("app", &["/bin/sleep", "300"]);
    let open = PodSpec::new("shop-5a6b7c8d9e-m0n1t", "shop").namespace("open").label("pod-template-hash", "5a6b7c8d9e");
    let mut opod = Pod::run(sock, open);
    let m = opod.start_container("app", &["/bin/sleep", "300"]);

    // The entrypoint ran (the container runs); protection was armed from it.
    let window = armed_after_ms(&agent, &g);
    println!("protect mode armed {window:.2} ms after the entrypoint's exec (fail-open before)");

    // runc exec (ExecSync) and the image's binaries run in the protect pod.
    assert_eq!(sh(&g, "echo ok"), "ok");
    assert_eq!(run(&g, &["/usr/bin/hello"]), (0, "hello\n".into()));

    // A dropped binary whose first action would write a marker: killed before it.
    // (busybox runs the applet its file is named after.)
    sh(&g, "cp /bin/busybox /tmp/sh");
    let (code, out) = run(&g, &["/tmp/sh", "-c", "echo hit > /tmp/marker"]);
    assert_eq!(code, 137, "SIGKILL: {out}");
    assert_eq!(sh(&g, "test -e /tmp/marker && echo present || echo absent"), "absent");
    let f = finding(&agent, &g, "/tmp/sh", "/tmp/marker");
    assert_eq!(f["rule"], "exec_new_binary", "{f:#}");
    assert_eq!(f["driftwatch.action"], "killed", "{f:#}");
    assert_eq!(f["k8s.namespace.name"], "guarded", "{f:#}");
    assert!(f["message"].as_str().unwrap_or("").contains("killed"), "{f:#}");

    // The same from a shell in the container: its parent sees the kill.
    let out = sh(&g, "/tmp/sh -c 'echo from-a-shell'; echo rc=$?");
    assert!(out.contains("rc=137"), "{out}");
    // Exec -> kill: a host process joins the container (cgroup, mount
    // namespace) and execs the dropped binary; the finding's kernel timestamp
    // of the exec against the moment its wait returns.
    for i in 0..5 {
        let (status, reaped_ns) = exec_in(&g, &["/tmp/sh", "-c", &format!(": timing-probe-{i}")]);
        assert_eq!(status.signal(), Some(9), "{status:?}");
        let f = finding(&agent, &g, "/tmp/sh", &format!("timing-probe-{i}"));
        assert_eq!(f["driftwatch.action"], "killed", "{f:#}");
        let us = (reaped_ns - nanos_of(f["time"].as_str().unwrap())) as f64 / 1e3;
        println!("exec -> killed process reaped by its parent: {us:.0} us");
    }

    // Approved executables run: an exact path, and a path under a dir/** approval.
    sh(
        &g,
        "mkdir -p /opt/tool /opt/plugins/a /opt/parented && cp /bin/busybox /opt/tool/sh && cp /bin/busybox /opt/plugins/a/true",
    );
    assert_eq!(run(&g, &["/opt/tool/sh", "-c", "echo hit > /tmp/marker2"]).0, 0);
    assert_eq!(sh(&g, "cat /tmp/marker2"), "hit");
    assert_eq!(run(&g, &["/opt/plugins/a/true"]).0, 0);
    // ...but not a sibling of the approved path, nor what only a parent approves.
    sh(&g, "cp /bin/busybox /opt/tool/true && cp /bin/busybox /opt/parented/true");
    assert_eq!(run(&g, &["/opt/tool/true"]).0, 137);
    assert_eq!(run(&g, &["/opt/parented/true"]).0, 137);
    assert!(agent.stderr().contains("approval \"guarded-by-parent\" uses keys the kernel cannot check"));
    // Userspace approves it (its parent is the image's shell) where the kernel could
    // not: the kill is evidence, its finding goes out, naming the approval.
    let out = sh(&g, "/opt/parented/true parent-probe; echo rc=$?; sleep 1");
    assert!(out.contains("rc=137"), "{out}");
    let f = finding(&agent, &g, "/opt/parented/true", "parent-probe");
    assert_eq!(f["driftwatch.action"], "killed", "{f:#}");
    assert_eq!(f["driftwatch.approval"], "guarded-by-parent", "{f:#}");

    // A dropped #! script: the kernel releases the script's file before the
    // exec tracepoint, so it is judged when its interpreter opens it, and
    // killed there, before its first line. Image scripts run.
    sh(&g, "printf '#!/bin/sh\\necho hit > /tmp/smarker\\n' > /tmp/s.sh && chmod +x /tmp/s.sh");
    let (code, out) = run(&g, &["/tmp/s.sh", "script-probe"]);
    assert_eq!(code, 137, "{out}");
    let out = sh(&g, "cd /tmp && ./s.sh relative-probe; echo rc=$?");
    assert!(out.contains("rc=137"), "{out}");
    assert_eq!(sh(&g, "test -e /tmp/smarker && echo present || echo absent"), "absent");
    for probe in ["script-probe", "relative-probe"] {
        let f = agent.wait_for(probe, |f| {
            f["container.id"] == g.id.as_str()
                && f["driftwatch.script.path"] == "/tmp/s.sh"
                && f["process.command_args"].to_string().contains(probe)
        });
        assert_eq!(f["rule"], "exec_new_script", "{f:#}");
        assert_eq!(f["driftwatch.script.path"], "/tmp/s.sh", "{f:#}");
        assert_eq!(f["driftwatch.action"], "killed", "{f:#}");
    }
    assert_eq!(run(&g, &["/usr/bin/pip", "install", "x"]), (0, "fake pip: install x\n".into()));

    // The monitor pod beside it: the same drift runs and is only reported.
    sh(&m, "printf '#!/bin/sh\\necho hit > /tmp/smarker\\n' > /tmp/s.sh && chmod +x /tmp/s.sh");
    assert_eq!(run(&m, &["/tmp/s.sh", "script-probe"]).0, 0);
    assert_eq!(sh(&m, "cat /tmp/smarker"), "hit");
    sh(&m, "cp /bin/busybox /tmp/sh");
    assert_eq!(run(&m, &["/tmp/sh", "-c", "echo hit > /tmp/marker"]).0, 0);
    assert_eq!(sh(&m, "cat /tmp/marker"), "hit");
    let f = finding(&agent, &m, "/tmp/sh", "/tmp/marker");
    assert_eq!(f["rule"], "exec_new_binary", "{f:#}");
    assert!(f.get("driftwatch.action").is_none(), "nothing was done: {f:#}");

    let kills = agent.metric("driftwatch_kernel_protect_execs_total{result=\"killed\"}").unwrap_or(0.0);
    assert!(kills >= 4.0, "kills counted: {}", agent.metrics());
    let approved = agent.metric("driftwatch_kernel_protect_execs_total{result=\"approved\"}").unwrap_or(0.0);
    assert!(approved >= 2.0, "approved execs counted: {}", agent.metrics());

    // Cost of protect mode for image binaries: the same loop in both pods,
    // alternating which goes first; per round, the loop's wall time per exec
    // and the exec program's own run time per exec (BPF run-time statistics
    // of the agent's dw_exec). Printed, never asserted (a shared CI box).
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).ok();
    let (n, rounds) = (1500, 6);
    let (mut wall, mut prog) = (Vec::new(), Vec::new());
    let measure = |c: &CriContainer| {
        let mut ns = 0.0;
        let k = dw_exec_ns_during(&agent, || ns = image_exec_ns(c, n));
        (ns, k)
    };
    for r in 0..rounds {
        let ((pw, pk), (mw, mk)) = if r % 2 == 0 {
            let p = measure(&g);
            (p, measure(&m))
        } else {
            let o = measure(&m);
            (measure(&g), o)
        };
        wall.push(pw / mw);
        if let (Some(pk), Some(mk)) = (pk, mk) {
            prog.push(pk / mk);
        }
        println!(
            "round {r}: image-binary exec protect {:.0} us / monitor {:.0} us; dw_exec protect {:.0} ns / monitor {:.0} ns",
            pw / 1e3,
            mw / 1e3,
            pk.unwrap_or(f64::NAN),
            mk.unwrap_or(f64::NAN)
        );
    }
    drop(stats);
    let summary = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        format!("median {:.3} (min {:.3}, max {:.3})", v[v.len() / 2], v[0], v[v.len() - 1])
    };
    println!("image-binary exec wall time, protect/monitor ratio per round: {}", summary(&mut wall));
    if !prog.is_empty() {
        println!("dw_exec run time per exec, protect/monitor ratio per round: {}", summary(&mut prog));
    }
    let _ = std::fs::remove_file(&cfg);
}

/// A protect container that predates the agent is armed from the registry's
/// first `/proc` scan, before any exec of it is reported: its first drift is
/// already killed. The container's pid 1 is known and never killed.
#[test]
fn a_protect_container_running_before_the_agent_is_armed_from_the_scan() {
    if !support::privileged() {
        return;
    }
    let _serial = serial();
    let sock = &support::containerd().address;
    let spec = PodSpec::new("early-7a8b9c0d1e-b3f0r", "early")
        .namespace("guarded-early")
        .label("pod-template-hash", "7a8b9c0d1e")
        .annotation("driftwatch.io/mode", "protect");
    let mut pod = Pod::run(sock, spec);
    let c = pod.start_container("app", &["/bin/sleep", "300"]);
    sh(&c, "cp /bin/busybox /tmp/sh");
    let agent = Agent::start(&["--runtime-endpoint", &endpoint()]);
    let window = armed_after_ms(&agent, &c);
    assert!(window.is_nan(), "armed from a scan, not an exec: {window}");
    let (code, out) = run(&c, &["/tmp/sh", "-c", "echo hit > /tmp/marker"]);
    assert_eq!(code, 137, "{out}");
    assert_eq!(sh(&c, "test -e /tmp/marker && echo present || echo absent"), "absent");
    let f = finding(&agent, &c, "/tmp/sh", "/tmp/marker");
    assert_eq!(f["driftwatch.action"], "killed", "{f:#}");
}

/// Learn mode, then protect after a config reload: the binary learn mode saw
/// runs (its signature is in the kernel), another dropped binary is killed;
/// back to monitor, nothing is killed (the container is disarmed).
#[test]
fn learned_binaries_run_in_protect_mode_and_a_reload_rearms_or_disarms() {
    if !support::privileged() {
        return;
    }
    let _serial = serial();
    let cfg = std::env::temp_dir().join(format!("driftwatch-learn-protect-{}.yaml", std::process::id()));
    let config = |mode: &str| {
        format!(
            "rules: {{network: {{state_dir: \"\"}}}}\npolicy:\n  modes:\n    - {{match: {{namespace: learnt}}, mode: {mode}}}\n"
        )
    };
    std::fs::write(&cfg, config("learn")).expect("config");
    let agent = Agent::start(&["--runtime-endpoint", &endpoint(), "--config", cfg.to_str().unwrap()]);
    let sock = &support::containerd().address;
    let spec =
        PodSpec::new("batch-6d7e8f9a0b-l34rn", "batch").namespace("learnt").label("pod-template-hash", "6d7e8f9a0b");
    let mut pod = Pod::run(sock, spec);
    let c = pod.start_container("app", support::cri::TRIGGER_LOOP);

    // Learn mode: the dropped tool runs and is learned, not reported. Run by
    // the container's own tree: an exec session's drift is never learned.
    sh(&c, "cp /bin/busybox /tmp/sh && cp /bin/busybox /tmp/true");
    assert_eq!(c.run_in_tree("/tmp/sh -c true"), 0);
    let series = "driftwatch_findings_learned_total{kind=\"binary\",rule=\"exec_new_binary\"}";
    let deadline = Instant::now() + Duration::from_secs(15);
    while agent.metric(series).unwrap_or(0.0) < 1.0 {
        assert!(Instant::now() < deadline, "never learned:\n{}", agent.metrics());
        std::thread::sleep(Duration::from_millis(50));
    }

    // Protect, by a config change (reloaded without a restart).
    std::fs::write(&cfg, config("protect")).expect("config");
    armed_after_ms(&agent, &c);
    assert!(agent.stderr().contains("learned_in_kernel=1"), "{}", agent.stderr());
    assert_eq!(run(&c, &["/tmp/sh", "-c", "echo hit > /tmp/marker"]).0, 0, "learned: runs");
    assert_eq!(sh(&c, "cat /tmp/marker"), "hit");
    assert_eq!(run(&c, &["/tmp/true"]).0, 137, "not learned: killed");

    // Monitor again: disarmed.
    std::fs::write(&cfg, config("monitor")).expect("config");
    let deadline = Instant::now() + Duration::from_secs(15);
    while run(&c, &["/tmp/true"]).0 != 0 {
        assert!(Instant::now() < deadline, "still protected after the reload to monitor");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::fs::remove_file(&cfg);
}
