//! Smoke test of the privileged container test environment (tests/support):
//! a private containerd, the hand-built OCI test image, exec, memfd exec, tmpfs.
//!
//! Run with: DRIFTWATCH_PRIVILEGED_TESTS=1 cargo test --test containerd_smoke
mod support;

use support::RunSpec;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn exec_hello_memexec_and_cgroup() {
    if !support::privileged() {
        return;
    }
    let ctrd = support::containerd();
    let c = ctrd.run(RunSpec::sleeper().env("DRIFTWATCH_SMOKE=yes"));

    assert_eq!(c.id.len(), 64, "id {:?}", c.id);
    assert!(c.id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert!(c.pid > 1);
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", c.pid)).unwrap();
    assert_eq!(comm.trim(), "sleep", "container init should be /bin/sleep");

    let cg = c.cgroup_path();
    assert!(cg.contains(&c.id), "cgroup path {cg:?} should contain id {}", c.id);

    assert_eq!(c.exec_ok(&["/bin/cat", "/etc/hostname"]).trim(), "driftwatch-test");
    assert_eq!(c.exec_ok(&["/bin/sh", "-c", "echo $DRIFTWATCH_SMOKE"]).trim(), "yes");
    assert_eq!(c.exec_ok(&["/usr/bin/hello"]).trim(), "hello");

    // memexec really runs the payload from a memfd.
    let out = c.exec(&["/usr/bin/memexec", "/bin/busybox", "true"]);
    assert!(out.status.success(), "memexec true: {out:?}");
    assert_eq!(
        c.exec_ok(&["/usr/bin/memexec", "/bin/busybox", "readlink", "/proc/self/exe"]).trim(),
        "/memfd:payload (deleted)"
    );

    // Exit codes propagate; a missing binary fails.
    let out = c.exec(&["/bin/sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let out = c.exec(&["/nonexistent"]);
    assert!(!out.status.success(), "{out:?}");

    // Fake package managers are shell scripts.
    assert_eq!(c.exec_ok(&["/usr/bin/apt-get", "install", "x"]).trim(), "fake apt-get: install x");
    assert_eq!(c.exec_ok(&["/usr/bin/pip", "install", "y"]).trim(), "fake pip: install y");

    // The containerd/shim exec path (`ctr task exec`) works too; only exit codes are
    // asserted there (ctr 1.6 occasionally drops a short process's stdout).
    assert_eq!(c.exec_ctr(&["/bin/sh", "-c", "exit 9"]).status.code(), Some(9));
    let out = c.exec_ctr(&["/usr/bin/memexec", "/bin/busybox", "true"]);
    assert!(out.status.success(), "ctr exec memexec: {out:?}");

    // Writable, exec-able rootfs paths exist.
    c.exec_ok(&["/bin/sh", "-c", "for d in /tmp /scratch /etc /root; do test -d $d; done"]);
}

#[test]
fn tmpfs_copy_and_exec() {
    if !support::privileged() {
        return;
    }
    let c = support::containerd().run(RunSpec::sleeper().tmpfs("/scratch"));
    let mounts = c.exec_ok(&["/bin/cat", "/proc/mounts"]);
    assert!(
        mounts.lines().any(|l| l.starts_with("tmpfs /scratch tmpfs") && !l.contains("noexec")),
        "no exec-able tmpfs at /scratch:\n{mounts}"
    );
    // busybox dispatches on argv[0]'s basename, so a copy named "x" would say
    // "x: applet not found"; keep the name busybox (or pass the applet explicitly).
    let out = c.exec(&["/bin/sh", "-c", "cp /bin/busybox /scratch/busybox && /scratch/busybox true"]);
    assert!(out.status.success(), "{out:?}");
    let out = c.exec(&["/bin/sh", "-c", "cp /usr/bin/hello /scratch/x && /scratch/x"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out).trim(), "hello");
}

#[test]
fn parallel_containers_do_not_conflict() {
    if !support::privileged() {
        return;
    }
    let handles: Vec<_> = (0..3)
        .map(|i| {
            std::thread::spawn(move || {
                let c = support::containerd().run(RunSpec::sleeper());
                for j in 0..3 {
                    let msg = format!("t{i}-{j}");
                    assert_eq!(c.exec_ok(&["/bin/echo", &msg]).trim(), msg);
                }
                assert!(c.cgroup_path().contains(&c.id));
                c.id.clone()
            })
        })
        .collect();
    let ids: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut uniq = ids.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), ids.len());
    // Drop removed them.
    let left = support::containerd().ctr_ok(&["containers", "ls", "-q"]);
    for id in &ids {
        assert!(!left.contains(id.as_str()), "container {id} not deleted:\n{left}");
    }
}
