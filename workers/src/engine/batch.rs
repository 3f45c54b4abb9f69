//! One partition of one lane: collect a batch, apply it in one transaction,
//! retry what is transient, isolate what is not, dead-letter poison.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use platform::kafka::{self, OutgoingRecord};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use rdkafka::Offset;
use schemas::{ErrorCode, EventEnvelope};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::consumer::{LaneContext, LaneSettings};
use super::decode::{record_digest, LaneInput, Poison};
use super::store::{self, OutcomeRow};
use super::{Lane, Outcome};
use crate::error::{LaneError, Remedy};

/// What a client reads for a request that was set aside because applying
/// it failed (the dead letter's `dlq-reason` header and the logs have the
/// cause; internals never reach the client).
const FAILED_MESSAGE: &str =
    "the request could not be applied and had no effect; it was set aside for operators";

/// A consumed record, decoded or not.
struct Item<I> {
    offset: i64,
    digest: i64,
    decoded: Result<I, Poison>,
}

/// Why a batch did not commit.
enum BatchError {
    /// The stored offset is behind the batch: records were skipped (or
    /// deleted by retention), so the partition must be re-read.
    Gap { stored: i64 },
    /// The record at `stored - 1` is not the one applied there: the log
    /// was recreated under the stored offset.
    Recreated { stored: i64 },
    /// The lane or the database failed.
    Lane(LaneError),
}

impl From<LaneError> for BatchError {
    fn from(e: LaneError) -> Self {
        BatchError::Lane(e)
    }
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        BatchError::Lane(e.into())
    }
}

/// How processing of a batch ended.
enum Flow {
    /// Committed (or nothing to do); take the next batch.
    Next,
    /// Re-read the partition from this offset.
    Seek(i64),
    /// Shutting down or revoked.
    Stop,
}

/// How a dead-letter produce ended.
enum DeadLettered {
    /// The dead-letter topic has the record.
    Published,
    /// The broker can never take it (too large, fatal producer): logged,
    /// counted, and skipped past, so the partition goes on.
    Skipped,
    /// Shutdown came first.
    Cancelled,
}

/// Everything one partition task needs.
pub(crate) struct PartitionWorker<L: Lane> {
    pub lane: Arc<L>,
    pub pool: PgPool,
    pub producer: FutureProducer,
    pub consumer: Arc<StreamConsumer<LaneContext>>,
    pub group: String,
    pub topic: String,
    pub dlq_topic: String,
    pub partition: i32,
    pub settings: LaneSettings,
}

impl<L: Lane> PartitionWorker<L> {
    /// Runs until `cancel` fires or the dispatcher goes away.
    pub async fn run(self, mut rx: mpsc::Receiver<OwnedMessage>, cancel: CancellationToken) {
        // After a seek, records below the seek offset are stale.
        let mut resync_at: Option<i64> = None;
        while let Some(batch) = collect(
            &mut rx,
            &cancel,
            self.settings.batch_max,
            self.settings.batch_wait,
        )
        .await
        {
            let batch: Vec<OwnedMessage> = match resync_at {
                Some(at) => {
                    let kept: Vec<OwnedMessage> =
                        batch.into_iter().filter(|m| m.offset() >= at).collect();
                    if kept.is_empty() {
                        continue;
                    }
                    resync_at = None;
                    kept
                }
                None => batch,
            };
            let first = batch[0].offset();
            let last = batch[batch.len() - 1].offset();
            let span = tracing::info_span!("batch", lane = self.lane.name(), topic = %self.topic,
                partition = self.partition, first_offset = first, last_offset = last);
            match self.process(&batch, &cancel).instrument(span).await {
                Flow::Next => {}
                Flow::Stop => break,
                Flow::Seek(offset) => {
                    tracing::info!(
                        lane = self.lane.name(),
                        partition = self.partition,
                        offset,
                        first,
                        "re-reading the partition from the stored offset"
                    );
                    let seek = tokio::task::block_in_place(|| {
                        self.consumer.seek(
                            &self.topic,
                            self.partition,
                            Offset::Offset(offset),
                            Duration::from_secs(10),
                        )
                    });
                    if let Err(error) = seek {
                        tracing::error!(%error, "seek failed; the partition will be re-read after the next rebalance");
                        break;
                    }
                    // Whatever is queued was fetched before the seek. A stale
                    // record that still slips through starts a batch past the
                    // stored offset, which is a gap again: seek again.
                    while rx.try_recv().is_ok() {}
                    resync_at = Some(offset);
                }
            }
        }
    }

    async fn process(&self, batch: &[OwnedMessage], cancel: &CancellationToken) -> Flow {
        let topic = self.lane.topic();
        let items: Vec<Item<L::Input>> = batch
            .iter()
            .map(|m| Item {
                offset: m.offset(),
                digest: record_digest(m),
                decoded: L::Input::decode(m, topic),
            })
            .collect();
        if items.iter().any(|i| i.decoded.is_err())
            && !self.dead_letter_poison(batch, &items, cancel).await
        {
            return Flow::Stop;
        }

        let mut conflicts = Backoff::new();
        let mut outage = Backoff::new();
        loop {
            let error = match self.apply(&items, None).await {
                Ok(()) => return Flow::Next,
                Err(BatchError::Gap { stored }) => match self.resolve_gap(stored).await {
                    Ok(offset) => return Flow::Seek(offset),
                    Err(error) => error,
                },
                Err(BatchError::Recreated { stored }) => match self.resolve_recreated(stored).await
                {
                    Ok(offset) => return Flow::Seek(offset),
                    Err(error) => error,
                },
                Err(BatchError::Lane(error)) => error,
            };
            let wait = match error.remedy() {
                Remedy::Retry => {
                    // Serialization failures and deadlocks resolve by
                    // themselves; retry the whole batch, never fail it.
                    metrics::counter!("lane_retries_total", "lane" => self.lane.name(), "reason" => "conflict").increment(1);
                    tracing::debug!(%error, "conflict; retrying the batch");
                    conflicts.next_jittered()
                }
                Remedy::BackOff => {
                    metrics::counter!("lane_retries_total", "lane" => self.lane.name(), "reason" => "unavailable").increment(1);
                    let wait = outage.next();
                    tracing::warn!(%error, wait_ms = wait.as_millis() as u64, "database unavailable; backing off");
                    wait
                }
                Remedy::Isolate => {
                    tracing::warn!(%error, kind = error.kind(), "batch failed; applying its records one by one");
                    return self.isolate(batch, &items, cancel).await;
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return Flow::Stop,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// The batch starts after the stored offset. If the log still holds
    /// the stored offset, re-read from there (records queued before a seek
    /// or a rebalance were dropped). If retention deleted it before it was
    /// applied, those records are gone: count and log the gap, decide their
    /// requests as `RECORD_LOST`, and resume from the log's start.
    async fn resolve_gap(&self, stored: i64) -> Result<i64, LaneError> {
        let (low, _) = self.watermarks()?;
        if stored >= low {
            return Ok(stored);
        }
        let lost = store::skip_deleted_records(
            &self.pool,
            &self.group,
            &self.topic,
            self.partition,
            stored,
            low,
        )
        .await?;
        let Some(requests) = lost else {
            // Another process moved the offset first; it re-reads from there.
            return Ok(stored);
        };
        metrics::counter!("lane_offset_gaps_total", "lane" => self.lane.name()).increment(1);
        metrics::counter!("lane_lost_records_total", "lane" => self.lane.name())
            .increment((low - stored) as u64);
        tracing::error!(
            lane = self.lane.name(), topic = %self.topic, partition = self.partition,
            stored, log_start = low, records = low - stored, requests_failed = requests,
            "records were deleted from the log before they were applied (retention); resuming from the log's start"
        );
        Ok(low)
    }

    /// The log was recreated (topic deleted and created again, broker
    /// storage wiped) and has grown past the stored offset: offsets
    /// restarted, so resume from the new log's start. Request ids (and the
    /// stats lane's counted orders) keep records applied before from
    /// applying twice.
    async fn resolve_recreated(&self, stored: i64) -> Result<i64, LaneError> {
        let (low, high) = self.watermarks()?;
        let start = low.max(0);
        if !store::move_offset(
            &self.pool,
            &self.group,
            &self.topic,
            self.partition,
            stored,
            start,
        )
        .await?
        {
            return Ok(stored);
        }
        metrics::counter!("lane_log_resets_total").increment(1);
        tracing::error!(
            lane = self.lane.name(), topic = %self.topic, partition = self.partition,
            stored, high_watermark = high,
            "another record sits where the last applied one was: the log was recreated; resuming from its start"
        );
        Ok(start)
    }

    fn watermarks(&self) -> Result<(i64, i64), LaneError> {
        tokio::task::block_in_place(|| {
            self.consumer
                .fetch_watermarks(&self.topic, self.partition, Duration::from_secs(10))
        })
        .map_err(|error| LaneError::Transient(Box::new(error)))
    }

    /// Applies each record in its own transaction, so one bad record fails
    /// alone (recorded FAILED and dead-lettered) and the rest go through.
    async fn isolate(
        &self,
        batch: &[OwnedMessage],
        items: &[Item<L::Input>],
        cancel: &CancellationToken,
    ) -> Flow {
        for (message, item) in batch.iter().zip(items) {
            let single = std::slice::from_ref(item);
            let mut failed = false;
            let mut outage = Backoff::new();
            let mut conflicts = Backoff::new();
            loop {
                let error = match self.apply(single, failed.then_some(FAILED_MESSAGE)).await {
                    Ok(()) => break,
                    Err(BatchError::Gap { stored }) => match self.resolve_gap(stored).await {
                        Ok(offset) => return Flow::Seek(offset),
                        Err(error) => error,
                    },
                    Err(BatchError::Recreated { stored }) => {
                        match self.resolve_recreated(stored).await {
                            Ok(offset) => return Flow::Seek(offset),
                            Err(error) => error,
                        }
                    }
                    Err(BatchError::Lane(error)) => error,
                };
                let wait = match error.remedy() {
                    Remedy::BackOff => outage.next(),
                    Remedy::Retry => conflicts.next_jittered(),
                    Remedy::Isolate if !failed => {
                        metrics::counter!("lane_failed_records_total", "lane" => self.lane.name(), "kind" => error.kind()).increment(1);
                        tracing::error!(%error, kind = error.kind(), offset = item.offset, "record cannot be applied; recording it FAILED");
                        let reason = format!("cannot be applied ({}): {error}", error.kind());
                        if let DeadLettered::Cancelled =
                            self.dead_letter(message, &reason, cancel).await
                        {
                            return Flow::Stop;
                        }
                        failed = true;
                        continue;
                    }
                    Remedy::Isolate => {
                        tracing::error!(%error, "cannot even record the failure; retrying");
                        outage.next()
                    }
                };
                tokio::select! {
                    _ = cancel.cancelled() => return Flow::Stop,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        Flow::Next
    }

    /// The batch transaction. With `failed` set, no request is applied: each
    /// is recorded FAILED with that message.
    async fn apply(
        &self,
        items: &[Item<L::Input>],
        failed: Option<&str>,
    ) -> Result<(), BatchError> {
        let started = Instant::now();
        let first = items[0].offset;
        let last = items[items.len() - 1].offset;
        let mut tx = self.pool.begin().await?;
        let position =
            store::lock_offset(&mut tx, &self.group, &self.topic, self.partition, first).await?;
        let stored = position.next;
        // A take-over re-reads the last applied record: it must be the one
        // applied, or the log was recreated under the stored offset.
        if let (Some(expected), Some(item)) = (
            position.digest,
            items.iter().find(|i| i.offset == stored - 1),
        ) {
            if item.digest != expected {
                return Err(BatchError::Recreated { stored });
            }
        }
        if stored > last {
            // Applied before (a replay after a crash or rebalance).
            metrics::counter!("lane_replayed_records_total", "lane" => self.lane.name())
                .increment(items.len() as u64);
            return Ok(());
        }
        if stored < first {
            return Err(BatchError::Gap { stored });
        }
        let pending: Vec<&Item<L::Input>> = items.iter().filter(|i| i.offset >= stored).collect();

        let ids: Vec<uuid::Uuid> = pending
            .iter()
            .filter_map(|i| match &i.decoded {
                Ok(input) => input.request().map(|r| r.id),
                Err(poison) => poison.request_id,
            })
            .collect();
        let known = store::known(&mut tx, &ids).await?;
        let decided = |id: &uuid::Uuid| known.get(id).copied().unwrap_or(false);
        // Request rows (and counted orders) are pruned past the retention
        // horizon, so a record older than that (a log re-read from an old
        // start) could apply a second time: skip it, unless its request is
        // known and still PENDING. Day-scale, so the worker's clock will do.
        let stale_before = chrono::Utc::now() - self.settings.retention;
        let mut seen: HashSet<uuid::Uuid> = HashSet::new();
        // Inputs to apply: decoded, and (for requests) not decided before.
        let mut to_apply: Vec<&Item<L::Input>> = Vec::with_capacity(pending.len());
        let mut outcomes: Vec<OutcomeRow> = Vec::with_capacity(pending.len());
        let row = |id, request_type: &str, user_id, item: &Item<L::Input>| OutcomeRow {
            id,
            request_type: request_type.to_owned(),
            user_id,
            status: "FAILED",
            result: None,
            error_code: None,
            error_message: None,
            topic: self.topic.clone(),
            partition: self.partition,
            offset: item.offset,
        };
        for item in pending {
            match &item.decoded {
                Ok(input) => {
                    let pending_row = input
                        .request()
                        .is_some_and(|r| known.get(&r.id) == Some(&false));
                    if input.timestamp() < stale_before && !pending_row {
                        metrics::counter!("lane_stale_records_total", "lane" => self.lane.name())
                            .increment(1);
                        tracing::warn!(offset = item.offset, timestamp = %input.timestamp(), "record older than the retention horizon; skipped");
                        continue;
                    }
                    if let Some(request) = input.request() {
                        if decided(&request.id) || !seen.insert(request.id) {
                            metrics::counter!("lane_duplicate_requests_total", "lane" => self.lane.name()).increment(1);
                            continue;
                        }
                        if let Some(message) = failed {
                            let mut outcome =
                                row(request.id, request.type_name, request.user_id, item);
                            outcome.error_code = Some(ErrorCode::Internal);
                            outcome.error_message = Some(message.to_owned());
                            outcomes.push(outcome);
                            continue;
                        }
                    } else if failed.is_some() {
                        // An event that cannot be applied was dead-lettered.
                        continue;
                    }
                    to_apply.push(item);
                }
                Err(poison) => {
                    if let Some(id) = poison.request_id {
                        if decided(&id) || !seen.insert(id) {
                            continue;
                        }
                        let mut outcome = row(id, "unknown", None, item);
                        outcome.error_code = Some(ErrorCode::InvalidRequest);
                        outcome.error_message = Some(poison.reason.clone());
                        outcomes.push(outcome);
                    }
                }
            }
        }

        let mut state = L::Batch::default();
        let inputs: Vec<&L::Input> = to_apply
            .iter()
            .filter_map(|i| i.decoded.as_ref().ok())
            .collect();
        let mut events: Vec<EventEnvelope> = Vec::new();
        if !inputs.is_empty() {
            self.lane.prepare(&mut tx, &mut state, &inputs).await?;
        }
        for item in to_apply {
            let Ok(input) = &item.decoded else { continue };
            let applied = self.lane.apply(&mut tx, &mut state, input).await?;
            let cause = input.causation_id();
            events.extend(
                applied
                    .events
                    .into_iter()
                    .map(|event| EventEnvelope::new(cause, event)),
            );
            let Some(request) = input.request() else {
                continue;
            };
            let mut outcome = row(request.id, request.type_name, request.user_id, item);
            match applied.outcome {
                Outcome::Succeeded(result) => {
                    outcome.status = "SUCCEEDED";
                    outcome.result = result
                        .map(serde_json::to_value)
                        .transpose()
                        .map_err(|e| LaneError::Bug(e.to_string()))?;
                }
                Outcome::Rejected(code, message) => {
                    outcome.status = "REJECTED";
                    outcome.error_code = Some(code);
                    outcome.error_message = Some(message);
                }
            }
            outcomes.push(outcome);
        }
        let finished = self.lane.finish(&mut tx, state).await?;
        events.extend(
            finished
                .into_iter()
                .map(|event| EventEnvelope::new(None, event)),
        );
        store::record_outcomes(&mut tx, &outcomes).await?;
        store::enqueue_events(&mut tx, &events).await?;
        store::store_offset(
            &mut tx,
            &self.group,
            &self.topic,
            self.partition,
            last + 1,
            items[items.len() - 1].digest,
        )
        .await?;
        tx.commit().await?;
        for outcome in &outcomes {
            metrics::counter!("lane_outcomes_total", "lane" => self.lane.name(), "status" => outcome.status).increment(1);
        }
        metrics::histogram!("lane_batch_size", "lane" => self.lane.name())
            .record(items.len() as f64);
        metrics::histogram!("lane_batch_seconds", "lane" => self.lane.name())
            .record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Dead-letters the batch's poison records, except those at offsets
    /// applied before: a replay (after a crash, a rebalance, or the re-read
    /// of the last applied record on take-over) dead-lettered them then.
    /// False if shutdown came first.
    async fn dead_letter_poison(
        &self,
        batch: &[OwnedMessage],
        items: &[Item<L::Input>],
        cancel: &CancellationToken,
    ) -> bool {
        let mut outage = Backoff::new();
        let stored = loop {
            match store::stored_offset(&self.pool, &self.group, &self.topic, self.partition).await {
                Ok(stored) => break stored.unwrap_or(0),
                Err(error) => {
                    tracing::warn!(%error, "cannot read the stored offset; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return false,
                        _ = tokio::time::sleep(outage.next()) => {}
                    }
                }
            }
        };
        for (message, item) in batch.iter().zip(items) {
            let Err(poison) = &item.decoded else { continue };
            if item.offset < stored {
                continue;
            }
            if let DeadLettered::Cancelled = self.dead_letter(message, &poison.reason, cancel).await
            {
                return false;
            }
        }
        true
    }

    /// Publishes `message` to the dead-letter topic with `reason`, retrying
    /// while the failure is transient.
    async fn dead_letter(
        &self,
        message: &OwnedMessage,
        reason: &str,
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
                (schemas::HEADER_DLQ_REASON, reason.to_owned()),
                (
                    schemas::HEADER_DLQ_ORIGIN,
                    format!("{}/{}/{}", self.topic, self.partition, message.offset()),
                ),
            ],
        };
        let mut backoff = Backoff::new();
        loop {
            match kafka::produce(&self.producer, &record, self.settings.produce_timeout).await {
                Ok(_) => {
                    metrics::counter!("lane_dead_letters_total", "lane" => self.lane.name())
                        .increment(1);
                    tracing::warn!(offset = message.offset(), reason, dlq = %self.dlq_topic, "record dead-lettered");
                    return DeadLettered::Published;
                }
                Err(error)
                    if error.is_permanent() || kafka::fatal_error(&self.producer).is_some() =>
                {
                    metrics::counter!("lane_dead_letter_failures_total", "lane" => self.lane.name())
                        .increment(1);
                    tracing::error!(
                        %error, offset = message.offset(), reason, dlq = %self.dlq_topic,
                        "the dead-letter topic can never take this record; skipping past it"
                    );
                    return DeadLettered::Skipped;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot dead-letter yet; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return DeadLettered::Cancelled,
                        _ = tokio::time::sleep(backoff.next()) => {}
                    }
                }
            }
        }
    }
}

/// Waits for a first record, then takes what arrives within `wait`, up to
/// `max` records. None once cancelled or the sender is gone.
async fn collect(
    rx: &mut mpsc::Receiver<OwnedMessage>,
    cancel: &CancellationToken,
    max: usize,
    wait: Duration,
) -> Option<Vec<OwnedMessage>> {
    let first = tokio::select! {
        biased;
        _ = cancel.cancelled() => return None,
        message = rx.recv() => message?,
    };
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + wait;
    while batch.len() < max {
        match rx.try_recv() {
            Ok(message) => {
                batch.push(message);
                continue;
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(message)) => batch.push(message),
            _ => break,
        }
    }
    Some(batch)
}

/// Exponential backoff from 100 ms to 5 s.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self {
            next: Duration::from_millis(100),
        }
    }

    fn next(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(5));
        now
    }

    /// A short random wait that grows with the attempts (5 ms to about
    /// 1 s), so batches that collided do not collide again in step.
    fn next_jittered(&mut self) -> Duration {
        let base = self.next() / 20;
        base + Duration::from_millis(u64::from(rand_jitter() % 20))
    }
}

fn rand_jitter() -> u32 {
    // Sub-second clock noise is enough to de-synchronise retrying batches.
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}
