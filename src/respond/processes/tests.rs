use super::*;

fn raw(pid: u32, ppid: u32, session: u32, ns_pid: u32, start: u64) -> Raw {
    Raw {
        pid,
        stat: Stat { comm: b"sh".to_vec(), ppid, session, start_ticks: start },
        uid: 0,
        ns_pid,
        ns_depth: 2,
        exe_link: None,
        args: Vec::new(),
        netns: None,
        mntns: None,
        socket_inodes: HashSet::new(),
    }
}

#[test]
fn stat_and_status() {
    let s = parse_stat(b"42 (a) b) c) S 7 42 40 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 123456 1000 10").unwrap();
    assert_eq!(s, Stat { comm: b"a) b) c".to_vec(), ppid: 7, session: 40, start_ticks: 123456 });
    assert!(parse_stat(b"42 (x").is_none());
    assert!(parse_stat(b"").is_none());
    let st = "Name:\tsh\nUid:\t1000\t1001\t1000\t1000\nNSpid:\t5000\t12\n";
    assert_eq!(parse_status(st), Some((1001, 12, 2)));
    assert_eq!(parse_status("Uid:\t0\t0\t0\t0\nNSpid:\t77\n"), Some((0, 77, 1)));
    assert_eq!(parse_status("Uid:\t0\t0\t0\t0\n"), None);
}

/// The shapes measured with runc: the init and each exec'd process are
/// session leaders with a parent outside the container (the shim).
#[test]
fn origin_from_ancestry_and_session() {
    let shim = 900;
    let procs = vec![
        raw(1000, shim, 1000, 1, 10),  // init
        raw(1001, 1000, 1000, 6, 11),  // the entrypoint's child
        raw(1002, 1001, 1000, 7, 12),  // its grandchild
        raw(1010, 1000, 1010, 8, 13),  // a daemon of the tree: setsid, still the leader
        raw(1011, 1010, 1010, 9, 14),  // its worker
        raw(1020, shim, 1020, 20, 30), // an exec session (runc exec, ExecSync)
        raw(1021, 1020, 1020, 21, 31), // what it started
        raw(1030, 1000, 1029, 26, 32), // an exec session's orphan (sh -c 'x &'), leader gone
        raw(1040, 1, 1040, 40, 33),    // runc exec -d: reparented to the node's init
        raw(1041, 1000, 1020, 41, 34), // an orphan whose session leader (1020) still runs
    ];
    let init = find_init(&procs);
    assert_eq!(init, Some(1000));
    let o = origins(&procs, init);
    for pid in [1000, 1001, 1002, 1010, 1011] {
        assert_eq!(o[&pid], Origin::Container, "{pid}");
    }
    for pid in [1020, 1021, 1030, 1040, 1041] {
        assert_eq!(o[&pid], Origin::ExecSession, "{pid}");
    }
}

#[test]
fn init_of_a_shared_pid_namespace_is_the_oldest() {
    // The pod's pid 1 (pause) is another container's: no ns pid 1 here.
    let procs = vec![raw(2005, 1, 2005, 9, 50), raw(2000, 1900, 2000, 3, 40), raw(2001, 2000, 2000, 4, 41)];
    assert_eq!(find_init(&procs), Some(2000));
    let o = origins(&procs, Some(2000));
    assert_eq!(o[&2001], Origin::Container);
    assert_eq!(o[&2005], Origin::ExecSession);
    // A hostPID container: its pids are the node's (depth 1), and the
    // node's pid 1 is no container's init even if it were listed.
    let mut host = vec![raw(1, 0, 1, 1, 9), raw(3000, 2999, 3000, 3000, 5)];
    for p in &mut host {
        p.ns_depth = 1;
    }
    assert_eq!(find_init(&host), Some(3000));
}

#[test]
fn a_parent_loop_ends() {
    let procs = vec![raw(10, 11, 10, 5, 1), raw(11, 10, 10, 6, 2), raw(12, 99, 12, 1, 0)];
    let o = origins(&procs, Some(12));
    assert_eq!(o[&10], Origin::ExecSession);
    assert_eq!(o[&12], Origin::Container);
}

#[test]
fn exe_sources_from_the_link() {
    assert_eq!(exe_source(std::process::id(), "/memfd:x (deleted)", None), ExeSource::Memfd);
    assert_eq!(exe_source(std::process::id(), "/tmp/x (deleted)", None), ExeSource::Deleted);
    // No container filesystem known: unknown, not image.
    assert_eq!(exe_source(std::process::id(), "/bin/true", None), ExeSource::Unknown);
}

#[test]
fn bad_ids_and_absent_containers() {
    for bad in ["", "../../etc", "ABC", &"a".repeat(63), &"a".repeat(65)] {
        assert!(matches!(list(bad), Err(PsError::BadId(_))), "{bad}");
    }
    let absent = "f".repeat(64);
    assert_eq!(list(&absent).unwrap_err(), PsError::NoProcesses(absent.clone()));
}

#[test]
fn json_shape() {
    let p = Process {
        pid: 5,
        ns_pid: 1,
        parent_pid: 4,
        uid: 0,
        user_name: None,
        start_time: "2024-01-01T00:00:00.000000000Z".into(),
        exe_path: "/bin/sh".into(),
        exe_name: "sh".into(),
        command_line: "sh -c x".into(),
        command_args: vec!["sh".into(), "-c".into(), "x".into()],
        exe_source: "image",
        origin: Origin::ExecSession,
        exe_path_escaped: false,
        args_escaped: false,
        listening: Vec::new(),
        connections: Vec::new(),
    };
    let l =
        ProcessList { container_id: "c".into(), processes: vec![p], network_namespaces: Vec::new(), truncated: vec![] };
    let v = serde_json::to_value(&l).unwrap();
    assert_eq!(v["container.id"], "c");
    let p = &v["processes"][0];
    assert_eq!(p["driftwatch.process.origin"], "exec_session");
    assert_eq!(p["driftwatch.exe.source"], "image");
    assert!(p.get("process.user.name").is_none() && p.get("driftwatch.exe.path_escaped").is_none());
    assert!(v.get("truncated").is_none());
}
