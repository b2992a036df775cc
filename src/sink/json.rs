//! Findings as JSON lines on stdout (one object per line): the finding's own
//! JSON, or Falco's event (`outputs.stdout.format`).
//!
//! Written by whoever hands the finding over, without a thread of its own:
//! the events thread (`crate::bpf::reader`) writes all the findings of a
//! look at the ring buffer in one `write` when the look ends. A hand-over to
//! a writer thread cost a wakeup per batch, and on a VM a wakeup costs more
//! than the batch (about 40% of the agent's CPU in a shell storm went to
//! waking that thread and to its side of the switch).
//!
//! Never blocking: a pipe or a terminal is written through the agent's own
//! open file description of it (reopened from `/proc/self/fd/1`, so
//! `O_NONBLOCK` touches nobody else's), a socket with `MSG_DONTWAIT`; regular
//! files and `/dev/null` do not block. What a full pipe refuses waits in a
//! buffer of at most `cap` findings (the queue `findings_stdout`: its depth,
//! capacity and drops are exported as before) and is written, in order, by a
//! small task as soon as the pipe has room.

use crate::classify::Finding;
use crate::config::OutputFormat;
use crate::metrics::Metrics;
use bytes::Bytes;
use std::{
    collections::VecDeque,
    io::Write,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::{io::unix::AsyncFd, sync::Notify};

/// How far the stdout sink has got: what it took (`sent`, counted by the
/// fan-out), what it wrote or failed to (`done`), and when it last moved.
/// The difference is unwritten: a blocked pipe holds it.
#[derive(Clone, Debug)]
pub struct Progress {
    sent: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    last_ms: Arc<AtomicU64>,
    epoch: Instant,
}

impl Progress {
    fn new(sent: Arc<AtomicU64>) -> Self {
        Self { sent, done: Arc::new(AtomicU64::new(0)), last_ms: Arc::new(AtomicU64::new(0)), epoch: Instant::now() }
    }

    /// Findings taken so far.
    pub fn taken(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Findings taken and not written yet.
    pub fn pending(&self) -> u64 {
        self.sent.load(Ordering::SeqCst).saturating_sub(self.done.load(Ordering::SeqCst))
    }

    /// Time since the sink last wrote anything (or started).
    pub fn since_progress(&self) -> Duration {
        self.epoch.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::SeqCst)))
    }

    fn moved(&self) {
        self.last_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::SeqCst);
    }

    fn finished(&self, n: u64) {
        self.done.fetch_add(n, Ordering::SeqCst);
    }
}

/// Bytes a batch holds back at most before it writes (a pipe's default size).
const FLUSH_BYTES: usize = 64 << 10;

/// How stdout is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A regular file, `/dev/null`, a block device: writes do not block.
    Plain,
    /// A pipe, FIFO or terminal, reopened with `O_NONBLOCK`.
    NonBlocking,
    /// A socket (a journald stream): `send(MSG_DONTWAIT)`.
    Socket,
}

/// What waits to be written: bytes, and where each line ends in them.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    ends: VecDeque<usize>,
    /// Open batches ([`Stdout::batch`]): lines are written when the last closes.
    batching: usize,
}

/// The stdout sink: findings go in with [`Stdout::offer`], whoever calls it.
pub struct Stdout {
    fd: OwnedFd,
    kind: Kind,
    format: OutputFormat,
    cap: usize,
    pending: Mutex<Pending>,
    progress: Progress,
    metrics: Arc<Metrics>,
    /// `driftwatch_cache_entries{cache="finding_headers"}`, set at each write.
    headers: prometheus_client::metrics::gauge::Gauge,
    /// `driftwatch_cache_entries{cache="finding_boxes"}`, set at each write.
    boxes: prometheus_client::metrics::gauge::Gauge,
    /// Wakes the task that writes once the pipe has room.
    blocked: Notify,
}

impl Stdout {
    /// The sink on the process's stdout, in `format`, holding at most `cap`
    /// unwritten findings, registered with `fanout` as `queue`. Must run
    /// inside the tokio runtime (a pipe's late writes run on it).
    pub fn start_on(
        format: OutputFormat,
        cap: usize,
        queue: &'static str,
        fanout: &mut super::Fanout,
        metrics: &Arc<Metrics>,
    ) -> std::io::Result<Arc<Self>> {
        let (fd, kind) = open_stdout()?;
        let me = Self::registered(fd, kind, format, cap, queue, fanout, metrics);
        me.clone().spawn_late_writer()?;
        Ok(me)
    }

    /// The sink on a file whose writes never block (a regular file,
    /// `/dev/null`) instead of stdout: the agent's own path from a finding to
    /// its write, for the pipeline bench and tests.
    pub fn on_file(
        file: std::fs::File,
        format: OutputFormat,
        cap: usize,
        queue: &'static str,
        fanout: &mut super::Fanout,
        metrics: &Arc<Metrics>,
    ) -> Arc<Self> {
        Self::registered(file.into(), Kind::Plain, format, cap, queue, fanout, metrics)
    }

    /// The sink on `fd`, declared in the metrics and registered with `fanout` as `queue`.
    fn registered(
        fd: OwnedFd,
        kind: Kind,
        format: OutputFormat,
        cap: usize,
        queue: &'static str,
        fanout: &mut super::Fanout,
        metrics: &Arc<Metrics>,
    ) -> Arc<Self> {
        metrics.sinks.declare_sink("stdout");
        let sent = Arc::new(AtomicU64::new(0));
        let me = Arc::new(Self::new(fd, kind, format, cap, sent.clone(), metrics.clone()));
        fanout.add_stdout(queue, me.clone(), sent, metrics);
        me
    }

    fn new(fd: OwnedFd, kind: Kind, format: OutputFormat, cap: usize, sent: Arc<AtomicU64>, m: Arc<Metrics>) -> Self {
        Self {
            fd,
            kind,
            format,
            cap: cap.max(1),
            pending: Mutex::default(),
            progress: Progress::new(sent),
            headers: m.registry_stats.cache_gauge(crate::classify::finding::HEADERS_CACHE),
            boxes: m.registry_stats.cache_gauge(crate::classify::finding::POOL_CACHE),
            metrics: m,
            blocked: Notify::new(),
        }
    }

    /// How far it has got, as a handle that outlives the sink.
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// Findings taken and not written yet, and how many it holds at most.
    pub fn depth(&self) -> (usize, usize) {
        (crate::locks::lock(&self.pending).ends.len(), self.cap)
    }

    /// Takes one finding (rendered as a Falco event once, in `falco`, when
    /// that is the format); false when `cap` findings are still unwritten.
    pub fn offer(&self, f: &Finding, falco: &mut Option<Bytes>) -> bool {
        let mut p = crate::locks::lock(&self.pending);
        if p.ends.len() >= self.cap {
            return false;
        }
        let before = p.buf.len();
        match self.format {
            OutputFormat::Json => append_line(&mut p.buf, f),
            OutputFormat::Falco => {
                p.buf.extend_from_slice(falco.get_or_insert_with(|| super::falco::render(f)));
                p.buf.push(b'\n');
            }
        }
        let end = p.buf.len();
        p.ends.push_back(end);
        // A batch holds its lines back, but not past a pipe's default size or
        // half the cap: a long batch neither grows the buffer nor makes the
        // cap refuse findings. Only the line that crosses a bound writes (a
        // full pipe then leaves the rest to the late writer, not to a
        // retried write per finding).
        let crossed = (before < FLUSH_BYTES && end >= FLUSH_BYTES) || p.ends.len() == self.cap.div_ceil(2);
        if p.batching == 0 || crossed {
            self.write_pending(&mut p);
        }
        true
    }

    /// Holds the writes of the findings offered until the guard drops, then
    /// writes them at once (one `write` for all the findings of a look at the
    /// ring buffer: `crate::agent`'s handler of the events thread).
    pub fn batch(self: &Arc<Self>) -> Batch {
        crate::locks::lock(&self.pending).batching += 1;
        Batch(self.clone())
    }

    /// Writes what is pending, as far as stdout takes it without blocking.
    fn write_pending(&self, p: &mut Pending) {
        let mut off = 0;
        let mut failed = false;
        while off < p.buf.len() {
            match self.write(&p.buf[off..]) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(n) => off += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.blocked.notify_one();
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "stdout write failed");
                    failed = true;
                    break;
                }
            }
        }
        let written = p.ends.iter().take_while(|&&e| e <= off).count();
        p.ends.drain(..written);
        let mut lost = 0;
        if failed {
            // A closed or broken stdout: these lines will not be written; counted.
            lost = p.ends.len();
            p.ends.clear();
            off = p.buf.len();
        }
        if off > 0 {
            p.buf.drain(..off);
            p.ends.iter_mut().for_each(|e| *e -= off);
            self.progress.moved();
        }
        if p.buf.is_empty() && p.buf.capacity() > 1 << 20 {
            p.buf = Vec::new(); // a stall's backlog does not stay resident
        }
        if written + lost > 0 {
            self.headers.set(crate::classify::finding::headers_cached() as i64);
            self.boxes.set(crate::classify::finding::pooled() as i64);
            self.progress.finished((written + lost) as u64);
            self.metrics.sinks.sink_results("stdout", true, written as u64);
            self.metrics.sinks.sink_results("stdout", false, lost as u64);
        }
    }

    fn write(&self, b: &[u8]) -> std::io::Result<usize> {
        let fd = self.fd.as_raw_fd();
        // SAFETY: a valid fd we own, a valid buffer of b.len() bytes.
        let n = unsafe {
            match self.kind {
                Kind::Socket => libc::send(fd, b.as_ptr().cast(), b.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL),
                _ => libc::write(fd, b.as_ptr().cast(), b.len()),
            }
        };
        if n < 0 { Err(std::io::Error::last_os_error()) } else { Ok(n as usize) }
    }

    /// The task that writes what a full pipe refused, once it has room.
    fn spawn_late_writer(self: Arc<Self>) -> std::io::Result<()> {
        if self.kind == Kind::Plain {
            return Ok(());
        }
        // A duplicate of our fd, owned by the AsyncFd for as long as it is registered.
        let dup = self.fd.try_clone()?;
        // SAFETY: `dup` is owned by the AsyncFd and closed only when it is dropped.
        let afd = unsafe { AsyncFd::register_with_interest(dup, tokio::io::Interest::WRITABLE)? };
        tokio::spawn(async move {
            loop {
                self.blocked.notified().await;
                loop {
                    let Ok(mut ready) = afd.writable().await else { return };
                    let mut p = crate::locks::lock(&self.pending);
                    ready.clear_ready();
                    self.write_pending(&mut p);
                    if p.buf.is_empty() {
                        break;
                    }
                }
            }
        });
        Ok(())
    }

    /// Waits until everything taken is written (at shutdown; a blocked pipe
    /// never lets it end: the caller bounds the wait).
    pub async fn finish(&self) {
        while self.progress.pending() > 0 {
            self.blocked.notify_one();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// An open batch of [`Stdout::batch`].
pub struct Batch(Arc<Stdout>);

impl Drop for Batch {
    fn drop(&mut self) {
        let mut p = crate::locks::lock(&self.0.pending);
        p.batching -= 1;
        if p.batching == 0 && !p.buf.is_empty() {
            self.0.write_pending(&mut p);
        }
    }
}

/// Our own handle on stdout, and how to write it without blocking.
fn open_stdout() -> std::io::Result<(OwnedFd, Kind)> {
    // SAFETY: fstat on fd 1 into a zeroed stat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(1, &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fmt = st.st_mode & libc::S_IFMT;
    // SAFETY: isatty on fd 1.
    let tty = unsafe { libc::isatty(1) } == 1;
    if fmt == libc::S_IFIFO || tty {
        // A new open file description of the same pipe or terminal: its
        // O_NONBLOCK is ours alone (the shell sharing a terminal keeps blocking).
        let path = c"/proc/self/fd/1";
        // SAFETY: open(2) of a NUL-terminated path.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if fd >= 0 {
            // SAFETY: a fresh fd we own.
            return Ok((unsafe { OwnedFd::from_raw_fd(fd) }, Kind::NonBlocking));
        }
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot reopen stdout without blocking; findings are written with blocking writes"
        );
        return dup1().map(|fd| (fd, Kind::Plain));
    }
    let kind = if fmt == libc::S_IFSOCK { Kind::Socket } else { Kind::Plain };
    dup1().map(|fd| (fd, kind))
}

fn dup1() -> std::io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC of fd 1 returns a new fd we own, or -1.
    let fd = unsafe { libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 { Err(std::io::Error::last_os_error()) } else { Ok(unsafe { OwnedFd::from_raw_fd(fd) }) }
}

/// Appends one finding as a JSON line to `buf` (what the stdout sink writes
/// per finding): the same bytes as [`Finding::to_json`] plus the newline, and
/// never half an object, even if serializing failed (then the line is empty).
fn append_line(buf: &mut Vec<u8>, f: &Finding) {
    let start = buf.len();
    if f.write_json(buf).is_err() {
        buf.truncate(start);
    }
    buf.push(b'\n');
}

/// One finding as a JSON line, written to `out` ([`append_line`] into `buf`,
/// reused from finding to finding: no `String` per finding).
pub fn write_line(out: &mut impl Write, f: &Finding, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.clear();
    append_line(buf, f);
    out.write_all(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Classifier, Subject, finding::Detail, rules};
    use std::io::Read;

    const ID: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

    fn finding(n: usize) -> Finding {
        let c = Classifier::new(&crate::config::Config::default());
        let s = Subject { id: ID, runtime: "containerd", pod_uid: None };
        // ~1 KiB a line, so a 64 KiB pipe fills after a few dozen.
        c.finding(
            &rules::SHELL_IN_CONTAINER,
            s,
            n as u64,
            format!("{n} {}", "x".repeat(1000)),
            Detail::Exec(Default::default()),
        )
    }

    /// A pipe whose write end is non-blocking (as `open_stdout` makes stdout).
    fn pipe() -> (std::fs::File, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two fds we then own.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) }, 0);
        // SAFETY: fresh fds we own; the read end is made blocking again.
        unsafe {
            libc::fcntl(fds[0], libc::F_SETFL, 0);
            (std::fs::File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
        }
    }

    fn sink(fd: OwnedFd, kind: Kind, cap: usize) -> (Arc<Stdout>, super::super::Fanout, Arc<Metrics>) {
        let m = Arc::new(Metrics::new());
        let mut fanout = super::super::Fanout::default();
        let s = Stdout::registered(fd, kind, OutputFormat::Json, cap, "findings_stdout", &mut fanout, &m);
        (s, fanout, m)
    }

    /// A series' value in the agent's exposition.
    fn metric(m: &Metrics, series: &str) -> f64 {
        let text = m.encode();
        let line = text.lines().find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '));
        line.and_then(|l| l[series.len()..].trim().parse().ok()).unwrap_or(0.0)
    }

    fn numbers(text: &str) -> Vec<u64> {
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
                v["message"].as_str().unwrap().split(' ').next().unwrap().parse().unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn a_full_pipe_never_blocks_holds_at_most_cap_and_writes_the_rest_in_order_once_read() {
        let (mut rd, wr) = pipe();
        let (s, fanout, m) = sink(wr, Kind::NonBlocking, 200);
        s.clone().spawn_late_writer().unwrap();
        // 300 findings into a 64 KiB pipe nobody reads: none blocks; the
        // pipe takes some, 200 wait, the rest are refused and counted.
        for n in 0..300 {
            fanout.send(finding(n).into(), &m);
        }
        let (depth, cap) = s.depth();
        assert_eq!((depth, cap), (200, 200));
        let written = 300 - 200 - metric(&m, "driftwatch_userspace_drops_total{queue=\"findings_stdout\"}") as usize;
        assert!(written > 20 && written < 100, "the pipe took {written}");
        assert_eq!(s.progress().pending(), 200);
        // Read it all: the task writes what waited, in order, as room appears.
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let mut buf = vec![0u8; 1 << 16];
            while text.lines().count() < written + 200 {
                let n = rd.read(&mut buf).unwrap();
                text.push_str(std::str::from_utf8(&buf[..n]).unwrap());
            }
            text
        });
        tokio::time::timeout(Duration::from_secs(10), s.finish()).await.expect("written once read");
        let text = reader.join().unwrap();
        assert_eq!(numbers(&text), (0..(written + 200) as u64).collect::<Vec<_>>());
        assert_eq!(s.depth().0, 0);
    }

    #[test]
    fn a_batch_writes_early_at_half_the_cap_and_at_a_pipes_size() {
        let (mut rd, wr) = pipe();
        let (s, fanout, m) = sink(wr, Kind::NonBlocking, 10);
        let mut buf = vec![0u8; 1 << 20];
        {
            let _b = s.batch();
            (0..4).for_each(|n| fanout.send(finding(n).into(), &m));
            assert_eq!(s.depth().0, 4, "held");
            fanout.send(finding(4).into(), &m);
            assert_eq!(s.depth().0, 0, "half the cap (5 of 10) written at once: the cap never refuses a batch");
            let n = rd.read(&mut buf).unwrap();
            assert_eq!(numbers(std::str::from_utf8(&buf[..n]).unwrap()), (0..5).collect::<Vec<_>>());
            (5..8).for_each(|n| fanout.send(finding(n).into(), &m));
            assert_eq!(s.depth().0, 3);
        }
        let n = rd.read(&mut buf).unwrap();
        assert_eq!(numbers(std::str::from_utf8(&buf[..n]).unwrap()), (5..8).collect::<Vec<_>>());

        let (mut rd, wr) = pipe();
        // SAFETY: fcntl on a pipe fd we own: room for the whole batch.
        assert!(unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) } > 0);
        let (s, fanout, m) = sink(wr, Kind::NonBlocking, 100_000);
        // How many lines it takes to reach 64 KiB.
        let (mut fit, mut bytes) = (0, 0usize);
        while bytes < FLUSH_BYTES {
            let mut l = Vec::new();
            append_line(&mut l, &finding(fit));
            bytes += l.len();
            fit += 1;
        }
        let _b = s.batch();
        (0..fit - 1).for_each(|n| fanout.send(finding(n).into(), &m));
        assert_eq!(s.depth().0, fit - 1, "held below the pipe's size");
        fanout.send(finding(fit - 1).into(), &m);
        assert_eq!(s.depth().0, 0, "written once the batch reaches 64 KiB");
        let mut got = Vec::new();
        while got.len() < FLUSH_BYTES {
            let n = rd.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(numbers(std::str::from_utf8(&got).unwrap()), (0..fit as u64).collect::<Vec<_>>());
    }

    #[test]
    fn a_batch_is_one_write_and_a_closed_pipe_counts_errors() {
        let (mut rd, wr) = pipe();
        let (s, fanout, m) = sink(wr, Kind::NonBlocking, 100);
        {
            let _b = s.batch();
            for n in 0..3 {
                fanout.send(finding(n).into(), &m);
            }
            assert_eq!(s.depth().0, 3, "held until the batch ends");
        }
        assert_eq!(s.depth().0, 0);
        let mut buf = vec![0u8; 1 << 16];
        let n = rd.read(&mut buf).unwrap();
        assert_eq!(numbers(std::str::from_utf8(&buf[..n]).unwrap()), vec![0, 1, 2], "one write, three lines");
        drop(rd);
        fanout.send(finding(3).into(), &m);
        assert_eq!(s.depth().0, 0, "a broken pipe's lines are not kept");
        assert_eq!(s.progress().pending(), 0);
        let writes = |r: &str| metric(&m, &format!("driftwatch_sink_writes_total{{sink=\"stdout\",result=\"{r}\"}}"));
        assert_eq!((writes("ok"), writes("error")), (3.0, 1.0));
    }
}
