//! Every accepted request has exactly one outcome, and it is a business
//! outcome: `SUCCEEDED` or `REJECTED`. `FAILED` is what a lane writes when
//! it gives up on a request (a record it cannot read, a bug); for a
//! request the clients sent, that is a request dropped, not decided.

use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// What became of the accepted requests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutcomeCount {
    /// Requests the clients were told 202.
    pub accepted: usize,
    /// Of those, SUCCEEDED.
    pub succeeded: usize,
    /// Of those, REJECTED (a business refusal: seat taken, out of stock).
    pub rejected: usize,
    /// Of those, FAILED: given up by a lane.
    pub failed: usize,
    /// Still PENDING.
    pub pending: usize,
    /// Without any row at all (lost between 202 and the lane).
    pub missing: usize,
    /// The first few FAILED ones, with their error codes.
    pub failed_examples: Vec<(Uuid, Option<String>)>,
}

impl OutcomeCount {
    /// Requests with a business outcome (SUCCEEDED or REJECTED).
    pub fn decided(&self) -> usize {
        self.succeeded + self.rejected
    }

    /// Whether every accepted request has a business outcome.
    pub fn all_decided(&self) -> bool {
        self.decided() == self.accepted
    }

    /// Whether every accepted request has some final row (no PENDING, none
    /// missing): waiting longer changes nothing.
    fn settled(&self) -> bool {
        self.pending == 0 && self.missing == 0
    }
}

async fn count(pool: &PgPool, accepted: &[Uuid]) -> anyhow::Result<OutcomeCount> {
    let counts = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE status = 'SUCCEEDED') AS "succeeded!",
                  count(*) FILTER (WHERE status = 'REJECTED') AS "rejected!",
                  count(*) FILTER (WHERE status = 'FAILED') AS "failed!",
                  count(*) FILTER (WHERE status = 'PENDING') AS "pending!"
           FROM requests WHERE id = ANY($1)"#,
        accepted
    )
    .fetch_one(pool)
    .await?;
    let failed_examples = sqlx::query!(
        "SELECT id, error_code FROM requests WHERE id = ANY($1) AND status = 'FAILED' ORDER BY id LIMIT 10",
        accepted
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|row| (row.id, row.error_code))
    .collect();
    let as_usize = |n: i64| usize::try_from(n).unwrap_or_default();
    let (succeeded, rejected, failed, pending) = (
        as_usize(counts.succeeded),
        as_usize(counts.rejected),
        as_usize(counts.failed),
        as_usize(counts.pending),
    );
    Ok(OutcomeCount {
        accepted: accepted.len(),
        succeeded,
        rejected,
        failed,
        pending,
        missing: accepted
            .len()
            .saturating_sub(succeeded + rejected + failed + pending),
        failed_examples,
    })
}

/// Waits up to `drain` for every request in `accepted` (distinct ids) to
/// leave PENDING, then counts. The primary key makes a second outcome
/// impossible; [`crate::invariants`] checks each was applied once.
pub async fn wait_decided(
    pool: &PgPool,
    accepted: &[Uuid],
    drain: Duration,
) -> anyhow::Result<OutcomeCount> {
    let deadline = Instant::now() + drain;
    loop {
        let counted = count(pool, accepted).await?;
        if counted.settled() || Instant::now() >= deadline {
            return Ok(counted);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
