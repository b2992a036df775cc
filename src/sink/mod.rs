//! Sinks: where findings and counters go.

pub mod json;
pub mod metrics;
