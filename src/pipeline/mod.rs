//! The userspace stages after decoding, for batches handed over by the
//! ring-buffer reader: container (registry) -> classify -> emit (metadata,
//! metrics, sinks).
//!
//! Only findings need pod metadata, so events are classified first. A finding
//! whose container the registry describes goes out at once; otherwise it
//! waits (in its own task, a bounded number at a time) at most
//! `metadata_wait` for the runtime, then goes out with what is known and
//! `driftwatch.metadata.complete: false`. The pipeline itself never waits.

pub mod config_drift;
pub mod config_watch;
pub mod emit;
mod net_keys;
mod order;
pub mod pod_facts;
pub mod policy;
pub mod protect;
pub mod redact;
pub mod respond;

pub use emit::{Emitter, Ticket, apply_metadata};
pub use policy::{Gate, PolicyGate};
pub use redact::{Redaction, redact_finding};

use crate::{
    bpf::{DriftMarks, NotContainer},
    classify::{Classifier, file::FileJudge, network::NetworkJudge},
    containers::Registry,
    enrich::{
        self, ContainerRef,
        cri::Lookup,
        overlay::{self, CopyUp},
    },
    event::{Event, ExeSource, ExecEvent, FileEvent, NetEvent, Process},
};
use std::{ops::ControlFlow, sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// Longest a blocking look at a container's files (an image comparison, a
/// script's layer) may hold its finding, and so the container's findings
/// behind it: a stuck filesystem must not stop them. Past it the finding
/// goes on without that detail (the look itself finishes in the background).
const BLOCKING_LIMIT: Duration = Duration::from_secs(5);

/// The result of a blocking step, or None when it failed or took too long.
async fn bounded<T>(h: tokio::task::JoinHandle<T>) -> Option<T> {
    tokio::time::timeout(BLOCKING_LIMIT, h).await.ok()?.ok()
}

/// The absolute path of the script an interpreter exec names on its command
/// line (`crate::classify::interp`); a relative one is joined to the
/// process's cwd while it still runs.
fn interpreter_script(cl: &Classifier, ev: &ExecEvent) -> Option<String> {
    let named = crate::classify::interp::script_operand(cl.names(), &ev.proc.comm, &ev.args)?;
    if named.starts_with('/') {
        return Some(crate::event::clean_path(named));
    }
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", ev.proc.tgid)).ok()?;
    let cwd = cwd.to_str()?;
    cwd.starts_with('/').then(|| crate::event::clean_path(&format!("{cwd}/{named}")))
}

/// What the pipeline needs.
pub struct Deps {
    pub classifier: Arc<Classifier>,
    pub emitter: Arc<Emitter>,
    pub registry: Arc<Registry>,
    /// Network drift against learned baselines; None when disabled.
    pub network: Option<Arc<NetworkJudge>>,
    /// File drift; None when disabled.
    pub file: Option<FileJudge>,
    /// Feeds "not a container" verdicts back to the kernel filter.
    pub not_container: Option<NotContainer>,
    /// Feeds userspace drift verdicts (scripts) back to the kernel's lineage.
    pub drift_marks: Option<DriftMarks>,
    /// Arms protect mode in the kernel per container; None without a sensor.
    pub protect: Option<Arc<protect::Protector>>,
}

pub struct Pipeline {
    d: Deps,
    /// Containers by cgroup path (the events thread is its only user).
    memo: std::sync::Mutex<enrich::memo::ContainerMemo>,
    /// Network baseline keys by container metadata.
    net_keys: std::sync::Mutex<net_keys::NetKeys>,
}

impl Pipeline {
    pub fn new(deps: Deps) -> Arc<Self> {
        Arc::new(Self { d: deps, memo: Default::default(), net_keys: Default::default() })
    }

    /// Judges one event; findings go to every sink's queue.
    pub fn handle(self: &Arc<Self>, ev: Event) {
        match ev {
            Event::Exec(ev) => self.handle_exec(ev),
            Event::Net(ev) if self.d.network.is_some() => self.handle_net(&ev),
            Event::File(ev) if self.d.file.is_some() => self.handle_file(&ev),
            Event::Net(_) | Event::File(_) => {}
            Event::Map(ev) => self.handle_map(&ev),
        }
    }

    /// A drifted executable mapping (the kernel sends nothing else): binary drift.
    fn handle_map(&self, ev: &crate::event::MapEvent) {
        let Some(c) = self.container(&ev.proc) else { return };
        match self.d.classifier.mapping(ev, &c) {
            Ok(f) => self.d.emitter.enrich(self.d.emitter.ticket(&c.id), f.into()),
            Err(reason) => self.d.emitter.metrics().pipeline.no_finding(reason.as_str()),
        }
    }

    /// `f` on one of the pipeline's caches, whose size (`len`) is exported as
    /// `driftwatch_cache_entries{cache}` when `f` changed it.
    fn with_cache<C, R>(
        &self,
        cache: &std::sync::Mutex<C>,
        name: &'static str,
        len: impl Fn(&C) -> usize,
        f: impl FnOnce(&mut C) -> R,
    ) -> R {
        let mut c = crate::locks::lock(cache);
        let filled = len(&c);
        let r = f(&mut c);
        if len(&c) != filled {
            self.d.emitter.metrics().registry_stats.cache_entries(name, len(&c));
        }
        r
    }

    /// The container of an event's process, noted in the registry; a
    /// namespace found not to be a container is handed to the kernel filter.
    fn container(&self, p: &Process) -> Option<ContainerRef> {
        let from_path =
            |path: &Arc<str>| self.with_cache(&self.memo, enrich::memo::CACHE, |m| m.len(), |m| m.container(path));
        match enrich::container_of_with(p, from_path) {
            Ok(c) => {
                self.d.registry.note(&c);
                Some(c)
            }
            Err(e) => {
                self.d.emitter.metrics().pipeline.enrich_failure(e.reason());
                if let Some(nc) = &self.d.not_container {
                    nc.insert(p.mntns_id);
                }
                tracing::trace!(error = %e, "event outside a container");
                None
            }
        }
    }

    fn handle_exec(self: &Arc<Self>, mut ev: ExecEvent) {
        let Some(c) = self.container(&ev.proc) else { return };
        if let Some(p) = &self.d.protect {
            p.on_exec(&ev, &c);
        }
        // `sh /tmp/x.sh`, `perl x.pl`: the script named on an interpreter's
        // command line is judged like a #! script (below).
        if ev.script.is_none()
            && !ev.flags.entrypoint()
            && let Some(path) = interpreter_script(&self.d.classifier, &ev)
        {
            ev.script = Some((path, ExeSource::Unknown));
            ev.script_escaped = ev.args_escaped;
        }
        // A #! script the kernel could not judge: find its layer from here,
        // off the async workers, before classifying (a dropped script run by
        // an image interpreter is binary drift).
        if let Some((path, ExeSource::Unknown)) = &ev.script
            && path.starts_with('/')
            && !ev.flags.entrypoint()
            && !ev.flags.drift()
            && !ev.exe_source.is_drift()
            && let Some(slot) = self.d.emitter.wait_slot()
        {
            let (me, path, mut ev, entry) = (self.clone(), path.clone(), ev, self.d.registry.observe(&c));
            let ticket = self.d.emitter.ticket(&c.id);
            tokio::spawn(async move {
                let _slot = slot;
                let (fs_of, pid, escaped) = (entry.clone(), ev.proc.tgid, ev.script_escaped);
                let judged = bounded(tokio::task::spawn_blocking(move || {
                    let src = overlay::script_source(&fs_of.fs(pid), &crate::escape::path(&path, escaped));
                    (path, src)
                }))
                .await;
                if let Some(script) = judged {
                    if script.1.is_drift()
                        && let Some(marks) = &me.d.drift_marks
                    {
                        marks.mark(ev.proc.tgid, ev.proc.ktime_ns);
                    }
                    if script.1.is_drift()
                        && let Some(p) = &me.d.protect
                        && p.script_killed(&ev).await
                    {
                        ev.flags.0 |= crate::abi::DW_EXEC_KILLED;
                    }
                    ev.script = Some(script);
                }
                me.judge_exec(ev, &c, Some(ticket));
            });
            return;
        }
        self.judge_exec(ev, &c, None);
    }

    /// Classifies an exec of a container and hands its finding on.
    /// `ticket`: the exec's place, when it was taken before a wait.
    fn judge_exec(self: &Arc<Self>, ev: ExecEvent, c: &ContainerRef, ticket: Option<Ticket>) {
        let metrics = &self.d.emitter.metrics().pipeline;
        // A killed exec's finding is the evidence of the kill: it always goes out.
        let (killed, ino, pid, escaped) = (ev.flags.killed(), ev.ino, ev.proc.tgid, ev.path_escaped);
        // The event's text moves into the finding.
        let mut f = match self.d.classifier.exec(ev, c) {
            Ok(f) => f,
            Err(reason) => return metrics.no_finding(reason.as_str()),
        };
        let t = ticket.unwrap_or_else(|| self.d.emitter.ticket(&c.id));
        if f.rule != crate::classify::rules::EXEC_NEW_BINARY.name {
            return self.d.emitter.enrich(t, f);
        }
        // An upper-layer image binary may only have been chmod'ed or touched:
        // compare it with the image, once per file, off the async workers.
        let entry = self.d.registry.observe(c);
        // The executed path (the event's, moved into the finding).
        if let Some(origin) = entry.copy_up(f.process.as_ref().map_or("", |p| &p.exe_path), ino) {
            if origin == CopyUp::ImageFileUnchanged && !killed {
                return metrics.no_finding(crate::classify::NoFinding::MetadataOnlyCopyUp.as_str());
            }
            if let Some(e) = f.exec_mut() {
                e.exe_origin = Some(origin.as_str());
            }
            return self.d.emitter.enrich(t, f);
        }
        let Some(slot) = self.d.emitter.wait_slot() else {
            return self.d.emitter.enrich(t, f);
        };
        let (me, path) = (self.clone(), f.process.as_ref().map(|p| p.exe_path.clone()).unwrap_or_default());
        tokio::spawn(async move {
            let _slot = slot;
            let judged = entry.clone();
            let p = path.clone();
            let origin = tokio::task::spawn_blocking(move || match &judged.fs(pid).overlay {
                Some(d) => overlay::classify_copy_up(d, &crate::escape::path(&p, escaped)),
                None => CopyUp::Unknown,
            })
            .await
            .unwrap_or(CopyUp::Unknown);
            entry.set_copy_up(&path, ino, origin);
            if origin == CopyUp::ImageFileUnchanged && !killed {
                let reason = crate::classify::NoFinding::MetadataOnlyCopyUp.as_str();
                return me.d.emitter.metrics().pipeline.no_finding(reason);
            }
            if let Some(e) = f.exec_mut() {
                e.exe_origin = Some(origin.as_str());
            }
            me.d.emitter.enrich(t, f);
        });
    }

    /// File changes: scratch space is expected, package state is package
    /// drift, the rest is file drift.
    fn handle_file(self: &Arc<Self>, ev: &FileEvent) {
        let Some(judge) = &self.d.file else { return };
        let Some(c) = self.container(&ev.proc) else { return };
        let metrics = &self.d.emitter.metrics().pipeline;
        // Scratch space is decided before the container's mounts are looked at.
        if let Err(reason) = judge.prejudge(ev) {
            return metrics.no_finding(reason.as_str());
        }
        // Read once per container (its mounts), then kept by the registry.
        let fs = self.d.registry.observe(&c).fs(ev.proc.tgid);
        match judge.judge(&self.d.classifier, ev, &c, &fs) {
            Ok(f) => self.d.emitter.enrich(self.d.emitter.ticket(&c.id), f),
            Err(reason) => metrics.no_finding(reason.as_str()),
        }
    }

    /// Network endpoints are judged against the workload's baseline, keyed by
    /// what the runtime says the workload is. A container the registry cannot
    /// describe yet (its first seconds) is waited for, a bounded time, like
    /// exec findings: judged under the container's own key only when the
    /// runtime cannot say in time.
    fn handle_net(self: &Arc<Self>, ev: &NetEvent) {
        let Some(judge) = &self.d.network else { return };
        let Some(c) = self.container(&ev.proc) else { return };
        // Loopback and allowed ports need neither the workload nor a wait for it.
        if let Err(reason) = judge.prejudge(ev) {
            return self.d.emitter.metrics().pipeline.no_finding(reason.as_str());
        }
        let settled = self.d.registry.settled(&c.id);
        if settled.is_some() || self.d.registry.cri().is_none() {
            return self.judge_net(ev, &c, settled, None);
        }
        let Some(slot) = self.d.emitter.wait_slot() else {
            return self.judge_net(ev, &c, Some(Lookup::Unavailable("backlog")), None);
        };
        let (me, ev, wait) = (self.clone(), ev.clone(), self.d.emitter.metadata_wait());
        let ticket = self.d.emitter.ticket(&c.id);
        tokio::spawn(async move {
            let _slot = slot;
            let found = me.d.registry.resolve(&c.id, wait).await;
            me.judge_net(&ev, &c, Some(found), Some(ticket));
        });
    }

    /// Judges an endpoint with what the runtime said of its container (None: no runtime).
    fn judge_net(&self, ev: &NetEvent, c: &ContainerRef, meta: Option<Lookup>, ticket: Option<Ticket>) {
        let Some(judge) = &self.d.network else { return };
        let key: Arc<str> = match &meta {
            Some(Lookup::Found(m)) if !m.pod_name.is_empty() => {
                self.with_cache(&self.net_keys, net_keys::CACHE, |k| k.len(), |k| k.key(m))
            }
            _ => policy::container_key(&c.id).into(),
        };
        let emitter = &self.d.emitter;
        let f = match judge.judge(&self.d.classifier, ev, c, &key) {
            Ok(f) => f,
            Err(reason) => return emitter.metrics().pipeline.no_finding(reason.as_str()),
        };
        let t = ticket.unwrap_or_else(|| emitter.ticket(&c.id));
        match meta {
            Some(Lookup::Found(m)) => emitter.found(t, f, &m),
            Some(Lookup::NotFound) => emitter.incomplete(t, f, "not_found"),
            Some(Lookup::Unavailable(reason)) => emitter.incomplete(t, f, reason),
            None => emitter.incomplete(t, f, "no_runtime"),
        }
    }

    /// Lets findings still waiting for metadata go out (at shutdown, once
    /// the events thread, which calls [`Self::handle`], has ended).
    pub async fn drain(&self) {
        self.d.emitter.drain().await;
    }

    /// Persists learned network baselines every `NetworkJudge::SAVE_EVERY`;
    /// a failure is logged, never fatal.
    pub fn persist_baselines(&self, cancel: CancellationToken) {
        let Some(judge) = self.d.network.clone() else { return };
        let emitter = self.d.emitter.clone();
        crate::tasks::spawn_every(NetworkJudge::SAVE_EVERY, cancel, move || {
            let (judge, emitter) = (judge.clone(), emitter.clone());
            async move {
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || judge.save()).await {
                    // Counted: driftwatch_enrich_failures_total{reason="baseline_io"}.
                    emitter.metrics().pipeline.enrich_failure(e.reason());
                    tracing::warn!("{e}");
                }
                ControlFlow::Continue(())
            }
        });
    }

    /// Final save of the baselines (at shutdown).
    pub fn save_baselines(&self) {
        if let Some(judge) = &self.d.network
            && let Err(e) = judge.save()
        {
            tracing::warn!("{e}");
        }
    }
}

#[cfg(test)]
mod tests;
