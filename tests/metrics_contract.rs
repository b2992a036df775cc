//! The metric names and the series the agent pre-creates at startup are an
//! outside contract (dashboards, alert rules, users' queries): pinned in
//! `tests/golden/metric-series.txt`. Adding series is fine (regenerate with
//! `DW_UPDATE_GOLDEN=1` and review); removing or renaming one breaks users.

use driftwatch::{
    abi,
    classify::Classifier,
    config::Config,
    metrics::{ContainerFindingLabels, ContainerIdentity, KernelStatsSource, Metrics},
    server::Listener,
};

#[derive(Debug)]
struct Zero;
impl KernelStatsSource for Zero {
    fn read(&self) -> Option<abi::dw_kstats> {
        Some(abi::dw_kstats::default())
    }
}

/// Every series of an agent that started with every sink and listener on, saw one finding
/// and one container posture, before any event.
fn startup_series() -> Vec<String> {
    let m = Metrics::new();
    let cfg = Config::default();
    m.kernel.set_source(Box::new(Zero));
    m.kube.declare(true);
    m.sinks.declare_otlp();
    m.sinks.declare_alertmanager(&["alertmanager:9093"]);
    m.pipeline.declare_queue("events");
    // Both HTTP listeners serve (the health listener with health_addr set).
    for l in [Listener::Metrics, Listener::Health] {
        m.http.declare(l.name());
    }
    driftwatch::agent::declare_series(&m, &Classifier::new(&cfg), &cfg);
    m.sinks.declare_sink("stdout");
    m.admin.declare();
    let labels = ContainerFindingLabels {
        namespace: "n",
        workload: "w",
        container: "c",
        kind: "binary",
        rule: "r",
        severity: "critical",
    };
    m.containers.finding("c", labels);
    m.containers.posture("c", &ContainerIdentity::default(), true);
    let text = m.encode();
    let mut out: Vec<String> = text
        .lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(t) => Some(format!("# {t}")),
            None if l.starts_with('#') => None,
            None => l.rsplit_once(' ').map(|(s, _)| machine_neutral(s)),
        })
        .collect();
    out.sort();
    out
}

/// build_info's labels that depend on the build and the machine (git_revision,
/// kernel_release) keep their names in the contract, not their values.
fn machine_neutral(series: &str) -> String {
    if !series.starts_with("driftwatch_build_info{") {
        return series.to_string();
    }
    let mut out = series.to_string();
    for label in ["git_revision", "kernel_release"] {
        let key = format!("{label}=\"");
        if let Some(start) = out.find(&key).map(|i| i + key.len())
            && let Some(len) = out[start..].find('"')
        {
            out.replace_range(start..start + len, "*");
        }
    }
    out
}

#[test]
fn startup_series_match_the_golden_list() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/metric-series.txt");
    let got = startup_series().join("\n") + "\n";
    if std::env::var("DW_UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &got).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&path).expect("tests/golden/metric-series.txt");
    let missing: Vec<&str> = want.lines().filter(|l| !got.lines().any(|g| g == *l)).collect();
    let added: Vec<&str> = got.lines().filter(|l| !want.lines().any(|w| w == *l)).collect();
    assert!(missing.is_empty(), "series gone from the contract: {missing:#?}");
    assert!(added.is_empty(), "new series (review, then DW_UPDATE_GOLDEN=1): {added:#?}");
}
