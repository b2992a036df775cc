//! Wires the stages: sensor -> reader thread -> pipeline (registry,
//! classify, emit) -> sinks, plus the registry's task, the configuration-drift
//! task and the HTTP server. Every arrow is a bounded queue. The response
//! steps (evidence, quarantine, the admin API) are wired in [`respond`].

mod respond;

use crate::{
    bpf::{self, Sensor, SensorOptions},
    classify::{Classifier, NoFinding, config_drift::normalise_approved, network::NetworkJudge},
    config::Config,
    containers::{Registry, RegistryConfig},
    enrich::{
        self,
        cri::{Cri, CriConfig},
    },
    event::{DecodeError, Event},
    health::Health,
    metrics::{FindingLabels, Metrics},
    pipeline::{self, Deps, Emitter, Pipeline, PolicyGate, config_drift::ConfigDrift},
    server,
    sink::{Fanout, json},
};
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Bpf(#[from] bpf::BpfError),
    #[error("cannot listen on {addr} for /metrics: {source} (choose another with --metrics-addr)")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("cannot listen on {addr} for /healthz and /readyz: {source} (choose another with --health-addr)")]
    ListenHealth { addr: SocketAddr, source: std::io::Error },
    #[error("cannot start thread {name}: {source}")]
    Thread { name: &'static str, source: std::io::Error },
    #[error("{0}")]
    Sink(String),
    #[error("cannot write findings to stdout: {0}")]
    Stdout(std::io::Error),
    #[error("{0}")]
    Config(String),
}

/// Queue name for findings waiting for the stdout sink.
const STDOUT_QUEUE: &str = "findings_stdout";

#[derive(Debug, Default)]
pub struct Options {
    pub emit_all_execs: bool,
    /// Kernel BTF file instead of /sys/kernel/btf/vmlinux.
    pub btf: Option<std::path::PathBuf>,
    /// The config file: its `policy` is reloaded on SIGHUP and when it changes.
    pub config_path: Option<std::path::PathBuf>,
}

/// The agent as a program: its own tokio runtime and diagnostics (stderr,
/// plus its spans over OTLP when configured), until SIGINT/SIGTERM.
pub fn run_blocking(cfg: Config, opts: Options) -> Result<(), AgentError> {
    crate::heap::tune();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| AgentError::Thread { name: "tokio", source })?;
    let telemetry = rt.block_on(async { crate::telemetry::init(Some(&cfg)) });
    let result = rt.block_on(run(cfg, opts, CancellationToken::new()));
    drop(telemetry);
    // Do not wait long for tasks still running (a blocking look at a stuck filesystem).
    rt.shutdown_timeout(Duration::from_millis(200));
    result
}

/// Chunks of events whose findings may wait for one write: at most 256
/// events, well under a millisecond of judging, so a look that never ends (a
/// storm that keeps the ring buffer full) still writes its findings promptly.
const HOLD_CHUNKS: usize = 8;

/// The events thread's handler: judges each event, and writes a look's
/// findings to stdout in one `write` when the look ends (a write per judged
/// chunk was 1.19 writes a look in the benchmark's shell storm).
struct EventsHandler {
    pipeline: Arc<crate::pipeline::Pipeline>,
    stdout: Arc<crate::sink::json::Stdout>,
    held: Option<crate::sink::json::Batch>,
    chunks: usize,
}

impl bpf::reader::Handler for EventsHandler {
    fn handle(&mut self, chunk: &mut dyn Iterator<Item = crate::event::Event>) {
        self.held.get_or_insert_with(|| self.stdout.batch());
        chunk.for_each(|ev| self.pipeline.handle(ev));
        self.chunks += 1;
        if self.chunks >= HOLD_CHUNKS {
            self.idle();
        }
    }

    fn idle(&mut self) {
        self.held = None; // the batch's one write
        self.chunks = 0;
    }
}

/// Trims the heap now and then, so a storm's queues do not stay resident.
async fn trim_heap(cancel: CancellationToken) {
    let mut tick = tokio::time::interval(crate::heap::TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let _ = tokio::task::spawn_blocking(crate::heap::trim).await;
    }
}

/// Runs until SIGINT/SIGTERM or until `cancel` fires.
pub async fn run(cfg: Config, opts: Options, cancel: CancellationToken) -> Result<(), AgentError> {
    // What can fail at once fails before anything is served or logged as started.
    let btf = opts.btf.clone().unwrap_or_else(|| "/sys/kernel/btf/vmlinux".into());
    bpf::preflight::check(&btf, cfg.sensor.network)?;
    check_state_dir(&cfg.rules.network)?;
    let metrics = Arc::new(Metrics::new());
    let listener =
        server::bind(cfg.metrics_addr).await.map_err(|source| AgentError::Listen { addr: cfg.metrics_addr, source })?;
    let probes = match cfg.health_addr {
        Some(addr) => Some(server::bind(addr).await.map_err(|source| AgentError::ListenHealth { addr, source })?),
        None => None,
    };
    let local = listener.local_addr().unwrap_or(cfg.metrics_addr);
    let health = Arc::new(Health::new(crate::health::Limits {
        stdout_stall: Duration::from_millis(cfg.pipeline.sink_stall_timeout_ms),
        runtime_down: Duration::from_secs(cfg.runtime.unready_after_s),
    }));
    tokio::spawn(server::serve(listener, metrics.clone(), health.clone(), cancel.clone()));
    tracing::info!(addr = %local, "serving /metrics, /healthz, /readyz");
    if let (Some(l), Some(addr)) = (probes, cfg.health_addr) {
        let local = l.local_addr().unwrap_or(addr);
        let (m, h) = (metrics.clone(), health.clone());
        tokio::spawn(server::serve_as(server::Listener::Health, l, m, h, cancel.clone()));
        tracing::info!(addr = %local, "serving /healthz, /readyz for the probes");
    }

    let classifier = Arc::new(Classifier::new(&cfg));
    declare_series(&metrics, &classifier, &cfg);
    let mut sensor = load_sensor(&cfg, &opts, &classifier)?;
    if let Some(k) = sensor.take_kstats() {
        metrics.kernel.set_source(k);
    }
    metrics.kernel.set_programs_attached(sensor.attached as i64);
    // The BTF parsed to load the sensor is the agent's largest allocation: give it back.
    crate::heap::trim();
    tokio::spawn(trim_heap(cancel.clone()));

    // Sinks, each behind its own bounded queue.
    let cap = cfg.pipeline.queue_capacity;
    let mut fanout = Fanout::default();
    let stdout_sink = json::Stdout::start_on(cfg.outputs.stdout.format, cap, STDOUT_QUEUE, &mut fanout, &metrics)
        .map_err(AgentError::Stdout)?;
    let net_sinks = crate::sink::NetworkSinks::start(&cfg, &metrics, &mut fanout).map_err(AgentError::Sink)?;

    // What is known per container: the runtime, the API, /proc.
    let registry = start_registry(&cfg, &metrics, &cancel).await;
    if let Some(pre) = sensor.take_preexisting() {
        pre.prune_on_scans(registry.snapshots(), cancel.clone());
    }
    let queues = fanout.probe();
    // Secrets are replaced once per finding, before the fan-out to every sink.
    let redactor = cfg.redaction.redactor().map_err(|e| AgentError::Config(format!("redaction: {e}")))?;
    if let Some(r) = &redactor {
        tracing::info!(patterns = ?r.labels(), "findings are redacted before any output");
    }
    let gate = policy_gate(&cfg, &registry, &metrics)?;
    let events = crate::sink::event::NodeEvents::new(net_sinks.otlp_events(), metrics.clone());
    let response = respond::start(&cfg, &registry, &metrics, events, gate.clone(), &cancel);
    respond::serve_admin(&cfg, response.view.clone(), &metrics, &cancel).await?;
    let emitter = Arc::new(
        Emitter::new(registry.clone(), metrics.clone(), fanout, Duration::from_millis(cfg.runtime.metadata_wait_ms))
            .with_redaction(redactor.map(|r| pipeline::Redaction::new(r, &metrics)))
            .with_policy(gate.clone())
            .with_responder(response.responder.clone()),
    );
    pipeline::policy::watch_modes(gate.clone(), cancel.clone());
    if let Some(path) = opts.config_path.clone() {
        let r = crate::reload::Reloader { path, running: cfg.clone(), gate: gate.clone(), metrics: metrics.clone() };
        tokio::spawn(r.run(cancel.clone()));
    }
    pipeline::emit::retire_series(registry.clone(), metrics.clone(), cancel.clone());
    let config_drift = ConfigDrift::new(
        pipeline::config_drift::Settings {
            state_dir: (!cfg.rules.network.state_dir.is_empty()).then(|| cfg.rules.network.state_dir.clone().into()),
            enabled: cfg.rules.config.enabled,
            approved: normalise_approved(&cfg.rules.config.approved_digests),
            retry_every: Duration::from_secs(5),
            api_patience: 3,
        },
        classifier.clone(),
        emitter.clone(),
        registry.clone(),
    );
    tokio::spawn(config_drift.run(cancel.clone()));
    if cfg.rules.config.enabled {
        let rc = &cfg.rules.config;
        let settings = pipeline::config_watch::Settings {
            mounted_config: rc.mounted_config,
            runtime_parameters: rc.runtime_parameters,
            refresh_every: Duration::from_secs(rc.refresh_interval_s.max(1)),
            max_volumes: rc.max_watched_volumes,
        };
        let watch =
            pipeline::config_watch::ConfigWatch::new(settings, classifier.clone(), emitter.clone(), registry.clone());
        tokio::spawn(watch.run(cancel.clone()));
    }
    tokio::spawn(registry.clone().run(cancel.clone()));

    let pipeline = Pipeline::new(Deps {
        classifier,
        emitter,
        registry: registry.clone(),
        network: network_judge(&cfg, &metrics),
        file: cfg.rules.file.enabled.then(|| crate::classify::file::FileJudge::new(&cfg.rules.file)),
        not_container: sensor.take_not_container(),
        drift_marks: sensor.take_drift_marks(),
        protect: protector(&cfg, &mut sensor, &gate, &registry, &cancel),
    });
    pipeline.persist_baselines(cancel.clone());

    // One thread from the ring buffer to the sinks' queues (src/bpf/reader.rs);
    // its events queue is bounded in events, drift shed last.
    let stop = Arc::new(AtomicBool::new(false));
    let reader_alive = Arc::new(AtomicBool::new(false));
    let ring = sensor.take_ring().expect("ring buffer is taken once");
    let wait = bpf::reader::Wait {
        backstop: Duration::from_millis(cfg.sensor.drain_interval_ms),
        idle_backstop: Duration::from_millis(cfg.sensor.idle_drain_interval_ms),
        after_records: Duration::from_millis(cfg.sensor.wake_interval_ms),
    };
    let (p, out) = (pipeline.clone(), stdout_sink.clone());
    let rt = tokio::runtime::Handle::current();
    let reader = bpf::reader::spawn(
        ring,
        sensor.take_look(),
        wait,
        cap,
        EventsHandler { pipeline: p, stdout: out, held: None, chunks: 0 },
        rt,
        metrics.clone(),
        stop.clone(),
        reader_alive.clone(),
    )
    .map_err(|source| AgentError::Thread { name: "dw-ringbuf", source })?;

    health.watch(reader_alive, registry.clone(), stdout_sink.progress(), queues);
    tracing::info!(
        programs = sensor.attached,
        host_mntns = sensor.host_mntns,
        "driftwatch sensor attached; findings stream to stdout"
    );

    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = shutdown_signal() => {}
    }
    let deadline = Duration::from_millis(cfg.pipeline.shutdown_timeout_ms);
    tracing::info!(deadline_ms = deadline.as_millis() as u64, "shutting down");
    let t0 = std::time::Instant::now();
    health.stop();
    cancel.cancel();
    stop.store(true, Ordering::Relaxed);
    let stdout = stdout_sink.progress();
    // Everything in order: the reader stops, the pipeline drains (findings
    // waiting for metadata included), baselines are saved, the sinks flush.
    let orderly = async {
        let _ = tokio::task::spawn_blocking(move || reader.join()).await; // handles what it queued
        pipeline.drain().await;
        pipeline.save_baselines();
        if let Err(e) = gate.learned().save() {
            tracing::warn!("learned baselines: {e}");
        }
        drop(pipeline);
        stdout_sink.finish().await;
        net_sinks.shutdown(&cfg).await; // bounded final flush of OTLP / Alertmanager
    };
    let cut = tokio::select! {
        _ = orderly => None,
        _ = tokio::time::sleep(deadline) => Some("the shutdown deadline (pipeline.shutdown_timeout_ms) passed"),
        _ = shutdown_signal() => Some("a second signal"),
    };
    if let Some(why) = cut {
        // Whatever the stdout queue took and its thread has not written (a
        // blocked pipe) is lost: counted, never silent.
        let unwritten = stdout.pending();
        metrics.sinks.sink_dropped("stdout", unwritten);
        tracing::warn!(
            unwritten,
            after_ms = t0.elapsed().as_millis() as u64,
            "shutdown cut short by {why}: findings not written to stdout are counted in driftwatch_sink_writes_total{{sink=\"stdout\",result=\"dropped\"}}"
        );
    } else {
        tracing::info!(after_ms = t0.elapsed().as_millis() as u64, "shut down");
    }
    drop(sensor);
    Ok(())
}

/// The policy gate, with learned baselines kept in the state directory.
fn policy_gate(cfg: &Config, registry: &Arc<Registry>, metrics: &Arc<Metrics>) -> Result<Arc<PolicyGate>, AgentError> {
    let compiled =
        crate::policy::compile(&cfg.policy).map_err(|e| AgentError::Config(format!("policy: {}", e.message)))?;
    let dir = &cfg.rules.network.state_dir;
    let path = (!dir.is_empty()).then(|| std::path::Path::new(dir).join("learned.json"));
    let (learned, warning) = crate::policy::learned::Learned::open(path.as_deref());
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    let p = crate::policy::Policy::new(compiled);
    if !p.compiled.approvals.is_empty() || !p.compiled.modes.is_empty() {
        tracing::info!(
            approvals = p.compiled.approvals.len(),
            modes = p.compiled.modes.len(),
            default_mode = p.compiled.default_mode.as_str(),
            "policy loaded"
        );
    }
    Ok(Arc::new(PolicyGate::new(p, learned, registry.clone(), metrics.clone())))
}

/// Pre-creates every finding, kind and reason series at 0 (alerts use
/// `increase()`, which cannot see a series born at 1), and sets the
/// per-container label set.
pub fn declare_series(metrics: &Metrics, classifier: &Classifier, cfg: &Config) {
    metrics.pipeline.declare_findings(classifier.catalog().into_iter().map(|(r, sev)| FindingLabels {
        kind: r.kind.as_str(),
        rule: r.name,
        severity: sev.as_str(),
    }));
    let enrich_reasons: Vec<&'static str> = ["not_container"]
        .into_iter()
        .chain(pipeline::emit::INCOMPLETE_REASONS)
        .chain(enrich::cri::UNAVAILABLE_REASONS)
        .chain(
            [crate::classify::baseline::STATE, pipeline::config_drift::MEMORY]
                .into_iter()
                .flat_map(|k| [k.corrupt, k.io]),
        )
        .collect();
    let not_findings: Vec<&'static str> = NoFinding::ALL.iter().map(|r| r.as_str()).collect();
    metrics.pipeline.declare_reasons(&Event::KINDS, &DecodeError::REASONS, &enrich_reasons, &not_findings);
    // Set for real before every scrape (health::Health::export).
    for check in crate::health::CHECKS {
        metrics.health.set(check, false);
    }
    metrics.pipeline.declare_event_drops(&bpf::queue::DROP_SERIES);
    // One redaction series per pattern the config turns on (bounded by the config).
    for pattern in cfg.redaction.spec().labels() {
        let _ = metrics.pipeline.redaction_counter(&pattern);
    }
    let order = crate::config::METRIC_LABELS;
    metrics.containers.set_labels(order.into_iter().filter(|n| cfg.metrics.labels.iter().any(|l| l == n)).collect());
}

fn load_sensor(cfg: &Config, opts: &Options, classifier: &Classifier) -> Result<Sensor, AgentError> {
    let mut sopts = SensorOptions::from_config(&cfg.sensor);
    sopts.emit_all_execs = opts.emit_all_execs;
    sopts.btf_path = opts.btf.clone();
    sopts.file_events_per_sec = cfg.rules.file.events_per_sec;
    sopts.scratch_prefixes = cfg.rules.file.ignore_prefixes.clone();
    let names = classifier.names().kernel_entries();
    let sensor =
        tokio::task::block_in_place(|| tracing::info_span!("sensor.load").in_scope(|| Sensor::load(&sopts, &names)))?;
    Ok(sensor)
}

/// Protect mode's arming task, over the policy in force (reloads included).
fn protector(
    cfg: &Config,
    sensor: &mut Sensor,
    gate: &Arc<PolicyGate>,
    registry: &Arc<Registry>,
    cancel: &CancellationToken,
) -> Option<Arc<pipeline::protect::Protector>> {
    let maps = sensor.take_protect()?;
    let wait = Duration::from_millis(cfg.runtime.metadata_wait_ms);
    let p = pipeline::protect::Protector::new(maps, gate.clone(), registry.clone(), wait);
    p.clone().run(cancel.clone());
    Some(p)
}

/// The runtime client, the Kubernetes API index and the registry joining them.
async fn start_registry(cfg: &Config, metrics: &Metrics, cancel: &CancellationToken) -> Arc<Registry> {
    let cri = if cfg.runtime.enabled {
        let endpoint = match cfg.runtime.endpoint.as_str() {
            "" => None,
            e => enrich::cri::parse_endpoint(e).ok(),
        };
        let cri_cfg = CriConfig { endpoint, ..Default::default() };
        Some(Cri::spawn(cri_cfg, metrics.cri.clone(), cancel.clone()))
    } else {
        tracing::info!("runtime metadata disabled: findings carry container ids only (node-only mode)");
        None
    };
    // Kubernetes API (optional): owner workloads, pod specs, ephemeral containers.
    let kube = enrich::kube::start(&cfg.kubernetes, crate::node::name(), metrics.kube.clone(), cancel.clone()).await;
    metrics.kube.declare(kube.is_some());
    let rcfg = RegistryConfig { grace: Duration::from_secs(cfg.runtime.grace_s), ..Default::default() };
    Registry::new(rcfg, cri, kube, metrics.registry_stats.clone(), metrics.cri.clone())
}

/// The network baselines' directory can be written, or the agent says so at
/// startup (they would be lost at every restart, silently).
fn check_state_dir(rule: &crate::config::NetworkRule) -> Result<(), AgentError> {
    if rule.state_dir.is_empty() {
        return Ok(());
    }
    let dir = std::path::Path::new(&rule.state_dir);
    // Per-process name: another agent probing the same directory at the same
    // moment must not delete this one's file (a false "cannot write").
    let probe = dir.join(format!(".driftwatch-write-test.{}", std::process::id()));
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b"ok"))
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| {
            AgentError::Config(format!(
                "rules.network.state_dir {}: cannot write there ({e}): network baselines and reported configuration \
                 findings would be lost at every restart; fix the path or its mount, or set state_dir: \"\" to keep \
                 them in memory only",
                dir.display()
            ))
        })
}

/// Network drift's judge, with its persisted baselines; a bad state file is
/// reported and set aside, never fatal.
fn network_judge(cfg: &Config, metrics: &Metrics) -> Option<Arc<NetworkJudge>> {
    if !cfg.rules.network.enabled {
        return None;
    }
    let (judge, err) = NetworkJudge::new(&cfg.rules.network);
    if let Some(e) = err {
        metrics.pipeline.enrich_failure(e.reason());
        tracing::error!("{e}");
    }
    Some(Arc::new(judge))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
