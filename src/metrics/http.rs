//! The HTTP server's group: connections it refused or cut, per listener.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// Why a connection was refused (`peer_limit`, `global_limit`: closed at
/// accept) or cut (`header_timeout`: no complete request in time; `deadline`:
/// the connection outlived its deadline, e.g. an answer read too slowly).
pub const REJECT_REASONS: [&str; 4] = ["peer_limit", "global_limit", "header_timeout", "deadline"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    listener: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct HttpMetrics {
    rejected: Family<RejectLabels, Counter>,
}

impl HttpMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Self::default();
        r.register(
            "http_connections_rejected",
            "HTTP connections the agent refused at accept (peer_limit: the peer holds its share of the listener; \
             global_limit: the listener is full) or closed (header_timeout: no complete request in time; \
             deadline: the connection outlived its deadline), by listener (metrics, health)",
            m.rejected.clone(),
        );
        m
    }

    /// Pre-creates a listener's series at 0 (when it starts serving).
    pub fn declare(&self, listener: &'static str) {
        for reason in REJECT_REASONS {
            let _ = self.rejected.get_or_create(&RejectLabels { listener, reason });
        }
    }

    /// One connection refused or cut, `reason` one of [`REJECT_REASONS`].
    pub fn rejected(&self, listener: &'static str, reason: &'static str) {
        self.rejected.get_or_create(&RejectLabels { listener, reason }).inc();
    }

    /// How many so far.
    pub fn rejected_count(&self, listener: &'static str, reason: &'static str) -> u64 {
        self.rejected.get_or_create(&RejectLabels { listener, reason }).get()
    }
}
