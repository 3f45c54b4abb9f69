//! Hold expiry: publishes `reservation.expire` for unpaid holds past their
//! time, so the seat is released by the reservation lane in seat order.

use std::time::Duration;

use platform::kafka::{self, OutgoingRecord};
use rdkafka::producer::FutureProducer;
use schemas::requests::ExpireHold;
use schemas::{Request, RequestEnvelope, TopicNames};
use sqlx::PgPool;
use uuid::Uuid;

/// Namespace of expire request ids: one id per reservation, so a re-published
/// expire request is recognised as a duplicate by the lane.
const EXPIRE_NAMESPACE: Uuid = Uuid::from_u128(0x3c59_e2a0_77b4_4f0e_8a1c_d0f2_6b9e_4a71);

/// How long after publishing an expire request the scheduler publishes it
/// again if the hold is still PENDING.
const REPUBLISH_AFTER_SECS: f64 = 30.0;

/// One round: claims due holds (`SKIP LOCKED`, so two processes split the
/// work), publishes their expire requests and marks them requested.
pub async fn publish_due(
    pool: &PgPool,
    producer: &FutureProducer,
    topics: &TopicNames,
    produce_timeout: Duration,
) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    let due: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT id, seat_id FROM reservations
         WHERE status = 'PENDING' AND expires_at <= now()
           AND (expiry_requested_at IS NULL
                OR expiry_requested_at <= now() - make_interval(secs => $1))
         ORDER BY expires_at
         LIMIT 500
         FOR UPDATE SKIP LOCKED",
    )
    .bind(REPUBLISH_AFTER_SECS)
    .fetch_all(&mut *tx)
    .await?;
    if due.is_empty() {
        return Ok(0);
    }
    let sends = due.iter().map(|(reservation_id, seat_id)| {
        let request_id = Uuid::new_v5(&EXPIRE_NAMESPACE, &reservation_id.to_be_bytes());
        let request = Request::ExpireHold(ExpireHold {
            reservation_id: *reservation_id,
            seat_id: *seat_id,
        });
        let envelope = RequestEnvelope::new(request_id, request);
        async move {
            let record = OutgoingRecord::request(topics, &envelope)?;
            kafka::produce(producer, &record, produce_timeout).await?;
            anyhow::Ok(())
        }
    });
    for result in futures::future::join_all(sends).await {
        result?;
    }
    let ids: Vec<i64> = due.iter().map(|(id, _)| *id).collect();
    sqlx::query("UPDATE reservations SET expiry_requested_at = now() WHERE id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    metrics::counter!("holds_expiry_requested_total").increment(ids.len() as u64);
    tracing::info!(count = ids.len(), "expire requests published");
    Ok(ids.len())
}
