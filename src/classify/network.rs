//! Network drift: an endpoint a container opens that its workload's baseline
//! does not expect (src/classify/baseline.rs), unless allowed by the config.

use super::{
    Classifier, NoFinding,
    baseline::{BaselineError, Baselines, Endpoint, Verdict},
    finding::{Detail, Finding, NetworkFacts},
    rules,
};
use crate::{
    config::NetworkRule,
    enrich::ContainerRef,
    event::{NetEvent, NetOp},
};
use std::{path::Path, sync::Mutex, time::Duration};

pub struct NetworkJudge {
    rule: NetworkRule,
    baselines: Mutex<Baselines>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl NetworkJudge {
    /// How often learned baselines are persisted (and at shutdown).
    pub const SAVE_EVERY: Duration = Duration::from_secs(10);

    /// Loads persisted baselines; a bad file is returned as an error to report
    /// (the judge starts with an empty baseline either way).
    pub fn new(rule: &NetworkRule) -> (Self, Option<BaselineError>) {
        let dir = (!rule.state_dir.is_empty()).then(|| Path::new(&rule.state_dir));
        let (b, err) = Baselines::load(
            dir,
            Duration::from_secs(rule.learning_window_s),
            rule.max_endpoints_per_workload,
            rule.max_workloads,
        );
        (Self { rule: rule.clone(), baselines: Mutex::new(b) }, err)
    }

    /// Judges one endpoint of a container whose workload is `workload`.
    pub fn judge(
        &self,
        cl: &Classifier,
        ev: &NetEvent,
        c: &ContainerRef,
        workload: &str,
    ) -> Result<Finding, NoFinding> {
        if !self.rule.enabled {
            return Err(NoFinding::RuleDisabled);
        }
        if self.rule.ignore_loopback && ev.addr.is_loopback() {
            return Err(NoFinding::Loopback);
        }
        if self.rule.allowed_ports.contains(&ev.port) {
            return Err(NoFinding::Allowed);
        }
        let ep = Endpoint::new(ev.op, ev.transport, ev.addr, ev.port, &ev.proc.comm);
        let verdict = match self.baselines.lock() {
            Ok(mut b) => b.observe(workload, ep, unix_now()),
            Err(_) => Verdict::New,
        };
        match verdict {
            Verdict::Learned => return Err(NoFinding::BaselineLearning),
            Verdict::Expected => return Err(NoFinding::BaselineExpected),
            Verdict::New => {}
        }
        let (rule, what, direction) = match ev.op {
            NetOp::Connect => (&rules::NETWORK_NEW_DESTINATION, "connected to", "outbound"),
            NetOp::Listen | NetOp::BindUdp => (&rules::NETWORK_NEW_LISTENER, "listens on", "listen"),
        };
        let address = ev.addr.to_string();
        let msg = format!(
            "{} in container {} {what} {} {address} port {}, which its workload's baseline does not expect",
            ev.proc.comm,
            c.short_id(),
            ev.transport.as_str(),
            ev.port
        );
        let detail = Detail::Network(NetworkFacts {
            drifted_ancestor: false,
            address,
            port: ev.port,
            transport: ev.transport.as_str(),
            network_type: if ev.addr.is_ipv4() { "ipv4" } else { "ipv6" },
            direction,
            baseline_workload: workload.to_string(),
        });
        Ok(cl.process_finding(rule, c, &ev.proc, msg, detail))
    }

    /// Persists the baselines if they changed.
    pub fn save(&self) -> Result<(), BaselineError> {
        match self.baselines.lock() {
            Ok(mut b) => b.save(),
            Err(_) => Ok(()),
        }
    }
}
