//! Bounded growth: deletes decided request rows and counted orders older
//! than the retention horizon. Published outbox rows need nothing: the relay
//! deletes them once the broker acknowledged them.
//!
//! Safe with several worker processes: each round takes its rows with
//! `FOR UPDATE SKIP LOCKED`, so two processes delete different rows.

use sqlx::postgres::PgQueryResult;
use sqlx::PgPool;

/// Rows one statement deletes; a round repeats until less were due.
const CHUNK: i64 = 5_000;

/// What one round deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Decided `requests` rows.
    pub requests: u64,
    /// `stats_counted_orders` rows.
    pub counted_orders: u64,
}

/// Deletes decided requests (accepted and completed before the horizon)
/// and counted orders (counted before it). PENDING requests stay: an
/// undecided request is an operator's business, never silently dropped.
pub async fn prune(pool: &PgPool, retention: chrono::TimeDelta) -> Result<Pruned, sqlx::Error> {
    let secs = retention.num_seconds() as f64;
    let pruned = Pruned {
        requests: in_chunks(|| {
            sqlx::query!(
                "DELETE FROM requests WHERE id IN (
                     SELECT id FROM requests
                     WHERE accepted_at < now() - make_interval(secs => $1)
                       AND status <> 'PENDING' AND completed_at < now() - make_interval(secs => $1)
                     LIMIT $2 FOR UPDATE SKIP LOCKED)",
                secs,
                CHUNK
            )
            .execute(pool)
        })
        .await?,
        counted_orders: in_chunks(|| {
            sqlx::query!(
                "DELETE FROM stats_counted_orders WHERE order_id IN (
                     SELECT order_id FROM stats_counted_orders
                     WHERE counted_at < now() - make_interval(secs => $1)
                     LIMIT $2 FOR UPDATE SKIP LOCKED)",
                secs,
                CHUNK
            )
            .execute(pool)
        })
        .await?,
    };
    if pruned != Pruned::default() {
        metrics::counter!("pruned_rows_total", "table" => "requests").increment(pruned.requests);
        metrics::counter!("pruned_rows_total", "table" => "stats_counted_orders")
            .increment(pruned.counted_orders);
        tracing::info!(
            requests = pruned.requests,
            counted_orders = pruned.counted_orders,
            "pruned rows past the retention horizon"
        );
    }
    Ok(pruned)
}

/// Runs `delete` (of at most a chunk) until it deletes less than a chunk;
/// returns how many rows it deleted.
async fn in_chunks<F, Fut>(mut delete: F) -> Result<u64, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<PgQueryResult, sqlx::Error>>,
{
    let mut total = 0;
    loop {
        let deleted = delete().await?.rows_affected();
        total += deleted;
        if (deleted as i64) < CHUNK {
            return Ok(total);
        }
    }
}
