//! End to end (issue 16): environment drift. The kernel hashes every
//! variable of the entrypoint's environment at exec (per mount namespace) and
//! flags a later exec that adds or changes one; the agent names the variables
//! from /proc (values never leave the node). Processes are started from the
//! container's own tree (its entrypoint runs what `run_in_tree` hands it).
mod support;

use serde_json::Value;
use support::{
    agent::Agent,
    cri::{Pod, PodSpec, TRIGGER_LOOP},
};

fn endpoint() -> String {
    format!("unix://{}", support::containerd().address.display())
}

fn agent(dir: &std::path::Path) -> Agent {
    let cfg = dir.join("c.yaml");
    std::fs::write(&cfg, "kubernetes:\n  enabled: false\nrules:\n  config:\n    ignore_env: [MY_IGNORED]\n").unwrap();
    Agent::start(&["--runtime-endpoint", &endpoint(), "--config", cfg.to_str().unwrap()])
}

fn env_findings(agent: &Agent, id: &str) -> Vec<Value> {
    agent.findings_of(id).into_iter().filter(|f| f["rule"] == "environment_changed").collect()
}

/// The environment finding of the process started as `args`.
fn wait_env(agent: &Agent, id: &str, args: &str) -> Value {
    agent.wait_for(&format!("environment_changed of {args}"), |f| {
        f["container.id"] == id && f["rule"] == "environment_changed" && f["process.command_args"] == argv(args)
    })
}

fn argv(args: &str) -> Value {
    serde_json::json!(args.split(' ').collect::<Vec<_>>())
}

fn names(f: &Value, key: &str) -> Vec<String> {
    f[key].as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

#[test]
fn added_changed_high_risk_are_findings_removed_volatile_ignored_are_not() {
    if !support::privileged() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("driftwatch-e2e-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let agent = agent(&dir);
    let spec = PodSpec::new("orders-5f4e3d2c1b-3nv01", "orders").namespace("shop");
    let mut pod = Pod::run(&support::containerd().address, spec);
    let api = pod.start_container("api", TRIGGER_LOOP);

    // Not drift first: a removed variable, volatile names, a configured name.
    assert_eq!(api.run_in_tree("env -u DRIFTWATCH_TEST sleep 301 &"), 0);
    assert_eq!(api.run_in_tree("cd /tmp && TERM=dumb COLUMNS=10 OLDPWD=/ sleep 302 &"), 0);
    assert_eq!(api.run_in_tree("MY_IGNORED=1 sleep 303 &"), 0);
    // Drift.
    assert_eq!(api.run_in_tree("HTTPS_PROXY=http://10.0.0.1:3128 sleep 304 &"), 0);
    assert_eq!(api.run_in_tree("DRIFTWATCH_TEST=2 sleep 305 &"), 0);
    assert_eq!(api.run_in_tree("NODE_OPTIONS=--require=/tmp/x.js sleep 306 &"), 0);

    let added = wait_env(&agent, &api.id, "sleep 304");
    assert_eq!(added["kind"], "config");
    assert_eq!(added["severity"], "warning");
    assert_eq!(added["playbook_step"], "investigate");
    assert_eq!(names(&added, "driftwatch.env.added"), ["HTTPS_PROXY"]);
    assert!(added.get("driftwatch.env.changed").is_none(), "{added:#}");
    assert!(!added.to_string().contains("10.0.0.1:3128"), "a value left the node: {added:#}");
    assert!(added["process.pid"].as_u64().is_some());

    let changed = wait_env(&agent, &api.id, "sleep 305");
    assert_eq!(names(&changed, "driftwatch.env.changed"), ["DRIFTWATCH_TEST"]);
    assert!(changed.get("driftwatch.env.added").is_none(), "{changed:#}");

    let risky = wait_env(&agent, &api.id, "sleep 306");
    assert_eq!(risky["severity"], "critical", "{risky:#}");
    assert_eq!(names(&risky, "driftwatch.env.added"), ["NODE_OPTIONS"]);

    // The later execs are judged, so the earlier ones were too: none of them is drift.
    let all = env_findings(&agent, &api.id);
    for quiet in ["sleep 301", "sleep 302", "sleep 303"] {
        assert!(all.iter().all(|f| f["process.command_args"] != argv(quiet)), "{quiet} reported: {all:#?}");
    }
    drop(pod);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_entrypoint_re_executing_itself_moves_the_baseline() {
    if !support::privileged() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("driftwatch-e2e-env-reexec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let agent = agent(&dir);
    let spec = PodSpec::new("orders-5f4e3d2c1b-r3x3c", "orders").namespace("shop");
    let mut pod = Pod::run(&support::containerd().address, spec);
    // `export MOVED=1; exec sh -c <loop>`: the main process re-executes itself.
    let cmd = ["/bin/sh", "-c", "export MOVED=1; exec \"$0\" -c \"$1\"", "/bin/sh", TRIGGER_LOOP[2]];
    let api = pod.start_container("api", &cmd);
    assert_eq!(api.run_in_tree("sleep 311 &"), 0);
    assert_eq!(api.run_in_tree("MOVED=2 sleep 312 &"), 0);
    let f = wait_env(&agent, &api.id, "sleep 312");
    assert_eq!(names(&f, "driftwatch.env.changed"), ["MOVED"], "{f:#}");
    // Findings of one container leave in exec order: 311 was judged before 312.
    let all = env_findings(&agent, &api.id);
    assert!(all.iter().all(|f| f["process.command_args"] != argv("sleep 311")), "old baseline used: {all:#?}");
    assert_eq!(all.len(), 1, "{all:#?}");
    drop(pod);
    let _ = std::fs::remove_dir_all(&dir);
}
