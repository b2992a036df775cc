//! Privileged test environment: a private containerd plus a tiny OCI test image.
//!
//! Integration tests include this with `mod support;` and start with
//! `if !support::privileged() { return; }`.
//!
//! * `containerd()` starts (once per machine, reused across test processes) a private
//!   containerd whose config, root, state and socket live under
//!   `/var/lib/driftwatch-test` and `/run/driftwatch-test`; it never touches the system
//!   containerd's paths (except the shim sockets, which containerd 1.6 always puts in
//!   `/run/containerd/s/<hash of our address>`, and ctr's fifos in `/run/containerd/fifo`).
//! * The test images `localhost/driftwatch-test:1` (busybox + memexec + hello + fake
//!   package managers, Cmd /bin/sh) and `localhost/driftwatch-pause:1` (Entrypoint
//!   /pause, the CRI sandbox image) are built by `tests/image/build.sh` and imported into
//!   namespace `k8s.io` when missing or out of date.
//! * Everything is driven through `ctr`; std only.
#![allow(dead_code)]

pub mod agent;
pub mod alertmanager;
pub mod containerd_config;
pub mod cri;
pub mod falcosidekick;
pub mod kubeapi;
pub mod kubeapi_rw;
pub mod kubelet;
pub mod layers;
pub mod otlp;
pub mod prometheus;
pub mod tls;

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub const ENV_VAR: &str = "DRIFTWATCH_PRIVILEGED_TESTS";
pub const TEST_IMAGE: &str = "localhost/driftwatch-test:1";
pub const PAUSE_IMAGE: &str = "localhost/driftwatch-pause:1";
pub const NAMESPACE: &str = "k8s.io";
pub const ROOT_DIR: &str = "/var/lib/driftwatch-test";
pub const RUN_DIR: &str = "/run/driftwatch-test";
pub const CONFIG_PATH: &str = "/var/lib/driftwatch-test/config.toml";
pub const LOG_PATH: &str = "/var/lib/driftwatch-test/containerd.log";
pub const SOCKET_PATH: &str = "/run/driftwatch-test/containerd.sock";
const LOCK_PATH: &str = "/run/driftwatch-test/setup.lock";
const IMAGE_STAMP: &str = "/var/lib/driftwatch-test/image.stamp";
const CONTAINER_LOG_DIR: &str = "/var/lib/driftwatch-test/logs";
const TEST_LABEL: &str = "driftwatch-test=1";
/// runc state root the containerd 1.6 runc v2 shim uses (per namespace) for containers
/// created without runtime options, as `ctr run` creates them.
const RUNC_ROOT: &str = "/run/containerd/runc";

/// Timeout passed to `ctr --timeout` for quick control commands.
const CTR_TIMEOUT: &str = "60s";
/// Timeout for `ctr task exec` (covers the executed process's whole run time).
const EXEC_TIMEOUT: &str = "300s";

/// True when DRIFTWATCH_PRIVILEGED_TESTS=1. When unset (or "0"/empty), prints a one-line
/// "skipped: ..." to stderr and returns false. When set but we are not root, panics:
/// CI must never skip silently.
pub fn privileged() -> bool {
    let val = std::env::var(ENV_VAR).unwrap_or_default();
    match val.as_str() {
        "" | "0" => {
            eprintln!("skipped: privileged container test (set {ENV_VAR}=1 and run as root to enable)");
            false
        }
        "1" => {
            let euid = effective_uid();
            if euid != Some(0) {
                panic!(
                    "{ENV_VAR}=1 but this test process is not root (euid {euid:?}); \
                     privileged container tests need root (run under sudo, or unset {ENV_VAR} to skip)"
                );
            }
            true
        }
        other => panic!("{ENV_VAR}={other:?}: expected \"1\" to run or unset/\"0\" to skip"),
    }
}

fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// The private containerd instance.
#[derive(Debug, Clone)]
pub struct Containerd {
    /// containerd's gRPC socket (`ctr --address`).
    pub address: PathBuf,
    /// Always "k8s.io" (so the CRI plugin sees the same images/containers).
    pub namespace: &'static str,
}

/// What to run in a new container.
#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    /// The container's argv (replaces the image's Cmd; the image has no Entrypoint).
    /// Empty means the image default, `/bin/sh`, which exits at once without stdin.
    pub args: Vec<String>,
    /// tmpfs mount destinations (mounted rw,nosuid,nodev,mode=1777, exec allowed).
    pub tmpfs: Vec<String>,
    /// Extra environment, "KEY=VALUE".
    pub env: Vec<String>,
}

impl RunSpec {
    pub fn new(args: &[&str]) -> RunSpec {
        RunSpec { args: args.iter().map(|s| s.to_string()).collect(), ..RunSpec::default() }
    }
    /// `/bin/sleep 300`: a container that just stays up for `exec`.
    pub fn sleeper() -> RunSpec {
        RunSpec::new(&["/bin/sleep", "300"])
    }
    pub fn tmpfs(mut self, dest: &str) -> RunSpec {
        self.tmpfs.push(dest.to_string());
        self
    }
    pub fn env(mut self, kv: &str) -> RunSpec {
        self.env.push(kv.to_string());
        self
    }
}

/// A running container; dropping it kills and deletes the task, container and snapshot.
#[derive(Debug)]
pub struct Container {
    /// 64 lowercase hex chars, random, like a kubelet/CRI container id.
    pub id: String,
    /// Host pid of the container's init process.
    pub pid: u32,
    ctrd: Containerd,
}

static CONTAINERD: OnceLock<Containerd> = OnceLock::new();
static EXEC_SEQ: AtomicU64 = AtomicU64::new(0);

/// Starts (or reuses) the private containerd and makes sure the test images are
/// imported. Thread-safe; cross-process safe through a lock file.
pub fn containerd() -> &'static Containerd {
    CONTAINERD.get_or_init(|| {
        let t0 = Instant::now();
        for d in [ROOT_DIR, RUN_DIR, CONTAINER_LOG_DIR] {
            fs::create_dir_all(d).unwrap_or_else(|e| panic!("creating {d}: {e}"));
        }
        let lock = lock_setup();
        ensure_daemon();
        let ctrd = Containerd { address: PathBuf::from(SOCKET_PATH), namespace: NAMESPACE };
        ensure_images(&ctrd);
        drop(lock);
        if std::env::var_os("DRIFTWATCH_TEST_VERBOSE").is_some() {
            eprintln!("support: containerd ready in {:?}", t0.elapsed());
        }
        ctrd
    })
}

/// Exclusive cross-process lock for daemon start / image import.
fn lock_setup() -> File {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_PATH)
        .unwrap_or_else(|e| panic!("opening {LOCK_PATH}: {e}"));
    f.lock().unwrap_or_else(|e| panic!("locking {LOCK_PATH}: {e}"));
    f
}

fn config_toml() -> String {
    containerd_config::config_toml(
        "tests/support/mod.rs: private containerd for driftwatch tests",
        &Path::new(ROOT_DIR).join("containerd"),
        &Path::new(RUN_DIR).join("containerd"),
        Path::new(SOCKET_PATH),
        Path::new(ROOT_DIR),
    )
}

/// Base `ctr` command against our socket (no namespace).
fn ctr_base(address: &Path, timeout: &str) -> Command {
    let mut c = Command::new("ctr");
    c.arg("--address").arg(address).arg("--timeout").arg(timeout);
    c.env_remove("CONTAINERD_ADDRESS").env_remove("CONTAINERD_NAMESPACE");
    c.stdin(Stdio::null());
    c
}

fn run_output(mut cmd: Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("failed to run {cmd:?}: {e} (is containerd installed? run scripts/install-deps.sh)"))
}

fn describe(cmd: &str, out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    // ctr prefixes its own errors with "ctr: " (runc exec failures exit 255); only
    // then is the daemon log relevant.
    let log = if stderr.contains("ctr: ") || matches!(out.status.code(), None | Some(255)) {
        format!("--- containerd log: {LOG_PATH} (tail) ---\n{}", log_tail(20))
    } else {
        format!("(containerd log: {LOG_PATH})")
    };
    format!(
        "`{cmd}` failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}\n{log}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim_end(),
        stderr.trim_end(),
    )
}

fn log_tail(n: usize) -> String {
    match fs::read(LOG_PATH) {
        Ok(b) => {
            let s = String::from_utf8_lossy(&b);
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {LOG_PATH}: {e})"),
    }
}

fn daemon_answers() -> bool {
    if !Path::new(SOCKET_PATH).exists() {
        return false;
    }
    let mut c = ctr_base(Path::new(SOCKET_PATH), "5s");
    c.arg("--connect-timeout").arg("3s").arg("version");
    c.stdout(Stdio::null()).stderr(Stdio::null());
    matches!(c.status(), Ok(s) if s.success())
}

/// pids of processes whose cmdline runs containerd with our config.
fn our_daemon_pids() -> Vec<u32> {
    pids_matching(|argv| {
        argv.first().is_some_and(|a| a.ends_with("containerd"))
            && argv.windows(2).any(|w| w[0] == "--config" && w[1] == CONFIG_PATH)
    })
}

/// pids of shims started by our containerd (they carry `-address <our socket>`).
fn our_shim_pids() -> Vec<u32> {
    pids_matching(|argv| {
        argv.first().is_some_and(|a| a.contains("containerd-shim"))
            && argv.windows(2).any(|w| w[0] == "-address" && w[1] == SOCKET_PATH)
    })
}

fn pids_matching(pred: impl Fn(&[String]) -> bool) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return pids;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let argv: Vec<String> =
            raw.split(|b| *b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect();
        if pred(&argv) {
            pids.push(pid);
        }
    }
    pids
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).stderr(Stdio::null()).status();
}

fn wait_gone(pids: &[u32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        // A zombie child of ours counts as gone.
        let alive = pids.iter().any(|p| {
            fs::read_to_string(format!("/proc/{p}/stat"))
                .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
                .unwrap_or(false)
        });
        if !alive {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(50));
    }
}

fn kill_daemon() {
    let pids = our_daemon_pids();
    for &p in &pids {
        signal(p, "TERM");
    }
    if !wait_gone(&pids, Duration::from_secs(10)) {
        for &p in &pids {
            signal(p, "KILL");
        }
        wait_gone(&pids, Duration::from_secs(5));
    }
}

/// Must be called with the setup lock held.
fn ensure_daemon() {
    let want = config_toml();
    let have = fs::read_to_string(CONFIG_PATH).unwrap_or_default();
    let config_changed = have != want;
    if config_changed {
        fs::write(CONFIG_PATH, &want).unwrap_or_else(|e| panic!("writing {CONFIG_PATH}: {e}"));
    }
    if daemon_answers() {
        if !config_changed {
            return;
        }
        // Running with an outdated config: restart it (containers keep running in
        // their shims and are re-adopted).
        kill_daemon();
    } else {
        // A wedged instance of ours that does not answer: replace it.
        kill_daemon();
    }
    for d in ["cni/bin", "cni/conf", "opt"] {
        let _ = fs::create_dir_all(Path::new(ROOT_DIR).join(d));
    }
    let _ = fs::remove_file(SOCKET_PATH);
    let _ = fs::remove_file(format!("{SOCKET_PATH}.ttrpc"));

    let mut child = spawn_containerd(
        Path::new(CONFIG_PATH),
        Path::new(LOG_PATH),
        &format!("driftwatch tests: starting containerd --config {CONFIG_PATH} (by pid {})", std::process::id()),
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if daemon_answers() {
            // Not waited for: if containerd ever exits while we run it is a zombie until
            // this process exits, which is harmless.
            drop(child);
            return;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("private containerd exited during startup ({st}); log {LOG_PATH}:\n{}", log_tail(30));
        }
        if Instant::now() >= deadline {
            panic!("private containerd did not answer on {SOCKET_PATH} within 30s; log {LOG_PATH}:\n{}", log_tail(30));
        }
        sleep(Duration::from_millis(50));
    }
}

/// Starts `containerd --config <config>` in its own session, its output appended to
/// `log` after a `=== <banner> ===` line. Does not wait for it to answer.
fn spawn_containerd(config: &Path, log: &Path, banner: &str) -> Child {
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
    let _ = writeln!(out, "=== {banner} ===");
    let err = out.try_clone().expect("dup log fd");
    let path = std::env::var("PATH").unwrap_or_default();
    // `setsid` (util-linux) puts containerd in its own session so it outlives this
    // test process and its terminal/process group.
    Command::new("setsid")
        .arg("containerd")
        .arg("--config")
        .arg(config)
        .env("PATH", format!("{path}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"))
        .env_remove("CONTAINERD_ADDRESS")
        .env_remove("CONTAINERD_NAMESPACE")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap_or_else(|e| panic!("spawning `setsid containerd`: {e} (run scripts/install-deps.sh)"))
}

/// A cheap fingerprint of everything the image is built from.
fn image_fingerprint(image_dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut names: Vec<PathBuf> =
        fs::read_dir(image_dir).map(|rd| rd.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    names.sort();
    for p in names {
        p.hash(&mut h);
        fs::read(&p).unwrap_or_default().hash(&mut h);
    }
    for bin in ["/bin/busybox", "/usr/bin/gcc"] {
        if let Ok(m) = fs::metadata(bin) {
            use std::os::unix::fs::MetadataExt;
            (bin, m.len(), m.mtime(), m.ino()).hash(&mut h);
        }
    }
    format!("{:016x}", h.finish())
}

/// Must be called with the setup lock held.
fn ensure_images(ctrd: &Containerd) {
    let image_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/image");
    let fp = image_fingerprint(&image_dir);
    let listed = ctrd.ctr_ok(&["images", "ls"]);
    let imported = |refs: &str| {
        // stamp: "<fingerprint>\n<ref> <digest>\n<ref> <digest>\n"
        refs.lines().skip(1).all(|l| {
            let mut it = l.split_whitespace();
            match (it.next(), it.next()) {
                (Some(r), Some(d)) => {
                    listed.lines().any(|ll| ll.split_whitespace().next() == Some(r) && ll.contains(d))
                }
                _ => false,
            }
        })
    };
    let stamp_ok = fs::read_to_string(IMAGE_STAMP)
        .is_ok_and(|stamp| stamp.lines().next() == Some(fp.as_str()) && stamp.lines().count() >= 3 && imported(&stamp));
    if stamp_ok {
        return;
    }

    let tar = Path::new(RUN_DIR).join("image.tar");
    let out = run_output({
        let mut c = Command::new("bash");
        c.arg(image_dir.join("build.sh")).arg(&tar).stdin(Stdio::null());
        c
    });
    if !out.status.success() {
        panic!(
            "tests/image/build.sh failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let refs = String::from_utf8_lossy(&out.stdout).into_owned();
    let stamp = format!("{fp}\n{refs}");
    if !imported(&stamp) {
        ctrd.ctr_ok(&["images", "import", tar.to_str().unwrap()]);
        let listed = ctrd.ctr_ok(&["images", "ls"]);
        for l in refs.lines() {
            let mut it = l.split_whitespace();
            if let (Some(r), Some(d)) = (it.next(), it.next()) {
                assert!(
                    listed.lines().any(|ll| ll.split_whitespace().next() == Some(r) && ll.contains(d)),
                    "image {r}@{d} not listed after import:\n{listed}"
                );
            }
        }
    }
    let _ = fs::remove_file(&tar);
    let _ = fs::write(IMAGE_STAMP, stamp);
}

fn random_hex_id() -> String {
    let mut buf = [0u8; 32];
    File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).expect("reading /dev/urandom");
    let mut s = String::with_capacity(64);
    for b in buf {
        let _ = write!(s, "{b:02x}");
    }
    s
}

impl Containerd {
    /// `ctr --address <socket> --namespace k8s.io <args>` (not run yet).
    pub fn ctr(&self, args: &[&str]) -> Command {
        let mut c = ctr_base(&self.address, CTR_TIMEOUT);
        c.arg("--namespace").arg(self.namespace).args(args);
        c
    }

    /// Runs ctr with `args`, panics with ctr's stderr and the log path on failure,
    /// returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = run_output(self.ctr(args));
        if !out.status.success() {
            panic!("{}", describe(&format!("ctr -n {} {}", self.namespace, args.join(" ")), &out));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn log_path(&self) -> &'static str {
        LOG_PATH
    }

    /// `ctr -n k8s.io run -d ...`; returns once the task is RUNNING.
    pub fn run(&self, spec: RunSpec) -> Container {
        let id = random_hex_id();
        let mut args: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--log-uri".into(),
            format!("file://{CONTAINER_LOG_DIR}/{id}.log"),
            "--label".into(),
            TEST_LABEL.into(),
        ];
        push_spec_flags(&mut args, &spec);
        args.push(TEST_IMAGE.into());
        args.push(id.clone());
        args.extend(spec.args.iter().cloned());
        let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();

        let out = run_output(self.ctr(&argv));
        if !out.status.success() {
            let msg = describe(&format!("ctr -n {} {}", self.namespace, argv.join(" ")), &out);
            cleanup(self, &id);
            panic!("{msg}");
        }
        // Hand ownership to a Container right away so a panic below still cleans up.
        let mut c = Container { id, pid: 0, ctrd: self.clone() };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let listing = self.ctr_ok(&["tasks", "ls"]);
            let row = listing.lines().find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 3 && f[0] == c.id).then(|| (f[1].to_string(), f[2].to_string()))
            });
            match row {
                Some((pid, status)) if status == "RUNNING" => {
                    c.pid = pid.parse().unwrap_or_else(|_| panic!("bad pid {pid:?} in:\n{listing}"));
                    // RUNNING can be reported while runc's init has not yet
                    // exec'd the entrypoint (its comm still `runc:[2:INIT]`):
                    // a test reading the process would see runc, not the image.
                    wait_for_exec(c.pid, deadline);
                    return c;
                }
                Some((_, status)) if status == "STOPPED" => panic!(
                    "container {} ({:?}) stopped right after start; its output: {}\ncontainerd log: {LOG_PATH}",
                    c.id,
                    spec.args,
                    fs::read_to_string(c.log_file()).unwrap_or_default()
                ),
                _ => {}
            }
            if Instant::now() >= deadline {
                panic!(
                    "container {} not RUNNING after 30s; `ctr tasks ls`:\n{listing}\ncontainerd log: {LOG_PATH}",
                    c.id
                );
            }
            sleep(Duration::from_millis(20));
        }
    }
}

/// Waits until process `pid` is no longer runc's init (it exec'd the
/// container's entrypoint, or exited), at most until `deadline`.
fn wait_for_exec(pid: u32, deadline: Instant) {
    while Instant::now() < deadline {
        match fs::read_to_string(format!("/proc/{pid}/comm")) {
            Ok(comm) if comm.starts_with("runc:") => sleep(Duration::from_millis(5)),
            _ => return,
        }
    }
}

impl Containerd {
    /// Runs a short-lived container in the foreground (`ctr run --rm`), waits for it to
    /// exit and returns its random 64-hex id and its output (exit status = the
    /// container's). The container is removed afterwards.
    pub fn run_once(&self, spec: RunSpec) -> (String, Output) {
        let id = random_hex_id();
        let mut args: Vec<String> = vec!["run".into(), "--rm".into(), "--label".into(), TEST_LABEL.into()];
        push_spec_flags(&mut args, &spec);
        args.push(TEST_IMAGE.into());
        args.push(id.clone());
        args.extend(spec.args.iter().cloned());
        let mut c = ctr_base(&self.address, EXEC_TIMEOUT);
        c.arg("--namespace").arg(self.namespace).args(&args);
        let out = run_output(c);
        cleanup(self, &id);
        (id, out)
    }
}

fn push_spec_flags(args: &mut Vec<String>, spec: &RunSpec) {
    for dst in &spec.tmpfs {
        args.push("--mount".into());
        args.push(format!("type=tmpfs,src=tmpfs,destination={dst},options=rw:nosuid:nodev:mode=1777"));
    }
    for e in &spec.env {
        args.push("--env".into());
        args.push(e.clone());
    }
}

impl Container {
    /// File receiving the container init's stdout/stderr.
    pub fn log_file(&self) -> PathBuf {
        Path::new(CONTAINER_LOG_DIR).join(format!("{}.log", self.id))
    }

    /// Runs `args` inside the container and waits for it to exit. Returns its stdout,
    /// stderr and exit status (a runc-level failure, e.g. a missing binary, gives
    /// status 255 with runc's message on stderr).
    ///
    /// This calls `runc exec` on the container directly (same runc binary, state root
    /// and process spec the containerd shim uses, so the process gets the container's
    /// namespaces, cgroup, env, capabilities and no_new_privs exactly as with
    /// `ctr task exec`). It does not go through `ctr task exec` because ctr 1.6 loses a
    /// short-lived process's stdout now and then (~0.3% of execs under parallel
    /// load); use [`Container::exec_ctr`] when the containerd/shim path itself matters.
    pub fn exec(&self, args: &[&str]) -> Output {
        let root = format!("{RUNC_ROOT}/{}", self.ctrd.namespace);
        let mut c = Command::new("runc");
        c.arg("--root").arg(&root).arg("exec").arg(&self.id).args(args).stdin(Stdio::null());
        run_output(c)
    }

    /// `ctr task exec --exec-id <unique> <id> args...` through containerd and the shim
    /// (the kubectl-exec path); waits for exit. ctr's exit status is the process's
    /// (or 1 with "ctr: ..." on stderr when the exec itself failed). Caveat: ctr 1.6
    /// occasionally drops the output of short-lived processes; prefer `exec` when the
    /// test asserts on output.
    pub fn exec_ctr(&self, args: &[&str]) -> Output {
        let exec_id = format!("exec-{}-{}", std::process::id(), EXEC_SEQ.fetch_add(1, Ordering::Relaxed));
        let mut c = ctr_base(&self.ctrd.address, EXEC_TIMEOUT);
        c.arg("--namespace")
            .arg(self.ctrd.namespace)
            .args(["tasks", "exec", "--exec-id", &exec_id, &self.id])
            .args(args);
        run_output(c)
    }

    /// Like `exec` but panics (with ctr's stderr and the containerd log path) unless the
    /// process exits 0; returns its stdout.
    pub fn exec_ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        if !out.status.success() {
            panic!("{}", describe(&format!("exec in {}: {}", self.id, args.join(" ")), &out));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The container's cgroup path from /proc/<pid>/cgroup: the memory controller's line
    /// (cgroup v1/hybrid), else the unified "0::" line. E.g. "/k8s.io/<id>".
    pub fn cgroup_path(&self) -> String {
        let p = format!("/proc/{}/cgroup", self.pid);
        let text = fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {p}: {e}"));
        let mut unified = None;
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            if ctrls.split(',').any(|c| c == "memory") {
                return path.to_string();
            }
            if ctrls.is_empty() {
                unified = Some(path.to_string());
            }
        }
        unified.unwrap_or_else(|| panic!("no memory or unified cgroup line in {p}:\n{text}"))
    }
}

/// Best-effort removal of task, container and snapshot; never panics.
fn cleanup(ctrd: &Containerd, id: &str) -> bool {
    let quiet = |args: &[&str]| -> bool {
        let mut c = ctrd.ctr(args);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        matches!(c.status(), Ok(s) if s.success())
    };
    let _ = quiet(&["tasks", "kill", "--signal", "SIGKILL", id]);
    // `tasks delete --force` kills and waits for the init process before deleting.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if quiet(&["tasks", "delete", "--force", id]) || !quiet(&["tasks", "ps", id]) {
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        sleep(Duration::from_millis(100));
    }
    // Removes the container and its snapshot (same key as the id).
    let ok = quiet(&["containers", "delete", id]);
    let _ = quiet(&["snapshots", "rm", id]);
    ok
}

impl Drop for Container {
    fn drop(&mut self) {
        let ok = cleanup(&self.ctrd, &self.id);
        if ok && !std::thread::panicking() {
            let _ = fs::remove_file(self.log_file());
        } else if !ok {
            eprintln!("support: warning: could not fully delete container {} (containerd log: {LOG_PATH})", self.id);
        }
    }
}

/// For scripts: deletes every task and container of our private containerd (all
/// namespaces), then stops it and its shims. Never touches the system containerd.
pub fn stop_containerd() {
    let _ = fs::create_dir_all(RUN_DIR);
    let lock = lock_setup();
    if daemon_answers() {
        let nss = {
            let out = run_output({
                let mut c = ctr_base(Path::new(SOCKET_PATH), CTR_TIMEOUT);
                c.args(["namespaces", "ls", "-q"]);
                c
            });
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        for ns in nss.lines().map(str::trim).filter(|s| !s.is_empty()) {
            let ns: &'static str = Box::leak(ns.to_string().into_boxed_str());
            let c = Containerd { address: PathBuf::from(SOCKET_PATH), namespace: ns };
            let list = |what: &str| -> Vec<String> {
                run_output(c.ctr(&[what, "ls", "-q"]))
                    .stdout
                    .split(|b| *b == b'\n')
                    .map(|l| String::from_utf8_lossy(l).trim().to_string())
                    .filter(|l| !l.is_empty())
                    .collect()
            };
            let mut ids = list("containers");
            for t in list("tasks") {
                if !ids.contains(&t) {
                    ids.push(t);
                }
            }
            for id in ids {
                cleanup(&c, &id);
            }
        }
    }
    kill_daemon();
    let shims = our_shim_pids();
    for &p in &shims {
        signal(p, "KILL");
    }
    wait_gone(&shims, Duration::from_secs(5));
    let _ = fs::remove_file(SOCKET_PATH);
    let _ = fs::remove_file(format!("{SOCKET_PATH}.ttrpc"));
    drop(lock);
}

static SENTINEL_SEQ: AtomicU64 = AtomicU64::new(0);

/// Drives a sentinel drift (a shell whose arguments carry a marker unique in
/// this test process) in `c` and waits for its finding, then for no finding to
/// be waiting for metadata. The kernel writes one ordered ring buffer and the
/// pipeline judges in order (the events queue hands drift over before other
/// events, and the sentinel, an image shell, is not drift), so after that
/// every earlier event of the container has been judged and emitted: what is
/// missing was not reported.
/// The marker must be unique per call: a second settle that matched the first
/// sentinel would return before anything new was judged.
pub fn settle(agent: &agent::Agent, c: &Container) {
    // A sentinel is not drift: a full events queue sheds it first (counted in
    // events_dropped_total{kind="exec",drift="false"}), and a kernel ring
    // buffer still full of a storm drops it (kernel_ringbuf_drops_total{kind=
    // "exec"}: seen after an 8,000-exec storm starved the agent of CPU). Then
    // another is sent; any later sentinel proves the same.
    let shed = || {
        agent.metric("driftwatch_events_dropped_total{kind=\"exec\",drift=\"false\"}").unwrap_or(0.0)
            + agent.metric("driftwatch_kernel_ringbuf_drops_total{kind=\"exec\"}").unwrap_or(0.0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut markers = Vec::new();
    'sent: loop {
        let before = shed();
        let marker = format!("sentinel-{}-{}", std::process::id(), SENTINEL_SEQ.fetch_add(1, Ordering::Relaxed));
        c.exec_ok(&["/bin/sh", "-c", &format!(": {marker}")]);
        markers.push(marker);
        loop {
            let seen = agent.findings().iter().any(|f| {
                f["container.id"] == c.id.as_str() && {
                    let args = f["process.command_args"].to_string();
                    markers.iter().any(|m| args.contains(m.as_str()))
                }
            });
            if seen {
                break 'sent;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no sentinel shell finding within 60 s ({} sent). Findings:\n{:#?}\nmetrics:\n{}",
                markers.len(),
                agent.findings_of(&c.id),
                agent.metrics()
            );
            if shed() > before {
                continue 'sent;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    // Findings judged before the sentinel may still be waiting for metadata
    // or an image comparison (in their own tasks): let them out.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while agent.metric("driftwatch_findings_waiting") != Some(0.0) {
        assert!(std::time::Instant::now() < deadline, "findings still waiting:\n{}", agent.metrics());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
