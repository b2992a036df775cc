//! CRI metadata against a real containerd 1.6 with its CRI plugin (privileged).
//!
//! Pods are made through the CRI API exactly as the kubelet makes them
//! (RunPodSandbox, CreateContainer with the image id, StartContainer), then
//! the container registry (`driftwatch::containers::Registry`), asking the
//! runtime through `driftwatch::enrich::cri::Cri`, must resolve them completely.
//!
//! The restart test uses its own containerd (tests/support/cri.rs
//! `PrivateContainerd`), so tests running in parallel against the shared instance
//! are never disturbed.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use driftwatch::containers::{Registry, RegistryConfig};
use driftwatch::enrich::cgroup::{self, CgroupLayout};
use driftwatch::enrich::cri::{ContainerMeta, Cri, CriConfig, Lookup};
use driftwatch::enrich::image::{ImageRef, digest_of_image_ref};
use driftwatch::metrics::Metrics;
use support::cri::{Pod, PodSpec, PrivateContainerd, image_status};
use tokio_util::sync::CancellationToken;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

/// A registry asking the runtime at `socket`, listing it every `refresh`, with
/// its loop running on `rt`; the metrics it counts into.
fn registry(
    rt: &tokio::runtime::Runtime,
    socket: &Path,
    refresh: Duration,
    grace: Duration,
    cancel: &CancellationToken,
) -> (Arc<Registry>, Arc<Cri>, Arc<Metrics>) {
    let _g = rt.enter();
    let m = Arc::new(Metrics::new());
    let cfg = CriConfig { endpoint: Some(socket.to_path_buf()), request_timeout: Duration::from_secs(2) };
    let cri = Cri::spawn(cfg, m.cri.clone(), cancel.clone());
    let rcfg =
        RegistryConfig { grace, max_entries: 1024, scan_interval: Duration::from_secs(1), refresh_interval: refresh };
    let r = Registry::new(rcfg, Some(cri.clone()), None, m.registry_stats.clone(), m.cri.clone());
    rt.spawn(r.clone().run(cancel.clone()));
    (r, cri, m)
}

fn wait_connected(cri: &Cri) {
    let t0 = Instant::now();
    while !cri.connected() {
        assert!(t0.elapsed() < Duration::from_secs(10), "Cri did not connect to {:?}", cri.endpoint());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn found(l: Lookup, what: &str) -> Arc<ContainerMeta> {
    match l {
        Lookup::Found(m) => m,
        other => panic!("{what}: expected Found, got {other:?}"),
    }
}

/// The pod's container really runs under the kubelet's cgroupfs layout, and our
/// cgroup parser attributes it to the right container and pod.
fn assert_cgroup(c: &support::cri::CriContainer, pod_uid: &str) {
    let text = c.proc_cgroup();
    assert!(text.contains(&c.id), "/proc/{}/cgroup does not name container {}:\n{text}", c.pid, c.id);
    assert!(text.contains(&format!("/kubepods/besteffort/pod{pod_uid}/{}", c.id)), "{text}");
    let r = cgroup::container_from_proc_cgroup(&text).expect("container from /proc cgroup");
    assert_eq!(
        (r.id.as_str(), r.layout, r.pod_uid.as_deref()),
        (c.id.as_str(), CgroupLayout::KubepodsCgroupfs, Some(pod_uid))
    );
}

#[test]
fn cri_lookup_resolves_kubelet_made_pods() {
    if !support::privileged() {
        return;
    }
    let ctrd = support::containerd();
    let socket = ctrd.address.clone();
    let spec = PodSpec::new("checkout-7d9f", "checkout")
        .namespace("payments")
        .label("tier", "backend")
        .annotation("team", "payments");
    let uid = spec.uid.clone();
    let mut pod = Pod::run(&socket, spec);

    let rt = runtime();
    let cancel = CancellationToken::new();
    // Long refresh: the container below is created after the warm-up listing, so the
    // first lookup is a real miss.
    let (reg, cri, _) = registry(&rt, &socket, Duration::from_secs(3600), Duration::from_secs(300), &cancel);
    wait_connected(&cri);

    let api = pod.start_container("api", &["/bin/sleep", "300"]);
    assert_cgroup(&api, &uid);
    let (code, out, _) = api.exec_sync(&["/bin/sh", "-c", "echo ok"]).expect("ExecSync");
    assert_eq!((code, out.trim()), (0, "ok"));

    let t0 = Instant::now();
    let m = found(rt.block_on(reg.resolve(&api.id, Duration::from_secs(5))), "first lookup");
    let uncached = t0.elapsed();
    // The cache holds it now. (Compared by content: a listing that raced
    // with the first lookup may have stored an equal entry of its own.)
    assert_eq!(reg.cached(&api.id).as_deref(), Some(&*m), "second lookup must come from the cache");
    let t0 = Instant::now();
    let m2 = found(rt.block_on(reg.resolve(&api.id, Duration::from_secs(5))), "second lookup");
    let cached = t0.elapsed();
    assert_eq!(*m2, *m);
    eprintln!("cri lookup latency: uncached {uncached:?}, cached {cached:?}");

    let img = image_status(&socket, support::TEST_IMAGE).expect("ImageStatus").expect("test image known");
    assert_eq!(m.container_id, api.id);
    assert_eq!(m.container_name, "api");
    assert_eq!(m.pod_name, "checkout-7d9f");
    assert_eq!(m.namespace, "payments");
    assert_eq!(m.pod_uid, uid);
    assert_eq!(m.sandbox_id, pod.sandbox_id);
    assert_eq!(m.runtime, "containerd");
    // The kubelet sent the image id; the runtime maps it back to the name.
    assert_eq!(m.image, support::TEST_IMAGE);
    let parsed = ImageRef::parse(&m.image).expect("image parses");
    assert_eq!((parsed.name().as_str(), parsed.tags()), ("localhost/driftwatch-test", vec!["1".to_string()]));
    // imageRef: a repo digest when the runtime has one, else the image id.
    let digest = digest_of_image_ref(&m.image_ref).unwrap_or_else(|| panic!("no digest in imageRef {:?}", m.image_ref));
    assert!(
        m.image_ref == img.id || img.repo_digests.contains(&m.image_ref),
        "imageRef {:?} is neither the image id {:?} nor one of {:?}",
        m.image_ref,
        img.id,
        img.repo_digests
    );
    assert!(digest.starts_with("sha256:"));
    let labels: Vec<(&str, &str)> = m.pod_labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(labels, [("app", "checkout"), ("tier", "backend")]);
    assert_eq!(m.pod_annotations.get("team").map(String::as_str), Some("payments"));
    assert_eq!(m.pod_annotations.get("kubernetes.io/config.source").map(String::as_str), Some("api"));
    assert_eq!(reg.cached(&api.id).as_deref(), Some(&*m));

    // The pod's pause container resolves to the pod.
    let p = found(rt.block_on(reg.resolve(&pod.sandbox_id, Duration::from_secs(5))), "sandbox id");
    assert_eq!((p.pod_name.as_str(), p.container_name.as_str()), ("checkout-7d9f", ""));

    // Not a CRI container (made with ctr in the same namespace): the runtime says so.
    let plain = ctrd.run(support::RunSpec::sleeper());
    assert_eq!(rt.block_on(reg.resolve(&plain.id, Duration::from_secs(5))), Lookup::NotFound);
    assert_eq!(rt.block_on(reg.resolve(&"0".repeat(64), Duration::from_secs(5))), Lookup::NotFound);

    // A second client that refreshes often, with a short grace period: a container
    // that vanished from the runtime still resolves during the grace period, and not
    // after it.
    let cancel2 = CancellationToken::new();
    let grace = Duration::from_secs(3);
    let (reg2, _, _) = registry(&rt, &socket, Duration::from_millis(200), grace, &cancel2);
    let short = pod.start_container("short-lived", &["/bin/sleep", "300"]);
    let t0 = Instant::now();
    while reg2.cached(&short.id).is_none() {
        assert!(t0.elapsed() < Duration::from_secs(10), "refresh did not warm the cache");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("cri warm-up (refresh 200ms) saw a new container after {:?}", t0.elapsed());
    pod.remove_container(&short.id).expect("remove short-lived container");
    let removed = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    let m = found(rt.block_on(reg2.resolve(&short.id, Duration::from_secs(5))), "vanished container within grace");
    assert_eq!((m.container_name.as_str(), m.pod_name.as_str()), ("short-lived", "checkout-7d9f"));
    while reg2.cached(&short.id).is_some() {
        assert!(removed.elapsed() < grace + Duration::from_secs(5), "grace period not enforced");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(removed.elapsed() >= grace - Duration::from_millis(300), "expired early: {:?}", removed.elapsed());
    assert_eq!(rt.block_on(reg2.resolve(&short.id, Duration::from_secs(5))), Lookup::NotFound);

    // An endpoint that does not exist: Unavailable, quickly.
    let cancel3 = CancellationToken::new();
    let (reg3, cri3, _) =
        registry(&rt, Path::new("/run/driftwatch-test/no-such.sock"), Duration::from_secs(10), grace, &cancel3);
    let t0 = Instant::now();
    let got = rt.block_on(reg3.resolve(&api.id, Duration::from_secs(10)));
    assert!(matches!(got, Lookup::Unavailable(_)), "{got:?}");
    assert!(t0.elapsed() < Duration::from_secs(2), "took {:?}", t0.elapsed());
    assert!(!cri3.connected());

    for c in [cancel, cancel2, cancel3] {
        c.cancel();
    }
    drop(pod);
}

#[test]
fn cri_enrichment_survives_a_containerd_restart() {
    if !support::privileged() {
        return;
    }
    let ctrd = PrivateContainerd::start_new("cri-restart");
    let socket = ctrd.socket.clone();
    let spec = PodSpec::new("restart-me", "restart").annotation("team", "sre");
    let uid = spec.uid.clone();
    let mut pod = Pod::run(&socket, spec);
    let a = pod.start_container("a", &["/bin/sleep", "300"]);
    assert_cgroup(&a, &uid);

    let rt = runtime();
    let cancel = CancellationToken::new();
    // No periodic refresh: the outage is discovered by the lookup itself.
    let (reg, cri, metrics) = registry(&rt, &socket, Duration::from_secs(3600), Duration::from_secs(300), &cancel);
    wait_connected(&cri);
    let before = found(rt.block_on(reg.resolve(&a.id, Duration::from_secs(5))), "before restart");

    // Created and never looked up before the runtime goes away.
    let b = pod.start_container("b", &["/bin/sleep", "300"]);

    let t_stop = Instant::now();
    ctrd.stop();
    eprintln!("containerd stopped in {:?}", t_stop.elapsed());
    // Cached entries keep resolving while the runtime is down.
    assert_eq!(reg.cached(&a.id).as_deref(), Some(&*before));
    let during = found(rt.block_on(reg.resolve(&a.id, Duration::from_millis(10))), "cached during outage");
    // The runtime is down: this can only have come from the cache.
    assert_eq!(*during, *before);

    // An event from `b` arrives during the outage: it waits (bounded) for the runtime.
    let pending = {
        let reg = reg.clone();
        let id = b.id.clone();
        rt.spawn(async move {
            let t0 = Instant::now();
            (reg.resolve(&id, Duration::from_secs(20)).await, t0.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(!cri.connected(), "the outage went unnoticed");

    let t_start = Instant::now();
    ctrd.start();
    let started_in = t_start.elapsed();
    let (got, waited) = rt.block_on(pending).expect("join");
    let m = found(got, "lookup pending across the restart");
    let recovered = t_start.elapsed();
    assert_eq!((m.container_name.as_str(), m.pod_name.as_str(), m.pod_uid.as_str()), ("b", "restart-me", uid.as_str()));
    assert_eq!(m.pod_annotations.get("team").map(String::as_str), Some("sre"));
    assert!(cri.connected());
    eprintln!(
        "containerd restart: daemon answered {started_in:?} after start, pending lookup resolved {recovered:?} after \
         start (waited {waited:?} in total); connects ok={}",
        metrics.cri.connects().0
    );
    assert!(metrics.cri.connects().0 >= 2, "a reconnect: {:?}", metrics.cri.connects());

    // Nothing lost: the old entry is the same, containers kept running, new ones resolve.
    assert_eq!(reg.cached(&a.id).as_deref(), Some(&*before));
    assert_eq!(a.exec_sync(&["/bin/true"]).map(|r| r.0), Ok(0), "container a did not survive the restart");
    let c = pod.start_container("c", &["/bin/sleep", "300"]);
    let t0 = Instant::now();
    let m = found(rt.block_on(reg.resolve(&c.id, Duration::from_secs(5))), "new container after restart");
    eprintln!("uncached lookup after restart: {:?}", t0.elapsed());
    assert_eq!(m.sandbox_id, pod.sandbox_id);

    cancel.cancel();
    drop(pod);
    drop(ctrd);
}
