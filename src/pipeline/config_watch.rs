//! Configuration changed under running containers (issue 16): at every
//! refresh, the runtime's status of each running pod container (resources,
//! image, mounts) is compared with the previous one, and the Secret/ConfigMap
//! volumes among its mounts are watched for the kubelet's `..data` swap
//! (inotify on the volume directory, the refresh re-reading the link as a
//! fallback). What was there when a container was first seen is its baseline:
//! never a finding.

use super::emit::{Emitter, apply_metadata};
use crate::{
    classify::{
        Classifier, Subject,
        config_changes::{self, RuntimeParams, VolumeFacts},
        config_drift::Issue,
    },
    containers::Registry,
    enrich::{
        atomic_volume::{self, Snapshot},
        cri::ContainerMeta,
    },
};
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};
use tokio_util::sync::CancellationToken;

mod inotify;

/// Settings of the configuration watch.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mounted_config: bool,
    pub runtime_parameters: bool,
    /// How often the runtime is asked and the volumes re-read.
    pub refresh_every: Duration,
    /// Volumes watched at most (node-wide); more are counted, not watched.
    pub max_volumes: usize,
}

/// Pod containers remembered by (pod uid, container name) for restarts.
const MAX_INSTANCES: usize = 8192;

struct Volume {
    /// As this agent opens it.
    dir: PathBuf,
    facts: VolumeFacts,
    snap: Snapshot,
    watch: Option<i32>,
}

struct Watched {
    meta: Arc<ContainerMeta>,
    params: RuntimeParams,
    volumes: Vec<Volume>,
}

pub struct ConfigWatch {
    settings: Settings,
    classifier: Arc<Classifier>,
    emitter: Arc<Emitter>,
    registry: Arc<Registry>,
    watched: HashMap<String, Watched>,
    /// (pod uid, container name) -> parameters of its last instance.
    instances: HashMap<(String, String), RuntimeParams>,
    inotify: Option<inotify::Inotify>,
    volumes: usize,
}

impl ConfigWatch {
    pub fn new(
        settings: Settings,
        classifier: Arc<Classifier>,
        emitter: Arc<Emitter>,
        registry: Arc<Registry>,
    ) -> Self {
        let inotify = match settings.mounted_config.then(inotify::Inotify::new) {
            Some(Ok(i)) => Some(i),
            Some(Err(e)) => {
                // The refresh still re-reads every volume: later, not blind.
                tracing::warn!(
                    "inotify unavailable, mounted volumes are re-read every {:?}: {e}",
                    settings.refresh_every
                );
                emitter.metrics().pipeline.enrich_failure("inotify_unavailable");
                None
            }
            None => None,
        };
        Self {
            settings,
            classifier,
            emitter,
            registry,
            watched: HashMap::new(),
            instances: HashMap::new(),
            inotify,
            volumes: 0,
        }
    }

    /// Runs until `cancel`.
    pub async fn run(mut self, cancel: CancellationToken) {
        if !self.settings.mounted_config && !self.settings.runtime_parameters {
            return;
        }
        let mut tick = tokio::time::interval(self.settings.refresh_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => self.refresh().await,
                wds = async {
                    match self.inotify.as_mut() {
                        Some(i) => i.changed().await,
                        None => std::future::pending().await,
                    }
                } => match wds {
                    Ok(wds) => self.on_watch(&wds),
                    Err(e) => {
                        tracing::warn!("inotify failed, falling back to re-reading volumes: {e}");
                        self.emitter.metrics().pipeline.enrich_failure("inotify_failed");
                        self.inotify = None;
                    }
                },
            }
        }
    }

    /// One refresh: new containers get a baseline, known ones are compared,
    /// gone ones forgotten.
    async fn refresh(&mut self) {
        let Some(cri) = self.registry.cri().cloned() else { return };
        let running: Vec<_> = self.registry.running().into_iter().map(|c| c.id.clone()).collect();
        let gone: Vec<String> = self.watched.keys().filter(|id| !running.contains(id)).cloned().collect();
        for id in gone {
            self.forget(&id);
        }
        for id in running {
            let Some(meta) = self.registry.cached(&id).filter(|m| m.is_pod_container()) else { continue };
            let Some(status) = cri.status(&id).await else { continue };
            let params = RuntimeParams::from_status(&status);
            if let Some(w) = self.watched.get_mut(&id) {
                let before = std::mem::replace(&mut w.params, params.clone());
                if self.settings.runtime_parameters
                    && let Some(issue) =
                        config_changes::runtime_parameters_changed(&meta.container_name, &before, &params, false)
                {
                    self.report(&meta, issue);
                }
            } else {
                self.first_seen(meta, params, &status.mounts).await;
            }
        }
        let stats = &self.emitter.metrics().registry_stats;
        stats.cache_entries("config_containers", self.watched.len());
        stats.cache_entries("config_volumes", self.volumes);
        // The fallback for missed or unavailable inotify events.
        let ids: Vec<String> = self.watched.keys().cloned().collect();
        for id in ids {
            self.check_volumes(&id, None);
        }
    }

    /// A container seen for the first time: its baseline; a restarted pod
    /// container is compared with its previous instance.
    async fn first_seen(&mut self, meta: Arc<ContainerMeta>, params: RuntimeParams, mounts: &[k8s_cri::v1::Mount]) {
        let key = (meta.pod_uid.clone(), meta.container_name.clone());
        if let Some(prev) = self.instances.get(&key)
            && self.settings.runtime_parameters
        {
            // Resources may legitimately differ after a restart only when
            // resized; the image is what a restart should keep.
            let image = |p: &RuntimeParams| RuntimeParams {
                values: p.values.iter().filter(|(k, _)| **k == "image_ref").map(|(k, v)| (*k, v.clone())).collect(),
            };
            if let Some(issue) =
                config_changes::runtime_parameters_changed(&meta.container_name, &image(prev), &image(&params), true)
            {
                self.report(&meta, issue);
            }
        }
        if self.instances.len() >= MAX_INSTANCES && !self.instances.contains_key(&key) {
            self.instances.clear(); // rebuilt from the running containers
        }
        self.instances.insert(key, params.clone());
        let volumes = if self.settings.mounted_config { self.volumes_of(&meta, mounts).await } else { Vec::new() };
        // Tests wait for this line before they change anything.
        tracing::debug!(container = %meta.container_id, volumes = volumes.len(), "configuration baseline taken");
        self.watched.insert(meta.container_id.clone(), Watched { meta, params, volumes });
    }

    /// The atomic-writer volumes among `mounts`, read (off the runtime) and watched.
    async fn volumes_of(&mut self, meta: &ContainerMeta, mounts: &[k8s_cri::v1::Mount]) -> Vec<Volume> {
        let pod = self.registry.pod(meta);
        let candidates: Vec<(PathBuf, String)> = mounts
            .iter()
            .filter(|m| !m.host_path.is_empty())
            .map(|m| (atomic_volume::reachable(Path::new(&m.host_path)), m.container_path.clone()))
            .collect();
        let read = tokio::task::spawn_blocking(move || {
            candidates
                .into_iter()
                .filter_map(|(dir, path)| match atomic_volume::snapshot(&dir) {
                    Ok(Some(s)) => Some(Ok((dir, path, s))),
                    Ok(None) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let mut out = Vec::new();
        for r in read {
            let (dir, mount_path, snap) = match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!("{e}");
                    self.emitter.metrics().pipeline.enrich_failure("volume_read");
                    continue;
                }
            };
            if self.volumes >= self.settings.max_volumes {
                self.emitter.metrics().pipeline.enrich_failure("volume_watch_limit");
                continue;
            }
            self.volumes += 1;
            let name = atomic_volume::name_of(&dir);
            let object =
                pod.as_ref().and_then(|p| p.volume_objects.get(&name).cloned()).unwrap_or_else(|| name.clone());
            let watch = self.inotify.as_mut().and_then(|i| match i.watch(&dir) {
                Ok(wd) => Some(wd),
                Err(e) => {
                    tracing::debug!("watching {}: {e}", dir.display());
                    self.emitter.metrics().pipeline.enrich_failure("inotify_watch_limit");
                    None
                }
            });
            let facts = VolumeFacts { kind: atomic_volume::kind_of(&dir), name, object, mount_path };
            out.push(Volume { dir, facts, snap, watch });
        }
        out
    }

    /// inotify said these watched directories changed.
    fn on_watch(&mut self, wds: &[i32]) {
        let ids: Vec<String> = self
            .watched
            .iter()
            .filter(|(_, w)| w.volumes.iter().any(|v| v.watch.is_some_and(|wd| wds.contains(&wd))))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.check_volumes(&id, Some(wds));
        }
    }

    /// Re-reads the volumes of `id` whose `..data` moved (only those of
    /// `wds` when given).
    fn check_volumes(&mut self, id: &str, wds: Option<&[i32]>) {
        let Some(w) = self.watched.get_mut(id) else { return };
        let mut issues: Vec<Issue> = Vec::new();
        for v in &mut w.volumes {
            if wds.is_some_and(|wds| !v.watch.is_some_and(|wd| wds.contains(&wd))) {
                continue;
            }
            // One readlink: the swap is the only way the writer changes content.
            if atomic_volume::payload_of(&v.dir).is_none_or(|p| p == v.snap.payload) {
                continue;
            }
            // Small and bounded (MAX_FILES, MAX_BYTES): read inline.
            match atomic_volume::snapshot(&v.dir) {
                Ok(Some(after)) => {
                    let before = std::mem::replace(&mut v.snap, after);
                    issues.extend(config_changes::mounted_config_changed(
                        &w.meta.container_name,
                        &v.facts,
                        &before,
                        &v.snap,
                    ));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!("{e}");
                    self.emitter.metrics().pipeline.enrich_failure("volume_read");
                }
            }
        }
        let meta = w.meta.clone();
        for issue in issues {
            self.report(&meta, issue);
        }
    }

    fn forget(&mut self, id: &str) {
        let Some(w) = self.watched.remove(id) else { return };
        for v in w.volumes {
            self.volumes = self.volumes.saturating_sub(1);
            if let (Some(i), Some(wd)) = (self.inotify.as_mut(), v.watch) {
                i.unwatch(wd);
            }
        }
    }

    fn report(&self, meta: &ContainerMeta, issue: Issue) {
        let subject = Subject { id: &meta.container_id, runtime: meta.runtime_name(), pod_uid: None };
        let mut f = self.classifier.config_finding(subject, issue);
        apply_metadata(&mut f, meta);
        let t = self.emitter.ticket(&meta.container_id);
        self.emitter.emit(t, f.into());
    }
}
