use super::*;
use crate::enrich::{
    CgroupLayout,
    cri::{CriConfig, fake::*},
    overlay::{ContainerFs, CopyUp},
};

fn cri_cfg(sock: &std::path::Path) -> CriConfig {
    CriConfig { endpoint: Some(sock.to_path_buf()), request_timeout: Duration::from_secs(2) }
}

fn registry(cri: Option<Arc<Cri>>, cfg: RegistryConfig) -> Arc<Registry> {
    Registry::new(cfg, cri, None, RegistryMetrics::default(), CriMetrics::default())
}

fn cref(id: &str) -> ContainerRef {
    ContainerRef { id: id.into(), layout: CgroupLayout::ContainerdCgroupfs, pod_uid: None }
}

/// A snapshot in which `ids` run (pid 1 each).
fn snap(ids: &[&str]) -> Snapshot {
    Snapshot { containers: ids.iter().map(|id| (id.to_string(), 1)).collect(), ..Default::default() }
}

fn drain(rx: &mut broadcast::Receiver<Change>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(c) = rx.try_recv() {
        out.push(match c {
            Change::Added(c) => format!("+{}", c.id),
            Change::Gone(c) => format!("-{}", c.id),
        });
    }
    out
}

#[tokio::test]
async fn resolve_caches_coalesces_and_remembers_not_found() {
    let d = tmpdir("registry-resolve");
    let sock = d.join("cri.sock");
    let stop = CancellationToken::new();
    let f = Fake::new("containerd");
    f.add_pod(&sid(1), "checkout-7d9f");
    f.serve(&sock, stop.clone()).await;
    let cancel = CancellationToken::new();
    let cri = Cri::spawn(cri_cfg(&sock), CriMetrics::default(), cancel.clone());
    until("connected", Duration::from_secs(5), || cri.connected()).await;
    let cri_metrics = CriMetrics::default();
    let r = Registry::new(RegistryConfig::default(), Some(cri), None, RegistryMetrics::default(), cri_metrics.clone());

    f.add_container(&cid(1), &sid(1), "api");
    f.set_delay(Duration::from_millis(150));
    let lookups: Vec<_> = (0..10)
        .map(|_| {
            let r = r.clone();
            tokio::spawn(async move { r.resolve(&cid(1), Duration::from_secs(5)).await })
        })
        .collect();
    let mut results = Vec::new();
    for l in lookups {
        results.push(l.await.expect("join"));
    }
    assert_eq!(f.status_calls(), 1, "concurrent misses must share one ContainerStatus");
    let Lookup::Found(m) = &results[0] else { panic!("{:?}", results[0]) };
    assert!(results.iter().all(|x| x == &results[0]));
    assert_eq!(
        (m.container_name.as_str(), m.pod_name.as_str(), m.namespace.as_str()),
        ("api", "checkout-7d9f", "payments")
    );

    // Now a hit: no call, immediate; the same through `cached`.
    f.set_delay(Duration::ZERO);
    let t0 = Instant::now();
    assert_eq!(r.resolve(&cid(1), Duration::from_secs(5)).await, results[0]);
    assert!(t0.elapsed() < Duration::from_millis(50));
    assert_eq!(f.status_calls(), 1);
    assert_eq!(r.cached(&cid(1)).as_deref(), Some(&**m));

    // Unknown: NotFound, then remembered.
    assert_eq!(r.resolve(&cid(9), Duration::from_secs(5)).await, Lookup::NotFound);
    assert_eq!(r.resolve(&cid(9), Duration::from_secs(5)).await, Lookup::NotFound);
    assert_eq!(f.status_calls(), 2);
    let (hits, misses) = cri_metrics.lookups();
    assert_eq!((hits, misses), (2, 11), "ten concurrent misses, one hit, one miss and one remembered NotFound");
    // Known answers without waiting (a finding goes out at once, no task):
    // metadata, the remembered NotFound (counted as a hit, as resolve counts
    // it); a container never asked about is not settled.
    assert_eq!(r.settled(&cid(1)), Some(results[0].clone()));
    assert_eq!(r.settled(&cid(9)), Some(Lookup::NotFound));
    assert_eq!(r.settled(&cid(7)), None);
    assert_eq!(cri_metrics.lookups(), (3, 11));

    // A slow runtime: the caller's wait is bounded; the fetch fills the registry later.
    f.add_container(&cid(2), &sid(1), "sidecar");
    f.set_delay(Duration::from_millis(500));
    let t0 = Instant::now();
    assert_eq!(r.resolve(&cid(2), Duration::from_millis(50)).await, Lookup::Unavailable("timeout"));
    assert!(t0.elapsed() < Duration::from_millis(300), "{:?}", t0.elapsed());
    until("filled later", Duration::from_secs(5), || r.cached(&cid(2)).is_some()).await;
    cancel.cancel();
    stop.cancel();
    let _ = std::fs::remove_dir_all(d);
}

#[tokio::test]
async fn a_runtime_never_reached_answers_at_once() {
    let d = tmpdir("registry-missing");
    let cancel = CancellationToken::new();
    let cri = Cri::spawn(cri_cfg(&d.join("nothing.sock")), CriMetrics::default(), cancel.clone());
    let r = registry(Some(cri), RegistryConfig::default());
    until("first attempt", Duration::from_secs(5), || r.cri().is_some_and(|c| c.never_up().is_some())).await;
    let t0 = Instant::now();
    assert_eq!(r.resolve(&cid(1), Duration::from_secs(10)).await, Lookup::Unavailable("no_socket"));
    assert!(t0.elapsed() < Duration::from_millis(50));
    // Known without a task: the pipeline sends the finding out at once.
    assert_eq!(r.settled(&cid(1)), Some(Lookup::Unavailable("no_socket")));
    // Node-only: no runtime at all.
    assert_eq!(
        registry(None, RegistryConfig::default()).resolve(&cid(1), Duration::from_secs(1)).await,
        Lookup::Unavailable("no_endpoint")
    );
    cancel.cancel();
    let _ = std::fs::remove_dir_all(d);
}

#[tokio::test]
async fn listings_warm_the_registry_and_gone_containers_stay_for_the_grace_period() {
    let d = tmpdir("registry-warm");
    let sock = d.join("cri.sock");
    let f = Fake::new("containerd");
    f.add_pod(&sid(1), "p");
    f.add_container(&cid(1), &sid(1), "a");
    f.add_container(&cid(2), &sid(1), "b");
    let stop = CancellationToken::new();
    f.serve(&sock, stop.clone()).await;
    let cancel = CancellationToken::new();
    let cri = Cri::spawn(cri_cfg(&sock), CriMetrics::default(), cancel.clone());
    let cfg = RegistryConfig {
        grace: Duration::from_millis(400),
        refresh_interval: Duration::from_millis(50),
        scan_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let r = registry(Some(cri), cfg);
    let mut changes = r.subscribe();
    tokio::spawn(r.clone().run(cancel.clone()));
    // Warmed without any lookup, on the connection.
    until("warm", Duration::from_secs(5), || r.cached(&cid(1)).is_some() && r.cached(&cid(2)).is_some()).await;
    assert_eq!(r.cached(&cid(1)).map(|m| m.pod_labels.len()), Some(1));
    assert!(r.get(&cid(2)).is_some_and(|c| c.is_running()), "listed running");
    assert!(r.alive());

    // Gone from the runtime: Gone at once, still resolvable during the grace period, then dropped.
    f.remove_container(&cid(2));
    let gone = Instant::now();
    until("Gone", Duration::from_secs(5), || drain(&mut changes).contains(&format!("-{}", cid(2)))).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(r.cached(&cid(2)).is_some(), "dropped before the grace period ended");
    until("expiry", Duration::from_secs(5), || r.cached(&cid(2)).is_none()).await;
    assert!(gone.elapsed() >= Duration::from_millis(400));
    until("entry dropped", Duration::from_secs(5), || r.get(&cid(2)).is_none()).await;

    // Runtime restart: the registry keeps what it knows; the reconnection lists again.
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = std::fs::remove_file(&sock);
    assert!(r.cached(&cid(1)).is_some(), "lost during the outage");
    f.add_container(&cid(3), &sid(1), "c");
    let stop2 = CancellationToken::new();
    f.serve(&sock, stop2.clone()).await;
    until("listed after the restart", Duration::from_secs(10), || r.cached(&cid(3)).is_some()).await;
    cancel.cancel();
    stop2.cancel();
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn added_and_gone_follow_scans_listings_and_events() {
    let r = registry(None, RegistryConfig { grace: Duration::from_secs(60), ..Default::default() });
    let mut rx = r.subscribe();
    let t0 = Instant::now();
    let s = Duration::from_secs;
    // A kernel event adds a new container at once; a known one costs nothing.
    let a = r.observe(&cref("a"));
    assert!(a.is_running());
    assert!(Arc::ptr_eq(&a, &r.observe(&cref("a"))));
    assert_eq!(drain(&mut rx), ["+a"]);
    // Scans: b appears; a is in the next scan too.
    r.apply_scan(snap(&["a", "b"]), t0 + s(1), t0 + s(1));
    assert_eq!(drain(&mut rx), ["+b"]);
    // A scan without a: gone (its event predates the scan).
    *lock(&r.scan_started) = t0 + s(5);
    r.apply_scan(snap(&["b"]), t0 + s(5), t0 + s(5));
    assert_eq!(drain(&mut rx), ["-a"]);
    assert!(!a.is_running() && r.get("a").is_some(), "kept for its grace period");
    // An event of a gone container does not bring it back; a scan that sees it does.
    r.observe(&cref("a"));
    assert!(drain(&mut rx).is_empty());
    *lock(&r.scan_started) = t0 + s(10);
    r.apply_scan(snap(&["a", "b"]), t0 + s(10), t0 + s(10));
    assert_eq!(drain(&mut rx), ["+a"]);
    // A runtime listing that says it runs keeps a container the scan cannot see.
    let l = Listing {
        containers: vec![crate::enrich::cri::Listed { id: "c".into(), running: true, meta: None }],
        sandboxes: vec![],
    };
    r.apply_listing(&l, t0 + s(11), t0 + s(11));
    *lock(&r.listed_at) = Some(t0 + s(11));
    r.settle_all(t0 + s(11));
    assert_eq!(drain(&mut rx), ["+c"]);
    *lock(&r.scan_started) = t0 + s(15);
    r.apply_scan(snap(&["a", "b"]), t0 + s(15), t0 + s(15));
    assert!(drain(&mut rx).is_empty(), "c: the fresh listing says it runs");
    // Gone for longer than the grace period: dropped, with nothing published.
    *lock(&r.scan_started) = t0 + s(20);
    r.apply_scan(snap(&["b"]), t0 + s(20), t0 + s(20));
    assert_eq!(drain(&mut rx), ["-a"]);
    *lock(&r.scan_started) = t0 + s(100);
    r.apply_scan(snap(&["b"]), t0 + s(100), t0 + s(100));
    assert!(r.get("a").is_none() && r.get("b").is_some());
    assert_eq!(r.running().len(), 1 + r.get("c").map_or(0, |c| c.is_running() as usize));
}

#[test]
fn a_full_registry_evicts_gone_containers_first() {
    let r = registry(None, RegistryConfig { max_entries: 3, ..Default::default() });
    let mut rx = r.subscribe();
    // Scans in the past: the events below are newer than any scan.
    let t0 = Instant::now() - Duration::from_secs(10);
    r.apply_scan(snap(&["a", "b", "c"]), t0, t0);
    *lock(&r.scan_started) = t0 + Duration::from_secs(1);
    r.apply_scan(snap(&["a", "c"]), t0 + Duration::from_secs(1), t0 + Duration::from_secs(1));
    drain(&mut rx);
    r.observe(&cref("d"));
    assert!(r.get("b").is_none(), "the gone one goes first");
    assert_eq!(r.len(), 3);
    // All running: the least recently active goes, and is published as gone.
    r.observe(&cref("e"));
    assert_eq!(r.len(), 3);
    let seen = drain(&mut rx);
    assert!(seen.iter().any(|c| c.starts_with('-')), "an evicted running container is gone: {seen:?}");
}

#[test]
fn a_containers_filesystem_is_read_once_even_without_an_overlay_root() {
    // Our own pid is no process of container "x": nothing is read through it.
    let gone = Container::new("x", Instant::now());
    assert!(gone.fs(std::process::id()).overlay.is_none());
    assert_eq!(gone.cache_sizes(), (0, 0), "unreadable: not kept as known");
    // Read once (here: a container whose root is not an overlay), then kept.
    let c = Container::new("y", Instant::now());
    let first = c.remember_fs(Some(ContainerFs::default()));
    assert!(Arc::ptr_eq(&first, &c.fs(std::process::id())), "read once, kept");
    assert_eq!(c.cache_sizes(), (1, 0));
    // Copy-up verdicts: remembered per (path, inode), unknown ones are not.
    c.set_copy_up("/bin/x", 7, CopyUp::NewFile);
    c.set_copy_up("/bin/y", 8, CopyUp::Unknown);
    assert_eq!(
        (c.copy_up("/bin/x", 7), c.copy_up("/bin/x", 9), c.copy_up("/bin/y", 8)),
        (Some(CopyUp::NewFile), None, None)
    );
    assert!(c.claim_config_judgement() && !c.claim_config_judgement());
}
