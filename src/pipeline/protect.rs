//! Protect mode, userspace side: decides each container's mode from its CRI
//! metadata (pod annotation `driftwatch.io/mode`, else `policy.modes`) and
//! arms the kernel's map for it. The kernel does the killing; this only says
//! where, and which approvals it can apply there.
//!
//! A container is decided once per mount namespace: at the first exec of it
//! the kernel reports (its entrypoint, which wakes the reader at once), or
//! when the registry's `/proc` scan finds it running (a container that
//! predates the agent); again when the policy is reloaded; and disarmed when
//! the registry says it is gone. Until it is armed nothing is killed
//! (fail-open): the window is logged per container (`armed_after_ms`).

use crate::{
    bpf::protect::ProtectMaps,
    clock::BootClock,
    containers::{Change, Registry},
    enrich::{ContainerRef, cri::Lookup},
    event::ExecEvent,
    locks::lock,
    pipeline::PolicyGate,
    policy::{
        Mode,
        protect::{kernel_approvals, learned_allows},
    },
};
use std::{
    collections::HashSet,
    sync::{Arc, Mutex, atomic::Ordering::Relaxed},
    time::Duration,
};
use tokio_util::sync::CancellationToken;

/// Most namespaces remembered as decided (a bound; beyond it the oldest
/// decisions are forgotten and taken again on their next exec).
const MAX_DECIDED: usize = 65_536;

/// How often the policy in force is compared with the one containers were
/// decided under (a reload swaps it whole).
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// 10 ms steps a running script's process is given to be killed.
const SCRIPT_GRACE_STEPS: u32 = 20;

pub struct Protector {
    maps: ProtectMaps,
    /// The policy in force (swapped whole on reload) and the mode it gives.
    gate: Arc<PolicyGate>,
    registry: Arc<Registry>,
    wait: Duration,
    /// Mount namespace id -> its container id and main process, once
    /// decided (armed or not). Looked up at every exec: FxHash, the kernel's
    /// never-reused ids are not chosen by a container.
    decided: Mutex<rustc_hash::FxHashMap<u64, (String, u32)>>,
    /// The namespace an exec was last found decided in: a storm's execs come
    /// from one container, and skip the lock (ids are never reused in a boot).
    last_decided: std::sync::atomic::AtomicU64,
    /// (approval, container) pairs already warned about.
    warned: Mutex<HashSet<(String, String)>>,
}

impl Protector {
    pub fn new(maps: ProtectMaps, gate: Arc<PolicyGate>, registry: Arc<Registry>, wait: Duration) -> Arc<Self> {
        Arc::new(Self {
            maps,
            gate,
            registry,
            wait,
            decided: Mutex::default(),
            last_decided: Default::default(),
            warned: Mutex::new(HashSet::new()),
        })
    }

    /// Called for every exec event of a container: the first of each mount
    /// namespace decides its mode (off the pipeline: the runtime may be asked).
    pub fn on_exec(self: &Arc<Self>, ev: &ExecEvent, c: &ContainerRef) {
        // The entrypoint's process is the container's main process: never killed.
        let main_tgid = if ev.flags.entrypoint() { ev.proc.tgid } else { 0 };
        self.decide(ev.proc.mntns_id, &c.id, main_tgid, Some(ev.proc.ktime_ns), false);
    }

    /// A container the registry found running (a `/proc` scan): decided
    /// through one of its processes, so a container that predates the agent
    /// is armed before its first drift rather than at it.
    fn on_added(self: &Arc<Self>, id: &str, pid: u32) {
        // Added from a runtime listing before any scan saw a process of it:
        // find one now (once per container), or it would wait for an exec.
        let pid = if pid == 0 { crate::procfs::live_pid_of(id).unwrap_or(0) } else { pid };
        let Some(ns) = (pid != 0).then(|| crate::bpf::mntns_unique_id(&format!("/proc/{pid}/ns/mnt"))).flatten() else {
            return;
        };
        // Only pid 1 of the container's pid namespace is its main process.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let ns_pid = status.lines().find_map(|l| l.strip_prefix("NSpid:")).and_then(|v| v.split_whitespace().last());
        self.decide(ns, id, if ns_pid == Some("1") { pid } else { 0 }, None, false);
    }

    /// Decides the mode of mount namespace `ns` of container `id` once, or
    /// again (`again`: the policy changed; a container no longer in protect
    /// mode is disarmed). `exec_ns`: the kernel time of the exec that
    /// revealed it, for the log.
    fn decide(self: &Arc<Self>, ns: u64, id: &str, main_tgid: u32, exec_ns: Option<u64>, again: bool) {
        if !again {
            if ns != 0 && self.last_decided.load(Relaxed) == ns {
                return;
            }
            let mut d = lock(&self.decided);
            if d.contains_key(&ns) {
                self.last_decided.store(ns, Relaxed);
                return;
            }
            if d.len() >= MAX_DECIDED {
                d.clear();
            }
            d.insert(ns, (id.to_string(), main_tgid));
        }
        let (me, id) = (self.clone(), id.to_string());
        tokio::spawn(async move {
            let short = &id[..id.len().min(12)];
            let meta = match me.registry.resolve(&id, me.wait).await {
                Lookup::Found(m) => m,
                other => {
                    tracing::debug!(container = %short, lookup = ?other, "no runtime metadata: not protected");
                    return;
                }
            };
            // A pod's sandbox (pause) is not one of its containers.
            if meta.container_name.is_empty() && !meta.pod_name.is_empty() {
                return;
            }
            let c = me.gate.container_scope(&meta);
            let scope = c.scope();
            // The same mode the policy gate gives its findings (a bad
            // annotation value is logged there).
            let (mode, source) = me.gate.mode_of(&meta);
            if mode != Mode::Protect {
                if again {
                    me.maps.disarm(ns);
                }
                return;
            }
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let mut k = kernel_approvals(&me.gate.policy(), &scope, now);
            // What learn mode saw of this workload (the key findings are learned under).
            let learned = learned_allows(&me.gate.learned().of(&c.workload_key()));
            let learned_n = learned.len();
            k.allows.extend(learned);
            for name in &k.undecidable {
                let new = {
                    let mut w = lock(&me.warned);
                    if w.len() >= MAX_DECIDED {
                        w.clear(); // bounded: at worst a warning is repeated
                    }
                    w.insert((name.clone(), id.clone()))
                };
                if new {
                    tracing::warn!(
                        approval = %name,
                        container = %short,
                        "approval {name:?} uses keys the kernel cannot check at exec (parent_executable, command_args, \
                         file_path, or an executable glob other than dir/* or dir/**): in protect mode the binaries \
                         it approves are still killed (their findings say approved)"
                    );
                }
            }
            match me.maps.arm(ns, main_tgid, &k) {
                Ok(()) => tracing::info!(
                    container = %short,
                    pod = %meta.pod_name,
                    namespace = %meta.namespace,
                    mode_from = ?source,
                    approvals_in_kernel = k.allows.len() - learned_n + usize::from(k.all),
                    learned_in_kernel = learned_n,
                    armed_after_ms = exec_ns.map(|t| BootClock::since_ns(t) as f64 / 1e6),
                    "protect mode armed: binary drift in this container is killed at exec"
                ),
                Err(e) => {
                    tracing::error!(container = %short, "cannot arm protect mode: {e}; its drift is reported, not stopped")
                }
            }
        });
    }

    /// Whether protect mode killed the `#!` script of `ev`, which userspace
    /// found to be drift: the kernel kills it when its interpreter opens it,
    /// usually long before this verdict; a process still running gets a short
    /// grace to reach that open.
    pub async fn script_killed(&self, ev: &ExecEvent) -> bool {
        let (tgid, t) = (ev.proc.tgid, ev.proc.ktime_ns);
        if !self.maps.is_armed(ev.proc.mntns_id) {
            return false;
        }
        for _ in 0..SCRIPT_GRACE_STEPS {
            if self.maps.take_script_killed(tgid, t) {
                return true;
            }
            if !std::path::Path::new(&format!("/proc/{tgid}")).exists() {
                return self.maps.take_script_killed(tgid, t);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// Arms containers the registry finds running, disarms those it says are
    /// gone, and decides every container again when the policy is reloaded.
    pub fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut changes = self.registry.subscribe();
        // Containers found running before this subscription (the registry's
        // first scan may have published them already).
        for c in self.registry.running() {
            self.on_added(&c.id, c.scanned_pid());
        }
        let mut policy = self.gate.policy();
        let mut tick = tokio::time::interval(RELOAD_CHECK);
        tokio::spawn(async move {
            loop {
                let change = tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => {
                        let now = self.gate.policy();
                        if !Arc::ptr_eq(&now, &policy) {
                            policy = now;
                            let all: Vec<(u64, (String, u32))> = lock(&self.decided).iter().map(|(n, v)| (*n, v.clone())).collect();
                            for (ns, (id, main)) in all {
                                self.decide(ns, &id, main, None, true);
                            }
                        }
                        continue;
                    }
                    c = changes.recv() => c,
                };
                match change {
                    Ok(Change::Gone(c)) => {
                        let gone: Vec<u64> = {
                            let mut d = lock(&self.decided);
                            let ns: Vec<u64> = d.iter().filter(|(_, v)| v.0 == c.id).map(|(n, _)| *n).collect();
                            ns.iter().for_each(|n| {
                                d.remove(n);
                            });
                            ns
                        };
                        // Decided again at its next exec, if it ever has one.
                        let last = &self.last_decided;
                        if gone.contains(&last.load(Relaxed)) {
                            last.store(0, Relaxed);
                        }
                        gone.into_iter().for_each(|n| self.maps.disarm(n));
                    }
                    Ok(Change::Added(c)) => self.on_added(&c.id, c.scanned_pid()),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        });
    }
}
