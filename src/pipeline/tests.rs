//! The pipeline against a runtime that answers late (the fake CRI runtime of
//! `enrich::cri::fake`, on a Unix socket, with a delay): what it decides from
//! the event alone never waits for the runtime.

use super::*;
use crate::{
    classify::network::NetworkJudge,
    config::Config,
    containers::RegistryConfig,
    enrich::cri::{Cri, CriConfig, fake::*},
    event::{NetOp, Process, Transport},
    metrics::Metrics,
    sink::Fanout,
};

/// A listener of container `cid(1)`'s process (a kubelet cgroupfs path) on `addr`:8080.
fn listen(addr: [u8; 4]) -> Event {
    let path = format!("kubepods/besteffort/pod{UID}/{}", cid(1));
    Event::Net(NetEvent {
        proc: Process::for_test("nginx", &path),
        op: NetOp::Listen,
        transport: Transport::Tcp,
        addr: addr.into(),
        port: 8080,
    })
}

/// `driftwatch_events_not_drift_total{reason}` in the exposition.
fn not_drift(m: &Metrics, reason: &str) -> f64 {
    let series = format!("driftwatch_events_not_drift_total{{reason=\"{reason}\"}} ");
    m.encode().lines().find_map(|l| l.strip_prefix(series.as_str())?.trim().parse().ok()).unwrap_or(0.0)
}

#[tokio::test]
async fn an_unsettled_containers_loopback_endpoint_is_dropped_at_once_and_another_waits() {
    let (d, sock, f, stop) = serve_one_pod("pipeline-net-wait").await;
    let cfg_cri = CriConfig { endpoint: Some(sock), request_timeout: Duration::from_secs(10) };
    let metrics = Arc::new(Metrics::new());
    let cri = Cri::spawn(cfg_cri, metrics.cri.clone(), stop.clone());
    until("connected", Duration::from_secs(5), || cri.connected()).await;
    // The runtime now takes 3 s to say what the container is: its first seconds.
    f.set_delay(Duration::from_secs(3));
    let registry =
        Registry::new(RegistryConfig::default(), Some(cri), None, metrics.registry_stats.clone(), metrics.cri.clone());
    let mut cfg = Config::default();
    cfg.rules.network.state_dir.clear();
    cfg.rules.network.allowed_ports.clear();
    let (tx, _rx) = tokio::sync::mpsc::channel(16);
    let mut fanout = Fanout::default();
    fanout.add("findings", tx, &metrics);
    let emitter = Arc::new(Emitter::new(registry.clone(), metrics.clone(), fanout, Duration::from_secs(5)));
    let p = Pipeline::new(Deps {
        classifier: Arc::new(Classifier::new(&cfg)),
        emitter,
        registry: registry.clone(),
        network: Some(Arc::new(NetworkJudge::new(&cfg.rules.network).0)),
        file: None,
        not_container: None,
        drift_marks: None,
        protect: None,
    });

    p.handle(listen([127, 0, 0, 1]));
    assert!(registry.settled(&cid(1)).is_none(), "the runtime has not answered yet");
    assert_eq!(not_drift(&metrics, "loopback"), 1.0, "decided during handle, from the event alone");
    assert_eq!(metrics.pipeline.findings_waiting.get(), 0, "nothing waits for the runtime");

    // An endpoint the workload's baseline must judge waits for the runtime
    // (a bounded time), to be judged under the workload's key.
    p.handle(listen([0, 0, 0, 0]));
    assert_eq!(metrics.pipeline.findings_waiting.get(), 1, "waits for the container's metadata");
    until("judged once the runtime answered", Duration::from_secs(10), || metrics.pipeline.findings_waiting.get() == 0)
        .await;
    assert_eq!(not_drift(&metrics, "baseline_learning"), 1.0, "learned under the workload");
    stop.cancel();
    let _ = std::fs::remove_dir_all(d);
}
