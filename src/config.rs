//! Agent configuration: one typed struct, unknown keys rejected, defaults
//! embedded in the binary, errors that name the file, line and field.

use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, net::SocketAddr, path::Path};

/// The embedded default configuration (also the documented reference).
pub const DEFAULT_YAML: &str = include_str!("default-config.yaml");

/// Longest name the kernel keeps for a task (TASK_COMM_LEN - 1).
pub const COMM_MAX: usize = 15;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub metrics_addr: SocketAddr,
    pub sensor: Sensor,
    pub pipeline: Pipeline,
    pub rules: Rules,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Sensor {
    pub ringbuf_bytes: u32,
    pub drain_interval_ms: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    pub queue_capacity: usize,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Warning => "warning",
            Self::Info => "info",
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    pub binary: BinaryRule,
    pub shell: NamedRule,
    pub package: PackageRule,
    pub interpreters: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BinaryRule {
    pub enabled: bool,
    pub severity: Severity,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NamedRule {
    pub enabled: bool,
    pub severity: Severity,
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PackageRule {
    pub enabled: bool,
    pub severity: Severity,
    pub names: Vec<String>,
    #[serde(default)]
    pub subcommands: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {file}: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("config {file}: {location}{message}")]
    Parse { file: String, location: String, message: String },
    #[error("config {file}{location}: field `{field}`: {message}")]
    Invalid { file: String, location: String, field: String, message: String },
}

impl ConfigError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Read { .. } => "read",
            Self::Parse { .. } => "parse",
            Self::Invalid { .. } => "invalid",
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::from_yaml(DEFAULT_YAML, "<embedded default>").expect("embedded default config is valid")
    }
}

/// Deep-merges `over` into `base`: maps merge key by key, everything else is replaced.
fn merge(base: &mut serde_yaml_ng::Value, over: serde_yaml_ng::Value) {
    use serde_yaml_ng::Value;
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

impl Config {
    /// Loads a user file on top of the embedded defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        Self::from_yaml(&text, &file)
    }

    /// Parses `text` (named `file` in errors) on top of the embedded defaults.
    pub fn from_yaml(text: &str, file: &str) -> Result<Self, ConfigError> {
        let parse_err = |e: serde_yaml_ng::Error| {
            let location =
                e.location().map(|l| format!("line {}, column {}: ", l.line(), l.column())).unwrap_or_default();
            let message = e.to_string();
            // serde_yaml_ng appends " at line X column Y"; we print it up front.
            let message = match message.rfind(" at line ") {
                Some(i) if !location.is_empty() => message[..i].to_string(),
                _ => message,
            };
            ConfigError::Parse { file: file.to_string(), location, message }
        };
        let mut base: serde_yaml_ng::Value = serde_yaml_ng::from_str(DEFAULT_YAML).expect("embedded default is YAML");
        let user: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(parse_err)?;
        match &user {
            serde_yaml_ng::Value::Null => {}
            serde_yaml_ng::Value::Mapping(_) => {}
            _ => {
                return Err(ConfigError::Parse {
                    file: file.to_string(),
                    location: "line 1: ".into(),
                    message: "the top level must be a mapping of keys".into(),
                });
            }
        }
        // Unknown keys and type errors are reported against the user's text
        // (with its line numbers) before merging with the defaults.
        check_against_user_text(text, file)?;
        if !user.is_null() {
            merge(&mut base, user);
        }
        let cfg: Config = serde_yaml_ng::from_value(base).map_err(parse_err)?;
        cfg.validate(text, file)?;
        Ok(cfg)
    }

    fn validate(&self, text: &str, file: &str) -> Result<(), ConfigError> {
        let invalid = |field: &str, needle: &str, message: String| ConfigError::Invalid {
            file: file.to_string(),
            location: line_of(text, needle).map(|l| format!(" line {l}")).unwrap_or_default(),
            field: field.to_string(),
            message,
        };
        let rb = self.sensor.ringbuf_bytes;
        if !rb.is_power_of_two() || rb < 4096 {
            return Err(invalid(
                "sensor.ringbuf_bytes",
                "ringbuf_bytes",
                format!("{rb} must be a power of two and at least 4096"),
            ));
        }
        if !(1..=1000).contains(&self.sensor.drain_interval_ms) {
            return Err(invalid(
                "sensor.drain_interval_ms",
                "drain_interval_ms",
                format!("{} must be between 1 and 1000", self.sensor.drain_interval_ms),
            ));
        }
        if !(16..=1 << 20).contains(&self.pipeline.queue_capacity) {
            return Err(invalid(
                "pipeline.queue_capacity",
                "queue_capacity",
                format!("{} must be between 16 and 1048576", self.pipeline.queue_capacity),
            ));
        }
        let lists: [(&str, &Vec<String>); 3] = [
            ("rules.shell.names", &self.rules.shell.names),
            ("rules.package.names", &self.rules.package.names),
            ("rules.interpreters", &self.rules.interpreters),
        ];
        let sub_names: Vec<String> = self.rules.package.subcommands.keys().cloned().collect();
        for (field, names) in lists.into_iter().chain([("rules.package.subcommands", &sub_names)]) {
            for (i, n) in names.iter().enumerate() {
                if n.is_empty() || n.len() > COMM_MAX || n.contains('/') {
                    return Err(invalid(
                        &format!("{field}[{i}]"),
                        n,
                        format!(
                            "{n:?} must be a program name of 1 to {COMM_MAX} bytes without '/' (the kernel keeps {COMM_MAX})"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Deserializes the user's text alone into a mirror with every field optional,
/// so unknown keys and wrong types are reported with the user's line numbers.
fn check_against_user_text(text: &str, file: &str) -> Result<(), ConfigError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct P {
        metrics_addr: Option<SocketAddr>,
        sensor: Option<PS>,
        pipeline: Option<PP>,
        rules: Option<PR>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct PS {
        ringbuf_bytes: Option<u32>,
        drain_interval_ms: Option<u64>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct PP {
        queue_capacity: Option<usize>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct PR {
        binary: Option<PB>,
        shell: Option<PN>,
        package: Option<PK>,
        interpreters: Option<Vec<String>>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct PB {
        enabled: Option<bool>,
        severity: Option<Severity>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct PN {
        enabled: Option<bool>,
        severity: Option<Severity>,
        names: Option<Vec<String>>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct PK {
        enabled: Option<bool>,
        severity: Option<Severity>,
        names: Option<Vec<String>>,
        subcommands: Option<BTreeMap<String, Vec<String>>>,
    }
    if text.trim().is_empty() {
        return Ok(());
    }
    serde_yaml_ng::from_str::<Option<P>>(text).map(|_| ()).map_err(|e| {
        let location = e.location().map(|l| format!("line {}, column {}: ", l.line(), l.column())).unwrap_or_default();
        let message = e.to_string();
        let message = match message.rfind(" at line ") {
            Some(i) if !location.is_empty() => message[..i].to_string(),
            _ => message,
        };
        ConfigError::Parse { file: file.to_string(), location, message }
    })
}

/// 1-based line of the first occurrence of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        let c = Config::default();
        assert_eq!(c.metrics_addr.port(), 8789);
        assert!(c.rules.shell.names.iter().any(|n| n == "bash"));
        assert!(c.rules.package.names.iter().any(|n| n == "apt-get"));
        assert_eq!(c.rules.package.subcommands["go"], vec!["install", "get"]);
    }

    #[test]
    fn empty_file_is_defaults() {
        assert_eq!(Config::from_yaml("", "f.yaml").unwrap(), Config::default());
        assert_eq!(Config::from_yaml("# nothing\n", "f.yaml").unwrap(), Config::default());
    }

    #[test]
    fn partial_override_merges() {
        let c = Config::from_yaml("rules:\n  shell:\n    enabled: false\n", "f.yaml").unwrap();
        assert!(!c.rules.shell.enabled);
        assert!(!c.rules.shell.names.is_empty(), "names kept from defaults");
        assert!(c.rules.binary.enabled);
    }

    #[test]
    fn unknown_field_names_file_line_and_field() {
        let e = Config::from_yaml("sensor:\n  ringbuf_bytes: 8192\n  drain_intervall_ms: 5\n", "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("p.yaml"), "{e}");
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("drain_intervall_ms"), "{e}");
    }

    #[test]
    fn wrong_type_names_line() {
        let e = Config::from_yaml("rules:\n  binary:\n    severity: loud\n", "p.yaml").unwrap_err().to_string();
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("loud"), "{e}");
    }

    #[test]
    fn bad_address_and_syntax() {
        let e = Config::from_yaml("metrics_addr: nowhere\n", "p.yaml").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        let e = Config::from_yaml("rules: [\n", "p.yaml").unwrap_err().to_string();
        assert!(e.contains("p.yaml"), "{e}");
        let e = Config::from_yaml("- a\n- b\n", "p.yaml").unwrap_err().to_string();
        assert!(e.contains("mapping"), "{e}");
    }

    #[test]
    fn validation_names_field_and_line() {
        let e = Config::from_yaml("sensor:\n  ringbuf_bytes: 5000\n", "p.yaml").unwrap_err().to_string();
        assert!(e.contains("sensor.ringbuf_bytes") && e.contains("line 2"), "{e}");
        let e = Config::from_yaml("rules:\n  shell:\n    names: [sh, averyveryverylongshellname]\n", "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rules.shell.names[1]") && e.contains("line 3"), "{e}");
    }
}
