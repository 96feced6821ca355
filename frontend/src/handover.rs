//! Handing desired state to a root-side applier (the gateway to init, the volume exports to the
//! storage controller): one loop that runs a blocking step at start and after every change of
//! the cloud's state (and, when asked, every `retry` as well), passing each step what the last
//! one handed over so an unchanged state is not written again.

use std::time::Duration;
use tokio::sync::watch;

/// Runs `step(last)` on the blocking pool at start, after every change on `changed`, and every
/// `retry` if given; `step` returns what it handed over (or `last` again when it could not).
pub async fn run<T, F>(
    what: &'static str,
    mut changed: watch::Receiver<u64>,
    retry: Option<Duration>,
    step: F,
) where
    T: Send + 'static,
    F: Fn(Option<T>) -> Option<T> + Send + Sync + 'static,
{
    let step = std::sync::Arc::new(step);
    let mut last: Option<T> = None;
    loop {
        let (step, previous) = (step.clone(), last.take());
        last = tokio::task::spawn_blocking(move || step(previous))
            .await
            .unwrap_or_else(|e| {
                tracing::error!("{what}: handing over: {e}");
                None
            });
        let wait = changed.changed();
        match retry {
            Some(every) => {
                // A timeout is a retry; a closed channel ends the loop.
                if let Ok(Err(_)) = tokio::time::timeout(every, wait).await {
                    return;
                }
            }
            None => {
                if wait.await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Milliseconds since the epoch: a generation later than any a previous process wrote.
pub fn now_ms() -> u64 {
    (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH))
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
