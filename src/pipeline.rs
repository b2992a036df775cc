//! The userspace stages after decoding: enrich -> classify -> sinks, for
//! batches handed over by the ring-buffer reader.
//!
//! Only findings need pod metadata, so events are classified first. A finding
//! whose container is in the runtime cache goes out at once; otherwise it waits
//! (in its own task, a bounded number at a time) at most `metadata_wait` for
//! the runtime, then goes out with what is known and
//! `driftwatch.metadata.complete: false`. The pipeline itself never waits.

use crate::{
    bpf::{DriftMarks, NotContainer},
    classify::file::FileJudge,
    classify::network::NetworkJudge,
    classify::{Classifier, Finding},
    enrich::{
        self,
        cri::{ContainerMeta, Cri, Lookup},
        image::{ImageRef, digest_of_image_ref},
        overlay::{self, CopyUp},
        workload,
    },
    event::{Event, ExeSource, ExecEvent, FileEvent, NetEvent},
    sink::{Fanout, containers::ContainerFindingLabels, metrics::Metrics},
};
use std::{sync::Arc, time::Duration};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Findings waiting for metadata at once; beyond it they go out incomplete.
const MAX_WAITING: usize = 512;

pub struct Pipeline {
    pub classifier: Classifier,
    pub fanout: Fanout,
    pub metrics: Arc<Metrics>,
    /// Feeds "not a container" verdicts back to the kernel filter.
    pub not_container: Option<NotContainer>,
    /// Feeds userspace drift verdicts (scripts) back to the kernel's lineage.
    pub drift_marks: Option<DriftMarks>,
    /// Pod metadata from the container runtime; None in node-only mode.
    pub cri: Option<Arc<Cri>>,
    pub metadata_wait: Duration,
    pub waiting: Arc<Semaphore>,
    /// Image comparisons of upper-layer executables.
    pub copy_ups: Arc<CopyUps>,
    /// Containers' layers and volumes, shared by the copy-up and file judges.
    pub container_fs: Arc<overlay::ContainerFsCache>,
    /// Network drift against learned baselines; None when disabled.
    pub network: Option<Arc<NetworkJudge>>,
    /// This node's pods from the Kubernetes API; None in node-only mode.
    pub kube: Option<Arc<crate::enrich::kube::KubeIndex>>,
    /// File drift; None when disabled.
    pub file: Option<FileJudge>,
}

/// A finding's place among the bounded number that may wait; counted in the
/// `findings_waiting` gauge while held.
struct WaitSlot {
    _permit: OwnedSemaphorePermit,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for WaitSlot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Pipeline {
    /// A waiting slot, or None when `MAX_WAITING` findings already wait.
    fn wait_slot(&self) -> Option<WaitSlot> {
        let permit = self.waiting.clone().try_acquire_owned().ok()?;
        self.metrics.findings_waiting.inc();
        Some(WaitSlot { _permit: permit, gauge: self.metrics.findings_waiting.clone() })
    }

    pub fn new(classifier: Classifier, fanout: Fanout, metrics: Arc<Metrics>) -> Self {
        let container_fs = Arc::new(overlay::ContainerFsCache::default());
        Self {
            classifier,
            fanout,
            metrics,
            not_container: None,
            drift_marks: None,
            cri: None,
            metadata_wait: Duration::from_secs(2),
            waiting: Arc::new(Semaphore::new(MAX_WAITING)),
            copy_ups: Arc::new(CopyUps::new(container_fs.clone())),
            container_fs,
            network: None,
            kube: None,
            file: None,
        }
    }

    /// Judges one event; findings go to every sink's queue.
    pub fn handle(self: &Arc<Self>, ev: Event) {
        let ev = match ev {
            Event::Exec(ev) => ev,
            Event::Net(ev) => return self.handle_net(&ev),
            Event::File(ev) => return self.handle_file(&ev),
        };
        let container = match enrich::container_of(&ev) {
            Ok(c) => c,
            Err(e) => {
                self.metrics.enrich_failure(e.reason());
                if let Some(nc) = &self.not_container {
                    nc.insert(ev.mntns_id);
                }
                tracing::trace!(error = %e, "exec outside a container");
                return;
            }
        };
        // A #! script the kernel could not judge: find its layer from here,
        // off the async workers, before classifying (a dropped script run by
        // an image interpreter is binary drift).
        if let Some((path, ExeSource::Unknown)) = &ev.script
            && path.starts_with('/')
            && !ev.flags.entrypoint()
            && !ev.flags.drift()
            && !ev.exe_source.is_drift()
            && let Some(slot) = self.wait_slot()
        {
            let (me, path, mut ev) = (self.clone(), path.clone(), ev);
            tokio::spawn(async move {
                let _slot = slot;
                let (fs, pid, id) = (me.container_fs.clone(), ev.tgid, container.id.clone());
                let judged = tokio::task::spawn_blocking(move || {
                    let src = overlay::script_source(&fs.get(&id, pid), &path);
                    (path, src)
                })
                .await;
                if let Ok(script) = judged {
                    if script.1.is_drift()
                        && let Some(marks) = &me.drift_marks
                    {
                        marks.mark(ev.tgid, ev.ktime_ns);
                    }
                    ev.script = Some(script);
                }
                me.judge_exec(&ev, &container);
            });
            return;
        }
        self.judge_exec(&ev, &container);
    }

    /// Classifies an exec of a container and hands its finding on.
    fn judge_exec(self: &Arc<Self>, ev: &ExecEvent, container: &enrich::ContainerRef) {
        let f = match self.classifier.exec(ev, container) {
            Ok(f) => f,
            Err(reason) => {
                self.metrics.no_finding(reason.as_str());
                return;
            }
        };
        if f.rule == "exec_new_binary" {
            // An upper-layer image binary may only have been chmod'ed or
            // touched: compare it with the image, off the async workers.
            let Some(slot) = self.wait_slot() else {
                self.enrich(f);
                return;
            };
            // The same file run again: the verdict is known.
            let key = (f.container_id.clone(), f.exe_path.clone(), f.exe_inode);
            if let Some(origin) = self.copy_ups.get(&key) {
                if origin == CopyUp::ImageFileUnchanged {
                    self.metrics.no_finding("metadata_only_copy_up");
                    return;
                }
                let mut f = f;
                f.exe_origin = Some(origin.as_str());
                self.enrich(f);
                return;
            }
            let me = self.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let (path, pid, id) = (f.exe_path.clone(), f.pid, f.container_id.clone());
                let dirs = me.copy_ups.clone();
                let origin =
                    tokio::task::spawn_blocking(move || dirs.judge(pid, &id, &path)).await.unwrap_or(CopyUp::Unknown);
                me.copy_ups.put(key, origin);
                if origin == CopyUp::ImageFileUnchanged {
                    me.metrics.no_finding("metadata_only_copy_up");
                    return;
                }
                let mut f = f;
                f.exe_origin = Some(origin.as_str());
                me.enrich(f);
            });
            return;
        }
        self.enrich(f);
    }

    /// Adds pod metadata (waiting a bounded time for the runtime) and emits.
    fn enrich(self: &Arc<Self>, mut f: Finding) {
        let Some(cri) = &self.cri else {
            self.incomplete(f, "no_runtime");
            return;
        };
        if let Some(meta) = cri.cached(&f.container_id) {
            apply_metadata(&mut f, &meta);
            self.emit(f);
            return;
        }
        let Some(slot) = self.wait_slot() else {
            self.incomplete(f, "backlog");
            return;
        };
        let (me, cri) = (self.clone(), cri.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match cri.lookup(&f.container_id, me.metadata_wait).await {
                Lookup::Found(meta) => {
                    apply_metadata(&mut f, &meta);
                    me.emit(f);
                }
                Lookup::NotFound => me.incomplete(f, "not_found"),
                Lookup::Unavailable(reason) => me.incomplete(f, reason),
            }
        });
    }

    /// The container of a network or file event; a namespace found not to be
    /// a container is handed to the kernel filter.
    fn container(&self, cgroup_path: &str, tgid: u32, mntns_id: u64) -> Option<enrich::ContainerRef> {
        match enrich::container_from_path_or_pid(cgroup_path, tgid) {
            Ok(c) => Some(c),
            Err(e) => {
                self.metrics.enrich_failure(e.reason());
                if let Some(nc) = &self.not_container {
                    nc.insert(mntns_id);
                }
                None
            }
        }
    }

    /// File changes: scratch space is expected, package state is package
    /// drift, the rest is file drift.
    fn handle_file(self: &Arc<Self>, ev: &FileEvent) {
        let Some(judge) = &self.file else { return };
        let Some(c) = self.container(&ev.cgroup_path, ev.tgid, ev.mntns_id) else { return };
        match judge.judge(&self.classifier, ev, &c) {
            Ok(f) => self.enrich(f),
            Err(reason) => self.metrics.no_finding(reason.as_str()),
        }
    }

    /// Network endpoints are judged against the workload's baseline, keyed by
    /// what the runtime says the workload is (or the container, until then).
    fn handle_net(self: &Arc<Self>, ev: &NetEvent) {
        let Some(judge) = &self.network else { return };
        let Some(c) = self.container(&ev.cgroup_path, ev.tgid, ev.mntns_id) else { return };
        let meta = self.cri.as_ref().and_then(|cri| cri.cached(&c.id));
        let key = match &meta {
            Some(m) if !m.pod_name.is_empty() => {
                let w = workload::from_pod(&m.pod_name, &m.pod_labels);
                format!("{}/{}/{}/{}", m.namespace, w.kind, w.name, m.container_name)
            }
            _ => format!("container/{}", c.id),
        };
        match judge.judge(&self.classifier, ev, &c, &key) {
            Ok(mut f) => match meta {
                Some(m) => {
                    apply_metadata(&mut f, &m);
                    self.emit(f);
                }
                None => self.incomplete(f, if self.cri.is_some() { "not_cached" } else { "no_runtime" }),
            },
            Err(reason) => self.metrics.no_finding(reason.as_str()),
        }
    }

    fn incomplete(&self, mut f: Finding, reason: &'static str) {
        self.metrics.enrich_failure(reason);
        f.metadata_complete = false;
        f.metadata_missing = Some(reason);
        self.emit(f);
    }

    /// The workload of a finding: the owner the Kubernetes API resolved
    /// (Pod -> ReplicaSet -> Deployment, Job -> CronJob, ...) when the API
    /// knows the pod; else what [`apply_metadata`] derived from the
    /// controller labels (node-only heuristic).
    pub fn apply_workload(&self, f: &mut Finding) {
        if let (Some(k), Some(ns), Some(pod)) = (&self.kube, &f.namespace, &f.pod_name)
            && let Some((kind, name)) = k.workload(ns, pod)
        {
            f.workload_kind = Some(kind);
            f.workload_name = Some(name);
        }
    }

    /// Counts a finding and hands it to the sinks.
    pub fn emit(&self, mut f: Finding) {
        self.apply_workload(&mut f);
        self.metrics.finding(&f);
        let label = |v: &Option<String>| v.clone().unwrap_or_default();
        self.metrics.containers.finding_in_pod(
            &f.container_id,
            f.pod_name.as_deref().unwrap_or_default(),
            ContainerFindingLabels {
                namespace: label(&f.namespace),
                workload: label(&f.workload_name),
                container: label(&f.container_name),
                kind: f.kind.as_str(),
                rule: f.rule,
                severity: f.severity.as_str(),
            },
        );
        self.fanout.send(f, &self.metrics);
    }

    /// Runs until the reader closes its end.
    pub async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<Vec<Event>>) {
        while let Some(batch) = rx.recv().await {
            for ev in batch {
                self.handle(ev);
            }
        }
        // Let findings still waiting for metadata go out before returning.
        let _ = self.waiting.acquire_many(MAX_WAITING as u32).await;
    }
}

/// Copy-up verdicts and container layers, cached: a drifted binary run
/// thousands of times is compared with the image once. Bounded.
pub struct CopyUps {
    verdicts: std::sync::Mutex<std::collections::HashMap<(String, String, u64), CopyUp>>,
    fs: Arc<overlay::ContainerFsCache>,
}

const MAX_COPY_UPS: usize = 4096;

impl CopyUps {
    pub fn new(fs: Arc<overlay::ContainerFsCache>) -> Self {
        Self { verdicts: Default::default(), fs }
    }

    fn get(&self, key: &(String, String, u64)) -> Option<CopyUp> {
        self.verdicts.lock().ok()?.get(key).copied()
    }

    fn put(&self, key: (String, String, u64), v: CopyUp) {
        if v == CopyUp::Unknown {
            return; // may be known later
        }
        if let Ok(mut m) = self.verdicts.lock() {
            if m.len() >= MAX_COPY_UPS {
                m.clear();
            }
            m.insert(key, v);
        }
    }

    /// Compares an upper-layer executable with the image, through the root
    /// mount of the process, or of any live process of the same container.
    fn judge(&self, pid: u32, container_id: &str, path: &str) -> CopyUp {
        match &self.fs.get(container_id, pid).overlay {
            Some(d) => overlay::classify_copy_up(d, path),
            None => CopyUp::Unknown,
        }
    }
}

/// Copies what the runtime knows about the container into the finding. The
/// workload set here is the label heuristic; [`Pipeline::emit`] replaces it
/// with the API's owner when the Kubernetes API knows the pod.
pub fn apply_metadata(f: &mut Finding, m: &ContainerMeta) {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    f.namespace = some(&m.namespace);
    f.pod_name = some(&m.pod_name);
    f.pod_uid = some(&m.pod_uid).or(f.pod_uid.take());
    f.container_name = some(&m.container_name);
    if !m.pod_name.is_empty() {
        let w = workload::from_pod(&m.pod_name, &m.pod_labels);
        f.workload_kind = Some(w.kind);
        f.workload_name = Some(w.name);
    }
    if let Ok(r) = ImageRef::parse(&m.image) {
        f.image_name = Some(r.name());
        f.image_tags = Some(r.tags());
        f.image_repo_digests = r.repo_digest().map(|d| vec![d]);
    }
    if let Some(d) = digest_of_image_ref(&m.image_ref) {
        f.image_id = Some(d.to_string());
        if m.image_ref.contains('@') {
            f.image_repo_digests = Some(vec![m.image_ref.clone()]);
        }
    }
    f.pod_labels = m.pod_labels.iter().map(|(k, v)| (format!("k8s.pod.label.{k}"), v.clone())).collect();
    f.metadata_complete = true;
    f.metadata_missing = None;
}
