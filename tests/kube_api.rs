//! The Kubernetes API code (src/enrich/kube.rs) against a fake apiserver.
//!
//! No apiserver can run on the machines this project is built and tested on,
//! so these tests run the real kube client (from a kubeconfig, plain HTTP) and
//! the real watcher against a local hyper server (tests/support/kubeapi.rs)
//! serving real Kubernetes API JSON: pods with ownerReferences, a ReplicaSet
//! owned by a Deployment, a Job owned by a CronJob, a watch stream whose update
//! adds an ephemeral container, 403 Forbidden and 410 Gone. Unprivileged.
#![allow(clippy::field_reassign_with_default)] // scripted states read better step by step
mod support;

use driftwatch::enrich::kube::{self, KubeIndex, Source};
use driftwatch::metrics::KubeMetrics;
use serde_json::json;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use support::kubeapi::{FakeApi, State, WatchPlan, owned, pod, status};
use tokio_util::sync::CancellationToken;

const NODE: &str = "node-1";

async fn index(api: &FakeApi) -> (Arc<KubeIndex>, CancellationToken) {
    index_counting(api, KubeMetrics::default()).await
}

/// An index counting into `m` (the agent's `driftwatch_kubernetes_*` series).
async fn index_counting(api: &FakeApi, m: KubeMetrics) -> (Arc<KubeIndex>, CancellationToken) {
    let client = kube::client(&Source::Kubeconfig(api.kubeconfig.clone())).await.expect("client from kubeconfig");
    let cancel = CancellationToken::new();
    (KubeIndex::spawn(client, NODE, m, cancel.clone()), cancel)
}

async fn until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn owners_state() -> State {
    let mut s = State::default();
    s.pods = vec![
        pod(
            "shop",
            "checkout-7d9f8b6c5d-x2k4q",
            NODE,
            Some(("apps/v1", "ReplicaSet", "checkout-7d9f8b6c5d")),
            json!({"app": "checkout", "pod-template-hash": "7d9f8b6c5d"}),
        ),
        pod(
            "shop",
            "checkout-7d9f8b6c5d-b7w2n",
            NODE,
            Some(("apps/v1", "ReplicaSet", "checkout-7d9f8b6c5d")),
            json!({"app": "checkout", "pod-template-hash": "7d9f8b6c5d"}),
        ),
        pod(
            "ops",
            "backup-28391520-abcde",
            NODE,
            Some(("batch/v1", "Job", "backup-28391520")),
            json!({"batch.kubernetes.io/job-name": "backup-28391520"}),
        ),
        pod("ops", "migrate-x7k2p", NODE, Some(("batch/v1", "Job", "migrate")), json!({"job-name": "migrate"})),
        pod("db", "pg-0", NODE, Some(("apps/v1", "StatefulSet", "pg")), json!({})),
        pod("mon", "node-exporter-8xq2z", NODE, Some(("apps/v1", "DaemonSet", "node-exporter")), json!({})),
        pod("web", "static-web", NODE, None, json!({})),
        // RBAC allows pods but not this ReplicaSet: names and labels decide.
        pod(
            "web",
            "front-5c9f7-abcde",
            NODE,
            Some(("apps/v1", "ReplicaSet", "front-5c9f7")),
            json!({"pod-template-hash": "5c9f7"}),
        ),
    ];
    s.objects.insert(
        "/apis/apps/v1/namespaces/shop/replicasets/checkout-7d9f8b6c5d".into(),
        owned("apps/v1", "ReplicaSet", "shop", "checkout-7d9f8b6c5d", ("apps/v1", "Deployment", "checkout")),
    );
    s.objects.insert(
        "/apis/batch/v1/namespaces/ops/jobs/backup-28391520".into(),
        owned("batch/v1", "Job", "ops", "backup-28391520", ("batch/v1", "CronJob", "backup")),
    );
    // A Job of its own (no CronJob owner): the object has no ownerReferences.
    s.objects.insert(
        "/apis/batch/v1/namespaces/ops/jobs/migrate".into(),
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate", "namespace": "ops", "uid": "u"}}),
    );
    s.forbidden.push("/apis/apps/v1/namespaces/web/replicasets/front-5c9f7".into());
    s
}

#[tokio::test]
async fn owners_resolve_through_replicasets_and_jobs() {
    let api = FakeApi::start(owners_state()).await;
    let (idx, cancel) = index(&api).await;
    until("first list", Duration::from_secs(10), || idx.synced()).await;

    let w = |ns: &str, p: &str| idx.workload(ns, p).map(|(k, n)| (k.to_string(), n));
    let pair = |k: &str, n: &str| Some((k.to_string(), n.to_string()));
    assert_eq!(w("shop", "checkout-7d9f8b6c5d-x2k4q"), pair("Deployment", "checkout"));
    assert_eq!(w("shop", "checkout-7d9f8b6c5d-b7w2n"), pair("Deployment", "checkout"));
    assert_eq!(w("ops", "backup-28391520-abcde"), pair("CronJob", "backup"));
    assert_eq!(w("ops", "migrate-x7k2p"), pair("Job", "migrate"));
    assert_eq!(w("db", "pg-0"), pair("StatefulSet", "pg"));
    assert_eq!(w("mon", "node-exporter-8xq2z"), pair("DaemonSet", "node-exporter"));
    assert_eq!(w("web", "static-web"), pair("Pod", "static-web"));
    assert_eq!(
        w("web", "front-5c9f7-abcde"),
        pair("Deployment", "front"),
        "403 on the ReplicaSet: from the hash label"
    );
    assert_eq!(w("web", "nope"), None);

    // The pod spec is kept for the config checks.
    let p = idx.pod("shop", "checkout-7d9f8b6c5d-x2k4q").unwrap();
    assert_eq!(p.uid, "uid-checkout-7d9f8b6c5d-x2k4q");
    assert_eq!(p.container("app").unwrap().image, "registry.example.com/shop/app:1.4.2");
    assert!(p.container("app").unwrap().read_only_root);
    assert!(!p.container("sidecar").unwrap().read_only_root, "readOnlyRootFilesystem not set");
    assert_eq!(p.container_ids.get(&"a".repeat(64)).map(String::as_str), Some("app"));

    let reqs = api.requests();
    assert!(
        reqs.iter().any(|r| r.starts_with("/api/v1/pods?") && r.contains("fieldSelector=spec.nodeName%3Dnode-1")),
        "only this node's pods are listed: {reqs:#?}"
    );
    let rs_gets = reqs.iter().filter(|r| r.contains("/replicasets/checkout-7d9f8b6c5d")).count();
    assert_eq!(rs_gets, 1, "two pods of one ReplicaSet, one GET (cached): {reqs:#?}");
    cancel.cancel();
}

#[tokio::test]
async fn a_watch_update_adding_an_ephemeral_container_is_reported_once() {
    let mut s = State::default();
    let before = pod("db", "pg-0", NODE, Some(("apps/v1", "StatefulSet", "pg")), json!({}));
    let mut after = before.clone();
    after["metadata"]["resourceVersion"] = json!("101");
    after["spec"]["ephemeralContainers"] = json!([{"name": "debugger-x7k2p", "image": "busybox:1.36",
        "targetContainerName": "app", "stdin": true, "tty": true}]);
    after["status"]["ephemeralContainerStatuses"] = json!([{"name": "debugger-x7k2p", "ready": false,
        "restartCount": 0, "image": "docker.io/library/busybox:1.36", "imageID": "",
        "containerID": format!("containerd://{}", "e".repeat(64)),
        "state": {"running": {"startedAt": "2026-01-01T00:05:00Z"}}}]);
    let mut again = after.clone();
    again["metadata"]["resourceVersion"] = json!("102");
    s.pods = vec![before];
    s.watches.push_back(WatchPlan {
        events: vec![json!({"type": "MODIFIED", "object": after}), json!({"type": "MODIFIED", "object": again})],
        close_after: None,
    });
    let api = FakeApi::start(s).await;
    let (idx, cancel) = index(&api).await;
    let mut events = idx.take_events().expect("event stream");
    let ev = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.expect("ephemeral event").unwrap();
    assert_eq!(ev.pod.name, "pg-0");
    assert_eq!(ev.spec.name, "debugger-x7k2p");
    assert_eq!(ev.spec.image, "busybox:1.36");
    assert_eq!(ev.spec.target.as_deref(), Some("app"));
    assert_eq!(ev.container_id, Some("e".repeat(64)));
    assert_eq!(ev.pod.workload, Some(("StatefulSet", "pg".into())));
    // The second update carries the same ephemeral container: no second event.
    until("second update applied", Duration::from_secs(5), || {
        idx.pod("db", "pg-0").is_some_and(|p| p.container_ids.contains_key(&"e".repeat(64)))
    })
    .await;
    assert!(tokio::time::timeout(Duration::from_millis(300), events.recv()).await.is_err(), "reported once");
    cancel.cancel();
}

#[tokio::test]
async fn gone_410_relists_and_replaces_the_index() {
    let mut s = State::default();
    s.pods = vec![pod("web", "old-pod", NODE, None, json!({}))];
    s.watches.push_back(WatchPlan {
        events: vec![json!({"type": "ERROR", "object": status(410, "Expired", "too old resource version: 1 (5)")})],
        close_after: None,
    });
    let api = FakeApi::start(s).await;
    let m = KubeMetrics::default();
    let (idx, cancel) = index_counting(&api, m.clone()).await;
    until("first list", Duration::from_secs(10), || idx.synced()).await;
    assert!(idx.pod("web", "old-pod").is_some());
    // While the watch expires, the pod was deleted and another one created.
    api.with(|s| s.pods = vec![pod("web", "new-pod", NODE, None, json!({}))]);
    until("relist after 410", Duration::from_secs(15), || idx.pod("web", "new-pod").is_some()).await;
    assert!(idx.pod("web", "old-pod").is_none(), "the relist replaces the index");
    assert!(m.errors("gone") >= 1 && m.lists.get() >= 2, "{m:?}");
    cancel.cancel();
}

#[tokio::test]
async fn forbidden_403_is_counted_retried_and_not_fatal() {
    let mut s = State::default();
    s.list_error = Some(403);
    s.pods = vec![pod("web", "static-web", NODE, None, json!({}))];
    let api = FakeApi::start(s).await;
    let m = KubeMetrics::default();
    let (idx, cancel) = index_counting(&api, m.clone()).await;
    until("403 seen", Duration::from_secs(10), || m.errors("forbidden") >= 1).await;
    assert!(!idx.synced());
    assert_eq!(idx.workload("web", "static-web"), None, "nothing known: callers fall back to labels");
    // RBAC fixed: the backoff retries and the index fills.
    api.with(|s| s.list_error = None);
    until("list after RBAC fix", Duration::from_secs(20), || idx.synced()).await;
    assert_eq!(idx.workload("web", "static-web"), Some(("Pod", "static-web".into())));
    let lists = api.requests().iter().filter(|r| r.starts_with("/api/v1/pods?") && !r.contains("watch=")).count();
    assert!(lists >= 2, "retried");
    cancel.cancel();
}
