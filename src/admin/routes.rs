//! The admin API's routes: a request line -> what to call, or why not. Pure
//! (tests call it without sockets). The path is taken as sent, never decoded
//! or normalised: a container id is 1-64 lower-case hex characters, so `..`,
//! `%2e%2e`, `%2F` and `/` can never be part of one and are refused before
//! any backend sees them.

use super::ApiError;
use hyper::Method;

/// Route templates: the `route` label of `driftwatch_admin_requests_total`.
pub const HEALTHZ: &str = "/healthz";
pub const QUARANTINE_LIST: &str = "/v1/quarantine";
pub const DIFF: &str = "/v1/containers/{id}/diff";
pub const PROCESSES: &str = "/v1/containers/{id}/processes";
pub const QUARANTINE: &str = "/v1/containers/{id}/quarantine";
pub const EVIDENCE: &str = "/v1/containers/{id}/evidence";
/// Any other path.
pub const UNMATCHED: &str = "unmatched";

/// Every template, for documentation and tests.
pub const TEMPLATES: [&str; 6] = [HEALTHZ, QUARANTINE_LIST, DIFF, PROCESSES, QUARANTINE, EVIDENCE];

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Health,
    Diff { id: String, hash_limit: Option<u64> },
    Processes { id: String },
    QuarantineList,
    QuarantineApply { id: String },
    QuarantineRelease { id: String },
    Capture { id: String },
}

/// Why a request is not served: the error, and for 405 the methods allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub error: ApiError,
    pub allow: Option<&'static str>,
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Self {
        Refused { error, allow: None }
    }
}

/// At most this much of a bad id is quoted back.
const QUOTE_MAX: usize = 80;

fn quote(s: &str) -> String {
    if s.len() <= QUOTE_MAX {
        return format!("{s:?}");
    }
    format!("{:?}... ({} bytes)", crate::escape::cut(s, QUOTE_MAX), s.len())
}

/// A container id or unique prefix: 1-64 lower-case hex characters.
pub fn check_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() {
        return Err(ApiError::bad_request("empty container id: /v1/containers/{id}/..."));
    }
    if id.len() > 64 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(ApiError::bad_request(format!(
            "container id {} is not 1-64 lower-case hex characters (an id or a unique prefix of one)",
            quote(id)
        )));
    }
    Ok(())
}

fn not_allowed(method: &Method, allow: &'static str) -> Refused {
    Refused { error: ApiError::new(405, format!("method {method} not allowed here: use {allow}")), allow: Some(allow) }
}

fn only(method: &Method, allowed: &Method, allow: &'static str) -> Result<(), Refused> {
    if method == allowed { Ok(()) } else { Err(not_allowed(method, allow)) }
}

/// `hash_limit=N` for the diff; nothing for the other routes.
fn query(q: Option<&str>, takes_hash_limit: bool) -> Result<Option<u64>, ApiError> {
    let mut hash_limit = None;
    for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k != "hash_limit" || !takes_hash_limit {
            let takes = if takes_hash_limit { "this route takes hash_limit only" } else { "this route takes none" };
            return Err(ApiError::bad_request(format!("unknown query parameter {}: {takes}", quote(k))));
        }
        if hash_limit.is_some() {
            return Err(ApiError::bad_request("hash_limit given twice"));
        }
        let n = v.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("hash_limit={} is not a number of bytes (0 or more)", quote(v)))
        })?;
        hash_limit = Some(n);
    }
    Ok(hash_limit)
}

/// Routes a request: its template (for the metric) and what to call.
pub fn route(method: &Method, path: &str, q: Option<&str>) -> (&'static str, Result<Call, Refused>) {
    let no_query = |t: &'static str, call: Call| -> (&'static str, Result<Call, Refused>) {
        (t, query(q, false).map(|_| call).map_err(Refused::from))
    };
    match path {
        HEALTHZ => match only(method, &Method::GET, "GET") {
            Ok(()) => no_query(HEALTHZ, Call::Health),
            Err(r) => (HEALTHZ, Err(r)),
        },
        QUARANTINE_LIST => match only(method, &Method::GET, "GET") {
            Ok(()) => no_query(QUARANTINE_LIST, Call::QuarantineList),
            Err(r) => (QUARANTINE_LIST, Err(r)),
        },
        _ => {
            let Some(rest) = path.strip_prefix("/v1/containers/") else {
                return (UNMATCHED, Err(not_found(path)));
            };
            let (id, action) = rest.split_once('/').unwrap_or((rest, ""));
            if let Err(e) = check_id(id) {
                let template = match action {
                    "diff" => DIFF,
                    "processes" => PROCESSES,
                    "quarantine" => QUARANTINE,
                    "evidence" => EVIDENCE,
                    _ => UNMATCHED,
                };
                return (template, Err(e.into()));
            }
            let id = id.to_string();
            let (template, call) = match (action, method) {
                ("diff", &Method::GET) => match query(q, true) {
                    Ok(hash_limit) => return (DIFF, Ok(Call::Diff { id, hash_limit })),
                    Err(e) => return (DIFF, Err(e.into())),
                },
                ("diff", m) => return (DIFF, Err(not_allowed(m, "GET"))),
                ("processes", m) => (PROCESSES, only(m, &Method::GET, "GET").map(|_| Call::Processes { id })),
                ("quarantine", &Method::POST) => (QUARANTINE, Ok(Call::QuarantineApply { id })),
                ("quarantine", &Method::DELETE) => (QUARANTINE, Ok(Call::QuarantineRelease { id })),
                ("quarantine", m) => return (QUARANTINE, Err(not_allowed(m, "POST, DELETE"))),
                ("evidence", m) => (EVIDENCE, only(m, &Method::POST, "POST").map(|_| Call::Capture { id })),
                _ => return (UNMATCHED, Err(not_found(path))),
            };
            match call {
                Ok(c) => no_query(template, c),
                Err(r) => (template, Err(r)),
            }
        }
    }
}

fn not_found(path: &str) -> Refused {
    ApiError::not_found(format!(
        "no route {}: try GET /v1/containers/{{id}}/diff, GET /v1/containers/{{id}}/processes, GET /v1/quarantine, \
         POST|DELETE /v1/containers/{{id}}/quarantine, POST /v1/containers/{{id}}/evidence",
        quote(path)
    ))
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(m: Method, p: &str, q: Option<&str>) -> Result<Call, u16> {
        route(&m, p, q).1.map_err(|r| r.error.status)
    }

    #[test]
    fn good_requests() {
        let id = "0123abcd".to_string();
        assert_eq!(call(Method::GET, "/healthz", None), Ok(Call::Health));
        assert_eq!(call(Method::GET, "/v1/quarantine", None), Ok(Call::QuarantineList));
        assert_eq!(
            call(Method::GET, "/v1/containers/0123abcd/diff", None),
            Ok(Call::Diff { id: id.clone(), hash_limit: None })
        );
        assert_eq!(
            call(Method::GET, "/v1/containers/0123abcd/diff", Some("hash_limit=1024")),
            Ok(Call::Diff { id: id.clone(), hash_limit: Some(1024) })
        );
        assert_eq!(
            call(Method::GET, "/v1/containers/0123abcd/processes", None),
            Ok(Call::Processes { id: id.clone() })
        );
        assert_eq!(
            call(Method::POST, "/v1/containers/0123abcd/quarantine", None),
            Ok(Call::QuarantineApply { id: id.clone() })
        );
        assert_eq!(
            call(Method::DELETE, "/v1/containers/0123abcd/quarantine", None),
            Ok(Call::QuarantineRelease { id: id.clone() })
        );
        assert_eq!(call(Method::POST, "/v1/containers/0123abcd/evidence", None), Ok(Call::Capture { id }));
        let full = "a".repeat(64);
        assert!(call(Method::GET, &format!("/v1/containers/{full}/processes"), None).is_ok());
    }

    #[test]
    fn bad_paths_never_reach_a_call() {
        for (p, status) in [
            ("/v1/containers/../../etc/passwd/diff", 400),
            ("/v1/containers/%2e%2e/diff", 400),
            ("/v1/containers/..%2F..%2Fetc/diff", 400),
            ("/v1/containers/ABCDEF/diff", 400),
            ("/v1/containers//diff", 400),
            ("/v1/containers/abc/../diff", 404),
            ("/v1/containers/abc/diff/", 404),
            ("/v1/containers/abc", 404),
            ("/v1/containers/abc/", 404),
            ("/v1/containers/abc/shell", 404),
            ("/v1/containers", 404),
            ("/v1/quarantine/", 404),
            ("/metrics", 404),
            ("/", 404),
            ("//v1/quarantine", 404),
        ] {
            assert_eq!(call(Method::GET, p, None), Err(status), "{p}");
        }
        let long = format!("/v1/containers/{}/diff", "a".repeat(65));
        assert_eq!(call(Method::GET, &long, None), Err(400));
        let (t, r) = route(&Method::GET, &format!("/v1/containers/{}/diff", "x".repeat(5000)), None);
        assert_eq!(t, DIFF);
        let msg = r.unwrap_err().error.message;
        assert!(msg.len() < 300 && msg.contains("5000 bytes"), "{msg}");
    }

    #[test]
    fn methods_and_queries() {
        let r = route(&Method::DELETE, "/v1/containers/abc/diff", None).1.unwrap_err();
        assert_eq!((r.error.status, r.allow), (405, Some("GET")));
        let r = route(&Method::GET, "/v1/containers/abc/quarantine", None).1.unwrap_err();
        assert_eq!((r.error.status, r.allow), (405, Some("POST, DELETE")));
        assert_eq!(call(Method::POST, "/healthz", None), Err(405));
        assert_eq!(call(Method::GET, "/v1/containers/abc/evidence", None), Err(405));
        assert_eq!(call(Method::GET, "/v1/containers/abc/diff", Some("hash_limit=x")), Err(400));
        assert_eq!(call(Method::GET, "/v1/containers/abc/diff", Some("hash_limit=1&hash_limit=2")), Err(400));
        assert_eq!(call(Method::GET, "/v1/containers/abc/diff", Some("path=/etc")), Err(400));
        assert_eq!(call(Method::GET, "/v1/containers/abc/processes", Some("hash_limit=1")), Err(400));
        assert!(call(Method::GET, "/v1/containers/abc/processes", Some("")).is_ok());
    }

    #[test]
    fn templates_label_the_route_never_the_path() {
        assert_eq!(route(&Method::GET, "/v1/containers/abc/diff", None).0, DIFF);
        assert_eq!(route(&Method::GET, "/v1/containers/ZZZ/processes", None).0, PROCESSES);
        assert_eq!(route(&Method::GET, "/etc/passwd", None).0, UNMATCHED);
        assert_eq!(route(&Method::GET, "/v1/containers/abc/nope", None).0, UNMATCHED);
    }
}
