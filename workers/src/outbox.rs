//! The outbox relay: publishes committed events in id order with the
//! idempotent producer, then deletes them. One relay is active at a time
//! (session advisory lock); the others stand by.

use std::time::Duration;

use platform::kafka::{self, OutgoingRecord};
use rdkafka::producer::FutureProducer;
use schemas::{Topic, TopicNames};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use platform::db::OUTBOX_CHANNEL;

/// Advisory lock key of the relay.
const RELAY_LOCK: i64 = 0x0b00_c0de_0002;
/// Events per round.
const ROUND: i64 = 1000;

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    event_id: Uuid,
    topic: String,
    event_key: String,
    payload: serde_json::Value,
    request_id: Option<Uuid>,
}

/// Runs the relay until `cancel` fires.
pub async fn run(
    pool: PgPool,
    producer: FutureProducer,
    topics: TopicNames,
    produce_timeout: Duration,
    cancel: CancellationToken,
) {
    loop {
        if let Err(error) = lead(&pool, &producer, &topics, produce_timeout, &cancel).await {
            tracing::warn!(%error, "outbox relay interrupted; retrying");
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Takes the relay lock if free and publishes until cancelled or a failure.
async fn lead(
    pool: &PgPool,
    producer: &FutureProducer,
    topics: &TopicNames,
    produce_timeout: Duration,
    cancel: &CancellationToken,
) -> Result<(), anyhow::Error> {
    let mut lock_conn = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(RELAY_LOCK)
        .fetch_one(&mut *lock_conn)
        .await?;
    if !locked {
        return Ok(());
    }
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(OUTBOX_CHANNEL).await?;
    let result = async {
        loop {
            let published = publish_round(pool, producer, topics, produce_timeout).await?;
            if published as i64 >= ROUND {
                continue;
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                notification = listener.recv() => { notification?; }
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
    .await;
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(RELAY_LOCK)
        .execute(&mut *lock_conn)
        .await;
    result
}

/// Publishes up to [`ROUND`] events and deletes them once acknowledged.
pub async fn publish_round(
    pool: &PgPool,
    producer: &FutureProducer,
    topics: &TopicNames,
    produce_timeout: Duration,
) -> Result<usize, anyhow::Error> {
    let rows: Vec<OutboxRow> = sqlx::query_as(
        "SELECT id, event_id, topic, event_key, payload, request_id FROM outbox ORDER BY id LIMIT $1",
    )
    .bind(ROUND)
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let sends = rows.iter().map(|row| {
        let topic = Topic::ALL
            .iter()
            .find(|t| t.base_name() == row.topic)
            .map(|t| topics.name(*t));
        async move {
            let topic = topic.ok_or_else(|| {
                anyhow::anyhow!("outbox row {} names unknown topic {}", row.id, row.topic)
            })?;
            let mut headers = vec![("event-id", row.event_id.to_string())];
            if let Some(request_id) = row.request_id {
                headers.push((schemas::HEADER_REQUEST_ID, request_id.to_string()));
                headers.push((
                    schemas::HEADER_TRACEPARENT,
                    schemas::traceparent_for(request_id),
                ));
            }
            let record = OutgoingRecord {
                topic,
                key: row.event_key.clone(),
                payload: serde_json::to_vec(&row.payload)?,
                headers,
            };
            kafka::produce(producer, &record, produce_timeout).await?;
            anyhow::Ok(())
        }
    });
    // Sent in id order; the idempotent producer keeps that order per
    // partition. Nothing is deleted unless every send was acknowledged.
    for result in futures::future::join_all(sends).await {
        result?;
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
        .bind(&ids)
        .execute(pool)
        .await?;
    metrics::counter!("outbox_published_total").increment(ids.len() as u64);
    Ok(ids.len())
}
