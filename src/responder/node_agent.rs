//! The node agent of a pod's node, asked for an evidence bundle through its
//! admin API (`POST /v1/containers/{id}/evidence`, src/admin/): the
//! investigate step, and isolate's capture.
//!
//! The agent is found as a pod: the agent pods' label selector in their
//! namespace, on the alert pod's `spec.nodeName`, reached at its `podIP` and
//! the admin port. That works whether or not the agent uses hostNetwork (then
//! its podIP is the node's IP), needs no hostPort, and lets a NetworkPolicy
//! on the agent admit only the responder's pods; it costs one pod list, which
//! the responder's RBAC (pods get/list) already allows.

use super::config::NodeAgent;
use crate::{admin, config::AdminAddr};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, api::ListParams};
use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// Where the bundle was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub node: String,
    /// The bundle's path on that node.
    pub path: String,
}

impl Evidence {
    /// The `driftwatch.io/evidence` annotation value: `<node>:<path>`.
    pub fn location(&self) -> String {
        format!("{}:{}", self.node, self.path)
    }
}

pub struct NodeAgents {
    client: Client,
    /// The agents' namespace (the config's, else the responder's own).
    namespace: String,
    selector: String,
    port: u16,
    token_file: PathBuf,
    timeout: Duration,
}

impl NodeAgents {
    /// `own_namespace`: the responder's (`POD_NAMESPACE`), where the chart puts the agents too.
    pub fn new(client: Client, cfg: &NodeAgent, own_namespace: Option<&str>) -> NodeAgents {
        let namespace = match cfg.namespace.as_str() {
            "" => own_namespace.unwrap_or("default").to_string(),
            ns => ns.to_string(),
        };
        NodeAgents {
            client,
            namespace,
            selector: cfg.selector.clone(),
            port: cfg.port,
            token_file: PathBuf::from(&cfg.token_file),
            timeout: Duration::from_secs(cfg.timeout_s),
        }
    }

    /// Asks the agent on `node` to capture `container_id` now; where the bundle is.
    pub async fn capture(&self, node: &str, container_id: &str) -> Result<Evidence, String> {
        let addr = self.agent_on(node).await?;
        // Read at every call: a rotated Secret is used without a restart.
        let token = std::fs::read_to_string(&self.token_file)
            .map_err(|e| format!("node_agent.token_file {}: {e}", self.token_file.display()))?;
        let path = format!("/v1/containers/{container_id}/evidence");
        let admin_addr = AdminAddr::Tcp(addr);
        let call = admin::call(&admin_addr, Some(token.trim()), hyper::Method::POST, &path);
        let (status, body) = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| format!("node agent {addr} on {node}: no answer within {} s", self.timeout.as_secs()))?
            .map_err(|e| format!("node agent on {node}: {e}"))?;
        if status != 200 {
            let why = body["error"].as_str().map_or_else(|| body.to_string(), str::to_string);
            return Err(format!("node agent {addr} on {node} answered {status}: {why}"));
        }
        match body["driftwatch.evidence.path"].as_str() {
            Some(p) if !p.is_empty() => Ok(Evidence { node: node.to_string(), path: p.to_string() }),
            _ => Err(format!("node agent {addr} on {node}: no driftwatch.evidence.path in {body}")),
        }
    }

    /// The admin address of the running agent pod on `node`.
    async fn agent_on(&self, node: &str) -> Result<SocketAddr, String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let lp = ListParams::default().labels(&self.selector).fields(&format!("spec.nodeName={node}"));
        let list = pods
            .list(&lp)
            .await
            .map_err(|e| format!("list node agents ({}) in namespace {}: {e}", self.selector, self.namespace))?;
        let ip = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .find_map(|p| p.status.as_ref()?.pod_ip.as_deref()?.parse::<std::net::IpAddr>().ok())
            .ok_or_else(|| {
                format!("no running node agent ({}) in namespace {} on node {node}", self.selector, self.namespace)
            })?;
        Ok(SocketAddr::new(ip, self.port))
    }
}
