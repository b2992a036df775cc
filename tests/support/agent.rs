//! Runs the real `driftwatch` binary for end-to-end tests: collects its JSON
//! findings from stdout and reads its HTTP endpoints.

use serde_json::Value;
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

pub struct Agent {
    child: Child,
    pub addr: SocketAddr,
    /// Its admin API (`unix:///...` unless the test chose one).
    pub admin_addr: String,
    findings: Arc<Mutex<Vec<Value>>>,
    /// Every stdout line as written (not re-serialized).
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    /// Stdout lines that were not UTF-8 or not JSON (the reader stops at the first).
    bad_stdout: Arc<Mutex<Vec<String>>>,
}

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr")
}

/// GET over plain HTTP/1.1; returns (status, content-type, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let ctype = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.trim()))
        .unwrap_or("")
        .to_string();
    Ok((status, ctype, body.to_string()))
}

/// GET over HTTP/1.0 with `Accept: application/json` (the answer is not chunked
/// and ends when the connection closes); returns (status, body).
pub fn http10_get_json(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}

impl Agent {
    /// Starts `driftwatch run` with extra args and waits for /readyz.
    pub fn start(extra: &[&str]) -> Agent {
        Self::start_with_env(extra, &[])
    }

    /// Like [`Agent::start`], with extra environment variables (`OTEL_*`, ...);
    /// they override the default `RUST_LOG=info`.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Agent {
        let addr = free_port();
        // Each agent its own admin socket: tests run agents side by side.
        let admin = std::env::temp_dir().join(format!("dw-admin-{}-{}.sock", std::process::id(), addr.port()));
        let admin_arg = format!("unix://{}", admin.display());
        let own_admin = !extra.iter().any(|a| a.starts_with("--admin-addr"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
            .args(["run", "--metrics-addr", &addr.to_string()])
            .args(if own_admin { vec!["--admin-addr", admin_arg.as_str()] } else { vec![] })
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn driftwatch");
        let findings = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let bad_stdout = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let (f, bad, raw) = (findings.clone(), bad_stdout.clone(), lines.clone());
        thread::spawn(move || {
            // Bytes, not `lines()`: a line that is not UTF-8 must be seen, not end the read.
            for line in BufReader::new(out).split(b'\n') {
                let Ok(line) = line else { break };
                let parsed = std::str::from_utf8(&line)
                    .map_err(|e| e.to_string())
                    .and_then(|l| serde_json::from_str::<Value>(l).map_err(|e| e.to_string()));
                match parsed {
                    Ok(v) => {
                        raw.lock().unwrap().push(String::from_utf8(line).expect("checked UTF-8"));
                        f.lock().unwrap().push(v);
                    }
                    Err(e) => {
                        let line = String::from_utf8_lossy(&line).into_owned();
                        bad.lock().unwrap().push(format!("{e}: {line}"));
                        panic!("agent wrote a line on stdout that is not JSON ({e}): {line}");
                    }
                }
            }
        });
        let err = child.stderr.take().expect("stderr");
        let e = stderr.clone();
        thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let mut s = e.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let admin_addr = match extra.iter().position(|a| *a == "--admin-addr") {
            Some(i) => extra.get(i + 1).map(|s| s.to_string()).unwrap_or_default(),
            None => admin_arg,
        };
        let mut agent = Agent { child, addr, admin_addr, findings, lines, stderr, bad_stdout };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("driftwatch exited early ({status}):\n{}", agent.stderr());
            }
            if let Ok((200, _, _)) = http_get(addr, "/readyz") {
                return agent;
            }
            if Instant::now() > deadline {
                panic!("driftwatch not ready after 60s:\n{}", agent.stderr());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The agent's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The agent's resident set size in kB (VmRSS).
    pub fn rss_kb(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Stdout lines so far that were not UTF-8 JSON (with why).
    pub fn bad_stdout_lines(&self) -> Vec<String> {
        self.bad_stdout.lock().unwrap().clone()
    }

    /// All findings so far.
    pub fn findings(&self) -> Vec<Value> {
        self.findings.lock().unwrap().clone()
    }

    /// Every stdout line so far, byte for byte as the agent wrote it.
    pub fn raw_lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Findings of one container so far.
    pub fn findings_of(&self, container_id: &str) -> Vec<Value> {
        self.findings().into_iter().filter(|f| f["container.id"] == container_id).collect()
    }

    /// Waits until `pred` holds for some finding; returns it, or panics with
    /// everything seen so far.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(f) = self.findings().into_iter().find(|f| pred(f)) {
                return f;
            }
            if Instant::now() > deadline {
                panic!(
                    "no finding for {what} within 15s. Findings:\n{:#?}\nagent stderr:\n{}\nmetrics:\n{}",
                    self.findings(),
                    self.stderr(),
                    self.metrics()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn metrics(&self) -> String {
        http_get(self.addr, "/metrics").map(|r| r.2).unwrap_or_else(|e| format!("<metrics unavailable: {e}>"))
    }

    /// Value of one sample line (exact name with labels) in /metrics.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.parse().ok()))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SIGTERM, then a bounded wait: the agent must shut down cleanly.
        // SAFETY: plain kill(2) on our child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
