//! Policy reload without a restart: on SIGHUP, and when the config file's
//! content changes (the chart mounts it from a ConfigMap, which the kubelet
//! updates in place by swapping a symlink, so the content is compared, not
//! the inode or mtime). A bad file keeps the running policy and logs one line
//! naming file, line and field; a good one logs what changed. Sections other
//! than `policy` take effect at the next restart (said in the log).

use crate::{
    config::{Config, ConfigError},
    metrics::Metrics,
    pipeline::PolicyGate,
    policy::Policy,
};
use std::{path::PathBuf, sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// How often the file is compared with what was loaded.
pub const POLL: Duration = Duration::from_secs(2);

pub struct Reloader {
    pub path: PathBuf,
    pub running: Config,
    pub gate: Arc<PolicyGate>,
    pub metrics: Arc<Metrics>,
}

/// What changed outside `policy` between two configs (restart needed).
fn restart_sections(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut v = Vec::new();
    let mut check = |same: bool, name: &'static str| {
        if !same {
            v.push(name)
        }
    };
    check(old.sensor == new.sensor, "sensor");
    check(old.pipeline == new.pipeline, "pipeline");
    check(old.rules == new.rules, "rules");
    check(old.otlp == new.otlp, "otlp");
    check(old.alertmanager == new.alertmanager, "alertmanager");
    check(old.kubernetes == new.kubernetes, "kubernetes");
    check(old.metrics == new.metrics, "metrics");
    check(old.redaction == new.redaction, "redaction");
    check(old.runtime.grace_s == new.runtime.grace_s, "runtime");
    v
}

impl Reloader {
    /// Loads the file and applies its policy; Err: the running policy stays.
    pub fn reload(&mut self, why: &str) -> Result<(), ConfigError> {
        // Config::load validated the policy (it compiles); compiled again here.
        let loaded = Config::load(&self.path).and_then(|cfg| match crate::policy::compile(&cfg.policy) {
            Ok(c) => Ok((cfg, c)),
            Err(e) => Err(ConfigError::Invalid {
                file: self.path.display().to_string(),
                location: String::new(),
                field: "policy".into(),
                message: e.message,
            }),
        });
        match loaded {
            Ok((cfg, compiled)) => {
                let changed = self.gate.replace(Policy::new(compiled));
                let restart = restart_sections(&self.running, &cfg);
                self.metrics.policy.reload(true);
                tracing::info!(file = %self.path.display(), trigger = why, "config reloaded: {changed}");
                if !restart.is_empty() {
                    tracing::warn!(
                        file = %self.path.display(),
                        "config reloaded: changes to {} take effect at the next restart (only `policy` is reloaded)",
                        restart.join(", ")
                    );
                }
                self.running.policy = cfg.policy.clone();
                Ok(())
            }
            Err(e) => {
                self.metrics.policy.reload(false);
                tracing::error!(trigger = why, "config reload rejected, the running policy stays: {e}");
                Err(e)
            }
        }
    }

    /// Runs until `cancel`: SIGHUP, or the file's content changed.
    pub async fn run(mut self, cancel: CancellationToken) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("cannot watch SIGHUP ({e}); the config file is still watched");
                None
            }
        };
        let mut last = std::fs::read(&self.path).ok();
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let why = tokio::select! {
                _ = cancel.cancelled() => return,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
                _ = tick.tick() => {
                    let now = std::fs::read(&self.path).ok();
                    // A file that disappears for a moment (a ConfigMap swap) is not a change.
                    if now.is_none() || now == last {
                        continue;
                    }
                    last = now;
                    "file changed"
                }
            };
            if why == "SIGHUP" {
                last = std::fs::read(&self.path).ok();
            }
            let _ = self.reload(why);
        }
    }
}
