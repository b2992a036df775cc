//! What to do with one alert, decided without touching anything: the action
//! its playbook step maps to, or why it is acknowledged without action or
//! refused. Holds the dedup window and the rate limits; time is passed in.

use super::{
    config::{RespondConfig, Step, is_dns_label, is_dns_subdomain},
    webhook::{Alert, Target},
};
use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

/// What the responder does to a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Deny-all NetworkPolicy + quarantine label + drifted label.
    Isolate,
    /// Eviction through the Eviction API + drifted label.
    Evict,
    /// Drifted label, and an evidence bundle from the node agent linked from
    /// the pod (`driftwatch.io/evidence`) when `node_agent` is configured.
    Investigate,
    /// `driftwatch.io/drifted=<rule>` label and annotation only.
    Label,
}

impl Action {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Isolate => "isolate",
            Self::Evict => "evict",
            Self::Investigate => "investigate",
            Self::Label => "label",
        }
    }

    fn of(step: Step) -> Action {
        match step {
            Step::Isolate => Action::Isolate,
            Step::Evict => Action::Evict,
            Step::Investigate => Action::Investigate,
            Step::Label => Action::Label,
        }
    }
}

/// The decision about one alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Carry out `action` (for real, or only log it when `dry_run`).
    Act { target: Target, action: Action, dry_run: bool },
    /// Nothing to do, and nothing wrong (resolved, for people, not enabled, duplicate).
    Acknowledge { target: Option<Target>, action: Option<Action>, reason: String },
    /// Would act, but may not (protected namespace, rate limit, bad name).
    Refuse { target: Option<Target>, action: Option<Action>, reason: String },
}

/// Sliding-window counter: at most `max` events in `window`.
#[derive(Debug)]
struct Window {
    max: usize,
    window: Duration,
    times: VecDeque<Instant>,
}

impl Window {
    fn new(max: u32, window_s: u64) -> Window {
        Window { max: max as usize, window: Duration::from_secs(window_s), times: VecDeque::new() }
    }

    fn full(&mut self, now: Instant) -> bool {
        while self.times.front().is_some_and(|t| now.saturating_duration_since(*t) >= self.window) {
            self.times.pop_front();
        }
        self.times.len() >= self.max
    }
}

#[derive(Debug)]
pub struct Decider {
    cfg: RespondConfig,
    protected: Vec<String>,
    dedup: HashMap<(String, String, Action), Instant>,
    global: Window,
    per_ns: HashMap<String, Window>,
}

impl Decider {
    /// `own_namespace`: the responder's (`POD_NAMESPACE`), protected too.
    pub fn new(cfg: RespondConfig, own_namespace: Option<&str>) -> Decider {
        let mut protected = cfg.protected_namespaces.clone();
        protected.extend(own_namespace.filter(|n| !n.is_empty()).map(str::to_string));
        let g = cfg.rate_limits.global;
        Decider {
            protected,
            dedup: HashMap::new(),
            global: Window::new(g.max, g.window_s),
            per_ns: HashMap::new(),
            cfg,
        }
    }

    pub fn config(&self) -> &RespondConfig {
        &self.cfg
    }

    /// Decides one alert at `now`; an `Act` counts against the limits and opens the dedup window.
    pub fn decide(&mut self, alert: &Alert, now: Instant) -> Verdict {
        let target = alert.target();
        let ack = |target: Option<Target>, action, reason: &str| Verdict::Acknowledge {
            target,
            action,
            reason: reason.to_string(),
        };
        if alert.resolved() {
            return ack(target, None, "alert resolved");
        }
        let Some(t) = target else {
            return ack(None, None, "no namespace/pod/container_id/playbook_step labels: an alert for people");
        };
        let refuse = |t: Target, action, reason: String| Verdict::Refuse { target: Some(t), action, reason };
        if !is_dns_label(&t.namespace) || !is_dns_subdomain(&t.pod) {
            return refuse(t, None, "namespace or pod label is not a Kubernetes name".into());
        }
        if t.container_id.is_empty() || !t.container_id.bytes().all(|c| c.is_ascii_alphanumeric()) {
            return refuse(t, None, "container_id label is not a container id".into());
        }
        let Some(step) = Step::parse(&t.playbook_step) else {
            let reason = format!("playbook step {:?} is not automated", t.playbook_step);
            return ack(Some(t), None, &reason);
        };
        let action = Action::of(step);
        let (dry_run, steps) = self.cfg.for_namespace(&t.namespace);
        if !steps.contains(&step) {
            let reason = format!("step {:?} is not enabled for namespace {}", t.playbook_step, t.namespace);
            return ack(Some(t), Some(action), &reason);
        }
        if self.protected.contains(&t.namespace) {
            return refuse(t.clone(), Some(action), format!("namespace {} is protected", t.namespace));
        }
        let key = (t.namespace.clone(), t.pod.clone(), action);
        let window = Duration::from_secs(self.cfg.dedup_window_s);
        if let Some(at) = self.dedup.get(&key)
            && now.saturating_duration_since(*at) < window
        {
            return ack(Some(t), Some(action), "already handled within the dedup window");
        }
        if self.global.full(now) {
            let l = self.cfg.rate_limits.global;
            return refuse(t, Some(action), format!("global rate limit: {} actions per {}s", l.max, l.window_s));
        }
        let l = self.cfg.rate_limits.per_namespace;
        let ns = self.per_ns.entry(t.namespace.clone()).or_insert_with(|| Window::new(l.max, l.window_s));
        if ns.full(now) {
            let reason = format!("rate limit of namespace {}: {} actions per {}s", t.namespace, l.max, l.window_s);
            return refuse(t, Some(action), reason);
        }
        ns.times.push_back(now);
        self.global.times.push_back(now);
        self.dedup.retain(|_, at| now.saturating_duration_since(*at) < window);
        self.dedup.insert(key, now);
        Verdict::Act { target: t, action, dry_run }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn alert(ns: &str, pod: &str, step: &str) -> Alert {
        let labels: BTreeMap<String, String> = [
            ("alertname", "ContainerDriftBinary"),
            ("namespace", ns),
            ("pod", pod),
            ("container_id", "containerd://abcdef0123456789"),
            ("playbook_step", step),
            ("rule", "exec_new_binary"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Alert { status: "firing".into(), labels, annotations: BTreeMap::new(), fingerprint: "f".into() }
    }

    fn cfg(y: &str) -> RespondConfig {
        RespondConfig::from_yaml(y, "t.yaml").unwrap()
    }

    fn kind(v: &Verdict) -> &'static str {
        match v {
            Verdict::Act { dry_run: true, .. } => "dry_run",
            Verdict::Act { .. } => "act",
            Verdict::Acknowledge { .. } => "ack",
            Verdict::Refuse { .. } => "refuse",
        }
    }

    const ACTING: &str =
        "respond:\n  dry_run: false\n  steps: [isolate, evict, investigate]\n  webhook: {token_file: /t}\n";

    #[test]
    fn steps_map_to_actions_and_defaults_do_nothing() {
        let now = Instant::now();
        let mut d = Decider::new(RespondConfig::default(), None);
        assert_eq!(kind(&d.decide(&alert("shop", "web-1", "isolate"), now)), "ack");
        let mut d = Decider::new(cfg(ACTING), None);
        for (pod, step, action) in [
            ("a", "isolate", Action::Isolate),
            ("b", "evict", Action::Evict),
            ("c", "investigate", Action::Investigate),
        ] {
            match d.decide(&alert("shop", pod, step), now) {
                Verdict::Act { action: a, dry_run: false, target } => {
                    assert_eq!(a, action);
                    assert_eq!(target.container_id, "abcdef0123456789");
                }
                v => panic!("{v:?}"),
            }
        }
        assert_eq!(kind(&d.decide(&alert("shop", "d", "validate"), now)), "ack");
        assert_eq!(kind(&d.decide(&alert("shop", "d", "label"), now)), "ack", "label is not enabled");
    }

    #[test]
    fn resolved_and_workload_alerts_are_acknowledged() {
        let now = Instant::now();
        let mut d = Decider::new(cfg(ACTING), None);
        let mut a = alert("shop", "web-1", "isolate");
        a.status = "resolved".into();
        assert_eq!(kind(&d.decide(&a, now)), "ack");
        let mut a = alert("shop", "web-1", "isolate");
        a.labels.remove("pod");
        assert_eq!(kind(&d.decide(&a, now)), "ack");
        // Neither counted: the real alert still acts.
        assert_eq!(kind(&d.decide(&alert("shop", "web-1", "isolate"), now)), "act");
    }

    #[test]
    fn protected_namespaces_and_own_namespace_are_refused() {
        let now = Instant::now();
        let mut d = Decider::new(cfg(ACTING), Some("driftwatch"));
        assert_eq!(kind(&d.decide(&alert("kube-system", "coredns-1", "evict"), now)), "refuse");
        assert_eq!(kind(&d.decide(&alert("driftwatch", "responder-1", "isolate"), now)), "refuse");
        assert_eq!(kind(&d.decide(&alert("shop", "../x", "isolate"), now)), "refuse");
    }

    #[test]
    fn dry_run_and_namespace_overrides() {
        let now = Instant::now();
        let y = "respond:\n  steps: [isolate]\n  namespaces: {payments: {steps: [evict], dry_run: false}}\n  webhook: {token_file: /t}\n";
        let mut d = Decider::new(cfg(y), None);
        assert_eq!(kind(&d.decide(&alert("shop", "a", "isolate"), now)), "dry_run");
        assert_eq!(kind(&d.decide(&alert("payments", "a", "isolate"), now)), "ack");
        assert_eq!(kind(&d.decide(&alert("payments", "a", "evict"), now)), "act");
    }

    #[test]
    fn dedup_per_pod_and_action_then_expires() {
        let t0 = Instant::now();
        let mut d = Decider::new(cfg(ACTING), None);
        assert_eq!(kind(&d.decide(&alert("shop", "a", "isolate"), t0)), "act");
        assert_eq!(kind(&d.decide(&alert("shop", "a", "isolate"), t0 + Duration::from_secs(599))), "ack");
        assert_eq!(kind(&d.decide(&alert("shop", "a", "evict"), t0)), "act", "another action");
        assert_eq!(kind(&d.decide(&alert("shop", "b", "isolate"), t0)), "act", "another pod");
        assert_eq!(kind(&d.decide(&alert("shop", "a", "isolate"), t0 + Duration::from_secs(600))), "act");
    }

    #[test]
    fn burst_of_200_alerts_holds_dedup_and_rate_limits() {
        let t0 = Instant::now();
        let mut d = Decider::new(cfg(ACTING), None);
        let mut acted: HashMap<String, usize> = HashMap::new();
        let (mut acks, mut refusals) = (0, 0);
        // 200 alerts over 10 namespaces x 10 pods, each pod twice, all within a second.
        for i in 0..200 {
            let ns = format!("ns{}", i % 10);
            let pod = format!("p{}", (i / 10) % 10);
            match d.decide(&alert(&ns, &pod, "isolate"), t0 + Duration::from_millis(i)) {
                Verdict::Act { target, .. } => *acted.entry(target.namespace).or_default() += 1,
                Verdict::Acknowledge { .. } => acks += 1,
                Verdict::Refuse { .. } => refusals += 1,
            }
        }
        let total: usize = acted.values().sum();
        assert_eq!(total, 20, "global max 20: {acted:?}");
        assert!(acted.values().all(|n| *n <= 5), "per-namespace max 5: {acted:?}");
        assert_eq!(acks + refusals + total, 200);
        assert_eq!(acks, 20, "the second alert of each acted pod is a duplicate");
        // After the window the limits let actions through again.
        let later = t0 + Duration::from_secs(601);
        assert_eq!(kind(&d.decide(&alert("ns0", "fresh", "isolate"), later)), "act");
    }

    #[test]
    fn per_namespace_limit_binds_before_the_global_one() {
        let t0 = Instant::now();
        let mut d = Decider::new(cfg(ACTING), None);
        let kinds: Vec<&str> = (0..7).map(|i| kind(&d.decide(&alert("shop", &format!("p{i}"), "evict"), t0))).collect();
        assert_eq!(kinds, ["act", "act", "act", "act", "act", "refuse", "refuse"]);
        assert_eq!(kind(&d.decide(&alert("other", "p", "evict"), t0)), "act");
    }
}
