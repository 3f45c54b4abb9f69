//! Dead letters: list them with their reasons, show one, and re-drive one to
//! its request topic under its original request id (`workers dlq ...`).
//!
//! A re-driven request is decided once: the command reopens the request's
//! FAILED outcome (a SUCCEEDED or REJECTED one is final and refuses the
//! replay), then publishes the record; the lane applies it like any new
//! request, and a second replay of the same dead letter finds it decided.

use std::time::Duration;

use api::status::RequestStatus;
use platform::kafka::{self, OutgoingRecord};
use platform::CommonConfig;
use schemas::Topic;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::engine::decode;

/// One dead-lettered record.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Dead-letter topic (with the deployment's prefix).
    pub topic: String,
    /// Partition in the dead-letter topic.
    pub partition: i32,
    /// Offset in the dead-letter topic.
    pub offset: i64,
    /// The original record's key.
    pub key: Option<String>,
    /// Why the lane refused it (`dlq-reason`).
    pub reason: Option<String>,
    /// Where it came from (`dlq-origin`: topic/partition/offset).
    pub origin: Option<String>,
    /// Its request id, when the payload carries a readable one.
    pub request_id: Option<Uuid>,
    /// The original payload (UTF-8, lossy).
    pub payload: String,
}

/// A dead letter no dead-letter topic could take, kept in Postgres.
#[derive(Debug, Clone, Serialize)]
pub struct ParkedLetter {
    /// Where it came from: topic/partition/offset.
    pub origin: String,
    /// The original record's key.
    pub key: Option<String>,
    /// Why the lane refused it.
    pub reason: String,
    /// Why the dead-letter topic could not take it.
    pub error: String,
    /// When it was parked.
    pub parked_at: chrono::DateTime<chrono::Utc>,
    /// The original payload (UTF-8, lossy).
    pub payload: String,
}

/// Every parked dead letter, oldest first.
pub async fn parked(pool: &PgPool) -> Result<Vec<ParkedLetter>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT origin_topic, origin_partition, origin_offset, record_key, payload, reason,
                error, parked_at
         FROM parked_dead_letters ORDER BY id"
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ParkedLetter {
            origin: format!(
                "{}/{}/{}",
                r.origin_topic, r.origin_partition, r.origin_offset
            ),
            key: r.record_key,
            reason: r.reason,
            error: r.error,
            parked_at: r.parked_at,
            payload: String::from_utf8_lossy(&r.payload).into_owned(),
        })
        .collect())
}

/// Why a dead-letter command failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// The topic has no dead-letter topic.
    #[error("{0} has no dead-letter topic; use one of: {1}")]
    NoDeadLetters(String, String),
    /// No record at that position.
    #[error("no dead letter at partition {partition} offset {offset} of {topic}")]
    NotFound {
        /// Dead-letter topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
    },
    /// The request was decided for good; replaying it would be a second
    /// effect (or nothing at all).
    #[error("request {0} is {1}: it was decided for good and is not replayed")]
    Decided(Uuid, String),
    /// The corrected payload names another request.
    #[error("the corrected payload must keep the request id {expected} (it has {found:?})")]
    OtherRequest {
        /// The dead letter's request id.
        expected: Uuid,
        /// The corrected payload's.
        found: Option<Uuid>,
    },
    /// The record would be dead-lettered again.
    #[error(
        "the lane would refuse this record again: {0} (correct it with --payload, or --force)"
    )]
    StillPoison(String),
    /// Kafka failed.
    #[error(transparent)]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The dead-letter topic could not be read whole.
    #[error(transparent)]
    Read(#[from] kafka::ReadError),
    /// Publishing failed.
    #[error(transparent)]
    Produce(#[from] kafka::ProduceError),
    /// Postgres failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The request topic named `name` (base name, e.g. `charge-requests`).
pub fn topic_named(name: &str) -> Result<Topic, DlqError> {
    let with_dlq: Vec<Topic> = Topic::ALL.into_iter().filter(|t| t.has_dlq()).collect();
    with_dlq
        .iter()
        .copied()
        .find(|t| t.base_name() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = with_dlq.iter().map(|t| t.base_name()).collect();
            DlqError::NoDeadLetters(name.to_owned(), names.join(", "))
        })
}

/// Every record of `topic`'s dead-letter topic, oldest first per partition.
pub fn list(common: &CommonConfig, topic: Topic) -> Result<Vec<DeadLetter>, DlqError> {
    let dlq = common.topics().dlq(topic);
    Ok(kafka::read_all(common, &dlq)?
        .into_iter()
        .map(|record| DeadLetter {
            topic: dlq.clone(),
            partition: record.partition,
            offset: record.offset,
            reason: record.header(schemas::HEADER_DLQ_REASON).map(str::to_owned),
            origin: record.header(schemas::HEADER_DLQ_ORIGIN).map(str::to_owned),
            request_id: decode::lenient_request_id(&record.payload),
            payload: String::from_utf8_lossy(&record.payload).into_owned(),
            key: record.key,
        })
        .collect())
}

/// The dead letter at `partition`/`offset` of `topic`'s dead-letter topic.
pub fn find(
    common: &CommonConfig,
    topic: Topic,
    partition: i32,
    offset: i64,
) -> Result<DeadLetter, DlqError> {
    list(common, topic)?
        .into_iter()
        .find(|l| l.partition == partition && l.offset == offset)
        .ok_or_else(|| DlqError::NotFound {
            topic: common.topics().dlq(topic),
            partition,
            offset,
        })
}

/// What a replay did.
#[derive(Debug, Clone, Serialize)]
pub struct Replayed {
    /// The request id it was published under (None for a payload without
    /// a readable one).
    pub request_id: Option<Uuid>,
    /// Where it was published.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Re-publishes `letter` (or `corrected`, a fixed payload that keeps its
/// request id) to its request topic under its original key and request id.
/// The request's FAILED outcome is reopened first, so the lane decides it
/// again, once. Refuses a request decided SUCCEEDED or REJECTED, and a
/// payload the lane would refuse again unless `force`.
pub async fn replay(
    common: &CommonConfig,
    pool: &PgPool,
    producer: &kafka::Producer,
    topic: Topic,
    letter: &DeadLetter,
    corrected: Option<&str>,
    force: bool,
) -> Result<Replayed, DlqError> {
    let payload = corrected.unwrap_or(&letter.payload).as_bytes().to_vec();
    let request_id = decode::lenient_request_id(&payload);
    if let Some(expected) = letter.request_id {
        if request_id != Some(expected) {
            return Err(DlqError::OtherRequest {
                expected,
                found: request_id,
            });
        }
    }
    let decoded = if topic.is_request_topic() {
        let probe = rdkafka::message::OwnedMessage::new(
            Some(payload.clone()),
            letter.key.clone().map(String::into_bytes),
            String::new(),
            rdkafka::Timestamp::NotAvailable,
            0,
            0,
            None,
        );
        match decode::decode(&probe, topic) {
            Ok(envelope) => Some(envelope),
            Err(poison) if !force => return Err(DlqError::StillPoison(poison.reason)),
            Err(_) => None,
        }
    } else {
        None
    };
    // Who the reopened request acts for, so its client can follow it.
    let (request_type, user_id) = decoded.as_ref().map_or((None, None), |e| {
        (Some(e.request.type_name()), e.request.user_id())
    });
    // Reopen a FAILED outcome; keep what it said, to put it back if the
    // publish fails.
    let mut reopened: Option<(Option<String>, Option<String>)> = None;
    if let Some(id) = request_id {
        let row = sqlx::query!(
            r#"SELECT status AS "status: RequestStatus", error_code, error_message
               FROM requests WHERE id = $1"#,
            id
        )
        .fetch_optional(pool)
        .await?;
        match row {
            Some(row) if row.status == RequestStatus::Failed => {
                sqlx::query!(
                    "UPDATE requests SET status = 'PENDING', result = NULL, error_code = NULL,
                            error_message = NULL, completed_at = NULL,
                            type = coalesce($2, type), user_id = coalesce(user_id, $3)
                     WHERE id = $1 AND status = 'FAILED'",
                    id,
                    request_type,
                    user_id
                )
                .execute(pool)
                .await?;
                // Gateways cached the FAILED outcome: a bare id makes them
                // forget it and read the row.
                sqlx::query!(
                    "SELECT pg_notify($1, $2)",
                    platform::db::OUTCOME_CHANNEL,
                    id.to_string()
                )
                .execute(pool)
                .await?;
                reopened = Some((row.error_code, row.error_message));
            }
            Some(row) if row.status != RequestStatus::Pending => {
                return Err(DlqError::Decided(id, row.status.as_str().to_owned()));
            }
            _ => {}
        }
    }
    let mut headers = vec![(
        schemas::HEADER_DLQ_REPLAYED_FROM,
        format!("{}/{}/{}", letter.topic, letter.partition, letter.offset),
    )];
    if let Some(id) = request_id {
        headers.push((schemas::HEADER_REQUEST_ID, id.to_string()));
        headers.push((schemas::HEADER_TRACEPARENT, schemas::traceparent_for(id)));
    }
    let record = OutgoingRecord {
        topic: common.topics().name(topic),
        key: letter.key.clone().unwrap_or_default(),
        payload,
        headers,
    };
    let timeout = Duration::from_millis(common.kafka_produce_timeout_ms);
    match kafka::produce(producer, &record, timeout).await {
        Ok(delivered) => {
            if let Some(id) = request_id {
                sqlx::query!(
                    "UPDATE requests SET topic = $2, kafka_partition = $3, kafka_offset = $4
                     WHERE id = $1 AND status = 'PENDING'",
                    id,
                    record.topic,
                    delivered.partition,
                    delivered.offset
                )
                .execute(pool)
                .await?;
            }
            tracing::info!(request_id = ?request_id, topic = %record.topic, partition = delivered.partition,
                offset = delivered.offset, from = %format!("{}/{}/{}", letter.topic, letter.partition, letter.offset),
                "dead letter re-driven");
            Ok(Replayed {
                request_id,
                topic: record.topic,
                partition: delivered.partition,
                offset: delivered.offset,
            })
        }
        Err(error) => {
            if let (Some(id), Some((code, message))) = (request_id, reopened) {
                let _ = sqlx::query!(
                    "UPDATE requests SET status = 'FAILED', error_code = $2, error_message = $3,
                            completed_at = now()
                     WHERE id = $1 AND status = 'PENDING'",
                    id,
                    code,
                    message
                )
                .execute(pool)
                .await;
            }
            Err(error.into())
        }
    }
}
