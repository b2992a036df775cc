//! Agent configuration: one typed struct, unknown keys rejected, defaults
//! embedded in the binary, errors that name the file, line and field.

use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, net::SocketAddr, path::Path};

mod exports;
mod locate;
mod outputs;
mod redaction;
mod response;

pub use exports::{AlertmanagerUrl, PostUrl, secret_file};
use locate::{At, Seg, humanize, locate, repeated};
pub use outputs::{Falcosidekick, Format as OutputFormat, Outputs};
pub use redaction::{BuiltinPatterns, Pattern as RedactionPattern, Redaction};
pub use response::{AdminAddr, AllowRule, Capture, Quarantine, Response, Retention, STEPS};

/// The embedded default configuration (also the documented reference).
pub const DEFAULT_YAML: &str = include_str!("default-config.yaml");

/// Bounds of `sensor.ringbuf_bytes`.
pub const RINGBUF_MIN: u32 = 256 << 10;
pub const RINGBUF_MAX: u32 = 256 << 20;

/// Longest name the kernel keeps for a task (TASK_COMM_LEN - 1).
pub const COMM_MAX: usize = 15;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub metrics_addr: SocketAddr,
    /// A second listener for `/healthz` and `/readyz` only (the kubelet's
    /// probes), with its own connection budget; `None`: the probes are served
    /// on `metrics_addr` only.
    pub health_addr: Option<SocketAddr>,
    /// The admin API (src/admin/): `unix:///path` or `host:port`; empty: off.
    #[serde(default)]
    pub admin_addr: String,
    /// Bearer token the admin API requires (mandatory on TCP).
    #[serde(default)]
    pub admin_token_file: String,
    pub sensor: Sensor,
    pub pipeline: Pipeline,
    pub rules: Rules,
    #[serde(default)]
    pub otlp: Otlp,
    #[serde(default)]
    pub alertmanager: Alertmanager,
    /// stdout's format and the falcosidekick push (src/config/outputs.rs).
    #[serde(default)]
    pub outputs: Outputs,
    /// The cluster's name (`k8s.cluster.name` of the OTLP resource); empty: not sent.
    #[serde(default)]
    pub cluster_name: String,
    pub runtime: Runtime,
    #[serde(default)]
    pub kubernetes: Kubernetes,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Secrets replaced in findings before any sink (src/redact.rs).
    #[serde(default)]
    pub redaction: Redaction,
    /// Approvals and modes (src/policy/); reloaded without a restart.
    #[serde(default)]
    pub policy: crate::policy::spec::PolicySpec,
    /// Evidence capture and node quarantine (src/respond/).
    #[serde(default)]
    pub response: Response,
}

/// Kubernetes API access (src/enrich/kube.rs): owner workloads, pod specs,
/// ephemeral containers. Without it the agent runs in node-only mode.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Kubernetes {
    /// `auto`: on when in-cluster (`KUBERNETES_SERVICE_HOST`) or a kubeconfig is found.
    pub enabled: KubeMode,
    /// Kubeconfig file; empty: in-cluster config, else `KUBECONFIG`, else `~/.kube/config`.
    pub kubeconfig: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KubeMode {
    #[default]
    Auto,
    On,
    Off,
}

impl<'de> Deserialize<'de> for KubeMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = KubeMode;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("auto, true or false")
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<KubeMode, E> {
                Ok(if b { KubeMode::On } else { KubeMode::Off })
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<KubeMode, E> {
                match s {
                    "auto" => Ok(KubeMode::Auto),
                    "true" => Ok(KubeMode::On),
                    "false" => Ok(KubeMode::Off),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(s), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Labels of the per-container series (`driftwatch_container_findings_total`,
/// `driftwatch_drifted_containers`, `driftwatch_container_writable_rootfs`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Any of [`METRIC_LABELS`]; `pod` is unbounded under churn, so off by default.
    pub labels: Vec<String>,
}

/// Label names `metrics.labels` accepts.
pub const METRIC_LABELS: [&str; 4] = ["namespace", "workload", "container", "pod"];

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { labels: vec!["namespace".into(), "workload".into(), "container".into()] }
    }
}

/// Container runtime (CRI) metadata: pod, namespace, container name, image.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    /// false: node-only mode without pod metadata.
    pub enabled: bool,
    /// CRI socket path (`unix://` prefix allowed); empty: auto-detect.
    pub endpoint: String,
    /// Longest a finding waits for metadata before going out incomplete.
    pub metadata_wait_ms: u64,
    /// Exited containers keep resolving this long.
    pub grace_s: u64,
    /// A runtime that has not answered this long makes the agent not ready
    /// (`/readyz`, check `runtime`); 0: never.
    #[serde(default = "default_unready_after_s")]
    pub unready_after_s: u64,
}

fn default_idle_drain_interval_ms() -> u64 {
    1000
}

fn default_unready_after_s() -> u64 {
    120
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Sensor {
    pub ringbuf_bytes: u32,
    pub drain_interval_ms: u64,
    /// An idle reader's backstop grows from `drain_interval_ms` (doubling at
    /// each look that reads no record that may be a finding) up to this: such
    /// a record wakes it anyway; what waits for the timer (`--emit-all-execs`'
    /// extras) waits up to this long (or for the ring buffer half full).
    #[serde(default = "default_idle_drain_interval_ms")]
    pub idle_drain_interval_ms: u64,
    /// Records other than drift wake the reader at most this often (in the
    /// kernel), and the reader looks again this long after a look that read
    /// records: the bound on a finding's wait; 0: only the drain timer.
    pub wake_interval_ms: u64,
    /// Network drift sensor (connect/listen/bind syscall tracepoints).
    pub network: bool,
    /// File drift sensor (one program on the exit tracepoints of the opens and
    /// of unlink, rename, chmod, chown, link, mkdir, ...: write opens and
    /// successful operations).
    pub files: bool,
    /// Executable-mapping sensor (mmap/mprotect syscall tracepoints): dropped
    /// libraries and programs mapped by the dynamic loader (issue 14).
    pub mappings: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Bound of each queue between stages: in events for the events queue
    /// (reader -> pipeline, drift first), in findings for the sinks'.
    pub queue_capacity: usize,
    /// Longest an orderly shutdown may take (flushing queues and sinks);
    /// what is still unwritten then is counted as dropped and the agent exits.
    #[serde(default = "default_shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u64,
    /// Findings waiting for stdout with nothing written this long make the
    /// agent not ready (`/readyz`, check `stdout`).
    #[serde(default = "default_sink_stall_timeout_ms")]
    pub sink_stall_timeout_ms: u64,
}

fn default_sink_stall_timeout_ms() -> u64 {
    30_000
}

fn default_shutdown_timeout_ms() -> u64 {
    10_000
}

/// OTLP log events (src/sink/otlp.rs). Off unless an endpoint is configured
/// here or in `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`.
/// Values set here take precedence over the `OTEL_*` environment variables.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Otlp {
    /// `null`: on when an endpoint is set (here or in the environment); `false`: off whatever the
    /// environment says; `true`: on (the protocol's default endpoint when none is set).
    pub enabled: Option<bool>,
    /// Collector base URL, like `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/logs` is appended for HTTP).
    pub endpoint: String,
    /// `grpc` or `http/protobuf`; `null`: `OTEL_EXPORTER_OTLP_LOGS_PROTOCOL`, `OTEL_EXPORTER_OTLP_PROTOCOL`, else grpc.
    pub protocol: Option<OtlpProtocol>,
    /// Extra request headers (merged with `OTEL_EXPORTER_OTLP_HEADERS`; these win).
    pub headers: BTreeMap<String, String>,
    /// Deadline of one export, retries included.
    pub timeout_ms: u64,
    /// Findings waiting for export; more are dropped and counted.
    pub max_queue_size: usize,
    /// Records per export request.
    pub max_batch_size: usize,
    /// A partial batch is exported after this long.
    pub batch_timeout_ms: u64,
    /// TLS of an `https://` endpoint (each key falls back to `OTEL_EXPORTER_OTLP_(LOGS_)CERTIFICATE`,
    /// `..._CLIENT_CERTIFICATE`, `..._CLIENT_KEY`).
    pub tls: Tls,
}

impl Default for Otlp {
    fn default() -> Self {
        Self {
            enabled: None,
            endpoint: String::new(),
            protocol: None,
            headers: BTreeMap::new(),
            timeout_ms: 5000,
            max_queue_size: 2048,
            max_batch_size: 512,
            batch_timeout_ms: 1000,
            tls: Tls::default(),
        }
    }
}

/// TLS of an outbound connection (`otlp.tls`, `alertmanager.tls`), used for `https://` URLs
/// (src/tls.rs). Every file is read and checked when the config is loaded.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// PEM CA bundle trusted *instead of* the system roots; empty: the system roots.
    pub ca_file: String,
    /// PEM client certificate (chain) presented when the server asks for one (mTLS); needs `key_file`.
    pub cert_file: String,
    /// PEM private key of `cert_file` (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// The name the server's certificate must carry (and SNI); empty: the URL's host.
    pub server_name: String,
}

impl Tls {
    /// Whether any key is set.
    pub fn is_set(&self) -> bool {
        !(self.ca_file.is_empty()
            && self.cert_file.is_empty()
            && self.key_file.is_empty()
            && self.server_name.is_empty())
    }

    /// The first key that is set (where an error about the whole section points).
    pub fn first_set(&self) -> Option<&'static str> {
        [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
            ("server_name", &self.server_name),
        ]
        .into_iter()
        .find(|(_, v)| !v.is_empty())
        .map(|(k, _)| k)
    }

    pub fn files(&self) -> crate::tls::Files<'_> {
        crate::tls::Files {
            ca_file: &self.ca_file,
            cert_file: &self.cert_file,
            key_file: &self.key_file,
            server_name: &self.server_name,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum OtlpProtocol {
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// Direct push to Alertmanager's v2 API (src/sink/alertmanager.rs). Off while neither `url`
/// nor `urls` is set.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Alertmanager {
    /// Base URL, e.g. `http://alertmanager.monitoring:9093` or `https://...`.
    pub url: String,
    /// Several Alertmanagers (an HA pair): every alert goes to each, each URL with its own
    /// queue, retries and counters. Either this or `url`.
    pub urls: Option<Vec<String>>,
    /// TLS of the `https://` URLs.
    pub tls: Tls,
    /// File holding a bearer token (`Authorization: Bearer ...`), read before every POST.
    pub bearer_token_file: String,
    /// `Authorization: Basic ...` from a username and a password file (read before every POST).
    pub basic_auth: BasicAuth,
    /// Extra request headers, e.g. `X-Scope-OrgID` (Mimir, Cortex). Not `Authorization`.
    pub headers: BTreeMap<String, String>,
    /// Deadline of one POST.
    pub timeout_ms: u64,
    /// Findings of one (alertname, container, rule) within this window become one alert update.
    pub group_window_ms: u64,
    /// `endsAt` = last finding + this; a group quiet for this long is forgotten.
    pub resolve_timeout_s: u64,
    /// Alert groups held (waiting for delivery or for more findings); beyond it findings are dropped and counted.
    pub queue_size: usize,
    /// Retries of a failed POST (exponential backoff) before its alerts are given up and counted.
    pub max_retries: u32,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// `runbook_url` = this + `/<alertname>.md`.
    pub runbook_base_url: String,
    /// `generatorURL` of every alert; empty: `http://<node name>:<metrics port>/metrics`.
    pub generator_url: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct BasicAuth {
    pub username: String,
    /// The password, in a file (never in the config).
    pub password_file: String,
}

impl Alertmanager {
    /// The configured URLs: `url`, or `urls` (empty: the push is off).
    pub fn targets(&self) -> Vec<&str> {
        match &self.urls {
            Some(u) => u.iter().map(String::as_str).collect(),
            None if self.url.is_empty() => Vec::new(),
            None => vec![self.url.as_str()],
        }
    }
}

impl Default for Alertmanager {
    fn default() -> Self {
        Self {
            url: String::new(),
            urls: None,
            tls: Tls::default(),
            bearer_token_file: String::new(),
            basic_auth: BasicAuth::default(),
            headers: BTreeMap::new(),
            timeout_ms: 5000,
            group_window_ms: 10_000,
            resolve_timeout_s: 300,
            queue_size: 1024,
            max_retries: 8,
            retry_initial_ms: 500,
            retry_max_ms: 30_000,
            runbook_base_url: "https://github.com/driftwatch/driftwatch/blob/main/docs/runbooks".into(),
            generator_url: String::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    #[default]
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
    pub network: NetworkRule,
    #[serde(default)]
    pub config: ConfigRule,
    pub file: FileRule,
}

/// File drift: writes, deletes, renames and mode changes in container
/// filesystems, outside scratch locations.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileRule {
    pub enabled: bool,
    pub severity: Severity,
    /// Path prefixes where changes are expected (scratch space): never drift.
    pub ignore_prefixes: Vec<String>,
    /// Package-manager state: a change there is package drift, whoever makes it.
    pub package_db_prefixes: Vec<String>,
    /// Path fragments that mark package state anywhere (site-packages, node_modules, ...).
    pub package_db_fragments: Vec<String>,
    /// File events per container per second, enforced in the kernel.
    pub events_per_sec: u32,
}

/// Configuration drift (`kind: config`, src/classify/config_drift.rs): judged
/// once per container. Severities are fixed per rule.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigRule {
    pub enabled: bool,
    /// `"<image name>": ["sha256:…", …]`: a container of that image running another digest is a finding.
    pub approved_digests: BTreeMap<String, Vec<String>>,
    /// `mounted_config_changed`: Secret/ConfigMap volumes swapped under a running pod.
    pub mounted_config: bool,
    /// Volumes watched node-wide at most (more: counted as volume_watch_limit).
    pub max_watched_volumes: usize,
    /// `runtime_parameters_changed`: resources or image changed (CRI status).
    pub runtime_parameters: bool,
    /// Seconds between two reads of the runtime's container status.
    pub refresh_interval_s: u64,
    /// `environment_changed`: variables an exec adds or changes against the entrypoint.
    pub environment: bool,
    /// Variable names never judged, besides the built-in volatile ones (PWD, SHLVL, ...).
    pub ignore_env: Vec<String>,
}

impl Default for ConfigRule {
    fn default() -> Self {
        Self {
            enabled: true,
            approved_digests: BTreeMap::new(),
            mounted_config: true,
            max_watched_volumes: 1024,
            runtime_parameters: true,
            refresh_interval_s: 10,
            environment: true,
            ignore_env: Vec::new(),
        }
    }
}

/// Network drift: listeners and outbound connections not in the workload's
/// learned baseline (nor allowed here).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkRule {
    pub enabled: bool,
    pub severity: Severity,
    /// Seconds after a workload is first seen during which its endpoints are
    /// learned as expected; 0 disables learning.
    pub learning_window_s: u64,
    /// Loopback endpoints (sidecars, local health checks) are not drift.
    pub ignore_loopback: bool,
    /// Ports that are never drift, in either direction (e.g. DNS).
    pub allowed_ports: Vec<u16>,
    pub max_endpoints_per_workload: usize,
    pub max_workloads: usize,
    /// Where baselines persist across restarts; empty: memory only.
    pub state_dir: String,
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

/// Removes the environment variables whose name starts with `prefix` and
/// whose value is empty: what an unset Helm value renders means "unset", not
/// an empty path or address. Call first thing in `main`, before any thread.
pub fn forget_empty_env(prefix: &str) {
    let empty: Vec<std::ffi::OsString> = std::env::vars_os()
        .filter(|(k, v)| {
            k.to_str().is_some_and(|k| k.starts_with(prefix)) && v.to_str().is_some_and(|v| v.trim().is_empty())
        })
        .map(|(k, _)| k)
        .collect();
    for k in empty {
        // SAFETY: called at the top of main, before the process starts any thread.
        unsafe { std::env::remove_var(k) };
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

/// `path!["rules", "shell", "names", 1]`: a `[Seg; N]` from keys and indices.
macro_rules! path {
    ($($s:expr),+ $(,)?) => { [$(Seg::from($s)),+] };
}

/// Whether loading a config reads the files it names (CA bundles, client
/// certificates and keys, token and password files) to check them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileChecks {
    /// Read and check them: what the agent does at startup.
    Read,
    /// Leave them alone: for checking a config away from the node it runs on
    /// (`driftwatch check-config --no-file-checks`, e.g. a rendered Helm chart).
    Skip,
}

impl FileChecks {
    /// `Skip` when `skip`, else `Read`.
    pub fn skip_if(skip: bool) -> FileChecks {
        if skip { FileChecks::Skip } else { FileChecks::Read }
    }
}

impl Config {
    /// Loads a user file on top of the embedded defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(path, FileChecks::Read)
    }

    /// [`Config::load`], reading the files the config names or not.
    pub fn load_with(path: &Path, files: FileChecks) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        Self::from_yaml_with(&text, &file, files)
    }

    /// Parses `text` (named `file` in errors) on top of the embedded defaults.
    pub fn from_yaml(text: &str, file: &str) -> Result<Self, ConfigError> {
        Self::from_yaml_with(text, file, FileChecks::Read)
    }

    /// [`Config::from_yaml`], reading the files the config names or not.
    pub fn from_yaml_with(text: &str, file: &str, files: FileChecks) -> Result<Self, ConfigError> {
        let parse_err = |e: serde_yaml_ng::Error| {
            let location = e
                .location()
                .map(|l| (l.line(), l.column()))
                .or_else(|| locate::second_document(text))
                .map(|(l, c)| format!("line {l}, column {c}: "))
                .unwrap_or_default();
            let message = e.to_string();
            // serde_yaml_ng appends " at line X column Y"; we print it up front.
            let message = match message.rfind(" at line ") {
                Some(i) if !location.is_empty() => message[..i].to_string(),
                _ => message,
            };
            ConfigError::Parse { file: file.to_string(), location, message: humanize(&message) }
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
        if !user.is_null() {
            merge(&mut base, user);
        }
        // The merged value has no positions: the error's path is looked up in the user's text.
        let cfg: Config = serde_path_to_error::deserialize(base).map_err(|e| {
            let path = Seg::path_of(e.path());
            let message = humanize(&e.inner().to_string());
            // serde_path_to_error's path for an unknown field ends with that key (the
            // field visitor fails after the key is captured): point at the key itself.
            let at = if message.starts_with("unknown field `") { At::Key } else { At::Value };
            let location = locate(text, &path, at).map(|(l, c)| format!("line {l}, column {c}: ")).unwrap_or_default();
            // Named like serde_yaml_ng named it ("sensor: ..."), now down to the key; "." is the root.
            let message = match e.path().to_string() {
                root if root == "." => message,
                field => format!("{field}: {message}"),
            };
            ConfigError::Parse { file: file.to_string(), location, message }
        })?;
        cfg.validate(text, file, files)?;
        Ok(cfg)
    }

    fn validate(&self, text: &str, file: &str, files: FileChecks) -> Result<(), ConfigError> {
        let error = |path: &[Seg], at: At, message: String| ConfigError::Invalid {
            file: file.to_string(),
            location: locate(text, path, at).map(|(l, _)| format!(" line {l}")).unwrap_or_default(),
            field: Seg::dotted(path),
            message,
        };
        let invalid = |path: &[Seg], message: String| error(path, At::Value, message);
        // For map keys that are themselves the bad value (program and image names).
        let invalid_key = |path: &[Seg], message: String| error(path, At::Key, message);
        let item = |keys: &[&str], i: usize| -> Vec<Seg> {
            keys.iter().map(|k| Seg::from(*k)).chain([Seg::Index(i)]).collect()
        };
        if let Some(h) = self.health_addr {
            let m = self.metrics_addr;
            let overlap = h.ip() == m.ip() || h.ip().is_unspecified() || m.ip().is_unspecified();
            if h.port() != 0 && h.port() == m.port() && overlap {
                return Err(invalid(
                    &path!["health_addr"],
                    format!("{h} must not share metrics_addr's port ({m}): the probes get a listener of their own"),
                ));
            }
        }
        if !self.runtime.endpoint.is_empty()
            && let Err(e) = crate::enrich::cri::parse_endpoint(&self.runtime.endpoint)
        {
            return Err(invalid(&path!["runtime", "endpoint"], e));
        }
        if self.runtime.metadata_wait_ms > 60_000 {
            return Err(invalid(
                &path!["runtime", "metadata_wait_ms"],
                format!("{} must be at most 60000", self.runtime.metadata_wait_ms),
            ));
        }
        // An exec record is about 2 KiB: below 256 KiB a burst of execs
        // overflows before the reader's next drain; above 256 MiB is kernel
        // memory no agent needs.
        let rb = self.sensor.ringbuf_bytes;
        if !rb.is_power_of_two() || !(RINGBUF_MIN..=RINGBUF_MAX).contains(&rb) {
            return Err(invalid(
                &path!["sensor", "ringbuf_bytes"],
                format!(
                    "{rb} must be a power of two from {RINGBUF_MIN} (256 KiB, about 130 exec records) to {RINGBUF_MAX} (256 MiB); the default, 4194304, holds about 2,000"
                ),
            ));
        }
        if !(1..=1000).contains(&self.sensor.drain_interval_ms) {
            return Err(invalid(
                &path!["sensor", "drain_interval_ms"],
                format!("{} must be between 1 and 1000", self.sensor.drain_interval_ms),
            ));
        }
        let (drain, idle) = (self.sensor.drain_interval_ms, self.sensor.idle_drain_interval_ms);
        if !(drain..=1000).contains(&idle) {
            return Err(invalid(
                &path!["sensor", "idle_drain_interval_ms"],
                format!("{idle} must be between sensor.drain_interval_ms ({drain}) and 1000"),
            ));
        }
        if self.sensor.wake_interval_ms > 1000 {
            return Err(invalid(
                &path!["sensor", "wake_interval_ms"],
                format!("{} must be between 0 and 1000", self.sensor.wake_interval_ms),
            ));
        }
        if !(1..=100_000).contains(&self.rules.file.events_per_sec) {
            return Err(invalid(
                &path!["rules", "file", "events_per_sec"],
                format!("{} must be between 1 and 100000", self.rules.file.events_per_sec),
            ));
        }
        for (keys, list) in [
            (["rules", "file", "ignore_prefixes"], &self.rules.file.ignore_prefixes),
            (["rules", "file", "package_db_prefixes"], &self.rules.file.package_db_prefixes),
        ] {
            if let Some((i, p)) = list.iter().enumerate().find(|(_, p)| !p.starts_with('/')) {
                return Err(invalid(&item(&keys, i), format!("{p:?} must be an absolute path prefix")));
            }
        }
        if !(16..=1 << 20).contains(&self.pipeline.queue_capacity) {
            return Err(invalid(
                &path!["pipeline", "queue_capacity"],
                format!("{} must be between 16 and 1048576", self.pipeline.queue_capacity),
            ));
        }
        if !(100..=3_600_000).contains(&self.pipeline.sink_stall_timeout_ms) {
            return Err(invalid(
                &path!["pipeline", "sink_stall_timeout_ms"],
                format!("{} must be between 100 and 3600000", self.pipeline.sink_stall_timeout_ms),
            ));
        }
        if !(100..=600_000).contains(&self.pipeline.shutdown_timeout_ms) {
            return Err(invalid(
                &path!["pipeline", "shutdown_timeout_ms"],
                format!(
                    "{} must be between 100 and 600000 (and below the pod's terminationGracePeriodSeconds)",
                    self.pipeline.shutdown_timeout_ms
                ),
            ));
        }
        exports::validate(self, &error, files)?;
        outputs::validate(self, &error, files)?;
        redaction::validate(self, &error)?;
        response::validate(self, &error, files)?;
        if let Err(e) = crate::policy::compile::compile(&self.policy) {
            let path: Vec<Seg> = [Seg::from("policy")]
                .into_iter()
                .chain(e.path.iter().map(|p| match p {
                    crate::policy::compile::PathSeg::Key(k) => Seg::from(k.as_str()),
                    crate::policy::compile::PathSeg::Index(i) => Seg::Index(*i),
                }))
                .collect();
            return Err(invalid(&path, e.message));
        }
        let program_name = |n: &str| {
            (n.is_empty() || n.len() > COMM_MAX || n.contains('/')).then(|| {
                format!(
                    "{n:?} must be a program name of 1 to {COMM_MAX} bytes without '/' (the kernel keeps {COMM_MAX})"
                )
            })
        };
        let lists: [(&[&str], &Vec<String>); 3] = [
            (&["rules", "shell", "names"], &self.rules.shell.names),
            (&["rules", "package", "names"], &self.rules.package.names),
            (&["rules", "interpreters"], &self.rules.interpreters),
        ];
        for (keys, names) in lists {
            for (i, n) in names.iter().enumerate() {
                if let Some(msg) = program_name(n) {
                    return Err(invalid(&item(keys, i), msg));
                }
            }
        }
        // A repeated entry is a mistake (a merge gone wrong, a copy-paste): say where.
        let text_lists: [(&[&str], &Vec<String>); 6] = [
            (&["rules", "shell", "names"], &self.rules.shell.names),
            (&["rules", "package", "names"], &self.rules.package.names),
            (&["rules", "interpreters"], &self.rules.interpreters),
            (&["rules", "file", "ignore_prefixes"], &self.rules.file.ignore_prefixes),
            (&["rules", "file", "package_db_prefixes"], &self.rules.file.package_db_prefixes),
            (&["rules", "file", "package_db_fragments"], &self.rules.file.package_db_fragments),
        ];
        for (keys, list) in text_lists {
            if let Some(i) = repeated(list) {
                return Err(invalid(&item(keys, i), format!("{:?} is listed twice", list[i])));
            }
        }
        if let Some(i) = repeated(&self.rules.network.allowed_ports) {
            let port = self.rules.network.allowed_ports[i];
            return Err(invalid(&item(&["rules", "network", "allowed_ports"], i), format!("{port} is listed twice")));
        }
        for (n, subs) in &self.rules.package.subcommands {
            if let Some(i) = repeated(subs) {
                let field = path!["rules", "package", "subcommands", n.as_str(), i];
                return Err(invalid(&field, format!("{:?} is listed twice", subs[i])));
            }
        }
        for n in self.rules.package.subcommands.keys() {
            if let Some(msg) = program_name(n) {
                return Err(invalid_key(&path!["rules", "package", "subcommands", n.as_str()], msg));
            }
        }
        let mut seen = Vec::new();
        for (i, l) in self.metrics.labels.iter().enumerate() {
            let field = path!["metrics", "labels", i];
            if !METRIC_LABELS.contains(&l.as_str()) {
                let msg =
                    format!("{l:?} is not a label of the per-container series (one of {})", METRIC_LABELS.join(", "));
                return Err(invalid(&field, msg));
            }
            if seen.contains(&l) {
                return Err(invalid(&field, format!("{l:?} is listed twice")));
            }
            seen.push(l);
        }
        for (image, digests) in &self.rules.config.approved_digests {
            let field = path!["rules", "config", "approved_digests", image.as_str()];
            match crate::enrich::image::ImageRef::parse(image) {
                Ok(r) if r.tags() == ["latest"] && !image.ends_with(":latest") => {}
                Ok(_) => {
                    let msg = format!(
                        "{image:?} must be an image name without tag or digest (e.g. docker.io/library/busybox)"
                    );
                    return Err(invalid_key(&field, msg));
                }
                Err(e) => return Err(invalid_key(&field, format!("{image:?} is not an image name: {e}"))),
            }
            for (i, d) in digests.iter().enumerate() {
                if let Err(e) = crate::enrich::image::parse_digest(d) {
                    let field = path!["rules", "config", "approved_digests", image.as_str(), i];
                    return Err(invalid(&field, format!("{d:?}: {e}")));
                }
            }
            if let Some(i) = repeated(digests) {
                let field = path!["rules", "config", "approved_digests", image.as_str(), i];
                return Err(invalid(&field, format!("{:?} is listed twice", digests[i])));
            }
        }
        Ok(())
    }
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
    fn bounds_duplicates_and_plain_words() {
        let err = |y: &str| Config::from_yaml(y, "p.yaml").unwrap_err().to_string();
        for rb in ["4096", "2147483648", "300000"] {
            let e = err(&format!("sensor:\n  ringbuf_bytes: {rb}\n"));
            assert!(e.contains("sensor.ringbuf_bytes") && e.contains("line 2") && e.contains("256 KiB"), "{e}");
        }
        assert!(Config::from_yaml("sensor:\n  ringbuf_bytes: 262144\n", "p.yaml").is_ok());
        let e = err("rules:\n  shell:\n    names: [sh, bash, sh]\n");
        assert!(e.contains("rules.shell.names[2]") && e.contains("listed twice") && e.contains("line 3"), "{e}");
        let e = err("rules:\n  network:\n    allowed_ports:\n      - 53\n      - 53\n");
        assert!(e.contains("rules.network.allowed_ports[1]") && e.contains("line 5"), "{e}");
        let e = err("rules:\n  file:\n    ignore_prefixes: [/tmp, /tmp]\n");
        assert!(e.contains("rules.file.ignore_prefixes[1]") && e.contains("line 3"), "{e}");
        let e = err("rules:\n  file:\n    ignore_prefixes: [tmp]\n");
        assert!(e.contains("rules.file.ignore_prefixes[0]") && e.contains("line 3"), "{e}");
        let d = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        let e = err(&format!("rules:\n  config:\n    approved_digests:\n      busybox: [{d}, {d}]\n"));
        assert!(e.contains("approved_digests.busybox[1]") && e.contains("listed twice"), "{e}");
        // No Rust type names in messages.
        for (y, want) in [
            ("sensor: 5\n", "expected a mapping of keys"),
            ("rules:\n  binary:\n    enabled: 3\n", "expected true or false"),
            ("rules:\n  network:\n    allowed_ports: [70000]\n", "from 0 to 65535"),
            ("sensor:\n  ringbuf_bytes: 99999999999999999999\n", "too large"),
        ] {
            let e = err(y);
            assert!(e.contains(want), "{y}: {e}");
            for rust in ["struct", "u16", "u32", "u64", "u128", "usize", "Sensor", "BinaryRule"] {
                assert!(!e.contains(rust), "{y}: {e}");
            }
        }
    }

    #[test]
    fn validation_names_field_and_line() {
        let e = Config::from_yaml("pipeline:\n  shutdown_timeout_ms: 5\n", "p.yaml").unwrap_err().to_string();
        assert!(e.contains("pipeline.shutdown_timeout_ms") && e.contains("line 2"), "{e}");
        let e = Config::from_yaml("sensor:\n  ringbuf_bytes: 5000\n", "p.yaml").unwrap_err().to_string();
        assert!(e.contains("sensor.ringbuf_bytes") && e.contains("line 2"), "{e}");
        let e = Config::from_yaml("rules:\n  shell:\n    names: [sh, averyveryverylongshellname]\n", "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rules.shell.names[1]") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn health_addr_is_off_by_default_and_must_not_take_the_metrics_port() {
        assert_eq!(Config::default().health_addr, None);
        let c = Config::from_yaml("health_addr: \"0.0.0.0:8790\"\n", "f.yaml").unwrap();
        assert_eq!(c.health_addr, Some("0.0.0.0:8790".parse().unwrap()));
        assert_eq!(c.metrics_addr.port(), 8789, "metrics_addr kept");
        let c = Config::from_yaml("health_addr: ~\n", "f.yaml").unwrap();
        assert_eq!(c.health_addr, None);
        let e = err("metrics_addr: \"127.0.0.1:9000\"\n\nhealth_addr: \"0.0.0.0:9000\"\n");
        assert!(e.starts_with("config p.yaml line 3: field `health_addr`: 0.0.0.0:9000 must not share"), "{e}");
        let e = err("health_addr: \"0.0.0.0:8789\"\n");
        assert!(e.starts_with("config p.yaml line 1: field `health_addr`: "), "{e}");
        let e = err("health_addr: 8790\n");
        assert!(e.starts_with("config p.yaml: line 1, column 14: health_addr: "), "{e}");
        // Another address, or port 0 (any free port), is fine.
        Config::from_yaml("metrics_addr: \"127.0.0.1:9000\"\nhealth_addr: \"127.0.0.2:9000\"\n", "f.yaml").unwrap();
        Config::from_yaml("metrics_addr: \"127.0.0.1:0\"\nhealth_addr: \"127.0.0.1:0\"\n", "f.yaml").unwrap();
    }

    #[test]
    fn otlp_and_alertmanager_default_off() {
        let c = Config::default();
        assert_eq!(c.otlp.enabled, None);
        assert!(c.otlp.endpoint.is_empty());
        assert!(c.alertmanager.url.is_empty());
        let c = Config::from_yaml(
            "otlp:\n  endpoint: http://127.0.0.1:4318\n  protocol: http/protobuf\n  headers: {x-token: abc}\n\
             alertmanager:\n  url: http://127.0.0.1:9093\n  group_window_ms: 200\n",
            "f.yaml",
        )
        .unwrap();
        assert_eq!(c.otlp.protocol, Some(OtlpProtocol::HttpProtobuf));
        assert_eq!(c.otlp.headers["x-token"], "abc");
        assert_eq!(c.otlp.max_queue_size, 2048, "defaults kept");
        assert_eq!(c.alertmanager.group_window_ms, 200);
        assert_eq!(c.alertmanager.resolve_timeout_s, 300);
    }

    #[test]
    fn otlp_and_alertmanager_errors_name_file_line_field() {
        let e = Config::from_yaml("otlp:\n  endpoint: http://x:4317\n  protocol: thrift\n", "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("p.yaml") && e.contains("line 3") && e.contains("thrift"), "{e}");
        let e =
            Config::from_yaml("alertmanager:\n  url: http://x\n  queue_sise: 5\n", "p.yaml").unwrap_err().to_string();
        assert!(e.contains("p.yaml") && e.contains("line 3") && e.contains("queue_sise"), "{e}");
        let e = Config::from_yaml("otlp:\n  max_queue_size: 0\n", "p.yaml").unwrap_err().to_string();
        assert!(e.contains("otlp.max_queue_size") && e.contains("line 2"), "{e}");
        let e = Config::from_yaml("otlp:\n  endpoint: collector:4317\n", "p.yaml").unwrap_err().to_string();
        assert!(e.contains("otlp.endpoint") && e.contains("line 2"), "{e}");
        let e = Config::from_yaml("alertmanager:\n  url: am:9093\n", "p.yaml").unwrap_err().to_string();
        assert!(e.contains("alertmanager.url") && e.contains("line 2"), "{e}");
        let e = Config::from_yaml("alertmanager:\n  url: http://am:9093\n  group_window_ms: 0\n", "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("alertmanager.group_window_ms") && e.contains("line 3"), "{e}");
        let e = Config::from_yaml("alertmanager:\n  timeout_ms: soon\n", "p.yaml").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("soon"), "{e}");
    }

    #[test]
    fn tls_auth_and_several_alertmanagers_parse() {
        let c = Config::default();
        assert_eq!(c.otlp.tls, Tls::default());
        assert_eq!(c.alertmanager.urls, None);
        assert!(c.alertmanager.targets().is_empty());
        let text = "otlp:\n  endpoint: https://collector:4317\n  tls: {ca_file: /etc/dw/ca.pem, server_name: collector.obs}\n\
                    alertmanager:\n  urls: [https://am-0:9093, https://am-1:9093/prefix]\n  tls:\n    ca_file: /etc/dw/am-ca.pem\n\
                    \x20   cert_file: /etc/dw/tls.crt\n    key_file: /etc/dw/tls.key\n\
                    \x20 basic_auth: {username: dw, password_file: /etc/dw/pw}\n  headers: {X-Scope-OrgID: tenant-1}\n";
        // The files do not exist here: parsed without reading them.
        let c = Config::from_yaml_with(text, "f.yaml", FileChecks::Skip).unwrap();
        assert_eq!(c.otlp.tls.server_name, "collector.obs");
        assert_eq!(c.alertmanager.targets(), ["https://am-0:9093", "https://am-1:9093/prefix"]);
        assert_eq!(c.alertmanager.tls.key_file, "/etc/dw/tls.key");
        assert_eq!(c.alertmanager.basic_auth.username, "dw");
        assert_eq!(c.alertmanager.headers["X-Scope-OrgID"], "tenant-1");
        // Read, they are errors.
        let e = Config::from_yaml(text, "f.yaml").unwrap_err().to_string();
        assert!(e.starts_with("config f.yaml line 3: field `otlp.tls.ca_file`: cannot read \"/etc/dw/ca.pem\""), "{e}");
        let c = Config::from_yaml("alertmanager:\n  url: http://am:9093\n", "f.yaml").unwrap();
        assert_eq!(c.alertmanager.targets(), ["http://am:9093"]);
    }

    /// A temporary file holding `text`, removed on drop.
    struct TempFile(std::path::PathBuf);
    impl TempFile {
        fn new(name: &str, text: &str) -> TempFile {
            let p = std::env::temp_dir().join(format!("driftwatch-config-{}-{name}", std::process::id()));
            std::fs::write(&p, text).unwrap();
            TempFile(p)
        }
        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn alertmanager_urls_errors_name_file_line_field() {
        let e = err("alertmanager:\n  url: http://a:9093\n  urls: [http://b:9093]\n");
        assert!(
            e.starts_with("config p.yaml line 3: field `alertmanager.urls`: set either url or urls, not both"),
            "{e}"
        );
        let e = err("alertmanager:\n  urls: []\n");
        assert!(e.starts_with("config p.yaml line 2: field `alertmanager.urls`: must list at least one"), "{e}");
        let e = err("alertmanager:\n  urls:\n    - https://a:9093\n    - ftp://b:9093\n");
        assert!(
            e.starts_with("config p.yaml line 4: field `alertmanager.urls[1]`: \"ftp://b:9093\" must be an http"),
            "{e}"
        );
        let e = err("alertmanager:\n  urls:\n    - http://a:9093\n    - http://a:9093/\n");
        assert!(e.starts_with("config p.yaml line 4: field `alertmanager.urls[1]`: "), "{e}");
        assert!(e.contains("same Alertmanager (a:9093) as urls[0]"), "{e}");
        let e = err("alertmanager:\n  url: http://user:secret@am:9093\n");
        assert!(e.starts_with("config p.yaml line 2: field `alertmanager.url`: ") && e.contains("basic_auth"), "{e}");
        assert!(!e.contains("secret"), "the password is not echoed: {e}");
    }

    #[test]
    fn tls_and_auth_errors_name_file_line_field() {
        // An https URL with a CA file that cannot be read.
        let e = err("alertmanager:\n  url: https://am:9093\n  tls:\n    ca_file: /nonexistent/ca.pem\n");
        assert!(
            e.starts_with(
                "config p.yaml line 4: field `alertmanager.tls.ca_file`: cannot read \"/nonexistent/ca.pem\""
            ),
            "{e}"
        );
        // A CA file that is not PEM.
        let junk = TempFile::new("junk.pem", "not a certificate\n");
        let e = err(&format!("otlp:\n  endpoint: https://c:4317\n  tls:\n    ca_file: {}\n", junk.path()));
        assert!(
            e.starts_with("config p.yaml line 4: field `otlp.tls.ca_file`: ") && e.contains("no PEM certificate"),
            "{e}"
        );
        // A client certificate without its key, and the other way round.
        let e = err("alertmanager:\n  url: https://am:9093\n  tls:\n    cert_file: /etc/dw/tls.crt\n");
        assert!(
            e.starts_with("config p.yaml line 4: field `alertmanager.tls.cert_file`: ") && e.contains("key_file"),
            "{e}"
        );
        let e = err("otlp:\n  endpoint: https://c:4317\n  tls: {key_file: /etc/dw/tls.key}\n");
        assert!(e.starts_with("config p.yaml line 3: field `otlp.tls.key_file`: ") && e.contains("cert_file"), "{e}");
        // TLS settings for plain endpoints.
        let e = err("otlp:\n  endpoint: http://c:4317\n  tls:\n    ca_file: /etc/dw/ca.pem\n");
        assert!(e.starts_with("config p.yaml line 4: field `otlp.tls.ca_file`: TLS settings need an https://"), "{e}");
        let e = err("alertmanager:\n  urls: [http://a:9093, http://b:9093]\n  tls:\n    server_name: am\n");
        assert!(e.starts_with("config p.yaml line 4: field `alertmanager.tls.server_name`: TLS settings need"), "{e}");
        let e = err("alertmanager:\n  url: https://am:9093\n  tls:\n    server_name: \"a b\"\n");
        assert!(e.starts_with("config p.yaml line 4: field `alertmanager.tls.server_name`: "), "{e}");
        // A token file that does not exist; an empty one.
        let e = err("alertmanager:\n  url: https://am:9093\n  bearer_token_file: /nonexistent/token\n");
        assert!(
            e.starts_with("config p.yaml line 3: field `alertmanager.bearer_token_file`: cannot read the token file \"/nonexistent/token\""),
            "{e}"
        );
        let empty = TempFile::new("empty-token", "\n");
        let e = err(&format!("alertmanager:\n  url: https://am:9093\n  bearer_token_file: {}\n", empty.path()));
        assert!(
            e.starts_with("config p.yaml line 3: field `alertmanager.bearer_token_file`: ") && e.contains("is empty"),
            "{e}"
        );
        let token = TempFile::new("token", "s3cr3t\n");
        let c = Config::from_yaml(
            &format!("alertmanager:\n  url: https://am:9093\n  bearer_token_file: {}\n", token.path()),
            "p.yaml",
        );
        assert!(c.is_ok(), "{c:?}");
        // Basic auth: a password file, never both schemes, no Authorization header.
        let e = err("alertmanager:\n  url: https://am:9093\n  basic_auth:\n    username: dw\n");
        assert!(
            e.starts_with(
                "config p.yaml line 4: field `alertmanager.basic_auth.username`: basic_auth needs password_file"
            ),
            "{e}"
        );
        let e = err("alertmanager:\n  url: https://am:9093\n  basic_auth:\n    password_file: /missing/pw\n");
        assert!(e.starts_with("config p.yaml line 4: field `alertmanager.basic_auth.password_file`: "), "{e}");
        let e = err(
            "alertmanager:\n  url: https://am:9093\n  bearer_token_file: /t\n  basic_auth: {username: u, password_file: /p}\n",
        );
        assert!(e.starts_with("config p.yaml line 3: field `alertmanager.bearer_token_file`: set either"), "{e}");
        let e = err("alertmanager:\n  url: https://am:9093\n  basic_auth: {username: u, password_file: /missing/pw}\n");
        assert!(
            e.starts_with("config p.yaml line 3: field `alertmanager.basic_auth.password_file`: cannot read"),
            "{e}"
        );
        let e = err(
            "alertmanager:\n  url: https://am:9093\n  headers:\n    X-Scope-OrgID: t1\n    Authorization: Bearer x\n",
        );
        assert!(e.starts_with("config p.yaml line 5: field `alertmanager.headers.Authorization`: "), "{e}");
        assert!(e.contains("bearer_token_file") && !e.contains("Bearer x"), "the secret is not echoed: {e}");
        let e = err("alertmanager:\n  url: https://am:9093\n  headers: {\"bad name\": x}\n");
        assert!(e.starts_with("config p.yaml line 3: field `alertmanager.headers.bad name`: "), "{e}");
        // Skipping the file checks (check-config away from the node) keeps the others.
        let skip = |t: &str| Config::from_yaml_with(t, "p.yaml", FileChecks::Skip).map_err(|e| e.to_string());
        assert!(skip("alertmanager:\n  url: https://am:9093\n  bearer_token_file: /nonexistent/token\n").is_ok());
        let e = skip("alertmanager:\n  url: https://am:9093\n  tls: {cert_file: /c}\n").unwrap_err();
        assert!(e.contains("alertmanager.tls.cert_file"), "{e}");
    }

    #[test]
    fn kubernetes_metrics_and_config_rule_sections() {
        let c = Config::default();
        assert_eq!(c.kubernetes.enabled, KubeMode::Auto);
        assert_eq!(c.metrics.labels, ["namespace", "workload", "container"]);
        assert!(c.rules.config.enabled && c.rules.config.approved_digests.is_empty());
        let d = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        let c = Config::from_yaml(
            &format!(
                "kubernetes:\n  enabled: false\nmetrics:\n  labels: [namespace, pod]\n\
                 rules:\n  config:\n    approved_digests:\n      busybox: [{d}]\n"
            ),
            "f.yaml",
        )
        .unwrap();
        assert_eq!(c.kubernetes.enabled, KubeMode::Off);
        assert_eq!(c.metrics.labels, ["namespace", "pod"]);
        assert_eq!(c.rules.config.approved_digests["busybox"], [d]);
        assert!(c.rules.config.enabled, "defaults kept");
        for (text, mode) in [("true", KubeMode::On), ("auto", KubeMode::Auto), ("\"false\"", KubeMode::Off)] {
            let c = Config::from_yaml(&format!("kubernetes:\n  enabled: {text}\n"), "f.yaml").unwrap();
            assert_eq!(c.kubernetes.enabled, mode);
        }
    }

    #[test]
    fn new_sections_errors_name_file_line_field() {
        let e = Config::from_yaml("kubernetes:\n  enabled: maybe\n", "p.yaml").unwrap_err().to_string();
        assert!(e.contains("p.yaml") && e.contains("line 2") && e.contains("maybe"), "{e}");
        let e = Config::from_yaml("kubernetes:\n  kubeconfig: /x\n  namespace: a\n", "p.yaml").unwrap_err().to_string();
        assert!(e.contains("p.yaml") && e.contains("line 3") && e.contains("namespace"), "{e}");
        let e = Config::from_yaml("metrics:\n  labels: [namespace, pod_name]\n", "p.yaml").unwrap_err().to_string();
        assert!(e.contains("p.yaml") && e.contains("line 2") && e.contains("metrics.labels[1]"), "{e}");
        assert!(e.contains("pod_name"), "{e}");
        let e = Config::from_yaml("metrics:\n  labels: [pod, pod]\n", "p.yaml").unwrap_err().to_string();
        assert!(e.contains("metrics.labels[1]") && e.contains("twice"), "{e}");
        let e = Config::from_yaml("metrics:\n  lables: [pod]\n", "p.yaml").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("lables"), "{e}");
        let e = Config::from_yaml("rules:\n  config:\n    approved_digests:\n      busybox: [sha256:abc]\n", "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("p.yaml") && e.contains("line 4"), "{e}");
        assert!(e.contains("rules.config.approved_digests.busybox[0]"), "{e}");
        let e = Config::from_yaml("rules:\n  config:\n    approved_digests:\n      busybox:1.36: []\n", "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 4") && e.contains("without tag"), "{e}");
        let e = Config::from_yaml("rules:\n  config:\n    severity: critical\n", "p.yaml").unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("severity"), "{e}");
    }

    /// The error of `text` as the agent prints it.
    fn err(text: &str) -> String {
        Config::from_yaml(text, "p.yaml").unwrap_err().to_string()
    }

    #[test]
    fn type_error_deep_in_a_list_names_path_and_line() {
        let e = err("rules:\n  package:\n    subcommands:\n      go:\n        - install\n        - 5\n");
        assert!(
            e.starts_with("config p.yaml: line 6, column 11: rules.package.subcommands.go[1]: invalid type"),
            "{e}"
        );
        let e = err("rules:\n  package:\n    subcommands: {go: [install, 5]}\n");
        assert!(e.starts_with("config p.yaml: line 3, column 33: rules.package.subcommands.go[1]: "), "{e}");
    }

    #[test]
    fn unknown_key_in_flow_style_names_its_column() {
        let e = err("sensor: {ringbuf_bytes: 8192, drain_intervall_ms: 5}\n");
        assert!(e.starts_with("config p.yaml: line 1, column 31: sensor.drain_intervall_ms: unknown field"), "{e}");
    }

    #[test]
    fn same_key_in_two_sections_names_the_second() {
        let e = err("otlp:\n  timeout_ms: 100\nalertmanager:\n  timeout_ms: soon\n");
        assert!(e.starts_with("config p.yaml: line 4, column 15: alertmanager.timeout_ms: "), "{e}");
        let e = err("kubernetes:\n  enabled: true\nrules:\n  binary: {enabled: true}\n  shell:\n    enabled: maybe\n");
        assert!(e.starts_with("config p.yaml: line 6, column 14: rules.shell.enabled: "), "{e}");
        let e = err("otlp: {enabled: true}\nrules:\n  file:\n    enabled: true\n    enabeld: true\n");
        assert!(e.starts_with("config p.yaml: line 5, column 5: rules.file.enabeld: unknown field"), "{e}");
    }

    #[test]
    fn list_item_errors_name_index_and_line() {
        // The same text earlier in a comment must not be taken for the item.
        let e = err("# perl/5 is not a program name\nrules:\n  interpreters:\n    - python3\n    - perl/5\n");
        assert!(e.starts_with("config p.yaml line 5: field `rules.interpreters[1]`: \"perl/5\""), "{e}");
        let e = err("rules:\n  network:\n    allowed_ports: [53,\n      80, dns]\n");
        assert!(e.starts_with("config p.yaml: line 4, column 11: rules.network.allowed_ports[2]: "), "{e}");
        let e = err("rules:\n  file:\n    ignore_prefixes:\n      - /tmp/\n      - tmp/\n");
        assert!(e.starts_with("config p.yaml line 5: field `rules.file.ignore_prefixes[1]`: "), "{e}");
    }

    #[test]
    fn quoted_keys_are_located() {
        let e = err("otlp:\n  \"timeout_ms\": 5\n");
        assert!(e.starts_with("config p.yaml line 2: field `otlp.timeout_ms`: 5 must be between"), "{e}");
        let e = err("sensor:\n  'drain_intervall_ms': 5\n");
        assert!(e.starts_with("config p.yaml: line 2, column 3: sensor.drain_intervall_ms: unknown field"), "{e}");
        let e = err("rules:\n  config:\n    approved_digests:\n      \"busybox:1.36\": []\n");
        assert!(e.starts_with("config p.yaml line 4: field `rules.config.approved_digests.busybox:1.36`: "), "{e}");
    }

    #[test]
    fn comments_and_blank_lines_before_the_error() {
        let e = err(
            "# sensor:\n#   ringbuf_bytes: 5000\n\nsensor:\n\n  # ringbuf_bytes: 5000 below\n  ringbuf_bytes: 5000\n",
        );
        assert!(e.starts_with("config p.yaml line 7: field `sensor.ringbuf_bytes`: 5000 must be"), "{e}");
        let e = err("\n\n# drain_interval_ms: fast\nsensor:\n  # note\n\n  drain_interval_ms: fast  # comment\n");
        assert!(e.starts_with("config p.yaml: line 7, column 22: sensor.drain_interval_ms: invalid type"), "{e}");
    }

    #[test]
    fn validation_error_names_the_right_section_line() {
        let e = err("alertmanager:\n  timeout_ms: 5000\notlp:\n  timeout_ms: 5\n");
        assert!(
            e.starts_with("config p.yaml line 4: field `otlp.timeout_ms`: 5 must be between 100 and 600000"),
            "{e}"
        );
        let e = err("otlp: {timeout_ms: 5000}\nalertmanager: {url: \"http://am:9093\", timeout_ms: 5}\n");
        assert!(e.starts_with("config p.yaml line 2: field `alertmanager.timeout_ms`: "), "{e}");
        let e = err("rules:\n  package:\n    subcommands:\n      go: [install]\n      pip/3: [install]\n");
        assert!(e.starts_with("config p.yaml line 5: field `rules.package.subcommands.pip/3`: "), "{e}");
    }

    #[test]
    fn the_idle_drain_interval_is_at_least_the_drain_interval() {
        let e = err("sensor:\n  drain_interval_ms: 200\n  idle_drain_interval_ms: 100\n");
        assert!(
            e.starts_with("config p.yaml line 3: field `sensor.idle_drain_interval_ms`: 100 must be between sensor.drain_interval_ms (200) and 1000"),
            "{e}"
        );
        assert!(err("sensor:\n  idle_drain_interval_ms: 5000\n").contains("5000 must be between"));
        let c = Config::from_yaml("sensor:\n  drain_interval_ms: 200\n", "p.yaml").expect("valid");
        assert_eq!(c.sensor.idle_drain_interval_ms, 1000, "the default");
        let c = Config::from_yaml("sensor:\n  idle_drain_interval_ms: 50\n", "p.yaml").expect("no back-off");
        assert_eq!(c.sensor.idle_drain_interval_ms, c.sensor.drain_interval_ms);
    }

    #[test]
    fn mistyped_top_level_key() {
        let e = err("metrics_addr: \"0.0.0.0:8789\"\nsensors:\n  ringbuf_bytes: 8192\n");
        assert!(e.starts_with("config p.yaml: line 2, column 1: sensors: unknown field `sensors`"), "{e}");
    }

    #[test]
    fn a_second_document_is_located() {
        // Found by tests/properties (config): serde_yaml_ng's error has no position.
        let e = err("sensor:\n  drain_interval_ms: 5\n---\nrules: {}\n");
        assert!(e.starts_with("config p.yaml: line 4, column 1: ") && e.contains("more than one document"), "{e}");
        let e = err("sensor\n---\n");
        assert!(e.starts_with("config p.yaml: line 3, column 1: "), "{e}");
    }

    #[test]
    fn locate_is_exact_or_nothing() {
        let text = "a:\n  b: {c: [x, {d: 1}]}\n  'e': # c\n    - 1\n    - [2, 3]\nf: ~\n";
        let at = |p: &[Seg], at| locate(text, p, at);
        assert_eq!(at(&path!["a", "b", "c", 1, "d"], At::Value), Some((2, 18)));
        assert_eq!(at(&path!["a", "b", "c", 1, "d"], At::Key), Some((2, 15)));
        assert_eq!(at(&path!["a", "e", 1, 1], At::Value), Some((5, 11)));
        assert_eq!(at(&path!["a", "e"], At::Key), Some((3, 3)));
        assert_eq!(at(&path!["f"], At::Value), Some((6, 4)));
        assert_eq!(at(&path!["a", "b", "c", 2], At::Value), None, "index past the end");
        assert_eq!(at(&path!["a", "x"], At::Value), None, "missing key");
        assert_eq!(at(&path!["f", "g"], At::Value), None, "below a scalar");
        assert_eq!(locate("", &path!["a"], At::Value), None);
        assert_eq!(Seg::dotted(&path!["a", "b", 1, "c"]), "a.b[1].c");
    }
}
