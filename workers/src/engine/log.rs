//! The partition's log as a partition task sees it: its watermarks,
//! re-reading from an offset, and its dead-letter topic. Kafka in
//! production ([`KafkaPartition`]); the engine's tests use a double.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use platform::kafka::{self, OutgoingRecord};
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::Offset;
use tokio_util::sync::CancellationToken;

use super::retry::Backoff;
use crate::error::LaneError;

/// How a dead-letter produce ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLettered {
    /// The dead-letter topic has the record.
    Published,
    /// The broker can never take it (too large, fatal producer): parked in
    /// Postgres (`parked_dead_letters`) with its reason, counted, and
    /// skipped past, so the partition goes on.
    Parked,
    /// Shutdown came first.
    Cancelled,
}

/// Why a record is dead-lettered: a class for metrics, and the text of the
/// `dlq-reason` header.
#[derive(Debug, Clone, Copy)]
pub struct Reason<'a> {
    /// `undecodable`, or the kind of the error that failed it.
    pub kind: &'static str,
    /// The whole reason.
    pub text: &'a str,
}

/// One partition of a lane's request topic.
pub trait PartitionLog: Send + Sync + 'static {
    /// The partition's low and high watermarks.
    fn watermarks(&self) -> Result<(i64, i64), LaneError>;

    /// Fetches from `offset` next.
    fn seek(&self, offset: i64) -> Result<(), LaneError>;

    /// Publishes `record` to the dead-letter topic, retrying while the
    /// failure is transient.
    fn dead_letter(
        &self,
        record: &OwnedMessage,
        reason: Reason<'_>,
        cancel: &CancellationToken,
    ) -> impl Future<Output = DeadLettered> + Send;
}

/// A partition of a Kafka topic, read by the lane's consumer.
pub struct KafkaPartition<C: ConsumerContext + 'static> {
    pub(super) consumer: Arc<StreamConsumer<C>>,
    pub(super) producer: kafka::Producer,
    pub(super) lane: &'static str,
    pub(super) topic: String,
    pub(super) dlq_topic: String,
    pub(super) partition: i32,
    pub(super) produce_timeout: Duration,
    pub(super) pool: sqlx::PgPool,
}

impl<C: ConsumerContext + 'static> PartitionLog for KafkaPartition<C> {
    fn watermarks(&self) -> Result<(i64, i64), LaneError> {
        tokio::task::block_in_place(|| {
            self.consumer
                .fetch_watermarks(&self.topic, self.partition, Duration::from_secs(10))
        })
        .map_err(|error| LaneError::Transient(Box::new(error)))
    }

    fn seek(&self, offset: i64) -> Result<(), LaneError> {
        tokio::task::block_in_place(|| {
            self.consumer.seek(
                &self.topic,
                self.partition,
                Offset::Offset(offset),
                Duration::from_secs(10),
            )
        })
        .map_err(|error| LaneError::Transient(Box::new(error)))
    }

    async fn dead_letter(
        &self,
        message: &OwnedMessage,
        reason: Reason<'_>,
        cancel: &CancellationToken,
    ) -> DeadLettered {
        let key = message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        let record = OutgoingRecord {
            topic: self.dlq_topic.clone(),
            key,
            payload: message.payload().unwrap_or_default().to_vec(),
            headers: vec![
                (schemas::HEADER_DLQ_REASON, reason.text.to_owned()),
                (
                    schemas::HEADER_DLQ_ORIGIN,
                    format!("{}/{}/{}", self.topic, self.partition, message.offset()),
                ),
            ],
        };
        let mut backoff = Backoff::new();
        loop {
            match kafka::produce(&self.producer, &record, self.produce_timeout).await {
                Ok(_) => {
                    metrics::counter!("lane_dead_letters_total", "lane" => self.lane,
                        "topic" => self.dlq_topic.clone(), "reason" => reason.kind)
                    .increment(1);
                    tracing::warn!(offset = message.offset(), reason = reason.text, dlq = %self.dlq_topic, "record dead-lettered");
                    return DeadLettered::Published;
                }
                Err(error) if error.is_permanent() => {
                    metrics::counter!("lane_dead_letter_failures_total", "lane" => self.lane)
                        .increment(1);
                    tracing::error!(
                        %error, offset = message.offset(), reason = reason.text, dlq = %self.dlq_topic,
                        "the dead-letter topic can never take this record; parking it in Postgres"
                    );
                    return self
                        .park(message, &record, reason, &error.to_string(), cancel)
                        .await;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot dead-letter yet; retrying");
                    if !platform::lifecycle::pause(cancel, backoff.next()).await {
                        return DeadLettered::Cancelled;
                    }
                }
            }
        }
    }
}

impl<C: ConsumerContext + 'static> KafkaPartition<C> {
    /// Keeps a dead letter the dead-letter topic cannot take in
    /// `parked_dead_letters`, retrying while Postgres is away: the record
    /// is skipped past only once it is kept.
    async fn park(
        &self,
        message: &OwnedMessage,
        record: &OutgoingRecord,
        reason: Reason<'_>,
        error: &str,
        cancel: &CancellationToken,
    ) -> DeadLettered {
        let mut backoff = Backoff::new();
        loop {
            let parked = sqlx::query!(
                "INSERT INTO parked_dead_letters
                     (origin_topic, origin_partition, origin_offset, record_key, payload, reason, error)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (origin_topic, origin_partition, origin_offset) DO NOTHING",
                self.topic,
                self.partition,
                message.offset(),
                record.key,
                record.payload,
                reason.text,
                error,
            )
            .execute(&self.pool)
            .await;
            match parked {
                Ok(_) => {
                    metrics::counter!("lane_dead_letters_parked_total", "lane" => self.lane)
                        .increment(1);
                    return DeadLettered::Parked;
                }
                Err(db_error) => {
                    tracing::warn!(%db_error, "cannot park the dead letter yet; retrying");
                    if !platform::lifecycle::pause(cancel, backoff.next()).await {
                        return DeadLettered::Cancelled;
                    }
                }
            }
        }
    }
}
