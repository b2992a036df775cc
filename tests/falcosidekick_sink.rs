//! The falcosidekick push (src/sink/falcosidekick.rs) against a local HTTP
//! receiver: events arrive as Falco JSON on `/`; a receiver that is down, slow
//! or rejecting costs bounded retries, every event is counted (sent, failed,
//! dropped), and the sink keeps taking events and delivers again once the
//! receiver answers. Not privileged: no agent, no containers.

#[path = "support/falcosidekick.rs"]
mod receiver;

use driftwatch::{
    classify::{Classifier, Detail, Subject, rules},
    config::Falcosidekick,
    metrics::Metrics,
    sink::{falco, falcosidekick::FalcosidekickSink},
};
use receiver::{Mode, Receiver};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

fn event(n: u32) -> bytes::Bytes {
    let c = Classifier::new(&driftwatch::config::Config::default());
    let s = Subject { id: "0f1e2d3c4b5a69788796a5b4c3d2e1f0", runtime: "containerd", pod_uid: None };
    let f = c.finding(&rules::EXEC_NEW_BINARY, s, 1, format!("drift {n}"), Detail::Exec(Default::default()));
    falco::render(&f)
}

fn metric(m: &Metrics, series: &str) -> f64 {
    let text = m.encode();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

fn events(m: &Metrics, result: &str) -> f64 {
    metric(m, &format!("driftwatch_falcosidekick_events_total{{result=\"{result}\"}}"))
}

fn requests(m: &Metrics, result: &str) -> f64 {
    metric(m, &format!("driftwatch_falcosidekick_requests_total{{result=\"{result}\"}}"))
}

/// Waits (a deadline, not a sleep) until `f` holds.
async fn until(what: &str, timeout: Duration, f: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn config(url: String) -> Falcosidekick {
    Falcosidekick { url, timeout_ms: 300, max_retries: 2, retry_initial_ms: 10, retry_max_ms: 20, ..Default::default() }
}

fn start(c: &Falcosidekick, m: &Arc<Metrics>) -> (tokio::sync::mpsc::Sender<bytes::Bytes>, FalcosidekickSink) {
    FalcosidekickSink::start(c, m.clone()).expect("valid settings").expect("a URL is set")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_as_falco_json_on_the_root_path() {
    let rx = Receiver::start(Mode::Ok);
    let m = Arc::new(Metrics::new());
    let mut c = config(format!("{}/", rx.url()));
    // The shutdown flush gets timeout_ms: generous, a loaded machine must not cut it short.
    c.timeout_ms = 10_000;
    c.headers.insert("X-Tenant".into(), "drift".into());
    let (tx, sink) = start(&c, &m);
    let e = event(1);
    tx.send(e.clone()).await.unwrap();
    until("the event", Duration::from_secs(10), || !rx.posts().is_empty()).await;
    let p = rx.posts().remove(0);
    assert_eq!(p.path, "/");
    let header = |k: &str| p.headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(header("content-type"), Some("application/json"));
    assert_eq!(header("x-tenant"), Some("drift"));
    assert_eq!(p.body, serde_json::from_slice::<serde_json::Value>(&e).unwrap());
    assert_eq!(p.body["source"], "driftwatch");
    assert_eq!(p.body["priority"], "Critical");
    until("sent counted", Duration::from_secs(5), || events(&m, "sent") == 1.0).await;
    assert_eq!(requests(&m, "ok"), 1.0);
    // Shutdown delivers what is queued.
    for n in 2..=5 {
        tx.send(event(n)).await.unwrap();
    }
    drop(tx);
    sink.shutdown(Duration::from_secs(30)).await;
    assert_eq!(rx.posts().len(), 5);
    assert_eq!(events(&m, "sent"), 5.0);
    assert_eq!(metric(&m, "driftwatch_falcosidekick_queued_events"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_retries_then_gives_up_and_counts_every_event() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let m = Arc::new(Metrics::new());
    let mut c = config(format!("http://{dead}"));
    c.queue_size = 2;
    // Each event waits 2 s before its one retry: the 10 are handed over long before
    // a queue of 2 has room again.
    (c.max_retries, c.retry_initial_ms, c.retry_max_ms) = (1, 2000, 2000);
    let (tx, _sink) = start(&c, &m);
    let batch: Vec<_> = (0..10).map(event).collect();
    for e in batch {
        tx.send(e).await.unwrap();
    }
    until("every event counted", Duration::from_secs(30), || events(&m, "failed") + events(&m, "dropped") == 10.0)
        .await;
    assert_eq!(events(&m, "sent"), 0.0);
    assert!(events(&m, "dropped") >= 1.0, "a queue of 2 holds at most 2 of 10 at once");
    let failed = events(&m, "failed");
    assert!(failed >= 1.0);
    assert_eq!(requests(&m, "error"), failed * 2.0, "each failed event: one try and max_retries (1) retry");
    assert_eq!(metric(&m, "driftwatch_falcosidekick_queued_events"), 0.0);
    // Still taking events.
    tx.send(event(11)).await.unwrap();
    until("the next event counted", Duration::from_secs(30), || events(&m, "failed") == failed + 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_receiver_times_out_then_recovers() {
    let rx = Receiver::start(Mode::Delay(Duration::from_secs(3)));
    let m = Arc::new(Metrics::new());
    let mut c = config(rx.url());
    c.timeout_ms = 200;
    c.max_retries = 1;
    let (tx, _sink) = start(&c, &m);
    tx.send(event(1)).await.unwrap();
    until("the slow event given up", Duration::from_secs(20), || events(&m, "failed") == 1.0).await;
    assert_eq!(requests(&m, "error"), 2.0, "one try, one retry, each timed out");
    until("the slow receiver reached", Duration::from_secs(10), || rx.requests() >= 1).await;
    rx.set_mode(Mode::Ok);
    tx.send(event(2)).await.unwrap();
    let recovered = |p: &receiver::Post| p.body["output"].to_string().contains("drift 2");
    until("the event after recovery", Duration::from_secs(20), || rx.posts().iter().any(recovered)).await;
    let p = rx.posts().into_iter().find(recovered).expect("found");
    assert_eq!(p.body["rule"], "exec_new_binary");
    until("sent counted", Duration::from_secs(5), || events(&m, "sent") == 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_events_are_not_retried() {
    let rx = Receiver::start(Mode::Status(400));
    let m = Arc::new(Metrics::new());
    let (tx, _sink) = start(&config(rx.url()), &m);
    tx.send(event(1)).await.unwrap();
    until("the rejected event counted", Duration::from_secs(10), || events(&m, "failed") == 1.0).await;
    assert_eq!(requests(&m, "error"), 1.0, "a 4xx is not retried");
    rx.set_mode(Mode::Status(503));
    tx.send(event(2)).await.unwrap();
    until("the 503 event given up", Duration::from_secs(10), || events(&m, "failed") == 2.0).await;
    assert_eq!(requests(&m, "error"), 4.0, "a 5xx is retried");
}

#[test]
fn bad_settings_are_errors_naming_the_key() {
    let m = Arc::new(Metrics::new());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _g = rt.enter();
    assert!(FalcosidekickSink::start(&Falcosidekick::default(), m.clone()).unwrap().is_none(), "off without a URL");
    let e = FalcosidekickSink::start(&config("sk:2801".into()), m.clone()).err().expect("an error");
    assert!(e.starts_with("outputs.falcosidekick.url:"), "{e}");
    let mut c = config("https://sk:2801".into());
    c.tls.ca_file = "/nonexistent/ca.pem".into();
    let e = FalcosidekickSink::start(&c, m).err().expect("an error");
    assert!(e.starts_with("outputs.falcosidekick.tls.ca_file:"), "{e}");
}
