//! One container's entry in the registry, with the time rules that decide
//! whether it runs, whether its metadata is still good, and when it goes.

use crate::{
    enrich::{
        cri::{ContainerMeta, Fetched, Lookup},
        overlay::{self, ContainerFs, CopyUp},
    },
    locks::lock,
    procfs,
};
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

/// How long "the runtime does not know this container" is believed. A CRI
/// container is in the runtime's store before its first process runs, so a
/// negative answer for a running process is final (a `ctr`-made container);
/// remembering it spares the runtime one call per event of such containers.
const NEGATIVE_TTL: Duration = Duration::from_secs(30);
/// An unreadable filesystem (no live process to read it through) is tried
/// again after this long.
const FS_RETRY: Duration = Duration::from_secs(10);
/// Copy-up verdicts kept per container; a full table is cleared (cheap to redo).
const MAX_COPY_UPS: usize = 256;

/// What the registry knows of a container's runtime metadata.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaState {
    Found(Arc<ContainerMeta>),
    /// The runtime said it does not know this container.
    NotFound,
    /// Not asked yet, or the answer expired.
    Unknown,
}

#[derive(Debug)]
enum Meta {
    Unknown,
    Found(Arc<ContainerMeta>),
    NotFound(Instant),
}

#[derive(Debug)]
enum Fs {
    Unknown,
    Known(Arc<ContainerFs>),
    Unreadable(Instant),
}

/// What the sources said, and when.
#[derive(Debug)]
struct Seen {
    created: Instant,
    /// A live pid from the last scan that saw the container (0: none).
    pid: u32,
    /// When the last scan that saw it began.
    in_scan: Option<Instant>,
    /// The last listing's word on whether it runs.
    listed_running: bool,
    /// Last time the runtime listed it (any state) or answered for it.
    listed: Option<Instant>,
    /// When a listing first missed it (its metadata grace period starts).
    unlisted_since: Option<Instant>,
    /// When a kernel event first showed it.
    event: Option<Instant>,
    /// Added was published (and Gone not since).
    running: bool,
    /// When Gone was published.
    gone_since: Option<Instant>,
}

/// One container. Shared (`Arc`) by the registry and whoever asked for it;
/// every field has its own lock, held briefly.
#[derive(Debug)]
pub struct Container {
    pub id: String,
    meta: Mutex<Meta>,
    fs: Mutex<Fs>,
    copy_ups: Mutex<HashMap<(String, u64), CopyUp>>,
    config_judged: AtomicBool,
    seen: Mutex<Seen>,
}

impl Container {
    pub(super) fn new(id: &str, now: Instant) -> Self {
        Self {
            id: id.to_string(),
            meta: Mutex::new(Meta::Unknown),
            fs: Mutex::new(Fs::Unknown),
            copy_ups: Mutex::new(HashMap::new()),
            config_judged: AtomicBool::new(false),
            seen: Mutex::new(Seen {
                created: now,
                pid: 0,
                in_scan: None,
                listed_running: false,
                listed: None,
                unlisted_since: None,
                event: None,
                running: false,
                gone_since: None,
            }),
        }
    }

    // ---- runtime metadata ----------------------------------------------------

    /// Metadata good at `now`: found and not unlisted for `grace` or longer.
    pub fn meta_state(&self, now: Instant, grace: Duration) -> MetaState {
        let unlisted_too_long =
            lock(&self.seen).unlisted_since.is_some_and(|g| now.saturating_duration_since(g) >= grace);
        match &*lock(&self.meta) {
            Meta::Found(_) if unlisted_too_long => MetaState::Unknown,
            Meta::Found(m) => MetaState::Found(m.clone()),
            Meta::NotFound(t) if now.saturating_duration_since(*t) < NEGATIVE_TTL => MetaState::NotFound,
            _ => MetaState::Unknown,
        }
    }

    pub(super) fn has_meta(&self) -> bool {
        matches!(&*lock(&self.meta), Meta::Found(_))
    }

    pub(super) fn store_meta(&self, m: Arc<ContainerMeta>, now: Instant) {
        *lock(&self.meta) = Meta::Found(m);
        let mut s = lock(&self.seen);
        s.listed = Some(now);
        s.unlisted_since = None;
    }

    /// Keeps a fetch's answer: a complete one, or "not known". A partial one
    /// (the pod unknown yet) is not kept: the next lookup asks again.
    pub(super) fn store_fetch(&self, got: &Fetched, now: Instant) {
        match &got.lookup {
            Lookup::Found(m) if got.complete => self.store_meta(m.clone(), now),
            Lookup::NotFound => *lock(&self.meta) = Meta::NotFound(now),
            _ => {}
        }
    }

    // ---- liveness --------------------------------------------------------------

    pub(super) fn saw_event(&self, now: Instant) {
        lock(&self.seen).event.get_or_insert(now);
    }

    pub(super) fn saw_in_scan(&self, pid: u32, scan_started: Instant) {
        let mut s = lock(&self.seen);
        s.pid = pid;
        s.in_scan = Some(scan_started);
    }

    pub(super) fn saw_in_listing(&self, running: bool, now: Instant) {
        let mut s = lock(&self.seen);
        s.listed_running = running;
        s.listed = Some(now);
        s.unlisted_since = None;
        drop(s);
        // Listed again: a negative answer is obsolete.
        let mut m = lock(&self.meta);
        if matches!(*m, Meta::NotFound(_)) {
            *m = Meta::Unknown;
        }
    }

    /// A listing that began at `started` did not list it (entries created or
    /// answered for after the listing began are left alone).
    pub(super) fn missed_by_listing(&self, started: Instant, now: Instant) {
        let mut s = lock(&self.seen);
        s.listed_running = false;
        if s.listed.is_some_and(|l| l < started) {
            s.unlisted_since.get_or_insert(now);
        }
    }

    /// Runs now: the last scan saw it, the last fresh listing says it runs,
    /// or an event showed it since the last scan began.
    pub(super) fn runs(&self, scan_started: Instant, listing_fresh: bool) -> bool {
        let s = lock(&self.seen);
        s.in_scan.is_some_and(|t| t >= scan_started)
            || (listing_fresh && s.listed_running)
            || s.event.is_some_and(|t| t >= scan_started)
    }

    /// Records the running state; true when it changed (Added or Gone is due).
    pub(super) fn set_running(&self, runs: bool, now: Instant) -> bool {
        let mut s = lock(&self.seen);
        if s.running == runs {
            return false;
        }
        s.running = runs;
        s.gone_since = (!runs).then_some(now);
        true
    }

    /// A pid the last `/proc` scan found in the container (0: none yet).
    pub fn scanned_pid(&self) -> u32 {
        lock(&self.seen).pid
    }

    /// Published as running (Added, and not Gone since).
    pub fn is_running(&self) -> bool {
        lock(&self.seen).running
    }

    /// Nothing left to keep: not running for `grace` (or never), and its
    /// metadata (if any) unlisted for `grace` too.
    pub(super) fn expired(&self, now: Instant, grace: Duration) -> bool {
        let s = lock(&self.seen);
        let old = |t: Instant| now.saturating_duration_since(t) >= grace;
        let not_running = match (s.running, s.gone_since) {
            (true, _) => false,
            (false, Some(g)) => old(g),
            (false, None) => old(s.created) && s.event.is_none_or(old),
        };
        let listed = s.listed.is_some() && s.unlisted_since.is_none_or(|u| !old(u));
        not_running && !listed
    }

    /// Eviction order: not running before running; then the least recently active.
    pub(super) fn eviction_rank(&self) -> (bool, Instant) {
        let s = lock(&self.seen);
        let active = [Some(s.created), s.in_scan, s.listed, s.event, s.gone_since].into_iter().flatten().max();
        (s.running, active.unwrap_or(s.created))
    }

    // ---- filesystem ------------------------------------------------------------

    /// The container's layers and volumes, read once from the mounts of
    /// `pid` or, when that process is gone, of another live process of the
    /// container (the last scan's, else the first `/proc` finds).
    /// Blocking (reads `/proc`): call off the async workers, or accept one
    /// read per container lifetime. A container without an overlay root is
    /// remembered as such; an unreadable one is retried after a while.
    pub fn fs(&self, pid: u32) -> Arc<ContainerFs> {
        if let Fs::Known(f) = &*lock(&self.fs) {
            return f.clone();
        }
        if let Fs::Unreadable(t) = &*lock(&self.fs)
            && t.elapsed() < FS_RETRY
        {
            return Arc::new(ContainerFs::default());
        }
        let scanned = lock(&self.seen).pid;
        // A pid may have exited and been reused outside the container: read
        // only through processes that are still the container's.
        let ours = |p: u32| p != 0 && procfs::container_of(p).is_some_and(|id| id == self.id);
        let read = [pid, scanned]
            .into_iter()
            .filter(|&p| ours(p))
            .find_map(overlay::container_fs_of)
            .or_else(|| procfs::live_pid_of(&self.id).and_then(overlay::container_fs_of));
        self.remember_fs(read)
    }

    /// Keeps what was read (even without an overlay root), or that nothing was.
    pub(super) fn remember_fs(&self, read: Option<ContainerFs>) -> Arc<ContainerFs> {
        let mut fs = lock(&self.fs);
        match read {
            Some(f) => {
                let f = Arc::new(f);
                *fs = Fs::Known(f.clone());
                f
            }
            None => {
                *fs = Fs::Unreadable(Instant::now());
                Arc::new(ContainerFs::default())
            }
        }
    }

    /// The verdict on an upper-layer file (`path`, inode `ino`), if judged.
    pub fn copy_up(&self, path: &str, ino: u64) -> Option<CopyUp> {
        lock(&self.copy_ups).get(&(path.to_string(), ino)).copied()
    }

    /// Remembers a verdict (not `Unknown`: it may be known later).
    pub fn set_copy_up(&self, path: &str, ino: u64, v: CopyUp) {
        if v == CopyUp::Unknown {
            return;
        }
        let mut m = lock(&self.copy_ups);
        if m.len() >= MAX_COPY_UPS {
            m.clear();
        }
        m.insert((path.to_string(), ino), v);
    }

    /// (filesystems known, copy-up verdicts) held by this entry.
    pub(super) fn cache_sizes(&self) -> (usize, usize) {
        (matches!(&*lock(&self.fs), Fs::Known(_)) as usize, lock(&self.copy_ups).len())
    }

    // ---- configuration drift ---------------------------------------------------

    /// Claims the once-per-container configuration judgement: true the first time.
    pub fn claim_config_judgement(&self) -> bool {
        !self.config_judged.swap(true, Ordering::SeqCst)
    }
}
