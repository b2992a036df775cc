//! The workload that owns a pod, derived from the labels Kubernetes
//! controllers put on the pods they create. This is what a node can know
//! without API access; when the Kubernetes API knows the pod, its owner
//! references win (`pipeline::emit`).

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Deployment, StatefulSet, DaemonSet, Job, CronJob or Pod.
    pub kind: &'static str,
    pub name: String,
}

/// `<prefix>-<suffix>` -> prefix, when the suffix looks like `ok`.
fn strip_suffix(name: &str, ok: impl Fn(&str) -> bool) -> Option<&str> {
    let (prefix, suffix) = name.rsplit_once('-')?;
    (!prefix.is_empty() && ok(suffix)).then_some(prefix)
}

fn is_pod_suffix(s: &str) -> bool {
    // Random suffixes of generated pod names: 5 lowercase alphanumerics.
    s.len() == 5 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Derives the owning workload from a pod's name and labels.
pub fn from_pod(pod_name: &str, labels: &BTreeMap<String, String>) -> Workload {
    let pod = |kind| Workload { kind, name: pod_name.to_string() };
    // Deployment -> ReplicaSet "<deploy>-<hash>" -> pod "<deploy>-<hash>-<xxxxx>".
    if let Some(hash) = labels.get("pod-template-hash")
        && let Some(rs) = strip_suffix(pod_name, is_pod_suffix)
        && let Some(deploy) = rs.strip_suffix(hash.as_str()).and_then(|d| d.strip_suffix('-'))
        && !deploy.is_empty()
    {
        return Workload { kind: "Deployment", name: deploy.to_string() };
    }
    if labels.contains_key("controller-revision-hash") {
        // StatefulSet pods are "<sts>-<ordinal>" and carry their own name as a label.
        if labels.contains_key("statefulset.kubernetes.io/pod-name")
            && let Some(sts) = strip_suffix(pod_name, |s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        {
            return Workload { kind: "StatefulSet", name: sts.to_string() };
        }
        if labels.contains_key("pod-template-generation")
            && let Some(ds) = strip_suffix(pod_name, is_pod_suffix)
        {
            return Workload { kind: "DaemonSet", name: ds.to_string() };
        }
    }
    let job = labels.get("batch.kubernetes.io/job-name").or_else(|| labels.get("job-name"));
    if let Some(job) = job {
        // CronJob jobs are "<cronjob>-<scheduled minute>".
        if let Some(cron) = strip_suffix(job, |s| s.len() >= 8 && s.bytes().all(|b| b.is_ascii_digit())) {
            return Workload { kind: "CronJob", name: cron.to_string() };
        }
        return Workload { kind: "Job", name: job.clone() };
    }
    pod("Pod")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn controllers() {
        let w = from_pod("checkout-7d9f8b6c5d-x2k4q", &l(&[("pod-template-hash", "7d9f8b6c5d"), ("app", "checkout")]));
        assert_eq!(w, Workload { kind: "Deployment", name: "checkout".into() });
        let w = from_pod("web-api-2-7d9f8b6c5d-x2k4q", &l(&[("pod-template-hash", "7d9f8b6c5d")]));
        assert_eq!(w.name, "web-api-2");
        let w = from_pod(
            "db-12",
            &l(&[("controller-revision-hash", "db-5c9f"), ("statefulset.kubernetes.io/pod-name", "db-12")]),
        );
        assert_eq!(w, Workload { kind: "StatefulSet", name: "db".into() });
        let w = from_pod(
            "node-exporter-8xq2z",
            &l(&[("controller-revision-hash", "6b7c"), ("pod-template-generation", "3")]),
        );
        assert_eq!(w, Workload { kind: "DaemonSet", name: "node-exporter".into() });
        let w = from_pod("backup-28391520-abcde", &l(&[("batch.kubernetes.io/job-name", "backup-28391520")]));
        assert_eq!(w, Workload { kind: "CronJob", name: "backup".into() });
        let w = from_pod("migrate-abcde", &l(&[("job-name", "migrate")]));
        assert_eq!(w, Workload { kind: "Job", name: "migrate".into() });
    }

    #[test]
    fn fallbacks_are_the_pod() {
        assert_eq!(from_pod("static-web", &l(&[])), Workload { kind: "Pod", name: "static-web".into() });
        // A hash label that does not match the name is not trusted.
        let w = from_pod("x-abcde", &l(&[("pod-template-hash", "zzz")]));
        assert_eq!(w.kind, "Pod");
        let w = from_pod("-abcde", &l(&[("pod-template-hash", "")]));
        assert_eq!(w.kind, "Pod");
        assert_eq!(from_pod("", &l(&[])).name, "");
    }
}
