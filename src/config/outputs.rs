//! `outputs:`: the format of the findings on stdout, and the falcosidekick
//! push (src/sink/falcosidekick.rs). With [`FileChecks::Read`] the files the
//! push names (CA bundle, client certificate, token) are read and checked
//! here, like those of the Alertmanager push.

use super::{At, BasicAuth, Config, ConfigError, FileChecks, Seg, Tls, exports::PostUrl};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Outputs {
    pub stdout: Stdout,
    pub falcosidekick: Falcosidekick,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Stdout {
    pub format: Format,
}

/// How a finding is written on stdout.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The finding's own JSON (README "Findings").
    #[default]
    Json,
    /// Falco's JSON output (README "Outputs").
    Falco,
}

/// POSTs every finding, in Falco's JSON, to falcosidekick. Off while `url` is empty.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Falcosidekick {
    /// Base URL, e.g. `http://falcosidekick.falco:2801`; events go to its `/`.
    pub url: String,
    /// TLS of an `https://` URL.
    pub tls: Tls,
    /// `Authorization: Bearer <file content>`, read before every POST (a proxy in front of it).
    pub bearer_token_file: String,
    pub basic_auth: BasicAuth,
    /// Extra request headers; not `Authorization`.
    pub headers: BTreeMap<String, String>,
    /// Deadline of one POST.
    pub timeout_ms: u64,
    /// Events waiting for delivery; beyond it findings are dropped and counted.
    pub queue_size: usize,
    /// Retries of a failed POST (exponential backoff) before the event is given up and counted.
    pub max_retries: u32,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
}

impl Default for Falcosidekick {
    fn default() -> Self {
        Self {
            url: String::new(),
            tls: Tls::default(),
            bearer_token_file: String::new(),
            basic_auth: BasicAuth::default(),
            headers: BTreeMap::new(),
            timeout_ms: 5000,
            queue_size: 1024,
            max_retries: 5,
            retry_initial_ms: 500,
            retry_max_ms: 30_000,
        }
    }
}

type Error<'a> = &'a dyn Fn(&[Seg], At, String) -> ConfigError;

pub(super) fn validate(c: &Config, error: Error, files: FileChecks) -> Result<(), ConfigError> {
    let f = &c.outputs.falcosidekick;
    let field = |rest: &[&str]| -> Vec<Seg> {
        ["outputs", "falcosidekick"].iter().chain(rest.iter()).map(|k| Seg::from(*k)).collect()
    };
    for (k, v, lo, hi) in [
        ("timeout_ms", f.timeout_ms, 100, 600_000),
        ("queue_size", f.queue_size as u64, 1, 1 << 20),
        ("max_retries", f.max_retries as u64, 0, 1000),
        ("retry_initial_ms", f.retry_initial_ms, 1, 600_000),
        ("retry_max_ms", f.retry_max_ms, 1, 3_600_000),
    ] {
        if !(lo..=hi).contains(&v) {
            return Err(error(&field(&[k]), At::Value, format!("{v} must be between {lo} and {hi}")));
        }
    }
    let url = if f.url.is_empty() {
        None
    } else {
        Some(
            PostUrl::parse(&f.url, "http://falcosidekick.falco:2801")
                .map_err(|m| error(&field(&["url"]), At::Value, m))?,
        )
    };
    if let Some(k) = f.tls.first_set()
        && !url.as_ref().is_some_and(|u| u.https)
    {
        let msg = format!("TLS settings need an https:// URL, and outputs.falcosidekick.url is {:?}", f.url);
        return Err(error(&field(&["tls", k]), At::Value, msg));
    }
    let tls_err = |e: crate::tls::TlsError| error(&field(&["tls", e.field.key()]), At::Value, e.message);
    crate::tls::check_pairing(f.tls.files()).map_err(tls_err)?;
    if files == FileChecks::Read {
        crate::tls::check_files(f.tls.files()).map_err(tls_err)?;
    }
    let basic = &f.basic_auth;
    let basic_set = !basic.username.is_empty() || !basic.password_file.is_empty();
    if !f.bearer_token_file.is_empty() && basic_set {
        let msg = "set either bearer_token_file or basic_auth, not both".to_string();
        return Err(error(&field(&["bearer_token_file"]), At::Value, msg));
    }
    if basic_set {
        // The key that is wrong or that needs its partner, as the Alertmanager sink names them.
        let bad = if basic.username.contains(':') {
            Some(("username", "basic_auth's username cannot contain ':'"))
        } else if basic.password_file.is_empty() {
            Some(("username", "basic_auth needs password_file (the password is read from a file)"))
        } else if basic.username.is_empty() {
            Some(("password_file", "basic_auth needs a username"))
        } else {
            None
        };
        if let Some((key, msg)) = bad {
            return Err(error(&field(&["basic_auth", key]), At::Value, msg.into()));
        }
    }
    for (name, value) in &f.headers {
        let path = field(&["headers", name.as_str()]);
        if super::exports::RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            let msg = format!("{name:?} is set by the agent itself (credentials: bearer_token_file or basic_auth)");
            return Err(error(&path, At::Key, msg));
        }
        if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(error(&path, At::Key, format!("{name:?} is not an HTTP header name")));
        }
        if hyper::header::HeaderValue::from_str(value).is_err() {
            return Err(error(&path, At::Value, format!("{value:?} is not a valid HTTP header value")));
        }
    }
    if files == FileChecks::Read {
        if !f.bearer_token_file.is_empty() {
            super::secret_file(&f.bearer_token_file, "token")
                .map_err(|m| error(&field(&["bearer_token_file"]), At::Value, m))?;
        }
        if !basic.password_file.is_empty() {
            super::secret_file(&basic.password_file, "password")
                .map_err(|m| error(&field(&["basic_auth", "password_file"]), At::Value, m))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<Config, String> {
        Config::from_yaml_with(yaml, "t.yaml", FileChecks::Skip).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_json_and_no_push() {
        let c = Config::default();
        assert_eq!(c.outputs.stdout.format, Format::Json);
        assert!(c.outputs.falcosidekick.url.is_empty());
        let c = load("outputs:\n  stdout:\n    format: falco\n  falcosidekick:\n    url: http://sk:2801\n").unwrap();
        assert_eq!(c.outputs.stdout.format, Format::Falco);
        assert_eq!(c.outputs.falcosidekick.url, "http://sk:2801");
    }

    #[test]
    fn bad_values_name_their_field_and_line() {
        let e = load("outputs:\n  stdout:\n    format: yaml\n").unwrap_err();
        assert!(e.contains("line 3") && e.contains("unknown variant `yaml`"), "{e}");
        let e = load("outputs:\n  falcosidekick:\n    url: sk:2801\n").unwrap_err();
        assert!(e.contains("outputs.falcosidekick.url") && e.contains("line 3"), "{e}");
        let e = load("outputs:\n  falcosidekick:\n    url: http://sk\n    queue_size: 0\n").unwrap_err();
        assert!(e.contains("outputs.falcosidekick.queue_size") && e.contains("between 1"), "{e}");
        let e = load("outputs:\n  falcosidekick:\n    url: http://sk\n    tls:\n      server_name: x\n").unwrap_err();
        assert!(e.contains("outputs.falcosidekick.tls.server_name") && e.contains("https://"), "{e}");
        let e = load("outputs:\n  falcosidekick:\n    url: http://sk\n    headers: {Authorization: x}\n").unwrap_err();
        assert!(e.contains("outputs.falcosidekick.headers.Authorization"), "{e}");
        let e = load("outputs:\n  falcosidekick:\n    url: http://sk\n    basic_auth: {username: u}\n").unwrap_err();
        assert!(e.contains("outputs.falcosidekick.basic_auth.username") && e.contains("password_file"), "{e}");
        let e =
            load("outputs:\n  falcosidekick:\n    url: http://sk\n    basic_auth: {password_file: /p}\n").unwrap_err();
        assert!(e.contains("outputs.falcosidekick.basic_auth.password_file") && e.contains("username"), "{e}");
        let e = load("outputs:\n  falcosidekik: {}\n").unwrap_err();
        assert!(e.contains("unknown field `falcosidekik`"), "{e}");
    }

    #[test]
    fn urls() {
        let u = PostUrl::parse("http://sk.falco:2801", "").unwrap();
        assert_eq!((u.https, u.authority.as_str(), u.path.as_str()), (false, "sk.falco:2801", "/"));
        let u = PostUrl::parse("https://sk/prefix/", "").unwrap();
        assert_eq!((u.https, u.authority.as_str(), u.path.as_str()), (true, "sk:443", "/prefix/"));
        for bad in ["ftp://sk", "sk:2801", "http://u:p@sk", "http://sk/?a=1", "http:///x"] {
            assert!(PostUrl::parse(bad, "").is_err(), "{bad}");
        }
    }
}
