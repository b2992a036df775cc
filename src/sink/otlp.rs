//! OTLP log events: one log record per finding, to the OpenTelemetry
//! collector users already run (gRPC or HTTP/protobuf).
//!
//! Each record: EventName `driftwatch.drift.<kind>`; body the finding's
//! `message`; timestamp the kernel's exec time; severity per the OTel
//! severity-number ranges; as attributes the OpenTelemetry security
//! conventions (`security_rule.name`, `.category` (the kind), `.ruleset.name`
//! (`driftwatch`), `.reference` (the runbook), `.uuid` (stable per rule)), the
//! workload as `k8s.deployment.name`, `k8s.statefulset.name`, ... and *every
//! other key of the JSON finding* (built from `serde_json::to_value(&Finding)`,
//! so the OTLP attributes cannot drift from the stdout contract; arrays become
//! array values) but those that only repeat the record's timestamp, body and
//! severity (see [`semconv`]). Resource: `service.name`, `service.version`,
//! `service.instance.id`, `k8s.node.name`, `host.name`, `k8s.cluster.name`
//! (see [`resource`]).
//!
//! Severity: `critical` -> ERROR2 (18), `warning` -> WARN (13), `info` -> INFO (9),
//! `SeverityText` the finding's own word. A critical finding is the most severe
//! *event* we report, but FATAL (21-24) is reserved by the spec for the emitting
//! application itself being unusable; ERROR2 ranks it above a plain ERROR and
//! leaves ERROR3/4 for anything more severe later.
//!
//! Why the SDK exporter but not the SDK's `BatchLogProcessor`: the exporter
//! (`opentelemetry-otlp::LogExporter`) gives us both transports, the standard
//! `OTEL_EXPORTER_OTLP_*` variables, retry with backoff inside a deadline, and
//! EventName support. The `BatchLogProcessor` bounds its queue but drops
//! silently (its counter is only reported in an internal log at shutdown), and
//! it exports from its own thread with a blocking executor, which the hyper
//! HTTP client cannot run on. So this sink does the batching itself, on tokio:
//! a bounded queue of `Arc<Finding>` (shared with the other sinks, no copies),
//! one export in flight at a time, and every record counted once as
//! `driftwatch_otlp_records_total{result="exported"|"failed"|"dropped"}`.
//! Memory is bounded by `max_queue_size` findings plus one batch in flight,
//! whatever the collector does; the pipeline never waits for it.

pub mod semconv;

use super::event::NodeEvent;
use crate::metrics::Metrics;
use crate::{
    classify::{Finding, finding::Kind},
    clock::BootClock,
    config::{self, OtlpProtocol},
    tls::{ClientTls, Files},
};
use opentelemetry::{
    InstrumentationScope, Key,
    logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity},
};
use opentelemetry_otlp::{LogExporter, Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    logs::{LogBatch, LogExporter as _, LogProcessor, SdkLogRecord, SdkLogger, SdkLoggerProvider},
};
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};
use tokio::{sync::mpsc, task::JoinHandle, time::Instant};

/// An OTLP exporter of `$kind` (LogExporter, SpanExporter) for the settings
/// `$s`: both transports, timeout, headers; `$http_endpoint` maps the base
/// endpoint for HTTP. A macro: the SDK's builders share no trait.
macro_rules! exporter {
    ($s:expr, $kind:ident, $http_endpoint:expr) => {{
        let s = $s;
        match s.protocol {
            OtlpProtocol::Grpc => {
                let mut b = $kind::builder().with_tonic().with_protocol(Protocol::Grpc).with_timeout(s.timeout);
                if let Some(e) = &s.endpoint {
                    b = b.with_endpoint(e.clone());
                }
                if let Some(t) = &s.tls {
                    b = b.with_tls_config(t.tonic_config().timeout(s.timeout));
                }
                if !s.headers.is_empty() {
                    b = b.with_metadata(s.metadata()?);
                }
                b.build()?
            }
            OtlpProtocol::HttpProtobuf => {
                let mut b = $kind::builder().with_http().with_protocol(Protocol::HttpBinary).with_timeout(s.timeout);
                if let Some(e) = &s.endpoint {
                    b = b.with_endpoint(($http_endpoint)(e.as_str()));
                }
                if let Some(t) = &s.tls {
                    b = b.with_http_client(opentelemetry_http::hyper::HyperClient::new(
                        t.https_connector(),
                        s.timeout,
                        None,
                    ));
                }
                if !s.headers.is_empty() {
                    b = b.with_headers(s.headers.clone().into_iter().collect::<HashMap<_, _>>());
                }
                b.build()?
            }
        }
    }};
}

/// Queue name of the OTLP sink in `driftwatch_userspace_drops_total`.
pub const QUEUE: &str = "findings_otlp";

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("otlp: {0}")]
    Config(String),
    #[error("otlp: cannot build the exporter: {0}")]
    Build(#[from] opentelemetry_otlp::ExporterBuildError),
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.trim().is_empty())
}

/// The effective OTLP settings: config keys first, then `OTEL_EXPORTER_OTLP_*`.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// From the config (the exporter reads the environment itself otherwise).
    pub endpoint: Option<String>,
    pub protocol: OtlpProtocol,
    pub headers: BTreeMap<String, String>,
    pub timeout: Duration,
    pub max_queue_size: usize,
    pub max_batch_size: usize,
    pub batch_timeout: Duration,
    /// TLS of an https:// endpoint: loaded at startup (CA file or system roots, client certificate).
    pub tls: Option<Arc<ClientTls>>,
    /// `k8s.cluster.name` of the resource (config `cluster_name`); empty: not sent.
    pub cluster_name: String,
    /// Base of `security_rule.reference` (config `alertmanager.runbook_base_url`).
    pub runbook_base_url: String,
}

/// One TLS setting: the config key, else the first `OTEL_*` variable set; with its source for errors.
fn tls_setting(value: &str, key: &'static str, vars: [&'static str; 2]) -> (String, &'static str) {
    if !value.is_empty() {
        return (value.to_string(), key);
    }
    vars.into_iter().find_map(|v| env(v).map(|x| (x, v))).unwrap_or((String::new(), key))
}

/// Whether the exporter will speak TLS to `endpoint` (None: the protocol's default, plain
/// localhost): `https://`, or a gRPC endpoint without a scheme unless `OTEL_EXPORTER_OTLP_(LOGS_)INSECURE=true`,
/// as the SDK decides.
fn is_https(endpoint: Option<&str>, protocol: OtlpProtocol) -> bool {
    let Some(e) = endpoint.map(|e| e.trim().to_ascii_lowercase()) else { return false };
    if e.starts_with("https://") {
        return true;
    }
    let schemeless = e.split_once("://").is_none_or(|(scheme, _)| scheme.contains(['/', '?', '#']));
    let insecure = env("OTEL_EXPORTER_OTLP_LOGS_INSECURE")
        .or_else(|| env("OTEL_EXPORTER_OTLP_INSECURE"))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    schemeless && protocol == OtlpProtocol::Grpc && !insecure
}

impl Settings {
    /// `None` when OTLP is off: `enabled: false`, or no endpoint in the config
    /// nor in `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn resolve(c: &config::Otlp) -> Result<Option<Settings>, OtlpError> {
        let env_endpoint = env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT").or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let on = match c.enabled {
            Some(b) => b,
            None => !c.endpoint.is_empty() || env_endpoint.is_some(),
        };
        if !on {
            return Ok(None);
        }
        let protocol = match c.protocol {
            Some(p) => p,
            None => match env("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL").or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL")) {
                None => OtlpProtocol::Grpc,
                Some(p) => match p.trim() {
                    "grpc" => OtlpProtocol::Grpc,
                    "http/protobuf" => OtlpProtocol::HttpProtobuf,
                    other => {
                        return Err(OtlpError::Config(format!(
                            "OTEL_EXPORTER_OTLP_PROTOCOL={other:?}: supported are grpc and http/protobuf"
                        )));
                    }
                },
            },
        };
        let effective = if c.endpoint.is_empty() { env_endpoint.as_deref() } else { Some(c.endpoint.as_str()) };
        let tls = Self::tls(&c.tls, effective, protocol)?;
        let endpoint = (!c.endpoint.is_empty()).then(|| match protocol {
            OtlpProtocol::Grpc => c.endpoint.clone(),
            // Like OTEL_EXPORTER_OTLP_ENDPOINT: a base URL, the signal path is appended.
            OtlpProtocol::HttpProtobuf => format!("{}/v1/logs", c.endpoint.trim_end_matches('/')),
        });
        Ok(Some(Settings {
            endpoint,
            protocol,
            headers: c.headers.clone(),
            timeout: Duration::from_millis(c.timeout_ms),
            max_queue_size: c.max_queue_size,
            max_batch_size: c.max_batch_size,
            batch_timeout: Duration::from_millis(c.batch_timeout_ms),
            tls,
            cluster_name: String::new(),
            runbook_base_url: config::Alertmanager::default().runbook_base_url,
        }))
    }

    /// [`Settings::resolve`] of `cfg.otlp`, with what the records and the resource take from the rest of `cfg`.
    pub fn resolve_for(cfg: &config::Config) -> Result<Option<Settings>, OtlpError> {
        Ok(Self::resolve(&cfg.otlp)?.map(|s| Settings {
            cluster_name: cfg.cluster_name.clone(),
            runbook_base_url: cfg.alertmanager.runbook_base_url.clone(),
            ..s
        }))
    }

    /// The TLS material for an https:// endpoint: `otlp.tls`, each key falling back to
    /// `OTEL_EXPORTER_OTLP_LOGS_*`, then `OTEL_EXPORTER_OTLP_*` (`CERTIFICATE`,
    /// `CLIENT_CERTIFICATE`, `CLIENT_KEY`). Read now: a bad file is a startup error
    /// naming the key or variable. TLS settings for a plain endpoint are an error too.
    fn tls(
        c: &config::Tls,
        endpoint: Option<&str>,
        protocol: OtlpProtocol,
    ) -> Result<Option<Arc<ClientTls>>, OtlpError> {
        let ca = tls_setting(
            &c.ca_file,
            "otlp.tls.ca_file",
            ["OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE"],
        );
        let cert = tls_setting(
            &c.cert_file,
            "otlp.tls.cert_file",
            ["OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"],
        );
        let key = tls_setting(
            &c.key_file,
            "otlp.tls.key_file",
            ["OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY", "OTEL_EXPORTER_OTLP_CLIENT_KEY"],
        );
        let name = (c.server_name.clone(), "otlp.tls.server_name");
        if !is_https(endpoint, protocol) {
            return match [&ca, &cert, &key, &name].into_iter().find(|(v, _)| !v.is_empty()) {
                Some((_, source)) => Err(OtlpError::Config(format!(
                    "{source} is set, but the endpoint {} is not https://",
                    endpoint.unwrap_or("(default, plain http)")
                ))),
                None => Ok(None),
            };
        }
        let files = Files { ca_file: &ca.0, cert_file: &cert.0, key_file: &key.0, server_name: &name.0 };
        let t = ClientTls::load(files).map_err(|e| {
            let source = match e.field {
                crate::tls::Field::CaFile => ca.1,
                crate::tls::Field::CertFile => cert.1,
                crate::tls::Field::KeyFile => key.1,
                crate::tls::Field::ServerName => name.1,
            };
            OtlpError::Config(format!("{source}: {e}"))
        })?;
        Ok(Some(Arc::new(t)))
    }

    /// The log exporter (inside a tokio runtime: tonic's channel starts lazily on it).
    pub fn log_exporter(&self) -> Result<LogExporter, OtlpError> {
        Ok(exporter!(self, LogExporter, |e: &str| e.to_string()))
    }

    /// The span exporter for the agent's own spans (same endpoint and protocol).
    pub fn span_exporter(&self) -> Result<opentelemetry_otlp::SpanExporter, OtlpError> {
        use opentelemetry_otlp::SpanExporter;
        Ok(exporter!(self, SpanExporter, |e: &str| format!("{}/v1/traces", e.trim_end_matches("/v1/logs"))))
    }

    fn metadata(&self) -> Result<opentelemetry_otlp::tonic_types::metadata::MetadataMap, OtlpError> {
        let mut h = hyper::HeaderMap::new();
        for (k, v) in &self.headers {
            let name = hyper::header::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
                .map_err(|e| OtlpError::Config(format!("header {k:?}: {e}")))?;
            let value =
                hyper::header::HeaderValue::from_str(v).map_err(|e| OtlpError::Config(format!("header {k:?}: {e}")))?;
            h.insert(name, value);
        }
        Ok(opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(h))
    }
}

/// The OTel resource of everything the agent exports. Precedence, lowest first:
/// our defaults (`service.name=driftwatch`, `service.version`, `service.instance.id`,
/// `k8s.node.name` and `host.name` (the node's name), `k8s.cluster.name` when
/// `cluster` is set), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SERVICE_NAME`.
pub fn resource(cluster: &str) -> opentelemetry_sdk::Resource {
    use opentelemetry::KeyValue;
    use opentelemetry_semantic_conventions::attribute as sc;
    let node = crate::node::name();
    let mut attrs = vec![
        KeyValue::new(sc::SERVICE_NAME, "driftwatch"),
        KeyValue::new(sc::SERVICE_VERSION, env!("CARGO_PKG_VERSION")),
        KeyValue::new(sc::SERVICE_INSTANCE_ID, semconv::instance_id(cluster, node)),
        KeyValue::new(sc::K8S_NODE_NAME, node.to_string()),
        // The agent watches the node: the node is the host (the pod's own hostname is not).
        KeyValue::new(sc::HOST_NAME, node.to_string()),
    ];
    if !cluster.is_empty() {
        attrs.push(KeyValue::new(sc::K8S_CLUSTER_NAME, cluster.to_string()));
    }
    let mut b = opentelemetry_sdk::Resource::builder_empty()
        .with_attributes(attrs)
        .with_detector(Box::new(opentelemetry_sdk::resource::EnvResourceDetector::new()));
    if let Some(name) = std::env::var("OTEL_SERVICE_NAME").ok().filter(|s| !s.trim().is_empty()) {
        b = b.with_service_name(name);
    }
    b.build()
}

/// `EventName` of a finding.
pub fn event_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Binary => "driftwatch.drift.binary",
        Kind::Shell => "driftwatch.drift.shell",
        Kind::Package => "driftwatch.drift.package",
        Kind::Network => "driftwatch.drift.network",
        Kind::File => "driftwatch.drift.file",
        Kind::Config => "driftwatch.drift.config",
    }
}

/// OTel severity number of a finding's severity (see the module docs).
pub fn severity_number(s: config::Severity) -> Severity {
    match s {
        config::Severity::Critical => Severity::Error2,
        config::Severity::Warning => Severity::Warn,
        config::Severity::Info => Severity::Info,
    }
}

/// A JSON value as an OTLP attribute value (`None` for null).
pub fn any_value(v: serde_json::Value) -> Option<AnyValue> {
    use serde_json::Value;
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => AnyValue::Boolean(b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => AnyValue::Int(i),
            (None, _) if n.is_u64() => AnyValue::String(n.to_string().into()),
            (None, Some(f)) => AnyValue::Double(f),
            (None, None) => AnyValue::String(n.to_string().into()),
        },
        Value::String(s) => AnyValue::String(s.into()),
        Value::Array(a) => AnyValue::ListAny(Box::new(a.into_iter().filter_map(any_value).collect())),
        Value::Object(o) => AnyValue::Map(Box::new(
            o.into_iter().filter_map(|(k, v)| any_value(v).map(|v| (Key::from(k), v))).collect(),
        )),
    })
}

/// Hands the records the logger emits back to the sink (the SDK builds
/// `SdkLogRecord`s only through a logger and its processors).
#[derive(Debug, Default, Clone)]
struct Capture(Arc<Mutex<Vec<SdkLogRecord>>>);

impl LogProcessor for Capture {
    fn emit(&self, data: &mut SdkLogRecord, _scope: &InstrumentationScope) {
        if let Ok(mut v) = self.0.lock() {
            v.push(data.clone());
        }
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Builds log records from findings.
pub struct RecordBuilder {
    logger: SdkLogger,
    capture: Capture,
    clock: BootClock,
    rules: semconv::SecurityRules,
    _provider: SdkLoggerProvider,
}

impl Default for RecordBuilder {
    fn default() -> Self {
        Self::new(&config::Alertmanager::default().runbook_base_url)
    }
}

impl RecordBuilder {
    /// `runbook_base` is the base of `security_rule.reference`.
    pub fn new(runbook_base: &str) -> Self {
        let capture = Capture::default();
        let provider = SdkLoggerProvider::builder().with_log_processor(capture.clone()).build();
        let logger = provider.logger_with_scope(scope());
        let rules = semconv::SecurityRules::new(runbook_base);
        Self { logger, capture, clock: BootClock::new(), rules, _provider: provider }
    }

    /// The record of a node event (src/sink/event.rs).
    pub fn event(&self, e: &super::event::NodeEvent) -> Option<SdkLogRecord> {
        let mut r = self.logger.create_log_record();
        r.set_event_name(e.name);
        r.set_severity_number(severity_number(e.severity));
        r.set_severity_text(e.severity.as_str());
        r.set_timestamp(SystemTime::now());
        r.set_observed_timestamp(SystemTime::now());
        r.set_body(AnyValue::String(e.body.clone().into()));
        for (k, v) in &e.attributes {
            if let Some(v) = any_value(v.clone()) {
                r.add_attribute(Key::from(k.clone()), v);
            }
        }
        self.logger.emit(r);
        self.capture.0.lock().ok()?.pop()
    }

    pub fn record(&self, f: &Finding) -> Option<SdkLogRecord> {
        let mut r = self.logger.create_log_record();
        r.set_event_name(event_name(f.kind));
        r.set_severity_number(severity_number(f.severity));
        r.set_severity_text(f.severity.as_str());
        r.set_timestamp(SystemTime::from(self.clock.wall(f.ktime_ns)));
        r.set_observed_timestamp(SystemTime::now());
        r.set_body(AnyValue::String(f.message.to_string().into()));
        r.add_attributes(self.rules.attributes(f));
        if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(f) {
            for (k, v) in m {
                if semconv::left_out(&k) {
                    continue;
                }
                if let Some(v) = any_value(v) {
                    r.add_attribute(Key::from(k), v);
                }
            }
        }
        self.logger.emit(r);
        self.capture.0.lock().ok()?.pop()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("driftwatch").with_version(env!("CARGO_PKG_VERSION")).build()
}

/// A running OTLP sink.
pub struct OtlpSink {
    task: JoinHandle<()>,
    events: mpsc::Sender<Arc<NodeEvent>>,
}

/// What the sink exports: findings, and the agent's own node events.
enum Item {
    Finding(Arc<Finding>),
    Event(Arc<NodeEvent>),
}

impl OtlpSink {
    /// Builds the exporter from `settings` and starts the sink; feed it with the returned sender.
    pub fn start(
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> Result<(mpsc::Sender<Arc<Finding>>, OtlpSink), OtlpError> {
        let mut exporter = settings.log_exporter()?;
        exporter.set_resource(&resource(&settings.cluster_name));
        Ok(Self::start_with(exporter, settings, metrics))
    }

    /// Starts the sink with any exporter (tests).
    pub fn start_with<E: opentelemetry_sdk::logs::LogExporter + 'static>(
        exporter: E,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> (mpsc::Sender<Arc<Finding>>, OtlpSink) {
        metrics.sinks.declare_otlp();
        // The hand-off queue only has to absorb a burst while the loop is busy
        // building a batch; the bound that matters is `max_queue_size`.
        let (tx, rx) = mpsc::channel(settings.max_queue_size.clamp(16, 1024));
        // Node events are rare (one per bundle or quarantine).
        let (events, ev_rx) = mpsc::channel(64);
        let task = tokio::spawn(run(rx, ev_rx, Arc::new(exporter), settings, metrics));
        (tx, OtlpSink { task, events })
    }

    /// The queue of node events (src/sink/event.rs).
    pub fn events(&self) -> mpsc::Sender<Arc<NodeEvent>> {
        self.events.clone()
    }

    /// Waits for the final flush (the sender side must be closed). The sink
    /// bounds its own flush by the export timeout; `limit` is a backstop.
    pub async fn shutdown(self, limit: Duration) {
        let abort = self.task.abort_handle();
        if tokio::time::timeout(limit, self.task).await.is_err() {
            abort.abort();
            tracing::warn!("otlp: final flush did not finish in {limit:?}; abandoned");
        }
    }
}

async fn export<E: opentelemetry_sdk::logs::LogExporter>(
    exporter: Arc<E>,
    records: Vec<SdkLogRecord>,
    timeout: Duration,
) -> Result<(), String> {
    let scope = scope();
    let refs: Vec<(&SdkLogRecord, &InstrumentationScope)> = records.iter().map(|r| (r, &scope)).collect();
    // The exporter bounds its retries by `timeout`; this is a backstop.
    match tokio::time::timeout(timeout + Duration::from_secs(1), exporter.export(LogBatch::new(&refs))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, records = records.len(), "otlp export failed");
            Err(e.to_string())
        }
        Err(_) => {
            tracing::debug!(records = records.len(), "otlp export timed out");
            Err(format!("no answer within {timeout:?}"))
        }
    }
}

async fn run<E: opentelemetry_sdk::logs::LogExporter + 'static>(
    mut rx: mpsc::Receiver<Arc<Finding>>,
    mut ev_rx: mpsc::Receiver<Arc<NodeEvent>>,
    exporter: Arc<E>,
    s: Settings,
    metrics: Arc<Metrics>,
) {
    let builder = RecordBuilder::new(&s.runbook_base_url);
    let mut pending: VecDeque<Item> = VecDeque::new();
    let mut inflight: Option<(JoinHandle<Result<(), String>>, usize)> = None;
    let mut oldest: Option<Instant> = None;
    let mut open = true;
    let mut flush_deadline: Option<Instant> = None;
    let mut failures_logged = 0u64;
    loop {
        let due = !open || pending.len() >= s.max_batch_size || oldest.is_some_and(|t| t.elapsed() >= s.batch_timeout);
        if inflight.is_none() && !pending.is_empty() && due {
            let n = pending.len().min(s.max_batch_size);
            let records: Vec<SdkLogRecord> = pending
                .drain(..n)
                .filter_map(|i| match i {
                    Item::Finding(f) => builder.record(&f),
                    Item::Event(e) => builder.event(&e),
                })
                .collect();
            let ex = exporter.clone();
            inflight = Some((tokio::spawn(export(ex, records, s.timeout)), n));
            oldest = (!pending.is_empty()).then(Instant::now);
        }
        metrics.sinks.set_otlp_queued(pending.len() + inflight.as_ref().map_or(0, |i| i.1));
        if !open && pending.is_empty() && inflight.is_none() {
            return;
        }
        let batch_due = oldest.map(|t| t + s.batch_timeout);
        tokio::select! {
            r = async { (&mut inflight.as_mut().expect("guarded").0).await }, if inflight.is_some() => {
                let n = inflight.take().map_or(0, |i| i.1) as u64;
                match r.unwrap_or_else(|e| Err(e.to_string())) {
                    Ok(()) => metrics.sinks.otlp_records("exported", n),
                    Err(e) => {
                        metrics.sinks.otlp_records("failed", n);
                        failures_logged += 1;
                        // Say it once, then every 100th time: a dead collector must not flood stderr.
                        if failures_logged == 1 || failures_logged.is_multiple_of(100) {
                            tracing::warn!(error = %e, records = n, failures = failures_logged, "otlp: export to the collector failed; records counted as failed");
                        }
                    }
                }
            }
            f = rx.recv(), if open => match f {
                Some(f) => {
                    if pending.len() >= s.max_queue_size {
                        metrics.sinks.otlp_records("dropped", 1);
                    } else {
                        if pending.is_empty() {
                            oldest = Some(Instant::now());
                        }
                        pending.push_back(Item::Finding(f));
                    }
                }
                None => {
                    open = false;
                    flush_deadline = Some(Instant::now() + s.timeout);
                }
            },
            Some(e) = ev_rx.recv(), if open => {
                if pending.len() >= s.max_queue_size {
                    metrics.sinks.otlp_records("dropped", 1);
                } else {
                    if pending.is_empty() {
                        oldest = Some(Instant::now());
                    }
                    pending.push_back(Item::Event(e));
                }
            }
            _ = tokio::time::sleep_until(batch_due.unwrap_or_else(Instant::now)), if batch_due.is_some() && inflight.is_none() => {}
            _ = tokio::time::sleep_until(flush_deadline.unwrap_or_else(Instant::now)), if flush_deadline.is_some() => {
                let left = pending.len() + inflight.as_ref().map_or(0, |i| i.1);
                metrics.sinks.otlp_records("dropped", left as u64);
                if let Some((h, _)) = inflight.take() {
                    h.abort();
                }
                metrics.sinks.set_otlp_queued(0);
                tracing::warn!(records = left, "otlp: shutdown flush deadline passed; records dropped");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_map_to_attributes() {
        use serde_json::json;
        assert_eq!(any_value(json!("a")), Some(AnyValue::String("a".into())));
        assert_eq!(any_value(json!(7)), Some(AnyValue::Int(7)));
        assert_eq!(any_value(json!(true)), Some(AnyValue::Boolean(true)));
        assert_eq!(any_value(json!(null)), None);
        assert_eq!(
            any_value(json!(["x", "y"])),
            Some(AnyValue::ListAny(Box::new(vec![AnyValue::String("x".into()), AnyValue::String("y".into())])))
        );
        assert_eq!(any_value(json!(u64::MAX)), Some(AnyValue::String(u64::MAX.to_string().into())));
    }

    #[test]
    fn severities_follow_otel_ranges() {
        assert_eq!(severity_number(config::Severity::Critical) as i32, 18);
        assert_eq!(severity_number(config::Severity::Warning) as i32, 13);
        assert_eq!(severity_number(config::Severity::Info) as i32, 9);
    }

    #[test]
    fn settings_from_config_and_env() {
        let off = config::Otlp::default();
        // The test environment may carry OTEL_* variables: only assert when it does not.
        if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
            && std::env::var_os("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT").is_none()
        {
            assert_eq!(Settings::resolve(&off).unwrap(), None);
        }
        let c = config::Otlp {
            endpoint: "http://127.0.0.1:4318/".into(),
            protocol: Some(OtlpProtocol::HttpProtobuf),
            ..Default::default()
        };
        let s = Settings::resolve(&c).unwrap().unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:4318/v1/logs"));
        let c = config::Otlp { enabled: Some(false), endpoint: "http://x:4317".into(), ..Default::default() };
        assert_eq!(Settings::resolve(&c).unwrap(), None);
    }

    #[test]
    fn tls_only_for_https_endpoints_and_files_read_at_startup() {
        assert!(is_https(Some("https://c:4317"), OtlpProtocol::Grpc));
        assert!(is_https(Some("HTTPS://c:4318"), OtlpProtocol::HttpProtobuf));
        assert!(!is_https(Some("http://c:4317"), OtlpProtocol::Grpc));
        assert!(!is_https(None, OtlpProtocol::Grpc), "the default endpoint is plain localhost");
        if std::env::var_os("OTEL_EXPORTER_OTLP_INSECURE").is_none()
            && std::env::var_os("OTEL_EXPORTER_OTLP_LOGS_INSECURE").is_none()
        {
            assert!(is_https(Some("collector:4317"), OtlpProtocol::Grpc), "schemeless gRPC is secure by default");
        }
        let tls =
            |ca: &str, name: &str| config::Tls { ca_file: ca.into(), server_name: name.into(), ..Default::default() };
        let c = config::Otlp { endpoint: "http://x:4317".into(), tls: tls("", "x"), ..Default::default() };
        let e = Settings::resolve(&c).unwrap_err().to_string();
        assert!(e.contains("otlp.tls.server_name is set, but the endpoint http://x:4317 is not https://"), "{e}");
        let c = config::Otlp {
            endpoint: "https://x:4317".into(),
            tls: tls("/nonexistent/ca.pem", ""),
            ..Default::default()
        };
        let e = Settings::resolve(&c).unwrap_err().to_string();
        assert!(e.starts_with("otlp: otlp.tls.ca_file: cannot read \"/nonexistent/ca.pem\""), "{e}");
        let c = config::Otlp { endpoint: "http://x:4317".into(), ..Default::default() };
        assert_eq!(Settings::resolve(&c).unwrap().unwrap().tls, None);
    }
}
