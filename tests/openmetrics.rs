//! The live `/metrics` of a running agent parses with a strict OpenMetrics
//! parser (Python prometheus_client's, from Debian's python3-prometheus-client),
//! including the detection-latency histogram and the OTLP / Alertmanager series.
//!
//! Run with: DRIFTWATCH_PRIVILEGED_TESTS=1 cargo test --test openmetrics
mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use support::{RunSpec, agent::Agent, otlp::config_file};

const PARSER: &str = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
text = sys.stdin.read()
fams = {f.name: f for f in text_string_to_metric_families(text)}
for name, f in sorted(fams.items()):
    n = sum(1 for _ in f.samples)
    print(f"{name} {f.type} {n}")
h = fams["driftwatch_detection_latency_seconds"]
assert h.type == "histogram", h.type
count = [s.value for s in h.samples if s.name.endswith("_count")][0]
inf = [s.value for s in h.samples if s.name.endswith("_bucket") and s.labels["le"] == "+Inf"][0]
assert count >= 1 and inf == count, (count, inf)
print("latency_count", count)
"#;

fn python() -> &'static str {
    // Debian's interpreter, where python3-prometheus-client is installed.
    if std::path::Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" }
}

#[test]
fn live_metrics_parse_as_strict_openmetrics() {
    if !support::privileged() {
        return;
    }
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let cfg = config_file(
        "openmetrics",
        &format!(
            "otlp:\n  endpoint: http://{dead}\n  timeout_ms: 200\nalertmanager:\n  url: http://{dead}\n  timeout_ms: 200\n"
        ),
    );
    let agent = Agent::start(&["--config", cfg.to_str().unwrap()]);
    let c = support::containerd().run(RunSpec::sleeper());
    c.exec_ok(&["/bin/sh", "-c", ": openmetrics"]);
    agent.wait_for("shell", |f| f["container.id"] == c.id.as_str());
    let (status, ctype, body) = support::agent::http_get(agent.addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(ctype.starts_with("application/openmetrics-text; version=1.0.0"), "{ctype}");
    let mut child = Command::new(python())
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (install python3-prometheus-client: scripts/install-deps.sh)");
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "strict OpenMetrics parse failed:\n{}\n--- exposition ---\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    for fam in [
        "driftwatch_detection_latency_seconds histogram",
        "driftwatch_findings counter",
        "driftwatch_otlp_records counter 3",
        "driftwatch_otlp_queued_records gauge",
        "driftwatch_findings_waiting gauge",
        "driftwatch_alertmanager_alerts counter 3",
        "driftwatch_alertmanager_requests counter 2",
        // Per URL (`target`): one URL here.
        "driftwatch_alertmanager_target_alerts counter 3",
        "driftwatch_alertmanager_target_requests counter 2",
        "driftwatch_alertmanager_target_queued_alerts gauge 1",
        "driftwatch_userspace_drops counter",
    ] {
        assert!(stdout.contains(fam), "missing family {fam:?} in\n{stdout}");
    }
}
