//! Validation of the outbound exports (`otlp`, `alertmanager`): limits, URLs,
//! TLS, authentication and headers; and what the Alertmanager sink shares with
//! it (URL parsing, reading a secret file). With [`FileChecks::Read`] every file the
//! sections name is read and checked here, so an unreadable CA bundle or a
//! missing token file is a config error at startup (file, line and field), not
//! an export that fails later.

use super::{At, Config, ConfigError, FileChecks, Seg, Tls};

/// Builds the error of a field (`path`), pointing at its value or its key.
type Error<'a> = &'a dyn Fn(&[Seg], At, String) -> ConfigError;

/// Headers `alertmanager.headers` (and `outputs.falcosidekick.headers`) may not set: the sink sets them, or they carry secrets.
pub(super) const RESERVED_HEADERS: [&str; 6] =
    ["authorization", "host", "content-type", "content-length", "transfer-encoding", "connection"];

fn key(section: &str, rest: &[&str]) -> Vec<Seg> {
    std::iter::once(section).chain(rest.iter().copied()).map(Seg::from).collect()
}

pub(super) fn validate(c: &Config, error: Error, files: FileChecks) -> Result<(), ConfigError> {
    otlp(c, error, files)?;
    alertmanager(c, error, files)
}

/// `<section>.tls`: the key pairing and name, then (with `files`) the files.
fn tls(section: &str, t: &Tls, error: Error, files: FileChecks) -> Result<(), ConfigError> {
    let at = |e: crate::tls::TlsError| error(&key(section, &["tls", e.field.key()]), At::Value, e.message);
    crate::tls::check_pairing(t.files()).map_err(at)?;
    if files == FileChecks::Read {
        crate::tls::check_files(t.files()).map_err(at)?;
    }
    Ok(())
}

fn otlp(c: &Config, error: Error, files: FileChecks) -> Result<(), ConfigError> {
    let o = &c.otlp;
    for (k, v, lo, hi) in [
        ("timeout_ms", o.timeout_ms as usize, 100, 600_000),
        ("max_queue_size", o.max_queue_size, 1, 1 << 20),
        ("max_batch_size", o.max_batch_size, 1, 1 << 16),
        ("batch_timeout_ms", o.batch_timeout_ms as usize, 1, 600_000),
    ] {
        if !(lo..=hi).contains(&v) {
            return Err(error(&key("otlp", &[k]), At::Value, format!("{v} must be between {lo} and {hi}")));
        }
    }
    if !(o.endpoint.is_empty() || o.endpoint.starts_with("http://") || o.endpoint.starts_with("https://")) {
        return Err(error(
            &key("otlp", &["endpoint"]),
            At::Value,
            format!("{:?} must be an http:// or https:// URL", o.endpoint),
        ));
    }
    if let Some(k) = o.tls.first_set()
        && o.endpoint.starts_with("http://")
    {
        let msg = format!("TLS settings need an https:// endpoint, and otlp.endpoint is {:?}", o.endpoint);
        return Err(error(&key("otlp", &["tls", k]), At::Value, msg));
    }
    tls("otlp", &o.tls, error, files)
}

fn alertmanager(c: &Config, error: Error, files: FileChecks) -> Result<(), ConfigError> {
    let a = &c.alertmanager;
    let field = |rest: &[&str]| key("alertmanager", rest);
    for (k, v, lo, hi) in [
        ("timeout_ms", a.timeout_ms, 100, 600_000),
        ("group_window_ms", a.group_window_ms, 10, 3_600_000),
        ("resolve_timeout_s", a.resolve_timeout_s, 1, 86_400 * 7),
        ("queue_size", a.queue_size as u64, 1, 1 << 20),
        ("max_retries", a.max_retries as u64, 0, 1000),
        ("retry_initial_ms", a.retry_initial_ms, 1, 600_000),
        ("retry_max_ms", a.retry_max_ms, 1, 3_600_000),
    ] {
        if !(lo..=hi).contains(&v) {
            return Err(error(&field(&[k]), At::Value, format!("{v} must be between {lo} and {hi}")));
        }
    }
    // The URLs: `url` or `urls`, each http(s), each Alertmanager once.
    let urls: Vec<(Vec<Seg>, &String)> = match &a.urls {
        Some(_) if !a.url.is_empty() => {
            return Err(error(&field(&["urls"]), At::Key, "set either url or urls, not both".into()));
        }
        Some(u) if u.is_empty() => {
            let msg = "must list at least one Alertmanager URL (leave url and urls out to turn the push off)";
            return Err(error(&field(&["urls"]), At::Value, msg.into()));
        }
        Some(u) => {
            u.iter().enumerate().map(|(i, url)| ([field(&["urls"]), vec![Seg::Index(i)]].concat(), url)).collect()
        }
        None if a.url.is_empty() => Vec::new(),
        None => vec![(field(&["url"]), &a.url)],
    };
    let mut parsed: Vec<AlertmanagerUrl> = Vec::new();
    for (path, url) in &urls {
        let u = AlertmanagerUrl::parse(url).map_err(|m| error(path, At::Value, m))?;
        if let Some(j) = parsed.iter().position(|p| p.label == u.label) {
            let msg = format!("{url:?} is the same Alertmanager ({}) as urls[{j}]", u.label);
            return Err(error(path, At::Value, msg));
        }
        parsed.push(u);
    }
    if let Some(k) = a.tls.first_set()
        && !parsed.is_empty()
        && !parsed.iter().any(|u| u.https)
    {
        let msg = "TLS settings need an https:// URL, and every Alertmanager URL is http://".to_string();
        return Err(error(&field(&["tls", k]), At::Value, msg));
    }
    tls("alertmanager", &a.tls, error, files)?;
    // Authentication: a bearer token or basic auth, both from files.
    let basic = &a.basic_auth;
    let basic_set = !basic.username.is_empty() || !basic.password_file.is_empty();
    if !a.bearer_token_file.is_empty() && basic_set {
        let msg = "set either bearer_token_file or basic_auth, not both".to_string();
        return Err(error(&field(&["bearer_token_file"]), At::Value, msg));
    }
    if !basic.username.is_empty() && basic.password_file.is_empty() {
        let msg = "basic_auth needs password_file (the password is read from a file, never from the config)";
        return Err(error(&field(&["basic_auth", "username"]), At::Value, msg.into()));
    }
    if basic.username.is_empty() && !basic.password_file.is_empty() {
        let msg = "basic_auth needs a username".to_string();
        return Err(error(&field(&["basic_auth", "password_file"]), At::Value, msg));
    }
    if basic.username.contains(':') {
        let msg = format!("{:?}: a basic auth username cannot contain ':'", basic.username);
        return Err(error(&field(&["basic_auth", "username"]), At::Value, msg));
    }
    for (name, value) in &a.headers {
        let path = field(&["headers", name.as_str()]);
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            let msg = if name.eq_ignore_ascii_case("authorization") {
                format!("{name:?}: use bearer_token_file or basic_auth (secrets come from files, not the config)")
            } else {
                format!("{name:?} is set by the agent itself")
            };
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
        if !a.bearer_token_file.is_empty() {
            secret_file(&a.bearer_token_file, "token")
                .map_err(|m| error(&field(&["bearer_token_file"]), At::Value, m))?;
        }
        if !basic.password_file.is_empty() {
            secret_file(&basic.password_file, "password")
                .map_err(|m| error(&field(&["basic_auth", "password_file"]), At::Value, m))?;
        }
    }
    Ok(())
}

/// Reads a token or password file the way the Alertmanager sink does before
/// every POST: trimmed, non-empty, usable in a header. The secret itself never
/// appears in an error.
pub fn secret_file(path: &str, what: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the {what} file {path:?}: {e}"))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(format!("the {what} file {path:?} is empty"));
    }
    if secret.chars().any(|c| c.is_control()) {
        return Err(format!("the {what} file {path:?} holds more than one line or control characters"));
    }
    Ok(secret.to_string())
}

/// An Alertmanager URL taken apart: where to POST, and its `target` metric label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertmanagerUrl {
    pub https: bool,
    /// `host:port` as in the URL (the default port when it has none).
    pub authority: String,
    /// `<prefix>/api/v2/alerts`.
    pub path: String,
    /// `host:port` plus the URL's path prefix, if any: bounded by the config.
    pub label: String,
}

impl AlertmanagerUrl {
    pub fn parse(url: &str) -> Result<AlertmanagerUrl, String> {
        let PostUrl { https, authority, path } = PostUrl::parse(url, "http://alertmanager.monitoring:9093")?;
        let prefix = path.trim_end_matches('/');
        Ok(AlertmanagerUrl {
            https,
            label: format!("{authority}{prefix}"),
            path: format!("{prefix}/api/v2/alerts"),
            authority,
        })
    }
}

/// An http(s) URL taken apart: where to POST, and the sink's name in logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostUrl {
    pub https: bool,
    /// `host:port` (the scheme's default port when the URL has none).
    pub authority: String,
    /// The URL's path, `/` when it has none.
    pub path: String,
}

impl PostUrl {
    /// `example` is shown in the error of a URL without an http(s) scheme.
    pub fn parse(url: &str, example: &str) -> Result<PostUrl, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("{url:?} must be an http:// or https:// URL (e.g. {example})")),
        };
        let auth = uri.authority().filter(|a| !a.host().is_empty()).ok_or_else(|| format!("{url:?} has no host"))?;
        if auth.as_str().contains('@') {
            // Not echoed: that part may be a password.
            return Err("credentials in the URL are not accepted: use basic_auth with password_file".into());
        }
        if uri.query().is_some() {
            return Err(format!("{url:?}: a query string is not accepted"));
        }
        let authority = match auth.port_u16() {
            Some(_) => auth.as_str().to_string(),
            None => format!("{}:{}", auth.as_str(), if https { 443 } else { 80 }),
        };
        let path = if uri.path().is_empty() { "/".to_string() } else { uri.path().to_string() };
        Ok(PostUrl { https, authority, path })
    }
}
