//! The admin API's group (src/admin/): requests by route template and status
//! code, and connections it refused.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// Why a connection was refused (`full`: every connection slot is taken;
/// `peer_limit`: the peer holds its share, TCP only) or cut
/// (`header_timeout`, `deadline`).
pub const ADMIN_REJECT_REASONS: [&str; 4] = ["full", "peer_limit", "header_timeout", "deadline"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// The route template (`/v1/containers/{id}/diff`), `unmatched` for any
    /// other path: never the path itself.
    route: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct AdminMetrics {
    requests: Family<RequestLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
}

impl AdminMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Self::default();
        r.register(
            "admin_requests",
            "Requests to the admin API (diff, processes, quarantine, evidence), by route template and HTTP status code",
            m.requests.clone(),
        );
        r.register(
            "admin_connections_rejected",
            "Admin API connections refused at accept (full, peer_limit) or cut (header_timeout, deadline)",
            m.rejected.clone(),
        );
        m
    }

    /// Pre-creates the refusal series at 0 (when the listener starts).
    pub fn declare(&self) {
        for reason in ADMIN_REJECT_REASONS {
            let _ = self.rejected.get_or_create(&RejectLabels { reason });
        }
    }

    /// One request answered; `route` is a template, `code` its status.
    pub fn request(&self, route: &'static str, code: u16) {
        self.requests.get_or_create(&RequestLabels { route, code }).inc();
    }

    pub fn requests_count(&self, route: &'static str, code: u16) -> u64 {
        self.requests.get_or_create(&RequestLabels { route, code }).get()
    }

    /// One connection refused or cut, `reason` one of [`ADMIN_REJECT_REASONS`].
    pub fn rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&RejectLabels { reason }).inc();
    }

    pub fn rejected_count(&self, reason: &'static str) -> u64 {
        self.rejected.get_or_create(&RejectLabels { reason }).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition() {
        let mut r = Registry::with_prefix("driftwatch");
        let m = AdminMetrics::register(&mut r);
        m.declare();
        m.request("/v1/containers/{id}/diff", 200);
        m.request("/v1/containers/{id}/diff", 200);
        m.request("unmatched", 404);
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &r).unwrap();
        assert!(
            s.contains("driftwatch_admin_requests_total{route=\"/v1/containers/{id}/diff\",code=\"200\"} 2"),
            "{s}"
        );
        assert!(s.contains("driftwatch_admin_requests_total{route=\"unmatched\",code=\"404\"} 1"), "{s}");
        assert!(s.contains("driftwatch_admin_connections_rejected_total{reason=\"full\"} 0"), "{s}");
        assert_eq!(m.requests_count("unmatched", 404), 1);
    }
}
