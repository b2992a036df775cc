//! What the HTTP push sinks (Alertmanager, falcosidekick) share: the client
//! over rustls, credentials read from their files before every POST, fixed
//! extra headers, one POST with a deadline, and the retry backoff.

use crate::{config, tls};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use std::{collections::BTreeMap, sync::Arc, time::Duration};

/// How a request authenticates: nothing, a bearer token or basic auth, both
/// read from their files before every POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Auth {
    None,
    Bearer { token_file: String },
    Basic { username: String, password_file: String },
}

impl Auth {
    /// From a section's `bearer_token_file` and `basic_auth` (validated with the config).
    pub(super) fn new(bearer_token_file: &str, basic: &config::BasicAuth) -> Auth {
        if !bearer_token_file.is_empty() {
            Auth::Bearer { token_file: bearer_token_file.to_string() }
        } else if !basic.username.is_empty() {
            Auth::Basic { username: basic.username.clone(), password_file: basic.password_file.clone() }
        } else {
            Auth::None
        }
    }

    /// The `Authorization` value, from the files as they are now.
    pub(super) fn header(&self) -> Result<Option<HeaderValue>, String> {
        use base64::Engine;
        let value = match self {
            Auth::None => return Ok(None),
            Auth::Bearer { token_file } => format!("Bearer {}", config::secret_file(token_file, "token")?),
            Auth::Basic { username, password_file } => {
                let password = config::secret_file(password_file, "password")?;
                let pair = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
                format!("Basic {pair}")
            }
        };
        let mut v =
            HeaderValue::from_str(&value).map_err(|_| "the credentials are not a valid header value".to_string())?;
        v.set_sensitive(true);
        Ok(Some(v))
    }
}

pub(super) type HttpsConnector = hyper_rustls::HttpsConnector<HttpConnector>;

/// Where to POST, and how.
#[derive(Clone)]
pub(super) struct Endpoint {
    uri: hyper::Uri,
    client: Client<HttpsConnector, Full<Bytes>>,
    auth: Arc<Auth>,
    headers: Arc<HeaderMap>,
}

impl Endpoint {
    /// `authority` and `path` come from a validated URL.
    pub(super) fn new(
        https: bool,
        authority: &str,
        path: &str,
        connector: HttpsConnector,
        auth: Arc<Auth>,
        headers: Arc<HeaderMap>,
    ) -> Result<Endpoint, String> {
        let scheme = if https { "https" } else { "http" };
        let uri = format!("{scheme}://{authority}{path}")
            .parse()
            .map_err(|e| format!("{scheme}://{authority}{path} is not a URL: {e}"))?;
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1)
            .build(connector);
        Ok(Endpoint { uri, client, auth, headers })
    }
}

/// The fixed extra headers of `section` (validated with the config).
pub(super) fn extra_headers(section: &str, headers: &BTreeMap<String, String>) -> Result<HeaderMap, String> {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("{section}.headers.{k}: {e}"))?;
        let value = HeaderValue::from_str(v).map_err(|e| format!("{section}.headers.{k}: {e}"))?;
        h.insert(name, value);
    }
    Ok(h)
}

/// Why a POST failed: retry, or give up at once (4xx: the request itself is wrong).
#[derive(Debug)]
pub(super) enum PostError {
    Retry(String),
    Permanent(String),
}

/// One JSON POST, answered within `timeout`.
pub(super) async fn post(t: &Endpoint, body: Bytes, timeout: Duration) -> Result<(), PostError> {
    let attempt = async {
        let mut req = hyper::Request::post(t.uri.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, concat!("driftwatch/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(body))
            .map_err(|e| PostError::Permanent(format!("request: {e}")))?;
        for (k, v) in t.headers.iter() {
            req.headers_mut().insert(k.clone(), v.clone());
        }
        if let Some(v) = t.auth.header().map_err(PostError::Retry)? {
            req.headers_mut().insert(AUTHORIZATION, v);
        }
        let resp = t.client.request(req).await.map_err(|e| PostError::Retry(tls::error_chain(&e)))?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
        if status.is_success() {
            Ok(())
        } else if status.is_client_error() && status != hyper::StatusCode::TOO_MANY_REQUESTS {
            Err(PostError::Permanent(format!("{status}: {text}")))
        } else {
            Err(PostError::Retry(format!("{status}: {text}")))
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(PostError::Retry(format!("no answer within {timeout:?}"))),
    }
}

/// The wait before retry number `attempt` (from 1): `initial_ms` doubling up to `max_ms`.
pub(super) fn backoff(initial_ms: u64, max_ms: u64, attempt: u32) -> Duration {
    Duration::from_millis(initial_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(20)).min(max_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_read_from_their_files_at_every_request() {
        let dir = std::env::temp_dir().join(format!("driftwatch-http-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "first\n").unwrap();
        let none = config::BasicAuth::default();
        let auth = Auth::new(&token.display().to_string(), &none);
        let h = auth.header().unwrap().unwrap();
        assert_eq!(h, "Bearer first");
        assert!(h.is_sensitive());
        std::fs::write(&token, "rotated").unwrap();
        assert_eq!(auth.header().unwrap().unwrap(), "Bearer rotated", "a rotated token is used at once");
        std::fs::remove_file(&token).unwrap();
        let e = auth.header().unwrap_err();
        assert!(e.contains("cannot read the token file"), "{e}");
        let pw = dir.join("pw");
        std::fs::write(&pw, "pw\n").unwrap();
        let basic = config::BasicAuth { username: "dw".into(), password_file: pw.display().to_string() };
        assert_eq!(Auth::new("", &basic).header().unwrap().unwrap(), "Basic ZHc6cHc=");
        assert_eq!(Auth::new("", &none), Auth::None);
        assert_eq!(Auth::None.header().unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
        let h = BTreeMap::from([("X-Scope-OrgID".to_string(), "tenant-1".to_string())]);
        assert_eq!(extra_headers("alertmanager", &h).unwrap()["x-scope-orgid"], "tenant-1");
    }

    #[test]
    fn backoff_doubles_up_to_the_max() {
        assert_eq!(backoff(500, 30_000, 1), Duration::from_millis(500));
        assert_eq!(backoff(500, 30_000, 3), Duration::from_millis(2000));
        assert_eq!(backoff(500, 30_000, 100), Duration::from_millis(30_000));
    }
}
