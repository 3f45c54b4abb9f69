//! Queue admission: expire ACTIVE tokens past their time, then admit WAITING
//! tokens in join order up to the per-schedule limit.

use std::time::Duration;

use sqlx::PgPool;

/// Advisory lock key of the admission job.
const ADMISSION_LOCK: i64 = 0x0b00_c0de_0001;

/// One admission round. Returns how many tokens were admitted.
pub async fn admit(
    pool: &PgPool,
    active_limit: i64,
    active_ttl: Duration,
) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let locked = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_xact_lock($1) AS "locked!""#,
        ADMISSION_LOCK
    )
    .fetch_one(&mut *tx)
    .await?;
    if !locked {
        // Another worker process is admitting right now.
        return Ok(0);
    }
    let expired = sqlx::query!(
        "UPDATE reservation_queue SET status = 'EXPIRED', updated_at = now()
         WHERE status = 'ACTIVE' AND expires_at <= now()"
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let admitted = sqlx::query!(
        "WITH active AS (
             SELECT concert_schedule_id, count(*) AS n FROM reservation_queue
             WHERE status = 'ACTIVE' GROUP BY concert_schedule_id
         ), ranked AS (
             SELECT id, concert_schedule_id,
                    row_number() OVER (PARTITION BY concert_schedule_id ORDER BY queue_no) AS place
             FROM reservation_queue WHERE status = 'WAITING'
         )
         UPDATE reservation_queue q
         SET status = 'ACTIVE', activated_at = now(), updated_at = now(),
             expires_at = now() + make_interval(secs => $2)
         FROM ranked r LEFT JOIN active a ON a.concert_schedule_id = r.concert_schedule_id
         WHERE q.id = r.id AND r.place <= $1 - coalesce(a.n, 0)",
        active_limit,
        active_ttl.as_secs_f64()
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    if expired > 0 || admitted > 0 {
        metrics::counter!("queue_tokens_admitted_total").increment(admitted);
        metrics::counter!("queue_tokens_expired_total").increment(expired);
        tracing::debug!(admitted, expired, "queue admission round");
    }
    Ok(admitted)
}
