//! End to end: real drift in a real container -> the agent -> a real OTLP
//! logs receiver (gRPC and HTTP/protobuf, built from opentelemetry-proto),
//! in plain text and behind TLS (a test CA, mutual TLS, a wrong CA), and a
//! collector that is down or slow: the agent keeps detecting, counts what it
//! could not deliver, and its memory stays bounded.
//!
//! Run with: DRIFTWATCH_PRIVILEGED_TESTS=1 cargo test --test e2e_otlp
mod support;

use serde_json::Value;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};
use support::{
    RunSpec,
    agent::Agent,
    otlp::{Rec, Receiver, config_file},
    tls::{Handshake, Pki, TlsFront},
};

/// Every agent sees every container on the node, so a storm test floods the
/// agents of the tests running beside it, and those of a storm test's own
/// accounting ("every record counted") never settle. Storms run alone; the
/// other tests share.
static STORMS: RwLock<()> = RwLock::new(());

fn alone() -> RwLockWriteGuard<'static, ()> {
    STORMS.write().unwrap_or_else(|e| e.into_inner())
}

fn beside_others() -> RwLockReadGuard<'static, ()> {
    STORMS.read().unwrap_or_else(|e| e.into_inner())
}

fn node_name() -> String {
    std::env::var("NODE_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string())
}

/// The record carries the JSON finding: event name, severity, body, the
/// OpenTelemetry security conventions (`security_rule.*`, the semantic
/// conventions crate's names), every other key as an attribute with the same
/// value but those that only repeat the record's timestamp, body and severity,
/// and the resource.
fn assert_record_is_finding(r: &Rec, f: &Value, event: &str, severity: i32) {
    use opentelemetry_semantic_conventions::attribute as sc;
    assert_eq!(r.record.event_name, event, "{r:#?}");
    assert_eq!(r.record.severity_number, severity, "{r:#?}");
    assert_eq!(r.record.severity_text, f["severity"].as_str().unwrap());
    assert_eq!(r.body(), f["message"]);
    let mut want = f.as_object().unwrap().clone();
    for k in ["time", "message", "severity", "k8s.workload.kind", "k8s.workload.name"] {
        want.remove(k);
    }
    if let (Some(kind), Some(name)) = (f["k8s.workload.kind"].as_str(), f["k8s.workload.name"].as_str())
        && let Some(key) = driftwatch::sink::otlp::semconv::workload_key(kind)
    {
        want.insert(key.into(), name.into());
    }
    let rule = f["rule"].as_str().unwrap();
    let alert = driftwatch::sink::alertmanager::alertname(f["kind"].as_str().unwrap());
    want.insert(sc::SECURITY_RULE_NAME.into(), rule.into());
    want.insert(sc::SECURITY_RULE_CATEGORY.into(), f["kind"].clone());
    want.insert(sc::SECURITY_RULE_RULESET_NAME.into(), "driftwatch".into());
    want.insert(
        sc::SECURITY_RULE_REFERENCE.into(),
        format!("https://github.com/driftwatch/driftwatch/blob/main/docs/runbooks/{alert}.md").into(),
    );
    want.insert(sc::SECURITY_RULE_UUID.into(), driftwatch::sink::otlp::semconv::rule_uuid(rule).into());
    assert_eq!(&r.attrs, &want, "OTLP attributes: the security conventions and the JSON finding's other keys");
    assert!(r.record.time_unix_nano > 0 && r.record.observed_time_unix_nano >= r.record.time_unix_nano, "{r:#?}");
    assert_eq!(r.resource[sc::SERVICE_NAME], "driftwatch");
    assert_eq!(r.resource[sc::SERVICE_VERSION], env!("CARGO_PKG_VERSION"));
    assert_eq!(r.resource[sc::K8S_NODE_NAME], node_name().as_str());
    assert_eq!(r.resource[sc::HOST_NAME], node_name().as_str());
    let cluster = r.resource.get(sc::K8S_CLUSTER_NAME).and_then(Value::as_str).unwrap_or("");
    let instance = driftwatch::sink::otlp::semconv::instance_id(cluster, &node_name());
    assert_eq!(r.resource[sc::SERVICE_INSTANCE_ID], instance.as_str());
    assert_eq!(r.scope, "driftwatch");
}

fn drop_binary(c: &support::Container) {
    c.exec_ok(&["/bin/cp", "/bin/busybox", "/tmp/busybox"]);
    c.exec_ok(&["/tmp/busybox", "true"]);
}

#[test]
fn grpc_receiver_gets_drift_finding() {
    if !support::privileged() {
        return;
    }
    let _storms = beside_others();
    let rx = Receiver::grpc();
    let cfg = config_file(
        "otlp-grpc",
        &format!("cluster_name: prod-eu\notlp:\n  endpoint: {}\n  protocol: grpc\n  batch_timeout_ms: 100\n", rx.url()),
    );
    let agent = Agent::start(&["--config", cfg.to_str().unwrap()]);
    let c = support::containerd().run(RunSpec::sleeper());
    drop_binary(&c);
    let f = agent.wait_for("dropped binary", |f| f["container.id"] == c.id.as_str() && f["kind"] == "binary");
    let r = rx.wait_for("the binary finding", Duration::from_secs(15), |r| {
        r.attrs.get("container.id") == Some(&Value::from(c.id.as_str()))
            && r.attrs.get("kind") == Some(&"binary".into())
    });
    assert_record_is_finding(&r, &f, "driftwatch.drift.binary", 18);
    assert_eq!(r.attrs["rule"], "exec_new_binary");
    assert_eq!(r.attrs["security_rule.name"], "exec_new_binary");
    assert_eq!(r.resource["k8s.cluster.name"], "prod-eu", "config cluster_name");
    assert!(r.attrs["driftwatch.tags"].as_array().unwrap().contains(&"T1105".into()), "{r:#?}");
    assert_eq!(r.attrs["process.command_args"], serde_json::json!(["/tmp/busybox", "true"]));
    // The isolate finding's evidence bundle (response.capture is on by default) is an event too.
    let e = rx.wait_for("the evidence event", Duration::from_secs(30), |r| {
        r.record.event_name == "driftwatch.evidence.captured"
            && r.attrs.get("container.id") == Some(&Value::from(c.id.as_str()))
    });
    assert_eq!(e.attrs["driftwatch.evidence.path"], f["driftwatch.evidence.path"], "{e:#?}");
    assert!(e.attrs.contains_key("driftwatch.evidence.result"), "{e:#?}");
    // A shell: warning -> WARN (13).
    c.exec_ok(&["/bin/sh", "-c", ": otlp-shell"]);
    let f = agent.wait_for("shell", |f| f["container.id"] == c.id.as_str() && f["kind"] == "shell");
    let r = rx.wait_for("the shell finding", Duration::from_secs(15), |r| {
        r.attrs.get("container.id") == Some(&Value::from(c.id.as_str())) && r.attrs.get("kind") == Some(&"shell".into())
    });
    assert_record_is_finding(&r, &f, "driftwatch.drift.shell", 13);
    // The receiver has a record before the agent has the answer and counts it.
    wait_until("both exports counted", Duration::from_secs(10), || {
        agent.metric("driftwatch_otlp_records_total{result=\"exported\"}").unwrap_or(0.0) >= 2.0
    });
    assert_eq!(agent.metric("driftwatch_otlp_records_total{result=\"failed\"}"), Some(0.0));
    assert_eq!(agent.metric("driftwatch_otlp_records_total{result=\"dropped\"}"), Some(0.0));
    // Diagnostics are not findings: every record received is a finding or a
    // response event (evidence, quarantine), never a log line of the agent.
    for r in rx.records() {
        let n = &r.record.event_name;
        assert!(n.starts_with("driftwatch.drift.") || n == "driftwatch.evidence.captured", "{r:#?}");
    }
}

#[test]
fn http_protobuf_receiver_gets_finding_configured_by_otel_env() {
    if !support::privileged() {
        return;
    }
    let _storms = beside_others();
    let rx = Receiver::http();
    // Configured by the standard variables only (no otlp: section).
    let agent = Agent::start_with_env(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", rx.url().as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=drift"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test,k8s.cluster.name=kind"),
            ("NODE_NAME", "node-under-test"),
            ("RUST_LOG", "info"),
        ],
    );
    let c = support::containerd().run(RunSpec::sleeper());
    c.exec_ok(&["/usr/bin/memexec", "/bin/busybox", "true"]);
    // The finding's evidence event (default response) may be exported first.
    let r = rx.wait_for("the memfd finding", Duration::from_secs(20), |r| {
        r.attrs.get("container.id") == Some(&Value::from(c.id.as_str()))
            && r.record.event_name != "driftwatch.evidence.captured"
    });
    assert_eq!(r.record.event_name, "driftwatch.drift.binary");
    assert_eq!(r.record.severity_number, 18);
    assert_eq!(r.attrs["rule"], "exec_fileless_memfd");
    assert_eq!(r.attrs["driftwatch.exe.source"], "memfd");
    assert_eq!(r.attrs["process.executable.path"], "/memfd:payload");
    assert_eq!(r.attrs["process.command_args"], serde_json::json!(["/bin/busybox", "true"]));
    assert_eq!(r.resource["service.name"], "driftwatch");
    assert_eq!(r.resource["k8s.node.name"], "node-under-test");
    assert_eq!(r.resource["k8s.cluster.name"], "kind");
    assert_eq!(r.resource["deployment.environment.name"], "test");
    // (Other tests' containers may add findings: at least ours was exported.)
    // The receiver has the record before the agent has the answer and counts
    // it: wait for the count rather than read it once.
    wait_until("the export counted", Duration::from_secs(10), || {
        metric(agent.addr, "driftwatch_otlp_records_total{result=\"exported\"}") >= 1.0
    });
}

fn metric(addr: std::net::SocketAddr, series: &str) -> f64 {
    let m = support::agent::http_get(addr, "/metrics").unwrap().2;
    m.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("no {series} in\n{m}"))
}

/// A storm of `n` drift findings in `c` (a dropped binary run `n` times by a shell loop).
fn storm(c: &support::Container, n: usize) {
    c.exec_ok(&["/bin/cp", "/bin/busybox", "/tmp/bb"]);
    c.exec_ok(&["/bin/sh", "-c", &format!("i=0; while [ $i -lt {n} ]; do /tmp/bb true; i=$((i+1)); done")]);
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Collector down (nothing listens): every finding still reaches stdout, every
/// OTLP record is accounted for as failed or dropped, the queue never exceeds
/// its bound and the agent's memory does not grow with the storm.
#[test]
fn collector_down_costs_bounded_memory_and_counts_failures() {
    if !support::privileged() {
        return;
    }
    let _storms = alone();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    // Nothing listens there once the listener is dropped.
    let cfg = config_file(
        "otlp-down",
        &format!(
            "otlp:\n  endpoint: http://{dead}\n  protocol: grpc\n  timeout_ms: 300\n  max_queue_size: 64\n  max_batch_size: 16\n  batch_timeout_ms: 20\n"
        ),
    );
    let agent = Agent::start(&["--config", cfg.to_str().unwrap()]);
    let c = support::containerd().run(RunSpec::sleeper());
    let rss0 = agent.rss_kb().expect("agent rss");
    let n = 3000;
    let mut max_queued = 0.0f64;
    let t = Instant::now();
    std::thread::scope(|s| {
        let h = s.spawn(|| storm(&c, n));
        while !h.is_finished() {
            max_queued = max_queued.max(agent.metric("driftwatch_otlp_queued_records").unwrap_or(0.0));
            std::thread::sleep(Duration::from_millis(25));
        }
    });
    let storm_s = t.elapsed().as_secs_f64();
    let ours = || agent.findings_of(&c.id).iter().filter(|f| f["process.executable.path"] == "/tmp/bb").count();
    wait_until("every storm finding on stdout", Duration::from_secs(30), || ours() >= n);
    let g = |r: &str| agent.metric(&format!("driftwatch_otlp_records_total{{result=\"{r}\"}}")).unwrap();
    let q = |name: &str| agent.metric(&format!("driftwatch_userspace_drops_total{{queue=\"{name}\"}}")).unwrap();
    // Everything settles: nothing exported, all counted as failed or dropped.
    // (The stdout count is read first: a finding counted after it only adds.)
    wait_until("all OTLP records accounted", Duration::from_secs(60), || {
        let on_stdout = agent.findings().len() as f64;
        let total = g("failed") + g("dropped") + q("findings_otlp");
        total >= on_stdout && agent.metric("driftwatch_otlp_queued_records") == Some(0.0)
    });
    assert_eq!(g("exported"), 0.0);
    assert!(g("failed") > 0.0, "{}", agent.metrics());
    assert!(g("dropped") > 0.0, "{}", agent.metrics());
    assert!(max_queued <= 64.0 + 16.0, "queued {max_queued} exceeds max_queue_size + one batch");
    let rss1 = agent.rss_kb().expect("agent rss");
    eprintln!(
        "collector down: {n} findings in {storm_s:.1}s; exported 0, failed {}, dropped {}, hand-off drops {}; max queued {max_queued}; rss {rss0} kB -> {rss1} kB",
        g("failed"),
        g("dropped"),
        q("findings_otlp")
    );
    assert!(rss1 < rss0 + 32 * 1024, "rss grew from {rss0} kB to {rss1} kB");
    // Still detecting, and stdout got everything.
    assert_eq!(q("findings_stdout"), 0.0);
    c.exec_ok(&["/usr/bin/memexec", "/bin/busybox", "true"]);
    agent.wait_for("memfd after the storm", |f| {
        f["container.id"] == c.id.as_str() && f["rule"] == "exec_fileless_memfd"
    });
}

/// Collector that accepts but answers too late: exports time out and are
/// counted as failed; detection goes on; memory stays bounded.
#[test]
fn slow_collector_times_out_and_is_counted() {
    if !support::privileged() {
        return;
    }
    let _storms = alone();
    let rx = Receiver::grpc_with_delay(Duration::from_secs(30));
    let cfg = config_file(
        "otlp-slow",
        &format!(
            "otlp:\n  endpoint: {}\n  protocol: grpc\n  timeout_ms: 400\n  max_queue_size: 32\n  max_batch_size: 8\n  batch_timeout_ms: 20\n",
            rx.url()
        ),
    );
    let agent = Agent::start(&["--config", cfg.to_str().unwrap()]);
    let c = support::containerd().run(RunSpec::sleeper());
    let rss0 = agent.rss_kb().expect("agent rss");
    storm(&c, 1000);
    let ours = || agent.findings_of(&c.id).iter().filter(|f| f["process.executable.path"] == "/tmp/bb").count();
    wait_until("every storm finding on stdout", Duration::from_secs(30), || ours() >= 1000);
    let g = |r: &str| metric(agent.addr, &format!("driftwatch_otlp_records_total{{result=\"{r}\"}}"));
    wait_until("failures counted", Duration::from_secs(20), || g("failed") > 0.0 && g("dropped") > 0.0);
    assert_eq!(g("exported"), 0.0);
    assert!(rx.requests() > 0, "the slow collector was reached");
    let rss1 = agent.rss_kb().expect("agent rss");
    eprintln!("slow collector: failed {}, dropped {}; rss {rss0} kB -> {rss1} kB", g("failed"), g("dropped"));
    assert!(rss1 < rss0 + 32 * 1024, "rss grew from {rss0} kB to {rss1} kB");
    c.exec_ok(&["/bin/sh", "-c", ": still-detecting"]);
    agent.wait_for("a shell after the storm", |f| {
        f["container.id"] == c.id.as_str() && f["process.command_args"].to_string().contains("still-detecting")
    });
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// gRPC over mutual TLS: the collector (behind a TLS front that requires a
/// client certificate from the test CA) has a certificate only for the name
/// `otlp.test`, reached at 127.0.0.1: the configured CA, client certificate and
/// `server_name` make it work; the record is the finding, the headers arrive.
#[test]
fn grpc_over_mutual_tls_with_configured_ca_client_certificate_and_server_name() {
    if !support::privileged() {
        return;
    }
    let _storms = beside_others();
    let pki = Pki::with_server_names("otlp-grpc", &["otlp.test"]);
    let rx = Receiver::grpc();
    let front = TlsFront::start(rx.addr, pki.server_config(true, &[b"h2"]));
    let cfg = config_file(
        "otlp-grpc-tls",
        &format!(
            // A long timeout: this agent also exports the other tests' storms, and a loaded
            // machine must not turn a slow export into a failure here.
            "otlp:\n  endpoint: {}\n  protocol: grpc\n  batch_timeout_ms: 100\n  timeout_ms: 20000\n  headers: {{x-tenant: drift}}\n  tls:\n    ca_file: {}\n    cert_file: {}\n    key_file: {}\n    server_name: otlp.test\n",
            front.url(),
            path(&pki.ca),
            path(&pki.client_cert),
            path(&pki.client_key)
        ),
    );
    let agent = Agent::start(&["--config", cfg.to_str().unwrap()]);
    let c = support::containerd().run(RunSpec::sleeper());
    drop_binary(&c);
    let f = agent.wait_for("dropped binary", |f| f["container.id"] == c.id.as_str() && f["kind"] == "binary");
    let r = rx.wait_for("the binary finding over TLS", Duration::from_secs(15), |r| {
        r.attrs.get("container.id") == Some(&Value::from(c.id.as_str()))
            && r.attrs.get("kind") == Some(&"binary".into())
    });
    assert_record_is_finding(&r, &f, "driftwatch.drift.binary", 18);
    let hs = front.handshakes();
    assert!(
        hs.iter().any(|h| *h == Handshake::Done { client_cert: Some(pki.client_der.clone()) }),
        "the collector saw the agent's client certificate: {hs:?}"
    );
    assert!(!hs.iter().any(|h| matches!(h, Handshake::Failed(_))), "{hs:?}");
    assert!(rx.headers().iter().any(|h| h.get("x-tenant").map(String::as_str) == Some("drift")), "{:?}", rx.headers());
    // Counted once the collector's answer is back (the receiver stores before it answers).
    wait_until("exported counted", Duration::from_secs(10), || {
        agent.metric("driftwatch_otlp_records_total{result=\"exported\"}").unwrap_or(0.0) >= 1.0
    });
    let err = agent.stderr();
    assert_eq!(
        agent.metric("driftwatch_otlp_records_total{result=\"failed\"}"),
        Some(0.0),
        "{}\n{}",
        agent.metrics().lines().filter(|l| l.contains("otlp")).collect::<Vec<_>>().join("\n"),
        err.lines().filter(|l| l.contains("otlp")).collect::<Vec<_>>().join("\n")
    );
    assert!(
        err.contains(&format!("roots {}, client certificate true", path(&pki.ca))),
        "TLS in the startup log:\n{err}"
    );
}

/// HTTP/protobuf over mutual TLS, configured by the standard variables only:
/// `OTEL_EXPORTER_OTLP_CERTIFICATE`, `..._CLIENT_CERTIFICATE`, `..._CLIENT_KEY`.
#[test]
fn http_protobuf_over_mutual_tls_configured_by_otel_env() {
    if !support::privileged() {
        return;
    }
    let _storms = beside_others();
    let pki = Pki::new("otlp-http");
    let rx = Receiver::http();
    let front = TlsFront::start(rx.addr, pki.server_config(true, &[b"http/1.1"]));
    let url = front.url();
    let agent = Agent::start_with_env(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", url.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=drift"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", path(&pki.ca)),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", path(&pki.client_cert)),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", path(&pki.client_key)),
            ("RUST_LOG", "info"),
        ],
    );
    let c = support::containerd().run(RunSpec::sleeper());
    c.exec_ok(&["/usr/bin/memexec", "/bin/busybox", "true"]);
    // The finding's evidence event (default response) may be exported first.
    let r = rx.wait_for("the memfd finding over TLS", Duration::from_secs(20), |r| {
        r.attrs.get("container.id") == Some(&Value::from(c.id.as_str()))
            && r.record.event_name != "driftwatch.evidence.captured"
    });
    assert_eq!(r.record.event_name, "driftwatch.drift.binary");
    assert_eq!(r.attrs["rule"], "exec_fileless_memfd");
    let hs = front.handshakes();
    assert!(hs.contains(&Handshake::Done { client_cert: Some(pki.client_der.clone()) }), "{hs:?}");
    assert!(rx.headers().iter().any(|h| h.get("x-tenant").map(String::as_str) == Some("drift")), "{:?}", rx.headers());
    wait_until("exported counted", Duration::from_secs(10), || {
        metric(agent.addr, "driftwatch_otlp_records_total{result=\"exported\"}") >= 1.0
    });
}

/// A collector whose certificate the configured CA did not sign, and one that
/// requires a client certificate the agent does not have: nothing is
/// exported, every record is counted as failed, the cause is logged once, and
/// detection goes on.
#[test]
fn wrong_ca_and_missing_client_certificate_fail_and_are_counted() {
    if !support::privileged() {
        return;
    }
    let _storms = beside_others();
    let pki = Pki::new("otlp-good");
    let other = Pki::new("otlp-other");
    let rx = Receiver::grpc();
    let front = TlsFront::start(rx.addr, pki.server_config(true, &[b"h2"]));
    for (name, tls) in [
        // The collector's CA is not the one configured.
        (
            "wrong-ca",
            format!(
                "    ca_file: {}\n    cert_file: {}\n    key_file: {}\n",
                path(&other.ca),
                path(&pki.client_cert),
                path(&pki.client_key)
            ),
        ),
        // The right CA, but no client certificate for a server that requires one.
        ("no-client-cert", format!("    ca_file: {}\n", path(&pki.ca))),
    ] {
        let before = front.handshakes().len();
        let cfg = config_file(
            &format!("otlp-{name}"),
            &format!(
                "otlp:\n  endpoint: {}\n  protocol: grpc\n  timeout_ms: 1000\n  batch_timeout_ms: 50\n  tls:\n{tls}",
                front.url()
            ),
        );
        let agent = Agent::start(&["--config", cfg.to_str().unwrap()]);
        let c = support::containerd().run(RunSpec::sleeper());
        c.exec_ok(&["/bin/sh", "-c", &format!(": {name}")]);
        agent.wait_for("shell", |f| f["container.id"] == c.id.as_str() && f["kind"] == "shell");
        let g = |r: &str| agent.metric(&format!("driftwatch_otlp_records_total{{result=\"{r}\"}}")).unwrap();
        wait_until(&format!("{name}: failures counted"), Duration::from_secs(20), || g("failed") >= 1.0);
        assert_eq!(g("exported"), 0.0, "{name}");
        assert!(
            rx.records().iter().all(|r| r.attrs.get("container.id") != Some(&Value::from(c.id.as_str()))),
            "{name}: nothing of ours may arrive"
        );
        let hs = front.handshakes()[before..].to_vec();
        assert!(!hs.is_empty() && hs.iter().all(|h| matches!(h, Handshake::Failed(_))), "{name}: {hs:?}");
        let err = agent.stderr();
        let warn = err.lines().find(|l| l.contains("otlp: export to the collector failed"));
        assert!(warn.is_some(), "{name}: the failure is logged:\n{err}");
        eprintln!("{name}: the collector saw {hs:?}; the agent logged {warn:?}");
        // Detection and stdout go on.
        c.exec_ok(&["/usr/bin/memexec", "/bin/busybox", "true"]);
        agent.wait_for("memfd", |f| f["container.id"] == c.id.as_str() && f["rule"] == "exec_fileless_memfd");
    }
}
