//! Per-container metric series: which workloads drift, and how many of their
//! containers are drifted right now. Labels are bounded (namespace, workload,
//! container name; never pod names, ids or paths) and a container's series go
//! away shortly after the container does, so a churning cluster does not grow
//! the exposition forever.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
    time::{Duration, Instant},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ContainerFindingLabels {
    pub namespace: String,
    pub workload: String,
    pub container: String,
    pub kind: &'static str,
    pub rule: &'static str,
    pub severity: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriftedLabels {
    pub namespace: String,
    pub workload: String,
    pub container: String,
    pub kind: &'static str,
}

/// What the tracker knows of one live container.
struct Tracked {
    findings: HashSet<ContainerFindingLabels>,
    drifted: HashSet<DriftedLabels>,
    gone_since: Option<Instant>,
}

pub struct ContainerSeries {
    findings: Family<ContainerFindingLabels, Counter>,
    drifted: Family<DriftedLabels, Gauge>,
    state: Mutex<HashMap<String, Tracked>>,
    /// How long series outlive their container (one or two scrapes' worth, so
    /// the last increment is seen).
    pub linger: Duration,
}

impl ContainerSeries {
    pub fn register(registry: &mut Registry) -> Self {
        let findings = Family::default();
        registry.register(
            "container_findings",
            "Findings by namespace, workload and container name (series removed after the container is gone)",
            findings.clone(),
        );
        let drifted = Family::default();
        registry.register(
            "drifted_containers",
            "Live containers with at least one finding of the kind, by namespace, workload and container name",
            drifted.clone(),
        );
        Self { findings, drifted, state: Mutex::new(HashMap::new()), linger: Duration::from_secs(120) }
    }

    /// Counts a finding of `container_id`; the first of each kind marks the
    /// container drifted.
    pub fn finding(&self, container_id: &str, labels: ContainerFindingLabels) {
        self.findings.get_or_create(&labels).inc();
        let Ok(mut st) = self.state.lock() else { return };
        let t = st.entry(container_id.to_string()).or_insert_with(|| Tracked {
            findings: HashSet::new(),
            drifted: HashSet::new(),
            gone_since: None,
        });
        t.gone_since = None;
        let d = DriftedLabels {
            namespace: labels.namespace.clone(),
            workload: labels.workload.clone(),
            container: labels.container.clone(),
            kind: labels.kind,
        };
        if t.drifted.insert(d.clone()) {
            self.drifted.get_or_create(&d).inc();
        }
        t.findings.insert(labels);
    }

    /// Containers being tracked (for the liveness sweep).
    pub fn tracked(&self) -> Vec<String> {
        self.state.lock().map(|s| s.keys().cloned().collect()).unwrap_or_default()
    }

    /// Given the ids of containers still alive, retires the others: their
    /// drifted gauge drops at once; their series are removed after `linger`
    /// unless another live container shares them.
    pub fn sweep(&self, alive: &HashSet<String>, now: Instant) {
        let Ok(mut st) = self.state.lock() else { return };
        for (id, t) in st.iter_mut() {
            if alive.contains(id) {
                t.gone_since = None;
            } else if t.gone_since.is_none() {
                t.gone_since = Some(now);
                for d in &t.drifted {
                    self.drifted.get_or_create(d).dec();
                }
            }
        }
        let expired: Vec<String> = st
            .iter()
            .filter(|(_, t)| t.gone_since.is_some_and(|g| now.duration_since(g) >= self.linger))
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            let Some(t) = st.remove(&id) else { continue };
            for l in &t.findings {
                if !st.values().any(|o| o.findings.contains(l)) {
                    self.findings.remove(l);
                }
            }
            for d in &t.drifted {
                if !st.values().any(|o| o.drifted.contains(d)) {
                    self.drifted.remove(d);
                }
            }
        }
    }
}

/// Ids of containers that still have a process, from /proc/<pid>/cgroup.
pub fn live_container_ids() -> HashSet<String> {
    let mut ids = HashSet::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return ids };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().filter(|s| s.bytes().all(|b| b.is_ascii_digit())) else { continue };
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            && let Some(c) = crate::enrich::cgroup::container_from_proc_cgroup(&text)
        {
            ids.insert(c.id);
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(ns: &str, kind: &'static str) -> ContainerFindingLabels {
        ContainerFindingLabels {
            namespace: ns.into(),
            workload: "checkout".into(),
            container: "api".into(),
            kind,
            rule: "r",
            severity: "critical",
        }
    }

    fn text(r: &Registry) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, r).unwrap();
        s
    }

    #[test]
    fn drifted_gauge_counts_live_containers_and_series_go_away() {
        let mut r = Registry::with_prefix("driftwatch");
        let mut c = ContainerSeries::register(&mut r);
        c.linger = Duration::from_secs(60);
        c.finding("a", labels("shop", "binary"));
        c.finding("a", labels("shop", "binary"));
        c.finding("b", labels("shop", "binary"));
        let t = text(&r);
        assert!(t.contains("driftwatch_drifted_containers{namespace=\"shop\",workload=\"checkout\",container=\"api\",kind=\"binary\"} 2"), "{t}");
        assert!(t.contains("driftwatch_container_findings_total{namespace=\"shop\",workload=\"checkout\",container=\"api\",kind=\"binary\",rule=\"r\",severity=\"critical\"} 3"), "{t}");

        let t0 = Instant::now();
        c.sweep(&HashSet::from(["b".to_string()]), t0);
        assert!(text(&r).contains("kind=\"binary\"} 1"), "a is gone: gauge drops at once");
        // Within the linger period the series stay; after it, "b" still holds them.
        c.sweep(&HashSet::from(["b".to_string()]), t0 + Duration::from_secs(61));
        assert!(text(&r).contains("driftwatch_container_findings_total{namespace=\"shop\""));
        // Both gone and lingered: no series left.
        c.sweep(&HashSet::new(), t0 + Duration::from_secs(62));
        c.sweep(&HashSet::new(), t0 + Duration::from_secs(200));
        let t = text(&r);
        assert!(!t.contains("namespace=\"shop\""), "{t}");
        assert!(c.tracked().is_empty());
    }
}
