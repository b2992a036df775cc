//! `driftwatch diff` end to end (issue 12): CRI pods of a four-layer image
//! (tests/support/layers.rs: a whiteout and an opaque directory in its own
//! layers) on the private containerd, changed through ExecSync and diffed by
//! the CLI binary from the node; and the engine checked against the kernel's
//! own overlayfs: what a read-only overlay mount of the layers shows is what
//! the diff must say.
//!
//! Run with: DRIFTWATCH_PRIVILEGED_TESTS=1 cargo test --test e2e_diff
//! The 10k-file timing: cargo test --release --test e2e_diff -- --ignored --nocapture
mod support;

use driftwatch::{
    enrich::overlay::OverlayDirs,
    respond::diff::{ChangeKind, DiffOptions, diff_dirs},
};
use k8s_cri::v1 as cri;
use serde_json::Value;
use std::{
    collections::{BTreeMap, HashMap},
    ffi::CString,
    fs,
    os::unix::{
        ffi::OsStrExt,
        fs::{MetadataExt, PermissionsExt, symlink},
    },
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant, SystemTime},
};
use support::cri::{CriContainer, Pod, PodSpec};

fn endpoint() -> String {
    format!("unix://{}", support::containerd().address.display())
}

/// `driftwatch diff <args>`: exit code, stdout, stderr.
fn diff(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .arg("diff")
        .args(args)
        .args(["--runtime-endpoint", &endpoint()])
        .env("RUST_LOG", "warn")
        .output()
        .expect("running driftwatch");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

fn diff_json(spec: &str) -> (i32, Value) {
    let (code, out, err) = diff(&[spec, "--output", "json"]);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("diff {spec}: exit {code}, {e}:\n{out}\n{err}"));
    (code, v)
}

/// path -> change of a JSON report.
fn changes(v: &Value) -> BTreeMap<String, String> {
    v["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| (c["path"].as_str().unwrap().to_string(), c["change"].as_str().unwrap().to_string()))
        .collect()
}

fn change<'a>(v: &'a Value, path: &str) -> &'a Value {
    v["changes"].as_array().unwrap().iter().find(|c| c["path"] == path).unwrap_or_else(|| panic!("no {path}: {v:#}"))
}

fn sha256(b: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, b).as_ref().iter().map(|x| format!("{x:02x}")).collect()
}

/// A pod's container of the layered image, sleeping, with a host directory
/// mounted at /data (a volume).
fn start(pod: &Pod, name: &str, volume: &Path) -> CriContainer {
    let socket = pod.socket.clone();
    let image = support::cri::image_status(&socket, support::layers::LAYERS_IMAGE)
        .expect("ImageStatus")
        .expect("the layered image is known to CRI")
        .id;
    let s = &pod.spec;
    let labels: HashMap<String, String> = [
        ("io.kubernetes.container.name", name),
        ("io.kubernetes.pod.name", &s.name),
        ("io.kubernetes.pod.namespace", &s.namespace),
        ("io.kubernetes.pod.uid", &s.uid),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(cri::ImageSpec {
            image,
            user_specified_image: support::layers::LAYERS_IMAGE.into(),
            ..Default::default()
        }),
        command: vec!["/bin/busybox".into(), "sleep".into(), "600".into()],
        labels,
        log_path: format!("{name}/0.log"),
        mounts: vec![cri::Mount {
            container_path: "/data".into(),
            host_path: volume.display().to_string(),
            ..Default::default()
        }],
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources { oom_score_adj: 1000, ..Default::default() }),
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Node as i32,
                    pid: cri::NamespaceMode::Container as i32,
                    ipc: cri::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }),
        ..Default::default()
    };
    let req = cri::CreateContainerRequest {
        pod_sandbox_id: pod.sandbox_id.clone(),
        config: Some(config),
        sandbox_config: Some(s.sandbox_config()),
    };
    // The sandbox's removal (when `pod` drops) removes this container too.
    let id = support::cri::with_client(&socket, Duration::from_secs(60), |mut c| async move {
        let id = c.create_container(req).await?.into_inner().container_id;
        c.start_container(cri::StartContainerRequest { container_id: id.clone() }).await?;
        Ok(id)
    })
    .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    let pid = support::cri::container_pid(&socket, &id).unwrap_or_else(|e| panic!("pid of {id}: {e}"));
    CriContainer { id, name: name.into(), pid, socket }
}

fn sh(c: &CriContainer, script: &str) {
    let (code, out, err) = c.exec_sync(&["/bin/busybox", "sh", "-c", script]).expect("ExecSync");
    assert_eq!(code, 0, "{script}: {out}{err}");
}

/// A host directory for a pod's /data volume, removed on drop.
struct Volume(PathBuf);

impl Volume {
    fn new(tag: &str) -> Volume {
        let p = Path::new(support::ROOT_DIR).join(format!("diff-vol-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Volume(p)
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn ready() -> bool {
    if !support::privileged() {
        return false;
    }
    support::layers::ensure(support::containerd());
    true
}

#[test]
fn every_kind_of_drift_on_a_four_layer_image() {
    if !ready() {
        return;
    }
    let vol = Volume::new("all");
    let pod = Pod::run(&support::containerd().address, PodSpec::new("diff-all", "diff"));
    let c = start(&pod, "app", &vol.0);
    sh(
        &c,
        "set -e
         echo hi > /tmp/added.txt
         cp /bin/busybox /tmp/dropper
         echo setting=evil > /etc/app.conf
         chmod 600 /etc/chmod-me
         rm /etc/motd
         rm -r /var/lib/olddir
         rm -r /srv/data && mkdir /srv/data && echo new > /srv/data/n1
         ln -sfn /etc/passwd /etc/link
         echo back > /opt/gone-later
         echo again > /opt/replaced/old1
         echo on the volume > /data/vol.txt",
    );
    // No shell any more: the diff never needed one.
    let (code, _, err) = c.exec_sync(&["/bin/busybox", "rm", "/bin/sh"]).expect("ExecSync");
    assert_eq!(code, 0, "{err}");
    assert!(vol.0.join("vol.txt").exists());

    let spec = format!("{}/{}/app", pod.spec.namespace, pod.spec.name);
    let (code, v) = diff_json(&spec);
    assert_eq!(code, 1, "drift exits 1: {v:#}");
    let want: BTreeMap<String, String> = [
        ("/bin/sh", "deleted"),
        ("/etc/app.conf", "modified"),
        ("/etc/chmod-me", "metadata_only"),
        ("/etc/link", "modified"),
        ("/etc/motd", "deleted"),
        // Layer B deleted it, so the container's is new.
        ("/opt/gone-later", "added"),
        // Layer B's opaque directory hides layer A's old1.
        ("/opt/replaced/old1", "added"),
        ("/srv/data/d1", "deleted"),
        ("/srv/data/d2", "deleted"),
        ("/srv/data/n1", "added"),
        ("/tmp/added.txt", "added"),
        ("/tmp/dropper", "added"),
        ("/var/lib/olddir", "deleted"),
        ("/var/lib/olddir/f1", "deleted"),
        ("/var/lib/olddir/f2", "deleted"),
    ]
    .into_iter()
    .map(|(p, k)| (p.to_string(), k.to_string()))
    .collect();
    assert_eq!(changes(&v), want, "{v:#}");

    assert_eq!(v["container.id"], c.id.as_str());
    assert_eq!(v["k8s.namespace.name"], pod.spec.namespace.as_str());
    assert_eq!(v["k8s.pod.name"], "diff-all");
    assert_eq!(v["k8s.container.name"], "app");
    assert_eq!(v["container.image.name"], "localhost/driftwatch-layers");
    assert_eq!(v["image"]["layers"], 4, "{:#}", v["image"]);
    let s = &v["summary"];
    assert_eq!(s["drift"], true);
    assert_eq!((s["total"].as_u64(), s["added"].as_u64()), (Some(15), Some(5)), "{s:#}");
    assert_eq!(
        (s["modified"].as_u64(), s["metadata_only"].as_u64(), s["deleted"].as_u64()),
        (Some(2), Some(1), Some(7))
    );
    assert_eq!(s["unreadable"], 0, "{s:#}");
    let not_covered: Vec<&str> = s["not_covered"].as_array().unwrap().iter().filter_map(|m| m.as_str()).collect();
    assert!(not_covered.contains(&"/data"), "the volume is reported as not covered: {s:#}");

    let conf = change(&v, "/etc/app.conf");
    assert_eq!(conf["sha256"], sha256(b"setting=evil\n"));
    assert_eq!(conf["image_sha256"], sha256(b"setting=2\n"), "the top-most layer's version (layer B)");
    let chmod = change(&v, "/etc/chmod-me");
    assert_eq!((chmod["mode"].as_str(), chmod["image_mode"].as_str()), (Some("0600"), Some("0644")));
    assert_eq!(chmod["sha256"], sha256(b"chmod me\n"));
    let link = change(&v, "/etc/link");
    assert_eq!((link["type"].as_str(), link["link_target"].as_str()), (Some("symlink"), Some("/etc/passwd")));
    assert_eq!(link["image_link_target"], "/etc/app.conf");
    let dropper = change(&v, "/tmp/dropper");
    assert_eq!(dropper["executable"], true);
    assert_eq!(dropper["sha256"], sha256(&fs::read("/bin/busybox").unwrap()), "the image's busybox, copied");
    assert_eq!(change(&v, "/tmp/added.txt")["executable"], false);
    assert_eq!(change(&v, "/bin/sh")["type"], "symlink");
    assert_eq!(change(&v, "/var/lib/olddir")["type"], "dir");

    // By id prefix, as a table: grouped, counted, executables first.
    let (code, table, err) = diff(&[&c.id[..12], "--output", "table"]);
    assert_eq!(code, 1, "{table}{err}");
    for needle in ["ADDED (5)", "MODIFIED (2)", "METADATA_ONLY (1)", "DELETED (7)", "not covered", "/data"] {
        assert!(table.contains(needle), "{needle:?} in:\n{table}");
    }
    let added = &table[table.find("ADDED").unwrap()..table.find("MODIFIED").unwrap()];
    assert!(added.find("/tmp/dropper").unwrap() < added.find("/opt/gone-later").unwrap(), "{table}");
}

#[test]
fn a_fresh_container_has_no_drift() {
    if !ready() {
        return;
    }
    let vol = Volume::new("fresh");
    let pod = Pod::run(&support::containerd().address, PodSpec::new("diff-fresh", "diff"));
    let c = start(&pod, "app", &vol.0);
    let (code, v) = diff_json(&c.id);
    assert_eq!(code, 0, "no drift exits 0: {v:#}");
    assert_eq!(changes(&v), BTreeMap::new());
    assert_eq!(v["summary"]["drift"], false);
    // The runtime's own mount points (/data, /etc/hosts, ...) are not drift.
    assert!(v["summary"]["mount_points_created"].as_u64() >= Some(1), "{:#}", v["summary"]);
    let (code, table, _) = diff(&[&c.id[..16], "-o", "table"]);
    assert_eq!(code, 0);
    assert!(table.contains("no drift"), "{table}");
}

#[test]
fn a_container_that_is_not_there_is_a_clear_error() {
    if !ready() {
        return;
    }
    let (code, out, err) = diff(&["0123456789abcdef0123"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("no container on this node matches \"0123456789abcdef0123\""), "{err}");
    assert!(out.is_empty(), "{out}");
    let (code, _, err) = diff(&["driftwatch-test/no-such-pod"]);
    assert_eq!(code, 2);
    assert!(err.contains("no container on this node matches"), "{err}");
    let (code, _, err) = diff(&["not a container!"]);
    assert_eq!(code, 2);
    assert!(err.contains("is not a container id"), "{err}");
    let (code, _, err) = diff(&["0123", "--hash-limit", "lots"]);
    assert_eq!(code, 2, "a usage error is exit 2 as well");
    assert!(err.contains("--hash-limit"), "{err}");
}

// ---- the engine against the kernel's overlayfs ----------------------------------

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn mknod_whiteout(p: &Path) {
    // SAFETY: a NUL-terminated path.
    let r = unsafe { libc::mknod(cpath(p).as_ptr(), libc::S_IFCHR, libc::makedev(0, 0)) };
    assert_eq!(r, 0, "mknod {}: {}", p.display(), std::io::Error::last_os_error());
}

fn setxattr(p: &Path, name: &str, value: &[u8]) {
    let n = CString::new(name).unwrap();
    // SAFETY: NUL-terminated strings and a buffer of the given length.
    let r = unsafe { libc::lsetxattr(cpath(p).as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(r, 0, "setxattr {name} {}: {}", p.display(), std::io::Error::last_os_error());
}

fn put(root: &Path, rel: &str, content: &[u8]) -> PathBuf {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, content).unwrap();
    p
}

/// An overlay mount, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn new(target: &Path, opts: &str) -> Mount {
        fs::create_dir_all(target).unwrap();
        let out = Command::new("mount").args(["-t", "overlay", "overlay", "-o", opts]).arg(target).output().unwrap();
        assert!(out.status.success(), "mount -o {opts}: {}", String::from_utf8_lossy(&out.stderr));
        Mount(target.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// What one side of the truth shows at a path.
#[derive(Debug, PartialEq)]
struct Node {
    kind: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    data: Vec<u8>,
}

fn tree(root: &Path) -> BTreeMap<String, Node> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let kind = m.mode() & libc::S_IFMT;
            let data = match kind {
                libc::S_IFREG => fs::read(&p).unwrap(),
                libc::S_IFLNK => fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec(),
                _ => m.rdev().to_le_bytes().to_vec(),
            };
            let rel = format!("/{}", p.strip_prefix(root).unwrap().display());
            let node = Node {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                mtime: (m.mtime(), m.mtime_nsec()),
                data,
            };
            out.insert(rel, node);
            if kind == libc::S_IFDIR {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The diff the two mounted views imply, with the diff's rules: a
/// directory's mtime is not a change, a symlink's mode is not either.
fn truth(container: &BTreeMap<String, Node>, image: &BTreeMap<String, Node>) -> BTreeMap<String, ChangeKind> {
    let mut out = BTreeMap::new();
    for path in container.keys().chain(image.keys()) {
        let kind = match (container.get(path), image.get(path)) {
            (Some(_), None) => ChangeKind::Added,
            (None, Some(_)) => ChangeKind::Deleted,
            (Some(a), Some(b)) if a.kind != b.kind || a.data != b.data => ChangeKind::Modified,
            (Some(a), Some(b)) => {
                let owner = a.uid != b.uid || a.gid != b.gid;
                let differs = match a.kind {
                    libc::S_IFDIR => owner || a.mode != b.mode,
                    libc::S_IFLNK => owner || a.mtime != b.mtime,
                    _ => owner || a.mode != b.mode || a.mtime != b.mtime,
                };
                if !differs {
                    continue;
                }
                ChangeKind::MetadataOnly
            }
            (None, None) => continue,
        };
        out.insert(path.clone(), kind);
    }
    out
}

#[test]
fn the_diff_agrees_with_the_kernels_overlayfs() {
    if !support::privileged() {
        return;
    }
    let root = Path::new(support::ROOT_DIR).join(format!("diff-kernel-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let [l3, l2, l1, up, work, merged, cview, iview] =
        ["l3", "l2", "l1", "upper", "work", "merged", "cview", "iview"].map(|d| root.join(d));
    for d in [&l3, &l2, &l1, &up, &work] {
        fs::create_dir_all(d).unwrap();
    }
    // The image: three layers with a whiteout, an opaque directory and an xattr whiteout of their own.
    for (rel, data) in [
        ("bin/sh", &b"\x7fELF sh"[..]),
        ("bin/ls", b"\x7fELF ls"),
        ("etc/motd", b"hello"),
        ("etc/app/a.conf", b"a"),
        ("etc/app/b.conf", b"b"),
        ("opt/old/x", b"x"),
        ("opt/keep/k1", b"k1"),
        ("opt/keep2/k", b"k"),
        ("usr/lib/lib.so", b"lib"),
        ("gone-in-l2", b"g"),
        ("dir-gone-in-l2/f", b"f"),
        ("replaced-in-l2/old1", b"o1"),
        ("replaced-in-l2/old2", b"o2"),
        ("srv/s1", b"s1"),
        ("srv/s2", b"s2"),
        ("same", b"same"),
    ] {
        put(&l3, rel, data);
    }
    fs::create_dir_all(l3.join("var")).unwrap();
    symlink("/etc/motd", l3.join("link")).unwrap();
    mknod_whiteout(&l2.join("gone-in-l2"));
    mknod_whiteout(&l2.join("dir-gone-in-l2"));
    fs::create_dir_all(l2.join("replaced-in-l2")).unwrap();
    setxattr(&l2.join("replaced-in-l2"), "trusted.overlay.opaque", b"y");
    put(&l2, "replaced-in-l2/new1", b"n1");
    put(&l2, "etc/motd", b"hello v2");
    put(&l1, "etc/l1.conf", b"l1");
    fs::create_dir_all(l1.join("etc/app")).unwrap();
    setxattr(&l1.join("etc/app"), "trusted.overlay.opaque", b"x");
    setxattr(&put(&l1, "etc/app/b.conf", b""), "trusted.overlay.whiteout", b"");
    let lowers = format!("{}:{}:{}", l1.display(), l2.display(), l3.display());

    {
        // The container, through the kernel (metacopy and redirect_dir on).
        let opts = format!("lowerdir={lowers},upperdir={},workdir={},metacopy=on", up.display(), work.display());
        let _m = Mount::new(&merged, &opts);
        let m = |rel: &str| merged.join(rel);
        put(&merged, "tmp/payload", b"\x7fELF payload");
        put(&merged, "newdir/sub/file", b"nf");
        fs::write(m("etc/motd"), b"evil").unwrap();
        fs::set_permissions(m("bin/ls"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::File::open(m("usr/lib/lib.so")).unwrap().set_modified(SystemTime::now()).unwrap();
        fs::write(m("same"), b"same").unwrap();
        drop(fs::OpenOptions::new().append(true).open(m("etc/app/a.conf")).unwrap());
        fs::remove_file(m("bin/sh")).unwrap();
        fs::remove_dir_all(m("opt/old")).unwrap();
        fs::remove_dir_all(m("srv")).unwrap();
        put(&merged, "srv/s2", b"s2");
        put(&merged, "srv/s3", b"s3");
        fs::remove_file(m("link")).unwrap();
        symlink("/etc/passwd", m("link")).unwrap();
        fs::remove_file(m("etc/l1.conf")).unwrap();
        symlink("motd", m("etc/l1.conf")).unwrap();
        fs::set_permissions(m("var"), fs::Permissions::from_mode(0o700)).unwrap();
        put(&merged, "gone-in-l2", b"back");
        put(&merged, "replaced-in-l2/old1", b"o1");
        fs::rename(m("opt/keep"), m("opt/moved")).unwrap();
        put(&merged, "etc/app/b.conf", b"new b");
        fs::remove_dir_all(m("opt/keep2")).unwrap();
        put(&merged, "opt/keep2", b"a file now");
        let fifo = cpath(&m("fifo"));
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    }
    let ours = diff_dirs(
        &OverlayDirs { upper: up.clone(), lowers: vec![l1.clone(), l2.clone(), l3.clone()] },
        &[],
        &DiffOptions::default(),
    )
    .unwrap();
    assert_eq!(ours.summary.unreadable, 0, "{:?}", ours.summary.errors);
    let ours: BTreeMap<String, ChangeKind> = ours.changes.iter().map(|c| (c.path.clone(), c.change)).collect();
    let expected = {
        let _c = Mount::new(&cview, &format!("ro,lowerdir={}:{lowers},metacopy=on", up.display()));
        let _i = Mount::new(&iview, &format!("ro,lowerdir={lowers}"));
        truth(&tree(&cview), &tree(&iview))
    };
    assert_eq!(ours, expected, "the diff (left) against the kernel's merged views (right)");
    assert!(expected.len() >= 20, "{expected:#?}");
    // The upper directory really holds the markers the diff had to read.
    let xattrs = |p: &Path| -> Vec<u8> {
        let mut buf = vec![0u8; 1024];
        // SAFETY: NUL-terminated path, a buffer of the given length.
        let n = unsafe { libc::llistxattr(cpath(p).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        buf.truncate(n.max(0) as usize);
        buf
    };
    let has = |p: &Path, x: &str| xattrs(p).split(|b| *b == 0).any(|n| n == x.as_bytes());
    assert!(has(&up.join("srv"), "trusted.overlay.opaque"), "rm -r + mkdir made an opaque directory");
    assert!(has(&up.join("opt/moved"), "trusted.overlay.redirect"), "a rename made a redirect");
    assert!(has(&up.join("bin/ls"), "trusted.overlay.metacopy"), "a chmod made a metacopy file");
    let _ = fs::remove_dir_all(&root);
}

// ---- the 10k-file timing ------------------------------------------------------------

/// Diff time of a 10,000-file upper directory over a 3-layer image: 5,000
/// new files and 5,000 copied-up image files (half chmod'ed, half edited),
/// each 1-4 KiB, hashed. Printed, not asserted.
#[test]
#[ignore = "a measurement: cargo test --release --test e2e_diff -- --ignored --nocapture"]
fn diff_time_of_a_10k_file_upper_dir() {
    let root = std::env::temp_dir().join(format!("dw-diff-10k-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let [l3, l2, l1, up] = ["l3", "l2", "l1", "upper"].map(|d| root.join(d));
    let body = |i: usize| -> Vec<u8> { (0..(1024 + (i * 37) % 3072)).map(|j| (i + j) as u8).collect() };
    for i in 0..5_000 {
        let layer = [&l3, &l2, &l1][i % 3];
        put(layer, &format!("usr/share/d{:02}/f{i}", i % 100), &body(i));
    }
    for i in 0..5_000 {
        put(&up, &format!("var/new/d{:02}/n{i}", i % 100), &body(i + 7));
        let rel = format!("usr/share/d{:02}/f{i}", i % 100);
        let layer = [&l3, &l2, &l1][i % 3];
        if i % 2 == 0 {
            let p = put(&up, &rel, &body(i));
            let lower = fs::metadata(layer.join(&rel)).unwrap();
            fs::File::open(&p).unwrap().set_modified(lower.modified().unwrap()).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        } else {
            put(&up, &rel, &body(i + 1));
        }
    }
    let dirs = OverlayDirs { upper: up, lowers: vec![l1, l2, l3] };
    // Once to warm the page cache, then measured.
    diff_dirs(&dirs, &[], &DiffOptions::default()).unwrap();
    let mut times = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let d = diff_dirs(&dirs, &[], &DiffOptions::default()).unwrap();
        times.push(t0.elapsed());
        assert_eq!((d.summary.added, d.summary.metadata_only, d.summary.modified), (5_000 + 102, 2_500, 2_500));
    }
    times.sort();
    println!(
        "diff of a 10k-file upper dir (3 layers, all hashed): median {:?}, min {:?}, max {:?} (warm cache, {})",
        times[2],
        times[0],
        times[4],
        if cfg!(debug_assertions) { "debug build" } else { "release build" }
    );
    let _ = fs::remove_dir_all(&root);
}
