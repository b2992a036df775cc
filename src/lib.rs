//! driftwatch: a per-node agent that detects container drift with eBPF.
//!
//! The modules follow the data:
//! kernel ([`bpf`]) -> [`event`] decoding -> [`enrich`] (container identity)
//! -> [`classify`] (rules -> findings) -> [`sink`] (stdout JSON, metrics) and [`server`];
//! [`pipeline`] runs those userspace stages, [`agent`] wires everything.

pub mod abi;
pub mod agent;
pub mod bpf;
pub mod classify;
pub mod clock;
pub mod config;
pub mod enrich;
pub mod event;
pub mod pipeline;
pub mod server;
pub mod sink;
pub mod telemetry;
