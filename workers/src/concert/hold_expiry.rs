//! Hold expiry: publishes `reservation.expire` for unpaid holds past their
//! time, so the seat is released by the reservation lane in seat order.

use std::time::Duration;

use platform::kafka::{self, OutgoingRecord};
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

/// One round: claims due holds with one short statement (`SKIP LOCKED`,
/// so two processes split the work; no row stays locked while the broker
/// is asked), publishes their expire requests, and gives back the claims
/// of those it could not publish so the next round retries them at once.
/// Due is by the database's clock, the one the reservation lane decides
/// with.
pub async fn publish_due(
    pool: &PgPool,
    producer: &kafka::Producer,
    topics: &TopicNames,
    produce_timeout: Duration,
) -> anyhow::Result<usize> {
    let due = sqlx::query!(
        "UPDATE reservations SET expiry_requested_at = now()
         WHERE id IN (
             SELECT id FROM reservations
             WHERE status = 'PENDING' AND expires_at <= now()
               AND (expiry_requested_at IS NULL
                    OR expiry_requested_at <= now() - make_interval(secs => $1))
             ORDER BY expires_at
             LIMIT 500
             FOR UPDATE SKIP LOCKED)
         RETURNING id, seat_id",
        REPUBLISH_AFTER_SECS
    )
    .fetch_all(pool)
    .await?;
    if due.is_empty() {
        return Ok(0);
    }
    let sends = due.iter().map(|hold| {
        let reservation_id = hold.id;
        let request_id = Uuid::new_v5(&EXPIRE_NAMESPACE, &reservation_id.to_be_bytes());
        let request = Request::ExpireHold(ExpireHold {
            reservation_id,
            seat_id: hold.seat_id,
        });
        let envelope = RequestEnvelope::new(request_id, request);
        async move {
            let record = OutgoingRecord::request(topics, &envelope)?;
            kafka::produce(producer, &record, produce_timeout).await?;
            anyhow::Ok(reservation_id)
        }
    });
    let mut failed: Vec<i64> = Vec::new();
    let mut first_error = None;
    for (result, hold) in futures::future::join_all(sends).await.into_iter().zip(&due) {
        if let Err(error) = result {
            failed.push(hold.id);
            first_error.get_or_insert(error);
        }
    }
    let published = due.len() - failed.len();
    metrics::counter!("holds_expiry_requested_total").increment(published as u64);
    if published > 0 {
        tracing::info!(count = published, "expire requests published");
    }
    if let Some(error) = first_error {
        sqlx::query!(
            "UPDATE reservations SET expiry_requested_at = NULL
             WHERE id = ANY($1) AND status = 'PENDING'",
            &failed
        )
        .execute(pool)
        .await?;
        return Err(error.context(format!("{} expire requests not published", failed.len())));
    }
    Ok(published)
}
