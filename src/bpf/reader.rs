//! The ring-buffer reader: a dedicated OS thread (never a tokio worker) that
//! drains on a short timer and whenever the kernel forces a wakeup (drift).

use crate::{event, sink::metrics::Metrics};
use aya::maps::{MapData, RingBuf};
use std::{
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};
use tokio::sync::mpsc;

/// Queue name used in `driftwatch_userspace_drops_total`.
pub const QUEUE: &str = "events";

/// Most events handed to the pipeline in one message. One message per drain
/// (not per event) keeps the pipeline from waking for every record.
pub const BATCH: usize = 256;

/// Sizes the batch queue so it holds about `events` events.
pub fn batch_capacity(events: usize) -> usize {
    events.div_ceil(BATCH).max(4)
}

pub fn spawn(
    mut ring: RingBuf<MapData>,
    interval: Duration,
    tx: mpsc::Sender<Vec<event::Event>>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    metrics.declare_queue(QUEUE);
    std::thread::Builder::new().name("dw-ringbuf".into()).spawn(move || {
        let fd = ring.as_raw_fd();
        let timeout = interval.as_millis().clamp(1, 1000) as i32;
        while !stop.load(Ordering::Relaxed) {
            let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd; the fd lives as long as `ring`.
            let _ = unsafe { libc::poll(&mut pfd, 1, timeout) };
            let mut batch = Vec::with_capacity(BATCH);
            let (mut execs, mut nets, mut files) = (0u64, 0u64, 0u64);
            loop {
                let Some(item) = ring.next() else { break };
                match event::decode(&item) {
                    Ok(ev) => {
                        match ev {
                            event::Event::Exec(_) => execs += 1,
                            event::Event::Net(_) => nets += 1,
                            event::Event::File(_) => files += 1,
                        }
                        batch.push(ev);
                    }
                    Err(e) => {
                        metrics.decode_error(e.reason());
                        tracing::debug!(error = %e, "undecodable kernel record");
                    }
                }
                drop(item);
                if batch.len() == BATCH {
                    send(&tx, std::mem::replace(&mut batch, Vec::with_capacity(BATCH)), &metrics);
                }
            }
            if execs > 0 {
                metrics.events("exec", execs);
            }
            if nets > 0 {
                metrics.events("net", nets);
            }
            if files > 0 {
                metrics.events("file", files);
            }
            if !batch.is_empty() {
                send(&tx, batch, &metrics);
            }
            if tx.is_closed() {
                break;
            }
        }
    })
}

/// Never blocks the reader: a stalled pipeline must not back up into the
/// kernel. What does not fit is counted, event by event.
fn send(tx: &mpsc::Sender<Vec<event::Event>>, batch: Vec<event::Event>, metrics: &Metrics) {
    if let Err(e) = tx.try_send(batch) {
        let lost = match e {
            mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b.len(),
        };
        metrics.queue_drops(QUEUE, lost as u64);
    }
}
