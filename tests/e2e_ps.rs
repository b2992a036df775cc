//! Issue 12, item 2: `driftwatch ps` on real containers (containerd + runc,
//! the real kernel): the real CLI binary, its JSON parsed. Where each
//! process came from (the container's own tree, or an exec session: CRI
//! ExecSync as `kubectl exec` uses it, also once its first process is gone
//! and what it started was handed to the container's init), where each
//! executable comes from, and the sockets of the container's network
//! namespace, per process and for the namespace.
//!
//! Run with: DRIFTWATCH_PRIVILEGED_TESTS=1 cargo test --test e2e_ps
mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::{
    RunSpec,
    cri::{Pod, PodSpec, TRIGGER_LOOP},
};

fn endpoint() -> String {
    format!("unix://{}", support::containerd().address.display())
}

/// `driftwatch ps ARGS -o FORMAT`: exit code, stdout, stderr.
fn ps(args: &[&str], format: &str) -> (Option<i32>, String, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .arg("ps")
        .args(args)
        .args(["--runtime-endpoint", &endpoint(), "-o", format])
        .output()
        .expect("run driftwatch ps");
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn ps_json(container: &str) -> Value {
    let (code, out, err) = ps(&[container], "json");
    assert_eq!(code, Some(0), "driftwatch ps {container}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("ps JSON: {e}: {out}"))
}

/// The listed process whose command line is exactly `cmd`.
fn by_cmd<'a>(l: &'a Value, cmd: &str) -> Option<&'a Value> {
    l["processes"].as_array().unwrap().iter().find(|p| p["process.command_line"] == cmd)
}

/// Polls `ps` until every command in `cmds` is listed (a background
/// process may not have exec'd yet when its starter returns).
fn wait_listed(container: &str, cmds: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let l = ps_json(container);
        if cmds.iter().all(|c| by_cmd(&l, c).is_some()) {
            return l;
        }
        assert!(Instant::now() < deadline, "not all of {cmds:?} listed: {l:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn field<'a>(p: &'a Value, k: &str) -> &'a str {
    p[k].as_str().unwrap_or_else(|| panic!("no {k}: {p:#}"))
}

/// A port that is free on this host now (CRI pods here use the host's network).
fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0").unwrap().local_addr().unwrap().port()
}

fn listens_on(p: &Value, port: u16) -> bool {
    p["listening"].as_array().unwrap().iter().any(|s| {
        s["protocol"] == "tcp" && s["state"] == "LISTEN" && s["local"].as_str().unwrap().ends_with(&format!(":{port}"))
    })
}

#[test]
fn ps_tells_the_containers_tree_from_exec_sessions_with_sources_and_sockets() {
    if !support::privileged() {
        return;
    }
    let sock = &support::containerd().address;
    let mut pod = Pod::run(sock, PodSpec::new("ps-0", "ps").namespace("ps-e2e"));
    let c = pod.start_container("app", TRIGGER_LOOP);
    let (tree_port, session_port) = (free_port(), free_port());

    // The container's own tree (the entrypoint runs these): an image binary,
    // a binary written to the upper layer, one deleted while it runs, a listener.
    let tree = format!(
        "mkdir -p /tmp/ps/gone && cp /bin/busybox /tmp/ps/busybox && cp /bin/busybox /tmp/ps/gone/busybox; \
         sleep 311 >/dev/null 2>&1 & /tmp/ps/busybox sleep 312 >/dev/null 2>&1 & \
         /tmp/ps/gone/busybox sleep 313 >/dev/null 2>&1 & nc -l -p {tree_port} >/dev/null 2>&1 & \
         sleep 0.5; rm /tmp/ps/gone/busybox"
    );
    assert_eq!(c.run_in_tree(&tree), 0);
    // Exec sessions (ExecSync): what they leave running once their shell has
    // exited (the kernel hands it to the container's init), a fileless
    // binary, a listener, and one that is still the session's own process.
    let session = format!(
        "sleep 321 >/dev/null 2>&1 </dev/null & /usr/bin/memexec /bin/busybox sleep 322 >/dev/null 2>&1 </dev/null & \
         nc -l -p {session_port} >/dev/null 2>&1 </dev/null &"
    );
    let (code, _, err) = c.exec_sync(&["/bin/sh", "-c", &session]).expect("ExecSync");
    assert_eq!(code, 0, "{err}");
    let held = c.clone();
    let holder = std::thread::spawn(move || held.exec_sync(&["/bin/sleep", "323"]));

    let nc_tree = format!("nc -l -p {tree_port}");
    let nc_session = format!("nc -l -p {session_port}");
    let l = wait_listed(
        &c.id,
        &[
            "sleep 311",
            "/tmp/ps/busybox sleep 312",
            "/tmp/ps/gone/busybox sleep 313",
            &nc_tree,
            "sleep 321",
            "/bin/busybox sleep 322",
            &nc_session,
            "/bin/sleep 323",
        ],
    );
    assert_eq!(l["container.id"], c.id.as_str());
    let init = l["processes"].as_array().unwrap().iter().find(|p| p["process.pid"] == c.pid).expect("the init");
    assert_eq!(init["driftwatch.process.ns_pid"], 1, "{init:#}");
    assert_eq!(field(init, "driftwatch.process.origin"), "container");

    // (command line, origin, exe source)
    for (cmd, origin, source) in [
        ("sleep 311", "container", "image"),
        ("/tmp/ps/busybox sleep 312", "container", "upper_layer"),
        ("/tmp/ps/gone/busybox sleep 313", "container", "deleted"),
        (nc_tree.as_str(), "container", "image"),
        ("sleep 321", "exec_session", "image"),
        ("/bin/busybox sleep 322", "exec_session", "memfd"),
        (nc_session.as_str(), "exec_session", "image"),
        ("/bin/sleep 323", "exec_session", "image"),
    ] {
        let p = by_cmd(&l, cmd).unwrap();
        assert_eq!(field(p, "driftwatch.process.origin"), origin, "{cmd}: {p:#}");
        assert_eq!(field(p, "driftwatch.exe.source"), source, "{cmd}: {p:#}");
        assert_eq!(field(p, "process.user.name"), "root", "{cmd}: from the container's /etc/passwd");
        assert_eq!(p["process.user.id"], 0);
        let started =
            time::OffsetDateTime::parse(field(p, "process.start_time"), &time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|e| panic!("{cmd}: start time: {e}"));
        let age = time::OffsetDateTime::now_utc() - started;
        assert!(age > time::Duration::seconds(-2) && age < time::Duration::minutes(5), "{cmd}: started {age} ago");
    }
    // The orphans of both kinds now have the same parent, the init: the
    // session, not the parent, tells them apart.
    assert_eq!(by_cmd(&l, "sleep 311").unwrap()["process.parent_pid"], c.pid);
    assert_eq!(by_cmd(&l, "sleep 321").unwrap()["process.parent_pid"], c.pid);
    // The session's own process has its parent outside the container.
    let own = by_cmd(&l, "/bin/sleep 323").unwrap();
    let parent = own["process.parent_pid"].as_u64().unwrap();
    assert!(l["processes"].as_array().unwrap().iter().all(|p| p["process.pid"] != parent), "{own:#}");
    assert_eq!(field(own, "process.executable.path"), "/bin/busybox");
    assert_eq!(field(by_cmd(&l, "/bin/busybox sleep 322").unwrap(), "process.executable.path"), "/memfd:payload");
    assert_eq!(
        field(by_cmd(&l, "/tmp/ps/gone/busybox sleep 313").unwrap(), "process.executable.path"),
        "/tmp/ps/gone/busybox"
    );

    // Listeners, on the process holding them.
    assert!(listens_on(by_cmd(&l, &nc_tree).unwrap(), tree_port), "{l:#}");
    assert!(listens_on(by_cmd(&l, &nc_session).unwrap(), session_port), "{l:#}");
    assert!(!listens_on(by_cmd(&l, "sleep 311").unwrap(), tree_port));
    // A hostNetwork pod: the node's sockets are not listed as the container's.
    let ns = l["network_namespaces"].as_array().unwrap();
    assert_eq!(ns.len(), 1, "{ns:#?}");
    assert_eq!(ns[0]["host_network"], true);
    assert!(ns[0]["listening"].as_array().unwrap().is_empty() && ns[0]["connections"].as_array().unwrap().is_empty());
    assert!(l.get("truncated").is_none(), "{l:#}");

    // By pod name (through CRI), as a table.
    let (code, table, err) = ps(&["ps-e2e/ps-0/app"], "table");
    assert_eq!(code, Some(0), "{err}");
    assert!(table.starts_with(&format!("container {}", c.id)), "{table}");
    for needle in ["exec_session", "upper_layer", "memfd", &format!("listen tcp [::]:{tree_port}"), "sleep 321"] {
        assert!(table.contains(needle), "{needle} in\n{table}");
    }
    // Errors: exit 2 with the reason.
    let (code, _, err) = ps(&["ps-e2e/no-such-pod"], "json");
    assert_eq!(code, Some(2));
    assert!(err.contains("no container on this node matches"), "{err}");
    let (code, _, err) = ps(&["../etc"], "json");
    assert_eq!(code, Some(2));
    assert!(err.contains("not a container id"), "{err}");

    // The ExecSync still holding its process returns once it is killed.
    let _ = std::process::Command::new("kill").arg(own["process.pid"].to_string()).status();
    let _ = holder.join();
    drop(pod);
}

/// A container with a network namespace of its own (`ctr run`): the sockets
/// no listed process holds are listed for the namespace.
#[test]
fn own_network_namespace_lists_sockets_no_process_holds() {
    if !support::privileged() {
        return;
    }
    let c = support::containerd().run(RunSpec::new(&["/bin/sh", "-c", "nc -l -p 7000 >/dev/null; exec sleep 300"]));
    // A connection to the entrypoint's listener leaves a TIME_WAIT socket
    // (held by no process) on the side that closed first.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = c.exec(&["/bin/sh", "-c", "echo hi | nc 127.0.0.1 7000"]);
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "no listener on 7000: {out:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let l = wait_listed(&c.id, &["sleep 300"]);
    let ns = l["network_namespaces"].as_array().unwrap();
    assert_eq!(ns.len(), 1, "{ns:#?}");
    assert_eq!(ns[0]["host_network"], false);
    let tw: Vec<&Value> = ns[0]["connections"]
        .as_array()
        .unwrap()
        .iter()
        // Whichever side closed first keeps it (IPv4 in the tcp or the tcp6
        // table); on a simultaneous close both sides do.
        .filter(|s| {
            let port = |k: &str| s[k].as_str().unwrap().ends_with(":7000");
            s["state"] == "TIME_WAIT" && (port("local") || port("remote"))
        })
        .collect();
    assert!((1..=2).contains(&tw.len()), "{ns:#?}");
    // The container was started outside CRI: found through /proc by id prefix.
    let (code, out, err) = ps(&[&c.id[..12]], "json");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["container.id"], c.id.as_str());
}
