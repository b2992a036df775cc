//! A real Alertmanager (Debian's `prometheus-alertmanager`, installed by
//! scripts/install-deps.sh with service starts denied) on a free loopback
//! port, with a temporary storage path and clustering off. Killed on drop.

use serde_json::Value;
use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Where to find the binary: $DRIFTWATCH_ALERTMANAGER_BIN, else the Debian package's.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("DRIFTWATCH_ALERTMANAGER_BIN") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from("/usr/bin/prometheus-alertmanager");
    if p.exists() {
        return p;
    }
    panic!("prometheus-alertmanager not found: run scripts/install-deps.sh (or set DRIFTWATCH_ALERTMANAGER_BIN)");
}

pub struct Alertmanager {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
}

const CONFIG: &str = "route:\n  receiver: blackhole\n  group_wait: 1s\nreceivers:\n  - name: blackhole\n";

impl Alertmanager {
    pub fn start() -> Alertmanager {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let dir = std::env::temp_dir().join(format!("driftwatch-am-{}-{}", std::process::id(), addr.port()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("alertmanager.yml"), CONFIG).unwrap();
        let log = std::fs::File::create(dir.join("alertmanager.log")).unwrap();
        let child = Command::new(binary())
            .arg(format!("--config.file={}", dir.join("alertmanager.yml").display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn prometheus-alertmanager");
        let mut am = Alertmanager { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = am.child.try_wait() {
                panic!("alertmanager exited ({st}):\n{}", am.log());
            }
            if let Ok((200, _, _)) = super::agent::http_get(addr, "/-/ready") {
                return am;
            }
            assert!(Instant::now() < deadline, "alertmanager not ready in 30s:\n{}", am.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("alertmanager.log")).unwrap_or_default()
    }

    /// `GET /api/v2/alerts` as JSON.
    pub fn alerts(&self) -> Vec<Value> {
        let (status, body) = super::agent::http10_get_json(self.addr, "/api/v2/alerts").expect("GET /api/v2/alerts");
        assert_eq!(status, 200, "GET /api/v2/alerts: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("alerts JSON ({e}): {body}"))
    }

    /// Waits until an alert satisfies `pred`.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(a) = self.alerts().into_iter().find(|a| pred(a)) {
                return a;
            }
            if Instant::now() > deadline {
                panic!("Alertmanager: no alert for {what} within {timeout:?}; has {:#?}", self.alerts());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
