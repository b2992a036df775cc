//! End to end: secrets on a container's command lines never leave the agent.
//! Real drift in a real container (private containerd, tests/support) with a
//! password, a token and URL credentials in its arguments; the real agent
//! with stdout, a real OTLP receiver and a real Alertmanager: every output
//! carries the markers, none the secrets, the counter went up, and the agent's
//! own log (at debug) does not print them either.
//!
//! Run with: DRIFTWATCH_PRIVILEGED_TESTS=1 cargo test --test e2e_redact
mod support;

use serde_json::Value;
use std::time::Duration;
use support::{RunSpec, agent::Agent, alertmanager::Alertmanager, otlp::Receiver, otlp::config_file};

/// What the container passes on its command lines.
const ARGS: [&str; 7] =
    ["--password=hunter2", "token=abc", "https://u:p@h/", "--password", "hunter 2", "-psecretpw", "acme_0123abcd"];
/// What must appear nowhere: the secrets (with their keys where the value alone
/// is too short to search for).
const SECRETS: [&str; 7] = ["hunter2", "hunter 2", "token=abc", "u:p@", "secretpw", "acme_0123abcd", "s3cr3t"];

fn assert_clean(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} carries the secret {s:?}:\n{text}");
    }
}

#[test]
fn secrets_on_command_lines_are_redacted_on_every_output() {
    if !support::privileged() {
        return;
    }
    let rx = Receiver::grpc();
    let am = Alertmanager::start();
    let cfg = config_file(
        "redact",
        &format!(
            "otlp:\n  endpoint: {}\n  protocol: grpc\n  batch_timeout_ms: 100\n\
             alertmanager:\n  url: {}\n  group_window_ms: 300\n\
             redaction:\n  flags: [-p]\n  patterns:\n    - name: acme_key\n      regex: 'acme_[a-f0-9]{{8}}'\n",
            rx.url(),
            am.url()
        ),
    );
    let agent = Agent::start_with_env(&["--config", cfg.to_str().unwrap()], &[("RUST_LOG", "debug")]);
    let metric = |pattern: &str| agent.metric(&format!("driftwatch_redactions_total{{pattern=\"{pattern}\"}}"));
    for p in ["password_flag", "secret_assignment", "url_credentials", "authorization_header", "token_formats"] {
        assert_eq!(metric(p), Some(0.0), "{p} pre-created at 0:\n{}", agent.metrics());
    }
    assert_eq!((metric("flags"), metric("acme_key")), (Some(0.0), Some(0.0)));

    let c = support::containerd().run(RunSpec::sleeper());
    // A dropped binary (binary drift), a shell and a package manager (whose
    // message quotes its command line), each with secrets in its arguments.
    c.exec_ok(&["/bin/cp", "/bin/busybox", "/tmp/busybox"]);
    let mut dropped = vec!["/tmp/busybox", "echo"];
    dropped.extend(ARGS);
    c.exec_ok(&dropped);
    c.exec_ok(&["/bin/sh", "-c", "echo --password=hunter2 token=abc https://u:p@h/ >/dev/null"]);
    let index = "https://ci:s3cr3t@pypi.example.com/simple";
    c.exec_ok(&["/bin/sh", "/usr/bin/pip", "install", "--index-url", index, "pkg"]);
    support::settle(&agent, &c);

    // stdout: the raw lines, byte for byte.
    let lines: Vec<String> = agent.raw_lines().into_iter().filter(|l| l.contains(&c.id)).collect();
    for l in &lines {
        assert_clean("a stdout line", l);
    }
    let ours = agent.findings_of(&c.id);
    let find = |rule: &str| {
        ours.iter().find(|f| f["rule"] == rule).unwrap_or_else(|| panic!("no {rule} finding in {ours:#?}")).clone()
    };
    let bin = find("exec_new_binary");
    assert_eq!(bin["driftwatch.redacted"], true, "{bin:#}");
    assert_eq!(
        bin["process.command_args"],
        serde_json::json!([
            "/tmp/busybox",
            "echo",
            "--password=[REDACTED]",
            "token=[REDACTED]",
            "https://u:[REDACTED]@h/",
            "--password",
            "[REDACTED]",
            "-p[REDACTED]",
            "[REDACTED]"
        ])
    );
    let shell = find("shell_in_container");
    assert_eq!(shell["driftwatch.redacted"], true);
    assert_eq!(
        shell["process.command_args"][2],
        "echo --password=[REDACTED] token=[REDACTED] https://u:[REDACTED]@h/ >/dev/null"
    );
    let pip = find("package_manager_exec");
    assert_eq!(pip["driftwatch.redacted"], true);
    assert_eq!(pip["process.command_args"][4], "https://ci:[REDACTED]@pypi.example.com/simple");
    assert!(pip["message"].as_str().unwrap().ends_with("https://ci:[REDACTED]@pypi.example.com/simple pkg"), "{pip:#}");
    // Findings without secrets are not marked (the key is skipped when false).
    let sentinel = ours.iter().find(|f| f["process.command_args"].to_string().contains("sentinel-")).unwrap();
    assert!(sentinel.get("driftwatch.redacted").is_none(), "{sentinel:#}");

    // The counter: once per finding and pattern.
    let at_least = |p: &str, n: f64| {
        let v = metric(p).unwrap_or(0.0);
        assert!(v >= n, "driftwatch_redactions_total{{pattern=\"{p}\"}} = {v}, want >= {n}:\n{}", agent.metrics());
    };
    at_least("password_flag", 2.0);
    at_least("secret_assignment", 2.0);
    at_least("url_credentials", 3.0);
    at_least("flags", 1.0);
    at_least("acme_key", 1.0);

    // OTLP: the records are the redacted findings.
    let of_c = |r: &support::otlp::Rec| r.attrs.get("container.id") == Some(&Value::from(c.id.as_str()));
    for rule in ["exec_new_binary", "shell_in_container", "package_manager_exec"] {
        let r = rx.wait_for(rule, Duration::from_secs(15), |r| of_c(r) && r.attrs.get("rule") == Some(&rule.into()));
        assert_eq!(r.attrs["driftwatch.redacted"], true, "{r:#?}");
        assert_clean("an OTLP record", &format!("{} {}", Value::Object(r.attrs.clone()), r.body()));
    }
    assert_eq!(
        rx.wait_for("binary", Duration::from_secs(1), |r| of_c(r)
            && r.attrs.get("rule") == Some(&"exec_new_binary".into()))
            .attrs["process.command_args"],
        bin["process.command_args"]
    );

    // Alertmanager: labels, summary, description and the evidence.
    let a = am.wait_for("the binary alert", Duration::from_secs(15), |a| {
        a["labels"]["container_id"] == c.id.as_str() && a["labels"]["alertname"] == "ContainerDriftBinary"
    });
    assert!(a["annotations"]["description"].as_str().unwrap().contains("--password=[REDACTED]"), "{a:#}");
    for a in am.alerts().iter().filter(|a| a["labels"]["container_id"] == c.id.as_str()) {
        assert_clean("an alert", &a.to_string());
    }

    // The agent's own log, at debug.
    assert_clean("the agent's log", &agent.stderr());
    assert!(agent.stderr().contains("findings are redacted before any output"), "{}", agent.stderr());
}
