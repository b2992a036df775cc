//! Wires the stages: sensor -> reader thread -> pipeline (enrich, classify)
//! -> sinks, plus the HTTP server. Every arrow is a bounded queue.

use crate::{
    bpf::{self, Sensor, SensorOptions},
    classify::Classifier,
    config::Config,
    event::Event,
    pipeline::Pipeline,
    server::{self, Health},
    sink::{Fanout, json, metrics::Metrics},
};
use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Bpf(#[from] bpf::BpfError),
    #[error("cannot listen on {addr} for /metrics: {source} (choose another with --metrics-addr)")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("cannot start thread {name}: {source}")]
    Thread { name: &'static str, source: std::io::Error },
    #[error("{0}")]
    Sink(String),
}

/// Queue name for findings waiting for the stdout sink.
const STDOUT_QUEUE: &str = "findings_stdout";

#[derive(Debug, Default)]
pub struct Options {
    pub emit_all_execs: bool,
    /// Kernel BTF file instead of /sys/kernel/btf/vmlinux.
    pub btf: Option<std::path::PathBuf>,
}

/// Runs until SIGINT/SIGTERM or until `cancel` fires.
pub async fn run(cfg: Config, opts: Options, cancel: CancellationToken) -> Result<(), AgentError> {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let listener =
        server::bind(cfg.metrics_addr).await.map_err(|source| AgentError::Listen { addr: cfg.metrics_addr, source })?;
    let local = listener.local_addr().unwrap_or(cfg.metrics_addr);
    tokio::spawn(server::serve(listener, metrics.clone(), health.clone(), cancel.clone()));
    tracing::info!(addr = %local, "serving /metrics, /healthz, /readyz");

    let classifier = Classifier::new(&cfg);
    metrics.declare_findings(&classifier.catalog());
    metrics.containers.set_labels(&cfg.metrics.labels);
    let mut sopts = SensorOptions::from_config(&cfg.sensor);
    sopts.emit_all_execs = opts.emit_all_execs;
    sopts.btf_path = opts.btf;
    sopts.file_events_per_sec = cfg.rules.file.events_per_sec;
    let names = classifier.names().kernel_entries();
    let mut sensor =
        tokio::task::block_in_place(|| tracing::info_span!("sensor.load").in_scope(|| Sensor::load(&sopts, &names)))?;
    if let Some(k) = sensor.take_kstats() {
        metrics.set_kernel_source(k);
    }
    metrics.set_programs_attached(sensor.attached as i64);

    let cap = cfg.pipeline.queue_capacity;
    let (ev_tx, ev_rx) = mpsc::channel::<Vec<Event>>(bpf::reader::batch_capacity(cap));
    let mut fanout = Fanout::default();
    let (stdout_tx, stdout_rx) = mpsc::channel(cap);
    fanout.add(STDOUT_QUEUE, stdout_tx, &metrics);
    let net_sinks = crate::sink::NetworkSinks::start(&cfg, &metrics, &mut fanout).map_err(AgentError::Sink)?;

    let stop = Arc::new(AtomicBool::new(false));
    let ring = sensor.take_ring().expect("ring buffer is taken once");
    let reader = bpf::reader::spawn(
        ring,
        Duration::from_millis(cfg.sensor.drain_interval_ms),
        ev_tx,
        metrics.clone(),
        stop.clone(),
    )
    .map_err(|source| AgentError::Thread { name: "dw-ringbuf", source })?;
    let m = metrics.clone();
    let stdout_sink = std::thread::Builder::new()
        .name("dw-stdout".into())
        .spawn(move || json::run_stdout(stdout_rx, m))
        .map_err(|source| AgentError::Thread { name: "dw-stdout", source })?;

    let mut pipeline = Pipeline::new(classifier, fanout, metrics.clone());
    pipeline.not_container = sensor.take_not_container();
    pipeline.drift_marks = sensor.take_drift_marks();
    pipeline.metadata_wait = Duration::from_millis(cfg.runtime.metadata_wait_ms);
    if cfg.runtime.enabled {
        let endpoint = match cfg.runtime.endpoint.as_str() {
            "" => None,
            e => crate::enrich::cri::parse_endpoint(e).ok(),
        };
        let cri_cfg = crate::enrich::cri::CriConfig {
            endpoint,
            grace: Duration::from_secs(cfg.runtime.grace_s),
            ..Default::default()
        };
        pipeline.cri = Some(crate::enrich::cri::Cri::spawn(cri_cfg, cancel.clone()));
    } else {
        tracing::info!("runtime metadata disabled: findings carry container ids only (node-only mode)");
    }
    let network = if cfg.rules.network.enabled {
        let (judge, err) = crate::classify::network::NetworkJudge::new(&cfg.rules.network);
        if let Some(e) = err {
            metrics.enrich_failure(match e.reason() {
                "corrupt" => "baseline_corrupt",
                _ => "baseline_io",
            });
            tracing::error!("{e}");
        }
        Some(Arc::new(judge))
    } else {
        None
    };
    pipeline.network = network.clone();
    if cfg.rules.file.enabled {
        pipeline.file = Some(crate::classify::file::FileJudge::new(
            &cfg.rules.file,
            cfg.rules.package.severity,
            pipeline.container_fs.clone(),
        ));
    }
    // Kubernetes API (optional): owner workloads, pod specs, ephemeral containers.
    pipeline.kube = crate::enrich::kube::start(&cfg.kubernetes, &crate::classify::node_name(), cancel.clone()).await;
    metrics.declare_kube(pipeline.kube.is_some());
    if let Some(k) = &pipeline.kube {
        let m = metrics.clone();
        k.on_error(move |reason| m.kube_error(reason));
    }
    let pipeline = Arc::new(pipeline);
    // Configuration drift and rootfs posture, once per container.
    let settings = crate::classify::config_drift::Settings {
        enabled: cfg.rules.config.enabled,
        approved: crate::classify::config_drift::normalise_approved(&cfg.rules.config.approved_digests),
        interval: Duration::from_secs(5),
        api_patience: 3,
    };
    tokio::spawn(crate::classify::config_drift::run(
        settings,
        pipeline.clone(),
        pipeline.cri.clone(),
        pipeline.kube.clone(),
        cancel.clone(),
    ));
    if let Some(judge) = network.clone() {
        // Persist learned baselines now and then; a failure is logged, never fatal.
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let j = judge.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || j.save()).await {
                    tracing::warn!("{e}");
                }
            }
        });
    }
    let pipeline = tokio::spawn(pipeline.run(ev_rx));

    if let Some(mut pre) = sensor.take_preexisting() {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let (p, left) = match tokio::task::spawn_blocking(move || {
                    let left = pre.prune();
                    (pre, left)
                })
                .await
                {
                    Ok(v) => v,
                    Err(_) => return,
                };
                pre = p;
                if left == 0 {
                    return; // every container that predates the agent is gone
                }
            }
        });
    }

    // Retire per-container series of containers that are gone.
    let m = metrics.clone();
    let sweep_cancel = cancel.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(15));
        loop {
            tokio::select! {
                _ = sweep_cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            if m.containers.tracked().is_empty() {
                continue;
            }
            let Ok(alive) = tokio::task::spawn_blocking(crate::sink::containers::live_container_ids).await else {
                return;
            };
            m.containers.sweep(&alive, std::time::Instant::now());
        }
    });

    health.set_ready(true);
    tracing::info!(
        programs = sensor.attached,
        host_mntns = sensor.host_mntns,
        "driftwatch sensor attached; findings stream to stdout"
    );

    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = shutdown_signal() => {}
    }
    tracing::info!("shutting down");
    health.set_ready(false);
    cancel.cancel();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || reader.join()).await;
    let _ = pipeline.await; // ends when the reader drops its sender
    let _ = tokio::task::spawn_blocking(move || stdout_sink.join()).await;
    net_sinks.shutdown(&cfg).await; // bounded final flush of OTLP / Alertmanager
    if let Some(judge) = network
        && let Err(e) = judge.save()
    {
        tracing::warn!("{e}");
    }
    drop(sensor);
    Ok(())
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
