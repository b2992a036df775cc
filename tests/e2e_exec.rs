//! End to end on the real kernel, in real containers (private containerd +
//! runc + overlayfs, see tests/support): the agent binary loads its eBPF
//! sensor, containers drift, and the exact findings come out on stdout.
//!
//! Run with: DRIFTWATCH_PRIVILEGED_TESTS=1 cargo test --test e2e_exec
mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{RunSpec, agent::Agent};

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
}

/// Findings of `c` except the sentinel shells and file drift (the copies
/// these tests make are file changes too; tests/e2e_file.rs covers those).
fn real_findings(agent: &Agent, c: &support::Container) -> Vec<Value> {
    agent
        .findings_of(&c.id)
        .into_iter()
        .filter(|f| !f["process.command_args"].to_string().contains("sentinel-"))
        .filter(|f| f["kind"] != "file")
        .collect()
}

/// Writes an executable script into the container (itself file drift, which
/// `real_findings` leaves out).
fn drop_script(c: &support::Container, path: &str, body: &str) {
    c.exec_ok(&["/bin/sh", "-c", &format!("printf '{body}' > {path} && chmod +x {path}")]);
}

fn assert_common(f: &Value, c: &support::Container) {
    assert_eq!(f["container.id"], c.id.as_str());
    assert_eq!(f["container.runtime.name"], "containerd");
    assert!(f["process.pid"].as_u64().unwrap() > 1, "{f}");
    assert!(f["process.parent_pid"].as_u64().unwrap() > 0, "{f}");
    assert_eq!(f["process.user.id"], 0);
    assert!(s(f, "driftwatch.cgroup.path").ends_with(&c.id), "{f}");
    let t = s(f, "time");
    assert!(t.len() == 30 && t.ends_with('Z'), "RFC 3339 with ns: {t}");
}

#[test]
fn dropped_binary_in_upper_layer() {
    if !support::privileged() {
        return;
    }
    let agent = Agent::start(&[]);
    let c = support::containerd().run(RunSpec::sleeper());
    c.exec_ok(&["/bin/cp", "/bin/busybox", "/tmp/busybox"]);
    c.exec_ok(&["/tmp/busybox", "true"]);
    support::settle(&agent, &c);
    let f = real_findings(&agent, &c);
    assert_eq!(f.len(), 1, "exactly one finding: {f:#?}");
    let f = &f[0];
    assert_common(f, &c);
    assert_eq!(f["kind"], "binary");
    assert_eq!(f["rule"], "exec_new_binary");
    assert_eq!(f["severity"], "critical");
    assert_eq!(f["playbook_step"], "isolate");
    assert_eq!(f["process.executable.path"], "/tmp/busybox");
    assert_eq!(f["process.executable.name"], "busybox");
    assert_eq!(f["process.command_args"], json!(["/tmp/busybox", "true"]));
    assert_eq!(f["driftwatch.exe.source"], "upper_layer");
    assert_eq!(f["driftwatch.exe.origin"], "new_file");
    assert_eq!(f["driftwatch.lineage.drifted_ancestor"], false);
    assert!(s(f, "message").contains("/tmp/busybox"), "{f}");
}

/// Issue 10: names that are not UTF-8 were replaced by U+FFFD, so
/// `bad\xff\xfe` and `bad\xfe\xff` printed alike. Now each is escaped
/// (`\xHH`), marked, and its layer is still found by its bytes.
#[test]
fn binaries_named_with_bytes_that_are_not_utf8_stay_apart() {
    if !support::privileged() {
        return;
    }
    let agent = Agent::start(&[]);
    let c = support::containerd().run(RunSpec::sleeper());
    // Dropped copies of an image binary on the writable layer, run by their names.
    let script =
        r#"for n in '\377\376' '\376\377'; do p=$(printf "/root/bad$n"); cp /usr/bin/hello "$p" && "$p"; done"#;
    assert_eq!(c.exec_ok(&["/bin/sh", "-c", script]).split_whitespace().collect::<Vec<_>>(), ["hello", "hello"]);
    support::settle(&agent, &c);
    let f: Vec<Value> = real_findings(&agent, &c).into_iter().filter(|f| f["rule"] == "exec_new_binary").collect();
    assert_eq!(f.len(), 2, "one finding per binary: {f:#?}");
    for name in [r"bad\xff\xfe", r"bad\xfe\xff"] {
        let path = format!("/root/{name}");
        let v = f.iter().find(|v| v["process.executable.path"] == path.as_str()).unwrap_or_else(|| panic!("{f:#?}"));
        assert_common(v, &c);
        assert_eq!(v["process.executable.name"], name, "{v:#}");
        assert_eq!(v["process.command_args"], json!([path]), "{v:#}");
        for key in ["driftwatch.exe.path_escaped", "driftwatch.exe.name_escaped", "driftwatch.process.args_escaped"] {
            assert_eq!(v[key], true, "{key}: {v:#}");
        }
        assert!(v.get("driftwatch.process.parent.name_escaped").is_none(), "sh is UTF-8: {v:#}");
        // The upper layer was looked up by the kernel's bytes: escaped text would not be found there.
        assert_eq!(v["driftwatch.exe.origin"], "new_file", "{v:#}");
        assert!(s(v, "message").contains(&path), "{v:#}");
    }
    let all = agent.findings_of(&c.id);
    assert!(!serde_json::to_string(&all).unwrap().contains('\u{fffd}'), "nothing replaced: {all:#?}");
    assert!(agent.bad_stdout_lines().is_empty(), "{:?}", agent.bad_stdout_lines());
}

#[test]
fn image_binary_overwritten_in_place() {
    if !support::privileged() {
        return;
    }
    let agent = Agent::start(&[]);
    let c = support::containerd().run(RunSpec::sleeper());
    // Before: an image binary runs quietly.
    assert_eq!(c.exec_ok(&["/usr/bin/hello"]).trim(), "hello");
    // Overwrite it in place (overlayfs copies it up), then run it.
    c.exec_ok(&["/bin/cp", "/bin/busybox", "/usr/bin/hello"]);
    let _ = c.exec(&["/usr/bin/hello"]); // busybox: "hello: applet not found"
    support::settle(&agent, &c);
    let f = real_findings(&agent, &c);
    assert_eq!(f.len(), 1, "only the overwritten binary: {f:#?}");
    assert_common(&f[0], &c);
    assert_eq!(f[0]["rule"], "exec_new_binary");
    assert_eq!(f[0]["process.executable.path"], "/usr/bin/hello");
    assert_eq!(f[0]["driftwatch.exe.source"], "upper_layer");
    assert_eq!(f[0]["driftwatch.exe.origin"], "image_file_modified");
}

#[test]
fn chmod_or_touch_of_an_image_binary_is_not_drift() {
    if !support::privileged() {
        return;
    }
    // chmod and touch make overlayfs copy the image file up unchanged: the
    // kernel sees an upper-layer executable, the content is still the image's.
    let agent = Agent::start(&[]);
    let c = support::containerd().run(RunSpec::sleeper());
    c.exec_ok(&["/bin/chmod", "755", "/usr/bin/hello"]);
    assert_eq!(c.exec_ok(&["/usr/bin/hello"]).trim(), "hello");
    c.exec_ok(&["/bin/touch", "/usr/bin/memexec"]);
    c.exec_ok(&["/usr/bin/memexec", "/bin/busybox", "true"]); // the memfd payload is drift, memexec is not
    // A file written in the container and then made executable is.
    c.exec_ok(&["/bin/sh", "-c", "cat /bin/busybox > /tmp/busybox && chmod +x /tmp/busybox"]);
    c.exec_ok(&["/tmp/busybox", "true"]);
    support::settle(&agent, &c);
    let f: Vec<Value> = real_findings(&agent, &c).into_iter().filter(|f| f["kind"] == "binary").collect();
    let rules: Vec<&str> = f.iter().map(|f| f["rule"].as_str().unwrap_or("")).collect();
    assert_eq!(f.len(), 2, "only the memfd payload and /tmp/busybox: {f:#?}");
    assert!(rules.contains(&"exec_fileless_memfd"), "{rules:?}");
    let bb = f.iter().find(|f| f["rule"] == "exec_new_binary").expect("/tmp/busybox reported");
    assert_eq!(bb["process.executable.path"], "/tmp/busybox");
    assert_eq!(bb["driftwatch.exe.origin"], "new_file");
    assert!(
        agent.metric("driftwatch_execs_not_findings_total{reason=\"metadata_only_copy_up\"}").unwrap_or(0.0) >= 2.0,
        "{}",
        agent.metrics()
    );
}

#[test]
fn dropped_or_edited_scripts_are_binary_drift() {
    if !support::privileged() {
        return;
    }
    // The kernel runs a #! script's interpreter (an image /bin/sh) and has
    // released the script's file by the time it reports the exec; the agent
    // judges the script's layer itself.
    let agent = Agent::start(&[]);
    let c = support::containerd().run(RunSpec::sleeper().tmpfs("/scratch"));
    let script = "#!/bin/sh\necho ran\n";
    drop_script(&c, "/root/dropped.sh", script);
    assert_eq!(c.exec_ok(&["/root/dropped.sh"]).trim(), "ran");
    drop_script(&c, "/root/rel.sh", script);
    c.exec_ok(&["/bin/sh", "-c", "cd /root && ./rel.sh"]); // a relative name, joined to the cwd
    drop_script(&c, "/scratch/vol.sh", script);
    c.exec_ok(&["/scratch/vol.sh"]);
    // An image script whose content changed is drift; one only chmod'ed is not.
    c.exec_ok(&["/bin/sh", "-c", "echo 'echo edited' >> /usr/bin/pip"]);
    c.exec_ok(&["/usr/bin/pip", "list"]);
    c.exec_ok(&["/bin/chmod", "755", "/usr/bin/apt-get"]);
    c.exec_ok(&["/usr/bin/apt-get", "--version"]);
    support::settle(&agent, &c);
    let f = real_findings(&agent, &c);
    let scripts: Vec<&Value> = f.iter().filter(|v| v["rule"] == "exec_new_script").collect();
    let by_path = |p: &str| {
        scripts
            .iter()
            .find(|v| v["driftwatch.script.path"] == p)
            .unwrap_or_else(|| panic!("exec_new_script for {p} in {f:#?}"))
    };
    let d = by_path("/root/dropped.sh");
    assert_common(d, &c);
    assert_eq!((d["kind"].as_str(), d["playbook_step"].as_str()), (Some("binary"), Some("isolate")));
    assert_eq!(d["driftwatch.script.source"], "upper_layer");
    assert_eq!(d["driftwatch.exe.source"], "image", "the interpreter is the image's: {d:#}");
    assert_eq!(by_path("/root/rel.sh")["driftwatch.script.source"], "upper_layer");
    assert_eq!(by_path("/scratch/vol.sh")["driftwatch.script.source"], "volume");
    assert_eq!(by_path("/usr/bin/pip")["driftwatch.script.source"], "upper_layer");
    assert_eq!(scripts.len(), 4, "apt-get was only chmod'ed: {scripts:#?}");
    // apt-get is still a package manager run, judged by its name.
    let apt = f.iter().find(|v| v["driftwatch.script.path"] == "/usr/bin/apt-get").expect("apt-get finding");
    assert_eq!(
        (apt["rule"].as_str(), apt["driftwatch.script.source"].as_str()),
        (Some("package_manager_exec"), Some("image"))
    );
}

#[test]
fn what_a_dropped_script_starts_descends_from_drift() {
    if !support::privileged() {
        return;
    }
    // The agent judges the script and marks it in the kernel's lineage table;
    // an image binary the script starts afterwards is reported with it.
    let agent = Agent::start(&[]);
    let c = support::containerd().run(RunSpec::sleeper());
    let script = "#!/bin/sh\nsleep 1\n/usr/bin/hello\n";
    drop_script(&c, "/root/parent.sh", script);
    assert_eq!(c.exec_ok(&["/root/parent.sh"]).trim(), "hello");
    support::settle(&agent, &c);
    let f = real_findings(&agent, &c);
    assert!(
        f.iter().any(|v| v["rule"] == "exec_new_script" && v["driftwatch.script.path"] == "/root/parent.sh"),
        "{f:#?}"
    );
    let child = f
        .iter()
        .find(|v| v["process.executable.path"] == "/usr/bin/hello")
        .unwrap_or_else(|| panic!("hello, started by the dropped script, reported: {f:#?}"));
    assert_eq!(child["rule"], "exec_by_drifted_process");
    assert_eq!(child["driftwatch.lineage.drifted_ancestor"], true);
}

#[test]
fn memfd_exec_is_fileless_drift() {
    if !support::privileged() {
        return;
    }
    let agent = Agent::start(&[]);
    let c = support::containerd().run(RunSpec::sleeper());
    c.exec_ok(&["/usr/bin/memexec", "/bin/busybox", "true"]);
    support::settle(&agent, &c);
    let f = real_findings(&agent, &c);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_common(&f[0], &c);
    assert_eq!(f[0]["kind"], "binary");
    assert_eq!(f[0]["rule"], "exec_fileless_memfd");
    assert_eq!(f[0]["driftwatch.exe.source"], "memfd");
    assert_eq!(f[0]["process.executable.path"], "/memfd:payload");
    assert_eq!(f[0]["process.command_args"], json!(["/bin/busybox", "true"]));
}

#[test]
fn exec_from_tmpfs_volume() {
    if !support::privileged() {
        return;
    }
    let agent = Agent::start(&[]);
    let c = support::containerd().run(RunSpec::sleeper().tmpfs("/scratch"));
    c.exec_ok(&["/bin/cp", "/bin/busybox", "/scratch/busybox"]);
    c.exec_ok(&["/scratch/busybox", "true"]);
    support::settle(&agent, &c);
    let f = real_findings(&agent, &c);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_common(&f[0], &c);
    assert_eq!(f[0]["rule"], "exec_from_tmpfs");
    assert_eq!(f[0]["driftwatch.exe.source"], "tmpfs");
    assert_eq!(f[0]["process.executable.path"], "/scratch/busybox");
}

#[test]
fn shell_in_container() {
    if !support::privileged() {
        return;
    }
    let agent = Agent::start(&[]);
    let c = support::containerd().run(RunSpec::sleeper());
    c.exec_ok(&["/bin/sh", "-c", "/bin/true; /bin/true"]);
    let f = agent.wait_for("shell", |f| f["container.id"] == c.id.as_str() && f["kind"] == "shell");
    assert_common(&f, &c);
    assert_eq!(f["rule"], "shell_in_container");
    assert_eq!(f["severity"], "warning");
    assert_eq!(f["playbook_step"], "validate");
    assert_eq!(f["driftwatch.shell.name"], "sh");
    assert_eq!(f["process.interactive"], false);
    assert_eq!(f["driftwatch.exe.source"], "image");
    assert_eq!(f["process.command_args"], json!(["/bin/sh", "-c", "/bin/true; /bin/true"]));
    assert!(!s(&f, "driftwatch.process.parent.name").is_empty(), "{f}");
    support::settle(&agent, &c);
    // One finding for the shell; the image binaries it ran are quiet.
    assert_eq!(real_findings(&agent, &c).len(), 1, "{:#?}", real_findings(&agent, &c));
}

/// A finding that is not drift (a shell) still leaves within milliseconds:
/// the kernel wakes the reader for it (`sensor.wake_interval_ms`, 10 by
/// default) instead of leaving it to the drain timer, here slowed to 1 s.
/// Measured here: 15-47 ms from `exec` to finding; with `wake_interval_ms:
/// 0` (timer only) 0.99-1.02 s, every time.
#[test]
fn findings_that_are_not_drift_wake_the_reader_within_the_wake_interval() {
    if !support::privileged() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("dw-wake-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("slow-timer.yaml");
    std::fs::write(&cfg, "sensor:\n  drain_interval_ms: 1000\n").unwrap();
    let agent = Agent::start(&["--config", cfg.to_str().unwrap()]);
    let c = support::containerd().run(RunSpec::sleeper());
    // The first finding of a container may wait for its metadata: not timed.
    c.exec_ok(&["/bin/sh", "-c", "true"]);
    agent.wait_for("first shell", |f| f["container.id"] == c.id.as_str() && f["kind"] == "shell");
    let mut waits: Vec<Duration> = (0..7)
        .map(|i| {
            let cmd = format!("exit 0 # shell {i}");
            let t0 = Instant::now();
            c.exec_ok(&["/bin/sh", "-c", &cmd]);
            agent.wait_for("shell", |f| {
                f["container.id"] == c.id.as_str() && f["process.command_args"][2] == cmd.as_str()
            });
            t0.elapsed()
        })
        .collect();
    waits.sort();
    // exec_ok itself (runc exec) is part of each wait; 350 ms leaves room for
    // a busy CI host while a 1 s timer would exceed it in most runs.
    assert!(waits[3] < Duration::from_millis(350), "exec to finding: {waits:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn package_managers_direct_and_through_an_interpreter() {
    if !support::privileged() {
        return;
    }
    let agent = Agent::start(&[]);
    let c = support::containerd().run(RunSpec::sleeper());
    c.exec_ok(&["/usr/bin/apt-get", "install", "-y", "curl"]);
    c.exec_ok(&["/bin/sh", "/usr/bin/pip", "install", "requests"]);
    // Run directly, the way pip is: a #! script with a subcommand.
    c.exec_ok(&["/usr/bin/pip", "install", "flask"]);
    support::settle(&agent, &c);
    let mut f = real_findings(&agent, &c);
    assert_eq!(f.len(), 3, "{f:#?}");
    f.sort_by_key(|v| s(v, "driftwatch.package.manager"));
    for v in &f {
        assert_common(v, &c);
        assert_eq!(v["kind"], "package");
        assert_eq!(v["rule"], "package_manager_exec");
        assert_eq!(v["playbook_step"], "validate");
    }
    // The #! script: the kernel runs /bin/sh (busybox) with the script's name.
    assert_eq!(f[0]["driftwatch.package.manager"], "apt-get");
    assert_eq!(f[0]["process.executable.name"], "apt-get");
    assert_eq!(f[0]["driftwatch.script.path"], "/usr/bin/apt-get");
    // The kernel has released the script file at exec: the agent judged its layer.
    assert_eq!(f[0]["driftwatch.script.source"], "image");
    // An interpreter running the package manager's script: not a shell finding.
    let pip = |pkg: &str| f.iter().find(|v| v["process.command_args"].to_string().contains(pkg)).unwrap();
    assert_eq!(pip("requests")["driftwatch.package.manager"], "pip install");
    assert_eq!(pip("requests")["process.command_args"], json!(["/bin/sh", "/usr/bin/pip", "install", "requests"]));
    // The script run directly: the kernel's argv is its interpreter's.
    assert_eq!(pip("flask")["driftwatch.package.manager"], "pip install");
    assert_eq!(pip("flask")["process.command_args"], json!(["/bin/sh", "/usr/bin/pip", "install", "flask"]));
    assert_eq!(pip("flask")["driftwatch.script.path"], "/usr/bin/pip");
}

#[test]
fn entrypoint_image_binaries_and_runc_exec_are_quiet() {
    if !support::privileged() {
        return;
    }
    let agent = Agent::start(&[]);
    // A shell entrypoint: the container's own start is not drift.
    let c = support::containerd().run(RunSpec::new(&["/bin/sh", "-c", "/bin/sleep 300"]));
    c.exec_ok(&["/usr/bin/hello"]);
    c.exec_ok(&["/bin/ls", "/"]);
    c.exec_ok(&["/bin/cat", "/etc/hostname"]);
    // Through containerd's shim, as kubectl exec would: runc re-executes itself
    // from a memfd, which must not count as fileless drift.
    let out = c.exec_ctr(&["/bin/true"]);
    assert!(out.status.success(), "{out:?}");
    support::settle(&agent, &c);
    let f = real_findings(&agent, &c);
    assert!(f.is_empty(), "expected no findings, got {f:#?}");
    assert!(agent.metric("driftwatch_execs_not_findings_total{reason=\"entrypoint\"}").unwrap_or(0.0) >= 1.0);
}

#[test]
fn the_same_actions_on_the_host_are_quiet() {
    if !support::privileged() {
        return;
    }
    let agent = Agent::start(&[]);
    let before = agent.metric("driftwatch_kernel_execs_total{verdict=\"host_filtered\"}").unwrap_or(0.0);
    let dir = std::env::temp_dir().join(format!("dw-host-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bb = dir.join("busybox");
    std::fs::copy("/bin/busybox", &bb).unwrap();
    let marker = dir.display().to_string();
    let run = |args: &[&str]| {
        let st = std::process::Command::new(args[0]).args(&args[1..]).status().unwrap();
        assert!(st.success(), "{args:?}");
    };
    run(&[bb.to_str().unwrap(), "true"]);
    run(&["/bin/sh", "-c", &format!("true {marker}")]);
    run(&[bb.to_str().unwrap(), "sh", "-c", &format!("true {marker}")]);
    // Settle through a container sentinel (same ordered ring buffer).
    let c = support::containerd().run(RunSpec::sleeper());
    support::settle(&agent, &c);
    let leaked: Vec<Value> = agent
        .findings()
        .into_iter()
        .filter(|f| f.to_string().contains(&marker) || f["process.executable.path"] == bb.to_str().unwrap())
        .collect();
    assert!(leaked.is_empty(), "host activity reported: {leaked:#?}");
    let after = agent.metric("driftwatch_kernel_execs_total{verdict=\"host_filtered\"}").unwrap_or(0.0);
    assert!(after >= before + 3.0, "host execs filtered in the kernel: {before} -> {after}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn metrics_and_health_endpoints() {
    if !support::privileged() {
        return;
    }
    let agent = Agent::start(&[]);
    let (st, _, _) = support::agent::http_get(agent.addr, "/healthz").unwrap();
    assert_eq!(st, 200);
    let (st, _, _) = support::agent::http_get(agent.addr, "/readyz").unwrap();
    assert_eq!(st, 200);
    let c = support::containerd().run(RunSpec::sleeper());
    c.exec_ok(&["/usr/bin/memexec", "/bin/busybox", "true"]);
    agent.wait_for("memfd", |f| f["container.id"] == c.id.as_str() && f["rule"] == "exec_fileless_memfd");
    let (st, ctype, body) = support::agent::http_get(agent.addr, "/metrics").unwrap();
    assert_eq!(st, 200);
    assert_eq!(ctype, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    assert!(body.ends_with("# EOF\n"), "OpenMetrics must end with # EOF");
    let v = |series: &str| agent.metric(series).unwrap_or_else(|| panic!("missing {series} in\n{body}"));
    assert!(v("driftwatch_findings_total{kind=\"binary\",rule=\"exec_fileless_memfd\",severity=\"critical\"}") >= 1.0);
    assert!(v("driftwatch_kernel_events_total{kind=\"exec\"}") >= 1.0);
    assert_eq!(v("driftwatch_kernel_ringbuf_drops_total{kind=\"exec\"}"), 0.0);
    assert_eq!(v("driftwatch_userspace_drops_total{queue=\"events\"}"), 0.0);
    assert!(v("driftwatch_events_total{kind=\"exec\"}") >= 1.0);
    // The container's cgroup path is remembered (bounded: enrich::memo::SLOTS).
    let paths = v("driftwatch_cache_entries{cache=\"container_paths\"}");
    assert!((1.0..=16.0).contains(&paths), "{paths}");
    // So are the decoded cgroup paths (event::CGROUP_SLOTS) and the texts the
    // redaction patterns found clean (a finding's command line, path, message: 32 at most).
    let decoded = v("driftwatch_cache_entries{cache=\"cgroup_paths\"}");
    assert!((1.0..=16.0).contains(&decoded), "{decoded}");
    let clean = v("driftwatch_cache_entries{cache=\"redaction_clean\"}");
    assert!((1.0..=32.0).contains(&clean), "{clean}");
    // And the rule headers of the findings' JSON lines (128 at most a writing thread).
    let headers = v("driftwatch_cache_entries{cache=\"finding_headers\"}");
    assert!((1.0..=4.0 * 128.0).contains(&headers), "{headers}");
    // And the findings' spare boxes (16 at most a thread; none yet is possible
    // when the write came before the finding's box was dropped).
    let boxes = v("driftwatch_cache_entries{cache=\"finding_boxes\"}");
    assert!((0.0..=4.0 * 16.0).contains(&boxes), "{boxes}");
    // And the processes the periodic /proc scan read (one per process on the
    // node: it forgets the ended ones; other tests start and end processes meanwhile).
    let procs = v("driftwatch_cache_entries{cache=\"proc_scan\"}");
    let on_node = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|s| s.parse::<u32>().is_ok()))
        .count() as f64;
    assert!(procs >= 1.0 && procs <= 2.0 * on_node + 100.0, "{procs} known, {on_node} running");
    assert_eq!(v("driftwatch_bpf_programs_attached"), 9.0);
    assert!(body.contains("driftwatch_build_info{version=\""), "{body}");
    assert!(body.contains("driftwatch_detection_latency_seconds_bucket"), "{body}");
    let (st, _, _) = support::agent::http_get(agent.addr, "/nope").unwrap();
    assert_eq!(st, 404);
}

/// The kernel charges the verifier's working memory to the agent's memory
/// cgroup while the sensor loads, so the chart's memory limit (256Mi) holds
/// only while every program stays cheap to verify: `dw_exec` once took
/// 422k verified instructions and ~700 MB of kernel memory at start (the
/// shipped-image pod was OOM-killed). Budget: 150k per program, read from
/// each program fd's `verified_insns` (/proc/<pid>/fdinfo, kernel >= 5.16).
#[test]
fn every_program_stays_within_its_verifier_budget() {
    if !support::privileged() {
        return;
    }
    let agent = Agent::start(&[]);
    let fdinfo = std::path::PathBuf::from(format!("/proc/{}/fdinfo", agent.pid()));
    let mut verified = Vec::new();
    for entry in std::fs::read_dir(&fdinfo).expect("agent fdinfo") {
        let Ok(text) = std::fs::read_to_string(entry.expect("fdinfo entry").path()) else { continue };
        let field = |name: &str| {
            text.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().parse::<u64>().expect("a number"))
        };
        if let (Some(id), Some(n)) = (field("prog_id:"), field("verified_insns:")) {
            verified.push((id, n));
        }
    }
    // 9 sensor programs (driftwatch_bpf_programs_attached), some fds may be duplicated.
    verified.sort();
    verified.dedup();
    assert!(verified.len() >= 9, "programs found in {}: {verified:?}", fdinfo.display());
    let (id, most) = *verified.iter().max_by_key(|(_, n)| *n).unwrap();
    assert!(most < 150_000, "program id {id} took {most} verified instructions (budget 150k): {verified:?}");
}

#[test]
fn agent_started_after_the_container_still_reports_exec_shells() {
    if !support::privileged() {
        return;
    }
    // The container's entrypoint ran before the agent: the agent must not take
    // the next exec in that namespace (a kubectl exec) for the entrypoint.
    let c = support::containerd().run(RunSpec::sleeper());
    let agent = Agent::start(&[]);
    c.exec_ok(&["/bin/sh", "-c", ": late"]);
    let f = agent.wait_for("shell after agent start", |f| {
        f["container.id"] == c.id.as_str() && f["process.command_args"].to_string().contains("late")
    });
    assert_eq!(f["rule"], "shell_in_container");
}

#[test]
fn container_churn_never_reports_entrypoints() {
    if !support::privileged() {
        return;
    }
    // Short-lived containers with shell entrypoints, one after the other: their
    // mount namespaces' inode numbers are recycled, their unique ids are not.
    let agent = Agent::start(&[]);
    let ctrd = support::containerd();
    let mut ids = Vec::new();
    for _ in 0..6 {
        let (id, out) = ctrd.run_once(RunSpec::new(&["/bin/sh", "-c", "/bin/true"]));
        assert!(out.status.success(), "{out:?}");
        ids.push(id);
    }
    let c = ctrd.run(RunSpec::sleeper());
    support::settle(&agent, &c);
    let reported: Vec<Value> =
        agent.findings().into_iter().filter(|f| ids.iter().any(|id| f["container.id"] == id.as_str())).collect();
    assert!(reported.is_empty(), "entrypoints reported: {reported:#?}");
    assert!(agent.metric("driftwatch_execs_not_findings_total{reason=\"entrypoint\"}").unwrap_or(0.0) >= 6.0);
}

#[test]
fn ring_buffer_overflow_is_counted_not_lost() {
    if !support::privileged() {
        return;
    }
    // The smallest ring buffer the config accepts (256 KiB, about 130 exec
    // records) drained once a second (no wakeups between: wake_interval_ms 0),
    // and every container exec sent: a burst of
    // 1,500 execs overflows it. Every record must show up in the counters:
    // sent = delivered + dropped.
    let dir = std::env::temp_dir().join(format!("dw-overflow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("tiny.yaml");
    std::fs::write(&cfg, "sensor:\n  ringbuf_bytes: 262144\n  drain_interval_ms: 1000\n  wake_interval_ms: 0\n")
        .unwrap();
    let agent = Agent::start(&["--config", cfg.to_str().unwrap(), "--emit-all-execs"]);
    let c = support::containerd().run(RunSpec::sleeper());
    c.exec_ok(&["/bin/sh", "-c", "i=0; while [ $i -lt 1500 ]; do /usr/bin/hello >/dev/null; i=$((i+1)); done"]);
    // Other tests run containers concurrently and every exec counts here, so
    // compare counters from one scrape, once the pipeline has caught up.
    let series = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.parse().ok()))
            .unwrap_or_else(|| panic!("missing {name} in\n{text}"))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        std::thread::sleep(std::time::Duration::from_millis(1200)); // > one drain period
        let text = agent.metrics();
        let sent = series(&text, "driftwatch_kernel_execs_total{verdict=\"container_sent\"}");
        let delivered = series(&text, "driftwatch_kernel_events_total{kind=\"exec\"}");
        let dropped = series(&text, "driftwatch_kernel_ringbuf_drops_total{kind=\"exec\"}");
        let decoded = series(&text, "driftwatch_events_total{kind=\"exec\"}");
        assert!(sent >= 1500.0, "sent {sent}");
        assert!(dropped > 0.0, "a 256 KiB ring drained once a second cannot hold 1,500 records: dropped {dropped}");
        // Every exec is delivered or counted as dropped; all delivered is decoded.
        if delivered + dropped == sent && decoded == delivered {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "counters never balanced: sent {sent} delivered {delivered} dropped {dropped} decoded {decoded}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn host_service_with_private_mount_namespace_is_learned_and_filtered_in_kernel() {
    if !support::privileged() {
        return;
    }
    // A host process in its own mount namespace (like a systemd service with
    // PrivateTmp) looks like a container to the kernel until userspace finds
    // no container cgroup; from then on the kernel drops its execs.
    let agent = Agent::start(&[]);
    let before = agent.metric("driftwatch_kernel_execs_total{verdict=\"not_container_filtered\"}").unwrap_or(0.0);
    let marker = format!("dw-private-ns-{}", std::process::id());
    let script = format!("sleep 0.5; i=0; while [ $i -lt 20 ]; do /bin/sh -c ': {marker}'; i=$((i+1)); done");
    let st = std::process::Command::new("unshare").args(["-m", "/bin/sh", "-c", &script]).status().unwrap();
    assert!(st.success());
    let c = support::containerd().run(RunSpec::sleeper());
    support::settle(&agent, &c);
    let leaked: Vec<Value> = agent.findings().into_iter().filter(|f| f.to_string().contains(&marker)).collect();
    assert!(leaked.is_empty(), "{leaked:#?}");
    let after = agent.metric("driftwatch_kernel_execs_total{verdict=\"not_container_filtered\"}").unwrap_or(0.0);
    assert!(after >= before + 20.0, "the 20 shells were dropped in the kernel: {before} -> {after}");
    assert!(agent.metric("driftwatch_enrich_failures_total{reason=\"not_container\"}").unwrap_or(0.0) >= 1.0);
}

#[test]
fn exec_only_mode_hooks_no_syscalls_and_still_detects_exec_drift() {
    if !support::privileged() {
        return;
    }
    // With the network and file sensors off the agent attaches only its
    // exec/fork/exit tracepoints: no syscall hook taxes the node's syscalls.
    let dir = std::env::temp_dir().join(format!("dw-exec-only-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("exec-only.yaml");
    std::fs::write(&cfg, "sensor:\n  network: false\n  files: false\n  mappings: false\n").unwrap();
    let agent = Agent::start(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(agent.metric("driftwatch_bpf_programs_attached"), Some(3.0), "{}", agent.metrics());
    let c = support::containerd().run(RunSpec::sleeper());
    c.exec_ok(&["/usr/bin/memexec", "/bin/busybox", "true"]);
    let f = agent.wait_for("memfd finding", |f| f["container.id"] == c.id.as_str());
    assert_eq!(f["rule"], "exec_fileless_memfd");
    c.exec_ok(&["/bin/sh", "-c", "echo x > /etc/hostname"]);
    support::settle(&agent, &c);
    assert!(agent.findings_of(&c.id).iter().all(|f| f["kind"] != "file"), "no file sensor");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn loader_injection_in_the_environment_is_config_drift() {
    if !support::privileged() {
        return;
    }
    let agent = Agent::start(&[]);
    // The main process starts without loader variables; a later process with
    // LD_PRELOAD is environment drift.
    let c = support::containerd().run(RunSpec::sleeper());
    let _ = c.exec(&["/bin/env", "LD_PRELOAD=/tmp/evil.so", "/usr/bin/hello"]);
    let f = agent.wait_for("env drift", |f| f["container.id"] == c.id.as_str() && f["kind"] == "config");
    assert_eq!(f["rule"], "loader_injection_env");
    assert_eq!(f["severity"], "critical");
    assert_eq!(f["driftwatch.env.loader_vars"], json!(["LD_PRELOAD"]));
    assert_eq!(f["process.executable.path"], "/usr/bin/hello", "process keys kept: {f:#}");

    // Every loader variable is found wherever it sits (LD_AUDIT first, at the
    // start of the environment block), and only whole names count: the
    // kernel compares names as 64-bit words, so near misses are checked too.
    let e = support::containerd().run(RunSpec::sleeper());
    let _ = e.exec(&[
        "/bin/env",
        "-i",
        "LD_AUDIT=/a.so",
        "LD_PRELOADX=1",
        "XLD_PRELOAD=1",
        "LD_LIBRARY_PATH=/b",
        "/usr/bin/hello",
    ]);
    let f = agent.wait_for("all loader variables", |f| f["container.id"] == e.id.as_str() && f["kind"] == "config");
    assert_eq!(f["driftwatch.env.loader_vars"], json!(["LD_LIBRARY_PATH", "LD_AUDIT"]), "{f:#}");
    let g = support::containerd().run(RunSpec::sleeper());
    let _ = g.exec(&["/bin/env", "LD_PRELOADX=1", "LD_AUDITOR=1", "LD_LIBRARY_PATHS=1", "/usr/bin/hello"]);
    support::settle(&agent, &g);
    let near: Vec<Value> =
        agent.findings_of(&g.id).into_iter().filter(|f| f["rule"] == "loader_injection_env").collect();
    assert!(near.is_empty(), "near misses are not loader variables: {near:#?}");

    // A container whose main process starts with LD_LIBRARY_PATH (image ENV):
    // its processes inherit it, which is not drift.
    let d = support::containerd().run(RunSpec::sleeper().env("LD_LIBRARY_PATH=/opt/lib"));
    d.exec_ok(&["/usr/bin/hello"]);
    support::settle(&agent, &d);
    let env: Vec<Value> =
        agent.findings_of(&d.id).into_iter().filter(|f| f["rule"] == "loader_injection_env").collect();
    assert!(env.is_empty(), "{env:#?}");
}

/// A container's findings leave in the order of their events, though some
/// wait (a dropped binary is compared with the image first) and others do
/// not (a file write is judged at once): each round's dropped binary comes
/// before the write that follows it, and `time` never goes back.
#[test]
fn findings_of_a_container_leave_in_event_order() {
    if !support::privileged() {
        return;
    }
    let agent = Agent::start(&[]);
    let c = support::containerd().run(RunSpec::sleeper());
    // Paced under the kernel's file-event rate limit (100/s per container).
    let n = 30;
    c.exec_ok(&[
        "/bin/sh",
        "-c",
        &format!(
            "i=0; while [ $i -lt {n} ]; do cp /bin/busybox /tmp/o$i; /tmp/o$i true; echo $i > /etc/order-$i; usleep 20000; i=$((i+1)); done"
        ),
    ]);
    let ours = |f: &Value| {
        let (exe, path) = (s(f, "process.executable.path"), s(f, "file.path"));
        if let Some(i) = exe.strip_prefix("/tmp/o") {
            Some(format!("bin{i}"))
        } else {
            path.strip_prefix("/etc/order-").map(|i| format!("write{i}"))
        }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while agent.findings_of(&c.id).iter().filter_map(ours).count() < 2 * n {
        assert!(std::time::Instant::now() < deadline, "{:#?}", agent.findings_of(&c.id));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let f = agent.findings_of(&c.id);
    let times: Vec<String> = f.iter().map(|f| s(f, "time")).collect();
    let back: Vec<usize> = (1..times.len()).filter(|&i| times[i] < times[i - 1]).collect();
    let seen: Vec<(String, String, String)> =
        f.iter().map(|f| (s(f, "time"), s(f, "rule"), ours(f).unwrap_or_default())).collect();
    assert!(back.is_empty(), "findings out of time order at {back:?}: {seen:#?}");
    let order: Vec<String> = f.iter().filter_map(ours).collect();
    let want: Vec<String> = (0..n).flat_map(|i| [format!("bin{i}"), format!("write{i}")]).collect();
    assert_eq!(order, want);
}
