//! The container registry: the one place that knows a container.
//!
//! One entry per container id holds what the agent learned about it: its
//! runtime metadata (or that the runtime does not know it), its filesystem
//! layout, its copy-up verdicts, whether its configuration was judged, a live
//! pid, and whether it runs. The registry is fed by
//! - the kernel's events ([`Registry::observe`]): a container seen for the
//!   first time is added at once;
//! - one `/proc` scan every `scan_interval` ([`crate::procfs`]): which
//!   containers have processes;
//! - the runtime's listing every `refresh_interval` and on every
//!   (re)connection, and a fetch on a miss ([`Registry::resolve`]);
//! - the Kubernetes API index, for pods ([`Registry::pod`]).
//!
//! It publishes [`Change::Added`] when a container starts running and
//! [`Change::Gone`] when nothing says it runs any more (neither the last scan,
//! nor the runtime's last listing, nor an event since the scan began);
//! configuration drift judges on `Added`, the per-container series retire on
//! `Gone`. A gone container stays resolvable for `grace` (events are judged
//! after the fact), then its entry, with its caches, is dropped. Bounded by
//! `max_entries`: gone entries are evicted first.

mod entry;

pub use entry::{Container, MetaState};

use crate::{
    enrich::{
        ContainerRef,
        cri::{ContainerMeta, Cri, Link, Listing, Lookup},
        kube::{KubeIndex, PodEntry, WorkloadRef},
    },
    locks::{lock, read, write},
    metrics::{CriMetrics, RegistryMetrics},
    procfs::{self, Snapshot},
};
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

/// Settings of the registry.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// How long a gone container (or one the runtime stopped listing) stays resolvable.
    pub grace: Duration,
    /// Most entries kept.
    pub max_entries: usize,
    /// How often `/proc` is scanned for running containers.
    pub scan_interval: Duration,
    /// How often the runtime is listed.
    pub refresh_interval: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(300),
            max_entries: 16_384,
            scan_interval: Duration::from_secs(5),
            refresh_interval: Duration::from_secs(10),
        }
    }
}

/// A container started or stopped running.
#[derive(Debug, Clone)]
pub enum Change {
    Added(Arc<Container>),
    Gone(Arc<Container>),
}

/// How long the periodic scan trusts what it read about a live process
/// (`procfs::Scanner`): a process that changed cgroup or mount namespace
/// after it was read is seen within this.
const SCAN_REREAD_AFTER: Duration = Duration::from_secs(60);

/// Changes waiting for slow consumers; beyond it they lag and resynchronise.
const CHANGES: usize = 4096;

/// Container ids are random hex the runtime chose: FxHash spreads them as
/// well as SipHash, at a tenth of the cost on the per-event lookup.
type Ids<V> = HashMap<String, V, rustc_hash::FxBuildHasher>;

pub struct Registry {
    me: Weak<Registry>,
    cfg: RegistryConfig,
    entries: RwLock<Ids<Arc<Container>>>,
    cri: Option<Arc<Cri>>,
    kube: Option<Arc<KubeIndex>>,
    changes: broadcast::Sender<Change>,
    snapshots: watch::Sender<Arc<Snapshot>>,
    /// Fetches in flight, so concurrent misses for one id make one call.
    inflight: Mutex<HashMap<String, watch::Receiver<Option<Lookup>>>>,
    /// When the last scan began: an event after it is running evidence.
    scan_started: Mutex<Instant>,
    /// The periodic scan's memory of the processes it read (`procfs::Scanner`).
    scanner: Arc<Mutex<procfs::Scanner>>,
    /// When the runtime last listed successfully.
    listed_at: Mutex<Option<Instant>>,
    /// Milliseconds since `epoch` of the loop's last round, for `/readyz`.
    heartbeat_ms: AtomicU64,
    epoch: Instant,
    metrics: RegistryMetrics,
    cri_metrics: CriMetrics,
}

impl Registry {
    pub fn new(
        cfg: RegistryConfig,
        cri: Option<Arc<Cri>>,
        kube: Option<Arc<KubeIndex>>,
        metrics: RegistryMetrics,
        cri_metrics: CriMetrics,
    ) -> Arc<Self> {
        let now = Instant::now();
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            cfg,
            entries: RwLock::new(Ids::default()),
            cri,
            kube,
            changes: broadcast::Sender::new(CHANGES),
            snapshots: watch::Sender::new(Arc::new(Snapshot::default())),
            inflight: Mutex::new(HashMap::new()),
            scan_started: Mutex::new(now),
            scanner: Arc::new(Mutex::new(procfs::Scanner::new(SCAN_REREAD_AFTER))),
            listed_at: Mutex::new(None),
            heartbeat_ms: AtomicU64::new(0),
            epoch: now,
            metrics,
            cri_metrics,
        })
    }

    pub fn cri(&self) -> Option<&Arc<Cri>> {
        self.cri.as_ref()
    }

    pub fn kube(&self) -> Option<&Arc<KubeIndex>> {
        self.kube.as_ref()
    }

    /// Added/Gone notices from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Every `/proc` snapshot; while anyone holds one, scans also read the
    /// processes' mount namespaces.
    pub fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.subscribe()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Container>> {
        read(&self.entries).get(id).cloned()
    }

    /// The containers running now.
    pub fn running(&self) -> Vec<Arc<Container>> {
        read(&self.entries).values().filter(|e| e.is_running()).cloned().collect()
    }

    /// Entries now (running, or gone within their grace period).
    pub fn len(&self) -> usize {
        read(&self.entries).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps `meta` as if the runtime had listed its container (running):
    /// for runs without a runtime to ask (benchmarks, tests).
    pub fn remember(&self, meta: ContainerMeta) {
        let now = Instant::now();
        let (e, _) = self.entry(&meta.container_id, now);
        e.saw_event(now);
        e.store_meta(Arc::new(meta), now);
    }

    /// The container of a kernel event: a known one costs a read lock; a new
    /// one is added (it runs: it just did something).
    pub fn observe(&self, c: &ContainerRef) -> Arc<Container> {
        if let Some(e) = self.get(&c.id) {
            return e;
        }
        self.add_observed(c)
    }

    /// [`Self::observe`] for a caller that does not need the entry (yet):
    /// the per-event hot path, with no reference count touched.
    pub fn note(&self, c: &ContainerRef) {
        if !read(&self.entries).contains_key(c.id.as_str()) {
            self.add_observed(c);
        }
    }

    fn add_observed(&self, c: &ContainerRef) -> Arc<Container> {
        let now = Instant::now();
        let (e, created) = self.entry(&c.id, now);
        if created {
            e.saw_event(now);
            self.settle(&e, now);
        }
        e
    }

    /// The entry of `id`, created (not yet running) when missing.
    fn entry(&self, id: &str, now: Instant) -> (Arc<Container>, bool) {
        if let Some(e) = self.get(id) {
            return (e, false);
        }
        let mut map = write(&self.entries);
        if let Some(e) = map.get(id) {
            return (e.clone(), false);
        }
        if map.len() >= self.cfg.max_entries.max(1) {
            self.evict_one(&mut map, now);
        }
        let e = Arc::new(Container::new(id, now));
        map.insert(id.to_string(), e.clone());
        self.metrics.tracked.set(map.len() as i64);
        (e, true)
    }

    /// Gone entries first (the longest gone first), then the least recently active.
    fn evict_one(&self, map: &mut Ids<Arc<Container>>, now: Instant) {
        let victim = map.values().min_by_key(|e| e.eviction_rank()).cloned();
        if let Some(v) = victim {
            map.remove(&v.id);
            self.metrics.evicted.inc();
            if v.set_running(false, now) {
                let _ = self.changes.send(Change::Gone(v));
            }
        }
    }

    /// Cached runtime metadata of `id` (exited containers within their grace
    /// period included); never waits.
    pub fn cached(&self, id: &str) -> Option<Arc<ContainerMeta>> {
        match self.get(id)?.meta_state(Instant::now(), self.cfg.grace) {
            MetaState::Found(m) => Some(m),
            _ => None,
        }
    }

    /// What [`Self::resolve`] would answer for `id` without waiting: the
    /// registry's metadata, the runtime's "not known" (a container started by
    /// `ctr`, not the kubelet), or a runtime that was never reachable. None:
    /// ask. Lets a finding go out at once instead of waiting in a task for an
    /// answer that is known. Counted as `resolve` counts it, except a Found
    /// (a cache read, as [`Self::cached`], counted by `resolve` only).
    pub fn settled(&self, id: &str) -> Option<Lookup> {
        if let Some(e) = self.get(id) {
            match e.meta_state(Instant::now(), self.cfg.grace) {
                MetaState::Found(m) => return Some(Lookup::Found(m)),
                MetaState::NotFound => {
                    self.cri_metrics.lookup(true);
                    return Some(Lookup::NotFound);
                }
                MetaState::Unknown => {}
            }
        }
        let reason = self.cri.as_ref()?.never_up()?;
        self.cri_metrics.lookup(false);
        Some(Lookup::Unavailable(reason))
    }

    /// Runtime metadata of `id`: from the registry, else from the runtime, in
    /// one fetch shared by concurrent callers, awaited at most `max_wait` (the
    /// fetch goes on and fills the registry after a caller gave up).
    pub async fn resolve(&self, id: &str, max_wait: Duration) -> Lookup {
        if let Some(known) = self.settled(id) {
            // `settled` leaves a Found hit to its caller (the cache path of a finding does not count one).
            if matches!(known, Lookup::Found(_)) {
                self.cri_metrics.lookup(true);
            }
            return known;
        }
        self.cri_metrics.lookup(false);
        let Some(cri) = self.cri.clone() else { return Lookup::Unavailable("no_endpoint") };
        let mut rx = self.start_fetch(cri, id);
        match tokio::time::timeout(max_wait, rx.wait_for(Option::is_some)).await {
            Ok(Ok(v)) => v.clone().unwrap_or(Lookup::Unavailable("rpc")),
            // The fetch task was dropped (runtime shutting down).
            Ok(Err(_)) => Lookup::Unavailable("rpc"),
            Err(_) => Lookup::Unavailable("timeout"),
        }
    }

    /// Joins the fetch in flight for `id`, or starts one.
    fn start_fetch(&self, cri: Arc<Cri>, id: &str) -> watch::Receiver<Option<Lookup>> {
        let mut inflight = lock(&self.inflight);
        if let Some(rx) = inflight.get(id) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(None);
        inflight.insert(id.to_owned(), rx.clone());
        drop(inflight);
        // The fetch outlives this call (and its caller's timeout), so it owns what it needs.
        let (me, id) = (self.me.clone(), id.to_owned());
        tokio::spawn(async move {
            let got = cri.fetch(&id).await;
            if let Some(me) = me.upgrade() {
                let (e, _) = me.entry(&id, Instant::now());
                e.store_fetch(&got, Instant::now());
                lock(&me.inflight).remove(&id);
            }
            let _ = tx.send(Some(got.lookup));
        });
        rx
    }

    /// The pod of `meta` in the Kubernetes API index, when the API is used.
    pub fn pod(&self, meta: &ContainerMeta) -> Option<Arc<PodEntry>> {
        self.kube.as_ref()?.pod(&meta.namespace, &meta.pod_name)
    }

    /// The owner workload the API resolved for a pod, when it knows the pod.
    pub fn workload(&self, namespace: &str, pod: &str) -> Option<WorkloadRef> {
        self.kube.as_ref()?.workload(namespace, pod)
    }

    /// Time since the loop's last round (None before the first).
    pub fn silent_for(&self) -> Option<Duration> {
        let last = self.heartbeat_ms.load(Ordering::Relaxed);
        (last > 0).then(|| self.epoch.elapsed().saturating_sub(Duration::from_millis(last)))
    }

    /// The loop ran a round within three scan intervals.
    pub fn alive(&self) -> bool {
        let last = Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed));
        let since = self.epoch.elapsed().saturating_sub(last);
        self.heartbeat_ms.load(Ordering::Relaxed) > 0 && since < self.cfg.scan_interval * 3 + Duration::from_secs(1)
    }

    /// Scans, lists and expires until `cancel`: the registry's one task.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut scan = tokio::time::interval(self.cfg.scan_interval);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refresh = tokio::time::interval(self.cfg.refresh_interval);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut link = self.cri.as_ref().map(|c| c.link());
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = scan.tick() => self.scan().await,
                _ = refresh.tick(), if self.cri.is_some() => self.refresh().await,
                changed = async {
                    match link.as_mut() {
                        Some(l) => l.changed().await,
                        None => std::future::pending().await,
                    }
                } => {
                    match changed {
                        // Catch up on what changed while the runtime was away, at once.
                        Ok(()) if link.as_ref().is_some_and(|l| *l.borrow() == Link::Up) => self.refresh().await,
                        Ok(()) => {}
                        Err(_) => link = None,
                    }
                }
            }
            self.heartbeat_ms.store(self.epoch.elapsed().as_millis().max(1) as u64, Ordering::Relaxed);
        }
    }

    /// One `/proc` scan: who runs, who is gone; then expiry.
    pub async fn scan(&self) {
        let started = Instant::now();
        *lock(&self.scan_started) = started;
        let with_mntns = self.snapshots.receiver_count() > 0;
        let scanner = self.scanner.clone();
        let Ok((snap, known)) = tokio::task::spawn_blocking(move || {
            let mut s = lock(&scanner);
            (s.scan(with_mntns, Instant::now()), s.len())
        })
        .await
        else {
            return;
        };
        self.metrics.cache_entries(procfs::CACHE, known);
        self.apply_scan(snap, started, Instant::now());
    }

    fn apply_scan(&self, snap: Snapshot, started: Instant, now: Instant) {
        for (id, pid) in &snap.containers {
            let (e, _) = self.entry(id, now);
            e.saw_in_scan(*pid, started);
        }
        self.settle_all(now);
        self.expire(now);
        self.snapshots.send_replace(Arc::new(snap));
    }

    /// One listing of the runtime: metadata of new containers, which are
    /// listed (the others start their grace period), which run.
    pub async fn refresh(&self) {
        let Some(cri) = &self.cri else { return };
        let started = Instant::now();
        let known = |id: &str| self.get(id).is_some_and(|e| e.has_meta());
        let listing = match cri.list(known).await {
            Ok(l) => l,
            Err(reason) => {
                tracing::debug!(reason, "runtime listing failed");
                return;
            }
        };
        let now = Instant::now();
        self.apply_listing(&listing, started, now);
        *lock(&self.listed_at) = Some(now);
        self.settle_all(now);
        self.expire(now);
    }

    fn apply_listing(&self, l: &Listing, started: Instant, now: Instant) {
        let mut listed: std::collections::HashSet<&str> = l.sandboxes.iter().map(String::as_str).collect();
        for c in &l.containers {
            listed.insert(&c.id);
            let (e, _) = self.entry(&c.id, now);
            if let Some(m) = &c.meta {
                e.store_meta(m.clone(), now);
            }
            e.saw_in_listing(c.running, now);
        }
        for e in read(&self.entries).values() {
            if !listed.contains(e.id.as_str()) {
                e.missed_by_listing(started, now);
            }
        }
    }

    /// Publishes Added/Gone for every entry whose running state changed.
    fn settle_all(&self, now: Instant) {
        let all: Vec<Arc<Container>> = read(&self.entries).values().cloned().collect();
        let mut running = 0;
        for e in &all {
            if self.settle(e, now) {
                running += 1;
            }
        }
        self.metrics.running.set(running);
    }

    /// Decides whether `e` runs now, publishing a change; true when it runs.
    fn settle(&self, e: &Arc<Container>, now: Instant) -> bool {
        let scan_started = *lock(&self.scan_started);
        let listing_fresh =
            lock(&self.listed_at).is_some_and(|t| now.duration_since(t) < self.cfg.refresh_interval * 3);
        let runs = e.runs(scan_started, listing_fresh);
        if e.set_running(runs, now) {
            let change = if runs { Change::Added(e.clone()) } else { Change::Gone(e.clone()) };
            let _ = self.changes.send(change);
        }
        runs
    }

    /// Drops entries gone (and unlisted) for longer than `grace`; updates the cache gauges.
    fn expire(&self, now: Instant) {
        let mut map = write(&self.entries);
        map.retain(|_, e| !e.expired(now, self.cfg.grace));
        self.metrics.tracked.set(map.len() as i64);
        let (fs, copy_ups) = map.values().fold((0, 0), |(f, c), e| {
            let (ef, ec) = e.cache_sizes();
            (f + ef, c + ec)
        });
        drop(map);
        self.metrics.cache_entries("filesystem", fs);
        self.metrics.cache_entries("copy_up", copy_ups);
        if let Some(k) = &self.kube {
            self.metrics.cache_entries("kube_owners", k.owners_cached());
        }
    }
}

#[cfg(test)]
mod tests;
