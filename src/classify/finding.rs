//! The finding: the agent's outside contract (stdout JSON, OTLP attributes,
//! Alertmanager labels). Flat keys, OpenTelemetry semantic-convention names
//! where one exists, our own under `driftwatch.`. Extend, never rename.
//!
//! A finding is a common part (what, where, which pod), the process that did
//! it (absent for configuration drift, which is about a container, not a
//! process), a detail per kind, and what the kernel record adds. Every part is
//! flattened, so the JSON is one flat object; the key order is pinned by the
//! golden files in `tests/golden/findings/`.

use crate::{
    config::Severity,
    event::{Args, Text},
};
use serde::Serialize;
use std::{collections::BTreeMap, sync::Arc};

mod boxed;
mod json;

pub use boxed::{Boxed, POOL_CACHE, pooled};
pub use json::{HEADERS_CACHE, headers_cached};

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
    /// ephemeral containers) or started (loader variables).
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

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// RFC 3339 with nanoseconds, from the kernel timestamp of the event.
    pub time: crate::clock::Rfc3339,
    pub kind: Kind,
    pub rule: &'static str,
    pub severity: Severity,
    pub playbook_step: PlaybookStep,
    /// The rule's ATT&CK and compliance tags (`classify::tags`).
    #[serde(rename = "driftwatch.tags")]
    pub tags: &'static [&'static str],
    /// In a reused buffer (`classify::message`).
    pub message: super::message::Message,
    /// Held inline (64 bytes: every runtime's ids), not on the heap.
    #[serde(rename = "container.id")]
    pub container_id: crate::id::Id,
    #[serde(rename = "container.runtime.name")]
    pub container_runtime: &'static str,
    /// The node this agent runs on (`NODE_NAME`, else the hostname).
    #[serde(rename = "k8s.node.name")]
    pub node_name: Arc<str>,
    /// Pod, workload and image, from the runtime and the Kubernetes API.
    /// Shared by the findings of a container (`pipeline::pod_facts`).
    #[serde(flatten)]
    pub k8s: Arc<SharedPodFacts>,
    /// The process; `None` for configuration drift about a container.
    #[serde(flatten)]
    pub process: Option<ProcessFacts>,
    #[serde(flatten)]
    pub detail: Detail,
    /// The kernel record's own facts; with `process`.
    #[serde(flatten)]
    pub record: Option<RecordFacts>,
    /// Secrets were replaced by `[REDACTED]` (src/redact.rs) before any sink.
    #[serde(rename = "driftwatch.redacted", skip_serializing_if = "is_false")]
    pub redacted: bool,
    /// The approval that matched (with `policy.emit_approved`; severity info).
    #[serde(rename = "driftwatch.approval", skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// What was done about it: `killed` (protect mode stopped the process
    /// before its first instruction), `quarantined` (the container was cut
    /// off the network), or `killed,quarantined`; absent when nothing was done.
    #[serde(rename = "driftwatch.action", skip_serializing_if = "Option::is_none")]
    pub action: Option<&'static str>,
    /// The evidence bundle that holds (or will hold) this finding's container
    /// state (`response.capture`).
    #[serde(rename = "driftwatch.evidence.path", skip_serializing_if = "Option::is_none")]
    pub evidence_path: Option<String>,
    /// Kernel timestamp, for the detection-latency metric; not serialized.
    #[serde(skip)]
    pub ktime_ns: u64,
}

/// What the runtime and the API say of the container's pod and image.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct PodFacts {
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
}

/// A container's pod facts as its findings share them, with their JSON
/// entries written once for every line after the first: ~1 KB of a pod's
/// finding that is the same in each, copied by `Finding::write_json`.
#[derive(Debug, Default)]
pub struct SharedPodFacts {
    facts: PodFacts,
    json: std::sync::OnceLock<Option<Box<str>>>,
}

impl From<PodFacts> for SharedPodFacts {
    fn from(facts: PodFacts) -> Self {
        Self { facts, json: Default::default() }
    }
}

/// A copy is made to be changed: without the JSON of the original.
impl Clone for SharedPodFacts {
    fn clone(&self) -> Self {
        self.facts.clone().into()
    }
}

impl PartialEq for SharedPodFacts {
    fn eq(&self, o: &Self) -> bool {
        self.facts == o.facts
    }
}

impl std::ops::Deref for SharedPodFacts {
    type Target = PodFacts;
    fn deref(&self) -> &PodFacts {
        &self.facts
    }
}

impl SharedPodFacts {
    /// The facts' JSON entries (`"k":v,...`), written on first use; None
    /// when they cannot be written.
    pub(crate) fn json_entries(&self) -> Option<&str> {
        self.json.get_or_init(|| crate::json_line::entries_of(&self.facts)).as_deref()
    }
}

impl Serialize for SharedPodFacts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.facts.serialize(s)
    }
}

/// The process that drifted. For network and file events (no exec) the exec
/// parts are empty and skipped.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ProcessFacts {
    #[serde(rename = "process.pid")]
    pub pid: u32,
    #[serde(rename = "process.parent_pid")]
    pub parent_pid: u32,
    #[serde(rename = "process.executable.path", skip_serializing_if = "Text::is_empty")]
    pub exe_path: Text,
    #[serde(rename = "process.executable.name", skip_serializing_if = "Text::is_empty")]
    pub exe_name: Text,
    #[serde(rename = "process.command_args", skip_serializing_if = "Args::is_empty")]
    pub command_args: Args,
    #[serde(rename = "process.user.id")]
    pub uid: u32,
    #[serde(rename = "process.group.id")]
    pub gid: u32,
    /// Has a controlling terminal (OTel `process.interactive`).
    #[serde(rename = "process.interactive")]
    pub interactive: bool,
    #[serde(rename = "driftwatch.process.parent.name", skip_serializing_if = "Text::is_empty")]
    pub parent_name: Text,
    /// `container` (the container's own process tree, descended from its
    /// init) or `exec_session` (kubectl exec, CRI ExecSync, runc exec,
    /// nsenter, and what they started).
    #[serde(rename = "driftwatch.process.origin")]
    pub origin: crate::event::Origin,
}

/// What the kernel record adds: the cgroup it saw, what it had to cut, and
/// which of its names were not UTF-8 and are escaped (`crate::escape`).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct RecordFacts {
    #[serde(rename = "driftwatch.cgroup.path")]
    pub cgroup_path: Arc<str>,
    /// The executable's path was cut (exec findings; file findings say it
    /// with `driftwatch.file.path_truncated`).
    #[serde(rename = "driftwatch.exe.path_truncated", skip_serializing_if = "is_false")]
    pub path_truncated: bool,
    #[serde(rename = "driftwatch.process.args_truncated", skip_serializing_if = "is_false")]
    pub args_truncated: bool,
    /// One key per name, present only when true: the name's text is escaped
    /// (`\xHH` for a byte that is not UTF-8, `\\` for a backslash). File
    /// findings mark their paths with `driftwatch.file.path_escaped` and
    /// `driftwatch.file.target_path_escaped`.
    #[serde(rename = "driftwatch.exe.path_escaped", skip_serializing_if = "is_false")]
    pub path_escaped: bool,
    /// `process.executable.name` (the kernel's comm).
    #[serde(rename = "driftwatch.exe.name_escaped", skip_serializing_if = "is_false")]
    pub name_escaped: bool,
    /// `process.command_args`: every argument is in the escaped form.
    #[serde(rename = "driftwatch.process.args_escaped", skip_serializing_if = "is_false")]
    pub args_escaped: bool,
    #[serde(rename = "driftwatch.process.parent.name_escaped", skip_serializing_if = "is_false")]
    pub parent_name_escaped: bool,
    #[serde(rename = "driftwatch.script.path_escaped", skip_serializing_if = "is_false")]
    pub script_path_escaped: bool,
    #[serde(rename = "driftwatch.cgroup.path_escaped", skip_serializing_if = "is_false")]
    pub cgroup_path_escaped: bool,
}

/// The facts of each kind of finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Detail {
    /// Binary, shell and package-manager execs, and loader injection.
    Exec(ExecFacts),
    /// A file changed (file drift, package-state writes).
    File(FileFacts),
    /// An endpoint outside the baseline.
    Network(NetworkFacts),
    /// How the container was deployed: the `driftwatch.image.*` and
    /// `driftwatch.ephemeral.*` keys.
    Config(Box<ConfigFacts>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ExecFacts {
    /// Where the executed file lives: image | upper_layer | memfd | deleted | tmpfs | volume | unknown.
    #[serde(rename = "driftwatch.exe.source")]
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
    pub shell: Option<Arc<str>>,
    #[serde(rename = "driftwatch.package.manager", skip_serializing_if = "Option::is_none")]
    pub package_manager: Option<Text>,
    /// Dynamic-loader variables a process started with that the container's
    /// main process did not have (environment drift).
    #[serde(rename = "driftwatch.env.loader_vars", skip_serializing_if = "Option::is_none")]
    pub env_loader_vars: Option<Vec<&'static str>>,
    /// A file mapped executable (`exec_new_library`, `exec_via_loader`): its
    /// path as the container sees it; `driftwatch.exe.source` and
    /// `driftwatch.exe.inode` are its own, the process keys the mapping process's.
    #[serde(rename = "driftwatch.mapped.path", skip_serializing_if = "Option::is_none")]
    pub mapped_path: Option<String>,
    /// `mmap` or `mprotect`: the syscall that made it executable.
    #[serde(rename = "driftwatch.mapped.syscall", skip_serializing_if = "Option::is_none")]
    pub mapped_by: Option<&'static str>,
    #[serde(rename = "driftwatch.mapped.path_truncated", skip_serializing_if = "is_false")]
    pub mapped_path_truncated: bool,
    #[serde(rename = "driftwatch.mapped.path_escaped", skip_serializing_if = "is_false")]
    pub mapped_path_escaped: bool,
    /// Environment drift (issue 16): variable names only, never values.
    #[serde(flatten)]
    pub env: super::change_facts::EnvFacts,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct FileFacts {
    /// The kernel does not follow lineage for file events: always false.
    #[serde(rename = "driftwatch.lineage.drifted_ancestor")]
    pub drifted_ancestor: bool,
    /// The file as the container sees it.
    #[serde(rename = "file.path")]
    pub path: String,
    /// write | truncate | delete | mkdir | rename | chmod | chown | link | symlink.
    #[serde(rename = "driftwatch.file.operation")]
    pub operation: &'static str,
    /// The kernel's buffer could not hold the path: it is its tail (the
    /// informative end; the head is cut).
    #[serde(rename = "driftwatch.file.path_truncated", skip_serializing_if = "is_false")]
    pub path_truncated: bool,
    /// `file.path` was not UTF-8: its text is escaped (`crate::escape`).
    #[serde(rename = "driftwatch.file.path_escaped", skip_serializing_if = "is_false")]
    pub path_escaped: bool,
    /// The new name (renames, links) or a symlink's target as given.
    #[serde(rename = "driftwatch.file.target_path", skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(rename = "driftwatch.file.target_path_truncated", skip_serializing_if = "is_false")]
    pub target_truncated: bool,
    #[serde(rename = "driftwatch.file.target_path_escaped", skip_serializing_if = "is_false")]
    pub target_escaped: bool,
    /// rootfs (the image's filesystem) | volume (emptyDir, hostPath, configMap, ...).
    #[serde(rename = "driftwatch.file.location")]
    pub location: &'static str,
    /// image (the file is in an image layer) | new (created in the container).
    #[serde(rename = "driftwatch.file.origin", skip_serializing_if = "Option::is_none")]
    pub origin: Option<&'static str>,
    /// The new mode, octal, for chmod.
    #[serde(rename = "driftwatch.file.mode", skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The new owner, `uid:gid` (`-` for unchanged), for chown.
    #[serde(rename = "driftwatch.file.owner", skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct NetworkFacts {
    /// The kernel does not follow lineage for network events: always false.
    #[serde(rename = "driftwatch.lineage.drifted_ancestor")]
    pub drifted_ancestor: bool,
    /// The endpoint: the remote one for outbound connections, the local one for listeners.
    #[serde(rename = "server.address")]
    pub address: String,
    #[serde(rename = "server.port")]
    pub port: u16,
    #[serde(rename = "network.transport")]
    pub transport: &'static str,
    #[serde(rename = "network.type")]
    pub network_type: &'static str,
    /// `outbound` (connect) or `listen` (listen, UDP bind).
    #[serde(rename = "driftwatch.network.direction")]
    pub direction: &'static str,
    /// The baseline the endpoint was judged against.
    #[serde(rename = "driftwatch.baseline.workload")]
    pub baseline_workload: String,
}

/// The facts of a config finding (`classify::config_drift`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ConfigFacts {
    /// The image as written in the pod spec (or as the runtime reports it, see `spec_source`).
    #[serde(rename = "driftwatch.image.spec", skip_serializing_if = "Option::is_none")]
    pub image_spec: Option<String>,
    /// `pod_spec` (from the Kubernetes API) | `runtime` (node-only: what the kubelet passed to the runtime).
    #[serde(rename = "driftwatch.image.spec_source", skip_serializing_if = "Option::is_none")]
    pub spec_source: Option<&'static str>,
    #[serde(rename = "driftwatch.image.pinned_digest", skip_serializing_if = "Option::is_none")]
    pub pinned_digest: Option<String>,
    /// The running digest that was compared.
    #[serde(rename = "driftwatch.image.running_digest", skip_serializing_if = "Option::is_none")]
    pub running_digest: Option<String>,
    /// `repo_digest` (manifest digest the runtime pulled) | `image_id` (config digest only).
    #[serde(rename = "driftwatch.image.running_digest_kind", skip_serializing_if = "Option::is_none")]
    pub running_digest_kind: Option<&'static str>,
    /// Size of the policy's approved list for this image.
    #[serde(rename = "driftwatch.image.approved_digests_count", skip_serializing_if = "Option::is_none")]
    pub approved_count: Option<usize>,
    #[serde(rename = "driftwatch.ephemeral.name", skip_serializing_if = "Option::is_none")]
    pub ephemeral_name: Option<String>,
    #[serde(rename = "driftwatch.ephemeral.image", skip_serializing_if = "Option::is_none")]
    pub ephemeral_image: Option<String>,
    /// `targetContainerName`: whose namespaces the ephemeral container shares.
    #[serde(rename = "driftwatch.ephemeral.target", skip_serializing_if = "Option::is_none")]
    pub ephemeral_target: Option<String>,
    /// What changed under a running container (issue 16).
    #[serde(flatten)]
    pub change: super::change_facts::ChangeFacts,
}

impl Finding {
    /// The pod facts to change: this finding's own copy when they are shared.
    pub fn k8s_mut(&mut self) -> &mut PodFacts {
        let shared = Arc::make_mut(&mut self.k8s);
        shared.json.take();
        &mut shared.facts
    }

    /// One JSON line (no trailing newline).
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(2048);
        if self.write_json(&mut out).is_err() {
            return String::new();
        }
        // Only UTF-8 was written: &str copied whole or cut at ASCII bytes.
        String::from_utf8(out).unwrap_or_default()
    }

    /// The exec facts, for exec findings.
    pub fn exec(&self) -> Option<&ExecFacts> {
        match &self.detail {
            Detail::Exec(e) => Some(e),
            _ => None,
        }
    }

    pub fn exec_mut(&mut self) -> Option<&mut ExecFacts> {
        match &mut self.detail {
            Detail::Exec(e) => Some(e),
            _ => None,
        }
    }

    /// The executable's path, or "" when the finding is not about an exec.
    pub fn exe_path(&self) -> &str {
        self.process.as_ref().map_or("", |p| p.exe_path.as_str())
    }

    /// The parent's name, or "".
    pub fn parent_name(&self) -> &str {
        self.process.as_ref().map_or("", |p| p.parent_name.as_str())
    }

    /// The command line, or nothing.
    pub fn command_args(&self) -> &[Text] {
        self.process.as_ref().map_or(&[], |p| p.command_args.as_slice())
    }

    /// Where the executed file lives, or "" when the finding is not about an exec.
    pub fn exe_source(&self) -> &'static str {
        self.exec().map_or("", |e| e.exe_source)
    }
}
