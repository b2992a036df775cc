//! Network drift: an endpoint a container opens that its workload's baseline
//! does not expect (src/classify/baseline.rs), unless allowed by the config.

use super::{
    Classifier, NoFinding,
    baseline::{BaselineError, Baselines, Endpoint, Verdict},
    finding::{Boxed, Detail, NetworkFacts},
    rules,
};
use crate::{
    config::NetworkRule,
    enrich::ContainerRef,
    event::{NetEvent, NetOp, Origin},
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

    /// What the event alone decides (rule off, loopback, an allowed port):
    /// before the workload's baseline key is built or its runtime waited for.
    pub fn prejudge(&self, ev: &NetEvent) -> Result<(), NoFinding> {
        if !self.rule.enabled {
            return Err(NoFinding::RuleDisabled);
        }
        if self.rule.ignore_loopback && ev.addr.is_loopback() {
            return Err(NoFinding::Loopback);
        }
        if self.rule.allowed_ports.contains(&ev.port) {
            return Err(NoFinding::Allowed);
        }
        Ok(())
    }

    /// Judges one endpoint of a container whose workload is `workload`.
    pub fn judge(&self, cl: &Classifier, ev: &NetEvent, c: &ContainerRef, workload: &str) -> Result<Boxed, NoFinding> {
        self.prejudge(ev)?;
        let ep = Endpoint::new(ev.op, ev.transport, ev.addr, ev.port, &ev.proc.comm);
        // Exec sessions are never learned, even inside the learning window.
        let learn = ev.proc.origin == Origin::Container;
        let verdict = match self.baselines.lock() {
            Ok(mut b) => b.judge(workload, ep, unix_now(), learn),
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
        let (session, never) =
            if learn { ("", "") } else { (", started from an exec session,", " (exec sessions are never learned)") };
        let msg = format!(
            "{} in container {}{session} {what} {} {address} port {}, which its workload's baseline does not expect{never}",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::Config,
        enrich::CgroupLayout,
        event::{Process, Transport},
    };

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn listen(comm: &str, port: u16, origin: Origin) -> NetEvent {
        NetEvent {
            proc: Process { origin, ..Process::for_test(comm, &format!("k8s.io/{ID}")) },
            op: NetOp::Listen,
            transport: Transport::Tcp,
            addr: "0.0.0.0".parse().unwrap(),
            port,
        }
    }

    /// Loopback, an allowed port and a disabled rule are decided from the
    /// event alone (the pipeline then neither builds the workload's key nor
    /// waits for the runtime); anything else goes on to the baseline.
    #[test]
    fn the_event_alone_decides_loopback_allowed_ports_and_a_disabled_rule() {
        let mut cfg = Config::default();
        cfg.rules.network.state_dir.clear();
        cfg.rules.network.ignore_loopback = true;
        cfg.rules.network.allowed_ports = vec![53];
        let (judge, _) = NetworkJudge::new(&cfg.rules.network);
        let at = |addr: &str, port| NetEvent { addr: addr.parse().unwrap(), ..listen("nc", port, Origin::Container) };
        assert_eq!(judge.prejudge(&at("127.0.0.1", 8080)), Err(NoFinding::Loopback));
        assert_eq!(judge.prejudge(&at("::1", 8080)), Err(NoFinding::Loopback));
        assert_eq!(judge.prejudge(&at("10.0.0.7", 53)), Err(NoFinding::Allowed));
        assert_eq!(judge.prejudge(&at("10.0.0.7", 8080)), Ok(()));
        assert_eq!(judge.prejudge(&at("0.0.0.0", 8080)), Ok(()));
        cfg.rules.network.ignore_loopback = false;
        let (judge, _) = NetworkJudge::new(&cfg.rules.network);
        assert_eq!(judge.prejudge(&at("127.0.0.1", 8080)), Ok(()));
        cfg.rules.network.enabled = false;
        let (judge, _) = NetworkJudge::new(&cfg.rules.network);
        assert_eq!(judge.prejudge(&at("10.0.0.7", 8080)), Err(NoFinding::RuleDisabled));
    }

    /// Issue 11: inside the learning window the container's own listener is
    /// learned, an exec session's is a finding (and stays one).
    #[test]
    fn exec_sessions_are_judged_inside_the_learning_window() {
        let mut cfg = Config::default();
        cfg.rules.network.learning_window_s = 3600;
        cfg.rules.network.allowed_ports.clear();
        cfg.rules.network.state_dir.clear();
        let (judge, err) = NetworkJudge::new(&cfg.rules.network);
        assert!(err.is_none());
        let (cl, c) = (
            Classifier::new(&cfg),
            ContainerRef { id: ID.into(), layout: CgroupLayout::ContainerdCgroupfs, pod_uid: None },
        );
        let w = "shop/Deployment/api/api";
        assert_eq!(
            judge.judge(&cl, &listen("nginx", 8080, Origin::Container), &c, w).unwrap_err(),
            NoFinding::BaselineLearning
        );
        for _ in 0..2 {
            let f = judge.judge(&cl, &listen("nc", 9999, Origin::ExecSession), &c, w).expect("a finding");
            assert_eq!(f.rule, rules::NETWORK_NEW_LISTENER.name);
            assert_eq!(f.process.as_ref().map(|p| p.origin), Some(Origin::ExecSession));
            assert!(f.message.contains("exec session"), "{}", f.message);
            let v: serde_json::Value = serde_json::from_str(&f.to_json()).unwrap();
            assert_eq!(v["driftwatch.process.origin"], "exec_session");
        }
        // Learned from the container: expected from an exec session too.
        assert_eq!(
            judge.judge(&cl, &listen("nginx", 8080, Origin::ExecSession), &c, w).unwrap_err(),
            NoFinding::BaselineExpected
        );
    }
}
