//! The finding keys of the issue-16 rules (`config_changes`), apart so the
//! finding can hold them without importing the judgements.

use serde::Serialize;
use std::collections::BTreeMap;

/// The facts of the issue-16 rules, flattened into the config facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ChangeFacts {
    /// The pod spec's volume name (the kubelet's volume directory name).
    #[serde(rename = "driftwatch.volume.name", skip_serializing_if = "Option::is_none")]
    pub volume_name: Option<String>,
    /// secret | configmap | projected | downward-api | unknown.
    #[serde(rename = "driftwatch.volume.kind", skip_serializing_if = "Option::is_none")]
    pub volume_kind: Option<&'static str>,
    /// The Secret/ConfigMap the volume shows (with the API), else the volume name.
    #[serde(rename = "driftwatch.volume.object", skip_serializing_if = "Option::is_none")]
    pub volume_object: Option<String>,
    /// Where the container sees it.
    #[serde(rename = "driftwatch.volume.mount_path", skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
    #[serde(rename = "driftwatch.volume.files_added", skip_serializing_if = "Option::is_none")]
    pub files_added: Option<Vec<String>>,
    #[serde(rename = "driftwatch.volume.files_removed", skip_serializing_if = "Option::is_none")]
    pub files_removed: Option<Vec<String>>,
    #[serde(rename = "driftwatch.volume.files_changed", skip_serializing_if = "Option::is_none")]
    pub files_changed: Option<Vec<String>>,
    /// file -> sha256 before the swap, for removed and changed files.
    #[serde(rename = "driftwatch.volume.sha256_before", skip_serializing_if = "Option::is_none")]
    pub sha256_before: Option<BTreeMap<String, String>>,
    /// file -> sha256 after the swap, for added and changed files.
    #[serde(rename = "driftwatch.volume.sha256_after", skip_serializing_if = "Option::is_none")]
    pub sha256_after: Option<BTreeMap<String, String>>,
    /// The volume holds more than was hashed (files or bytes over the bound).
    #[serde(rename = "driftwatch.volume.truncated", skip_serializing_if = "std::ops::Not::not")]
    pub volume_truncated: bool,
    /// Names of the runtime parameters that changed.
    #[serde(rename = "driftwatch.runtime.changed", skip_serializing_if = "Option::is_none")]
    pub runtime_changed: Option<Vec<&'static str>>,
    #[serde(rename = "driftwatch.runtime.before", skip_serializing_if = "Option::is_none")]
    pub runtime_before: Option<BTreeMap<&'static str, String>>,
    #[serde(rename = "driftwatch.runtime.after", skip_serializing_if = "Option::is_none")]
    pub runtime_after: Option<BTreeMap<&'static str, String>>,
}

/// Environment drift facts of an exec finding: names only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct EnvFacts {
    #[serde(rename = "driftwatch.env.added", skip_serializing_if = "Option::is_none")]
    pub added: Option<Vec<String>>,
    #[serde(rename = "driftwatch.env.changed", skip_serializing_if = "Option::is_none")]
    pub changed: Option<Vec<String>>,
}
