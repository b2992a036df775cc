//! Builds one finding per rule (and per notable variant) through the agent's
//! public stages, from kernel records as the eBPF programs write them.

use driftwatch::{
    abi,
    classify::{Classifier, Subject, config_drift, file::FileJudge, network::NetworkJudge},
    config::Config,
    enrich::{self, cri::ContainerMeta, overlay::ContainerFs},
    event::{self, Event},
    pipeline::apply_metadata,
};
use std::{collections::BTreeMap, mem::size_of};

const ID: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const POD_UID: &str = "5f0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b";
const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
/// A pid no process has (above the default pid_max): nothing is read from /proc.
const TGID: u32 = 4_194_000;

fn put(dst: &mut [std::ffi::c_char], s: &[u8]) {
    for (d, b) in dst.iter_mut().zip(s) {
        *d = *b as std::ffi::c_char;
    }
}

/// Replaces a NUL-terminated name (and its length) with `s`.
fn set(dst: &mut [std::ffi::c_char], len: &mut u16, s: &[u8]) {
    dst.fill(0);
    put(dst, s);
    *len = s.len() as u16;
}

/// The kubelet + containerd (systemd driver) cgroup of our pod's container.
fn cgroup(levels: &mut [[std::ffi::c_char; abi::DW_CGROUP_NAME_LEN as usize]]) {
    put(&mut levels[0], format!("cri-containerd-{ID}.scope").as_bytes());
    put(&mut levels[1], b"kubepods-burstable-pod5f0c1a2b_3c4d_4e5f_8a9b_0c1d2e3f4a5b.slice");
    put(&mut levels[2], b"kubepods-burstable.slice");
    put(&mut levels[3], b"kubepods.slice");
}

/// The common header of a record of `kind` and type `T`, from our test process.
fn header<T>(h: &mut abi::dw_header, kind: u32, ktime_s: u64) {
    h.kind = kind as u16;
    h.size = size_of::<T>() as u16;
    h.ktime_ns = ktime_s * 1_000_000_000;
    h.tgid = TGID;
    h.pid = TGID;
}

fn bytes<T: Copy>(r: T) -> Vec<u8> {
    let mut v = vec![0u8; size_of::<T>()];
    // SAFETY: writing a POD into a buffer of exactly its size.
    unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast::<T>(), r) };
    v
}

struct Exec {
    comm: &'static str,
    parent: &'static str,
    path: &'static str,
    args: &'static [&'static str],
    source: u32,
    flags: u32,
    script: Option<(&'static str, u32)>,
    env: u16,
    /// Last touches to the record (names that are not UTF-8).
    raw: fn(&mut abi::dw_exec),
}

fn exec_record(e: &Exec) -> Vec<u8> {
    let mut r = abi::dw_exec::default();
    header::<abi::dw_exec>(&mut r.hdr, abi::DW_KIND_EXEC, 1);
    r.hdr.cgroup_id = 4242;
    r.ppid = TGID - 1;
    r.uid = 1000;
    r.gid = 1001;
    r.mntns = 4_026_532_999;
    r.mntns_id = 77;
    r.exe_ino = 1_234_567;
    r.exe_nlink = 1;
    r.exe_source = e.source;
    r.flags = e.flags;
    r.env_loader = e.env;
    put(&mut r.comm, e.comm.as_bytes());
    put(&mut r.parent_comm, e.parent.as_bytes());
    put(&mut r.path, e.path.as_bytes());
    r.path_len = e.path.len() as u16;
    let args: Vec<u8> = e.args.iter().flat_map(|a| a.bytes().chain([0])).collect();
    put(&mut r.args, &args);
    r.args_len = args.len() as u16;
    if let Some((p, src)) = e.script {
        r.flags |= abi::DW_EXEC_SCRIPT;
        put(&mut r.script, p.as_bytes());
        r.script_len = p.len() as u16;
        r.script_source = src;
    }
    cgroup(&mut r.cgroup);
    (e.raw)(&mut r);
    bytes(r)
}

/// An exec of `/tmp/<name>` with argv `[path, "a\\b"]`, for names that are not UTF-8.
fn bad_name(r: &mut abi::dw_exec, name: &[u8]) {
    let path = [b"/tmp/".as_slice(), name].concat();
    let mut comm_len = 0;
    set(&mut r.comm, &mut comm_len, name);
    set(&mut r.path, &mut r.path_len, &path);
    set(&mut r.args, &mut r.args_len, &[path.as_slice(), b"\0a\\b\0"].concat());
}

fn file_record(op: u32, path: &str, path2: &str, f: impl FnOnce(&mut abi::dw_file)) -> Vec<u8> {
    let mut r = abi::dw_file::default();
    header::<abi::dw_file>(&mut r.hdr, abi::DW_KIND_FILE, 2);
    r.ppid = TGID - 1;
    r.uid = 33;
    r.mntns_id = 77;
    r.ino = 99;
    r.op = op as u16;
    r.source = abi::DW_SRC_UNKNOWN;
    put(&mut r.comm, b"nginx");
    put(&mut r.path, path.as_bytes());
    r.path_len = path.len() as u16;
    put(&mut r.path2, path2.as_bytes());
    r.path2_len = path2.len() as u16;
    cgroup(&mut r.cgroup);
    f(&mut r);
    bytes(r)
}

/// A drifted executable mapping of `path` by `exe` (argv `args`).
fn map_record(exe: &str, path: &str, args: &[&str], flags: u32) -> Vec<u8> {
    let mut r = abi::dw_map::default();
    header::<abi::dw_map>(&mut r.hdr, abi::DW_KIND_MAP, 4);
    r.ppid = TGID - 1;
    r.uid = 0;
    r.mntns_id = 77;
    r.ino = 1_234_568;
    r.source = abi::DW_SRC_UPPER;
    r.flags = flags;
    r.prot = 5;
    let comm = exe.rsplit('/').next().unwrap_or(exe);
    put(&mut r.comm, &comm.as_bytes()[..comm.len().min(15)]);
    put(&mut r.path, path.as_bytes());
    r.path_len = path.len() as u16;
    put(&mut r.exe, exe.as_bytes());
    r.exe_len = exe.len() as u16;
    let args: Vec<u8> = args.iter().flat_map(|a| a.bytes().chain([0])).collect();
    put(&mut r.args, &args);
    r.args_len = args.len() as u16;
    cgroup(&mut r.cgroup);
    bytes(r)
}

fn map_case(j: &Judges, rec: Vec<u8>) -> String {
    let Event::Map(ev) = event::decode(&rec).expect("decode") else { panic!("not map") };
    let c = enrich::container_of(&ev.proc).expect("container");
    let mut f = j.cl.mapping(&ev, &c).expect("a finding");
    apply_metadata(&mut f, &meta());
    json(&f)
}

fn net_record(op: u32, family: u16, sock_type: u16, addr: &[u8], port: u16) -> Vec<u8> {
    let mut r = abi::dw_net::default();
    header::<abi::dw_net>(&mut r.hdr, abi::DW_KIND_NET, 3);
    r.ppid = TGID - 1;
    r.uid = 0;
    r.mntns_id = 77;
    r.op = op as u16;
    r.family = family;
    r.sock_type = sock_type;
    r.addr[..addr.len()].copy_from_slice(addr);
    r.port = port;
    put(&mut r.comm, b"curl");
    cgroup(&mut r.cgroup);
    bytes(r)
}

/// What the runtime says of our pod's container.
fn meta() -> ContainerMeta {
    ContainerMeta {
        container_id: ID.into(),
        container_name: "api".into(),
        pod_name: "checkout-7d9f8b6c5d-x2k4q".into(),
        namespace: "shop".into(),
        pod_uid: POD_UID.into(),
        sandbox_id: "5a".repeat(32),
        image: "registry.example.com/shop/api:v2".into(),
        image_ref: format!("registry.example.com/shop/api@{D1}"),
        pod_labels: BTreeMap::from([
            ("app".to_string(), "checkout".to_string()),
            ("pod-template-hash".to_string(), "7d9f8b6c5d".to_string()),
        ]),
        pod_annotations: BTreeMap::new(),
        runtime: "containerd".into(),
    }
}

struct Judges {
    cl: Classifier,
    file: FileJudge,
    net: NetworkJudge,
}

fn judges() -> Judges {
    let mut cfg = Config::default();
    cfg.rules.network.learning_window_s = 0;
    cfg.rules.network.state_dir = String::new();
    let (net, err) = NetworkJudge::new(&cfg.rules.network);
    assert!(err.is_none());
    Judges { cl: Classifier::new(&cfg), file: FileJudge::new(&cfg.rules.file), net }
}

thread_local! {
    /// Each case's finding as a Falco event, in the order [`all`] builds them.
    static FALCO: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One finding as the stdout sink writes it (no newline); its Falco event is kept for [`falco`].
fn json(f: &driftwatch::classify::Finding) -> String {
    let event = String::from_utf8(driftwatch::sink::falco::render(f).to_vec()).expect("utf-8");
    FALCO.with(|v| v.borrow_mut().push(event));
    let mut out = Vec::new();
    let mut buf = Vec::new();
    driftwatch::sink::json::write_line(&mut out, f, &mut buf).expect("write");
    String::from_utf8(out).expect("utf-8").trim_end_matches('\n').to_string()
}

fn exec_case(j: &Judges, e: Exec, with_meta: bool, post: impl FnOnce(&mut driftwatch::classify::Finding)) -> String {
    let Event::Exec(ev) = event::decode(&exec_record(&e)).expect("decode") else { panic!("not exec") };
    let c = enrich::container_of(&ev.proc).expect("container");
    let mut f = j.cl.exec(ev, &c).expect("a finding");
    post(&mut f);
    if with_meta {
        apply_metadata(&mut f, &meta());
    } else {
        f.k8s_mut().metadata_complete = false;
        f.k8s_mut().metadata_missing = Some("no_runtime");
    }
    json(&f)
}

fn file_case(j: &Judges, rec: Vec<u8>) -> String {
    let Event::File(ev) = event::decode(&rec).expect("decode") else { panic!("not file") };
    let c = enrich::container_of(&ev.proc).expect("container");
    // The pid has no process: the container's filesystem is unknown, as for an exited one.
    let mut f = j.file.judge(&j.cl, &ev, &c, &ContainerFs::default()).expect("a finding");
    apply_metadata(&mut f, &meta());
    json(&f)
}

fn net_case(j: &Judges, rec: Vec<u8>) -> String {
    let Event::Net(ev) = event::decode(&rec).expect("decode") else { panic!("not net") };
    let c = enrich::container_of(&ev.proc).expect("container");
    let mut f = j.net.judge(&j.cl, &ev, &c, "shop/Deployment/checkout/api").expect("a finding");
    apply_metadata(&mut f, &meta());
    json(&f)
}

fn config_case(spec: &str, image_ref: &str, approved: &[(&str, &str)], rule: &str) -> String {
    let mut raw: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (image, d) in approved {
        raw.entry(image.to_string()).or_default().push(d.to_string());
    }
    let facts = config_drift::ImageFacts { container: "api", spec, spec_source: "pod_spec", image_ref };
    let issue = config_drift::check_image(&facts, &config_drift::normalise_approved(&raw))
        .into_iter()
        .find(|i| i.rule.name == rule)
        .unwrap_or_else(|| panic!("no {rule}"));
    let cl = Classifier::new(&Config::default());
    let mut f = cl.config_finding(Subject { id: ID, runtime: "containerd", pod_uid: None }, issue);
    let mut m = meta();
    m.image = spec.into();
    m.image_ref = image_ref.into();
    apply_metadata(&mut f, &m);
    json(&f)
}

/// Every case: (golden file name, JSON line).
pub fn all() -> Vec<(String, String)> {
    let j = judges();
    let x = |comm, path, args, source, flags| Exec {
        comm,
        parent: "sh",
        path,
        args,
        source,
        flags,
        script: None,
        env: 0,
        raw: |_| {},
    };
    let mut v: Vec<(&str, String)> = vec![
        (
            "exec_new_binary",
            exec_case(
                &j,
                x("xmrig", "/tmp/xmrig", &["/tmp/xmrig", "-o", "pool:3333"], abi::DW_SRC_UPPER, abi::DW_EXEC_DRIFT),
                true,
                |f| f.exec_mut().unwrap().exe_origin = Some("new_file"),
            ),
        ),
        (
            "exec_new_binary_node_only",
            exec_case(
                &j,
                x("xmrig", "/tmp/xmrig", &["/tmp/xmrig"], abi::DW_SRC_UPPER, abi::DW_EXEC_DRIFT),
                false,
                |_| {},
            ),
        ),
        (
            "exec_fileless_memfd",
            exec_case(
                &j,
                x("3", "/memfd:x (deleted)", &["payload"], abi::DW_SRC_MEMFD, abi::DW_EXEC_DRIFT),
                true,
                |_| {},
            ),
        ),
        (
            "exec_fileless_deleted",
            exec_case(
                &j,
                x("dropper", "/tmp/dropper", &["./dropper"], abi::DW_SRC_DELETED, abi::DW_EXEC_DRIFT),
                true,
                |_| {},
            ),
        ),
        (
            "exec_from_tmpfs",
            exec_case(
                &j,
                x("kit", "/scratch/kit", &["/scratch/kit"], abi::DW_SRC_TMPFS, abi::DW_EXEC_DRIFT),
                true,
                |_| {},
            ),
        ),
        (
            "exec_from_volume",
            exec_case(&j, x("kit", "/data/kit", &["/data/kit"], abi::DW_SRC_VOLUME, abi::DW_EXEC_DRIFT), true, |_| {}),
        ),
        (
            "exec_new_script",
            exec_case(
                &j,
                Exec {
                    script: Some(("/root/run.sh", abi::DW_SRC_UPPER)),
                    ..x("run.sh", "/bin/sh", &["/bin/sh", "/root/run.sh"], abi::DW_SRC_IMAGE, abi::DW_EXEC_DRIFT)
                },
                true,
                |_| {},
            ),
        ),
        (
            "exec_new_library",
            map_case(&j, map_record("/usr/bin/python3.11", "/tmp/.x/libhook.so", &["python3", "app.py"], 0)),
        ),
        (
            "exec_via_loader",
            map_case(
                &j,
                map_record(
                    "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                    "/tmp/payload",
                    &["/lib64/ld-linux-x86-64.so.2", "/tmp/payload"],
                    0,
                ),
            ),
        ),
        (
            "exec_by_drifted_process",
            exec_case(
                &j,
                x("ls", "/bin/ls", &["ls", "-la"], abi::DW_SRC_IMAGE, abi::DW_EXEC_ANCESTOR_DRIFT),
                true,
                |_| {},
            ),
        ),
        (
            "shell_in_container",
            exec_case(
                &j,
                Exec { parent: "java", ..x("sh", "/bin/sh", &["sh", "-c", "id"], abi::DW_SRC_IMAGE, 0) },
                true,
                |_| {},
            ),
        ),
        (
            "terminal_shell_in_container",
            exec_case(
                &j,
                // `kubectl exec -it ... bash`: an exec session.
                Exec {
                    parent: "runc:[2:INIT]",
                    raw: |r| r.origin = abi::DW_ORIGIN_EXEC_SESSION,
                    ..x("bash", "/bin/bash", &["bash"], abi::DW_SRC_IMAGE, abi::DW_EXEC_TTY)
                },
                true,
                |_| {},
            ),
        ),
        (
            "package_manager_exec",
            exec_case(
                &j,
                x("apt-get", "/usr/bin/apt-get", &["apt-get", "install", "-y", "curl"], abi::DW_SRC_IMAGE, 0),
                true,
                |_| {},
            ),
        ),
        (
            // A credential in a package index URL: redacted (src/redact.rs) in the
            // arguments and in the message that quotes them, and marked.
            "package_manager_exec_redacted",
            exec_case(
                &j,
                x(
                    "pip",
                    "/usr/local/bin/pip",
                    &["pip", "install", "--index-url", "https://ci:s3cr3t@pypi.example.com/simple", "private-pkg"],
                    abi::DW_SRC_IMAGE,
                    0,
                ),
                true,
                |f| {
                    let r = Config::default().redaction.redactor().expect("valid").expect("on by default");
                    assert!(!driftwatch::pipeline::redact_finding(&r, f).is_empty());
                },
            ),
        ),
        (
            "loader_injection_env",
            exec_case(
                &j,
                Exec {
                    env: (abi::DW_ENV_LD_PRELOAD | abi::DW_ENV_LD_AUDIT) as u16,
                    ..x(
                        "python3",
                        "/usr/bin/python3",
                        &["python3", "app.py"],
                        abi::DW_SRC_IMAGE,
                        abi::DW_EXEC_ENV_DRIFT,
                    )
                },
                true,
                |_| {},
            ),
        ),
        (
            "exec_truncated",
            exec_case(
                &j,
                x(
                    "x",
                    "/very/deep/x",
                    &["/very/deep/x", "a"],
                    abi::DW_SRC_UPPER,
                    abi::DW_EXEC_DRIFT | abi::DW_EXEC_PATH_TRUNC | abi::DW_EXEC_ARGS_TRUNC,
                ),
                true,
                |_| {},
            ),
        ),
        ("file_written", file_case(&j, file_record(abi::DW_FILE_WRITE, "/etc/nginx/nginx.conf", "", |_| {}))),
        ("file_truncated", file_case(&j, file_record(abi::DW_FILE_TRUNCATE, "/app/config.json", "", |_| {}))),
        ("file_deleted", file_case(&j, file_record(abi::DW_FILE_DELETE, "/usr/bin/curl", "", |_| {}))),
        ("file_renamed", file_case(&j, file_record(abi::DW_FILE_RENAME, "/etc/hosts", "/etc/hosts.bak", |_| {}))),
        (
            "file_mode_changed",
            file_case(&j, file_record(abi::DW_FILE_CHMOD, "/usr/local/bin/tool", "", |r| r.mode = 0o104755)),
        ),
        (
            "file_owner_changed",
            file_case(
                &j,
                file_record(abi::DW_FILE_CHOWN, "/etc/shadow", "", |r| {
                    r.owner_uid = 0;
                    r.owner_gid = u32::MAX;
                }),
            ),
        ),
        ("file_linked", file_case(&j, file_record(abi::DW_FILE_LINK, "/etc/passwd", "/root/p", |_| {}))),
        ("file_symlinked", file_case(&j, file_record(abi::DW_FILE_SYMLINK, "/root/l", "../etc/shadow", |_| {}))),
        ("file_directory_created", file_case(&j, file_record(abi::DW_FILE_MKDIR, "/opt/kit/", "", |_| {}))),
        (
            "file_on_volume_path_truncated",
            file_case(
                &j,
                file_record(abi::DW_FILE_WRITE, "x/deep/file", "", |r| {
                    r.source = abi::DW_SRC_TMPFS;
                    r.flags = abi::DW_FILE_PATH_TRUNC as u16;
                }),
            ),
        ),
        (
            "file_renamed_target_truncated",
            file_case(
                &j,
                file_record(abi::DW_FILE_RENAME, "/etc/a", "ddd/e/new-name", |r| {
                    r.flags = (abi::DW_FILE_PATH_TRUNC | abi::DW_FILE_PATH2_TRUNC) as u16;
                }),
            ),
        ),
        // Names that are not UTF-8 (issue 10): escaped (\xHH, and \\ for a backslash
        // of an escaped name), marked with a *_escaped key, never alike.
        (
            "exec_new_binary_escaped",
            exec_case(
                &j,
                Exec {
                    raw: |r| bad_name(r, b"bad\xff\xfe"),
                    ..x("bad", "/tmp/bad", &["/tmp/bad"], abi::DW_SRC_UPPER, abi::DW_EXEC_DRIFT)
                },
                true,
                |f| f.exec_mut().unwrap().exe_origin = Some("new_file"),
            ),
        ),
        (
            "exec_new_binary_escaped_swapped",
            exec_case(
                &j,
                Exec {
                    raw: |r| bad_name(r, b"bad\xfe\xff"),
                    ..x("bad", "/tmp/bad", &["/tmp/bad"], abi::DW_SRC_UPPER, abi::DW_EXEC_DRIFT)
                },
                true,
                |f| f.exec_mut().unwrap().exe_origin = Some("new_file"),
            ),
        ),
        (
            "exec_new_script_escaped",
            exec_case(
                &j,
                Exec {
                    script: Some(("/root/run.sh", abi::DW_SRC_UPPER)),
                    raw: |r| {
                        // "r\xc3n.sh": a UTF-8 lead byte without its continuation.
                        set(&mut r.script, &mut r.script_len, b"/root/r\xc3n.sh");
                        let mut len = 0;
                        set(&mut r.comm, &mut len, b"r\xc3n.sh");
                        set(&mut r.parent_comm, &mut len, b"dropper\x80");
                        // A cgroup the process made below its container's.
                        set(&mut r.cgroup[3], &mut len, b"sub\xff");
                        r.cgroup.rotate_right(1);
                    },
                    ..x("run.sh", "/bin/sh", &["/bin/sh", "/root/run.sh"], abi::DW_SRC_IMAGE, abi::DW_EXEC_DRIFT)
                },
                true,
                |_| {},
            ),
        ),
        (
            "file_renamed_escaped",
            file_case(
                &j,
                file_record(abi::DW_FILE_RENAME, "", "", |r| {
                    set(&mut r.path, &mut r.path_len, b"/etc/bad\xff\xfe");
                    set(&mut r.path2, &mut r.path2_len, b"/etc/back\\slash\xfe");
                }),
            ),
        ),
        ("package_database_write", file_case(&j, file_record(abi::DW_FILE_WRITE, "/var/lib/dpkg/status", "", |_| {}))),
        ("network_new_destination", net_case(&j, net_record(abi::DW_NET_CONNECT, 2, 1, &[203, 0, 113, 7], 4444))),
        (
            "network_new_listener",
            net_case(
                &j,
                net_record(
                    abi::DW_NET_BIND_UDP,
                    10,
                    2,
                    &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                    5353,
                ),
            ),
        ),
        (
            // `nc -l -p 9999` from `kubectl exec`: judged even inside the learning window.
            "network_new_listener_exec_session",
            net_case(&j, {
                let mut rec = net_record(abi::DW_NET_LISTEN, 2, 1, &[0, 0, 0, 0], 9999);
                let at = std::mem::offset_of!(abi::dw_net, origin);
                rec[at..at + 4].copy_from_slice(&abi::DW_ORIGIN_EXEC_SESSION.to_ne_bytes());
                rec
            }),
        ),
        (
            "image_mutable_tag",
            config_case(
                "registry.example.com/shop/api:v2",
                &format!("registry.example.com/shop/api@{D1}"),
                &[],
                "image_mutable_tag",
            ),
        ),
        (
            "image_digest_mismatch",
            config_case(
                &format!("registry.example.com/shop/api@{D1}"),
                &format!("registry.example.com/shop/api@{D2}"),
                &[],
                "image_digest_mismatch",
            ),
        ),
        (
            "image_digest_not_approved",
            config_case(
                &format!("registry.example.com/shop/api@{D2}"),
                &format!("registry.example.com/shop/api@{D2}"),
                &[("registry.example.com/shop/api", D1)],
                "image_digest_not_approved",
            ),
        ),
    ];
    // An ephemeral container the runtime does not know yet: the pod's facts come from the API.
    let issue = config_drift::ephemeral_added("checkout-7d9f8b6c5d-x2k4q", "debugger-x7", "busybox:1.36", Some("api"));
    let mut f = j.cl.config_finding(Subject { id: "", runtime: "cri", pod_uid: None }, issue);
    f.k8s_mut().namespace = Some("shop".into());
    f.k8s_mut().pod_name = Some("checkout-7d9f8b6c5d-x2k4q".into());
    f.k8s_mut().pod_uid = Some(POD_UID.into());
    f.k8s_mut().container_name = Some("debugger-x7".into());
    f.k8s_mut().metadata_complete = true;
    v.push(("ephemeral_container_added", json(&f)));
    // Issue 16: configuration changed under a running container.
    v.push((
        "environment_changed",
        exec_case(
            &j,
            x("node", "/usr/local/bin/node", &["node", "server.js"], abi::DW_SRC_IMAGE, abi::DW_EXEC_ENV_CHANGED),
            true,
            |f| {
                // As named from /proc (the record's pid is not a live process here).
                f.message = "/usr/local/bin/node started in container 0f1e2d3c4b5a with an environment its \
                             entrypoint did not have: added HTTPS_PROXY; changed PATH"
                    .into();
                if let Some(e) = f.exec_mut() {
                    e.env = driftwatch::classify::change_facts::EnvFacts {
                        added: Some(vec!["HTTPS_PROXY".into()]),
                        changed: Some(vec!["PATH".into()]),
                    };
                }
            },
        ),
    ));
    let snap = |payload: &str, files: &[(&str, &str)]| driftwatch::enrich::atomic_volume::Snapshot {
        payload: payload.into(),
        files: files.iter().map(|(k, h)| (k.to_string(), h.repeat(64))).collect(),
        truncated: false,
    };
    let volume = driftwatch::classify::config_changes::VolumeFacts {
        name: "db-credentials".into(),
        kind: "secret",
        object: "checkout-db".into(),
        mount_path: "/etc/db".into(),
    };
    let before = snap("..2026_01_02_03_04_05.1", &[("ca.crt", "a"), ("username", "b")]);
    let after = snap("..2026_01_02_03_09_05.2", &[("ca.crt", "c"), ("username", "b"), ("host", "d")]);
    let issue = driftwatch::classify::config_changes::mounted_config_changed("api", &volume, &before, &after)
        .expect("a change");
    let mut f = j.cl.config_finding(Subject { id: ID, runtime: "containerd", pod_uid: None }, issue);
    apply_metadata(&mut f, &meta());
    v.push(("mounted_config_changed", json(&f)));
    let params = |mem: &str| driftwatch::classify::config_changes::RuntimeParams {
        values: [("cpu_quota", "50000".to_string()), ("memory_limit_bytes", mem.to_string())].into_iter().collect(),
    };
    let issue = driftwatch::classify::config_changes::runtime_parameters_changed(
        "api",
        &params("268435456"),
        &params("1073741824"),
        false,
    )
    .expect("a change");
    let mut f = j.cl.config_finding(Subject { id: ID, runtime: "containerd", pod_uid: None }, issue);
    apply_metadata(&mut f, &meta());
    v.push(("runtime_parameters_changed", json(&f)));
    v.into_iter().map(|(n, s)| (n.to_string(), s)).collect()
}

/// Every case as a Falco event (`outputs.stdout.format: falco`): (golden file name, JSON line).
pub fn falco() -> Vec<(String, String)> {
    FALCO.with(|v| v.borrow_mut().clear());
    let cases = all();
    let events = FALCO.with(|v| v.take());
    assert_eq!(cases.len(), events.len(), "one Falco event per case");
    cases.into_iter().zip(events).map(|((name, _), e)| (name, e)).collect()
}

/// Every rule the agent can emit.
pub fn catalog_rules() -> Vec<&'static str> {
    Classifier::new(&Config::default()).catalog().into_iter().map(|(rule, _)| rule.name).collect()
}
