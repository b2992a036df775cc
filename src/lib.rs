//! driftwatch: a per-node agent that detects container drift with eBPF.
//!
//! The modules follow the data:
//! kernel ([`bpf`]) -> [`event`] (decode) -> [`enrich`] (container id, runtime,
//! API) -> [`containers`] (the registry: one entry per container) ->
//! [`classify`] (rules -> findings, pure) -> [`pipeline`] (runs those stages,
//! emits) -> [`sink`] (stdout JSON, OTLP, Alertmanager); [`metrics`] is a leaf
//! every stage counts into, [`server`] serves it, [`agent`] wires everything.
//! [`json_line`] writes findings as JSON (serde_json's bytes, faster).
//! [`id`] holds container ids and pod uids without allocating.
//! [`escape`] turns the kernel's byte names into text without losing a byte.
//! [`policy`] (pure) decides what is approved and each container's mode.
//! [`redact`] (pure) replaces secrets in findings before any sink sees them.
//! [`admin`] serves the investigator's tools ([`respond`]) on the admin socket.

pub mod abi;
pub mod admin;
pub mod admission;
pub mod agent;
pub mod bpf;
pub mod classify;
pub mod cli;
pub mod clock;
pub mod config;
pub mod containers;
pub mod enrich;
pub mod escape;
pub mod event;
pub mod health;
pub mod heap;
pub mod id;
pub mod json_line;
mod locks;
pub mod metrics;
pub mod node;
pub mod pipeline;
pub mod policy;
pub mod procfs;
pub mod recent;
pub mod redact;
pub mod reload;
pub mod respond;
pub mod responder;
pub mod server;
pub mod sink;
pub mod state;
pub mod tasks;
pub mod telemetry;
pub mod tls;
