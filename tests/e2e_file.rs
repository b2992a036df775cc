//! File drift end to end, on the real kernel in real containers: writes,
//! creations, deletes, renames and mode changes of the container's files are
//! reported with the path as the container sees it, whether the file came
//! from the image, and whether it is on a volume; scratch space, reads and the
//! host are quiet; package-manager state is package drift; a flood of writes
//! is rate limited in the kernel and counted.
mod support;

use serde_json::Value;
use support::{RunSpec, agent::Agent};

fn files(agent: &Agent, c: &support::Container) -> Vec<Value> {
    agent
        .findings_of(&c.id)
        .into_iter()
        .filter(|f| f["kind"] == "file" || f["rule"] == "package_database_write")
        .collect()
}

fn one<'a>(f: &'a [Value], path: &str, op: &str) -> &'a Value {
    let hits: Vec<&Value> =
        f.iter().filter(|v| v["file.path"] == path && v["driftwatch.file.operation"] == op).collect();
    assert_eq!(hits.len(), 1, "one {op} of {path} expected in {f:#?}");
    hits[0]
}

#[test]
fn file_changes_are_reported_with_origin_and_location() {
    if !support::privileged() {
        return;
    }
    let agent = Agent::start(&[]);
    let c = support::containerd().run(RunSpec::sleeper().tmpfs("/scratch"));
    c.exec_ok(&["/bin/sh", "-c", "echo drift >> /etc/hostname"]);
    c.exec_ok(&["/bin/sh", "-c", "echo x > /root/new.txt"]);
    c.exec_ok(&["/bin/mv", "/root/new.txt", "/root/renamed.txt"]);
    c.exec_ok(&["/bin/rm", "/etc/group"]);
    c.exec_ok(&["/bin/ln", "/root/renamed.txt", "/root/hard.txt"]);
    c.exec_ok(&["/bin/ln", "-s", "/etc/passwd", "/root/sym"]);
    c.exec_ok(&["/bin/chown", "12:34", "/etc/hostname"]);
    c.exec_ok(&["/bin/sh", "-c", "cd /etc && chmod 600 passwd"]);
    c.exec_ok(&["/bin/sh", "-c", "echo x > /scratch/v.txt"]);
    // Quiet: scratch space and reads.
    c.exec_ok(&["/bin/sh", "-c", "echo x > /tmp/t.txt; cat /etc/hostname /etc/passwd >/dev/null"]);
    // Package-manager state, written by something that is not a package manager.
    c.exec_ok(&["/bin/sh", "-c", "mkdir -p /var/lib/dpkg && echo 'Package: x' > /var/lib/dpkg/status"]);
    support::settle(&agent, &c);
    let f = files(&agent, &c);

    let w = one(&f, "/etc/hostname", "write");
    assert_eq!(w["rule"], "file_written");
    assert_eq!(w["driftwatch.file.origin"], "image");
    assert_eq!(w["driftwatch.file.location"], "rootfs");
    assert_eq!(w["severity"], "warning");
    assert_eq!(w["playbook_step"], "investigate");
    assert_eq!(w["process.executable.name"], "sh");
    assert_eq!(w["container.id"], c.id.as_str());
    assert!(w.get("process.command_args").is_none(), "{w:#}");

    assert_eq!(one(&f, "/root/new.txt", "write")["driftwatch.file.origin"], "new");
    let r = one(&f, "/root/new.txt", "rename");
    assert_eq!(r["rule"], "file_renamed");
    assert_eq!(r["driftwatch.file.target_path"], "/root/renamed.txt");
    let d = one(&f, "/etc/group", "delete");
    assert_eq!((d["rule"].as_str(), d["driftwatch.file.origin"].as_str()), (Some("file_deleted"), Some("image")));
    let m = one(&f, "/etc/passwd", "chmod"); // a relative name, joined to the cwd in the kernel
    assert_eq!((m["rule"].as_str(), m["driftwatch.file.mode"].as_str()), (Some("file_mode_changed"), Some("600")));
    let l = one(&f, "/root/renamed.txt", "link");
    assert_eq!(
        (l["rule"].as_str(), l["driftwatch.file.target_path"].as_str()),
        (Some("file_linked"), Some("/root/hard.txt"))
    );
    let s = one(&f, "/root/sym", "symlink");
    assert_eq!(
        (s["rule"].as_str(), s["driftwatch.file.target_path"].as_str()),
        (Some("file_symlinked"), Some("/etc/passwd"))
    );
    let o = one(&f, "/etc/hostname", "chown");
    assert_eq!((o["rule"].as_str(), o["driftwatch.file.owner"].as_str()), (Some("file_owner_changed"), Some("12:34")));
    let v = one(&f, "/scratch/v.txt", "write");
    assert_eq!(v["driftwatch.file.location"], "volume");
    assert!(v.get("driftwatch.file.origin").is_none(), "{v:#}");
    let p = one(&f, "/var/lib/dpkg/status", "write");
    assert_eq!((p["kind"].as_str(), p["rule"].as_str()), (Some("package"), Some("package_database_write")));

    assert!(f.iter().all(|v| !v["file.path"].as_str().unwrap_or("").starts_with("/tmp/")), "{f:#?}");
    assert!(f.iter().all(|v| v["driftwatch.file.operation"] != "read"), "{f:#?}");
    // Dropped in the kernel (tests below), never reaching userspace's own check.
    assert!(agent.metric("driftwatch_kernel_file_scratch_filtered_total{kind=\"file\"}").unwrap_or(0.0) >= 1.0);
}

#[test]
fn directories_and_truncation_by_path() {
    if !support::privileged() {
        return;
    }
    let agent = Agent::start(&[]);
    let c = support::containerd().run(RunSpec::sleeper());
    // `mkdir -p` tries every component: those already there fail (EEXIST)
    // and are not drift; the ones it creates are.
    c.exec_ok(&["/bin/mkdir", "-p", "/etc/app/conf.d"]);
    c.exec_ok(&["/bin/sh", "-c", "cd /root && mkdir rel"]);
    c.exec_ok(&["/bin/rmdir", "/etc/app/conf.d"]);
    // Failed attempts change nothing (seen at syscall exit, only successes count).
    let _ = c.exec(&["/bin/rmdir", "/no-such-dir"]);
    let _ = c.exec(&["/bin/mkdir", "/etc"]);
    c.exec_ok(&["/bin/rm", "-f", "/etc/no-such-file"]);
    let _ = c.exec(&["/bin/chmod", "600", "/etc/no-such-file"]);
    c.exec_ok(&["/usr/bin/truncate-path", "/etc/motd", "3"]);
    support::settle(&agent, &c);
    let f = files(&agent, &c);

    let d = one(&f, "/etc/app", "mkdir");
    assert_eq!(d["rule"], "file_directory_created");
    assert_eq!(d["driftwatch.file.origin"], "new");
    assert_eq!(d["driftwatch.file.location"], "rootfs");
    assert!(d["message"].as_str().unwrap().contains("created the directory /etc/app in container"), "{d:#}");
    one(&f, "/etc/app/conf.d", "mkdir");
    one(&f, "/root/rel", "mkdir"); // relative to the working directory
    assert_eq!(one(&f, "/etc/app/conf.d", "delete")["rule"], "file_deleted");
    let t = one(&f, "/etc/motd", "truncate");
    assert_eq!((t["rule"].as_str(), t["driftwatch.file.origin"].as_str()), (Some("file_written"), Some("image")));
    let failed: Vec<&Value> = f
        .iter()
        .filter(|v| ["/etc", "/no-such-dir", "/etc/no-such-file"].contains(&v["file.path"].as_str().unwrap_or("")))
        .collect();
    assert!(failed.is_empty(), "failed mkdir/rmdir/unlink/chmod reported: {failed:#?}");
}

#[test]
fn the_host_is_quiet_and_floods_are_rate_limited() {
    if !support::privileged() {
        return;
    }
    let agent = Agent::start(&[]);
    // The host changing files is never seen.
    let dir = std::env::temp_dir().join(format!("dw-file-host-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.display().to_string();
    let st = std::process::Command::new("/bin/sh")
        .args([
            "-c",
            &format!("echo x > {marker}/a && mv {marker}/a {marker}/b && chmod 600 {marker}/b && rm {marker}/b"),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    // A container writing 600 files in a burst: the kernel passes 100 a second.
    let c = support::containerd().run(RunSpec::sleeper());
    c.exec_ok(&["/bin/sh", "-c", "i=0; while [ $i -lt 600 ]; do echo x > /root/f$i; i=$((i+1)); done"]);
    support::settle(&agent, &c);
    let leaked: Vec<Value> = agent.findings().into_iter().filter(|f| f.to_string().contains(&marker)).collect();
    assert!(leaked.is_empty(), "{leaked:#?}");
    let n = files(&agent, &c).len();
    let limited = agent.metric("driftwatch_kernel_file_rate_limited_total{kind=\"file\"}").unwrap_or(0.0);
    assert!(limited > 0.0, "a burst of 600 writes is rate limited: {limited}\n{}", agent.metrics());
    assert!((50..600).contains(&n), "findings after the limit: {n}, limited {limited}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Scratch space is dropped in the kernel before the rate limit: a container
/// writing hundreds of files in /tmp keeps its budget, and the drift right
/// after is reported; a rename out of /tmp is judged where it lands.
#[test]
fn scratch_writes_are_dropped_in_the_kernel_and_leave_the_budget_to_drift() {
    if !support::privileged() {
        return;
    }
    let agent = Agent::start(&[]);
    let c = support::containerd().run(RunSpec::sleeper());
    c.exec_ok(&[
        "/bin/sh",
        "-c",
        "i=0; while [ $i -lt 400 ]; do echo x > /tmp/s$i; rm /tmp/s$i; i=$((i+1)); done; \
         mkdir /tmp/d; chmod 700 /tmp/d; cd /tmp && echo y > rel; \
         echo z > /etc/after-scratch; echo p > /tmp/payload; mv /tmp/payload /usr/bin/payload; \
         echo q > /root/gone; rm /root/gone; echo r > /root/next",
    ]);
    support::settle(&agent, &c);
    let f = files(&agent, &c);
    let scratch: Vec<&Value> =
        f.iter().filter(|v| v["file.path"].as_str().is_some_and(|p| p.starts_with("/tmp/") || p == "/tmp")).collect();
    let moved = one(&f, "/tmp/payload", "rename");
    assert_eq!(moved["driftwatch.file.target_path"], "/usr/bin/payload", "{moved:#}");
    assert_eq!(scratch.len(), 1, "only the rename out of /tmp: {scratch:#?}");
    one(&f, "/etc/after-scratch", "write");
    // A new file that gets a deleted file's inode number is not folded into it.
    one(&f, "/root/gone", "write");
    one(&f, "/root/next", "write");
    let filtered = agent.metric("driftwatch_kernel_file_scratch_filtered_total{kind=\"file\"}").unwrap_or(0.0);
    let limited = agent.metric("driftwatch_kernel_file_rate_limited_total{kind=\"file\"}").unwrap_or(0.0);
    // At least the 400 deletes (a write open of a reused inode may be folded first).
    assert!(filtered >= 400.0, "scratch events dropped in the kernel: {filtered}\n{}", agent.metrics());
    assert_eq!(limited, 0.0, "scratch writes spent the container's budget\n{}", agent.metrics());
}

#[test]
fn path_resolution_edge_cases() {
    if !support::privileged() {
        return;
    }
    let agent = Agent::start(&[]);
    let c = support::containerd().run(RunSpec::sleeper());
    // A path longer than the kernel's 512-byte buffer: the tail (the file name)
    // is kept and the finding says it was cut.
    let seg = "d".repeat(60);
    let deep: String = (0..10).map(|_| format!("/{seg}")).collect();
    c.exec_ok(&["/bin/mkdir", "-p", &format!("/root{deep}")]);
    c.exec_ok(&["/bin/sh", "-c", &format!("echo x > /root{deep}/long.txt")]);
    // A relative name is joined to the working directory in the kernel; in a
    // working directory deleted meanwhile the operation fails: nothing changed.
    c.exec_ok(&["/bin/sh", "-c", "mkdir -p /root/here && cd /root/here && ln -s x f"]);
    let _ = c.exec(&["/bin/sh", "-c", "mkdir -p /root/gone && cd /root/gone && rmdir /root/gone && ln -s x f"]);
    // A name with ".." is reported as given, joined to the working directory.
    let _ = c.exec(&["/bin/sh", "-c", "cd /etc && chmod 644 ../etc/hostname"]);
    support::settle(&agent, &c);
    let f = files(&agent, &c);
    let long = f
        .iter()
        .find(|v| v["file.path"].as_str().is_some_and(|p| p.ends_with("/long.txt")))
        .unwrap_or_else(|| panic!("long path reported: {f:#?}"));
    assert_eq!(long["driftwatch.file.path_truncated"], true, "{long:#}");
    assert!(long.get("driftwatch.exe.path_truncated").is_none(), "a file finding says it with a file key: {long:#}");
    assert!(long["file.path"].as_str().unwrap().len() <= 511, "{long:#}");
    assert!(
        f.iter().any(|v| v["file.path"] == "/root/here/f" && v["driftwatch.file.operation"] == "symlink"),
        "{f:#?}"
    );
    assert!(!f.iter().any(|v| v["file.path"] == "/root/gone/f"), "a failed symlink is not drift: {f:#?}");
    assert!(
        f.iter().any(|v| v["file.path"] == "/etc/../etc/hostname" && v["driftwatch.file.operation"] == "chmod"),
        "{f:#?}"
    );
}

/// Paths the syscall names (not an opened file) that do not fit in the
/// kernel's buffer keep their tail and say so, absolute or relative, for the
/// path and for a rename's target; two long paths that differ only at the end
/// stay distinct; each cut is counted.
#[test]
fn long_named_paths_keep_their_tail() {
    if !support::privileged() {
        return;
    }
    let agent = Agent::start(&[]);
    let c = support::containerd().run(RunSpec::sleeper());
    let seg = "n".repeat(60);
    let deep: String = (0..10).map(|_| format!("/{seg}")).collect(); // 610 bytes
    for d in ["a", "b"] {
        c.exec_ok(&["/bin/mkdir", "-p", &format!("/root{deep}/{d}")]);
        c.exec_ok(&["/bin/sh", "-c", &format!("echo x > /root{deep}/{d}/kept.txt")]);
        // chmod and rm name the file: absolute names.
        c.exec_ok(&["/bin/chmod", "600", &format!("/root{deep}/{d}/kept.txt")]);
    }
    // A relative name, joined to a long working directory.
    c.exec_ok(&["/bin/sh", "-c", &format!("cd /root{deep}/a && chmod 640 kept.txt")]);
    // A rename whose target is longer than the target buffer (256 bytes).
    c.exec_ok(&["/bin/sh", "-c", &format!("echo y > /root/short.txt && mv /root/short.txt /root{deep}/b/moved.txt")]);
    c.exec_ok(&["/bin/rm", &format!("/root{deep}/b/kept.txt")]);
    support::settle(&agent, &c);
    let f = files(&agent, &c);
    let with = |op: &str, tail: &str| -> Vec<&Value> {
        f.iter()
            .filter(|v| {
                v["driftwatch.file.operation"] == op && v["file.path"].as_str().is_some_and(|p| p.ends_with(tail))
            })
            .collect()
    };
    let chmods = with("chmod", "/kept.txt");
    assert!(chmods.len() >= 3, "absolute a, absolute b, relative a: {f:#?}");
    for v in &chmods {
        assert_eq!(v["driftwatch.file.path_truncated"], true, "{v:#}");
        assert!(v["file.path"].as_str().unwrap().len() <= 511, "{v:#}");
    }
    let a = with("chmod", "/a/kept.txt");
    let b = with("chmod", "/b/kept.txt");
    assert!(!a.is_empty() && !b.is_empty(), "the two directories stay distinct: {f:#?}");
    let rm = with("delete", "/b/kept.txt");
    assert_eq!(rm.len(), 1, "{f:#?}");
    assert_eq!(rm[0]["driftwatch.file.path_truncated"], true);
    let mv = f.iter().find(|v| v["driftwatch.file.operation"] == "rename").expect("the rename");
    assert_eq!(mv["file.path"], "/root/short.txt", "{mv:#}");
    assert!(mv.get("driftwatch.file.path_truncated").is_none(), "{mv:#}");
    assert!(mv["driftwatch.file.target_path"].as_str().unwrap().ends_with("/b/moved.txt"), "{mv:#}");
    assert_eq!(mv["driftwatch.file.target_path_truncated"], true, "{mv:#}");
    let cut = agent.metric("driftwatch_kernel_paths_truncated_total{kind=\"file\"}").unwrap_or(0.0);
    assert!(cut >= 6.0, "counted per kind: {cut}\n{}", agent.metrics());
}

/// Issue 10: file names that are not UTF-8 are escaped (`\xHH`, and `\\` for a
/// backslash of such a name) and marked; a file whose valid name happens to
/// read like an escape is printed as it is, unmarked.
#[test]
fn file_names_that_are_not_utf8_are_escaped_and_marked() {
    if !support::privileged() {
        return;
    }
    let agent = Agent::start(&[]);
    let c = support::containerd().run(RunSpec::sleeper());
    let script = r#"cd /root && a=$(printf 'bad\377\376') && b=$(printf 'bad\376\377') &&
        echo x > "$a" && echo x > "$b" && echo x > 'bad\xff\xfe' && mv "$a" "$(printf 'back\134slash\376')""#;
    c.exec_ok(&["/bin/sh", "-c", script]);
    support::settle(&agent, &c);
    let f = files(&agent, &c);
    let writes = |path: &str| -> Vec<&Value> {
        f.iter().filter(|v| v["file.path"] == path && v["driftwatch.file.operation"] == "write").collect()
    };
    // The same text twice: the file named with bytes ff fe (marked) and the one
    // literally named `bad\xff\xfe` (valid UTF-8, unmarked).
    let same = writes(r"/root/bad\xff\xfe");
    assert_eq!(same.len(), 2, "{f:#?}");
    assert_eq!(same.iter().filter(|v| v["driftwatch.file.path_escaped"] == true).count(), 1, "{same:#?}");
    assert_eq!(same.iter().filter(|v| v.get("driftwatch.file.path_escaped").is_none()).count(), 1, "{same:#?}");
    let other = writes(r"/root/bad\xfe\xff");
    assert_eq!(other.len(), 1, "{f:#?}");
    assert_eq!(other[0]["driftwatch.file.path_escaped"], true);
    assert_eq!(other[0]["driftwatch.file.origin"], "new");
    assert_eq!(other[0]["rule"], "file_written");
    let mv = f.iter().find(|v| v["driftwatch.file.operation"] == "rename").unwrap_or_else(|| panic!("{f:#?}"));
    assert_eq!(mv["file.path"], r"/root/bad\xff\xfe", "{mv:#}");
    assert_eq!(mv["driftwatch.file.path_escaped"], true, "{mv:#}");
    assert_eq!(mv["driftwatch.file.target_path"], r"/root/back\\slash\xfe", "{mv:#}");
    assert_eq!(mv["driftwatch.file.target_path_escaped"], true, "{mv:#}");
    assert!(!serde_json::to_string(&f).unwrap().contains('\u{fffd}'), "nothing replaced: {f:#?}");
    assert!(agent.bad_stdout_lines().is_empty(), "{:?}", agent.bad_stdout_lines());
}

/// The kernel wakes the reader at most once per `sensor.wake_interval_ms`,
/// so the last records of a burst (within that interval of its wakeup) wake
/// nobody; the reader looks again one wake interval after reading records
/// instead of waiting for its drain timer. With the timer at 1 s, the tail of
/// each of three bursts is out well before it (before the fix it waited for
/// the timer: 1.0 s after the burst, measured).
#[test]
fn the_end_of_a_burst_does_not_wait_for_the_drain_timer() {
    if !support::privileged() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("dw-file-burst-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, "sensor:\n  drain_interval_ms: 1000\n  wake_interval_ms: 10\n").unwrap();
    let agent = Agent::start(&["--config", cfg.to_str().unwrap()]);
    let c = support::containerd().run(RunSpec::sleeper());
    for burst in 0..3 {
        c.exec_ok(&["/bin/sh", "-c", &format!("for i in 1 2 3 4 5 6 7 8; do echo x > /root/b{burst}-$i; done")]);
        let done = std::time::Instant::now();
        let tail = format!("/root/b{burst}-8");
        let deadline = done + std::time::Duration::from_secs(10);
        while !files(&agent, &c).iter().any(|f| f["file.path"] == tail.as_str()) {
            assert!(std::time::Instant::now() < deadline, "no finding for {tail}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let waited = done.elapsed();
        assert!(
            waited < std::time::Duration::from_millis(400),
            "burst {burst}: its last write was reported {waited:?} after the burst (drain timer: 1 s)"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
