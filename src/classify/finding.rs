//! The finding: the agent's outside contract (stdout JSON, later OTLP and
//! Alertmanager). Flat keys, OpenTelemetry semantic-convention names where one
//! exists, our own under `driftwatch.`. Extend, never rename.

use crate::config::Severity;
use serde::Serialize;
use std::{collections::BTreeMap, sync::Arc};

/// Drift kind (the `kind` key and metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Binary,
    Shell,
    Package,
    Network,
    /// File drift: a file of the container's filesystem changed.
    File,
    /// Configuration drift: how a container was deployed (image pinning,
    /// ephemeral containers), not what it executed. Carries no process keys.
    Config,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Binary => "binary",
            Self::Shell => "shell",
            Self::Package => "package",
            Self::Network => "network",
            Self::File => "file",
            Self::Config => "config",
        }
    }
}

/// The response-playbook step the on-call engineer should take next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PlaybookStep {
    #[default]
    Detect,
    Validate,
    Isolate,
    Investigate,
    Evict,
    Remediate,
}

impl PlaybookStep {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Detect => "detect",
            Self::Validate => "validate",
            Self::Isolate => "isolate",
            Self::Investigate => "investigate",
            Self::Evict => "evict",
            Self::Remediate => "remediate",
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// `Default` exists for findings built outside the exec classifier (config
/// drift); serialization is the derived one, minus the process keys for
/// `kind: config` (see the `Serialize` impl below).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(remote = "Self")]
pub struct Finding {
    /// RFC 3339 with nanoseconds, from the kernel timestamp of the event.
    pub time: String,
    pub kind: Kind,
    pub rule: &'static str,
    pub severity: Severity,
    pub playbook_step: PlaybookStep,
    pub message: String,
    #[serde(rename = "container.id")]
    pub container_id: String,
    #[serde(rename = "container.runtime.name")]
    pub container_runtime: &'static str,
    /// The node this agent runs on (`NODE_NAME`, else the hostname).
    #[serde(rename = "k8s.node.name")]
    pub node_name: Arc<str>,
    #[serde(rename = "k8s.namespace.name", skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(rename = "k8s.pod.name", skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(rename = "k8s.pod.uid", skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(rename = "k8s.container.name", skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// Deployment, StatefulSet, DaemonSet, Job, CronJob or Pod.
    #[serde(rename = "k8s.workload.kind", skip_serializing_if = "Option::is_none")]
    pub workload_kind: Option<&'static str>,
    #[serde(rename = "k8s.workload.name", skip_serializing_if = "Option::is_none")]
    pub workload_name: Option<String>,
    /// Image name without tag or digest (`docker.io/library/busybox`).
    #[serde(rename = "container.image.name", skip_serializing_if = "Option::is_none")]
    pub image_name: Option<String>,
    #[serde(rename = "container.image.tags", skip_serializing_if = "Option::is_none")]
    pub image_tags: Option<Vec<String>>,
    /// Digest of the image the container runs, as the runtime reports it (`sha256:...`).
    #[serde(rename = "container.image.id", skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// `repo@sha256:...` of the image the container runs.
    #[serde(rename = "container.image.repo_digests", skip_serializing_if = "Option::is_none")]
    pub image_repo_digests: Option<Vec<String>>,
    /// Pod labels, one flat key each: `k8s.pod.label.<key>`.
    #[serde(flatten)]
    pub pod_labels: BTreeMap<String, String>,
    /// False when the runtime could not say which pod this container is.
    #[serde(rename = "driftwatch.metadata.complete")]
    pub metadata_complete: bool,
    /// Why metadata is missing (metric label of `driftwatch_enrich_failures_total`).
    #[serde(rename = "driftwatch.metadata.missing_reason", skip_serializing_if = "Option::is_none")]
    pub metadata_missing: Option<&'static str>,
    #[serde(rename = "process.pid")]
    pub pid: u32,
    #[serde(rename = "process.parent_pid")]
    pub parent_pid: u32,
    #[serde(rename = "process.executable.path", skip_serializing_if = "String::is_empty")]
    pub exe_path: String,
    #[serde(rename = "process.executable.name", skip_serializing_if = "String::is_empty")]
    pub exe_name: String,
    #[serde(rename = "process.command_args", skip_serializing_if = "Vec::is_empty")]
    pub command_args: Vec<String>,
    #[serde(rename = "process.user.id")]
    pub uid: u32,
    #[serde(rename = "process.group.id")]
    pub gid: u32,
    /// Has a controlling terminal (OTel `process.interactive`).
    #[serde(rename = "process.interactive")]
    pub interactive: bool,
    #[serde(rename = "driftwatch.process.parent.name", skip_serializing_if = "String::is_empty")]
    pub parent_name: String,
    /// Where the executed file lives: image | upper_layer | memfd | deleted | tmpfs | volume | unknown.
    #[serde(rename = "driftwatch.exe.source", skip_serializing_if = "str::is_empty")]
    pub exe_source: &'static str,
    #[serde(rename = "driftwatch.exe.inode", skip_serializing_if = "is_zero")]
    pub exe_inode: u64,
    /// For upper-layer executables: `new_file` (not in the image) or
    /// `image_file_modified` (an image file whose content changed).
    #[serde(rename = "driftwatch.exe.origin", skip_serializing_if = "Option::is_none")]
    pub exe_origin: Option<&'static str>,
    #[serde(rename = "driftwatch.script.path", skip_serializing_if = "Option::is_none")]
    pub script_path: Option<String>,
    #[serde(rename = "driftwatch.script.source", skip_serializing_if = "Option::is_none")]
    pub script_source: Option<&'static str>,
    /// An ancestor of this process (or an earlier image of it) executed drift.
    #[serde(rename = "driftwatch.lineage.drifted_ancestor")]
    pub drifted_ancestor: bool,
    #[serde(rename = "driftwatch.shell.name", skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    #[serde(rename = "driftwatch.package.manager", skip_serializing_if = "Option::is_none")]
    pub package_manager: Option<String>,
    /// File findings: the file as the container sees it.
    #[serde(rename = "file.path", skip_serializing_if = "Option::is_none")]
    pub file_path: Option<String>,
    /// write | delete | rename | chmod.
    #[serde(rename = "driftwatch.file.operation", skip_serializing_if = "Option::is_none")]
    pub file_operation: Option<&'static str>,
    /// The new name, for renames.
    #[serde(rename = "driftwatch.file.target_path", skip_serializing_if = "Option::is_none")]
    pub file_target: Option<String>,
    /// rootfs (the image's filesystem) | volume (emptyDir, hostPath, configMap, ...).
    #[serde(rename = "driftwatch.file.location", skip_serializing_if = "Option::is_none")]
    pub file_location: Option<&'static str>,
    /// image (the file is in an image layer) | new (created in the container).
    #[serde(rename = "driftwatch.file.origin", skip_serializing_if = "Option::is_none")]
    pub file_origin: Option<&'static str>,
    /// The new mode, octal, for chmod.
    #[serde(rename = "driftwatch.file.mode", skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<String>,
    /// Dynamic-loader variables a process started with that the container's
    /// main process did not have (environment drift).
    #[serde(rename = "driftwatch.env.loader_vars", skip_serializing_if = "Option::is_none")]
    pub env_loader_vars: Option<Vec<&'static str>>,
    /// The new owner, `uid:gid` (`-` for unchanged), for chown.
    #[serde(rename = "driftwatch.file.owner", skip_serializing_if = "Option::is_none")]
    pub file_owner: Option<String>,
    /// Network findings: the endpoint (the remote one for outbound
    /// connections, the local one for listeners).
    #[serde(rename = "server.address", skip_serializing_if = "Option::is_none")]
    pub server_address: Option<String>,
    #[serde(rename = "server.port", skip_serializing_if = "Option::is_none")]
    pub server_port: Option<u16>,
    #[serde(rename = "network.transport", skip_serializing_if = "Option::is_none")]
    pub network_transport: Option<&'static str>,
    #[serde(rename = "network.type", skip_serializing_if = "Option::is_none")]
    pub network_type: Option<&'static str>,
    /// `outbound` (connect) or `listen` (listen, UDP bind).
    #[serde(rename = "driftwatch.network.direction", skip_serializing_if = "Option::is_none")]
    pub network_direction: Option<&'static str>,
    /// The baseline the endpoint was judged against.
    #[serde(rename = "driftwatch.baseline.workload", skip_serializing_if = "Option::is_none")]
    pub baseline_workload: Option<String>,
    #[serde(rename = "driftwatch.cgroup.path")]
    pub cgroup_path: String,
    #[serde(rename = "driftwatch.exe.path_truncated", skip_serializing_if = "is_false")]
    pub path_truncated: bool,
    #[serde(rename = "driftwatch.process.args_truncated", skip_serializing_if = "is_false")]
    pub args_truncated: bool,
    /// Config-drift facts (`kind: config` only): the `driftwatch.image.*` and
    /// `driftwatch.ephemeral.*` keys.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub config: Option<Box<super::config_drift::ConfigFacts>>,
    /// Kernel timestamp, for the detection-latency metric; not serialized.
    #[serde(skip)]
    pub ktime_ns: u64,
}

impl Serialize for Finding {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Environment drift is a config finding about a process: keep its keys.
        if self.kind != Kind::Config || self.config.is_none() {
            return Finding::serialize(self, s);
        }
        // A config finding is about a container, not a process: the process
        // and exec keys (pid 0, uid 0, ...) would be false facts.
        let v = Finding::serialize(self, serde_json::value::Serializer).map_err(serde::ser::Error::custom)?;
        let serde_json::Value::Object(mut m) = v else { return v.serialize(s) };
        m.retain(|k, _| !is_exec_key(k));
        m.serialize(s)
    }
}

/// Keys that describe the process of an exec.
fn is_exec_key(k: &str) -> bool {
    k.starts_with("process.")
        || k.starts_with("driftwatch.process.")
        || k.starts_with("driftwatch.exe.")
        || k.starts_with("driftwatch.script.")
        || k == "driftwatch.lineage.drifted_ancestor"
        || k == "driftwatch.cgroup.path"
}

impl Finding {
    /// One JSON line (no trailing newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
