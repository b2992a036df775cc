//! The benchmark's summary (bench/summarize.py) on made-up runs: the figures
//! the README quotes from it, computed as documented. No agent, no kernel:
//! only the arithmetic between the runs bench/overhead.sh records and the
//! table it prints, which a slip would silently skew.

use std::{path::Path, process::Command};

/// One run as bench/overhead.sh records it: `cpu` is the agent's (or, in
/// mode floor, bench/wakefloor's) CPU in seconds.
fn run_json(workload: &str, mode: &str, round: u32, cpu: f64, extra: &str) -> String {
    format!(
        r#"{{"workload":"{workload}","mode":"{mode}","round":{round},"n":5000,"seconds":3.0,"workload_cpu_s":2.9,"agent_cpu_s":{cpu},"agent_vmhwm_kb":22000{extra}}}"#
    )
}

/// A run without the agent.
fn baseline_json(workload: &str, round: u32) -> String {
    format!(
        r#"{{"workload":"{workload}","mode":"baseline","round":{round},"n":5000,"seconds":2.5,"workload_cpu_s":2.4}}"#
    )
}

/// The floor: a bare timer wakeup's CPU (mode floor, less its writes) times the
/// agent's reader wakeups, plus a byte written to the floor's pipe times the
/// bytes the agent wrote, per 1M findings; and the same at the longest look
/// cadence the latency goal allows.
#[test]
fn the_floor_is_cpu_per_floor_wakeup_and_byte_times_the_agents_wakeups_and_bytes() {
    let dir = std::env::temp_dir().join(format!("dw-bench-summary-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut runs = Vec::new();
    for round in 0..2 {
        runs.push(baseline_json("container_exec_sh", round));
        // 4,000 findings a run (per-1M figures need 1,000), 400 wakeups: 10 a
        // wakeup; 440 write syscalls: 1.1 a wakeup; the stdout copier 0.012 s;
        // 8,000,000 bytes on stdout: 2,000 a finding.
        runs.push(run_json(
            "container_exec_sh",
            "agent",
            round,
            0.05,
            r#","findings":4000,"findings_lines":4000,"reader_wakeups":400,"agent_write_syscalls":440,"stdout_reader_cpu_s":0.012,"findings_bytes":8000000"#,
        ));
        // 0.009 s over 300 wakeups, 0.003 s of it writing 6,000,000 bytes: 20 us
        // a wakeup and 0.5 ns a byte.
        runs.push(run_json(
            "container_exec_sh",
            "floor",
            round,
            0.009,
            r#","floor_wakeups":300,"floor_write_cpu_s":0.003,"floor_bytes":6000000"#,
        ));
        // Judged without a finding: 5,000 events over 250 wakeups (20 a wakeup), 0.02 s.
        runs.push(baseline_json("container_exec_true", round));
        // The same workload with default flags: the kernel filters every exec,
        // no event: 0.003 s over the run's 3 s = the agent's idle 1 ms a second.
        runs.push(run_json(
            "container_exec_true",
            "agent",
            round,
            0.003,
            r#","kernel_events":0,"events_decoded":0,"findings":0,"reader_wakeups":60"#,
        ));
        runs.push(run_json(
            "container_exec_true",
            "emit_all",
            round,
            0.02,
            r#","kernel_events":5000,"events_decoded":5000,"findings":0,"reader_wakeups":250"#,
        ));
    }
    let runs_path = dir.join("runs.jsonl");
    std::fs::write(&runs_path, runs.join("\n") + "\n").unwrap();
    let out_path = dir.join("summary.json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/summarize.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(["--runs", runs_path.to_str().unwrap(), "--out", out_path.to_str().unwrap(), "--wake-ms", "10"])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "summarize.py failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));

    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
    let rows = summary["summary"].as_array().unwrap();
    let row = |mode: &str| rows.iter().find(|s| s["mode"] == mode).unwrap_or_else(|| panic!("no {mode} row"));
    let close = |v: &serde_json::Value, want: f64| (v.as_f64().unwrap() - want).abs() < 1e-9 * want.max(1.0);
    assert!(close(&row("floor")["floor_us_per_wakeup"], 20.0), "{}", row("floor"));
    assert!(close(&row("floor")["floor_write_ns_per_byte"], 0.5), "{}", row("floor"));
    let agent = rows.iter().find(|s| s["mode"] == "agent" && s["workload"] == "container_exec_sh").unwrap();
    // The floor of events judged without a finding: 20 us x 250 wakeups / 5,000
    // events = 1 s per 1M events, against the agent's 0.02 s / 5,000 = 4 s.
    let quiet = row("emit_all");
    assert!(close(&quiet["wake_floor_s_per_1m_kernel_events"], 1.0), "{quiet}");
    assert!(close(&quiet["agent_cpu_s_per_1m_kernel_events"], 4.0), "{quiet}");
    // Above the agent's idle CPU (1 ms a second, from the runs without an
    // event, charged for each run's 3 s): (0.02 - 0.003) / 5,000 = 3.4 s per
    // 1M events; the shell storm's (0.05 - 0.003) / 4,000 = 11.75 s per 1M findings.
    assert!(close(&quiet["agent_idle_cpu_ms_per_s"], 1.0), "{quiet}");
    assert!(close(&quiet["agent_cpu_s_per_1m_kernel_events_above_idle"], 3.4), "{quiet}");
    assert!(close(&agent["agent_cpu_s_per_1m_findings_above_idle"], 11.75), "{agent}");
    assert!(close(&agent["findings_per_wakeup"], 10.0), "{agent}");
    assert!(close(&agent["writes_per_wakeup"], 1.1), "{agent}");
    // 20 us x 400 wakeups / 4,000 findings = 2 us a finding = 2 s per 1M.
    assert!(close(&agent["wake_floor_s_per_1m_findings"], 2.0), "{agent}");
    // 0.5 ns x 2,000 bytes = 1 us a finding = 1 s per 1M: writing the same lines.
    assert!(close(&agent["output_floor_s_per_1m_findings"], 1.0), "{agent}");
    assert!(close(&agent["floor_s_per_1m_findings"], 3.0), "{agent}");
    // A look every 20 ms instead of 10: half the wakeups, the same bytes.
    assert!(close(&agent["floor_s_per_1m_findings_at_latency_goal"], 2.0), "{agent}");
    // 0.05 s / 4,000 findings = 12.5 s per 1M: the agent's own total beside it.
    assert!(close(&agent["agent_cpu_s_per_1m_findings"], 12.5), "{agent}");
    // 0.012 s / 4,000 findings = 3 s per 1M for the process that copies the agent's stdout.
    assert!(close(&agent["stdout_reader_cpu_s_per_1m_findings"], 3.0), "{agent}");
    assert!(
        stdout.contains("20.0 us a wakeup")
            && stdout.contains("1.10 write syscalls a wakeup")
            && stdout.contains("wake floor  2.00 s per 1M findings")
            && stdout.contains("0.50 ns a byte written, 2000 bytes a finding: output 1.00 s; floor 3.00 s per 1M findings (2.00 s at one look every 20 ms)")
            && stdout.contains("copier  3.00 s per 1M findings (agent 12.50)")
            && stdout.contains("20.0 events a wakeup: wake floor  1.00 s per 1M events of the agent's 4.00")
            && stdout.contains("above its idle CPU (1.00 ms a second with no event, same rounds): 3.40 s per 1M events")
            && stdout.contains("the agent above its idle CPU (1.00 ms a second with no event): 11.75 s per 1M findings"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
