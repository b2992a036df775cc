//! Push of every finding, as a Falco event (src/sink/falco.rs), to
//! falcosidekick's `/` endpoint: one POST per event, which falcosidekick
//! forwards to the outputs it is configured with.
//!
//! Bounded: at most `queue_size` events wait; what comes beyond is dropped
//! and counted. One POST is in flight at a time; a failed POST is retried with
//! exponential backoff (`retry_initial_ms` doubling up to `retry_max_ms`), and
//! after `max_retries` the event is given up and counted; a 4xx answer (but
//! 429) gives it up at once. While falcosidekick is down the queue fills and
//! the excess is dropped: the pipeline never waits. At shutdown what is queued
//! gets `timeout_ms` to go out, without retries; the rest is counted dropped.
//! Counters: `driftwatch_falcosidekick_events_total{result="sent"|"failed"|"dropped"}`,
//! `driftwatch_falcosidekick_requests_total{result="ok"|"error"}` (retries
//! count again), gauge `driftwatch_falcosidekick_queued_events`.
//!
//! Transport as the Alertmanager push's (src/sink/http.rs): `https://` over
//! rustls with `tls` (CA file or system roots, client certificate for
//! falcosidekick's mutual TLS), credentials from files, fixed extra headers.

use super::http::{Auth, Endpoint, PostError, backoff, extra_headers, post};
use crate::{
    config::{Falcosidekick, PostUrl},
    metrics::Metrics,
    tls::{self, ClientTls},
};
use bytes::Bytes;
use std::{collections::VecDeque, sync::Arc, time::Duration};
use tokio::{sync::mpsc, task::JoinHandle, time::Instant};

/// Queue name of the falcosidekick sink in `driftwatch_userspace_drops_total`.
pub const QUEUE: &str = "findings_falcosidekick";

/// A running falcosidekick sink.
pub struct FalcosidekickSink {
    task: JoinHandle<()>,
    /// The configured URL (for the log).
    pub url: String,
}

impl FalcosidekickSink {
    /// `None` when no URL is configured. Loads the TLS files for an https://
    /// URL; errors are configuration errors naming the key. Feed the sink
    /// rendered Falco events through the returned sender.
    pub fn start(c: &Falcosidekick, metrics: Arc<Metrics>) -> Result<Option<(mpsc::Sender<Bytes>, Self)>, String> {
        if c.url.is_empty() {
            return Ok(None);
        }
        let url = PostUrl::parse(&c.url, "http://falcosidekick.falco:2801")
            .map_err(|e| format!("outputs.falcosidekick.url: {e}"))?;
        let connector = if url.https {
            let t = ClientTls::load(c.tls.files())
                .map_err(|e| format!("outputs.falcosidekick.tls.{}: {e}", e.field.key()))?;
            t.https_connector()
        } else {
            tls::http_connector()
        };
        let auth = Arc::new(Auth::new(&c.bearer_token_file, &c.basic_auth));
        if *auth != Auth::None && !url.https {
            tracing::warn!("falcosidekick: credentials are sent over plain http://; use https://");
        }
        let headers = Arc::new(extra_headers("outputs.falcosidekick", &c.headers)?);
        let endpoint = Endpoint::new(url.https, &url.authority, &url.path, connector, auth, headers)?;
        metrics.sinks.declare_falcosidekick();
        // The hand-off queue only absorbs bursts while the loop is busy; `queue_size` is the bound.
        let (tx, rx) = mpsc::channel(c.queue_size.clamp(16, 1024));
        let task = tokio::spawn(run(rx, endpoint, c.clone(), metrics));
        Ok(Some((tx, FalcosidekickSink { task, url: c.url.clone() })))
    }

    /// Waits for the final delivery (the sender must be closed); `limit` is a backstop.
    pub async fn shutdown(self, limit: Duration) {
        let abort = self.task.abort_handle();
        if tokio::time::timeout(limit, self.task).await.is_err() {
            abort.abort();
            tracing::warn!("falcosidekick: final delivery did not finish in {limit:?}; abandoned");
        }
    }
}

/// Says a failure once, then every 100th time: a dead receiver must not flood stderr.
fn worth_logging(failures: &mut u64) -> bool {
    *failures += 1;
    *failures == 1 || failures.is_multiple_of(100)
}

async fn run(mut rx: mpsc::Receiver<Bytes>, endpoint: Endpoint, c: Falcosidekick, metrics: Arc<Metrics>) {
    let m = &metrics.sinks;
    let timeout = Duration::from_millis(c.timeout_ms);
    let mut pending: VecDeque<Bytes> = VecDeque::new();
    let mut inflight: Option<JoinHandle<Result<(), PostError>>> = None;
    let mut attempt: u32 = 0;
    let mut retry_at: Option<Instant> = None;
    let mut open = true;
    let mut final_deadline: Option<Instant> = None;
    let mut failures = 0u64;
    loop {
        let now = Instant::now();
        if inflight.is_none()
            && retry_at.is_none_or(|t| now >= t)
            && let Some(event) = pending.front()
        {
            let (ep, body) = (endpoint.clone(), event.clone());
            inflight = Some(tokio::spawn(async move { post(&ep, body, timeout).await }));
        }
        m.set_falcosidekick_queued(pending.len());
        if !open && (pending.is_empty() || final_deadline.is_some_and(|d| now >= d)) {
            if let Some(h) = inflight.take() {
                h.abort();
            }
            if !pending.is_empty() {
                m.falcosidekick_events("dropped", pending.len() as u64);
                tracing::warn!(events = pending.len(), "falcosidekick: events not delivered by the shutdown deadline");
            }
            m.set_falcosidekick_queued(0);
            return;
        }
        tokio::select! {
            r = async { inflight.as_mut().expect("guarded").await }, if inflight.is_some() => {
                inflight = None;
                let r = r.unwrap_or_else(|e| Err(PostError::Retry(format!("task: {e}"))));
                m.falcosidekick_request(r.is_ok());
                let done = match r {
                    Ok(()) => {
                        m.falcosidekick_events("sent", 1);
                        true
                    }
                    Err(PostError::Permanent(e)) => {
                        m.falcosidekick_events("failed", 1);
                        if worth_logging(&mut failures) {
                            tracing::warn!(error = %e, failures, "falcosidekick rejected an event; not retried");
                        }
                        true
                    }
                    Err(PostError::Retry(e)) => {
                        attempt += 1;
                        if attempt > c.max_retries || !open {
                            m.falcosidekick_events("failed", 1);
                            if worth_logging(&mut failures) {
                                tracing::warn!(error = %e, attempts = attempt, failures, "falcosidekick unreachable; event given up");
                            }
                            true
                        } else {
                            let wait = backoff(c.retry_initial_ms, c.retry_max_ms, attempt);
                            if attempt == 1 {
                                tracing::debug!(error = %e, retry_in = ?wait, "falcosidekick push failed; retrying");
                            }
                            retry_at = Some(Instant::now() + wait);
                            false
                        }
                    }
                };
                if done {
                    pending.pop_front();
                    attempt = 0;
                    retry_at = None;
                }
            }
            e = rx.recv(), if open => match e {
                Some(e) if pending.len() >= c.queue_size => {
                    drop(e);
                    m.falcosidekick_events("dropped", 1);
                }
                Some(e) => pending.push_back(e),
                None => {
                    open = false;
                    final_deadline = Some(Instant::now() + timeout);
                    retry_at = None;
                }
            },
            _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() && inflight.is_none() => {}
            _ = tokio::time::sleep_until(final_deadline.unwrap_or_else(Instant::now)), if final_deadline.is_some() => {}
        }
    }
}
