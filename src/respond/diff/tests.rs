//! Real layer trees in temp directories (whiteouts made with mknod, opaque
//! and other markers with setxattr: these tests run as root, as the diff
//! does), diffed as containerd would lay them out.

use super::*;
use std::{
    collections::BTreeMap,
    ffi::CString,
    fs,
    os::unix::fs::{PermissionsExt, symlink},
    time::{Duration, SystemTime},
};

struct Layers {
    root: PathBuf,
}

impl Layers {
    fn new(tag: &str) -> Layers {
        let root = std::env::temp_dir().join(format!("dw-diff-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        Layers { root }
    }

    fn layer(&self, name: &str) -> PathBuf {
        let p = self.root.join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }
}

impl Drop for Layers {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

const T0: u64 = 1_000_000;

fn at(layer: &Path, path: &str) -> PathBuf {
    let p = layer.join(path.trim_start_matches('/'));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    p
}

/// A file with a fixed mtime.
fn file(layer: &Path, path: &str, content: &[u8], mode: u32) -> PathBuf {
    let p = at(layer, path);
    fs::write(&p, content).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    set_mtime(&p, SystemTime::UNIX_EPOCH + Duration::from_secs(T0));
    p
}

fn set_mtime(p: &Path, t: SystemTime) {
    fs::File::open(p).unwrap().set_modified(t).unwrap();
}

fn dir(layer: &Path, path: &str, mode: u32) -> PathBuf {
    let p = at(layer, path);
    fs::create_dir_all(&p).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// A copy-up of `from` (content, mode and mtime) at the same path in `to`.
fn copy_up(from: &Path, to: &Path, path: &str) -> PathBuf {
    let src = from.join(path.trim_start_matches('/'));
    let dst = at(to, path);
    fs::copy(&src, &dst).unwrap();
    set_mtime(&dst, fs::metadata(&src).unwrap().modified().unwrap());
    dst
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// A classic whiteout: a character device 0:0.
fn whiteout(layer: &Path, path: &str) {
    let p = at(layer, path);
    // SAFETY: a NUL-terminated path.
    let r = unsafe { libc::mknod(c(&p).as_ptr(), libc::S_IFCHR, libc::makedev(0, 0)) };
    assert_eq!(r, 0, "mknod {}: {}", p.display(), std::io::Error::last_os_error());
}

fn xattr(p: &Path, name: &str, value: &[u8]) {
    let n = CString::new(name).unwrap();
    // SAFETY: NUL-terminated strings, a buffer of the given length.
    let r = unsafe { libc::lsetxattr(c(p).as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(r, 0, "setxattr {name} on {}: {}", p.display(), std::io::Error::last_os_error());
}

fn sha(b: &[u8]) -> String {
    content::hex(ring::digest::digest(&ring::digest::SHA256, b).as_ref())
}

fn kinds(d: &Diff) -> BTreeMap<String, ChangeKind> {
    d.changes.iter().map(|c| (c.path.clone(), c.change)).collect()
}

fn get<'a>(d: &'a Diff, path: &str) -> &'a Change {
    d.changes.iter().find(|c| c.path == path).unwrap_or_else(|| panic!("no change at {path}: {:#?}", d.changes))
}

/// Three image layers (with a whiteout, an opaque directory and xattr
/// whiteouts of their own) and an upper directory with one of each change.
#[test]
fn every_kind_of_change_over_three_layers() {
    let t = Layers::new("all");
    let (l3, l2, l1, up) = (t.layer("l3"), t.layer("l2"), t.layer("l1"), t.layer("upper"));
    // Bottom layer.
    for d in ["/bin", "/etc", "/opt", "/usr/lib", "/srv", "/var"] {
        dir(&l3, d, 0o755);
    }
    dir(&l3, "/tmp", 0o1777);
    file(&l3, "/bin/sh", b"\x7fELF sh", 0o755);
    file(&l3, "/bin/ls", b"\x7fELF ls", 0o755);
    file(&l3, "/bin/tool", b"\x7fELF tool v1", 0o755);
    file(&l3, "/etc/motd", b"hello", 0o644);
    file(&l3, "/etc/app/a.conf", b"a", 0o644);
    file(&l3, "/etc/app/b.conf", b"b", 0o644);
    file(&l3, "/opt/old/x", b"x", 0o644);
    file(&l3, "/opt/keep/k1", b"k1", 0o644);
    file(&l3, "/usr/lib/lib.so", b"lib", 0o644);
    symlink("/etc/motd", at(&l3, "/link")).unwrap();
    file(&l3, "/gone-in-l2", b"g", 0o644);
    file(&l3, "/dir-gone-in-l2/f", b"f", 0o644);
    file(&l3, "/replaced-in-l2/old1", b"o1", 0o644);
    file(&l3, "/replaced-in-l2/old2", b"o2", 0o644);
    file(&l3, "/srv/s1", b"s1", 0o644);
    file(&l3, "/srv/s2", b"s2", 0o644);
    // Middle layer: deletes a file and a directory, replaces a directory, edits a file.
    whiteout(&l2, "/gone-in-l2");
    whiteout(&l2, "/dir-gone-in-l2");
    xattr(&dir(&l2, "/replaced-in-l2", 0o755), "trusted.overlay.opaque", b"y");
    file(&l2, "/replaced-in-l2/new1", b"n1", 0o644);
    file(&l2, "/etc/motd", b"hello v2", 0o644);
    // Top layer: a file, and an xattr whiteout in a directory that is not opaque.
    file(&l1, "/etc/l1.conf", b"l1", 0o644);
    let app = dir(&l1, "/etc/app", 0o755);
    xattr(&app, "user.overlay.opaque", b"x");
    xattr(&file(&l1, "/etc/app/b.conf", b"", 0o644), "user.overlay.whiteout", b"");

    // The container's writes.
    dir(&up, "/tmp", 0o1777);
    file(&up, "/tmp/payload", b"\x7fELF payload", 0o644);
    file(&up, "/tmp/bad\u{1}", b"z", 0o644);
    fs::rename(up.join("tmp/bad\u{1}"), up.join(OsStr::from_bytes(b"tmp/bad\xff"))).unwrap();
    file(&up, "/newdir/sub/file", b"nf", 0o644);
    file(&up, "/etc/motd", b"evil", 0o644);
    let ls = copy_up(&l3, &up, "/bin/ls");
    fs::set_permissions(&ls, fs::Permissions::from_mode(0o700)).unwrap();
    let so = copy_up(&l3, &up, "/usr/lib/lib.so");
    set_mtime(&so, SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + 60));
    copy_up(&l3, &up, "/etc/app/a.conf");
    file(&up, "/etc/app/b.conf", b"new b", 0o644);
    whiteout(&up, "/bin/sh");
    whiteout(&up, "/opt/old");
    whiteout(&up, "/nothing");
    let srv = dir(&up, "/srv", 0o755);
    xattr(&srv, "trusted.overlay.opaque", b"y");
    copy_up(&l3, &up, "/srv/s2");
    file(&up, "/srv/s3", b"s3", 0o644);
    symlink("/etc/passwd", at(&up, "/link")).unwrap();
    symlink("motd", at(&up, "/etc/l1.conf")).unwrap();
    dir(&up, "/var", 0o700);
    file(&up, "/gone-in-l2", b"back", 0o644);
    file(&up, "/replaced-in-l2/old1", b"o1", 0o644);
    symlink("/", at(&up, "/escape")).unwrap();
    // Mount points the runtime made, and a file a mount now hides.
    file(&up, "/etc/hosts", b"", 0o644);
    file(&up, "/data/shadowed", b"x", 0o644);
    // A metadata-only copy-up (metacopy=on): no data in the upper file.
    let tool = at(&up, "/bin/tool");
    fs::File::create(&tool).unwrap().set_len(12).unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o700)).unwrap();
    set_mtime(&tool, SystemTime::UNIX_EPOCH + Duration::from_secs(T0));
    xattr(&tool, "trusted.overlay.metacopy", b"");
    // A renamed directory (redirect_dir=on): /opt/keep moved to /opt/moved.
    xattr(&dir(&up, "/opt/moved", 0o755), "trusted.overlay.redirect", b"/opt/keep");
    whiteout(&up, "/opt/keep");

    let dirs = OverlayDirs { upper: up.clone(), lowers: vec![l1.clone(), l2.clone(), l3.clone()] };
    let mounts = vec![PathBuf::from("/etc/hosts"), PathBuf::from("/data")];
    let d = diff_dirs(&dirs, &mounts, &DiffOptions::default()).unwrap();
    use ChangeKind::*;
    let want: BTreeMap<String, ChangeKind> = [
        ("/bin/ls", MetadataOnly),
        ("/bin/sh", Deleted),
        ("/bin/tool", MetadataOnly),
        ("/data/shadowed", Added),
        ("/escape", Added),
        ("/etc/app/b.conf", Added),
        ("/etc/l1.conf", Modified),
        ("/etc/motd", Modified),
        ("/gone-in-l2", Added),
        ("/link", Modified),
        ("/newdir", Added),
        ("/newdir/sub", Added),
        ("/newdir/sub/file", Added),
        ("/opt/keep", Deleted),
        ("/opt/keep/k1", Deleted),
        ("/opt/moved", Added),
        ("/opt/moved/k1", Added),
        ("/opt/old", Deleted),
        ("/opt/old/x", Deleted),
        ("/replaced-in-l2/old1", Added),
        ("/srv/s1", Deleted),
        ("/srv/s3", Added),
        ("/tmp/bad\\xff", Added),
        ("/tmp/payload", Added),
        ("/usr/lib/lib.so", MetadataOnly),
        ("/var", MetadataOnly),
    ]
    .into_iter()
    .map(|(p, k)| (p.to_string(), k))
    .collect();
    assert_eq!(kinds(&d), want, "{:#?}", d.summary);
    let s = &d.summary;
    assert_eq!((s.total, s.added, s.modified, s.metadata_only, s.deleted), (26, 13, 3, 4, 6));
    assert!(s.drift && !s.truncated);
    assert_eq!(s.unreadable, 0, "{:?}", s.errors);
    assert_eq!((s.mount_points_created, s.shadowed), (2, 1));
    assert_eq!(s.not_covered, ["/data", "/etc/hosts"]);
    assert_eq!(s.layers, 3);

    let motd = get(&d, "/etc/motd");
    assert_eq!(motd.sha256.as_deref(), Some(sha(b"evil").as_str()));
    assert_eq!(motd.image_sha256.as_deref(), Some(sha(b"hello v2").as_str()), "the top-most image version");
    assert_eq!((motd.file_type, motd.mode.as_str(), motd.size, motd.executable), (FileType::File, "0644", 4, false));
    let payload = get(&d, "/tmp/payload");
    assert!(payload.executable, "ELF magic without an execute bit");
    assert_eq!(payload.mtime, "1970-01-12T13:46:40.000000000Z");
    let ls = get(&d, "/bin/ls");
    assert_eq!((ls.mode.as_str(), ls.image_mode.as_deref(), ls.executable), ("0700", Some("0755"), true));
    assert_eq!(ls.sha256.as_deref(), Some(sha(b"\x7fELF ls").as_str()));
    assert_eq!(ls.image_sha256, None, "only for modified");
    let tool = get(&d, "/bin/tool");
    assert_eq!(tool.sha256.as_deref(), Some(sha(b"\x7fELF tool v1").as_str()), "metacopy: the lower data");
    let sh = get(&d, "/bin/sh");
    assert!(sh.executable && sh.sha256.is_none() && sh.mode == "0755", "{sh:?}");
    let link = get(&d, "/link");
    assert_eq!(link.link_target.as_deref(), Some("/etc/passwd"));
    assert_eq!(link.image_link_target.as_deref(), Some("/etc/motd"));
    let l1 = get(&d, "/etc/l1.conf");
    assert_eq!((l1.file_type, l1.image_type), (FileType::Symlink, Some(FileType::File)));
    assert_eq!(l1.image_sha256.as_deref(), Some(sha(b"l1").as_str()));
    assert_eq!(get(&d, "/escape").link_target.as_deref(), Some("/"));
    assert_eq!(get(&d, "/var").image_mode.as_deref(), Some("0755"));
    assert_eq!(get(&d, "/var").file_type, FileType::Dir);
    assert_eq!(get(&d, "/opt/moved/k1").sha256.as_deref(), Some(sha(b"k1").as_str()));
    assert_eq!(get(&d, "/data/shadowed").shadowed_by.as_deref(), Some("/data"));
    assert!(get(&d, "/tmp/bad\\xff").path_escaped);
    assert!(d.changes.iter().filter(|c| c.path != "/data/shadowed").all(|c| c.shadowed_by.is_none()));

    // The same layers diffed against themselves: nothing.
    let empty = t.layer("empty");
    let none = diff_dirs(&OverlayDirs { upper: empty, lowers: dirs.lowers.clone() }, &[], &DiffOptions::default());
    let none = none.unwrap();
    assert!(none.changes.is_empty() && !none.summary.drift, "{:?}", none.changes);
}

#[test]
fn directories_copied_up_for_a_child_are_not_changes() {
    let t = Layers::new("dirs");
    let (lo, up) = (t.layer("lower"), t.layer("upper"));
    file(&lo, "/etc/a", b"a", 0o644);
    file(&lo, "/etc/sub/b", b"b", 0o644);
    // Same mode and owner, a new mtime (a child was created and removed).
    dir(&up, "/etc/sub", 0o755);
    set_mtime(&up.join("etc/sub"), SystemTime::now());
    // Copied up by an open for writing that wrote nothing: nothing differs.
    copy_up(&lo, &up, "/etc/a");
    let d = diff_dirs(&OverlayDirs { upper: up, lowers: vec![lo] }, &[], &DiffOptions::default()).unwrap();
    assert!(d.changes.is_empty(), "{:?}", d.changes);
    assert_eq!(d.summary.total, 0);
}

#[test]
fn type_changes_and_what_they_hide() {
    let t = Layers::new("types");
    let (lo, up) = (t.layer("lower"), t.layer("upper"));
    file(&lo, "/d/in", b"in", 0o644);
    file(&lo, "/f", b"f", 0o644);
    // A directory replaced by a file: modified, and its content deleted.
    file(&up, "/d", b"now a file", 0o644);
    // A file replaced by a directory: modified, and its content added.
    file(&up, "/f/new", b"new", 0o644);
    let d = diff_dirs(&OverlayDirs { upper: up, lowers: vec![lo] }, &[], &DiffOptions::default()).unwrap();
    use ChangeKind::*;
    let want: BTreeMap<String, ChangeKind> =
        [("/d", Modified), ("/d/in", Deleted), ("/f", Modified), ("/f/new", Added)].map(|(p, k)| (p.into(), k)).into();
    assert_eq!(kinds(&d), want);
    assert_eq!(get(&d, "/d").image_type, Some(FileType::Dir));
    assert_eq!(get(&d, "/f").image_sha256.as_deref(), Some(sha(b"f").as_str()));
}

#[test]
fn files_over_the_hash_limit_are_compared_without_digests() {
    let t = Layers::new("limit");
    let (lo, up) = (t.layer("lower"), t.layer("upper"));
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    file(&lo, "/same", &big, 0o644);
    file(&lo, "/edited", &big, 0o644);
    let same = copy_up(&lo, &up, "/same");
    fs::set_permissions(&same, fs::Permissions::from_mode(0o600)).unwrap();
    let mut edited = big.clone();
    edited[299_999] ^= 0xff;
    file(&up, "/edited", &edited, 0o644);
    file(&up, "/small", b"small", 0o644);
    let opts = DiffOptions { hash_limit: 1024, ..Default::default() };
    let d = diff_dirs(&OverlayDirs { upper: up, lowers: vec![lo] }, &[], &opts).unwrap();
    assert_eq!(get(&d, "/same").change, ChangeKind::MetadataOnly);
    assert_eq!(get(&d, "/edited").change, ChangeKind::Modified, "same size, one byte differs");
    assert!(get(&d, "/edited").sha256.is_none() && get(&d, "/edited").image_sha256.is_none());
    assert_eq!(get(&d, "/small").sha256.as_deref(), Some(sha(b"small").as_str()));
    assert_eq!(d.summary.hash_limit, 1024);
}

#[test]
fn the_change_cap_keeps_counts_exact() {
    let t = Layers::new("cap");
    let (lo, up) = (t.layer("lower"), t.layer("upper"));
    for i in 0..50 {
        file(&up, &format!("/new/{i:02}"), b"x", 0o755);
    }
    let opts = DiffOptions { max_changes: 10, ..Default::default() };
    let d = diff_dirs(&OverlayDirs { upper: up, lowers: vec![lo] }, &[], &opts).unwrap();
    assert_eq!(d.changes.len(), 10);
    assert!(d.summary.truncated);
    assert_eq!((d.summary.total, d.summary.added), (51, 51));
}

#[test]
fn depth_is_bounded_and_unreadable_entries_are_counted() {
    let t = Layers::new("deep");
    let (lo, up) = (t.layer("lower"), t.layer("upper"));
    let mut p = String::new();
    for _ in 0..300 {
        p.push_str("/d");
    }
    dir(&up, &p, 0o755);
    // A metacopy file whose data layer is gone cannot be compared.
    let orphan = file(&up, "/orphan", b"", 0o644);
    xattr(&orphan, "trusted.overlay.metacopy", b"");
    let d = diff_dirs(&OverlayDirs { upper: up, lowers: vec![lo] }, &[], &DiffOptions::default()).unwrap();
    assert_eq!(d.summary.unreadable, 2, "{:?}", d.summary.errors);
    assert!(d.summary.errors.iter().any(|e| e.error.contains("deeper than 256")), "{:?}", d.summary.errors);
    assert!(d.summary.errors.iter().any(|e| e.path == "/orphan" && e.error.contains("metacopy")));
    assert_eq!(d.summary.added, 257);
}

#[test]
fn a_missing_layer_is_an_error_naming_it() {
    let t = Layers::new("missing");
    let up = t.layer("upper");
    let gone = t.root.join("nope");
    let e = diff_dirs(&OverlayDirs { upper: gone.clone(), lowers: vec![] }, &[], &DiffOptions::default());
    assert!(matches!(&e, Err(LayerError::Upper { path, .. }) if *path == gone), "{e:?}");
    let e = diff_dirs(&OverlayDirs { upper: up, lowers: vec![gone.clone()] }, &[], &DiffOptions::default());
    let msg = e.unwrap_err().to_string();
    assert!(msg.starts_with("cannot read image layer") && msg.contains("nope"), "{msg}");
}

#[test]
fn containers_that_cannot_be_diffed_say_why() {
    let o = DiffOptions::default();
    let e = diff_container("abc", 0, None, &o).unwrap_err();
    assert_eq!(e.kind(), "not_running");
    assert!(e.to_string().contains("container abc"), "{e}");
    // This test's process is in no container.
    let e = diff_container("abc", std::process::id(), None, &o).unwrap_err();
    assert!(matches!(e, DiffError::NotItsProcess { .. }), "{e}");
    let e = layout("abc", "73 48 0:40 / / rw - ext4 /dev/vda rw\n").unwrap_err();
    assert_eq!(e.kind(), "no_overlay_root", "{e}");
    let mi = "73 48 0:40 / / rw - overlay overlay rw,lowerdir=/l2:/l1,upperdir=/u,workdir=/w\n\
              76 73 0:43 / /data rw - ext4 /dev/vda rw\n";
    let (dirs, mounts) = layout("abc", mi).unwrap();
    assert_eq!((dirs.upper, dirs.lowers.len(), mounts), (PathBuf::from("/u"), 2, vec![PathBuf::from("/data")]));
    let e = diff_container("abc", u32::MAX, None, &o).unwrap_err();
    assert_eq!(e.kind(), "mountinfo", "{e}");
}

#[test]
fn the_report_has_the_contract_keys() {
    let meta = ContainerMeta {
        container_id: "c1".into(),
        container_name: "app".into(),
        pod_name: "web-1".into(),
        namespace: "shop".into(),
        pod_uid: "u1".into(),
        image: "docker.io/library/busybox:1.36".into(),
        image_ref: "docker.io/library/busybox@sha256:".to_string() + &"a".repeat(64),
        sandbox_id: "s1".into(),
        pod_labels: Default::default(),
        pod_annotations: Default::default(),
        runtime: "containerd".into(),
    };
    let pod = PodInfo::of(&meta);
    let report = Report {
        container_id: "c1".into(),
        image: ImageInfo { reference: Some(meta.image.clone()), id: pod.image_id.clone(), layers: 2 },
        pod,
        changes: vec![],
        summary: Summary::default(),
    };
    let v = serde_json::to_value(&report).unwrap();
    assert_eq!(v["container.id"], "c1");
    assert_eq!(v["k8s.namespace.name"], "shop");
    assert_eq!(v["k8s.pod.name"], "web-1");
    assert_eq!(v["k8s.container.name"], "app");
    assert_eq!(v["container.image.name"], "docker.io/library/busybox");
    assert_eq!(v["container.image.id"], format!("sha256:{}", "a".repeat(64)));
    assert_eq!(v["image"]["layers"], 2);
    assert!(v["changes"].as_array().unwrap().is_empty());
    for k in ["drift", "total", "added", "modified", "metadata_only", "deleted", "truncated", "not_covered"] {
        assert!(v["summary"].get(k).is_some(), "summary.{k}");
    }
}
