//! Every accepted request has exactly one decided outcome.

use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// What became of the accepted requests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutcomeCount {
    /// Requests the clients were told 202.
    pub accepted: usize,
    /// Of those, decided (SUCCEEDED, REJECTED or FAILED).
    pub decided: usize,
    /// Still PENDING.
    pub pending: usize,
    /// Without any row at all (lost between 202 and the lane).
    pub missing: usize,
}

impl OutcomeCount {
    /// Whether every accepted request is decided.
    pub fn all_decided(&self) -> bool {
        self.decided == self.accepted
    }
}

async fn count(pool: &PgPool, accepted: &[Uuid]) -> anyhow::Result<OutcomeCount> {
    let counts = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE status <> 'PENDING') AS "decided!",
                  count(*) FILTER (WHERE status = 'PENDING') AS "pending!"
           FROM requests WHERE id = ANY($1)"#,
        accepted
    )
    .fetch_one(pool)
    .await?;
    let (decided, pending) = (counts.decided as usize, counts.pending as usize);
    Ok(OutcomeCount {
        accepted: accepted.len(),
        decided,
        pending,
        missing: accepted.len() - decided - pending,
    })
}

/// Waits up to `drain` for every request in `accepted` (distinct ids) to
/// be decided, then counts. The primary key makes a second outcome
/// impossible; [`crate::invariants`] checks each was applied once.
pub async fn wait_decided(
    pool: &PgPool,
    accepted: &[Uuid],
    drain: Duration,
) -> anyhow::Result<OutcomeCount> {
    let deadline = Instant::now() + drain;
    loop {
        let counted = count(pool, accepted).await?;
        if counted.all_decided() || Instant::now() >= deadline {
            return Ok(counted);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
