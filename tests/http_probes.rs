//! Issue 10, item 2: the HTTP endpoints cannot be starved by clients that
//! connect and never finish a request (slowloris). Unprivileged: the agent's
//! own server (`driftwatch::server`) runs in this process, on its own runtime
//! like in the agent, and the clients come from distinct loopback addresses
//! (127.0.0.0/8 is all local on Linux, each address a different peer).

use driftwatch::{
    health::Health,
    metrics::Metrics,
    server::{self, Listener},
};
use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};
use tokio_util::sync::CancellationToken;

/// The probes' peer (the kubelet, Prometheus).
const PROBER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
/// The abusive pod.
const SLOW: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// An answer later than this fails the probe (the kubelet's default timeoutSeconds).
const PROBE_DEADLINE: Duration = Duration::from_secs(1);

/// The agent's HTTP server on its own 2-worker runtime (as in `driftwatch run`):
/// the metrics listener, and with `health_listener` the probes' own.
struct Server {
    addr: SocketAddr,
    health_addr: Option<SocketAddr>,
    cancel: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(metrics: Arc<Metrics>) -> Server {
        Self::start_with(metrics, false)
    }

    fn start_with(metrics: Arc<Metrics>, health_listener: bool) -> Server {
        let cancel = CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let c = cancel.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
                let listener = server::bind(any).await.expect("bind");
                let probes = if health_listener { Some(server::bind(any).await.expect("bind")) } else { None };
                let addrs = (listener.local_addr().unwrap(), probes.as_ref().map(|l| l.local_addr().unwrap()));
                tx.send(addrs).unwrap();
                let health = Arc::new(Health::default());
                if let Some(l) = probes {
                    tokio::spawn(server::serve_as(Listener::Health, l, metrics.clone(), health.clone(), c.clone()));
                }
                server::serve(listener, metrics, health, c).await;
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        });
        let (addr, health_addr) = rx.recv_timeout(Duration::from_secs(10)).expect("server bound");
        Server { addr, health_addr, cancel, thread: Some(thread) }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Every fd a test holds (500 slow clients, the server's side of the admitted
/// ones) fits even where the soft limit is 1024.
fn raise_nofile() {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::from((from, 0)))?;
    s.connect(to).await
}

/// A slowloris connection: half send a request whose headers never end, half
/// send nothing. `None`: the server reset it before the client saw it established.
async fn slow_connection(from: Ipv4Addr, to: SocketAddr, i: usize) -> Option<TcpStream> {
    let mut s = match connect_from(from, to).await {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
        Err(e) => panic!("slow client {i} cannot connect: {e}"),
    };
    if i.is_multiple_of(2) {
        // The server may already have refused it: a failed write is fine.
        let _ = s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: {i}\r\n").as_bytes()).await;
    }
    Some(s)
}

/// One GET as the kubelet makes it (a new connection, `Connection: close`):
/// (time to the complete answer, status, body), or why there was none within `cap`.
async fn probe(from: Ipv4Addr, to: SocketAddr, path: &str, cap: Duration) -> (Duration, Result<(u16, String), String>) {
    let t0 = Instant::now();
    let r = tokio::time::timeout(cap, async {
        let mut s = connect_from(from, to).await.map_err(|e| format!("connect: {e}"))?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.map_err(|e| format!("read: {e}"))?;
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(|| format!("no HTTP answer: {raw:?}"))?;
        let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        Ok((status, body.to_string()))
    })
    .await;
    let r = r.unwrap_or_else(|_| Err(format!("no answer within {cap:?}")));
    (t0.elapsed(), r)
}

/// Whether the server closed `s` (EOF or reset) before `deadline`.
async fn closed_by(s: &mut TcpStream, deadline: tokio::time::Instant) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // an error answer (408, 400) before the close
        }
    }
}

/// The reproduction, scaled up: one pod holds 500 connections to the
/// metrics port without finishing a request; /healthz, /readyz and /metrics
/// must each answer within 1 s, again and again, and the server must close
/// the slow connections itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_within_1s_while_500_slow_connections_are_held() {
    raise_nofile();
    let metrics = Arc::new(Metrics::new());
    let srv = Server::start(metrics.clone());
    let t0 = Instant::now();
    let mut slow = Vec::new();
    for i in 0..500 {
        slow.push(slow_connection(SLOW, srv.addr, i).await);
    }
    let held_since = tokio::time::Instant::now();
    eprintln!("500 slow connections held ({:?} to open them)", t0.elapsed());

    let mut worst = Duration::ZERO;
    let mut n = 0;
    for round in 0..5 {
        for (path, want) in [("/healthz", 200), ("/readyz", 503), ("/metrics", 200)] {
            // Waits well past the deadline so a failure says how late the answer was.
            let (took, r) = probe(PROBER, srv.addr, path, Duration::from_secs(15)).await;
            let (status, body) = r.unwrap_or_else(|e| panic!("round {round}: {path}: {e} (after {took:?})"));
            assert!(
                took < PROBE_DEADLINE,
                "round {round}: {path} answered after {took:?} with 500 slow connections held (deadline {PROBE_DEADLINE:?})"
            );
            assert_eq!(status, want, "round {round}: {path}: {body}");
            if path == "/metrics" {
                assert!(body.contains("driftwatch_build_info") && body.ends_with("# EOF\n"), "{body}");
            }
            worst = worst.max(took);
            n += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("{n} probes with 500 slow connections held: slowest answer {worst:?}");

    // The server ends every slow connection: the excess at once, the admitted
    // ones when their header timeout fires.
    let deadline = held_since + Duration::from_secs(15);
    let mut open = 0;
    for s in slow.iter_mut().flatten() {
        if !closed_by(s, deadline).await {
            open += 1;
        }
    }
    assert_eq!(open, 0, "{open} of 500 slow connections still open 15 s after they connected");
    eprintln!("all 500 slow connections closed by the server after {:?}", held_since.elapsed());

    // The pod got its share (8), the rest was refused at accept; the share timed
    // out (and, had opening them taken longer than that, the next share).
    let share = Listener::Metrics.limits().max_per_peer as u64;
    let count = |reason| metrics.http.rejected_count("metrics", reason);
    eventually(|| count("peer_limit") + count("header_timeout") == 500, "refused + timed out").await;
    assert!(count("header_timeout") >= share && count("peer_limit") >= 400, "{}", count("peer_limit"));
    assert_eq!(count("global_limit") + count("deadline"), 0);
}

async fn eventually(mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "not within 5 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One pod at its share is refused at once, while another pod is served at
/// once; neither waits for the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_cannot_exceed_its_share_while_another_is_served() {
    let metrics = Arc::new(Metrics::new());
    let srv = Server::start(metrics.clone());
    let limits = Listener::Metrics.limits();
    let (greedy, other) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
    let mut held = Vec::new();
    for _ in 0..limits.max_per_peer {
        held.push(connect_from(greedy, srv.addr).await.expect("within its share"));
    }
    let count = |reason| metrics.http.rejected_count("metrics", reason);
    // Admitted (the server accepts without pause), not refused.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count("peer_limit"), 0);

    // One more from the same pod: closed at once, long before any header timeout.
    let t0 = tokio::time::Instant::now();
    if let Ok(mut extra) = connect_from(greedy, srv.addr).await {
        assert!(
            closed_by(&mut extra, t0 + Duration::from_secs(1)).await,
            "the connection beyond the share is closed at once"
        );
    }
    eventually(|| count("peer_limit") == 1, "the refusal counted").await;
    // Even a well-formed request from that pod waits for nothing: refused.
    let (took, r) = probe(greedy, srv.addr, "/healthz", PROBE_DEADLINE).await;
    assert!(r.is_err() && took < PROBE_DEADLINE, "the greedy pod's request is refused at once: {r:?} after {took:?}");
    assert_eq!(count("peer_limit"), 2);

    // Another pod is served at once, and so is its scrape.
    for path in ["/healthz", "/metrics"] {
        let (took, r) = probe(other, srv.addr, path, PROBE_DEADLINE).await;
        let (status, body) = r.unwrap_or_else(|e| panic!("{path} from another pod: {e}"));
        assert_eq!(status, 200, "{body}");
        if path == "/metrics" {
            let line = "driftwatch_http_connections_rejected_total{listener=\"metrics\",reason=\"peer_limit\"} 2";
            assert!(body.contains(line), "{line} missing from\n{body}");
        }
        eprintln!("{path} from another pod while one holds its share: {took:?}");
    }
    assert_eq!(count("global_limit"), 0);

    // The greedy pod's connections are still held (until their header timeout).
    let mut first = held.remove(0);
    assert!(!closed_by(&mut first, tokio::time::Instant::now() + Duration::from_millis(100)).await);
    let t = tokio::time::Instant::now() + limits.header_timeout + Duration::from_secs(2);
    assert!(closed_by(&mut first, t).await, "closed by the header timeout");
}

/// The case per-peer limits cannot cover on their own: a flood from more pods
/// than the metrics listener has room for (100 peers, 500 connections). The
/// probes' own listener, flooded at the same time by one pod, still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_listener_answers_while_the_metrics_listener_is_full() {
    raise_nofile();
    let metrics = Arc::new(Metrics::new());
    let srv = Server::start_with(metrics.clone(), true);
    let health_addr = srv.health_addr.unwrap();
    let count = |listener, reason| metrics.http.rejected_count(listener, reason);
    let (m, h) = (Listener::Metrics.limits(), Listener::Health.limits());
    // 100 pods, 5 connections each (within each one's share): the metrics listener fills up.
    let mut slow = Vec::new();
    for i in 0..500 {
        slow.push(slow_connection(Ipv4Addr::new(127, 0, 1, 1 + (i % 100) as u8), srv.addr, i).await);
    }
    let held_since = tokio::time::Instant::now();
    eventually(|| count("metrics", "global_limit") > 0, "metrics listener full").await;
    // A scrape is refused at once (not queued).
    let (took, r) = probe(PROBER, srv.addr, "/metrics", PROBE_DEADLINE).await;
    assert!(r.is_err() && took < PROBE_DEADLINE, "refused at once: {r:?} after {took:?}");
    // And one pod floods the probes' listener too.
    for i in 0..500 {
        slow.push(slow_connection(SLOW, health_addr, i).await);
    }

    let mut worst = Duration::ZERO;
    for round in 0..5 {
        for (path, want) in [("/healthz", 200), ("/readyz", 503), ("/metrics", 404)] {
            let (took, r) = probe(PROBER, health_addr, path, Duration::from_secs(15)).await;
            let (status, body) =
                r.unwrap_or_else(|e| panic!("round {round}: health listener {path}: {e} (after {took:?})"));
            assert!(took < PROBE_DEADLINE, "round {round}: health listener {path} answered after {took:?}");
            assert_eq!(status, want, "round {round}: {path}: {body}");
            worst = worst.max(took);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("health listener with 1000 slow connections held (500 on each port): slowest answer {worst:?}");

    let deadline = held_since + Duration::from_secs(15);
    let mut open = 0;
    for s in slow.iter_mut().flatten() {
        if !closed_by(s, deadline).await {
            open += 1;
        }
    }
    assert_eq!(open, 0, "{open} slow connections still open 15 s after they connected");
    // Once the flood has timed out, the metrics listener serves again.
    let (_, r) = probe(PROBER, srv.addr, "/metrics", PROBE_DEADLINE).await;
    assert_eq!(r.map(|(s, _)| s), Ok(200));
    // Every slow connection was refused at accept or admitted and timed out (the
    // listener's whole budget, or the pod's share, at least once); the refused scrape too.
    let settled = |l, refused, all| move || count(l, refused) + count(l, "header_timeout") == all;
    eventually(settled("metrics", "global_limit", 501), "metrics: refused + timed out").await;
    eventually(settled("health", "peer_limit", 500), "health: refused + timed out").await;
    assert!(count("metrics", "header_timeout") >= m.max_connections as u64);
    assert!(count("health", "header_timeout") >= h.max_per_peer as u64);
    assert_eq!(count("metrics", "peer_limit"), 0, "5 connections per pod are within its share");
    assert_eq!(count("health", "global_limit"), 0);
    assert_eq!(count("metrics", "deadline") + count("health", "deadline"), 0);
}
