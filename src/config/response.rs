//! `admin_addr` and `response`: the investigator's tools on the node (the
//! admin API in src/admin/, evidence capture and quarantine in src/respond/).

use super::{At, Config, ConfigError, Seg};
use serde::Deserialize;
use std::{net::SocketAddr, path::PathBuf};

/// The playbook steps, as findings name them (`playbook_step`).
pub const STEPS: [&str; 6] = ["detect", "validate", "isolate", "investigate", "evict", "remediate"];

/// Where the admin API listens: `unix:///run/driftwatch/admin.sock` (the
/// default: only root on the node reaches it) or `host:port` (then a bearer
/// token is required).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminAddr {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl AdminAddr {
    /// `""` and `"off"` are `None` (no admin API).
    pub fn parse(s: &str) -> Result<Option<AdminAddr>, String> {
        let s = s.trim();
        if s.is_empty() || s == "off" {
            return Ok(None);
        }
        if let Some(p) = s.strip_prefix("unix://") {
            if !p.starts_with('/') {
                return Err(format!("{s:?}: a Unix socket needs an absolute path (unix:///run/driftwatch/admin.sock)"));
            }
            return Ok(Some(AdminAddr::Unix(PathBuf::from(p))));
        }
        s.parse::<SocketAddr>()
            .map(|a| Some(AdminAddr::Tcp(a)))
            .map_err(|_| format!("{s:?} is neither unix:///path/to.sock nor host:port (e.g. 127.0.0.1:8791)"))
    }
}

impl std::fmt::Display for AdminAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminAddr::Unix(p) => write!(f, "unix://{}", p.display()),
            AdminAddr::Tcp(a) => write!(f, "{a}"),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Response {
    pub capture: Capture,
    pub quarantine: Quarantine,
}

/// Evidence bundles written at detection time (the Investigate step).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Capture {
    /// Findings whose playbook step is listed trigger a bundle.
    pub on_steps: Vec<String>,
    /// Where bundles are written (a hostPath in the chart).
    pub dir: String,
    /// One bundle per container per window.
    pub window_s: u64,
    /// Largest executable copied into a bundle.
    pub max_file_bytes: u64,
    /// Largest bundle (the executables stop being copied at this size).
    pub max_bundle_bytes: u64,
    /// Regular files up to this size are hashed (sha256) in the diff.
    pub hash_limit_bytes: u64,
    pub retention: Retention,
}

impl Default for Capture {
    fn default() -> Self {
        Capture {
            on_steps: vec!["isolate".into()],
            dir: "/var/lib/driftwatch/evidence".into(),
            window_s: 300,
            max_file_bytes: 16 << 20,
            max_bundle_bytes: 64 << 20,
            hash_limit_bytes: 64 << 20,
            retention: Retention::default(),
        }
    }
}

/// The oldest bundles are deleted past either bound.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    pub max_bytes: u64,
    pub max_bundles: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { max_bytes: 1 << 30, max_bundles: 100 }
    }
}

/// Node quarantine: cgroup_skb programs that cut a container off the network.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Quarantine {
    /// Findings whose playbook step is listed quarantine their container
    /// (default none: opt-in).
    pub on_steps: Vec<String>,
    /// What a quarantined container may still reach or be reached from:
    /// `CIDR` or `CIDR:port` (`10.0.0.5/32:8789`, `[fd00::/64]:53`).
    pub allow: Vec<String>,
    /// bpffs directory of the pinned programs and links (survive a restart).
    pub pin_dir: String,
    /// Only containers in these policy modes (learn, monitor, protect) are
    /// quarantined, so a workload opts in with its mode; empty: every mode.
    pub modes: Vec<String>,
}

impl Default for Quarantine {
    fn default() -> Self {
        Quarantine {
            on_steps: Vec::new(),
            allow: Vec::new(),
            pin_dir: "/sys/fs/bpf/driftwatch/quarantine".into(),
            modes: Vec::new(),
        }
    }
}

/// One `response.quarantine.allow` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowRule {
    pub net: std::net::IpAddr,
    pub prefix: u8,
    /// 0: any port.
    pub port: u16,
}

impl AllowRule {
    pub fn parse(s: &str) -> Result<AllowRule, String> {
        let bad = || format!("{s:?} is not CIDR or CIDR:port (10.0.0.5/32, 10.0.0.0/8:53, [fd00::/64]:53)");
        let (cidr, port) = if let Some(rest) = s.strip_prefix('[') {
            let (c, tail) = rest.split_once(']').ok_or_else(bad)?;
            let port = match tail {
                "" => 0,
                t => t.strip_prefix(':').and_then(|p| p.parse().ok()).ok_or_else(bad)?,
            };
            (c, port)
        } else {
            match s.rsplit_once(':') {
                Some((c, p)) if !c.contains(':') => (c, p.parse().map_err(|_| bad())?),
                _ => (s, 0),
            }
        };
        let (ip, prefix) = match cidr.split_once('/') {
            Some((ip, p)) => (ip.parse().map_err(|_| bad())?, p.parse::<u8>().map_err(|_| bad())?),
            None => {
                let ip: std::net::IpAddr = cidr.parse().map_err(|_| bad())?;
                (ip, if ip.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if matches!(ip, std::net::IpAddr::V4(_)) { 32 } else { 128 };
        if prefix > max {
            return Err(format!("{s:?}: prefix /{prefix} is longer than {max}"));
        }
        Ok(AllowRule { net: ip, prefix, port })
    }
}

pub(super) fn validate(
    c: &Config,
    error: &dyn Fn(&[Seg], At, String) -> ConfigError,
    files: super::FileChecks,
) -> Result<(), ConfigError> {
    let invalid = |path: &[Seg], m: String| error(path, At::Value, m);
    let item =
        |keys: &[&str], i: usize| -> Vec<Seg> { keys.iter().map(|k| Seg::from(*k)).chain([Seg::Index(i)]).collect() };
    match AdminAddr::parse(&c.admin_addr) {
        Err(e) => return Err(invalid(&[Seg::from("admin_addr")], e)),
        Ok(Some(AdminAddr::Tcp(a))) if c.admin_token_file.is_empty() => {
            return Err(invalid(
                &[Seg::from("admin_addr")],
                format!("{a} is a TCP address: set admin_token_file (a bearer token) too, or use a unix:// socket"),
            ));
        }
        Ok(_) => {}
    }
    if !c.admin_token_file.is_empty() && files == super::FileChecks::Read {
        super::secret_file(&c.admin_token_file, "admin token")
            .map_err(|e| invalid(&[Seg::from("admin_token_file")], e))?;
    }
    let r = &c.response;
    for (keys, steps) in [
        (["response", "capture", "on_steps"], &r.capture.on_steps),
        (["response", "quarantine", "on_steps"], &r.quarantine.on_steps),
    ] {
        for (i, s) in steps.iter().enumerate() {
            if !STEPS.contains(&s.as_str()) {
                return Err(invalid(
                    &item(&keys, i),
                    format!("{s:?} is not a playbook step (one of {})", STEPS.join(", ")),
                ));
            }
            if steps[..i].contains(s) {
                return Err(invalid(&item(&keys, i), format!("{s:?} is listed twice")));
            }
        }
    }
    for (i, m) in r.quarantine.modes.iter().enumerate() {
        if !["learn", "monitor", "protect"].contains(&m.as_str()) {
            return Err(invalid(
                &item(&["response", "quarantine", "modes"], i),
                format!("{m:?} is not a mode (learn, monitor, protect)"),
            ));
        }
    }
    for (i, a) in r.quarantine.allow.iter().enumerate() {
        AllowRule::parse(a).map_err(|e| invalid(&item(&["response", "quarantine", "allow"], i), e))?;
    }
    if r.quarantine.allow.len() > 64 {
        return Err(invalid(
            &[Seg::from("response"), Seg::from("quarantine"), Seg::from("allow")],
            format!("{} entries: at most 64", r.quarantine.allow.len()),
        ));
    }
    for (key, dir) in [("capture", &r.capture.dir), ("quarantine", &r.quarantine.pin_dir)] {
        let field = if key == "capture" { "dir" } else { "pin_dir" };
        if !dir.starts_with('/') {
            return Err(invalid(
                &[Seg::from("response"), Seg::from(key), Seg::from(field)],
                format!("{dir:?} must be an absolute path"),
            ));
        }
    }
    let cap = &r.capture;
    for (k, v, lo, hi) in [
        ("window_s", cap.window_s, 1, 86_400),
        ("max_file_bytes", cap.max_file_bytes, 0, 1 << 34),
        ("max_bundle_bytes", cap.max_bundle_bytes, 1 << 16, 1 << 36),
        ("hash_limit_bytes", cap.hash_limit_bytes, 0, 1 << 36),
    ] {
        if !(lo..=hi).contains(&v) {
            return Err(invalid(
                &[Seg::from("response"), Seg::from("capture"), Seg::from(k)],
                format!("{v} must be between {lo} and {hi}"),
            ));
        }
    }
    let retention = |key: &'static str, message: String| {
        invalid(&[Seg::from("response"), Seg::from("capture"), Seg::from("retention"), Seg::from(key)], message)
    };
    if cap.retention.max_bundles == 0 {
        return Err(retention("max_bundles", "0 must be at least 1".into()));
    }
    if cap.retention.max_bytes < cap.max_bundle_bytes {
        let message = format!(
            "response.capture.retention.max_bytes ({}) must be at least response.capture.max_bundle_bytes ({}): \
             one bundle must fit",
            cap.retention.max_bytes, cap.max_bundle_bytes
        );
        // Under the key the file changed from its default (the line a reader looks at).
        if cap.max_bundle_bytes != Capture::default().max_bundle_bytes {
            return Err(invalid(
                &[Seg::from("response"), Seg::from("capture"), Seg::from("max_bundle_bytes")],
                message,
            ));
        }
        return Err(retention("max_bytes", message));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_addr_forms() {
        assert_eq!(AdminAddr::parse("").unwrap(), None);
        assert_eq!(AdminAddr::parse("off").unwrap(), None);
        assert_eq!(AdminAddr::parse("unix:///run/x.sock").unwrap(), Some(AdminAddr::Unix("/run/x.sock".into())));
        assert_eq!(
            AdminAddr::parse("127.0.0.1:8791").unwrap(),
            Some(AdminAddr::Tcp("127.0.0.1:8791".parse().unwrap()))
        );
        assert!(AdminAddr::parse("unix://rel.sock").is_err());
        assert!(AdminAddr::parse("localhost").is_err());
    }

    #[test]
    fn allow_rules() {
        let r = AllowRule::parse("10.0.0.0/8:53").unwrap();
        assert_eq!((r.prefix, r.port), (8, 53));
        assert_eq!(AllowRule::parse("10.1.2.3").unwrap().prefix, 32);
        assert_eq!(AllowRule::parse("[fd00::/64]:53").unwrap().port, 53);
        assert_eq!(AllowRule::parse("fd00::1").unwrap().prefix, 128);
        assert!(AllowRule::parse("10.0.0.0/33").is_err());
        assert!(AllowRule::parse("10.0.0.0/8:x").is_err());
        assert!(AllowRule::parse("nope").is_err());
    }

    #[test]
    fn bad_response_values_are_named() {
        let e =
            Config::from_yaml("response:\n  quarantine:\n    on_steps: [isolat]\n", "f.yaml").unwrap_err().to_string();
        assert!(e.contains("response.quarantine.on_steps[0]") && e.contains("line 3"), "{e}");
        let e = Config::from_yaml("admin_addr: \"0.0.0.0:8791\"\n", "f.yaml").unwrap_err().to_string();
        assert!(e.contains("admin_token_file"), "{e}");
        let e = Config::from_yaml("admin_token_file: /nonexistent/token\n", "f.yaml").unwrap_err().to_string();
        assert!(e.contains("admin_token_file") && e.contains("/nonexistent/token"), "{e}");
        let e =
            Config::from_yaml("response:\n  quarantine:\n    modes: [enforce]\n", "f.yaml").unwrap_err().to_string();
        assert!(e.contains("response.quarantine.modes[0]"), "{e}");
        let e = Config::from_yaml("response:\n  quarantine:\n    allow: [\"10.0.0.0/40\"]\n", "f.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("response.quarantine.allow[0]"), "{e}");
    }
}
