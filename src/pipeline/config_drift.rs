//! Configuration drift, once per container: when the registry says a
//! container started ([`Change::Added`]), its image is judged against its pod
//! spec and the approved digests (`classify::config_drift`), and its root
//! filesystem posture is recorded; ephemeral containers come from the
//! Kubernetes API's pod watch.

use super::emit::{Emitter, apply_metadata};
use crate::{
    classify::{
        Classifier, Subject,
        config_drift::{self, Approved, ImageFacts},
    },
    containers::{Change, Container, Registry},
    enrich::{
        cri::{ContainerMeta, Lookup},
        kube::{EphemeralAdded, PodEntry},
    },
    metrics::ContainerIdentity,
};
use std::{collections::HashMap, sync::Arc, time::Duration};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// How long the runtime is given to describe a new container.
const RESOLVE_WAIT: Duration = Duration::from_secs(2);

/// The memory of findings already reported, in the state directory.
pub const MEMORY: crate::state::Kind =
    crate::state::Kind { what: "config findings memory", corrupt: "state_corrupt", io: "state_io" };
const MEMORY_FILE: &str = "config-findings.json";
/// Ephemeral-container findings remembered (their pods are not in the registry).
const MAX_EPHEMERAL: usize = 4096;

/// Configuration findings already reported, by (container id, rule), or
/// (`pod:<uid>/<name>`, rule) for ephemeral containers: a restarted agent
/// judges every running container again and must not report them twice.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Memory {
    version: u64,
    reported: std::collections::BTreeSet<(String, String)>,
}

/// Settings of the configuration-drift task.
pub struct Settings {
    /// Where the memory of reported findings is kept; None: in memory only.
    pub state_dir: Option<std::path::PathBuf>,
    pub enabled: bool,
    pub approved: Approved,
    /// How often containers waiting for metadata are tried again.
    pub retry_every: Duration,
    /// Tries a container waits for the API to know its pod before the
    /// runtime's image name is used instead.
    pub api_patience: u32,
}

pub struct ConfigDrift {
    settings: Settings,
    classifier: Arc<Classifier>,
    emitter: Arc<Emitter>,
    registry: Arc<Registry>,
    /// Taken by [`Self::run`].
    changes: Option<tokio::sync::broadcast::Receiver<Change>>,
    memory: Memory,
    /// The memory changed since it was saved.
    dirty: bool,
}

/// What became of one try at judging a container.
enum Outcome {
    Done,
    Retry,
}

impl ConfigDrift {
    /// Subscribes to the registry's changes at once: make it before the
    /// registry's task starts, so no container is missed.
    pub fn new(
        settings: Settings,
        classifier: Arc<Classifier>,
        emitter: Arc<Emitter>,
        registry: Arc<Registry>,
    ) -> Self {
        let changes = Some(registry.subscribe());
        let mut memory = Memory { version: 1, ..Default::default() };
        if let Some(dir) = &settings.state_dir {
            match crate::state::load::<Memory>(MEMORY, &dir.join(MEMORY_FILE), 1) {
                Ok(Some(m)) => memory = m,
                Ok(None) => {}
                Err(e) => {
                    emitter.metrics().pipeline.enrich_failure(e.reason());
                    tracing::error!("{e}");
                }
            }
        }
        Self { settings, classifier, emitter, registry, changes, memory, dirty: false }
    }

    /// Emits `f` unless this (subject, rule) was reported before (by this agent or
    /// before its restart).
    fn report_once(&mut self, subject: String, f: crate::classify::Finding) {
        if self.memory.reported.insert((subject, f.rule.to_string())) {
            self.dirty = true;
            let t = self.emitter.ticket(&f.container_id);
            self.emitter.emit(t, f.into());
        } else {
            self.emitter.metrics().pipeline.no_finding(crate::classify::NoFinding::AlreadyReported.as_str());
        }
    }

    /// Saves the memory if it changed: only what is still relevant (running
    /// containers, a bounded number of ephemeral ones). Not before the
    /// registry's first scan: it would forget every container.
    async fn save_memory(&mut self) {
        let Some(dir) = self.settings.state_dir.clone() else { return };
        if !self.dirty || self.registry.silent_for().is_none() {
            return;
        }
        let registry = self.registry.clone();
        let mut ephemeral = 0;
        self.memory.reported.retain(|(subject, _)| match subject.strip_prefix("pod:") {
            Some(_) => {
                ephemeral += 1;
                ephemeral <= MAX_EPHEMERAL
            }
            None => registry.get(subject).is_some_and(|c| c.is_running()),
        });
        let memory = Memory { version: 1, reported: self.memory.reported.clone() };
        let saved =
            tokio::task::spawn_blocking(move || crate::state::save(MEMORY, &dir.join(MEMORY_FILE), &memory)).await;
        match saved {
            Ok(Ok(())) => self.dirty = false,
            Ok(Err(e)) => {
                self.emitter.metrics().pipeline.enrich_failure(e.reason());
                tracing::warn!("{e}");
            }
            Err(_) => {}
        }
    }

    /// Runs until `cancel`.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut changes = self.changes.take().unwrap_or_else(|| self.registry.subscribe());
        let mut events = self.registry.kube().and_then(|k| k.take_events());
        // Containers waiting for the runtime or the API, with the tries so far.
        let mut pending: HashMap<String, (Arc<Container>, u32)> = HashMap::new();
        let mut tick = tokio::time::interval(self.settings.retry_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return self.save_memory().await,
                change = changes.recv() => match change {
                    Ok(Change::Added(c)) => {
                        if let Outcome::Retry = self.judge(&c, 0).await {
                            pending.insert(c.id.clone(), (c, 1));
                        }
                    }
                    Ok(Change::Gone(c)) => {
                        pending.remove(&c.id);
                    }
                    Err(RecvError::Lagged(n)) => {
                        // Missed notices: every running container not judged yet waits its turn.
                        self.emitter.metrics().registry_stats.lagged.inc_by(n);
                        for c in self.registry.running() {
                            pending.entry(c.id.clone()).or_insert((c, 0));
                        }
                    }
                    Err(RecvError::Closed) => return self.save_memory().await,
                },
                ev = async {
                    match events.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => match ev {
                    Some(ev) if self.settings.enabled => self.ephemeral(ev),
                    Some(_) => {}
                    None => events = None,
                },
                _ = tick.tick() => {
                    let due: Vec<(Arc<Container>, u32)> = pending.drain().map(|(_, v)| v).collect();
                    for (c, tries) in due {
                        if let Outcome::Retry = self.judge(&c, tries).await {
                            pending.insert(c.id.clone(), (c, tries + 1));
                        }
                    }
                    self.save_memory().await;
                }
            }
        }
    }

    /// Judges `c` once it is a pod's container the runtime describes and,
    /// with the API, whose pod the API knows (or patience ran out).
    async fn judge(&mut self, c: &Arc<Container>, tries: u32) -> Outcome {
        let meta = match self.registry.resolve(&c.id, RESOLVE_WAIT).await {
            Lookup::Found(m) => m,
            // Not a CRI container (made with ctr): nothing to compare with.
            Lookup::NotFound => return Outcome::Done,
            Lookup::Unavailable(_) => return Outcome::Retry,
        };
        if !meta.is_pod_container() {
            return Outcome::Done; // a sandbox, or not a pod's container
        }
        let pod = self.registry.pod(&meta);
        if pod.is_none() && self.registry.kube().is_some() && tries < self.settings.api_patience {
            return Outcome::Retry; // the watch has not seen the pod yet
        }
        if c.claim_config_judgement() {
            self.judge_container(&meta, pod.as_deref()).await;
        }
        Outcome::Done
    }

    /// Image rules and posture of one new container.
    async fn judge_container(&mut self, meta: &ContainerMeta, pod: Option<&PodEntry>) {
        let spec = pod.and_then(|p| p.container(&meta.container_name)).cloned();
        let ephemeral = pod.and_then(|p| p.ephemeral.iter().find(|e| e.name == meta.container_name));
        let (image, source) = match (&spec, ephemeral) {
            (Some(s), _) if !s.image.is_empty() => (s.image.clone(), "pod_spec"),
            (_, Some(e)) if !e.image.is_empty() => (e.image.clone(), "pod_spec"),
            _ => (meta.image.clone(), "runtime"),
        };
        let subject = Subject { id: &meta.container_id, runtime: meta.runtime_name(), pod_uid: None };
        if self.settings.enabled {
            let facts = ImageFacts {
                container: &meta.container_name,
                spec: &image,
                spec_source: source,
                image_ref: &meta.image_ref,
            };
            for issue in config_drift::check_image(&facts, &self.settings.approved) {
                let mut f = self.classifier.config_finding(subject, issue);
                apply_metadata(&mut f, meta);
                self.report_once(meta.container_id.clone(), f);
            }
        }
        // Posture: what the runtime enforces, else what the spec asks for.
        let enforced = match self.registry.cri() {
            Some(cri) => cri.readonly_rootfs(&meta.container_id).await,
            None => None,
        };
        if let Some(ro) = enforced.or(spec.as_ref().map(|s| s.read_only_root)) {
            let (_, workload) = match self.registry.workload(&meta.namespace, &meta.pod_name) {
                Some(w) => w,
                None => {
                    let w = crate::enrich::workload::from_pod(&meta.pod_name, &meta.pod_labels);
                    (w.kind, w.name)
                }
            };
            let who = ContainerIdentity {
                namespace: meta.namespace.clone(),
                workload,
                container: meta.container_name.clone(),
                pod: meta.pod_name.clone(),
            };
            self.emitter.metrics().containers.posture(&meta.container_id, &who, !ro);
        }
    }

    /// An ephemeral container appeared in a pod of this node.
    fn ephemeral(&mut self, ev: EphemeralAdded) {
        let issue =
            config_drift::ephemeral_added(&ev.pod.name, &ev.spec.name, &ev.spec.image, ev.spec.target.as_deref());
        let id = ev.container_id.clone().unwrap_or_default();
        let meta = (!id.is_empty()).then(|| self.registry.cached(&id)).flatten();
        let runtime = meta.as_ref().map_or("cri", |m| m.runtime_name());
        let mut f = self.classifier.config_finding(Subject { id: &id, runtime, pod_uid: None }, issue);
        match &meta {
            Some(m) => apply_metadata(&mut f, m),
            None => {
                let k = f.k8s_mut();
                k.namespace = Some(ev.pod.namespace.clone());
                k.pod_name = Some(ev.pod.name.clone());
                k.pod_uid = Some(ev.pod.uid.clone()).filter(|u| !u.is_empty());
                k.container_name = Some(ev.spec.name.clone());
                k.metadata_complete = true;
            }
        }
        self.report_once(format!("pod:{}/{}", ev.pod.uid, ev.spec.name), f);
    }
}
