//! The agent's state on the node, in `rules.network.state_dir`: small JSON
//! files (network baselines, configuration findings already reported),
//! written atomically (temp file + rename: a crash never leaves half a file),
//! each with a version. A missing file is an empty state; an unreadable or
//! corrupt one is set aside as `<name>.corrupt`, reported, and replaced: the
//! agent keeps running.

use serde::{Serialize, de::DeserializeOwned};
use std::path::Path;

/// What a state file holds, for messages and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// In messages: "baseline".
    pub what: &'static str,
    /// `driftwatch_enrich_failures_total{reason}` of a corrupt file, and of an I/O error.
    pub corrupt: &'static str,
    pub io: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{} file {path}: {reason}; starting with an empty {} (the bad file is kept as {kept})", .kind.what, .kind.what)]
    Corrupt { kind: Kind, path: String, reason: String, kept: String },
    #[error("{} file {path}: {source}", .kind.what)]
    Io { kind: Kind, path: String, source: std::io::Error },
}

impl StateError {
    /// Bounded metric label (`driftwatch_enrich_failures_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Corrupt { kind, .. } => kind.corrupt,
            Self::Io { kind, .. } => kind.io,
        }
    }
}

/// Reads `path` (version `version`): `Ok(None)` when there is no file.
pub fn load<T: DeserializeOwned>(kind: Kind, path: &Path, version: u64) -> Result<Option<T>, StateError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Io { kind, path: path.display().to_string(), source }),
    };
    let parsed = serde_json::from_slice::<serde_json::Value>(&text)
        .map_err(|e| format!("not a {} file ({e})", kind.what))
        .and_then(|v| match v.get("version").and_then(|n| n.as_u64()) {
            Some(n) if n == version => {
                serde_json::from_value::<T>(v).map_err(|e| format!("not a {} file ({e})", kind.what))
            }
            Some(n) => Err(format!("unsupported version {n}")),
            None => Err(format!("not a {} file (no version)", kind.what)),
        });
    parsed.map(Some).map_err(|reason| {
        let kept = path.with_extension("json.corrupt");
        let _ = std::fs::rename(path, &kept);
        StateError::Corrupt { kind, path: path.display().to_string(), reason, kept: kept.display().to_string() }
    })
}

/// Writes `value` to `path` atomically, creating the directory.
pub fn save<T: Serialize>(kind: Kind, path: &Path, value: &T) -> Result<(), StateError> {
    let io = |source| StateError::Io { kind, path: path.display().to_string(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let text = serde_json::to_vec(value).unwrap_or_default();
    // Per-process temporary name: two agents sharing a state directory (a
    // surge during a rollout, tests) must not rename each other's half-file.
    let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
