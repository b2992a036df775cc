//! The command line and its failure modes: every bad input or missing
//! prerequisite ends in one clear `driftwatch: error:` line and a non-zero exit.
mod support;

use std::process::{Command, Output};

fn driftwatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_driftwatch")).args(args).output().expect("run driftwatch")
}

/// The single error line; fails unless there is exactly one.
fn error_line(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("driftwatch: error:")).collect();
    assert_eq!(lines.len(), 1, "exactly one error line expected, stderr:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(o.status.code(), Some(1), "exit status, stderr:\n{err}");
    lines[0].to_string()
}

fn tmp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dw-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn help_explains_every_flag() {
    let o = driftwatch(&["run", "--help"]);
    assert!(o.status.success());
    let h = String::from_utf8_lossy(&o.stdout);
    for flag in ["--config", "--metrics-addr", "--health-addr", "--btf"] {
        assert!(h.contains(flag), "{flag} missing from:\n{h}");
    }
    assert!(h.contains("8789"), "default port documented:\n{h}");
    let o = driftwatch(&["--help"]);
    let h = String::from_utf8_lossy(&o.stdout);
    for cmd in ["run", "check-config", "default-config"] {
        assert!(h.contains(cmd), "{cmd} missing from:\n{h}");
    }
}

#[test]
fn default_config_round_trips_through_check_config() {
    let o = driftwatch(&["default-config"]);
    assert!(o.status.success());
    let p = tmp_file("default.yaml", &String::from_utf8_lossy(&o.stdout));
    let o = driftwatch(&["check-config", p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn bad_config_names_file_line_and_field() {
    let p = tmp_file("bad.yaml", "sensor:\n  ringbuf_bytes: 8192\n  drain_intervall_ms: 5\n");
    for args in [vec!["check-config", p.to_str().unwrap()], vec!["run", "--config", p.to_str().unwrap()]] {
        let line = error_line(&driftwatch(&args));
        assert!(line.contains("bad.yaml") && line.contains("line 3") && line.contains("drain_intervall_ms"), "{line}");
    }
    let line = error_line(&driftwatch(&["run", "--config", "/nonexistent/dw.yaml"]));
    assert!(line.contains("cannot read config file /nonexistent/dw.yaml"), "{line}");
}

#[test]
fn busy_metrics_port_is_one_clear_line() {
    // The privilege check comes first: only a privileged run reaches the port.
    if !support::privileged() {
        return;
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let line = error_line(&driftwatch(&["run", "--metrics-addr", &addr]));
    assert!(line.contains(&format!("cannot listen on {addr}")) && line.contains("--metrics-addr"), "{line}");
}

#[test]
fn busy_health_port_is_one_clear_line() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let line = error_line(&driftwatch(&["run", "--metrics-addr", "127.0.0.1:0", "--health-addr", &addr]));
    assert!(
        line.contains(&format!("cannot listen on {addr} for /healthz and /readyz")) && line.contains("--health-addr"),
        "{line}"
    );
}

#[test]
fn unprivileged_run_says_what_is_missing() {
    // As root, drop to nobody with no capabilities; otherwise we already are unprivileged.
    let o = if unsafe { libc::geteuid() } == 0 {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--"])
            .arg(env!("CARGO_BIN_EXE_driftwatch"))
            .args(["run", "--metrics-addr", "127.0.0.1:0"])
            .output()
            .expect("setpriv (util-linux)")
    } else {
        driftwatch(&["run", "--metrics-addr", "127.0.0.1:0"])
    };
    let line = error_line(&o);
    assert!(line.contains("not privileged") && line.contains("CAP_BPF"), "{line}");
    // It fails before serving anything or saying it does.
    assert!(!String::from_utf8_lossy(&o.stderr).contains("serving /metrics"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn unwritable_baseline_directory_is_one_clear_line() {
    if !support::privileged() {
        return;
    }
    let cfg = tmp_file("state.yaml", "rules:\n  network:\n    state_dir: /proc/driftwatch-cannot-be-here\n");
    let o = driftwatch(&["run", "--metrics-addr", "127.0.0.1:0", "--config", cfg.to_str().unwrap()]);
    let line = error_line(&o);
    assert!(
        line.contains("rules.network.state_dir /proc/driftwatch-cannot-be-here") && line.contains("lost"),
        "{line}"
    );
    assert!(!String::from_utf8_lossy(&o.stderr).contains("serving /metrics"));
}

#[test]
fn missing_btf_says_what_is_missing() {
    if !support::privileged() {
        return;
    }
    let line = error_line(&driftwatch(&["run", "--metrics-addr", "127.0.0.1:0", "--btf", "/nonexistent/vmlinux"]));
    assert!(line.contains("kernel BTF missing (/nonexistent/vmlinux)"), "{line}");
}

#[test]
fn unreadable_tls_and_token_files_are_config_errors_unless_checked_off_the_node() {
    let p = tmp_file(
        "am-tls.yaml",
        "alertmanager:\n  urls: [https://am-0:9093, https://am-1:9093]\n  bearer_token_file: /nonexistent/token\n",
    );
    for args in [vec!["check-config", p.to_str().unwrap()], vec!["run", "--config", p.to_str().unwrap()]] {
        let line = error_line(&driftwatch(&args));
        assert!(
            line.contains("am-tls.yaml line 3: field `alertmanager.bearer_token_file`: cannot read the token file"),
            "{line}"
        );
    }
    // Away from the node (a rendered Helm chart): the files are not there, the rest is checked.
    let o = driftwatch(&["check-config", "--no-file-checks", p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let p = tmp_file("otlp-tls.yaml", "otlp:\n  endpoint: https://c:4317\n  tls:\n    cert_file: /etc/dw/tls.crt\n");
    let line = error_line(&driftwatch(&["check-config", "--no-file-checks", p.to_str().unwrap()]));
    assert!(line.contains("line 4: field `otlp.tls.cert_file`: a client certificate needs its private key"), "{line}");
}
