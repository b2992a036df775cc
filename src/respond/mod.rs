//! The playbook's Investigate and Isolate steps on the node: a container's
//! filesystem diff against its image ([`diff`]), its process list
//! ([`processes`]), evidence bundles ([`evidence`]) and the cgroup_skb network
//! quarantine ([`quarantine`]).

pub mod diff;
pub mod evidence;
pub mod processes;
pub mod quarantine;
pub mod target;
