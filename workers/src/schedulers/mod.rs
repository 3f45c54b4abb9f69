//! Periodic jobs: how they are run, and the one that is no domain's
//! (pruning). The concert jobs live in `concert`. Each is safe with several
//! worker processes running: queue admission takes a transaction-level
//! advisory lock, hold expiry and pruning claim rows with
//! `FOR UPDATE SKIP LOCKED`.

pub mod prune;

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `tick` every `interval` until `cancel` fires; failures are logged
/// and the next tick tries again. Ends with `Ok` (a task of a worker's
/// task set).
pub async fn every<F, Fut>(
    name: &'static str,
    interval: Duration,
    cancel: CancellationToken,
    mut tick: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut timer = tokio::time::interval(interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = timer.tick() => {}
        }
        if let Err(error) = tick().await {
            metrics::counter!("scheduler_failures_total", "job" => name).increment(1);
            tracing::warn!(job = name, error = %format!("{error:#}"), "scheduled job failed");
        }
    }
}
