//! Userspace cost per kernel event, single-threaded: what the reader thread,
//! the pipeline and the stdout sink spend on one exec record.
//!
//!   cargo bench --bench pipeline            (DW_BENCH_N=200000 events per sample)
//!
//! Records are decoded `DW_BENCH_BATCH` at a time (default 256, a full drain)
//! into a batch of the events queue, then judged, and the look's findings
//! written in one write, as the events thread does (`src/bpf/reader.rs`,
//! `EventsHandler` in `src/agent.rs`).
//!
//! `cargo test` runs it too, without `--bench`, as a smoke run of 200 events
//! per sample (a debug build timing 200,000 was ten minutes of CI for numbers
//! nobody reads) that fails if any stage makes a heap allocation per event
//! once warmed up.
//!
//! Stages (each includes the ones before it):
//! - `decode`: ring-buffer record -> `Event` (reader thread);
//! - `classify_no_finding`: + enrich (container id from the cgroup path) +
//!   the container registry's lookup + classify + `execs_not_findings`
//!   metric, for an image `/bin/true` (what
//!   `--emit-all-execs` sends for `container_exec_true`);
//! - `shell_finding_json`: + a `shell_in_container` finding: metrics, the
//!   per-container series, the fan-out, and the stdout sink's JSON line and
//!   one write a look (to `/dev/null`), as in `container_exec_sh`;
//! - `shell_finding_no_gate`: the same without the policy gate (A/B);
//! - `shell_finding_pod`: the same for a kubelet pod's container: the
//!   registry knows its metadata (pod, workload, image, labels), which every
//!   finding carries;
//! - `shell_finding_pod_varied`: 64 shells with different command lines
//!   (`sh -c 'echo N'`), more than the redaction memo's 32: each misses it;
//! - `package_finding_pod`: `apt-get install -y curl` in the same pod (a
//!   `package_manager_exec` finding, its command line in the message);
//! - `shell_finding_100_approvals`: the same through a policy of 100
//!   approvals none of which matches (each is checked), against the default
//!   empty policy of `shell_finding_json` (the agent always has a policy gate);
//! - `net_loopback_pod`: a listener on the pod's loopback (no finding:
//!   `rules.network.ignore_loopback`), as `bench/overhead.sh`'s `container_net`;
//! - `net_expected_pod`: a listener on all addresses that the workload's
//!   baseline already holds (no finding): the baseline's key and lookup.
//!
//! Node-only mode (no runtime) except in `shell_finding_pod`: the finding goes
//! out with `driftwatch.metadata.complete: false`, without waiting. Plain `std::time`
//! loops; the median of several samples is printed, and the heap allocations
//! per event (a counting global allocator).

use driftwatch::{
    abi,
    bpf::queue,
    classify::Classifier,
    config::Config,
    config::OutputFormat,
    containers::{Registry, RegistryConfig},
    enrich::cri::ContainerMeta,
    event,
    metrics::Metrics,
    pipeline::{Deps, Emitter, Pipeline, PolicyGate, Redaction},
    sink::{Fanout, json},
};
use std::{
    alloc::{GlobalAlloc, Layout, System},
    hint::black_box,
    mem::size_of,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Instant,
};
use tokio::sync::mpsc;

const ID: &str = "3f1c0e2a9b8d7c6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e";
/// Heap allocations (and reallocations) since start: a cost per event that,
/// unlike time, does not move with the host's noise.
static ALLOCS: AtomicU64 = AtomicU64::new(0);

struct Counting;

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BATCH: usize = 256; // as the reader: at most one full drain a batch

/// Events decoded before they are judged: [`BATCH`], or `DW_BENCH_BATCH`
/// (a storm's look reads ~16: fewer of a drain's allocations outlive glibc's
/// per-thread cache).
fn batch_size() -> usize {
    static SIZE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        std::env::var("DW_BENCH_BATCH").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(BATCH)
    })
}

fn put(dst: &mut [std::ffi::c_char], s: &[u8]) {
    for (d, b) in dst.iter_mut().zip(s) {
        *d = *b as std::ffi::c_char;
    }
}

/// An exec record as the kernel writes it (same construction as the tests in
/// src/event.rs), in a kubelet + containerd (systemd driver) pod cgroup.
fn exec_record(comm: &str, path: &str, args: &[u8], exe_source: u32, name_class: u32) -> Vec<u8> {
    let mut r = abi::dw_exec { hdr: header::<abi::dw_exec>(abi::DW_KIND_EXEC), ppid: 41_200, ..Default::default() };
    r.exe_source = exe_source;
    r.name_class = name_class;
    r.mntns = 4_026_532_999;
    r.mntns_id = 77;
    r.exe_ino = 1_234_567;
    r.exe_nlink = 1;
    put(&mut r.comm, comm.as_bytes());
    put(&mut r.parent_comm, b"execstorm");
    put(&mut r.path, path.as_bytes());
    r.path_len = path.len() as u16;
    put(&mut r.args, args);
    r.args_len = args.len() as u16;
    put_cgroup(&mut r.cgroup);
    r.cgroup_key = CGROUP_KEY;
    bytes_of(r)
}

/// A listen record of the pod's container, on `addr` (IPv4) port 8080.
fn listen_record(addr: [u8; 4]) -> Vec<u8> {
    let mut r = abi::dw_net { hdr: header::<abi::dw_net>(abi::DW_KIND_NET), ppid: 41_200, ..Default::default() };
    r.mntns_id = 77;
    r.op = abi::DW_NET_LISTEN as u16;
    r.family = 2; // AF_INET
    r.sock_type = 1; // SOCK_STREAM
    r.port = 8080;
    r.addr[..4].copy_from_slice(&addr);
    put(&mut r.comm, b"nginx");
    put_cgroup(&mut r.cgroup);
    r.cgroup_key = CGROUP_KEY;
    bytes_of(r)
}

/// The header of a `T` record of kind `kind` from the bench's process.
fn header<T>(kind: abi::dw_kind) -> abi::dw_header {
    abi::dw_header {
        kind: kind as u16,
        size: size_of::<T>() as u16,
        tgid: 41_234,
        pid: 41_234,
        cgroup_id: 9_876,
        ..Default::default()
    }
}

/// A record's bytes, as the ring buffer holds them.
fn bytes_of<T: Copy>(r: T) -> Vec<u8> {
    let mut v = vec![0u8; size_of::<T>()];
    // SAFETY: writing a plain-data record into a buffer of exactly its size.
    unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast::<T>(), r) };
    v
}

/// The pod's cgroup (kubelet + containerd, systemd driver), leaf first.
/// The kernel's key for that cgroup (`cgroup_key`: a kernfs node id, top bit
/// for the v1 memory hierarchy, as on the test machines).
const CGROUP_KEY: u64 = (1 << 63) | 0x1_0000_2a2a;

fn put_cgroup(levels: &mut [[std::ffi::c_char; abi::DW_CGROUP_NAME_LEN as usize]; 4]) {
    let scope = format!("cri-containerd-{ID}.scope");
    put(&mut levels[0], scope.as_bytes());
    put(&mut levels[1], b"kubepods-besteffort-pod5f0c1a2b_3c4d_4e5f_8a9b_0c1d2e3f4a5b.slice");
    put(&mut levels[2], b"kubepods-besteffort.slice");
    put(&mut levels[3], b"kubepods.slice");
}

/// Runs `f` over `n` events several times; returns the median ns/event.
fn measure(name: &str, n: usize, mut f: impl FnMut(usize)) -> f64 {
    // DW_BENCH_ONLY=<stage>: that stage alone (to profile it with perf).
    if std::env::var("DW_BENCH_ONLY").is_ok_and(|only| only != name) {
        return 0.0;
    }
    // Warm-up (series created, buffers grown, spares filled). The smoke run
    // of `cargo test` warms up as long as it counts: a short warm-up would
    // leave a first full batch's growth in the count.
    let measuring = std::env::args().any(|a| a == "--bench");
    f(if measuring { n / 10 } else { n });
    let before = ALLOCS.load(Relaxed);
    f(n);
    let allocs = (ALLOCS.load(Relaxed) - before) as f64 / n as f64;
    // Issue 15: no heap allocation per event on the hot path, finding or
    // not (the look's batch and its findings' buffers are reused). Checked
    // by `cargo test`'s smoke run of this bench.
    assert!(measuring || allocs == 0.0, "{name}: {allocs} heap allocations an event");
    let mut samples: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            f(n);
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    let med = samples[samples.len() / 2];
    println!(
        "{name:<27} {med:>8.0} ns/event   (min {:.0}, max {:.0})   {allocs:>5.1} allocs/event",
        samples[0],
        samples[samples.len() - 1]
    );
    med
}

/// A pipeline as the agent runs it on its events thread: the events queue
/// between drain and judging, and the stdout sink (on `/dev/null`).
struct Bench {
    p: Arc<Pipeline>,
    out: Arc<json::Stdout>,
    m: Arc<Metrics>,
    queue: (queue::Sender, queue::Receiver),
}

fn pipeline(policy: &str) -> Bench {
    pipeline_with(Some(policy), None)
}

/// What a kubelet's containerd says of the bench's container: a Deployment's
/// pod, as in the golden findings.
fn pod_meta() -> ContainerMeta {
    let labels = [("app", "checkout"), ("pod-template-hash", "7d9f8b6c5d"), ("team", "shop")];
    ContainerMeta {
        container_id: ID.into(),
        container_name: "api".into(),
        pod_name: "checkout-7d9f8b6c5d-x2k4q".into(),
        namespace: "shop".into(),
        pod_uid: "5f0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b".into(),
        sandbox_id: "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d".into(),
        image: "registry.example.com/shop/api:v2".into(),
        image_ref:
            "registry.example.com/shop/api@sha256:1111111111111111111111111111111111111111111111111111111111111111"
                .into(),
        pod_labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        pod_annotations: Default::default(),
        runtime: "containerd".into(),
    }
}

/// `None`: no policy gate at all (the agent before policies), for the A/B.
/// `meta`: the registry knows the container (a pod's), else it has no runtime.
fn pipeline_with(policy: Option<&str>, meta: Option<ContainerMeta>) -> Bench {
    let mut out = None;
    let (p, m) = pipeline_to(policy, meta, |fanout, m| {
        let null = std::fs::OpenOptions::new().write(true).open("/dev/null").expect("/dev/null");
        out = Some(json::Stdout::on_file(null, OutputFormat::Json, 8192, "findings_stdout", fanout, m));
    });
    let out = out.expect("stdout sink");
    Bench { p, out, m, queue: queue::channel(16_384) }
}

/// The pipeline with the sinks `sinks` registers.
fn pipeline_to(
    policy: Option<&str>,
    meta: Option<ContainerMeta>,
    sinks: impl FnOnce(&mut Fanout, &Arc<Metrics>),
) -> (Arc<Pipeline>, Arc<Metrics>) {
    let mut cfg = Config::from_yaml(policy.unwrap_or_default(), "bench.yaml").expect("bench policy");
    cfg.runtime.enabled = false;
    // Baselines in memory only; a port the defaults allow would end before the baseline.
    cfg.rules.network.state_dir.clear();
    cfg.rules.network.allowed_ports.clear();
    let classifier = Arc::new(Classifier::new(&cfg));
    let metrics = Arc::new(Metrics::new());
    // Every series and handle the agent declares at start (pre-resolved counters).
    driftwatch::agent::declare_series(&metrics, &classifier, &cfg);
    let mut fanout = Fanout::default();
    sinks(&mut fanout, &metrics);
    let registry =
        Registry::new(RegistryConfig::default(), None, None, metrics.registry_stats.clone(), metrics.cri.clone());
    if let Some(m) = meta {
        registry.remember(m);
    }
    // As the agent: every finding redacted (the default policy) before the fan-out.
    let redaction = cfg.redaction.redactor().expect("valid").map(|r| Redaction::new(r, &metrics));
    let compiled = driftwatch::policy::compile::compile(&cfg.policy).expect("bench policy compiles");
    let gate = Arc::new(PolicyGate::new(
        driftwatch::policy::Policy::new(compiled),
        driftwatch::policy::learned::Learned::open(None).0,
        registry.clone(),
        metrics.clone(),
    ));
    let emitter =
        Emitter::new(registry.clone(), metrics.clone(), fanout, std::time::Duration::ZERO).with_redaction(redaction);
    let emitter = Arc::new(if policy.is_some() { emitter.with_policy(gate) } else { emitter });
    let deps = Deps {
        classifier,
        emitter,
        registry,
        network: Some(Arc::new(driftwatch::classify::network::NetworkJudge::new(&cfg.rules.network).0)),
        file: None,
        not_container: None,
        drift_marks: None,
        protect: None,
    };
    (Pipeline::new(deps), metrics)
}

/// The events thread's loop, one look at a time: records decoded into a
/// batch of the events queue, the batch judged, the look's findings written
/// in one write when the look ends.
fn run(records: &[Vec<u8>], n: usize, b: &mut Bench) {
    let mut left = n;
    while left > 0 {
        let k = left.min(batch_size());
        let look = b.out.batch();
        let (tx, rx) = &mut b.queue;
        let mut batch = tx.batch();
        for i in 0..k {
            batch.push(event::decode(&records[i % records.len()]).expect("valid record"));
        }
        b.m.pipeline.events(batch[0].kind(), k as u64);
        assert_eq!(tx.push(batch).total(), 0, "the bench's queue never fills");
        let mut batch = rx.try_recv().expect("the batch just queued");
        batch.drain(..).for_each(|ev| b.p.handle(ev));
        rx.recycle(batch);
        drop(look); // the look's one write
        left -= k;
    }
}

fn main() {
    // The agent's allocator settings (src/heap.rs), as in `driftwatch run`.
    driftwatch::heap::tune();
    let measuring = std::env::args().any(|a| a == "--bench");
    let n: usize =
        std::env::var("DW_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(if measuring { 200_000 } else { 200 });
    let true_rec = exec_record("true", "/usr/bin/true", b"/bin/true\0", abi::DW_SRC_IMAGE, 0);
    let sh_rec = exec_record(
        "sh",
        "/usr/bin/dash",
        b"/bin/sh\0-c\0:\0",
        abi::DW_SRC_IMAGE,
        abi::DW_NAME_SHELL | abi::DW_NAME_INTERPRETER,
    );
    println!("{n} events per sample, median of 7");

    measure("decode", n, |n| {
        for _ in 0..n {
            black_box(event::decode(black_box(&true_rec)).expect("valid record"));
        }
    });

    let mut b = pipeline("");
    let recs = [true_rec];
    if measure("classify_no_finding", n, |n| run(&recs, n, &mut b)) > 0.0 {
        assert_eq!(b.out.progress().taken(), 0, "an image /bin/true is no finding");
    }

    let mut b = pipeline("");
    let recs = [sh_rec.clone()];
    if measure("shell_finding_json", n, |n| run(&recs, n, &mut b)) > 0.0 {
        assert!(b.out.progress().taken() > 0, "a shell is a finding");
    }

    let mut b = pipeline_with(None, None);
    measure("shell_finding_no_gate", n, |n| run(&recs, n, &mut b));
    // Again with the gate: the stages alternate, so a drift of the host shows.
    let mut b = pipeline("");
    measure("shell_finding_json", n, |n| run(&recs, n, &mut b));

    // A kubelet pod's container: its metadata copied into every finding.
    let mut b = pipeline_with(Some(""), Some(pod_meta()));
    measure("shell_finding_pod", n, |n| run(&recs, n, &mut b));

    // Shells whose command lines differ (64 of them, more than the redaction
    // memo keeps): each is judged by the patterns, and takes the oldest
    // memo entry's place and buffer.
    let mut b = pipeline_with(Some(""), Some(pod_meta()));
    let varied: Vec<Vec<u8>> = (0..64)
        .map(|i| {
            let args = format!("/bin/sh\0-c\0echo {i}\0");
            exec_record("sh", "/usr/bin/dash", args.as_bytes(), abi::DW_SRC_IMAGE, abi::DW_NAME_SHELL)
        })
        .collect();
    measure("shell_finding_pod_varied", n, |n| run(&varied, n, &mut b));

    // A package manager run in the pod (its command line in the message).
    let mut b = pipeline_with(Some(""), Some(pod_meta()));
    let apt = exec_record(
        "apt-get",
        "/usr/bin/apt-get",
        b"apt-get\0install\0-y\0curl\0",
        abi::DW_SRC_IMAGE,
        abi::DW_NAME_PACKAGE,
    );
    let apt = [apt];
    if measure("package_finding_pod", n, |n| run(&apt, n, &mut b)) > 0.0 {
        assert!(b.out.progress().taken() > 0, "a package manager run is a finding");
    }

    let approvals: String = (0..100)
        .map(|i| {
            format!(
                "    - {{name: a{i}, reason: bench, match: {{namespace: 'team-{i}-*', kind: shell, command_args: '*--x{i}*'}}}}\n"
            )
        })
        .collect();
    let mut b = pipeline(&format!("policy:\n  approvals:\n{approvals}"));
    measure("shell_finding_100_approvals", n, |n| run(&recs, n, &mut b));

    // Network endpoints of a kubelet pod's container, judged without a finding.
    let mut b = pipeline_with(Some(""), Some(pod_meta()));
    let recs = [listen_record([127, 0, 0, 1])];
    measure("net_loopback_pod", n, |n| run(&recs, n, &mut b));
    let recs = [listen_record([0, 0, 0, 0])];
    if measure("net_expected_pod", n, |n| run(&recs, n, &mut b)) > 0.0 {
        assert_eq!(b.out.progress().taken(), 0, "loopback and a learned endpoint are no finding");
    }

    // The JSON line alone, for reference.
    let (tx, mut rx) = mpsc::channel(1);
    let (p, _) = pipeline_to(Some(""), None, |fanout, m| {
        fanout.add("findings", tx, m);
    });
    p.handle(event::decode(&sh_rec).expect("valid record"));
    let f = rx.try_recv().expect("a shell finding");
    let (mut line, mut jbuf) = (Vec::with_capacity(4096), Vec::with_capacity(4096));
    measure("json_line_only", n, |n| {
        for _ in 0..n {
            line.clear();
            json::write_line(&mut line, black_box(&f), &mut jbuf).expect("in-memory write");
        }
    });
}
