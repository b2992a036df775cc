//! Node quarantine, proven on real pods (src/respond/quarantine.rs,
//! ebpf/quarantine.bpf.c). A private containerd with the CNI stub gives two
//! pods their own network namespaces; the stub's veth peer of each is moved
//! into a listener network namespace made here (`ip netns`), and a third veth
//! joins the host to it, so packets really cross namespaces:
//!
//! ```text
//!   pod A 198.18.1.2, fd00:d57:1::2 ── 198.18.1.1, fd00:d57:1::1 ┐
//!   pod B 198.18.2.2                ── 198.18.2.1                ├ listener netns: netprobe serve 7000, 7001
//!   host  198.18.3.1                ── 198.18.3.2                ┘
//!   pod H (hostNetwork) ── 127.0.0.1:7002 on the host
//! ```
//!
//! Every pod runs `netprobe serve 7000` (tests/support/netprobe.c, TCP and
//! UDP). The test shows: before, everything reaches everything; after `apply`
//! on A, A reaches nothing and nothing reaches A (TCP and UDP, IPv4 and IPv6,
//! both directions) but its own loopback, while B and the host still do; the
//! cut-off latency; an allow rule lets exactly its peer and port through; a
//! new manager (an agent restart) keeps A cut off and lists it; `release`
//! restores A; `prune` releases the quarantine of a deleted pod and of a
//! container `live` no longer knows. Also which capabilities loading and
//! attaching need on this kernel (measured by re-running this binary under
//! `setpriv` with the chart's capability set, with and without NET_ADMIN).
mod support;

use driftwatch::bpf::quarantine::{Netns, QuarantineBpf};
use driftwatch::config::AllowRule;
use driftwatch::respond::quarantine::Quarantine;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use support::cri::{CriContainer, Pod, PodSpec, PrivateContainerd};
use support::kubelet;

/// The private containerd of this test (own root, state, socket, CNI).
const RUNTIME: &str = "quarantine";
/// What the CNI stub gives each pod; replaced per pod below.
const STUB_ADDRESS: &str = "198.18.9.2/24";
const PORT: &str = "7000";
/// Milliseconds a probe waits for an answer (a cut-off probe waits this long).
const PROBE_MS: &str = "700";

/// tests/support/netprobe.c, built static once per test process.
fn netprobe() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/netprobe.c");
        let bin = std::env::temp_dir().join(format!("dw-netprobe-{}", std::process::id()));
        let out = Command::new("gcc")
            .args(["-static", "-O2", "-Wall", "-Werror", "-o"])
            .arg(&bin)
            .arg(&src)
            .output()
            .expect("running gcc");
        assert!(out.status.success(), "gcc {}: {}", src.display(), String::from_utf8_lossy(&out.stderr));
        bin
    })
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(netns: Option<&str>, args: &str) {
    let mut c = match netns {
        Some(ns) if ns.starts_with('/') => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={ns}")).arg("ip");
            c
        }
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["-n", ns]);
            c
        }
        None => Command::new("ip"),
    };
    run(c.args(args.split_whitespace()));
}

/// A fresh pin directory on bpffs, removed with everything pinned in it.
struct PinDir(PathBuf);

impl PinDir {
    fn new(tag: &str) -> PinDir {
        let d = PathBuf::from(format!("/sys/fs/bpf/driftwatch-test-{tag}-{}", std::process::id()));
        remove_pins(&d);
        PinDir(d)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        remove_pins(&self.0);
    }
}

fn remove_pins(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            remove_pins(&e.path());
        } else {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Who sends a probe.
#[derive(Clone, Copy)]
enum Peer<'a> {
    Pod(&'a CriContainer),
    Listener,
    Host,
}

/// The test's network: the listener namespace, its links, its servers.
struct Net {
    ns: String,
    servers: Vec<Child>,
}

impl Net {
    fn new() -> Net {
        let ns = format!("dwq-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &ns]).stderr(Stdio::null()).status();
        let _ = Command::new("ip").args(["link", "del", "dwq-h"]).stderr(Stdio::null()).status();
        ip(None, &format!("netns add {ns}"));
        let net = Net { ns: ns.clone(), servers: Vec::new() };
        ip(Some(&ns), "link set lo up");
        ip(None, &format!("link add dwq-h type veth peer name dwq-hp netns {ns}"));
        ip(None, "addr add 198.18.3.1/24 dev dwq-h");
        ip(None, "link set dwq-h up");
        ip(Some(&ns), "addr add 198.18.3.2/24 dev dwq-hp");
        ip(Some(&ns), "link set dwq-hp up");
        net
    }

    /// Moves the stub's veth peer of the pod whose process is `pid` into the
    /// listener namespace as `link`, with `subnet`.1 there and `subnet`.2 in the pod.
    fn join(&self, pid: u32, link: &str, subnet: &str, v6: Option<&str>) {
        let pod_ns = format!("/proc/{pid}/ns/net");
        ip(Some(&pod_ns), "addr flush dev eth0");
        ip(Some(&pod_ns), &format!("addr add {subnet}.2/24 dev eth0"));
        ip(Some(&pod_ns), &format!("link set eth0p name {link}"));
        ip(Some(&pod_ns), &format!("link set {link} netns {}", self.ns));
        ip(Some(&self.ns), &format!("addr add {subnet}.1/24 dev {link}"));
        if let Some(v6) = v6 {
            ip(Some(&pod_ns), &format!("-6 addr add {v6}::2/64 dev eth0 nodad"));
            ip(Some(&self.ns), &format!("-6 addr add {v6}::1/64 dev {link} nodad"));
        }
        ip(Some(&self.ns), &format!("link set {link} up"));
    }

    fn serve(&mut self, port: &str) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(netprobe())
            .args(["serve", port])
            .stdout(Stdio::null())
            .spawn()
            .expect("listener");
        self.servers.push(child);
    }

    /// Whether a TCP or UDP "ping" from `from` to host:port gets its "pong".
    fn reach(&self, from: Peer, proto: &str, host: &str, port: &str) -> bool {
        let args = [proto, host, port, PROBE_MS];
        match from {
            Peer::Pod(c) => {
                let mut cmd = vec!["/tmp/netprobe"];
                cmd.extend(args);
                c.exec_sync(&cmd).is_ok_and(|(code, out, _)| code == 0 && out.contains("pong"))
            }
            Peer::Listener | Peer::Host => {
                let mut cmd = if matches!(from, Peer::Listener) {
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", &self.ns]).arg(netprobe());
                    c
                } else {
                    Command::new(netprobe())
                };
                let out = cmd.args(args).stderr(Stdio::null()).output().expect("netprobe");
                out.status.success() && String::from_utf8_lossy(&out.stdout).contains("pong")
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip").args(["link", "del", "dwq-h"]).stderr(Stdio::null()).status();
        let _ = std::fs::remove_file(netprobe());
    }
}

/// Expectations of one phase, checked all before failing, so a failure shows
/// the whole picture.
struct Checks<'a> {
    net: &'a Net,
    phase: &'static str,
    wrong: Vec<String>,
}

impl<'a> Checks<'a> {
    fn new(net: &'a Net, phase: &'static str) -> Checks<'a> {
        Checks { net, phase, wrong: Vec::new() }
    }

    fn expect(&mut self, who: &str, from: Peer, proto: &str, host: &str, port: &str, reaches: bool) {
        let got = self.net.reach(from, proto, host, port);
        if got != reaches {
            let verb = if reaches { "does not reach" } else { "still reaches" };
            self.wrong.push(format!("{who} {verb} {host}:{port} over {proto}"));
        }
    }

    fn done(self) {
        assert!(self.wrong.is_empty(), "{}:\n  {}", self.phase, self.wrong.join("\n  "));
    }
}

/// The container command of the probe pods: serve once netprobe is copied in.
const SERVE: &[&str] =
    &["/bin/sh", "-c", "while [ ! -x /tmp/netprobe ]; do sleep 0.05; done; exec /tmp/netprobe serve 7000"];

/// Copies netprobe into the container's /tmp (through its root, from the host).
fn install_netprobe(c: &CriContainer) {
    let root = PathBuf::from(format!("/proc/{}/root/tmp", c.pid));
    let tmp = root.join(".netprobe");
    std::fs::copy(netprobe(), &tmp).unwrap_or_else(|e| panic!("copying netprobe into {}: {e}", root.display()));
    std::fs::rename(&tmp, root.join("netprobe")).expect("rename netprobe");
}

fn wait_serving(net: &Net, from: Peer, host: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !net.reach(from, "tcp", host, PORT) {
        assert!(Instant::now() < deadline, "{host}:{PORT} never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn rules(list: &[&str]) -> Vec<AllowRule> {
    list.iter().map(|s| AllowRule::parse(s).unwrap()).collect()
}

#[test]
fn a_quarantined_pod_is_cut_off_until_released_and_pruned_when_gone() {
    if !support::privileged() {
        return;
    }
    support::containerd(); // the shared instance holds the test images
    kubelet::install_cni_stub(&PrivateContainerd::plugin_dir_for(RUNTIME), STUB_ADDRESS);
    let ctrd = PrivateContainerd::start_new(RUNTIME);
    let mut net = Net::new();
    net.serve(PORT);
    net.serve("7001");

    let mut pod_a = Pod::run(&ctrd.socket, PodSpec::new("quarantined-a", "qa").pod_network());
    let a = pod_a.start_container("app", SERVE);
    let mut pod_b = Pod::run(&ctrd.socket, PodSpec::new("neighbour-b", "qb").pod_network());
    let b = pod_b.start_container("app", SERVE);
    let mut pod_h = Pod::run(&ctrd.socket, PodSpec::new("hostnet-h", "qh"));
    let h = pod_h.start_container("app", &["/bin/sleep", "3600"]);
    for c in [&a, &b, &h] {
        install_netprobe(c);
    }
    net.join(a.pid, "dwq-a", "198.18.1", Some("fd00:d57:1"));
    net.join(b.pid, "dwq-b", "198.18.2", None);
    net.servers.push(Command::new(netprobe()).args(["serve", "7002"]).stdout(Stdio::null()).spawn().unwrap());
    wait_serving(&net, Peer::Listener, "198.18.1.2");
    wait_serving(&net, Peer::Listener, "198.18.2.2");
    wait_serving(&net, Peer::Host, "198.18.3.2");
    // IPv6 answers once neighbour discovery settles.
    wait_serving(&net, Peer::Listener, "fd00:d57:1::2");

    let (pa, pb, ph) = (Peer::Pod(&a), Peer::Pod(&b), Peer::Pod(&h));
    let everything = |phase| {
        let mut c = Checks::new(&net, phase);
        for proto in ["tcp", "udp"] {
            c.expect("A", pa, proto, "198.18.1.1", PORT, true);
            c.expect("the listener", Peer::Listener, proto, "198.18.1.2", PORT, true);
            c.expect("B", pb, proto, "198.18.2.1", PORT, true);
            c.expect("the listener", Peer::Listener, proto, "198.18.2.2", PORT, true);
            c.expect("the host", Peer::Host, proto, "198.18.3.2", PORT, true);
            c.expect("H", ph, proto, "127.0.0.1", "7002", true);
        }
        c.expect("A", pa, "tcp", "fd00:d57:1::1", PORT, true);
        c.expect("the listener", Peer::Listener, "tcp", "fd00:d57:1::2", PORT, true);
        c
    };
    everything("before any quarantine").done();

    let pins = PinDir::new("quarantine");
    let t_open = Instant::now();
    let q = Quarantine::open(&pins.0, &[]).expect("open");
    let opened = t_open.elapsed();

    // A streams datagrams to the listener; the first send the kernel refuses
    // marks the cut-off.
    let a2 = a.clone();
    let stream = std::thread::spawn(move || a2.exec_sync(&["/tmp/netprobe", "stream", "198.18.1.1", "7001"]));
    std::thread::sleep(Duration::from_millis(500));
    let t0 = monotonic_ns();
    let applied = q.apply(&a.id, a.pid, "drift: /tmp/x executed").expect("apply");
    let (code, out, err) = stream.join().unwrap().expect("stream exec");
    assert_eq!(code, 0, "the stream was never cut: {out} {err}");
    let cut_ns: u64 = out.split_whitespace().next().and_then(|s| s.parse().ok()).expect("stream output");
    let cut = Duration::from_nanos(cut_ns.saturating_sub(t0));
    eprintln!(
        "quarantine: open {opened:?} (programs loaded, maps pinned), apply {:?}, traffic cut {cut:?} after \
         the apply call started ({})",
        applied.took,
        out.trim()
    );
    assert!(!applied.already);
    assert!(cut <= applied.took + Duration::from_millis(5), "cut {cut:?} after an apply of {:?}", applied.took);
    assert!(out.contains("Operation not permitted"), "{out}");

    let mut c = Checks::new(&net, "A quarantined");
    for proto in ["tcp", "udp"] {
        c.expect("A", pa, proto, "198.18.1.1", PORT, false);
        c.expect("the listener", Peer::Listener, proto, "198.18.1.2", PORT, false);
        c.expect("A", pa, proto, "127.0.0.1", PORT, true); // its own loopback
        c.expect("A", pa, proto, "198.18.1.2", PORT, true); // its own address: loopback device
        c.expect("B", pb, proto, "198.18.2.1", PORT, true);
        c.expect("the listener", Peer::Listener, proto, "198.18.2.2", PORT, true);
        c.expect("the host", Peer::Host, proto, "198.18.3.2", PORT, true);
        c.expect("H", ph, proto, "127.0.0.1", "7002", true);
    }
    c.expect("A", pa, "tcp", "fd00:d57:1::1", PORT, false);
    c.expect("the listener", Peer::Listener, "tcp", "fd00:d57:1::2", PORT, false);
    c.done();

    let again = q.apply(&a.id, a.pid, "a second finding").expect("second apply");
    assert!(again.already, "{again:?}");
    assert_eq!(again.entry.reason, "drift: /tmp/x executed", "the first reason stays");
    let listed = q.list();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let e = &listed[0];
    assert_eq!(
        (e.container_id.as_str(), e.reason.as_str(), e.host_network),
        (a.id.as_str(), "drift: /tmp/x executed", false)
    );
    assert!(e.cgroup_path.ends_with(&a.id) && e.cgroup_path.is_dir(), "{e:?}");
    assert!(e.ingress_dropped > 0 && e.egress_dropped > 0, "{e:?}");
    let (din, dout) = q.dropped();
    assert!(din >= e.ingress_dropped && dout >= e.egress_dropped, "({din}, {dout}) vs {e:?}");
    assert!(pins.0.join(&a.id).join("ingress").exists() && pins.0.join(&a.id).join("egress").exists());

    // Not the container's cgroup: refused, naming why.
    let e = q.apply(&b.id, a.pid, "x").unwrap_err();
    assert_eq!(e.kind(), "not_container", "{e}");
    assert!(e.to_string().contains(&a.id), "{e}");
    let e = q.apply(&a.id, std::process::id(), "x").unwrap_err();
    assert_eq!(e.kind(), "not_container", "{e}");
    let e = q.apply(&a.id, u32::MAX - 1, "x").unwrap_err();
    assert_eq!(e.kind(), "no_process", "{e}");

    // An agent restart with an allow list: A stays cut off, listed, and
    // reaches exactly the named peer:port.
    let since = q.list()[0].since;
    drop(q);
    let q = Quarantine::open(&pins.0, &rules(&["198.18.1.1/32:7000", "[fd00:d57:1::1]:7000"])).expect("reopen");
    let listed = q.list();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!((listed[0].container_id.as_str(), listed[0].since), (a.id.as_str(), since));
    let mut c = Checks::new(&net, "A quarantined after a restart, 198.18.1.1:7000 allowed");
    for proto in ["tcp", "udp"] {
        c.expect("A", pa, proto, "198.18.1.1", PORT, true);
        c.expect("A", pa, proto, "198.18.1.1", "7001", false);
        // The port is the remote side's: the listener's own port 7000 is not
        // where it connects from.
        c.expect("the listener", Peer::Listener, proto, "198.18.1.2", PORT, false);
        c.expect("B", pb, proto, "198.18.2.1", PORT, true);
    }
    c.expect("A", pa, "tcp", "fd00:d57:1::1", PORT, true);
    c.expect("A", pa, "tcp", "fd00:d57:1::1", "7001", false);
    c.done();

    // The allow list follows the config: gone again at the next open.
    drop(q);
    let q = Quarantine::open(&pins.0, &[]).expect("reopen without allow");
    let mut c = Checks::new(&net, "A quarantined, allow list emptied");
    c.expect("A", pa, "tcp", "198.18.1.1", PORT, false);
    c.done();

    assert!(q.release(&a.id).expect("release"));
    assert!(!q.release(&a.id).expect("second release"), "nothing left to release");
    assert!(q.list().is_empty());
    assert!(!pins.0.join(&a.id).exists(), "pins left behind");
    everything("A released").done();

    // A container `live` no longer knows: released by prune.
    q.apply(&b.id, b.pid, "drift").expect("apply B");
    let mut c = Checks::new(&net, "B quarantined");
    c.expect("B", pb, "tcp", "198.18.2.1", PORT, false);
    c.done();
    assert_eq!(q.prune(&|id| id != b.id), vec![b.id.clone()]);
    let mut c = Checks::new(&net, "B pruned");
    c.expect("B", pb, "tcp", "198.18.2.1", PORT, true);
    c.done();

    // A hostNetwork container: the node's loopback is cut too.
    let applied = q.apply(&h.id, h.pid, "drift").expect("apply H");
    assert!(applied.entry.host_network, "{applied:?}");
    let mut c = Checks::new(&net, "H (hostNetwork) quarantined");
    c.expect("H", ph, "tcp", "127.0.0.1", "7002", false);
    c.expect("H", ph, "udp", "127.0.0.1", "7002", false);
    c.expect("the host", Peer::Host, "tcp", "198.18.3.2", PORT, true);
    c.done();
    assert!(q.release(&h.id).unwrap());

    // The steady state: programs loaded, each apply only attaches and pins.
    let mut took: Vec<Duration> = (0..20)
        .map(|_| {
            let t = q.apply(&b.id, b.pid, "timing").expect("apply B").took;
            assert!(q.release(&b.id).unwrap());
            t
        })
        .collect();
    took.sort();
    eprintln!("quarantine: apply over 20 runs: min {:?}, median {:?}, max {:?}", took[0], took[10], took[19]);

    // A deleted pod: its cgroup goes, prune releases it even though `live`
    // still says yes.
    q.apply(&a.id, a.pid, "drift").expect("apply A again");
    let cgroup = q.list()[0].cgroup_path.clone();
    let errs = pod_a.teardown();
    assert!(errs.is_empty(), "{errs:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while cgroup.exists() {
        assert!(Instant::now() < deadline, "{} still there", cgroup.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(q.prune(&|_| true).len(), 1);
    assert!(q.list().is_empty());
    assert!(!pins.0.join(&a.id).exists(), "pins of the deleted pod left behind");

    drop((pod_b, pod_h));
}

/// A stand-in container for the capability measurement: a process in a
/// cgroup named like a containerd container (`/<name>/<64 hex>`).
struct FakeContainer {
    dir: PathBuf,
    child: Child,
}

impl FakeContainer {
    fn start() -> FakeContainer {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = mountinfo
            .lines()
            .find_map(|l| {
                let (pre, post) = l.split_once(" - ")?;
                (post.starts_with("cgroup2 ")).then(|| pre.split_whitespace().nth(4).map(PathBuf::from))?
            })
            .expect("a cgroup2 mount");
        let id: String = format!("{:016x}", std::process::id()).repeat(4);
        let dir = mount.join(format!("driftwatch-qtest-{}", std::process::id())).join(&id);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let child = Command::new("sleep").arg("120").spawn().unwrap();
        std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
        FakeContainer { dir, child }
    }
}

impl Drop for FakeContainer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir(&self.dir);
        let _ = self.dir.parent().map(std::fs::remove_dir);
    }
}

/// The child half of the capability measurement (it runs only when the
/// parent below sets DWQ_CAPS_CHILD): the kernel steps themselves (load the
/// programs, attach them to a cgroup), then the manager's own check; one
/// line per step on stdout.
#[test]
fn caps_child() {
    let Ok(spec) = std::env::var("DWQ_CAPS_CHILD") else { return };
    let mut it = spec.split(' ');
    let (pins, dir) = (PathBuf::from(it.next().unwrap()), PathBuf::from(it.next().unwrap()));
    std::fs::create_dir_all(&pins).unwrap();
    println!();
    let step = |name: &str, r: Result<(), String>| match r {
        Ok(()) => println!("{name}: ok"),
        Err(e) => println!("{name}: error {e}"),
    };
    match QuarantineBpf::load(&pins) {
        Err(e) => step("load", Err(e.to_string())),
        Ok(mut bpf) => {
            step("load", Ok(()));
            let cgroup = std::fs::File::open(&dir).unwrap();
            let links = pins.join("links");
            std::fs::create_dir_all(&links).unwrap();
            step(
                "attach",
                bpf.attach(&cgroup, &dir.display().to_string(), Netns::Pod, &links).map_err(|e| e.to_string()),
            );
            remove_pins(&links);
        }
    }
    step("open", Quarantine::open(&pins, &[]).map(drop).map_err(|e| format!("{}: {e}", e.kind())));
}

/// What the quarantine needs on this kernel, measured: this binary's
/// `caps_child` under `setpriv` with only the chart's capabilities (BPF,
/// PERFMON, SYS_PTRACE), with NET_ADMIN added, and with SYS_ADMIN instead.
#[test]
fn loading_cgroup_skb_needs_cap_net_admin() {
    if !support::privileged() {
        return;
    }
    let fake = FakeContainer::start();
    let pins = PinDir::new("caps");
    let run_with = |caps: &str| -> String {
        remove_pins(&pins.0);
        let out = Command::new("setpriv")
            .arg(format!("--bounding-set=-all,{caps}"))
            .arg(format!("--inh-caps=-all,{caps}"))
            .arg("--")
            .arg(std::env::current_exe().unwrap())
            .args(["caps_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("DWQ_CAPS_CHILD", format!("{} {}", pins.0.display(), fake.dir.display()))
            .output()
            .expect("setpriv");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let steps: Vec<&str> =
            text.lines().filter(|l| ["load:", "attach:", "open:"].iter().any(|p| l.starts_with(p))).collect();
        eprintln!("with {caps}:\n  {}", steps.join("\n  "));
        steps.join("\n")
    };
    let chart = run_with("+bpf,+perfmon,+sys_ptrace");
    assert!(chart.contains("load: ok"), "CAP_BPF no longer loads cgroup_skb programs:\n{chart}");
    assert!(
        chart.contains("attach: error") && chart.contains("Operation not permitted") && chart.contains("CAP_NET_ADMIN"),
        "the chart's capabilities attach cgroup_skb programs now:\n{chart}"
    );
    assert!(chart.contains("open: error not_privileged"), "open does not say what is missing:\n{chart}");
    for caps in ["+bpf,+perfmon,+sys_ptrace,+net_admin", "+bpf,+perfmon,+sys_ptrace,+sys_admin"] {
        let got = run_with(caps);
        assert_eq!(got, "load: ok\nattach: ok\nopen: ok", "with {caps}");
    }
}
