//! `policy` as written in the config file: approvals (the Validate step,
//! automated) and modes per workload. Plain data; [`super::compile`] turns it
//! into matchers and says which field is wrong.

use serde::Deserialize;
use std::collections::BTreeMap;

/// What the agent does with a container's drift.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Build the baseline: findings are counted and learned, not emitted.
    Learn,
    /// Detect and report (findings go out).
    #[default]
    Monitor,
    /// Monitor, and stop binary drift in the kernel before it runs.
    Protect,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Learn, Mode::Monitor, Mode::Protect];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Learn => "learn",
            Self::Monitor => "monitor",
            Self::Protect => "protect",
        }
    }

    /// The annotation's value, as written (`driftwatch.io/mode: protect`).
    pub fn parse(s: &str) -> Option<Mode> {
        Self::ALL.into_iter().find(|m| m.as_str() == s.trim())
    }
}

/// The pod annotation that chooses a container's mode.
pub const MODE_ANNOTATION: &str = "driftwatch.io/mode";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySpec {
    /// Scoped approvals: a finding one of them matches is not drift.
    pub approvals: Vec<Approval>,
    /// Modes per workload, first match wins; the pod annotation
    /// `driftwatch.io/mode` comes before them.
    pub modes: Vec<ModeRule>,
    /// The mode of containers no annotation or `modes` entry chooses.
    pub default_mode: Mode,
    /// Approved findings go out too, with `driftwatch.approval` and severity info.
    pub emit_approved: bool,
    /// Exec probes, lifecycle hooks and init containers (from the pod spec)
    /// are approved by construction.
    pub approve_pod_spec: bool,
}

impl Default for PolicySpec {
    fn default() -> Self {
        Self {
            approvals: Vec::new(),
            modes: Vec::new(),
            default_mode: Mode::Monitor,
            emit_approved: false,
            approve_pod_spec: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Unique; a label of `driftwatch_findings_approved_total` and the value of `driftwatch.approval`.
    pub name: String,
    /// Every key optional, all given keys must match; at least one key.
    #[serde(rename = "match")]
    pub matches: Option<Match>,
    /// Why this is not drift: the audit trail.
    pub reason: String,
    /// `YYYY-MM-DD` (the end of that day, UTC) or RFC 3339; after it the approval no longer applies.
    pub expires: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModeRule {
    /// Container scope only: namespace, workload, workload_kind, pod_labels, container, image.
    #[serde(rename = "match")]
    pub matches: Match,
    pub mode: Mode,
}

/// The match grammar shared by approvals and modes. Values are globs:
/// `*` and `?` (in paths `*` stays within one directory, `**` crosses them).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Match {
    pub namespace: Option<String>,
    /// The owner workload's name (Deployment, StatefulSet, DaemonSet, Job, CronJob; a bare pod's own name).
    pub workload: Option<String>,
    pub workload_kind: Option<String>,
    /// Every listed label must be on the pod; values are globs.
    #[serde(default)]
    pub pod_labels: BTreeMap<String, String>,
    pub container: Option<String>,
    /// The image repository, normalised like `approved_digests` (`nginx` is
    /// `docker.io/library/nginx`); globs allowed.
    pub image: Option<String>,
    /// binary | file | package | shell | network | config
    pub kind: Option<String>,
    /// A rule name (`file_written`), or a glob over them (`exec_*`).
    pub rule: Option<String>,
    /// The process's executable path.
    pub executable: Option<String>,
    /// The parent process's executable path (or its name when the path is not known).
    pub parent_executable: Option<String>,
    /// A glob over the command line, arguments joined by single spaces.
    pub command_args: Option<String>,
    /// File findings: the file's path (or a rename's or link's new name).
    pub file_path: Option<String>,
    /// Network findings: `CIDR:port`, `CIDR`, `:port`, `IP:port`; IPv6 in brackets with a port (`[fd00::]/8:443`).
    pub endpoint: Option<String>,
}

impl Match {
    /// The keys that are given, by name (errors, "matches too little").
    pub fn given(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut add = |on: bool, k: &'static str| {
            if on {
                v.push(k)
            }
        };
        add(self.namespace.is_some(), "namespace");
        add(self.workload.is_some(), "workload");
        add(self.workload_kind.is_some(), "workload_kind");
        add(!self.pod_labels.is_empty(), "pod_labels");
        add(self.container.is_some(), "container");
        add(self.image.is_some(), "image");
        add(self.kind.is_some(), "kind");
        add(self.rule.is_some(), "rule");
        add(self.executable.is_some(), "executable");
        add(self.parent_executable.is_some(), "parent_executable");
        add(self.command_args.is_some(), "command_args");
        add(self.file_path.is_some(), "file_path");
        add(self.endpoint.is_some(), "endpoint");
        v
    }
}

/// Container-scope keys: the ones a mode rule may use.
pub const CONTAINER_KEYS: [&str; 6] = ["namespace", "workload", "workload_kind", "pod_labels", "container", "image"];

/// Every rule name the agent emits (checked against `classify::rules::ALL`
/// by a test: the config cannot import the classifier).
pub const RULE_NAMES: &[&str] = &[
    "exec_new_binary",
    "exec_new_script",
    "exec_fileless_memfd",
    "exec_fileless_deleted",
    "exec_from_tmpfs",
    "exec_from_volume",
    "exec_new_library",
    "exec_via_loader",
    "exec_by_drifted_process",
    "package_manager_exec",
    "shell_in_container",
    "terminal_shell_in_container",
    "file_written",
    "file_deleted",
    "file_directory_created",
    "file_renamed",
    "file_mode_changed",
    "file_owner_changed",
    "file_linked",
    "file_symlinked",
    "package_database_write",
    "network_new_listener",
    "network_new_destination",
    "image_mutable_tag",
    "image_digest_mismatch",
    "image_digest_not_approved",
    "ephemeral_container_added",
    "loader_injection_env",
    "environment_changed",
    "mounted_config_changed",
    "runtime_parameters_changed",
];

/// The kinds of findings.
pub const KINDS: [&str; 6] = ["binary", "file", "package", "shell", "network", "config"];
