//! Periodic jobs. Each is safe with several worker processes running: queue
//! admission takes a transaction-level advisory lock, hold expiry and
//! pruning claim rows with `FOR UPDATE SKIP LOCKED`.

pub mod hold_expiry;
pub mod prune;
pub mod queue_admission;

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `tick` every `interval` until `cancel` fires; failures are logged
/// and the next tick tries again.
pub async fn every<F, Fut>(
    name: &'static str,
    interval: Duration,
    cancel: CancellationToken,
    mut tick: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut timer = tokio::time::interval(interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = timer.tick() => {}
        }
        if let Err(error) = tick().await {
            metrics::counter!("scheduler_failures_total", "job" => name).increment(1);
            tracing::warn!(job = name, error = %format!("{error:#}"), "scheduled job failed");
        }
    }
}
