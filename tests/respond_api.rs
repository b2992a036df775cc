//! `driftwatch respond` (src/responder/), the real binary, fed Alertmanager
//! webhook payloads over HTTP and acting on a Kubernetes API.
//!
//! The API server is a local stand-in (tests/support/kubeapi_rw.rs) serving
//! real API objects and recording every request, because no kube-apiserver
//! runs on our machines; the responder reaches it through a kubeconfig
//! (`KUBECONFIG`), as kube-rs does outside a cluster. Unprivileged.
mod support;

use serde_json::{Value, json};
use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};
use support::{
    kubeapi::pod,
    kubeapi_rw::{Recorded, RwApi, RwState},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "am-webhook-token";

/// The running responder; killed on drop.
struct Responder {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Responder {
    async fn start(api: &RwApi, config: &str) -> Responder {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let dir = std::env::temp_dir().join(format!("driftwatch-respond-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
        let config = config.replace("TOKEN_FILE", &dir.join("token").display().to_string());
        std::fs::write(dir.join("respond.yaml"), config).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
            .args(["respond", "--listen", &addr.to_string(), "--config"])
            .arg(dir.join("respond.yaml"))
            .env("KUBECONFIG", &api.kubeconfig)
            .env("POD_NAMESPACE", "driftwatch")
            .env_remove("DRIFTWATCH_RESPOND_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("driftwatch respond starts");
        let r = Responder { child, addr, dir };
        let t0 = Instant::now();
        while http(addr, "GET", "/healthz", None, b"").await.0 != 200 {
            assert!(t0.elapsed() < Duration::from_secs(20), "responder never answered /healthz");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        r
    }

    async fn post(&self, token: Option<&str>, body: &[u8]) -> (u16, Value) {
        let (code, text) = http(self.addr, "POST", "/v1/alerts", token, body).await;
        (code, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn metrics(&self) -> String {
        http(self.addr, "GET", "/metrics", None, b"").await.1
    }

    /// Stops the responder and returns its audit lines.
    fn audit(mut self) -> Vec<Value> {
        let _ = self.child.kill();
        let out = self.child.stdout.take().unwrap();
        BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .map(|l| serde_json::from_str(&l).expect("audit line is JSON"))
            .collect()
    }
}

/// One HTTP/1.1 request on a fresh connection; (status, body). 0 when unreachable.
async fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, String) {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return (0, String::new()) };
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(body).await;
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp).await;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

const CID: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// One alert as the agent's Alertmanager push labels it.
fn alert(ns: &str, pod: &str, step: &str, container_id: &str) -> Value {
    json!({"status": "firing",
           "labels": {"alertname": "ContainerDriftBinary", "severity": "critical", "kind": "binary",
                      "rule": "exec_new_binary", "playbook_step": step, "container_id": container_id,
                      "node": "node-1", "namespace": ns, "pod": pod, "container": "app", "workload": "web"},
           "annotations": {"summary": "drift"}, "startsAt": "2026-01-01T00:00:00Z",
           "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": format!("fp-{pod}-{step}")})
}

fn payload(alerts: Vec<Value>) -> Vec<u8> {
    json!({"version": "4", "groupKey": "{}:{alertname=\"ContainerDriftBinary\"}", "truncatedAlerts": 0,
           "status": "firing", "receiver": "driftwatch-respond", "groupLabels": {}, "commonLabels": {},
           "commonAnnotations": {}, "externalURL": "http://alertmanager:9093", "alerts": alerts})
    .to_string()
    .into_bytes()
}

fn pods() -> RwState {
    let rs = Some(("apps/v1", "ReplicaSet", "web-7d9f8b6c5d"));
    let mut s = RwState::default();
    for (name, owner) in [("web-1", rs), ("web-2", rs), ("web-3", rs), ("lonely", None)] {
        s.pods.insert(format!("shop/{name}"), pod("shop", name, "node-1", owner, json!({"app": "web"})));
    }
    s
}

fn of<'a>(reqs: &'a [Recorded], method: &str, path: &str) -> Vec<&'a Recorded> {
    reqs.iter().filter(|r| r.method == method && r.path == path).collect()
}

fn decisions(v: &Value) -> Vec<(String, String)> {
    v["decisions"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|d| (d["action"].as_str().unwrap_or("").to_string(), d["result"].as_str().unwrap_or("").to_string()))
        .collect()
}

const ACTING: &str =
    "respond:\n  dry_run: false\n  steps: [isolate, evict, investigate]\n  webhook: {token_file: TOKEN_FILE}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolate_and_evict_send_the_exact_bodies_and_retry_429() {
    let api = RwApi::start(pods()).await;
    api.with(|s| s.eviction_429s = 2);
    let r = Responder::start(&api, ACTING).await;

    let (code, v) = r.post(Some(TOKEN), &payload(vec![alert("shop", "web-1", "isolate", CID)])).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(decisions(&v), [("isolate".to_string(), "acted".to_string())], "{v}");
    let reqs = api.requests();
    let np = of(&reqs, "POST", "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies");
    assert_eq!(np.len(), 1, "{reqs:?}");
    assert_eq!(
        np[0].body,
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": "driftwatch-quarantine-aaaaaaaaaaaa", "namespace": "shop",
                            "labels": {"app.kubernetes.io/managed-by": "driftwatch"},
                            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "web-1", "uid": "uid-web-1"}]},
               "spec": {"podSelector": {"matchLabels": {"driftwatch.io/quarantine": "aaaaaaaaaaaa"}},
                        "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []}})
    );
    let patch = of(&reqs, "PATCH", "/api/v1/namespaces/shop/pods/web-1");
    assert_eq!(patch.len(), 1, "{reqs:?}");
    assert_eq!(patch[0].content_type, "application/merge-patch+json");
    assert_eq!(
        patch[0].body,
        json!({"metadata": {"labels": {"driftwatch.io/drifted": "exec_new_binary", "driftwatch.io/quarantine": "aaaaaaaaaaaa"},
                            "annotations": {"driftwatch.io/drifted-container": CID}}})
    );
    let events = of(&reqs, "POST", "/api/v1/namespaces/shop/events");
    assert_eq!(events.len(), 1, "{reqs:?}");
    assert_eq!(events[0].body["reason"], "DriftwatchIsolated");
    assert_eq!(events[0].body["involvedObject"]["uid"], "uid-web-1");
    // The policy is created before the pod is labelled: nothing is half-isolated.
    let order: Vec<&str> = reqs.iter().filter(|r| r.method != "GET").map(|r| r.method.as_str()).collect();
    assert_eq!(order, ["POST", "PATCH", "POST"], "{reqs:?}");

    // The same alert again (Alertmanager's repeat_interval): deduplicated.
    let (_, v) = r.post(Some(TOKEN), &payload(vec![alert("shop", "web-1", "isolate", CID)])).await;
    assert_eq!(decisions(&v), [("isolate".to_string(), "acknowledged".to_string())], "{v}");
    // Another pod whose container id has the same 12-character prefix: its policy exists already (409), which is fine.
    let (_, v) = r.post(Some(TOKEN), &payload(vec![alert("shop", "web-2", "isolate", CID)])).await;
    assert_eq!(decisions(&v), [("isolate".to_string(), "acted".to_string())], "409 AlreadyExists is success: {v}");

    // Eviction: two 429s (a disruption budget), then accepted.
    let t0 = Instant::now();
    let (_, v) = r.post(Some(TOKEN), &payload(vec![alert("shop", "web-3", "evict", CID)])).await;
    assert_eq!(decisions(&v), [("evict".to_string(), "acted".to_string())], "{v}");
    assert!(t0.elapsed() >= Duration::from_millis(700), "backoff 250+500ms: {:?}", t0.elapsed());
    let reqs = api.requests();
    let ev = of(&reqs, "POST", "/api/v1/namespaces/shop/pods/web-3/eviction");
    assert_eq!(ev.len(), 3, "two 429s then success: {reqs:?}");
    for e in &ev {
        assert_eq!(
            e.body,
            json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "web-3", "namespace": "shop"}})
        );
    }
    let patch = of(&reqs, "PATCH", "/api/v1/namespaces/shop/pods/web-3");
    assert_eq!(
        patch[0].body,
        json!({"metadata": {"labels": {"driftwatch.io/drifted": "exec_new_binary"},
                            "annotations": {"driftwatch.io/drifted-container": CID}}})
    );

    // An unowned pod is not evicted; a replaced pod (other container id) is refused; both leave nothing but an Event.
    let before = api.writes().len();
    let other = "b".repeat(64);
    let (_, v) = r
        .post(
            Some(TOKEN),
            &payload(vec![alert("shop", "lonely", "evict", CID), alert("shop", "web-1", "evict", &other)]),
        )
        .await;
    assert_eq!(decisions(&v), [("evict".into(), "refused".into()), ("evict".into(), "refused".into())], "{v}");
    let writes = api.writes();
    let new: Vec<&Recorded> = writes[before..].iter().collect();
    assert!(new.iter().all(|w| w.path.ends_with("/events") && w.body["reason"] == "DriftwatchRefused"), "{new:?}");
    assert!(v["decisions"][1]["reason"].as_str().unwrap().contains("replaced"), "{v}");

    let m = r.metrics().await;
    for line in [
        r#"driftwatch_response_actions_total{action="isolate",result="acted"} 2"#,
        r#"driftwatch_response_actions_total{action="isolate",result="acknowledged"} 1"#,
        r#"driftwatch_response_actions_total{action="evict",result="acted"} 1"#,
        r#"driftwatch_response_actions_total{action="evict",result="refused"} 2"#,
    ] {
        assert!(m.contains(line), "{line} in\n{m}");
    }
    let audit = r.audit();
    assert_eq!(audit.len(), 6, "{audit:?}");
    let first = &audit[0];
    for k in [
        "time",
        "fingerprint",
        "namespace",
        "pod",
        "container_id",
        "rule",
        "playbook_step",
        "action",
        "result",
        "reason",
    ] {
        assert!(first.get(k).is_some(), "{k} in {first}");
    }
    assert_eq!((first["pod"].as_str(), first["result"].as_str()), (Some("web-1"), Some("acted")));
}

/// `escalate: {isolate: evict}`: one isolate alert (what the agent's findings carry) isolates the
/// pod and then evicts it, the eviction checked as an evict alert would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolate_alert_escalates_to_the_eviction() {
    let api = RwApi::start(pods()).await;
    let cfg = format!("{ACTING}  escalate: {{isolate: evict}}\n  protected_namespaces: [kube-system, guarded]\n");
    let r = Responder::start(&api, &cfg).await;
    let (code, v) = r.post(Some(TOKEN), &payload(vec![alert("shop", "web-1", "isolate", CID)])).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        decisions(&v),
        [("isolate".to_string(), "acted".to_string()), ("evict".to_string(), "acted".to_string())],
        "{v}"
    );
    let reqs = api.requests();
    let writes: Vec<String> =
        reqs.iter().filter(|q| q.method != "GET").map(|q| format!("{} {}", q.method, q.path)).collect();
    let np = writes.iter().position(|w| w.ends_with("/namespaces/shop/networkpolicies")).expect("NetworkPolicy");
    let ev = writes.iter().position(|w| w.ends_with("/pods/web-1/eviction")).expect("eviction");
    assert!(np < ev, "isolated before evicted: {writes:?}");
    // The same alert again: both steps are within their dedup window.
    let (_, v) = r.post(Some(TOKEN), &payload(vec![alert("shop", "web-1", "isolate", CID)])).await;
    assert_eq!(decisions(&v).len(), 1, "a deduplicated isolate escalates to nothing: {v}");
    assert_eq!(decisions(&v)[0].1, "acknowledged", "{v}");
    let m = r.metrics().await;
    assert!(m.contains(r#"driftwatch_response_actions_total{action="evict",result="acted"} 1"#), "{m}");
}

#[test]
fn an_escalation_to_itself_or_from_no_step_is_refused() {
    let dir = std::env::temp_dir().join(format!("driftwatch-respond-esc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (body, want) in [
        ("respond:\n  escalate: {isolate: isolate}\n", "respond.escalate.isolate"),
        ("respond:\n  escalate: {quarantine: evict}\n", "respond.escalate.quarantine"),
    ] {
        let f = dir.join("r.yaml");
        std::fs::write(&f, body).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
            .args(["respond", "--check-config"])
            .arg(&f)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{body}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_refused_for_good_is_reported_failed() {
    let api = RwApi::start(pods()).await;
    api.with(|s| s.eviction_429s = 100);
    let r = Responder::start(&api, ACTING).await;
    let (_, v) = r.post(Some(TOKEN), &payload(vec![alert("shop", "web-3", "evict", CID)])).await;
    assert_eq!(decisions(&v), [("evict".to_string(), "failed".to_string())], "{v}");
    assert!(v["decisions"][0]["reason"].as_str().unwrap().contains("attempt 5"), "{v}");
    let reqs = api.requests();
    assert_eq!(of(&reqs, "POST", "/api/v1/namespaces/shop/pods/web-3/eviction").len(), 5, "{reqs:?}");
    let events = of(&reqs, "POST", "/api/v1/namespaces/shop/events");
    assert_eq!(events[0].body["reason"], "DriftwatchActionFailed");
    assert_eq!(events[0].body["type"], "Warning");
    let m = r.metrics().await;
    assert!(m.contains(r#"driftwatch_response_actions_total{action="evict",result="failed"} 1"#), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_makes_no_mutating_request() {
    let api = RwApi::start(pods()).await;
    let cfg = "respond:\n  steps: [isolate, evict, label]\n  webhook: {token_file: TOKEN_FILE}\n";
    let r = Responder::start(&api, cfg).await;
    let alerts = vec![
        alert("shop", "web-1", "isolate", CID),
        alert("shop", "web-2", "evict", CID),
        alert("shop", "web-3", "label", CID),
        alert("shop", "web-3", "evict", &"c".repeat(64)),
        alert("kube-system", "coredns-1", "evict", CID),
        alert("driftwatch", "responder-1", "isolate", CID),
    ];
    let (code, v) = r.post(Some(TOKEN), &payload(alerts)).await;
    assert_eq!(code, 200, "{v}");
    let results: Vec<String> = decisions(&v).into_iter().map(|(_, r)| r).collect();
    assert_eq!(results, ["dry_run", "dry_run", "dry_run", "refused", "refused", "refused"], "{v}");
    let reqs = api.requests();
    assert!(reqs.iter().all(|r| r.method == "GET"), "dry run wrote: {reqs:?}");
    assert_eq!(reqs.len(), 4, "only the four pods outside protected namespaces are read: {reqs:?}");
    let m = r.metrics().await;
    assert!(m.contains(r#"driftwatch_response_actions_total{action="isolate",result="dry_run"} 1"#), "{m}");
    assert!(m.contains(r#"driftwatch_response_actions_total{action="evict",result="refused"} 2"#), "{m}");
    let audit = r.audit();
    assert_eq!(audit.iter().filter(|a| a["result"] == "dry_run").count(), 3, "{audit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_get_4xx_and_a_counted_reason() {
    let api = RwApi::start(pods()).await;
    let cfg = "respond:\n  steps: [isolate]\n  webhook: {token_file: TOKEN_FILE, max_body_bytes: 4096}\n";
    let r = Responder::start(&api, cfg).await;
    let good = payload(vec![alert("shop", "web-1", "isolate", CID)]);
    assert_eq!(r.post(None, &good).await.0, 401, "no token");
    assert_eq!(r.post(Some("wrong"), &good).await.0, 401, "wrong token");
    let mut v3: Value = serde_json::from_slice(&good).unwrap();
    v3["version"] = json!("3");
    assert_eq!(r.post(Some(TOKEN), v3.to_string().as_bytes()).await.0, 400, "version 3");
    assert_eq!(r.post(Some(TOKEN), b"{\"version\": \"4\", \"alerts\": [").await.0, 400, "malformed");
    let no_labels = payload(vec![json!({"status": "firing", "labels": {"pod": "web-1"}})]);
    assert_eq!(r.post(Some(TOKEN), &no_labels).await.0, 400, "missing alertname");
    let huge = payload(vec![alert("shop", "web-1", "isolate", CID); 40]);
    assert!(huge.len() > 4096);
    // Only the head is sent: the answer comes before the body is read, and
    // a closed socket with unread data would reset the connection.
    let head = format!(
        "POST /v1/alerts HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        huge.len()
    );
    let mut s = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "over max_body_bytes: {resp}");
    assert_eq!(http(r.addr, "GET", "/v1/alerts", Some(TOKEN), b"").await.0, 405);
    assert_eq!(http(r.addr, "GET", "/nope", None, b"").await.0, 404);
    // Still serving, and the good payload still works.
    let (code, v) = r.post(Some(TOKEN), &good).await;
    assert_eq!((code, decisions(&v)), (200, vec![("isolate".into(), "dry_run".into())]), "{v}");
    let m = r.metrics().await;
    for line in [
        r#"driftwatch_response_webhook_rejected_total{reason="unauthorized"} 2"#,
        r#"driftwatch_response_webhook_rejected_total{reason="version"} 1"#,
        r#"driftwatch_response_webhook_rejected_total{reason="malformed"} 1"#,
        r#"driftwatch_response_webhook_rejected_total{reason="missing_labels"} 1"#,
        r#"driftwatch_response_webhook_rejected_total{reason="too_large"} 1"#,
        r#"driftwatch_response_webhook_requests_total{code="401"} 2"#,
        r#"driftwatch_response_webhook_requests_total{code="413"} 1"#,
    ] {
        assert!(m.contains(line), "{line} in\n{m}");
    }
    assert!(api.writes().is_empty());
}

/// The node agent cannot be reached (nothing listens at its admin port) or
/// there is none on the pod's node: the isolation still happens, and the
/// capture is audited, counted and an Event as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_node_agent_never_blocks_the_isolation() {
    let mut state = pods();
    let mut agent = pod("driftwatch", "driftwatch-agent-1", "node-1", None, json!({"app": "dw"}));
    agent["status"]["podIP"] = json!("127.0.0.1");
    state.pods.insert("driftwatch/driftwatch-agent-1".into(), agent);
    state.pods.insert("shop/far-1".into(), pod("shop", "far-1", "node-9", None, json!({"app": "web"})));
    let api = RwApi::start(state).await;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = format!(
        "respond:\n  dry_run: false\n  steps: [isolate, investigate]\n  webhook: {{token_file: TOKEN_FILE}}\n  \
         node_agent: {{selector: app=dw, port: {closed}, token_file: TOKEN_FILE, timeout_s: 20}}\n"
    );
    let r = Responder::start(&api, &cfg).await;
    let (code, v) = r.post(Some(TOKEN), &payload(vec![alert("shop", "web-1", "isolate", CID)])).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(decisions(&v), [("isolate".into(), "acted".into()), ("investigate".into(), "failed".into())], "{v}");
    let why = v["decisions"][1]["reason"].as_str().unwrap();
    assert!(why.contains(&format!("127.0.0.1:{closed}")) && why.contains("node-1"), "{why}");
    let reqs = api.requests();
    let lists = of(&reqs, "GET", "/api/v1/namespaces/driftwatch/pods");
    assert_eq!(lists.len(), 1, "the agents are looked up in the responder's namespace: {reqs:?}");
    let q = &lists[0].query;
    assert!(q.contains("labelSelector=app%3Ddw") && q.contains("fieldSelector=spec.nodeName%3Dnode-1"), "{q}");
    let writes: Vec<String> = api.writes().iter().map(|w| format!("{} {}", w.method, w.path)).collect();
    assert_eq!(
        writes,
        [
            "POST /apis/networking.k8s.io/v1/namespaces/shop/networkpolicies",
            "PATCH /api/v1/namespaces/shop/pods/web-1",
            "POST /api/v1/namespaces/shop/events",
            "POST /api/v1/namespaces/shop/events"
        ],
        "isolated, then the capture's failure recorded: {reqs:?}"
    );
    let events = api.writes();
    assert_eq!(events[3].body["reason"], "DriftwatchActionFailed", "{:?}", events[3]);

    // investigate on a node without an agent: labelled, the capture failed.
    let (_, v) = r.post(Some(TOKEN), &payload(vec![alert("shop", "far-1", "investigate", CID)])).await;
    assert_eq!(decisions(&v), [("investigate".into(), "failed".into())], "{v}");
    assert!(v["decisions"][0]["reason"].as_str().unwrap().contains("no running node agent"), "{v}");
    let patch =
        of(&api.requests(), "PATCH", "/api/v1/namespaces/shop/pods/far-1").into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(patch.len(), 1);
    assert_eq!(patch[0].body["metadata"]["labels"], json!({"driftwatch.io/drifted": "exec_new_binary"}));
    let m = r.metrics().await;
    for line in [
        r#"driftwatch_response_actions_total{action="isolate",result="acted"} 1"#,
        r#"driftwatch_response_actions_total{action="investigate",result="failed"} 2"#,
    ] {
        assert!(m.contains(line), "{line} in\n{m}");
    }
    let audit = r.audit();
    assert_eq!(
        audit.iter().filter(|a| a["action"] == "investigate" && a["result"] == "failed").count(),
        2,
        "{audit:?}"
    );
}

/// Every decision but an acknowledgement is an OTLP log event
/// `driftwatch.response.<action>` (the agent's `otlp:` section), to a real
/// OTLP/gRPC receiver; the sink's own counters are on the responder's /metrics.
#[test]
fn decisions_are_otlp_log_events() {
    let receiver = support::otlp::Receiver::grpc();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let api = rt.block_on(RwApi::start(pods()));
    let cfg = format!(
        "respond:\n  steps: [isolate, evict]\n  webhook: {{token_file: TOKEN_FILE}}\n\
         otlp:\n  endpoint: {}\n  batch_timeout_ms: 100\n",
        receiver.url()
    );
    let r = rt.block_on(Responder::start(&api, &cfg));
    let alerts = vec![
        alert("shop", "web-1", "isolate", CID),
        alert("kube-system", "coredns-1", "evict", CID),
        alert("shop", "web-2", "validate", CID),
    ];
    let (code, v) = rt.block_on(r.post(Some(TOKEN), &payload(alerts)));
    assert_eq!(code, 200, "{v}");
    let results: Vec<String> = decisions(&v).into_iter().map(|(_, r)| r).collect();
    assert_eq!(results, ["dry_run", "refused", "acknowledged"], "{v}");
    let isolate = receiver.wait_for("driftwatch.response.isolate", Duration::from_secs(30), |r| {
        r.record.event_name == "driftwatch.response.isolate"
    });
    let a = &isolate.attrs;
    assert_eq!(a["result"], "dry_run", "{isolate:#?}");
    assert_eq!(a["action"], "isolate");
    assert_eq!((a["k8s.namespace.name"].as_str(), a["k8s.pod.name"].as_str()), (Some("shop"), Some("web-1")));
    assert_eq!(a["container.id"], CID);
    assert_eq!((a["rule"].as_str(), a["playbook_step"].as_str()), (Some("exec_new_binary"), Some("isolate")));
    assert_eq!(isolate.record.severity_text, "info");
    let evict = receiver.wait_for("driftwatch.response.evict", Duration::from_secs(30), |r| {
        r.record.event_name == "driftwatch.response.evict"
    });
    assert_eq!(evict.attrs["result"], "refused", "{evict:#?}");
    assert!(evict.attrs["reason"].as_str().unwrap().contains("protected"), "{evict:#?}");
    assert_eq!(evict.record.severity_text, "warning");
    let exported = || {
        rt.block_on(r.metrics())
            .lines()
            .find_map(|l| l.strip_prefix("driftwatch_otlp_records_total{result=\"exported\"} ")?.parse::<f64>().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while exported() != Some(2.0) {
        assert!(Instant::now() < deadline, "driftwatch_otlp_records_total: {}", rt.block_on(r.metrics()));
        std::thread::sleep(Duration::from_millis(50));
    }
    let names: Vec<String> = receiver.records().iter().map(|r| r.record.event_name.clone()).collect();
    assert_eq!(names.len(), 2, "no event for the acknowledgement: {names:?}");
    let m = rt.block_on(r.metrics());
    assert!(m.ends_with("# EOF\n") && m.matches("# EOF").count() == 1, "{m}");
    assert!(m.contains("# TYPE driftwatch_otlp_records counter"), "{m}");
    assert!(!m.contains("driftwatch_findings_total"), "only the sink's series of the agent-style registry: {m}");
}

/// One HTTPS/1.0 request (client `cfg`), verifying the server as 127.0.0.1: (status, body) or the TLS error.
fn https(
    addr: SocketAddr,
    cfg: std::sync::Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(cfg, name).map_err(std::io::Error::other)?;
    let sock = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut s = rustls::StreamOwned::new(conn, sock);
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    s.flush()?;
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    Ok((head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), body.to_string()))
}

/// `respond.webhook.tls` with `client_ca_file` (mTLS, no bearer token): a
/// client certificate of that CA may post alerts; without one /healthz still
/// answers (probes) but /v1/alerts is 401; a certificate of another CA and
/// plain HTTP fail the handshake, counted.
#[test]
fn mtls_webhook_takes_only_client_certificates_of_its_ca() {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let pki = support::tls::Pki::new("respond-mtls");
    let other = support::tls::Pki::new("respond-mtls-other");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let api = rt.block_on(RwApi::start(pods()));
    let p = |p: &std::path::Path| p.display().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dir = std::env::temp_dir().join(format!("driftwatch-respond-mtls-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("respond.yaml"),
        format!(
            "respond:\n  dry_run: false\n  steps: [isolate]\n  webhook:\n    tls:\n      cert_file: {}\n      key_file: {}\n      client_ca_file: {}\n",
            p(&pki.server_cert),
            p(&pki.server_key),
            p(&pki.ca)
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .args(["respond", "--listen", &addr.to_string(), "--config"])
        .arg(dir.join("respond.yaml"))
        .env("KUBECONFIG", &api.kubeconfig)
        .env_remove("DRIFTWATCH_RESPOND_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("driftwatch respond starts");
    let r = Responder { child, addr, dir };
    let with_cert = pki.client_config();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(https(addr, with_cert.clone(), "GET", "/healthz", b""), Ok((200, _))) {
        assert!(Instant::now() < deadline, "responder never answered /healthz over mTLS");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, body) =
        https(addr, with_cert.clone(), "POST", "/v1/alerts", &payload(vec![alert("shop", "web-1", "isolate", CID)]))
            .expect("POST with a client certificate");
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_eq!((code, decisions(&v)), (200, vec![("isolate".into(), "acted".into())]), "{body}");

    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&pki.ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let no_cert = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let good = payload(vec![alert("shop", "web-2", "isolate", CID)]);
    assert_eq!(https(addr, no_cert.clone(), "GET", "/healthz", b"").unwrap().0, 200, "probes need no certificate");
    assert_eq!(https(addr, no_cert, "POST", "/v1/alerts", &good).unwrap().0, 401, "no client certificate");
    // A certificate of another CA (its own CA trusted by the client, so the server is ours only by name).
    let mut both = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&pki.ca).unwrap() {
        both.add(c.unwrap()).unwrap();
    }
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&other.client_key).unwrap();
    let certs: Vec<CertificateDer> =
        CertificateDer::pem_file_iter(&other.client_cert).unwrap().map(|c| c.unwrap()).collect();
    let wrong_ca = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(both)
            .with_client_auth_cert(certs, key)
            .unwrap(),
    );
    assert!(
        !matches!(https(addr, wrong_ca, "POST", "/v1/alerts", &good), Ok((200, _))),
        "another CA's client certificate"
    );
    let (plain, _) = rt.block_on(http(addr, "POST", "/v1/alerts", None, &good));
    assert_ne!(plain, 200, "plain HTTP to the TLS listener");

    let deadline = Instant::now() + Duration::from_secs(10);
    let rejected = || {
        https(addr, with_cert.clone(), "GET", "/metrics", b"").ok().and_then(|(_, m)| {
            m.lines().find_map(|l| {
                l.strip_prefix("driftwatch_response_webhook_rejected_total{reason=\"tls\"} ")?.parse::<f64>().ok()
            })
        })
    };
    while rejected() != Some(2.0) {
        assert!(Instant::now() < deadline, "two failed handshakes counted: {:?}", rejected());
        std::thread::sleep(Duration::from_millis(50));
    }
    let writes: Vec<String> = api.writes().iter().map(|w| format!("{} {}", w.method, w.path)).collect();
    assert!(writes.iter().all(|w| !w.contains("web-2")), "nothing but the authenticated alert acted: {writes:?}");
    drop(r);
}

#[test]
fn a_bad_config_is_refused_naming_the_field() {
    let dir = std::env::temp_dir().join(format!("driftwatch-respond-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("r.yaml");
    std::fs::write(&f, "respond:\n  dry_run: false\n  steps: [isolate]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .args(["respond", "--listen", "127.0.0.1:0", "--config"])
        .arg(&f)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("respond.webhook.token_file") && err.contains("r.yaml"), "{err}");
}
