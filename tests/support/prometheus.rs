//! A real Prometheus server (Debian's `prometheus` package, installed by
//! scripts/install-deps.sh with service starts denied) on a free loopback port,
//! with its own temporary storage, scraping given targets every second and
//! evaluating rule files every second, sending alerts to an Alertmanager.
//! Killed on drop.

use serde_json::Value;
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// $DRIFTWATCH_PROMETHEUS_BIN, else the Debian package's binary.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("DRIFTWATCH_PROMETHEUS_BIN") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from("/usr/bin/prometheus");
    assert!(p.exists(), "prometheus not found: run scripts/install-deps.sh (or set DRIFTWATCH_PROMETHEUS_BIN)");
    p
}

pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
}

/// Percent-encodes a query-string value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Prometheus {
    /// Scrapes `target` as job "driftwatch" every 1 s, evaluates `rule_files`
    /// every 1 s and sends alerts to the Alertmanager at `alertmanager`.
    pub fn start(target: SocketAddr, rule_files: &[&Path], alertmanager: SocketAddr) -> Prometheus {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let dir = std::env::temp_dir().join(format!("driftwatch-prom-{}-{}", std::process::id(), addr.port()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let rules: Vec<String> = rule_files
            .iter()
            .map(|p| {
                format!(
                    "  - {}\n",
                    std::fs::canonicalize(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).display()
                )
            })
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n{}\
             scrape_configs:\n  - job_name: driftwatch\n    static_configs:\n      - targets: ['{target}']\n\
             alerting:\n  alertmanagers:\n    - api_version: v2\n      static_configs:\n        - targets: ['{alertmanager}']\n",
            rules.concat()
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(binary())
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg(format!("--web.external-url=http://{addr}/"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn prometheus");
        let mut p = Prometheus { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = p.child.try_wait() {
                panic!("prometheus exited ({st}):\n{}", p.log());
            }
            if p.get("/-/ready").map(|(s, _)| s == 200).unwrap_or(false) {
                return p;
            }
            assert!(Instant::now() < deadline, "prometheus not ready in 30s:\n{}", p.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// GET over HTTP/1.0 (the answer is not chunked); (status, body).
    pub fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        super::agent::http10_get_json(self.addr, path)
    }

    /// An instant query: Ok(data) or Err(the API's error, or the transport's).
    pub fn query(&self, expr: &str) -> Result<Value, String> {
        let (status, body) =
            self.get(&format!("/api/v1/query?query={}", urlencode(expr))).map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("HTTP {status}: {e}: {body}"))?;
        if v["status"] == "success" {
            Ok(v["data"].clone())
        } else {
            Err(format!("HTTP {status}: {}: {}", v["errorType"], v["error"]))
        }
    }

    /// The result vector of an instant query (panics on error).
    pub fn vector(&self, expr: &str) -> Vec<Value> {
        let d = self.query(expr).unwrap_or_else(|e| panic!("query {expr}: {e}"));
        d["result"].as_array().cloned().unwrap_or_default()
    }

    /// `GET /api/v1/alerts`: the alerts of the rules, pending and firing.
    pub fn alerts(&self) -> Vec<Value> {
        let (_, body) = self.get("/api/v1/alerts").expect("GET /api/v1/alerts");
        let v: Value = serde_json::from_str(&body).expect("alerts JSON");
        v["data"]["alerts"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until `expr` returns a non-empty vector.
    pub fn wait_for(&self, expr: &str, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.query(expr).ok().and_then(|d| d["result"].as_array().cloned()).unwrap_or_default();
            if !r.is_empty() {
                return r;
            }
            assert!(Instant::now() < deadline, "Prometheus: {expr} still empty after {timeout:?}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
