//! Drift storms (issue 10): with default settings, no drift exec may be lost
//! between the ring-buffer reader and the pipeline, whatever else is going on.
//!
//! The storm: [`STORMS`] containers each run [`LOOPS`] copies of a dropped
//! static `bench/execstorm` at once, each fork+exec'ing a dropped binary
//! ([`DROPPED_C`]: nothing but `exit(0)`, so an exec is cheap and the storm
//! dense) [`EXECS`] times, one at a time: 8,000 drift execs in about 2-3 s
//! here. Every one of them is binary drift, for which the kernel forces a
//! reader wakeup, so the reader hands the pipeline batches of about one
//! event. From [`NET_LEAD`] before it, another container runs a dropped
//! `bench/netstorm` (listen + connect + UDP bind on [`NET_PORTS`] loopback
//! ports: 60,000 non-drift network events over about 5 s), and short-lived
//! containers come and go (entrypoints, registry work).
//!
//! Asserted: every drift exec is reported (findings of the dropped binary in
//! each storm container == the execs its storms made), no drift event was
//! dropped by the events queue, drops (of non-drift, which may be shed) are
//! logged once, and nothing was lost on the way to stdout. The drift total
//! (8,000) stays under the default queue of 8,192 events, so no pipeline
//! stall, however long, may lose one to the queue.
//!
//! Measured on a 2-core machine, shared and busy (load 11-18), 10 runs each.
//! With the queue bounded in batches (32 of them, of about one event each in
//! a storm): every run dropped events in that queue (3-3,202), 9 of 10 lost
//! drift execs there (17-1,846 of the 8,000 not reported beyond what the
//! kernel dropped) and failed on the count; the 10th failed only because the
//! per-kind drop metric did not exist yet. With the queue bounded in events
//! and drift protected: 0 drift execs dropped in 10 of 10 (0-12,308 network
//! events shed instead), all passed. About 10-14 s a run.
//!
//! On that machine the agent's reader thread waits for a CPU half of the
//! storm (2-3.3 s of about 5.5), before and after the change alike, and the
//! kernel's ring buffer (4 MiB, about 2,000 exec records) filled before the
//! reader drained it in 4 of 10 runs before and 5 of 10 after (86-1,236 exec
//! records). That is a separate, counted bound
//! (`driftwatch_kernel_ringbuf_drops_total`, alert
//! DriftwatchKernelEventsDropped); the test then asserts that every drift
//! exec that reached userspace was reported.
//!
//! Run with: DRIFTWATCH_PRIVILEGED_TESTS=1 cargo test --test e2e_storm
mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};
use support::{Container, RunSpec, agent::Agent};

/// Execs of the dropped binary per storm loop.
const EXECS: usize = 1000;
/// Storm loops per storm container, run at once.
const LOOPS: usize = 4;
/// Storm containers running at once.
const STORMS: usize = 2;
/// The dropped binary: exits at once, without libc.
const DROPPED_C: &str = "void _start(void) { __asm__ volatile(\"mov $60, %eax; xor %edi, %edi; syscall\"); }\n";
/// Distinct loopback ports of the network noise (3 events each, once).
const NET_PORTS: usize = 20_000;
/// The network noise starts this much before the drift storm, so that the
/// pipeline is already busy when drift arrives.
const NET_LEAD: Duration = Duration::from_millis(300);

/// Builds a C program statically (it runs inside the busybox image).
fn build_static(name: &str, src: &Path, extra: &[&str]) -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("e2e-storm-{}-{name}", std::process::id()));
    let st = Command::new("gcc")
        .args(["-O2", "-static", "-Wall"])
        .args(extra)
        .arg("-o")
        .arg(&out)
        .arg(src)
        .status()
        .expect("gcc (scripts/install-deps.sh installs it)");
    assert!(st.success(), "gcc -static {} failed", src.display());
    out
}

fn bench_program(name: &str) -> PathBuf {
    build_static(name, &Path::new(env!("CARGO_MANIFEST_DIR")).join("bench").join(format!("{name}.c")), &[])
}

/// Drops a host file into the container's writable layer (through its root
/// as the host sees it: no exec, no event), executable.
fn drop_file(c: &Container, host: &Path, dest: &str) {
    use std::os::unix::fs::PermissionsExt;
    let target = format!("/proc/{}/root{dest}", c.pid);
    std::fs::copy(host, &target).unwrap_or_else(|e| panic!("copy {} -> {target}: {e}", host.display()));
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// utime + stime of a process, in seconds (clock ticks of 10 ms).
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    (t(11) + t(12)) / 100.0
}

/// A file of the agent's thread named `comm` (`/proc/<pid>/task/<tid>/<file>`).
fn thread_file(pid: u32, comm: &str, file: &str) -> Option<String> {
    std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten().find_map(|t| {
        let p = t.path();
        let named = std::fs::read_to_string(p.join("comm")).is_ok_and(|c| c.trim() == comm);
        named.then(|| std::fs::read_to_string(p.join(file)).unwrap_or_default())
    })
}

/// Time the agent's thread named `comm` spent runnable but waiting for a
/// CPU, in seconds (schedstat's run delay).
fn run_delay_s(pid: u32, comm: &str) -> f64 {
    thread_file(pid, comm, "schedstat")
        .and_then(|st| st.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        .map_or(f64::NAN, |ns| ns / 1e9)
}

/// The storms of this file run one at a time: each test's agent sees every
/// container of the node, so a storm running beside another would measure
/// both (a starved reader, shed events).
static ONE_STORM: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_storm() -> std::sync::MutexGuard<'static, ()> {
    ONE_STORM.lock().unwrap_or_else(|e| e.into_inner())
}

fn metric(agent: &Agent, series: &str) -> f64 {
    agent.metric(series).unwrap_or(f64::NAN)
}

#[test]
fn drift_storm_loses_no_drift_exec() {
    if !support::privileged() {
        return;
    }
    let _one = one_storm();
    let execstorm = bench_program("execstorm");
    let netstorm = bench_program("netstorm");
    let dropped_src =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("e2e-storm-{}-dropped.c", std::process::id()));
    std::fs::write(&dropped_src, DROPPED_C).expect("write dropped.c");
    let dropped = build_static("dropped", &dropped_src, &["-nostdlib"]);
    let ctrd = support::containerd();
    let agent = Agent::start(&[]);

    let storms: Vec<Container> = (0..STORMS).map(|_| ctrd.run(RunSpec::sleeper())).collect();
    for c in &storms {
        drop_file(c, &execstorm, "/tmp/execstorm");
        drop_file(c, &dropped, "/tmp/dropped");
    }
    let noise = ctrd.run(RunSpec::sleeper());
    drop_file(&noise, &netstorm, "/tmp/netstorm");
    for c in storms.iter().chain([&noise]) {
        support::settle(&agent, c);
    }
    for f in [&execstorm, &netstorm, &dropped, &dropped_src] {
        let _ = std::fs::remove_file(f);
    }

    let (t0, cpu0, wait0) = (Instant::now(), cpu_s(agent.pid()), run_delay_s(agent.pid(), "dw-ringbuf"));
    let done = Arc::new(AtomicBool::new(false));
    let churned = thread::scope(|s| {
        // Pod churn while it lasts: containers that start and exit at once.
        let d = done.clone();
        let churn = s.spawn(move || {
            let mut n = 0;
            while !d.load(Ordering::Relaxed) && n < 20 {
                let (_, out) = ctrd.run_once(RunSpec::new(&["/bin/true"]));
                assert!(out.status.success(), "churn container: {out:?}");
                n += 1;
            }
            n
        });
        let net = s.spawn(|| {
            let n = NET_PORTS.to_string();
            noise.exec_ok(&["/tmp/netstorm", "-p", &n, &n])
        });
        thread::sleep(NET_LEAD);
        let runs: Vec<_> = storms
            .iter()
            .flat_map(|c| std::iter::repeat_n(c, LOOPS))
            .map(|c| s.spawn(move || c.exec_ok(&["/tmp/execstorm", &EXECS.to_string(), "/tmp/dropped"])))
            .collect();
        for r in runs {
            eprintln!("execstorm (wall s, cpu s): {}", r.join().expect("storm thread").trim());
        }
        eprintln!("netstorm (wall s, cpu s): {}", net.join().expect("net thread").trim());
        done.store(true, Ordering::Relaxed);
        churn.join().expect("churn thread")
    });
    let storm_s = t0.elapsed().as_secs_f64();
    let agent_cpu = cpu_s(agent.pid()) - cpu0;
    let reader_wait = run_delay_s(agent.pid(), "dw-ringbuf") - wait0;
    for c in &storms {
        support::settle(&agent, c);
    }

    let reported: Vec<usize> = storms
        .iter()
        .map(|c| {
            agent
                .findings_of(&c.id)
                .iter()
                .filter(|f| f["process.executable.path"] == "/tmp/dropped" && f["rule"] == "exec_new_binary")
                .count()
        })
        .collect();
    let m = |s: &str| metric(&agent, s);
    let summary = format!(
        "storm: {STORMS} x {LOOPS} x {EXECS} drift execs + {NET_PORTS} ports x 3 net events + {churned} churn containers \
         in {storm_s:.1}s (agent CPU {agent_cpu:.2}s, reader thread waited {reader_wait:.2}s for a CPU); reported {reported:?}; kernel exec events {}, net events {}, ringbuf drops exec {}; \
         net {}; userspace drops events {}, findings_stdout {}; dropped exec/drift {}, exec/other {}, net {}, file {}",
        m("driftwatch_kernel_events_total{kind=\"exec\"}"),
        m("driftwatch_kernel_events_total{kind=\"net\"}"),
        m("driftwatch_kernel_ringbuf_drops_total{kind=\"exec\"}"),
        m("driftwatch_kernel_ringbuf_drops_total{kind=\"net\"}"),
        m("driftwatch_userspace_drops_total{queue=\"events\"}"),
        m("driftwatch_userspace_drops_total{queue=\"findings_stdout\"}"),
        m("driftwatch_events_dropped_total{kind=\"exec\",drift=\"true\"}"),
        m("driftwatch_events_dropped_total{kind=\"exec\",drift=\"false\"}"),
        m("driftwatch_events_dropped_total{kind=\"net\",drift=\"false\"}"),
        m("driftwatch_events_dropped_total{kind=\"file\",drift=\"false\"}"),
    );
    eprintln!("{summary}");

    // Nothing may be lost after the pipeline either (the findings fit the
    // stdout queue even if the test's reader stalled).
    assert_eq!(m("driftwatch_userspace_drops_total{queue=\"findings_stdout\"}"), 0.0, "{summary}");
    let per_container = LOOPS * EXECS;
    let kernel_lost = m("driftwatch_kernel_ringbuf_drops_total{kind=\"exec\"}");
    if kernel_lost == 0.0 {
        assert_eq!(reported, vec![per_container; STORMS], "every drift exec reported: {summary}\n{}", agent.stderr());
    } else {
        // The kernel's ring buffer (4 MiB, ~2,000 exec records) overflowed
        // before the reader thread got the CPU to drain it: a separate bound,
        // counted per kind and alerted on (DriftwatchKernelEventsDropped).
        // Everything that reached userspace must still be reported.
        eprintln!("note: the kernel ring buffer dropped {kernel_lost} exec records (reader starved of CPU)");
        let sum: usize = reported.iter().sum();
        assert!(
            reported.iter().all(|&n| n <= per_container) && sum as f64 + kernel_lost >= (STORMS * per_container) as f64,
            "every drift exec that reached userspace reported: {summary}\n{}",
            agent.stderr()
        );
    }
    assert_eq!(m("driftwatch_events_dropped_total{kind=\"exec\",drift=\"true\"}"), 0.0, "{summary}");
    // Drops are said in the log, once (then at most once a minute), never per event.
    let said = agent.stderr().lines().filter(|l| l.contains("events queue full")).count();
    let dropped = m("driftwatch_userspace_drops_total{queue=\"events\"}");
    assert_eq!(said, usize::from(dropped > 0.0), "{summary}\n{}", agent.stderr());
}

/// The value of the `key:` line of the events thread's `/proc` file `file`.
fn reader_counter(pid: u32, file: &str, key: &str) -> f64 {
    thread_file(pid, "dw-ringbuf", file)
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().parse().ok()))
        .unwrap_or(f64::NAN)
}

/// The events thread's wakeups so far (`driftwatch_reader_wakeups_total`, both causes).
fn reader_wakeups(agent: &Agent) -> f64 {
    metric(agent, "driftwatch_reader_wakeups_total{cause=\"records\"}")
        + metric(agent, "driftwatch_reader_wakeups_total{cause=\"timeout\"}")
}

/// A shell loop that runs the image's `/bin/true` `n` times (execs the
/// kernel's filter finds nothing in).
fn true_loop(n: usize) -> String {
    format!("i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done")
}

/// The events thread's context switches so far (voluntary: it slept).
fn reader_switches(pid: u32) -> f64 {
    reader_counter(pid, "status", "voluntary_ctxt_switches")
}

/// The events thread's write syscalls so far (`syscw`: its only writes are
/// the stdout sink's).
fn reader_writes(pid: u32) -> f64 {
    reader_counter(pid, "io", "syscw")
}

/// A storm of findings that are not drift (shells: the kernel wakes the
/// reader at most once per `sensor.wake_interval_ms` for them) wakes the
/// events thread about once per interval, not twice: its own timer and the
/// kernel's gated wakeup used to both fire, one just after the other
/// (`src/bpf/look.rs`). Measured here at the default 10 ms, 6,000 shells:
/// 1.19-1.21 wakeups per interval before, 0.99 after. Every shell is still
/// reported, and a look's findings go to stdout in one write (a write per
/// judged chunk made 2.4 writes a wakeup here), except where a look holds
/// more than a pipe's 64 KiB of them.
#[test]
fn a_shell_storm_wakes_the_reader_about_once_per_wake_interval() {
    if !support::privileged() {
        return;
    }
    let _one = one_storm();
    const SHELLS: usize = 6000;
    const INTERVAL_MS: f64 = 10.0; // the default sensor.wake_interval_ms
    // Its own build (the other test removes its copy once dropped).
    let execstorm = build_static("shellstorm", &Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/execstorm.c"), &[]);
    let agent = Agent::start(&[]);
    let c = support::containerd().run(RunSpec::sleeper());
    drop_file(&c, &execstorm, "/tmp/execstorm");
    let _ = std::fs::remove_file(&execstorm);
    support::settle(&agent, &c);

    let wakeups = || reader_wakeups(&agent);
    let (w0, s0, y0, t0) = (wakeups(), reader_switches(agent.pid()), reader_writes(agent.pid()), Instant::now());
    c.exec_ok(&["/tmp/execstorm", &SHELLS.to_string(), "/bin/sh", "-c", ":"]);
    let storm_s = t0.elapsed().as_secs_f64();
    // The storm's last findings are at most one interval behind it.
    thread::sleep(Duration::from_millis(3 * INTERVAL_MS as u64));
    let (woke, switched, writes) = (wakeups() - w0, reader_switches(agent.pid()) - s0, reader_writes(agent.pid()) - y0);
    support::settle(&agent, &c);
    let shells = agent
        .findings_of(&c.id)
        .iter()
        .filter(|f| f["rule"] == "shell_in_container" && f["driftwatch.process.parent.name"] == "execstorm")
        .count();
    let intervals = storm_s * 1000.0 / INTERVAL_MS;
    // Non-drift may be shed by a full queue (counted); none is lost silently.
    let shed = metric(&agent, "driftwatch_events_dropped_total{kind=\"exec\",drift=\"false\"}")
        + metric(&agent, "driftwatch_kernel_ringbuf_drops_total{kind=\"exec\"}");
    let summary = format!(
        "{SHELLS} shells in {storm_s:.2}s = {intervals:.0} intervals; reader wakeups {woke} (metric), \
         context switches {switched}, stdout writes {writes}; shells reported {shells}, execs shed {shed}"
    );
    eprintln!("{summary}");
    assert_eq!(shells as f64 + shed, SHELLS as f64, "{summary}");
    // One a look, plus the storm's own drift exec and the trailing looks.
    assert!(woke >= 1.0 && woke <= 1.1 * intervals + 10.0, "{summary}");
    assert!(switched <= 1.1 * intervals + 10.0, "{summary}");
    // A finding line is ~1.1 KB: at most one write more per 58 findings a look.
    assert!(writes <= 1.1 * woke + shells as f64 / 58.0 + 10.0, "{summary}");
}

/// What only `--emit-all-execs` sends (execs the kernel's filter found
/// nothing in: `DW_EXEC_UNFILTERED`) wakes nobody and does not keep the
/// reader's timer short: it is read when the reader looks anyway, at its idle
/// timer (backing off from `sensor.drain_interval_ms`, 50 ms, to
/// `sensor.idle_drain_interval_ms`, 1 s) or when the ring buffer is half full,
/// in large batches: not once per wake interval (10 ms) as records that may
/// be findings, nor once per drain interval. A shell loop runs the image's
/// `/bin/true` (not a dropped program's children: those are children of
/// drift, which the filter keeps). Measured here, 3,000 execs: one wakeup per
/// 10 ms of loop two revisions before, one per 50 ms the revision before,
/// 8 in 2.0 s now. Every exec is still read, within the idle interval.
#[test]
fn unfiltered_execs_wait_for_the_idle_timer_and_are_read_in_batches() {
    if !support::privileged() {
        return;
    }
    let _one = one_storm();
    const EXECS: usize = 3000;
    const DRAIN_MS: f64 = 50.0; // the default sensor.drain_interval_ms
    const IDLE_MS: u64 = 1000; // the default sensor.idle_drain_interval_ms
    const RING: f64 = 4194304.0; // the default sensor.ringbuf_bytes
    let agent = Agent::start(&["--emit-all-execs"]);
    let c = support::containerd().run(RunSpec::sleeper());
    support::settle(&agent, &c);

    let wakeups = || reader_wakeups(&agent);
    let decoded = || metric(&agent, "driftwatch_events_total{kind=\"exec\"}");
    let (w0, d0, t0) = (wakeups(), decoded(), Instant::now());
    c.exec_ok(&["/bin/sh", "-c", &true_loop(EXECS)]);
    let loop_s = t0.elapsed().as_secs_f64();
    let woke = wakeups() - w0;
    // Read at the idle timer at the latest.
    thread::sleep(Duration::from_millis(IDLE_MS + 500));
    let read = decoded() - d0;
    let shed = metric(&agent, "driftwatch_kernel_ringbuf_drops_total{kind=\"exec\"}");
    let drains = loop_s * 1000.0 / DRAIN_MS;
    // The shell's own exec (a finding) starts the look cadence; then the
    // timer backs off (50 + 100 + ... + 800 ms: 6 looks), then once a second,
    // plus a look each time the records fill half the ring buffer.
    let half_fulls = EXECS as f64 * size_of::<driftwatch::abi::dw_exec>() as f64 / (RING / 2.0);
    let bound = 8.0 + loop_s + half_fulls.ceil();
    let summary = format!(
        "{EXECS} image execs in {loop_s:.2}s = {drains:.0} drain intervals ({:.0} wake intervals); \
         reader wakeups {woke} (at most {bound:.0}); execs decoded {read}, dropped by the kernel {shed}",
        drains * 5.0
    );
    eprintln!("{summary}");
    // The loop's execs and the shell's own (a finding: gated).
    assert!(read + shed >= EXECS as f64, "{summary}");
    assert!(woke <= bound + 2.0, "{summary}");
}

/// An idle reader backs off: its backstop doubles at each look that reads
/// nothing, up to `sensor.idle_drain_interval_ms` (1 s by default), so an
/// idle node's agent wakes about once a second instead of once per drain
/// interval (20 times). Records that may be findings wake it at once anyway,
/// and what waits for the timer (`--emit-all-execs`' image execs) is still
/// read, within the idle interval. Measured here: 4.0 s idle, 4 wakeups
/// (80 at the drain timer alone).
#[test]
fn an_idle_reader_backs_off_to_the_idle_drain_interval() {
    if !support::privileged() {
        return;
    }
    let _one = one_storm();
    let agent = Agent::start(&["--emit-all-execs"]);
    let c = support::containerd().run(RunSpec::sleeper());
    support::settle(&agent, &c);
    // Backed off by now: 50 + 100 + ... + 800 ms of empty looks.
    thread::sleep(Duration::from_millis(2000));
    let wakeups = || reader_wakeups(&agent);
    let (w0, t0) = (wakeups(), Instant::now());
    thread::sleep(Duration::from_millis(4000));
    let (woke, idle_s) = (wakeups() - w0, t0.elapsed().as_secs_f64());
    let summary =
        format!("idle {idle_s:.1}s: {woke} reader wakeups (the 50 ms drain timer alone: {:.0})", idle_s * 20.0);
    eprintln!("{summary}");
    assert!(woke <= 2.0 * idle_s + 4.0, "{summary}");
    // An exec in the container after the quiet spell is read.
    let decoded = || metric(&agent, "driftwatch_events_total{kind=\"exec\"}");
    let (d0, t0) = (decoded(), Instant::now());
    c.exec_ok(&["/bin/true"]);
    while decoded() <= d0 {
        assert!(t0.elapsed() < Duration::from_secs(5), "an exec after an idle spell was never read");
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!("read {:.0} ms after the exec began", t0.elapsed().as_secs_f64() * 1000.0);
}

/// A ring buffer half full wakes the reader, whatever it holds: a storm of
/// records that wake nobody (here `--emit-all-execs`' execs, with a 256 KiB
/// ring of about 130 exec records drained once a second) is read before
/// the kernel has to drop it. Without that wakeup most of the 1,500 execs
/// were dropped (`e2e_exec`'s overflow test keeps that case: with
/// `wake_interval_ms: 0` records never wake the reader).
#[test]
fn a_half_full_ring_buffer_wakes_the_reader() {
    if !support::privileged() {
        return;
    }
    let _one = one_storm();
    const EXECS: usize = 1500;
    let dir = std::env::temp_dir().join(format!("dw-halffull-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("tiny.yaml");
    std::fs::write(&cfg, "sensor:\n  ringbuf_bytes: 262144\n  drain_interval_ms: 1000\n").unwrap();
    let agent = Agent::start(&["--config", cfg.to_str().unwrap(), "--emit-all-execs"]);
    let c = support::containerd().run(RunSpec::sleeper());
    support::settle(&agent, &c);
    let sent = || metric(&agent, "driftwatch_kernel_execs_total{verdict=\"container_sent\"}");
    let dropped = || metric(&agent, "driftwatch_kernel_ringbuf_drops_total{kind=\"exec\"}");
    let (s0, x0) = (sent(), dropped());
    c.exec_ok(&["/bin/sh", "-c", &true_loop(EXECS)]);
    thread::sleep(Duration::from_millis(1200)); // > one drain period
    let (sent, dropped) = (sent() - s0, dropped() - x0);
    let summary = format!("{EXECS} execs into a 256 KiB ring drained once a second: sent {sent}, dropped {dropped}");
    eprintln!("{summary}");
    assert!(sent >= EXECS as f64, "{summary}");
    // A CPU-starved reader may still lose a few; without the wakeup ~90% were.
    assert!(dropped < 0.1 * sent, "{summary}");
    let _ = std::fs::remove_dir_all(&dir);
}
