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

pub fn spawn(
    mut ring: RingBuf<MapData>,
    interval: Duration,
    tx: mpsc::Sender<event::Event>,
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
            while let Some(item) = ring.next() {
                match event::decode(&item) {
                    Ok(ev) => {
                        metrics.event(match ev {
                            event::Event::Exec(_) => "exec",
                        });
                        // Never block the reader: a stalled pipeline must not
                        // back up into the kernel. Overflow is counted.
                        if tx.try_send(ev).is_err() {
                            metrics.queue_drop(QUEUE);
                        }
                    }
                    Err(e) => {
                        metrics.decode_error(e.reason());
                        tracing::debug!(error = %e, "undecodable kernel record");
                    }
                }
            }
            if tx.is_closed() {
                break;
            }
        }
    })
}
