//! End to end, the whole automated response chain: real drift in a real
//! container (CRI pod) -> the agent -> a real Alertmanager (its webhook
//! receiver with a bearer token from a file) -> `driftwatch respond` (the real
//! binary) -> the Kubernetes API. A real Prometheus scrapes the agent with the
//! shipped rules (alerts/driftwatch-rules.yaml) and sends to the same
//! Alertmanager: its workload-level alerts reach the responder too and are
//! acknowledged without action. Isolate also asks the node agent (its TCP
//! admin API, bearer token) for an evidence bundle and links it from the pod.
//!
//! The API server is the recording stand-in (tests/support/kubeapi_rw.rs)
//! serving a Pod object that matches the CRI pod (namespace, name, container
//! id, a ReplicaSet owner): no kube-apiserver runs on our machines. The test
//! asserts the exact NetworkPolicy, label patch and Eviction bodies, and prints
//! the time from the kernel event to the NetworkPolicy create and to the
//! eviction as the stand-in received them.
//!
//! No agent finding carries `playbook_step=evict` (the shipped evict rule,
//! ContainerDriftPersistent, is per workload): the responder's `escalate:
//! {isolate: evict}` evicts the pod once it is isolated and its evidence
//! captured, from the agent's own isolate alert.
//!
//! Run with: DRIFTWATCH_PRIVILEGED_TESTS=1 cargo test --test e2e_respond_chain
mod support;

use serde_json::{Value, json};
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};
use support::{
    agent::Agent,
    alertmanager::Alertmanager,
    cri::{Pod, PodSpec},
    kubeapi::pod,
    kubeapi_rw::{Recorded, RwApi, RwState},
    prometheus::Prometheus,
};

const WEBHOOK_TOKEN: &str = "am-to-responder-token";
const NAMESPACE: &str = "shop";
const POD: &str = "web-5f7c9d8b4-q8z2x";
const REPLICASET: &str = "web-5f7c9d8b4";
const NODE: &str = "node-e2e";
const ADMIN_TOKEN: &str = "responder-to-agent-admin-token";
/// The stand-in's agent pod selector (the chart's labels).
const AGENT_SELECTOR: &str = "app.kubernetes.io/name=driftwatch,app.kubernetes.io/component=agent";

/// `driftwatch respond`, its audit lines collected as they come; killed on drop.
struct Responder {
    child: Child,
    addr: SocketAddr,
    audit: Arc<Mutex<Vec<Value>>>,
    log: PathBuf,
}

impl Responder {
    fn start(kubeconfig: &Path, config: &Path, log: PathBuf) -> Responder {
        Self::spawn(kubeconfig, config, log, None)
    }

    /// Serving HTTPS (`webhook.tls`): readiness polled with this client configuration.
    fn start_tls(kubeconfig: &Path, config: &Path, log: PathBuf, client: Arc<rustls::ClientConfig>) -> Responder {
        Self::spawn(kubeconfig, config, log, Some(client))
    }

    fn spawn(kubeconfig: &Path, config: &Path, log: PathBuf, tls: Option<Arc<rustls::ClientConfig>>) -> Responder {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
            .args(["respond", "--listen", &addr.to_string(), "--config"])
            .arg(config)
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAMESPACE", "driftwatch")
            .env("RUST_LOG", "info")
            .env_remove("DRIFTWATCH_RESPOND_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .expect("driftwatch respond starts");
        let audit = Arc::new(Mutex::new(Vec::new()));
        let (out, a) = (child.stdout.take().unwrap(), audit.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let v: Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| json!({"not_json": line, "error": e.to_string()}));
                a.lock().unwrap().push(v);
            }
        });
        let r = Responder { child, addr, audit, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        let healthy = || match &tls {
            None => matches!(support::agent::http_get(addr, "/healthz"), Ok((200, _, _))),
            Some(c) => matches!(support::tls::https_get(addr, "/healthz", c.clone(), "127.0.0.1", &[]), Ok((200, _))),
        };
        while !healthy() {
            assert!(Instant::now() < deadline, "responder never answered /healthz:\n{}", r.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn audit(&self) -> Vec<Value> {
        self.audit.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn metrics(&self) -> String {
        support::agent::http_get(self.addr, "/metrics").map(|r| r.2).unwrap_or_default()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Alertmanager's config: isolate and evict alerts (the agent's, the rules')
/// to the responder's webhook with the bearer token from a file; the rest to
/// a receiver with no integrations.
fn alertmanager_config(responder: SocketAddr, token_file: &Path) -> String {
    format!(
        "route:\n  receiver: blackhole\n  group_by: [alertname, namespace, pod, container_id, rule, playbook_step]\n  group_wait: 1s\n\
         \x20 routes:\n    - receiver: driftwatch-respond\n      matchers: ['playbook_step=~\"isolate|evict\"']\n\
         \x20     group_wait: 0s\n      group_interval: 5s\n      repeat_interval: 1h\n\
         receivers:\n  - name: blackhole\n  - name: driftwatch-respond\n    webhook_configs:\n\
         \x20     - url: http://{responder}/v1/alerts\n        send_resolved: false\n        max_alerts: 20\n\
         \x20       http_config:\n          authorization:\n            type: Bearer\n            credentials_file: {}\n",
        token_file.display()
    )
}

/// POSTs alerts to Alertmanager's v2 API; the status code.
fn post_alerts(am: SocketAddr, alerts: &Value) -> u16 {
    let body = alerts.to_string();
    let mut s = TcpStream::connect_timeout(&am, Duration::from_secs(2)).expect("connect to Alertmanager");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /api/v2/alerts HTTP/1.0\r\nHost: {am}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// The stand-in's Pod: the CRI pod's namespace and name, its container id,
/// a ReplicaSet owner.
fn pod_object(container_id: &str) -> Value {
    let mut p = pod(NAMESPACE, POD, NODE, Some(("apps/v1", "ReplicaSet", REPLICASET)), json!({"app": "web"}));
    p["status"]["containerStatuses"][0]["containerID"] = json!(format!("containerd://{container_id}"));
    p["status"]["hostIP"] = json!("127.0.0.1");
    p
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>, context: impl Fn() -> String) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "no {what} within {timeout:?}\n{}", context());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn of<'a>(reqs: &'a [Recorded], method: &str, path: &str) -> Vec<&'a Recorded> {
    reqs.iter().filter(|r| r.method == method && r.path == path).collect()
}

fn since(kernel: SystemTime, at: SystemTime) -> Duration {
    at.duration_since(kernel).unwrap_or_default()
}

#[test]
fn drift_is_isolated_and_evicted_through_alertmanager() {
    if !support::privileged() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let api = rt.block_on(RwApi::start(RwState::default()));
    let dir = std::env::temp_dir().join(format!("driftwatch-e2e-respond-chain-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("webhook-token");
    std::fs::write(&token_file, format!("{WEBHOOK_TOKEN}\n")).unwrap();
    let admin_token = dir.join("admin-token");
    std::fs::write(&admin_token, format!("{ADMIN_TOKEN}\n")).unwrap();
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // The node agent as the API lists it: a running pod of the agent's labels on the pod's node.
    let mut agent_pod = pod("driftwatch", "driftwatch-agent-x1", NODE, None, json!({}));
    agent_pod["metadata"]["labels"] =
        json!({"app.kubernetes.io/name": "driftwatch", "app.kubernetes.io/component": "agent"});
    agent_pod["status"]["podIP"] = json!("127.0.0.1");
    api.with(|s| s.pods.insert("driftwatch/driftwatch-agent-x1".into(), agent_pod));

    let respond_cfg = dir.join("respond.yaml");
    std::fs::write(
        &respond_cfg,
        format!(
            "respond:\n  dry_run: false\n  steps: [isolate, evict]\n  escalate: {{isolate: evict}}\n  webhook:\n    token_file: {}\n\
             \x20 node_agent:\n    selector: {AGENT_SELECTOR}\n    port: {admin_port}\n    token_file: {}\n",
            token_file.display(),
            admin_token.display()
        ),
    )
    .unwrap();
    let responder = Responder::start(&api.kubeconfig, &respond_cfg, dir.join("respond.log"));
    let am = Alertmanager::start_config(&alertmanager_config(responder.addr, &token_file));

    let agent_cfg = dir.join("agent.yaml");
    std::fs::write(
        &agent_cfg,
        format!(
            "alertmanager:\n  url: {}\n  group_window_ms: 300\nadmin_token_file: {}\nresponse:\n  capture:\n    dir: {}\n",
            am.url(),
            admin_token.display(),
            dir.join("evidence").display()
        ),
    )
    .unwrap();
    let endpoint = format!("unix://{}", support::containerd().address.display());
    let admin_addr = format!("127.0.0.1:{admin_port}");
    let agent = Agent::start(&[
        "--runtime-endpoint",
        &endpoint,
        "--config",
        agent_cfg.to_str().unwrap(),
        "--admin-addr",
        &admin_addr,
    ]);
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("alerts/driftwatch-rules.yaml");
    let prom = Prometheus::start(agent.addr, &[&rules], am.addr);
    prom.wait_for(r#"up{job="driftwatch"} == 1"#, Duration::from_secs(30));

    let spec = PodSpec::new(POD, "web").namespace(NAMESPACE).label("pod-template-hash", "5f7c9d8b4");
    let mut pod = Pod::run(&support::containerd().address, spec);
    let app = pod.start_container("app", &["/bin/sleep", "300"]);
    api.with(|s| s.pods.insert(format!("{NAMESPACE}/{POD}"), pod_object(&app.id)));

    let (code, _, err) = app.exec_sync(&["/bin/cp", "/bin/busybox", "/tmp/busybox"]).expect("ExecSync cp");
    assert_eq!(code, 0, "{err}");
    let _ = app.exec_sync(&["/tmp/busybox", "true"]).expect("ExecSync drift");
    let finding = agent.wait_for("binary drift", |f| {
        f["container.id"] == app.id.as_str() && f["rule"] == "exec_new_binary" && f["k8s.pod.name"] == POD
    });
    let kernel: SystemTime =
        time::OffsetDateTime::parse(finding["time"].as_str().unwrap(), &time::format_description::well_known::Rfc3339)
            .expect("the finding's time is RFC 3339")
            .into();

    // Isolate: the agent's alert (playbook_step=isolate) reaches the responder through the route.
    let np_path = format!("/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/networkpolicies");
    let context = || {
        format!(
            "requests: {:#?}\nresponder audit: {:#?}\nresponder stderr:\n{}\nalertmanager:\n{}",
            api.requests(),
            responder.audit(),
            responder.stderr(),
            am.log()
        )
    };
    let np = wait_for(
        "NetworkPolicy create",
        Duration::from_secs(90),
        || of(&api.requests(), "POST", &np_path).first().map(|r| (*r).clone()),
        context,
    );
    let short = &app.id[..12];
    assert_eq!(
        np.body,
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": format!("driftwatch-quarantine-{short}"), "namespace": NAMESPACE,
                            "labels": {"app.kubernetes.io/managed-by": "driftwatch"},
                            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": POD, "uid": format!("uid-{POD}")}]},
               "spec": {"podSelector": {"matchLabels": {"driftwatch.io/quarantine": short}},
                        "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []}})
    );
    let pod_path = format!("/api/v1/namespaces/{NAMESPACE}/pods/{POD}");
    let isolate_patch = wait_for(
        "the quarantine label patch",
        Duration::from_secs(30),
        || of(&api.requests(), "PATCH", &pod_path).first().map(|r| (*r).clone()),
        context,
    );
    assert_eq!(isolate_patch.content_type, "application/merge-patch+json");
    assert_eq!(
        isolate_patch.body,
        json!({"metadata": {"labels": {"driftwatch.io/drifted": "exec_new_binary", "driftwatch.io/quarantine": short},
                            "annotations": {"driftwatch.io/drifted-container": app.id}}})
    );
    assert!(isolate_patch.at >= np.at, "the policy is created before the label selects the pod");

    // Isolate's capture: the agent on the pod's node (found by selector and node) writes a
    // bundle through its admin API; the pod is annotated with where it is.
    let evidence_patch = wait_for(
        "the evidence annotation",
        Duration::from_secs(90),
        || {
            of(&api.requests(), "PATCH", &pod_path)
                .into_iter()
                .find(|p| p.body["metadata"]["annotations"]["driftwatch.io/evidence"].is_string())
                .cloned()
        },
        context,
    );
    let location = evidence_patch.body["metadata"]["annotations"]["driftwatch.io/evidence"].as_str().unwrap();
    assert_eq!(evidence_patch.body, json!({"metadata": {"annotations": {"driftwatch.io/evidence": location}}}));
    let bundle = location.strip_prefix(&format!("{NODE}:")).unwrap_or_else(|| panic!("{location}"));
    assert!(bundle.starts_with(dir.join("evidence").to_str().unwrap()) && bundle.ends_with(".tar.gz"), "{bundle}");
    assert!(std::fs::metadata(bundle).is_ok_and(|m| m.len() > 0), "the bundle {bundle} is on the node");
    let lists =
        of(&api.requests(), "GET", "/api/v1/namespaces/driftwatch/pods").into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(lists.len(), 1, "{lists:#?}");
    assert!(
        lists[0].query.contains("labelSelector=") && lists[0].query.contains("fieldSelector=spec.nodeName"),
        "{}",
        lists[0].query
    );

    // The audit line comes after the decision's Event: nothing of the isolate is still in flight.
    let responder = &responder;
    let audited = |action: &'static str| {
        move || responder.audit().into_iter().find(|a| a["action"] == action && a["result"] == "acted")
    };
    wait_for("the capture audited", Duration::from_secs(30), audited("investigate"), context);

    // Evict: the isolate alert escalates once the pod is isolated and its evidence captured.
    let evict_path = format!("{pod_path}/eviction");
    let eviction = wait_for(
        "Eviction",
        Duration::from_secs(90),
        || of(&api.requests(), "POST", &evict_path).first().map(|r| (*r).clone()),
        context,
    );
    assert_eq!(
        eviction.body,
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": POD, "namespace": NAMESPACE}})
    );
    wait_for("the eviction audited", Duration::from_secs(30), audited("evict"), context);
    let patches = of(&api.requests(), "PATCH", &pod_path).into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(patches.len(), 3, "{patches:#?}");
    assert_eq!(
        patches[2].body,
        json!({"metadata": {"labels": {"driftwatch.io/drifted": "exec_new_binary"},
                            "annotations": {"driftwatch.io/drifted-container": app.id}}})
    );

    // The rules' workload-level alert (no pod, no container_id) reaches the responder and is acknowledged.
    let acked = wait_for(
        "the rules' alert acknowledged",
        Duration::from_secs(120),
        || {
            responder
                .audit()
                .into_iter()
                .find(|a| a["alertname"] == "ContainerDriftBinary" && a["namespace"] == NAMESPACE && a["pod"] == "")
        },
        context,
    );
    assert_eq!((acked["action"].as_str(), acked["result"].as_str()), (Some("none"), Some("acknowledged")), "{acked}");

    // Every decision audited; nothing written but the policy, the two patches, the eviction and their Events.
    let audit = responder.audit();
    let acted: Vec<(&str, &str)> = audit
        .iter()
        .filter(|a| a["result"] == "acted")
        .map(|a| (a["action"].as_str().unwrap_or(""), a["pod"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(acted, [("isolate", POD), ("investigate", POD), ("evict", POD)], "{audit:#?}");
    let writes: Vec<String> = api.writes().iter().map(|w| format!("{} {}", w.method, w.path)).collect();
    let events = format!("POST /api/v1/namespaces/{NAMESPACE}/events");
    assert_eq!(
        writes,
        [
            format!("POST {np_path}"),
            format!("PATCH {pod_path}"),
            events.clone(),
            format!("PATCH {pod_path}"),
            events.clone(),
            format!("PATCH {pod_path}"),
            format!("POST {evict_path}"),
            events
        ],
        "{:#?}",
        api.writes()
    );
    let m = responder.metrics();
    for line in [
        r#"driftwatch_response_actions_total{action="isolate",result="acted"} 1"#,
        r#"driftwatch_response_actions_total{action="evict",result="acted"} 1"#,
        r#"driftwatch_response_actions_total{action="investigate",result="acted"} 1"#,
    ] {
        assert!(m.contains(line), "{line} in\n{m}");
    }
    assert!(m.contains(r#"driftwatch_response_webhook_requests_total{code="200"}"#), "{m}");
    assert!(!m.contains("driftwatch_response_webhook_rejected_total{"), "Alertmanager's requests all accepted: {m}");

    eprintln!(
        "e2e_respond_chain: kernel event -> NetworkPolicy create {:.3}s, -> quarantine label {:.3}s; \
         -> evidence annotation {:.3}s, -> Eviction {:.3}s (escalated from the isolate alert)",
        since(kernel, np.at).as_secs_f64(),
        since(kernel, isolate_patch.at).as_secs_f64(),
        since(kernel, evidence_patch.at).as_secs_f64(),
        since(kernel, eviction.at).as_secs_f64(),
    );
    drop(prom);
    drop(pod);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Alertmanager's own webhook client with `http_config.tls_config` (a client
/// certificate) to a responder with `webhook.tls.client_ca_file` and no bearer
/// token: the certificate alone authenticates, and the alert acts.
#[test]
fn alertmanager_reaches_the_responder_over_mtls() {
    if !support::privileged() {
        return;
    }
    let pki = support::tls::Pki::new("respond-chain-mtls");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let cid = "c".repeat(64);
    let mut state = RwState::default();
    state.pods.insert(format!("{NAMESPACE}/{POD}"), pod_object(&cid));
    let api = rt.block_on(RwApi::start(state));
    let dir = std::env::temp_dir().join(format!("driftwatch-e2e-respond-mtls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let p = |p: &Path| p.display().to_string();
    let cfg = dir.join("respond.yaml");
    std::fs::write(
        &cfg,
        format!(
            "respond:\n  dry_run: false\n  steps: [isolate]\n  webhook:\n    tls:\n      cert_file: {}\n      key_file: {}\n      client_ca_file: {}\n",
            p(&pki.server_cert),
            p(&pki.server_key),
            p(&pki.ca)
        ),
    )
    .unwrap();
    let responder = Responder::start_tls(&api.kubeconfig, &cfg, dir.join("respond.log"), pki.client_config());
    let am = Alertmanager::start_config(&format!(
        "route:\n  receiver: driftwatch-respond\n  group_by: [namespace, pod, container_id]\n  group_wait: 0s\n\
         receivers:\n  - name: driftwatch-respond\n    webhook_configs:\n      - url: https://{}/v1/alerts\n        send_resolved: false\n\
         \x20       http_config:\n          tls_config:\n            ca_file: {}\n            cert_file: {}\n            key_file: {}\n",
        responder.addr,
        p(&pki.ca),
        p(&pki.client_cert),
        p(&pki.client_key)
    ));
    let alert = json!([{"labels": {"alertname": "ContainerDriftBinary", "playbook_step": "isolate", "rule": "exec_new_binary",
        "namespace": NAMESPACE, "pod": POD, "container_id": cid}, "annotations": {"summary": "drift"}}]);
    assert_eq!(post_alerts(am.addr, &alert), 200);
    let np_path = format!("/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/networkpolicies");
    let context =
        || format!("audit {:#?}\nresponder:\n{}\nalertmanager:\n{}", responder.audit(), responder.stderr(), am.log());
    wait_for(
        "the isolate over mTLS",
        Duration::from_secs(60),
        || responder.audit().into_iter().find(|a| a["action"] == "isolate" && a["result"] == "acted"),
        context,
    );
    assert_eq!(of(&api.requests(), "POST", &np_path).len(), 1);
    drop(am);
    drop(responder);
    let _ = std::fs::remove_dir_all(&dir);
}
