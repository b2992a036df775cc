//! A real Alertmanager (Debian's `prometheus-alertmanager`, installed by
//! scripts/install-deps.sh with service starts denied) on a free loopback
//! port, with a temporary storage path and clustering off. Killed on drop.
//! [`Alertmanager::start_tls`] serves HTTPS through its own `--web.config.file`
//! (exporter-toolkit: TLS, a required client certificate, basic auth users).

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
    /// HTTPS: how the test itself talks to it.
    tls: Option<Client>,
}

/// The test's own HTTPS client settings: TLS config (client certificate), extra headers.
type Client = (std::sync::Arc<rustls::ClientConfig>, Vec<(String, String)>);

/// `--web.config.file` of [`Alertmanager::start_tls`].
pub struct WebTls<'a> {
    pub pki: &'a super::tls::Pki,
    /// Require a client certificate signed by the PKI's CA.
    pub require_client_cert: bool,
    /// A basic auth user: (name, password, the password's bcrypt hash).
    pub basic_auth: Option<(&'a str, &'a str, &'a str)>,
}

const CONFIG: &str = "route:\n  receiver: blackhole\n  group_wait: 1s\nreceivers:\n  - name: blackhole\n";

impl Alertmanager {
    pub fn start() -> Alertmanager {
        Self::start_with(None, CONFIG)
    }

    /// With this `alertmanager.yml` (routes and receivers of the test's own).
    pub fn start_config(config: &str) -> Alertmanager {
        Self::start_with(None, config)
    }

    /// Serving HTTPS with the PKI's server certificate (valid for 127.0.0.1).
    pub fn start_tls(web: WebTls) -> Alertmanager {
        Self::start_with(Some(web), CONFIG)
    }

    fn start_with(web: Option<WebTls>, config: &str) -> Alertmanager {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let dir = std::env::temp_dir().join(format!("driftwatch-am-{}-{}", std::process::id(), addr.port()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("alertmanager.yml"), config).unwrap();
        let log = std::fs::File::create(dir.join("alertmanager.log")).unwrap();
        let mut cmd = Command::new(binary());
        cmd.arg(format!("--config.file={}", dir.join("alertmanager.yml").display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=");
        let mut tls = None;
        if let Some(w) = &web {
            let p = |p: &std::path::Path| p.display().to_string();
            let mut yaml = format!(
                "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
                p(&w.pki.server_cert),
                p(&w.pki.server_key)
            );
            if w.require_client_cert {
                yaml +=
                    &format!("  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n", p(&w.pki.ca));
            }
            let mut headers = Vec::new();
            if let Some((user, password, hash)) = w.basic_auth {
                yaml += &format!("basic_auth_users:\n  {user}: '{hash}'\n");
                use base64::Engine;
                let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                headers.push(("Authorization".to_string(), format!("Basic {pair}")));
            }
            std::fs::write(dir.join("web.yml"), yaml).unwrap();
            cmd.arg(format!("--web.config.file={}", dir.join("web.yml").display()));
            tls = Some((w.pki.client_config(), headers));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn prometheus-alertmanager");
        let mut am = Alertmanager { child, addr, dir, tls };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = am.child.try_wait() {
                panic!("alertmanager exited ({st}):\n{}", am.log());
            }
            if let Ok((200, _)) = am.get("/-/ready") {
                return am;
            }
            assert!(Instant::now() < deadline, "alertmanager not ready in 30s:\n{}", am.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// GET as the test's client: plain, or over TLS with the client certificate and basic auth.
    fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        match &self.tls {
            None => super::agent::http10_get_json(self.addr, path),
            Some((cfg, headers)) => {
                let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                super::tls::https_get(self.addr, path, cfg.clone(), "127.0.0.1", &h)
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("alertmanager.log")).unwrap_or_default()
    }

    /// `GET /api/v2/alerts` as JSON.
    pub fn alerts(&self) -> Vec<Value> {
        let (status, body) = self.get("/api/v2/alerts").expect("GET /api/v2/alerts");
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
