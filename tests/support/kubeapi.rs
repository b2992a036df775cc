//! A fake Kubernetes API server for tests of the kube code. No apiserver can
//! run on the machines this project builds and tests on, so this is a tiny
//! hyper server (plain HTTP on 127.0.0.1) serving real Kubernetes API JSON
//! objects: pod lists with `metadata.resourceVersion`, watch streams of
//! `{"type": ..., "object": ...}` lines, ReplicaSets and Jobs by path, and
//! `Status` objects for 403 Forbidden and 410 Gone, scripted per test.

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{Request, Response, body::Frame, service::service_fn};
use serde_json::{Value, json};
use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

/// What one watch request gets: these events, then the stream stays open
/// (until `close_after`, if set, so the client re-watches).
#[derive(Clone, Debug, Default)]
pub struct WatchPlan {
    pub events: Vec<Value>,
    pub close_after: Option<Duration>,
}

#[derive(Default)]
pub struct State {
    /// Items of the next pod list.
    pub pods: Vec<Value>,
    /// Answer lists with this Status code instead (403, ...).
    pub list_error: Option<u16>,
    /// One plan per watch request, in order; an empty queue holds the stream open.
    pub watches: VecDeque<WatchPlan>,
    /// Objects served by GET path (`/apis/apps/v1/namespaces/shop/replicasets/x`).
    pub objects: HashMap<String, Value>,
    /// GET paths answered 403.
    pub forbidden: Vec<String>,
    /// Every request's path and query.
    pub requests: Vec<String>,
    pub resource_version: u64,
}

pub struct FakeApi {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    pub kubeconfig: PathBuf,
    _dir: TempDir,
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn full(v: Value) -> Body {
    Full::new(Bytes::from(v.to_string())).boxed()
}

/// A `Status` object as the apiserver sends it.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn respond(code: u16, body: Body) -> Response<Body> {
    Response::builder().status(code).header("content-type", "application/json").body(body).unwrap()
}

impl FakeApi {
    /// Starts the server on a free port (inside a tokio runtime) and writes a
    /// kubeconfig pointing at it.
    pub async fn start(state: State) -> FakeApi {
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
                        async move { Ok::<_, Infallible>(handle(&st, req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        let dir = std::env::temp_dir().join(format!("driftwatch-kubeapi-{}-{}", std::process::id(), addr.port()));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\n\
                 users:\n- name: agent\n  user:\n    token: test-token\n\
                 contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: agent\ncurrent-context: fake\n"
            ),
        )
        .unwrap();
        FakeApi { addr, state, kubeconfig, _dir: TempDir(dir) }
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }
}

fn handle(st: &Arc<Mutex<State>>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let mut s = st.lock().unwrap();
    s.requests.push(format!("{path}?{query}"));
    if path == "/api/v1/pods" {
        if query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1") {
            let plan = s.watches.pop_front().unwrap_or_default();
            drop(s);
            return watch_response(plan);
        }
        if let Some(code) = s.list_error {
            let reason = if code == 403 { "Forbidden" } else { "InternalError" };
            let msg = "pods is forbidden: User \"system:serviceaccount:driftwatch:driftwatch\" cannot list resource \"pods\" in API group \"\" at the cluster scope";
            return respond(code, full(status(code, reason, msg)));
        }
        s.resource_version += 1;
        let list = json!({"kind": "PodList", "apiVersion": "v1",
                          "metadata": {"resourceVersion": s.resource_version.to_string()},
                          "items": s.pods});
        return respond(200, full(list));
    }
    if s.forbidden.contains(&path) {
        return respond(403, full(status(403, "Forbidden", "forbidden")));
    }
    match s.objects.get(&path) {
        Some(o) => respond(200, full(o.clone())),
        None => respond(404, full(status(404, "NotFound", &format!("{path} not found")))),
    }
}

fn watch_response(plan: WatchPlan) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        for ev in plan.events {
            if tx.send(Bytes::from(format!("{ev}\n"))).await.is_err() {
                return;
            }
        }
        match plan.close_after {
            Some(d) => tokio::time::sleep(d).await,
            None => tx.closed().await,
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

/// A pod on `node` as the apiserver returns it.
pub fn pod(ns: &str, name: &str, node: &str, owner: Option<(&str, &str, &str)>, labels: Value) -> Value {
    let owners = owner.map(|(api, kind, n)| {
        json!([{"apiVersion": api, "kind": kind, "name": n, "uid": format!("uid-{n}"),
                "controller": true, "blockOwnerDeletion": true}])
    });
    let mut meta = json!({"name": name, "namespace": ns, "uid": format!("uid-{name}"),
                          "resourceVersion": "100", "creationTimestamp": "2026-01-01T00:00:00Z",
                          "labels": labels});
    if let Some(o) = owners {
        meta["ownerReferences"] = o;
    }
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": meta,
        "spec": {
            "nodeName": node,
            "containers": [{"name": "app", "image": "registry.example.com/shop/app:1.4.2",
                            "securityContext": {"readOnlyRootFilesystem": true}},
                           {"name": "sidecar", "image": "busybox@sha256:1111111111111111111111111111111111111111111111111111111111111111"}]
        },
        "status": {"phase": "Running",
                   "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0,
                                          "image": "registry.example.com/shop/app:1.4.2",
                                          "imageID": "registry.example.com/shop/app@sha256:2222222222222222222222222222222222222222222222222222222222222222",
                                          "containerID": format!("containerd://{}", "a".repeat(64)),
                                          "state": {"running": {"startedAt": "2026-01-01T00:00:01Z"}}}]}
    })
}

/// An object with a controller owner (`ReplicaSet` owned by a `Deployment`, ...).
pub fn owned(api: &str, kind: &str, ns: &str, name: &str, owner: (&str, &str, &str)) -> Value {
    json!({"apiVersion": api, "kind": kind,
           "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "resourceVersion": "7",
                        "ownerReferences": [{"apiVersion": owner.0, "kind": owner.1, "name": owner.2,
                                             "uid": format!("uid-{}", owner.2), "controller": true,
                                             "blockOwnerDeletion": true}]}})
}
