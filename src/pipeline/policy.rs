//! The policy at the pipeline's exit: a finding an approval matches is
//! counted (and sent as info with `policy.emit_approved`), a finding of a
//! container in learn mode is learned and counted, the rest goes on. The
//! policy in force is swapped whole on reload; findings in flight see either
//! the old one or the new one, never a mix.

use crate::{
    classify::Finding,
    config::Severity,
    containers::Registry,
    enrich::cri::ContainerMeta,
    locks::{read, write},
    metrics::Metrics,
    policy::{
        Mode, ModeSource, Policy, Scope, Subject,
        learned::{Learn, Learned, signature},
    },
};
use std::sync::{Arc, RwLock};

pub struct PolicyGate {
    current: RwLock<Arc<Policy>>,
    learned: Learned,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
}

/// What becomes of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Emit,
    /// Approved or learned: counted, not emitted.
    Hold,
}

impl PolicyGate {
    pub fn new(policy: Policy, learned: Learned, registry: Arc<Registry>, metrics: Arc<Metrics>) -> Self {
        Self { current: RwLock::new(Arc::new(policy)), learned, registry, metrics }
    }

    pub fn policy(&self) -> Arc<Policy> {
        read(&self.current).clone()
    }

    /// Puts `p` in force; returns what changed (for the log).
    pub fn replace(&self, p: Policy) -> String {
        let mut g = write(&self.current);
        let diff = p.diff(&g);
        p.inherit_notes(&g);
        *g = Arc::new(p);
        diff
    }

    pub fn learned(&self) -> &Learned {
        &self.learned
    }

    /// What the registry knows of a container, for container-scope keys:
    /// the API's owner workload when it knows the pod, else the label heuristic.
    pub fn container_scope<'a>(&self, meta: &'a ContainerMeta) -> ContainerScope<'a> {
        let workload = (!meta.pod_name.is_empty()).then(|| {
            self.registry.workload(&meta.namespace, &meta.pod_name).unwrap_or_else(|| {
                let w = crate::enrich::workload::from_pod(&meta.pod_name, &meta.pod_labels);
                (w.kind, w.name)
            })
        });
        ContainerScope { meta, workload, image: crate::policy::image_name(&meta.image) }
    }

    /// The mode of a container the runtime described.
    pub fn mode_of(&self, meta: &ContainerMeta) -> (Mode, ModeSource) {
        let c = self.container_scope(meta);
        self.policy().mode_for(&c.scope(), Some(&meta.pod_annotations))
    }

    /// Judges `f` (metadata and workload already applied). Without
    /// approvals, modes or anything learned this is a few lookups: the
    /// subject and signature are built only when something will read them.
    pub fn judge(&self, f: &mut Finding) -> Gate {
        let meta = self.registry.cached(&f.container_id);
        self.judge_with(f, meta.as_deref())
    }

    /// [`Self::judge`] with the container's metadata as the caller found it
    /// (None: the registry does not have it): a finding's emitter has just
    /// looked it up, and a second lookup was ~350 instructions a finding.
    pub fn judge_with(&self, f: &mut Finding, meta: Option<&ContainerMeta>) -> Gate {
        let policy = self.policy();
        let annotations = meta.map(|m| &m.pod_annotations);
        let mode = match meta {
            Some(m) if !policy.compiled.modes.is_empty() => self.mode_of(m).0,
            // No rules: the annotation or the default decides, nothing to build.
            _ => policy.mode_for(&Scope::default(), annotations).0,
        };
        let by_spec = if policy.compiled.approve_pod_spec { meta.and_then(|m| self.pod_spec(f, m)) } else { None };
        // An exec session (kubectl exec, runc exec, nsenter) is never learned,
        // nor approved by what the container's own processes taught.
        let session = f.process.as_ref().is_some_and(|p| p.origin == crate::event::Origin::ExecSession);
        let learning = mode == Mode::Learn && !session;
        let check_learned = !session && !self.learned.is_empty();
        let mut learned_sig = None;
        let approval = match by_spec {
            Some(name) => Some(name.to_string()),
            None if !policy.compiled.approvals.is_empty() || learning || check_learned => {
                // Network and file records name the process, not its
                // executable: read it from /proc only when an approval asks.
                let (exe, parent) = match &f.process {
                    Some(p) if p.exe_path.is_empty() && policy.needs_executable() => {
                        (crate::procfs::exe_path(p.pid), crate::procfs::exe_path(p.parent_pid))
                    }
                    Some(p) if policy.needs_executable() => (None, crate::procfs::exe_path(p.parent_pid)),
                    _ => (None, None),
                };
                let subject = Subject::of(f, exe.as_deref(), parent.as_deref());
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                match policy.approve(&Scope::of(f), &subject, now) {
                    Some(name) => Some(name.to_string()),
                    // The key and signature only when something reads them.
                    None if learning || check_learned => {
                        let (key, sig) = (workload_key(f), signature(&subject));
                        let known = check_learned && self.learned.knows(&key, &sig);
                        learned_sig = Some((key, sig));
                        known.then(|| "learned".to_string())
                    }
                    None => None,
                }
            }
            None => None,
        };
        if let Some(name) = approval {
            self.metrics.policy.approved(f.kind.as_str(), f.rule, &name);
            // A kill is evidence: it goes out, at its severity, even when
            // userspace approves what the kernel could not check at exec.
            let killed = f.action.is_some_and(|a| a.starts_with(crate::classify::KILLED));
            if !policy.compiled.emit_approved && !killed {
                return Gate::Hold;
            }
            if !killed {
                f.severity = Severity::Info;
            }
            f.approval = Some(name);
            return Gate::Emit;
        }
        if learning && let Some((key, sig)) = learned_sig {
            if self.learned.learn(&key, sig) == Learn::Full {
                self.metrics.policy.learned_full();
            }
            self.metrics.policy.learned(f.kind.as_str(), f.rule);
            return Gate::Hold;
        }
        Gate::Emit
    }
}

impl PolicyGate {
    /// Approved by construction, from the pod spec the API served: the exact
    /// command of one of the container's exec probes or lifecycle hooks (as
    /// the kubelet runs it), and an init container's file changes in a volume
    /// an app container mounts too.
    fn pod_spec(&self, f: &Finding, meta: &ContainerMeta) -> Option<&'static str> {
        let pod = self.registry.pod(meta)?;
        let me = pod.container(&meta.container_name)?;
        if let (Some(p), Some(e)) = (&f.process, f.exec())
            && !e.drifted_ancestor
            && f.kind != crate::classify::Kind::Binary
            && !p.command_args.is_empty()
        {
            return me.exec_commands.iter().find(|(_, cmd)| *cmd == p.command_args.as_slice()).map(|(why, _)| *why);
        }
        if let crate::classify::Detail::File(d) = &f.detail
            && me.init
            && d.location == "volume"
        {
            let under = |mount: &str| {
                let m = mount.trim_end_matches('/');
                d.path.strip_prefix(m).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            };
            let (volume, _) = me.mounts.iter().filter(|(_, path)| under(path)).max_by_key(|(_, path)| path.len())?;
            let shared = pod.containers.iter().any(|c| !c.init && c.mounts.iter().any(|(v, _)| v == volume));
            return shared.then_some("init_container");
        }
        None
    }
}

/// The baseline a finding's signature is learned under: its workload's
/// container when the runtime said which, else the container itself.
pub fn workload_key(f: &Finding) -> String {
    let k = &f.k8s;
    match (&k.namespace, k.workload_kind, &k.workload_name, &k.container_name) {
        (Some(ns), Some(kind), Some(name), Some(c)) => baseline_key(ns, kind, name, c),
        _ => container_key(&f.container_id),
    }
}

/// A workload container's baseline key (learned signatures, network baselines).
pub fn baseline_key(namespace: &str, kind: &str, workload: &str, container: &str) -> String {
    format!("{namespace}/{kind}/{workload}/{container}")
}

/// The baseline key of a container the runtime cannot place in a workload.
pub fn container_key(id: &str) -> String {
    format!("container/{id}")
}

/// A container's metadata with what is derived from it once: its workload
/// and normalised image. An empty value is unknown (it matches no key), as
/// in findings.
pub struct ContainerScope<'a> {
    pub meta: &'a ContainerMeta,
    /// (kind, name); None without a pod.
    pub workload: Option<(&'static str, String)>,
    pub image: Option<String>,
}

impl ContainerScope<'_> {
    pub fn scope(&self) -> Scope<'_> {
        let m = self.meta;
        fn some(s: &str) -> Option<&str> {
            (!s.is_empty()).then_some(s)
        }
        Scope {
            namespace: some(&m.namespace),
            workload: self.workload.as_ref().map(|w| w.1.as_str()),
            workload_kind: self.workload.as_ref().map(|w| w.0),
            pod_labels: Some(&m.pod_labels),
            labels_prefixed: false,
            container: some(&m.container_name),
            image: self.image.as_deref(),
        }
    }

    /// The key findings of this container are learned under ([`workload_key`]).
    pub fn workload_key(&self) -> String {
        let m = self.meta;
        match &self.workload {
            Some((kind, name)) => baseline_key(&m.namespace, kind, name, &m.container_name),
            None => container_key(&m.container_id),
        }
    }
}

/// How often `driftwatch_workload_mode` is recounted.
const MODE_COUNT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Counts running containers per mode for `driftwatch_workload_mode`, and
/// logs each container's mode when it is not the default or changes (a
/// reload, an annotation), and once a bad `driftwatch.io/mode` value.
pub fn watch_modes(gate: Arc<PolicyGate>, cancel: tokio_util::sync::CancellationToken) {
    let known = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<String, Mode>::new()));
    crate::tasks::spawn_every(MODE_COUNT_EVERY, cancel, move || {
        let (gate, known) = (gate.clone(), known.clone());
        async move {
            gate.count_modes(&mut crate::locks::lock(&known));
            std::ops::ControlFlow::Continue(())
        }
    });
}

impl PolicyGate {
    fn count_modes(&self, known: &mut std::collections::HashMap<String, Mode>) {
        let mut counts = [0usize; 3];
        let mut seen = std::collections::HashSet::new();
        let default = self.policy().compiled.default_mode;
        for c in self.registry.running() {
            let Some(meta) = self.registry.cached(&c.id) else { continue };
            if meta.pod_name.is_empty() {
                continue; // a pod sandbox (pause): no workload of its own
            }
            let (mode, source) = self.mode_of(&meta);
            counts[Mode::ALL.iter().position(|m| *m == mode).unwrap_or(1)] += 1;
            seen.insert(c.id.clone());
            let before = known.insert(c.id.clone(), mode);
            if before == Some(mode) {
                continue;
            }
            if let Some(bad) = meta.pod_annotations.get(crate::policy::MODE_ANNOTATION)
                && Mode::parse(bad).is_none()
                && before.is_none()
            {
                tracing::warn!(
                    container = %c.id, namespace = %meta.namespace, pod = %meta.pod_name,
                    "annotation {}={bad:?} is not learn, monitor or protect: ignored", crate::policy::MODE_ANNOTATION
                );
            }
            if before.is_some() || mode != default {
                tracing::info!(
                    container = %c.id, namespace = %meta.namespace, pod = %meta.pod_name, container_name = %meta.container_name,
                    mode = mode.as_str(), from = ?source, "container mode"
                );
            }
        }
        known.retain(|id, _| seen.contains(id));
        let labels: Vec<(&'static str, usize)> = Mode::ALL.iter().map(|m| m.as_str()).zip(counts).collect();
        self.metrics.policy.set_modes(&labels);
    }
}
