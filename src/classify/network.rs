//! Network drift: an endpoint a container opens that its workload's baseline
//! does not expect (src/classify/baseline.rs), unless allowed by the config.

use super::{
    Classifier, NoFinding,
    baseline::{BaselineError, Baselines, Endpoint, Verdict},
    finding::{Finding, Kind, PlaybookStep},
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
        let ep = Endpoint::new(ev.op, ev.transport, ev.addr, ev.port, &ev.comm);
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
            NetOp::Connect => ("network_new_destination", "connected to", "outbound"),
            NetOp::Listen | NetOp::BindUdp => ("network_new_listener", "listens on", "listen"),
        };
        let addr = ev.addr.to_string();
        let msg = format!(
            "{} in container {} {what} {} {addr} port {}, which its workload's baseline does not expect",
            ev.comm,
            &c.id[..c.id.len().min(12)],
            ev.transport.as_str(),
            ev.port
        );
        let mut f =
            cl.process_finding(ev.process(), c, Kind::Network, rule, self.rule.severity, PlaybookStep::Validate, msg);
        f.server_address = Some(addr);
        f.server_port = Some(ev.port);
        f.network_transport = Some(ev.transport.as_str());
        f.network_type = Some(if ev.addr.is_ipv4() { "ipv4" } else { "ipv6" });
        f.network_direction = Some(direction);
        f.baseline_workload = Some(workload.to_string());
        Ok(f)
    }

    /// Persists the baselines if they changed.
    pub fn save(&self) -> Result<(), BaselineError> {
        match self.baselines.lock() {
            Ok(mut b) => b.save(),
            Err(_) => Ok(()),
        }
    }
}
