//! The responder process (`driftwatch respond`, src/responder/): what it did
//! with each alert and what its webhook answered. Its own registry: the
//! responder is a Deployment of its own, not the node agent.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    /// isolate | evict | investigate | label | none.
    action: &'static str,
    /// acted | dry_run | refused | failed | acknowledged.
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The audit's results, one series each per action.
pub const RESULTS: [&str; 5] = ["acted", "dry_run", "refused", "failed", "acknowledged"];
/// The actions, plus `none` for alerts acknowledged before any action applied.
pub const ACTIONS: [&str; 5] = ["isolate", "evict", "investigate", "label", "none"];

#[derive(Debug, Default, Clone)]
pub struct RespondMetrics {
    actions: Family<ActionLabels, Counter>,
    requests: Family<CodeLabel, Counter>,
    rejected: Family<ReasonLabel, Counter>,
}

impl RespondMetrics {
    /// Registers the series in a fresh `driftwatch`-prefixed registry.
    pub fn new() -> (Registry, Self) {
        let mut r = Registry::with_prefix("driftwatch");
        let m = Self::default();
        r.register(
            "response_actions",
            "Responder decisions, by action and result (acted, dry_run, refused, failed, acknowledged)",
            m.actions.clone(),
        );
        r.register("response_webhook_requests", "Webhook requests answered, by HTTP status code", m.requests.clone());
        r.register(
            "response_webhook_rejected",
            "Webhook requests rejected, by reason (unauthorized, too_large, malformed, version, missing_labels, ...)",
            m.rejected.clone(),
        );
        for action in ACTIONS {
            for result in RESULTS {
                let _ = m.actions.get_or_create(&ActionLabels { action, result });
            }
        }
        (r, m)
    }

    pub fn action(&self, action: &'static str, result: &'static str) {
        self.actions.get_or_create(&ActionLabels { action, result }).inc();
    }

    pub fn request(&self, code: u16) {
        self.requests.get_or_create(&CodeLabel { code }).inc();
    }

    pub fn rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabel { reason }).inc();
    }
}
