//! Evidence bundles: the playbook's Investigate step done at detection time.
//! For a finding whose step is in `response.capture.on_steps`, one `.tar.gz`
//! per container per window holds the container's diff against its image,
//! its process list, the findings that triggered it and copies of the added or
//! modified executables (what an attacker deletes first).
//!
//! Capture never blocks the pipeline: [`Capture::request`] only names the
//! bundle and queues the job (bounded; a full queue is counted as `dropped`);
//! one worker thread writes bundles and applies the retention. A failure (full
//! disk, unwritable directory) is counted and logged, never fatal.

use crate::config;
use serde_json::{Value, json};
use std::{
    collections::HashMap,
    fs,
    io::{self, Read, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, SystemTime},
};

/// Version of the bundle layout (`manifest.json`'s `format`).
pub const FORMAT: u32 = 1;
/// Jobs waiting for the worker; beyond it a request is dropped and counted.
const QUEUE: usize = 16;
/// Windows remembered (one per container); the oldest is forgotten beyond it.
const MAX_WINDOWS: usize = 4096;

/// What a bundle is made of; the agent's implementation reads the node
/// (`respond::NodeView`), tests may hand in fixed trees.
///
/// Each call finds a live process of the container itself: a bundle is
/// built after the finding, when the process that asked may be gone.
pub trait Collect: Send + Sync + 'static {
    /// The container's diff against its image (the `driftwatch diff` JSON).
    fn diff(&self, container_id: &str, hash_limit: u64) -> Result<Value, String>;
    /// Its process list (the `driftwatch ps` JSON).
    fn processes(&self, container_id: &str) -> Result<Value, String>;
    /// The overlay upper directory, to copy changed executables from.
    fn upper_dir(&self, container_id: &str) -> Option<PathBuf>;
}

/// How one capture ended (`driftwatch_evidence_bundles_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Written,
    Failed,
    /// The queue was full: the request was not captured.
    Dropped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Written => "written",
            Outcome::Failed => "failed",
            Outcome::Dropped => "dropped",
        }
    }
}

/// Told about each bundle: metrics and the OTLP event.
pub type Report = Arc<dyn Fn(&Captured) + Send + Sync>;

/// One finished (or failed) capture.
#[derive(Debug, Clone)]
pub struct Captured {
    pub container_id: String,
    pub path: PathBuf,
    pub outcome: Outcome,
    pub bytes: u64,
    pub files_copied: usize,
    pub error: Option<String>,
    /// How long it took to write.
    pub took: Duration,
}

/// Findings a bundle carries at most: the first of its window. Every
/// finding still goes to every sink; the bundle is the container's state.
pub const MAX_BUNDLE_FINDINGS: usize = 256;

/// Findings of one window, shared with the job until it is written.
type Findings = Arc<Mutex<Held>>;

/// A window's finding lines until its job takes them.
#[derive(Default)]
struct Held {
    lines: Vec<String>,
    /// The job took the lines (the bundle is written or being written):
    /// later findings are not in it, and are not kept (a drift storm's
    /// findings were kept for the rest of the window, unbounded).
    taken: bool,
    /// Findings past [`MAX_BUNDLE_FINDINGS`] before the job took them
    /// (`manifest.json`'s `findings_omitted`).
    omitted: u64,
}

impl Held {
    /// Keeps the line `line` makes, if the bundle will still hold it (the
    /// line is made only then).
    fn keep(&mut self, line: impl FnOnce() -> String) {
        if self.taken {
            return;
        }
        if self.lines.len() >= MAX_BUNDLE_FINDINGS {
            self.omitted += 1;
            return;
        }
        self.lines.push(line());
    }
}

struct Job {
    container_id: String,
    path: PathBuf,
    findings: Findings,
    /// Pod and image facts for the manifest.
    facts: Value,
}

struct Window {
    index: u64,
    path: PathBuf,
    findings: Findings,
    /// Order of creation: the oldest window goes first when full.
    seq: u64,
}

/// The capture front end (cheap, called from the pipeline) and its worker.
pub struct Capture {
    cfg: config::Capture,
    tx: mpsc::SyncSender<Job>,
    windows: Mutex<HashMap<String, Window>>,
    seq: std::sync::atomic::AtomicU64,
    report: Report,
}

impl Capture {
    /// Starts the worker thread. The directory is created lazily by the
    /// worker (a failure there is a counted failure, not a startup error).
    pub fn start(cfg: config::Capture, collect: Arc<dyn Collect>, report: Report) -> Arc<Capture> {
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
        let worker_cfg = cfg.clone();
        let worker_report = report.clone();
        let spawned = std::thread::Builder::new()
            .name("dw-evidence".into())
            .spawn(move || worker(rx, worker_cfg, collect, worker_report));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "evidence: cannot start the capture thread; bundles will be counted as failed");
        }
        Arc::new(Capture { cfg, tx, windows: Mutex::new(HashMap::new()), seq: Default::default(), report })
    }

    /// Whether findings of `step` trigger a capture.
    pub fn wants(&self, step: &str) -> bool {
        self.cfg.on_steps.iter().any(|s| s == step)
    }

    /// Names the bundle that holds (or will hold) the finding whose line
    /// `finding_json` makes, for `container_id`, queueing its capture when
    /// the container has none in this window. The line is made only when
    /// the bundle will hold it (the first [`MAX_BUNDLE_FINDINGS`] of the
    /// window, before the bundle is written). `None` when the request was
    /// dropped (queue full).
    pub fn request(
        &self,
        container_id: &str,
        finding_json: impl FnOnce() -> String,
        facts: impl FnOnce() -> Value,
    ) -> Option<PathBuf> {
        let now = unix_secs(SystemTime::now());
        let index = now / self.cfg.window_s.max(1);
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = windows.get(container_id).filter(|w| w.index == index) {
            w.findings.lock().unwrap_or_else(|p| p.into_inner()).keep(finding_json);
            return Some(w.path.clone());
        }
        let path = bundle_path(Path::new(&self.cfg.dir), container_id, now);
        let findings: Findings = Arc::new(Mutex::new(Held { lines: vec![finding_json()], ..Default::default() }));
        let job = Job {
            container_id: container_id.to_string(),
            path: path.clone(),
            findings: findings.clone(),
            facts: facts(),
        };
        match self.tx.try_send(job) {
            Ok(()) => {
                if windows.len() >= MAX_WINDOWS
                    && let Some(oldest) = windows.iter().min_by_key(|(_, w)| w.seq).map(|(k, _)| k.clone())
                {
                    windows.remove(&oldest);
                }
                let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                windows.insert(container_id.to_string(), Window { index, path: path.clone(), findings, seq });
                Some(path)
            }
            Err(_) => {
                (self.report)(&Captured {
                    container_id: container_id.to_string(),
                    path,
                    outcome: Outcome::Dropped,
                    bytes: 0,
                    files_copied: 0,
                    error: Some("capture queue full".into()),
                    took: Duration::ZERO,
                });
                None
            }
        }
    }

    /// Captures now, outside any window (the admin API's
    /// `POST /v1/containers/{id}/evidence`); waits for the bundle.
    pub fn capture_now(&self, collect: &dyn Collect, container_id: &str, facts: Value) -> Captured {
        let first = bundle_path(Path::new(&self.cfg.dir), container_id, unix_secs(SystemTime::now()));
        // A window's bundle may already have this second's name.
        let path = (0..)
            .map(
                |i| if i == 0 { first.clone() } else { first.with_extension("").with_extension(format!("{i}.tar.gz")) },
            )
            .find(|p| !p.exists() && !tmp_path(p).exists())
            .unwrap_or(first);
        let job = Job { container_id: container_id.to_string(), path, findings: Default::default(), facts };
        let c = write_job(&self.cfg, collect, &job);
        (self.report)(&c);
        c
    }

    /// Finding lines `container_id`'s window keeps now (tests: none once its bundle is written).
    #[cfg(test)]
    fn held(&self, container_id: &str) -> usize {
        let windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        windows.get(container_id).map_or(0, |w| w.findings.lock().unwrap_or_else(|p| p.into_inner()).lines.len())
    }

    /// Forgets a container's window (it is gone).
    pub fn forget(&self, container_id: &str) {
        self.windows.lock().unwrap_or_else(|p| p.into_inner()).remove(container_id);
    }
}

fn worker(rx: mpsc::Receiver<Job>, cfg: config::Capture, collect: Arc<dyn Collect>, report: Report) {
    while let Ok(job) = rx.recv() {
        let c = write_job(&cfg, &*collect, &job);
        report(&c);
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `<dir>/<UTC time>-<short id>.tar.gz`: names sort by time (the retention's order).
pub fn bundle_path(dir: &Path, container_id: &str, unix: u64) -> PathBuf {
    let t = time::OffsetDateTime::from_unix_timestamp(unix as i64).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let short: String = container_id.chars().take(12).collect();
    dir.join(format!("{stamp}-{short}.tar.gz"))
}

/// Writes one bundle; every failure ends in a `Failed` outcome, never a panic.
fn write_job(cfg: &config::Capture, collect: &dyn Collect, job: &Job) -> Captured {
    let start = std::time::Instant::now();
    let mut c = Captured {
        container_id: job.container_id.clone(),
        path: job.path.clone(),
        outcome: Outcome::Failed,
        bytes: 0,
        files_copied: 0,
        error: None,
        took: Duration::ZERO,
    };
    match build(cfg, collect, job) {
        Ok((bytes, files)) => {
            c.outcome = Outcome::Written;
            c.bytes = bytes;
            c.files_copied = files;
            retain(Path::new(&cfg.dir), &cfg.retention, &job.path);
        }
        Err(e) => {
            c.error = Some(e.to_string());
            let _ = fs::remove_file(tmp_path(&job.path));
        }
    }
    c.took = start.elapsed();
    c
}

fn tmp_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Counts what passes through, to bound the bundle while it is written.
struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn build(cfg: &config::Capture, collect: &dyn Collect, job: &Job) -> io::Result<(u64, usize)> {
    let dir = Path::new(&cfg.dir);
    fs::create_dir_all(dir).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    let tmp = tmp_path(&job.path);
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", tmp.display())))?;
    let gz = flate2::write::GzEncoder::new(
        Counting { inner: io::BufWriter::new(file), n: 0 },
        flate2::Compression::default(),
    );
    let mut tar = tar::Builder::new(gz);
    let mtime = unix_secs(SystemTime::now());
    let mut errors: Vec<String> = Vec::new();
    let mut index: Vec<Value> = Vec::new();

    let diff = collect.diff(&job.container_id, cfg.hash_limit_bytes);
    let diff_value = diff.as_ref().map_err(|e| errors.push(format!("diff: {e}"))).ok().cloned();
    if let Some(d) = &diff_value {
        add_json(&mut tar, "diff.json", d, mtime, &mut index)?;
    }
    match collect.processes(&job.container_id) {
        Ok(p) => add_json(&mut tar, "processes.json", &p, mtime, &mut index)?,
        Err(e) => errors.push(format!("processes: {e}")),
    }
    let (findings, omitted) = {
        let mut held = job.findings.lock().unwrap_or_else(|p| p.into_inner());
        held.taken = true;
        (std::mem::take(&mut held.lines), held.omitted)
    };
    let mut lines = findings.join("\n");
    if !lines.is_empty() {
        lines.push('\n');
    }
    add_bytes(&mut tar, "findings.jsonl", lines.as_bytes(), 0o644, mtime, &mut index)?;

    // Copies of the executables that are not the image's, smallest first so
    // a large one cannot crowd out the rest.
    let mut skipped: Vec<Value> = Vec::new();
    let mut copied = 0usize;
    if let (Some(d), Some(upper)) = (&diff_value, collect.upper_dir(&job.container_id)) {
        let mut exes: Vec<(u64, String)> = d["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| {
                c["executable"] == true
                    && c["type"] == "file"
                    && matches!(c["change"].as_str(), Some("added" | "modified"))
            })
            .filter_map(|c| Some((c["size"].as_u64().unwrap_or(0), c["path"].as_str()?.to_string())))
            .collect();
        exes.sort();
        for (size, path) in exes {
            let written = tar.get_ref().get_ref().n;
            if size > cfg.max_file_bytes {
                skipped.push(json!({"path": path, "reason": "max_file_bytes", "size": size}));
                continue;
            }
            if written + size > cfg.max_bundle_bytes {
                skipped.push(json!({"path": path, "reason": "max_bundle_bytes", "size": size}));
                continue;
            }
            match read_in_layer(&upper, &path, cfg.max_file_bytes) {
                Ok(bytes) => {
                    let name = format!("files{}", path);
                    add_bytes(&mut tar, &name, &bytes, 0o600, mtime, &mut index)?;
                    copied += 1;
                }
                Err(e) => skipped.push(json!({"path": path, "reason": "unreadable", "error": e.to_string()})),
            }
        }
    }
    let manifest = json!({
        "format": FORMAT,
        "created": crate::clock::rfc3339(time::OffsetDateTime::now_utc()),
        "k8s.node.name": crate::node::name(),
        "container.id": job.container_id,
        "container": job.facts,
        "driftwatch.version": env!("CARGO_PKG_VERSION"),
        "files": index,
        "skipped": skipped,
        "findings_omitted": omitted,
        "errors": errors,
    });
    add_json(&mut tar, "manifest.json", &manifest, mtime, &mut Vec::new())?;
    let gz = tar.into_inner()?;
    let mut counting = gz.finish()?;
    counting.flush()?;
    let bytes = counting.n;
    let file = counting.inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    fs::rename(&tmp, &job.path)?;
    Ok((bytes, copied))
}

/// Reads `path` (as the container sees it) from the upper layer, never
/// following a symlink the container planted, at most `limit` bytes.
fn read_in_layer(upper: &Path, path: &str, limit: u64) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let rel = Path::new(path.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a plain path"));
    }
    // Every directory on the way must be a real directory of the layer.
    let mut at = upper.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for c in &parts[..parts.len().saturating_sub(1)] {
        at.push(c);
        if !fs::symlink_metadata(&at)?.is_dir() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a parent is not a directory"));
        }
    }
    let f =
        fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(upper.join(rel))?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut out = Vec::new();
    f.take(limit).read_to_end(&mut out)?;
    Ok(out)
}

fn add_json<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    v: &Value,
    mtime: u64,
    index: &mut Vec<Value>,
) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(v).map_err(io::Error::other)?;
    add_bytes(tar, name, &bytes, 0o644, mtime, index)
}

fn add_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
    mode: u32,
    mtime: u64,
    index: &mut Vec<Value>,
) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(bytes.len() as u64);
    h.set_mode(mode);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    // append_data sets the (possibly long) name safely and the checksum.
    tar.append_data(&mut h, name, bytes)?;
    let sha = ring::digest::digest(&ring::digest::SHA256, bytes);
    index.push(json!({"name": name, "bytes": bytes.len(), "sha256": super::diff::hex(sha.as_ref())}));
    Ok(())
}

/// Deletes the oldest bundles past either bound; never the one just written.
fn retain(dir: &Path, r: &config::Retention, keep: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut bundles: Vec<(PathBuf, u64)> = rd
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".tar.gz")))
        .filter_map(|e| Some((e.path(), e.metadata().ok().filter(|m| m.is_file())?.len())))
        .collect();
    // Names start with the UTC time: name order is age order.
    bundles.sort();
    let mut total: u64 = bundles.iter().map(|b| b.1).sum();
    let mut count = bundles.len();
    for (p, len) in bundles {
        if count <= r.max_bundles && total <= r.max_bytes {
            break;
        }
        if p == keep {
            continue;
        }
        match fs::remove_file(&p) {
            Ok(()) => {
                count -= 1;
                total -= len;
                tracing::info!(bundle = %p.display(), "evidence: deleted the oldest bundle (retention)");
            }
            Err(e) => tracing::warn!(bundle = %p.display(), error = %e, "evidence: cannot delete an old bundle"),
        }
    }
}

#[cfg(test)]
mod tests;
