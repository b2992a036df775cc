//! driftwatch: a per-node agent that detects container drift with eBPF.
//!
//! The modules follow the data:
//! kernel ([`bpf`]) -> [`event`] decoding -> [`enrich`] (container identity)
//! -> [`classify`] (rules -> findings) -> [`sink`] (stdout JSON, metrics) and [`server`].

pub mod abi;
pub mod agent;
pub mod bpf;
pub mod classify;
pub mod clock;
pub mod config;
pub mod enrich;
pub mod event;
pub mod server;
pub mod sink;
