//! Periodic jobs: one shape for every "do this every N seconds until
//! shutdown" of the agent, each job owned by the module whose state it keeps.

use std::{future::Future, ops::ControlFlow, time::Duration};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Runs `job` every `period` (the first time after one period) until
/// `cancel` fires or `job` breaks. A slow round delays the next one instead
/// of bunching rounds up.
pub fn spawn_every<F, Fut>(period: Duration, cancel: CancellationToken, mut job: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ControlFlow<()>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            if job().await.is_break() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    };

    #[tokio::test]
    async fn runs_until_break_or_cancel() {
        let n = Arc::new(AtomicU32::new(0));
        let m = n.clone();
        let h = spawn_every(Duration::from_millis(5), CancellationToken::new(), move || {
            let m = m.clone();
            async move {
                if m.fetch_add(1, Ordering::SeqCst) == 2 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
            }
        });
        h.await.unwrap();
        assert_eq!(n.load(Ordering::SeqCst), 3);
        let cancel = CancellationToken::new();
        let h = spawn_every(Duration::from_secs(3600), cancel.clone(), || async { ControlFlow::Continue(()) });
        cancel.cancel();
        h.await.unwrap();
    }
}
