use super::*;
use std::os::unix::fs::symlink;

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dw-evidence-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// A fixed container: an upper dir with a dropped binary, a symlink planted
/// to escape the layer, and a diff naming them.
struct Fixed {
    upper: PathBuf,
}

impl Collect for Fixed {
    fn diff(&self, id: &str, _limit: u64) -> Result<Value, String> {
        Ok(json!({
            "container.id": id,
            "changes": [
                {"path": "/tmp/payload", "change": "added", "type": "file", "executable": true, "size": 5},
                {"path": "/tmp/escape", "change": "added", "type": "file", "executable": true, "size": 1},
                {"path": "/tmp/big", "change": "added", "type": "file", "executable": true, "size": 10_000},
                {"path": "/etc/motd", "change": "modified", "type": "file", "executable": false, "size": 3},
            ],
        }))
    }
    fn processes(&self, id: &str) -> Result<Value, String> {
        Ok(json!({"container.id": id, "processes": [{"process.pid": 1}]}))
    }
    fn upper_dir(&self, _id: &str) -> Option<PathBuf> {
        Some(self.upper.clone())
    }
}

fn fixed(tag: &str) -> Arc<Fixed> {
    let upper = tmpdir(&format!("{tag}-upper"));
    fs::create_dir_all(upper.join("tmp")).unwrap();
    fs::write(upper.join("tmp/payload"), b"\x7fELF!").unwrap();
    fs::write(upper.join("tmp/big"), vec![0u8; 10_000]).unwrap();
    symlink("/etc/shadow", upper.join("tmp/escape")).unwrap();
    Arc::new(Fixed { upper })
}

fn cfg(dir: &Path) -> config::Capture {
    config::Capture {
        dir: dir.display().to_string(),
        max_file_bytes: 4096,
        retention: config::Retention { max_bytes: 1 << 30, max_bundles: 2 },
        ..Default::default()
    }
}

fn entries(bundle: &Path) -> HashMap<String, Vec<u8>> {
    let gz = flate2::read::GzDecoder::new(fs::File::open(bundle).unwrap());
    let mut ar = tar::Archive::new(gz);
    let mut out = HashMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut b = Vec::new();
        e.read_to_end(&mut b).unwrap();
        out.insert(name, b);
    }
    out
}

fn collecting() -> (Report, Arc<Mutex<Vec<Captured>>>) {
    let seen: Arc<Mutex<Vec<Captured>>> = Default::default();
    let s = seen.clone();
    (Arc::new(move |c: &Captured| s.lock().unwrap().push(c.clone())), seen)
}

fn wait_for(seen: &Arc<Mutex<Vec<Captured>>>, n: usize) {
    for _ in 0..500 {
        if seen.lock().unwrap().len() >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no capture reported");
}

#[test]
fn a_bundle_holds_the_diff_the_processes_the_findings_and_the_dropped_executables() {
    let dir = tmpdir("bundle");
    let (report, seen) = collecting();
    let c = Capture::start(cfg(&dir), fixed("bundle"), report);
    assert!(c.wants("isolate") && !c.wants("detect"));
    let id = "a".repeat(64);
    let p1 = c.request(&id, || r#"{"rule":"one"}"#.into(), || json!({"k8s.pod.name": "p"})).unwrap();
    wait_for(&seen, 1);
    let got = seen.lock().unwrap()[0].clone();
    assert_eq!(got.outcome, Outcome::Written, "{:?}", got.error);
    assert_eq!(got.path, p1);
    assert!(p1.file_name().unwrap().to_str().unwrap().ends_with("-aaaaaaaaaaaa.tar.gz"), "{p1:?}");
    // Same window: the same bundle is named, no second capture.
    let p2 = c.request(&id, || r#"{"rule":"two"}"#.into(), || json!({})).unwrap();
    assert_eq!(p1, p2);

    let e = entries(&p1);
    let diff: Value = serde_json::from_slice(&e["diff.json"]).unwrap();
    assert_eq!(diff["container.id"], id.as_str());
    let ps: Value = serde_json::from_slice(&e["processes.json"]).unwrap();
    assert_eq!(ps["processes"][0]["process.pid"], 1);
    assert_eq!(std::str::from_utf8(&e["findings.jsonl"]).unwrap(), "{\"rule\":\"one\"}\n");
    assert_eq!(e["files/tmp/payload"], b"\x7fELF!");
    assert!(!e.contains_key("files/tmp/escape"), "a symlink out of the layer is never followed");
    assert!(!e.contains_key("files/tmp/big"), "over max_file_bytes");
    assert!(!e.contains_key("files/etc/motd"), "not executable");
    let m: Value = serde_json::from_slice(&e["manifest.json"]).unwrap();
    assert_eq!(m["format"], FORMAT);
    assert_eq!(m["container"]["k8s.pod.name"], "p");
    let reasons: Vec<(&str, &str)> = m["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["path"].as_str().unwrap(), s["reason"].as_str().unwrap()))
        .collect();
    assert!(
        reasons.contains(&("/tmp/big", "max_file_bytes")) && reasons.contains(&("/tmp/escape", "unreadable")),
        "{reasons:?}"
    );
    let names: Vec<&str> = m["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["diff.json", "processes.json", "findings.jsonl", "files/tmp/payload"]);
    let mode = fs::metadata(&p1).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    assert_eq!(m["findings_omitted"], 0);
    // A drift storm after the bundle was written: its findings still name
    // the bundle, but are neither kept nor even written out for it.
    let made = std::cell::Cell::new(0);
    for _ in 0..1000 {
        let p = c
            .request(
                &id,
                || {
                    made.set(made.get() + 1);
                    "{}".into()
                },
                || json!({}),
            )
            .unwrap();
        assert_eq!(p, p1);
    }
    assert_eq!((made.get(), c.held(&id)), (0, 0));
}

#[test]
fn a_window_keeps_at_most_max_bundle_findings() {
    let mut held = Held::default();
    let made = std::cell::Cell::new(0);
    for i in 0..MAX_BUNDLE_FINDINGS + 7 {
        held.keep(|| {
            made.set(made.get() + 1);
            format!("{{\"n\":{i}}}")
        });
    }
    assert_eq!((held.lines.len(), held.omitted, made.get()), (MAX_BUNDLE_FINDINGS, 7, MAX_BUNDLE_FINDINGS));
    held.taken = true;
    held.keep(|| unreachable!("a taken window makes no line"));
    assert_eq!(held.omitted, 7);
}

#[test]
fn retention_deletes_the_oldest_bundles_past_the_count_or_the_bytes() {
    let dir = tmpdir("retain");
    for (i, size) in [(1, 10), (2, 10), (3, 10), (4, 10)] {
        fs::write(dir.join(format!("2026010{i}T000000Z-abc.tar.gz")), vec![0u8; size]).unwrap();
    }
    fs::write(dir.join("unrelated.txt"), b"x").unwrap();
    let newest = dir.join("20260104T000000Z-abc.tar.gz");
    retain(&dir, &config::Retention { max_bytes: 1 << 20, max_bundles: 2 }, &newest);
    let mut left: Vec<String> =
        fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    left.sort();
    assert_eq!(left, ["20260103T000000Z-abc.tar.gz", "20260104T000000Z-abc.tar.gz", "unrelated.txt"]);
    retain(&dir, &config::Retention { max_bytes: 15, max_bundles: 10 }, &newest);
    assert!(newest.exists() && !dir.join("20260103T000000Z-abc.tar.gz").exists());
}

#[test]
fn an_unwritable_directory_is_a_counted_failure_naming_it() {
    let base = tmpdir("unwritable");
    fs::write(base.join("file"), b"x").unwrap();
    let dir = base.join("file/evidence");
    let (report, seen) = collecting();
    let c = Capture::start(cfg(&dir), fixed("unwritable"), report);
    c.request("b", || "{}".into(), || json!({})).unwrap();
    wait_for(&seen, 1);
    let got = seen.lock().unwrap()[0].clone();
    assert_eq!(got.outcome, Outcome::Failed);
    assert!(got.error.as_deref().unwrap().contains("file/evidence"), "{:?}", got.error);
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_blocking() {
    struct Slow;
    impl Collect for Slow {
        fn diff(&self, _: &str, _: u64) -> Result<Value, String> {
            std::thread::sleep(Duration::from_millis(200));
            Err("slow".into())
        }
        fn processes(&self, _: &str) -> Result<Value, String> {
            Err("slow".into())
        }
        fn upper_dir(&self, _: &str) -> Option<PathBuf> {
            None
        }
    }
    let dir = tmpdir("full");
    let (report, seen) = collecting();
    let c = Capture::start(cfg(&dir), Arc::new(Slow), report);
    let start = std::time::Instant::now();
    let answered: usize =
        (0..QUEUE + 10).filter_map(|i| c.request(&format!("{i:x}"), || "{}".into(), || json!({}))).count();
    assert!(start.elapsed() < Duration::from_millis(150), "request must not wait for the worker");
    assert!(answered < QUEUE + 10);
    let dropped = seen.lock().unwrap().iter().filter(|c| c.outcome == Outcome::Dropped).count();
    assert_eq!(dropped, QUEUE + 10 - answered);
}

#[test]
fn a_full_disk_is_a_counted_failure_and_leaves_no_partial_bundle() {
    let dir = tmpdir("fulldisk");
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16k", "dw-evidence-test"])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: cannot mount a tmpfs here (not root?)");
        return;
    }
    struct Big;
    impl Collect for Big {
        fn diff(&self, id: &str, _: u64) -> Result<Value, String> {
            // Incompressible, larger than the 16 KiB disk.
            let noise: Vec<String> =
                (0..4000u64).map(|i| format!("{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15))).collect();
            Ok(json!({"container.id": id, "changes": [], "noise": noise}))
        }
        fn processes(&self, _: &str) -> Result<Value, String> {
            Ok(json!({}))
        }
        fn upper_dir(&self, _: &str) -> Option<PathBuf> {
            None
        }
    }
    let (report, seen) = collecting();
    let c = Capture::start(cfg(&dir), Arc::new(Big), report);
    let got = c.capture_now(&Big, "c", json!({}));
    let left = fs::read_dir(&dir).unwrap().count();
    let _ = std::process::Command::new("umount").arg(&dir).status();
    assert_eq!(got.outcome, Outcome::Failed);
    assert!(got.error.as_deref().unwrap_or_default().to_lowercase().contains("space"), "{:?}", got.error);
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(left, 0, "no partial bundle left behind");
}
