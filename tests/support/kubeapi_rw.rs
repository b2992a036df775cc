//! A fake Kubernetes API server for the responder (src/responder/kube.rs),
//! alongside tests/support/kubeapi.rs (which serves reads and watches): this
//! one records every request's method, path, content type and JSON body, and
//! answers the writes the responder makes (pod patch, NetworkPolicy create,
//! Eviction, Event) with real API objects and `Status` errors: 409
//! AlreadyExists for a second NetworkPolicy of one name, and 429 from the
//! Eviction API as many times as scripted (a PodDisruptionBudget holding).
//! No apiserver can run on the machines this project is tested on.

use super::kubeapi::status;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, service::service_fn};
use serde_json::{Value, json};
use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
};

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The query string ("" when none).
    pub query: String,
    /// When the stand-in received it (for end-to-end latencies).
    pub at: std::time::SystemTime,
    pub content_type: String,
    /// The JSON body (`Null` when there is none).
    pub body: Value,
}

#[derive(Default)]
pub struct RwState {
    /// Pods by `namespace/name`.
    pub pods: HashMap<String, Value>,
    /// Answer this many Eviction requests 429 before accepting one.
    pub eviction_429s: u32,
    /// NetworkPolicies created, by `namespace/name`.
    pub policies: HashMap<String, Value>,
    pub requests: Vec<Recorded>,
}

pub struct RwApi {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<RwState>>,
    pub kubeconfig: PathBuf,
    dir: PathBuf,
}

impl Drop for RwApi {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn reply(code: u16, v: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap()
}

impl RwApi {
    pub async fn start(state: RwState) -> RwApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(state));
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(&st, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        let dir = std::env::temp_dir().join(format!("driftwatch-kubeapi-rw-{}-{}", std::process::id(), addr.port()));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\n\
                 users:\n- name: responder\n  user:\n    token: test-token\n\
                 contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: responder\n    namespace: default\n\
                 current-context: fake\n"
            ),
        )
        .unwrap();
        RwApi { addr, state, kubeconfig, dir }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The recorded requests other than GET.
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.method != "GET").collect()
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut RwState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }
}

async fn handle(st: &Arc<Mutex<RwState>>, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let at = std::time::SystemTime::now();
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let bytes = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body: Value =
        if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
    let mut s = st.lock().unwrap();
    s.requests.push(Recorded {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        at,
        content_type,
        body: body.clone(),
    });
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let not_found = |what: &str| reply(404, status(404, "NotFound", &format!("{what} not found")));
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["api", "v1", "namespaces", ns, "pods"]) => {
            let items: Vec<Value> = s
                .pods
                .iter()
                .filter(|(k, p)| k.starts_with(&format!("{ns}/")) && selected(p, &query))
                .map(|(_, p)| p.clone())
                .collect();
            reply(
                200,
                json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "100"}, "items": items}),
            )
        }
        ("GET" | "PATCH", ["api", "v1", "namespaces", ns, "pods", name]) => match s.pods.get(&format!("{ns}/{name}")) {
            Some(p) => reply(200, p.clone()),
            None => not_found(&format!("pods \"{name}\"")),
        },
        ("POST", ["api", "v1", "namespaces", ns, "pods", name, "eviction"]) => {
            if !s.pods.contains_key(&format!("{ns}/{name}")) {
                return not_found(&format!("pods \"{name}\""));
            }
            if s.eviction_429s > 0 {
                s.eviction_429s -= 1;
                let msg = "Cannot evict pod as it would violate the pod's disruption budget.";
                return reply(429, status(429, "TooManyRequests", msg));
            }
            reply(201, json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}))
        }
        ("POST", ["apis", "networking.k8s.io", "v1", "namespaces", ns, "networkpolicies"]) => {
            let key = format!("{ns}/{}", body["metadata"]["name"].as_str().unwrap_or_default());
            if s.policies.contains_key(&key) {
                return reply(409, status(409, "AlreadyExists", &format!("networkpolicies {key:?} already exists")));
            }
            s.policies.insert(key, body.clone());
            reply(201, body)
        }
        ("POST", ["api", "v1", "namespaces", _, "events"]) => reply(201, body),
        _ => not_found(&path),
    }
}

/// Whether `pod` matches the query's `labelSelector` (`k=v,...`) and
/// `fieldSelector` (`spec.nodeName=...`): the forms the responder sends.
fn selected(pod: &Value, query: &str) -> bool {
    let mut ok = true;
    for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        let v = percent_decode(v);
        let pairs = v.split(',').filter_map(|p| p.split_once('='));
        match k {
            "labelSelector" => ok &= pairs.into_iter().all(|(l, want)| pod["metadata"]["labels"][l] == want),
            "fieldSelector" => {
                ok &= pairs.into_iter().all(|(f, want)| match f {
                    "spec.nodeName" => pod["spec"]["nodeName"] == want,
                    "status.phase" => pod["status"]["phase"] == want,
                    _ => false,
                })
            }
            _ => {}
        }
    }
    ok
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())) {
            (b'%', Some(c)) => {
                out.push(c);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
