//! Issue 12, item 3: the admin API's HTTP layer over a real Unix socket and a
//! real TCP listener, with its client and the CLI's `quarantine` verbs against
//! it. Unprivileged.
//!
//! The backend here is a stand-in that records what it was asked: this file
//! tests what the HTTP layer lets through (ids, methods, tokens, limits), and
//! a recording backend is what shows that a refused request never reached
//! it. The real backends (diff, processes, quarantine) are tested end to end
//! on the real kernel and containerd (tests/e2e_ps.rs and the respond tests).

use driftwatch::{
    admin::{self, ApiError, Backend, ClientError, Limits},
    config::AdminAddr,
    metrics::AdminMetrics,
};
use hyper::Method;
use serde_json::{Value, json};
use std::{
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const KNOWN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Records every call; knows one container (by any prefix of its id), which
/// is not quarantined. `gate`: `processes` waits for a message on it first.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
    entered: Mutex<Option<mpsc::Sender<()>>>,
    gate: Mutex<Option<mpsc::Receiver<()>>>,
}

impl Recorder {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn known(&self, what: &str, id: &str) -> Result<String, ApiError> {
        self.calls.lock().unwrap().push(format!("{what} {id}"));
        if KNOWN.starts_with(id) {
            Ok(KNOWN.to_string())
        } else {
            Err(ApiError::not_found(format!("no container {id}")))
        }
    }
}

impl Backend for Recorder {
    fn diff(&self, id: &str, hash_limit: Option<u64>) -> Result<Value, ApiError> {
        let id = self.known("diff", id)?;
        Ok(json!({"container.id": id, "hash_limit": hash_limit, "changes": []}))
    }
    fn processes(&self, id: &str) -> Result<Value, ApiError> {
        let id = self.known("processes", id)?;
        if let Some(tx) = self.entered.lock().unwrap().as_ref() {
            let _ = tx.send(());
        }
        let gate = self.gate.lock().unwrap().take();
        if let Some(rx) = gate {
            let _ = rx.recv_timeout(Duration::from_secs(20));
        }
        Ok(json!({"container.id": id, "processes": []}))
    }
    fn quarantine_list(&self) -> Result<Value, ApiError> {
        self.calls.lock().unwrap().push("quarantine_list".into());
        Ok(json!({"quarantined": [{"container.id": KNOWN, "k8s.pod.name": "web-1"}]}))
    }
    fn quarantine_apply(&self, id: &str) -> Result<Value, ApiError> {
        let id = self.known("quarantine_apply", id)?;
        Ok(json!({"container.id": id, "quarantined": true}))
    }
    fn quarantine_release(&self, id: &str) -> Result<Value, ApiError> {
        let id = self.known("quarantine_release", id)?;
        Err(ApiError::conflict(format!("container {id} is not quarantined")))
    }
    fn capture(&self, id: &str) -> Result<Value, ApiError> {
        let id = self.known("capture", id)?;
        Ok(json!({"container.id": id, "bundle": "/var/lib/driftwatch/evidence/x.tar.gz"}))
    }
}

struct Running {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), admin::AdminError>>,
    metrics: AdminMetrics,
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.expect("server task").expect("server ended cleanly");
    }
}

fn start(addr: AdminAddr, token: Option<&str>, backend: Arc<Recorder>, limits: Limits) -> Running {
    let cancel = CancellationToken::new();
    let mut reg = prometheus_client::registry::Registry::default();
    let metrics = AdminMetrics::register(&mut reg);
    let task = tokio::spawn(admin::serve_with(
        addr,
        token.map(str::to_string),
        backend,
        metrics.clone(),
        limits,
        cancel.clone(),
    ));
    Running { cancel, task, metrics }
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dw-admin-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

async fn wait_for(path: &Path) {
    for _ in 0..200 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} never appeared", path.display());
}

/// One raw HTTP/1.1 request, exactly as written (no client normalises the
/// path): the status, the headers (lower-case names) and the body as JSON.
async fn raw<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    head: &str,
) -> (u16, Vec<(String, String)>, Value) {
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head in {text:?}"));
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = serde_json::from_str(body).unwrap_or_else(|_| panic!("body not JSON: {body:?}"));
    (status, headers, body)
}

async fn get_unix(sock: &Path, path: &str) -> (u16, Vec<(String, String)>, Value) {
    let s = tokio::net::UnixStream::connect(sock).await.unwrap();
    raw(s, &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")).await
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_routes_ids_and_refusals() {
    let dir = temp_dir("unix");
    let sock = dir.join("run/admin.sock");
    let b = Arc::new(Recorder::default());
    let srv = start(AdminAddr::Unix(sock.clone()), None, b.clone(), Limits::default());
    wait_for(&sock).await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert!(std::fs::symlink_metadata(&sock).unwrap().file_type().is_socket());
    assert_eq!(mode(&sock), 0o600, "the socket is root's only");
    assert_eq!(mode(sock.parent().unwrap()), 0o700, "a directory we create is root's only");

    let addr = AdminAddr::Unix(sock.clone());
    let (status, v) = admin::call(&addr, None, Method::GET, "/healthz").await.unwrap();
    assert_eq!((status, v), (200, json!({"status": "ok"})));
    let (status, v) =
        admin::call(&addr, None, Method::GET, &format!("/v1/containers/{KNOWN}/processes")).await.unwrap();
    assert_eq!((status, &v["container.id"]), (200, &json!(KNOWN)));
    let (status, v) = admin::call(&addr, None, Method::GET, "/v1/containers/0123/diff?hash_limit=4096").await.unwrap();
    assert_eq!((status, &v["hash_limit"]), (200, &json!(4096)), "a prefix goes to the backend as given");
    let (status, v) = admin::call(&addr, None, Method::GET, "/v1/quarantine").await.unwrap();
    assert_eq!((status, &v["quarantined"][0]["k8s.pod.name"]), (200, &json!("web-1")));
    let (status, _) = admin::call(&addr, None, Method::POST, "/v1/containers/0123/evidence").await.unwrap();
    assert_eq!(status, 200);
    // Unknown id: the backend's 404.
    let (status, v) = admin::call(&addr, None, Method::GET, "/v1/containers/fff/processes").await.unwrap();
    assert_eq!(status, 404);
    assert_eq!(v["error"], "no container fff");

    let before = b.calls();
    let long = "a".repeat(65);
    let huge = "b".repeat(10_000);
    for (path, want) in [
        ("/v1/containers/../../etc/passwd/diff".to_string(), 400),
        ("/v1/containers/%2e%2e/%2e%2e/etc/passwd/diff".to_string(), 400),
        ("/v1/containers/..%2F..%2Fetc%2Fpasswd/processes".to_string(), 400),
        ("/v1/containers/%2Fetc%2Fpasswd/diff".to_string(), 400),
        (format!("/v1/containers/{long}/diff"), 400),
        (format!("/v1/containers/{huge}/processes"), 400),
        ("/v1/containers/ABCDEF/diff".to_string(), 400),
        ("/v1/containers//diff".to_string(), 400),
        ("/v1/containers/abc/../../diff".to_string(), 404),
        ("/v1/containers/abc/diff/../../../etc/passwd".to_string(), 404),
        ("/v1/containers/abc/diff?path=/etc/passwd".to_string(), 400),
        ("/v1/containers/abc/shell".to_string(), 404),
        ("/metrics".to_string(), 404),
        ("/".to_string(), 404),
    ] {
        let (status, headers, body) = get_unix(&sock, &path).await;
        assert_eq!(status, want, "{path}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{path}: {body}");
        assert_eq!(header(&headers, "content-type"), Some("application/json"), "{path}");
        if want == 400 && path.contains("containers/") && !path.contains('?') {
            assert!(body["error"].as_str().unwrap().contains("container id"), "{path}: names the problem: {body}");
            assert!(body["error"].as_str().unwrap().len() < 300, "a long id is not echoed whole");
        }
    }
    assert_eq!(b.calls(), before, "no refused request reached the backend");

    // Wrong method: 405 naming what is allowed.
    let s = tokio::net::UnixStream::connect(&sock).await.unwrap();
    let (status, headers, body) =
        raw(s, &format!("PUT /v1/containers/{KNOWN}/quarantine HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"))
            .await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(header(&headers, "allow"), Some("POST, DELETE"));
    // A body where none is taken.
    let s = tokio::net::UnixStream::connect(&sock).await.unwrap();
    let big = "x".repeat(4096);
    let (status, _, body) = raw(
        s,
        &format!(
            "POST /v1/containers/{KNOWN}/evidence HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{big}",
            big.len()
        ),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(b.calls(), before, "nor did these");

    // Counted by route template, never by path.
    assert_eq!(srv.metrics.requests_count("/v1/containers/{id}/diff", 400), 5);
    assert_eq!(srv.metrics.requests_count("/v1/containers/{id}/processes", 404), 1);
    assert!(srv.metrics.requests_count("unmatched", 404) >= 4);
    srv.stop().await;
    assert!(!sock.exists(), "the socket is removed at shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_sockets_are_replaced_live_ones_and_files_are_not() {
    let dir = temp_dir("stale");
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("admin.sock");
    // A socket left by a killed agent: bound, nobody listening.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let b = Arc::new(Recorder::default());
    let srv = start(AdminAddr::Unix(sock.clone()), None, b.clone(), Limits::default());
    let addr = AdminAddr::Unix(sock.clone());
    let mut ok = false;
    for _ in 0..200 {
        if matches!(admin::call(&addr, None, Method::GET, "/healthz").await, Ok((200, _))) {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ok, "served on the replaced socket");
    // A second server on the live socket refuses to steal it.
    let second = start(AdminAddr::Unix(sock.clone()), None, b.clone(), Limits::default());
    let e = second.task.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), "in_use", "{e}");
    srv.stop().await;
    // A regular file is never removed.
    std::fs::write(&sock, "not a socket").unwrap();
    let third = start(AdminAddr::Unix(sock.clone()), None, b, Limits::default());
    let e = third.task.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), "not_a_socket", "{e}");
    assert_eq!(std::fs::read_to_string(&sock).unwrap(), "not a socket");
    let _ = std::fs::remove_dir_all(&dir);
}

fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_needs_the_bearer_token_on_every_request() {
    let b = Arc::new(Recorder::default());
    let a = free_port();
    // No token, no TCP listener.
    let srv = start(AdminAddr::Tcp(a), None, b.clone(), Limits::default());
    assert_eq!(srv.task.await.unwrap().unwrap_err().kind(), "token_required");
    let srv = start(AdminAddr::Tcp(a), Some("s3cret\n"), b.clone(), Limits::default());
    let addr = AdminAddr::Tcp(a);
    let mut up = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(a).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(up);
    let path = format!("/v1/containers/{KNOWN}/processes");
    for (token, want) in [(None, 401), (Some("wrong"), 401), (Some("s3cret"), 200), (Some("s3cre"), 401)] {
        let (status, v) = admin::call(&addr, token, Method::GET, &path).await.unwrap();
        assert_eq!(status, want, "token {token:?}: {v}");
        if want == 401 {
            assert!(v["error"].as_str().unwrap().contains("bearer token"), "{v}");
        }
    }
    // Every request: the health check too; the challenge names the scheme.
    let s = tokio::net::TcpStream::connect(a).await.unwrap();
    let (status, headers, _) = raw(s, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 401);
    assert!(header(&headers, "www-authenticate").is_some_and(|v| v.starts_with("Bearer")), "{headers:?}");
    // Unauthenticated requests learn nothing of the routes and reach nothing.
    let s = tokio::net::TcpStream::connect(a).await.unwrap();
    let (status, _, _) = raw(s, "GET /v1/containers/../../etc/passwd/diff HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 401);
    assert_eq!(b.calls(), vec![format!("processes {KNOWN}")], "only the authorised call reached the backend");
    assert_eq!(srv.metrics.requests_count("/v1/containers/{id}/processes", 401), 3);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_backend_answers_503_with_retry_after() {
    let dir = temp_dir("busy");
    let sock = dir.join("admin.sock");
    let (entered_tx, entered_rx) = mpsc::channel();
    let (gate_tx, gate_rx) = mpsc::channel();
    let b = Arc::new(Recorder {
        entered: Mutex::new(Some(entered_tx)),
        gate: Mutex::new(Some(gate_rx)),
        ..Default::default()
    });
    let srv = start(AdminAddr::Unix(sock.clone()), None, b.clone(), Limits { busy: 1, ..Limits::default() });
    wait_for(&sock).await;
    let path = format!("/v1/containers/{KNOWN}/processes");
    let (s2, p2) = (sock.clone(), path.clone());
    let slow = tokio::spawn(async move { get_unix(&s2, &p2).await.0 });
    tokio::task::spawn_blocking(move || entered_rx.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("the first call runs");
    let (status, headers, body) = get_unix(&sock, &path).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(header(&headers, "retry-after"), Some("2"));
    assert!(body["error"].as_str().unwrap().contains("busy"));
    // Not everything is refused: the health check needs no backend.
    assert_eq!(get_unix(&sock, "/healthz").await.0, 200);
    gate_tx.send(()).unwrap();
    assert_eq!(slow.await.unwrap(), 200);
    assert_eq!(get_unix(&sock, &path).await.0, 200, "free again");
    srv.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_say_what_to_check() {
    let missing = AdminAddr::Unix("/nonexistent/driftwatch/admin.sock".into());
    let e = admin::call(&missing, None, Method::GET, "/v1/quarantine").await.unwrap_err();
    assert!(matches!(e, ClientError::NoSocket { .. }), "{e}");
    assert!(e.to_string().contains("is the agent running"), "{e}");
    let closed = AdminAddr::Tcp(free_port());
    let e = admin::call(&closed, Some("t"), Method::GET, "/v1/quarantine").await.unwrap_err();
    assert_eq!(e.kind(), "refused", "{e}");
    assert!(e.to_string().contains("is the agent running"), "{e}");
}

/// The CLI's `quarantine` verbs against the API, as a user runs them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_cli_through_the_socket() {
    let dir = temp_dir("cli");
    let sock = dir.join("admin.sock");
    let b = Arc::new(Recorder::default());
    let srv = start(AdminAddr::Unix(sock.clone()), None, b.clone(), Limits::default());
    wait_for(&sock).await;
    let url = format!("unix://{}", sock.display());
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let o = std::process::Command::new(env!("CARGO_BIN_EXE_driftwatch"))
                .args(&args)
                .env_remove("DRIFTWATCH_ADMIN_ADDR")
                .env_remove("DRIFTWATCH_ADMIN_TOKEN_FILE")
                .output()
                .unwrap();
            (
                o.status.code(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
    };
    let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (code, out, err) = run(args(&["quarantine", "list", "--admin-addr", &url, "-o", "json"])).await.unwrap();
    assert_eq!(code, Some(0), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["quarantined"][0]["container.id"], KNOWN);
    let (code, out, err) = run(args(&["quarantine", "list", "--admin-addr", &url, "-o", "table"])).await.unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("CONTAINER.ID") && out.contains("web-1"), "{out}");
    let (code, out, err) =
        run(args(&["quarantine", "apply", "0123", "--admin-addr", &url, "-o", "json"])).await.unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["quarantined"], true);
    // Releasing a container that is not quarantined: exit 1, with the reason.
    let (code, _, err) = run(args(&["quarantine", "release", "0123", "--admin-addr", &url])).await.unwrap();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not quarantined"), "{err}");
    // An unknown container: exit 2, the agent's message.
    let (code, _, err) = run(args(&["quarantine", "apply", "ffff", "--admin-addr", &url])).await.unwrap();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("404") && err.contains("no container ffff"), "{err}");
    // No agent: exit 2, and what to check.
    let gone = format!("unix://{}/nope.sock", dir.display());
    let (code, _, err) = run(args(&["quarantine", "list", "--admin-addr", &gone])).await.unwrap();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("is the agent running"), "{err}");
    // Bad input never leaves the CLI.
    let (code, _, err) = run(args(&["quarantine", "apply", "xyz!", "--admin-addr", &url])).await.unwrap();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not 1-64 lower-case hex"), "{err}");
    assert_eq!(
        b.calls(),
        vec![
            "quarantine_list".to_string(),
            "quarantine_list".into(),
            "quarantine_apply 0123".into(),
            "quarantine_release 0123".into(),
            "quarantine_apply ffff".into()
        ]
    );
    srv.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
