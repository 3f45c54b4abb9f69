//! One partition of one lane: collect a batch, apply it in one transaction,
//! retry what is transient, isolate what is not, dead-letter poison.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use platform::db::{classify, ErrorClass};
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
use super::decode::{LaneInput, Poison};
use super::store::{self, OutcomeRow};
use super::{Lane, Outcome};

/// A consumed record, decoded or not.
struct Item<I> {
    offset: i64,
    decoded: Result<I, Poison>,
}

/// Why a batch did not commit.
enum BatchError {
    /// The stored offset is behind the batch: records were skipped, so the
    /// partition must be re-read from `stored`.
    Gap { stored: i64 },
    /// A database error, classified by [`classify`].
    Db(sqlx::Error),
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        BatchError::Db(e)
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
        // After a seek, records already queued are stale until the record at
        // the seek offset arrives again.
        let mut resync_at: Option<i64> = None;
        let mut accept_gap_at: Option<i64> = None;
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
                        batch.into_iter().skip_while(|m| m.offset() != at).collect();
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
            match self
                .process(&batch, &cancel, accept_gap_at)
                .instrument(span)
                .await
            {
                Flow::Next => accept_gap_at = None,
                Flow::Stop => break,
                Flow::Seek(stored) => {
                    tracing::warn!(
                        lane = self.lane.name(),
                        partition = self.partition,
                        stored,
                        first,
                        "stored offset is behind the batch; re-reading from it"
                    );
                    let seek = tokio::task::block_in_place(|| {
                        self.consumer.seek(
                            &self.topic,
                            self.partition,
                            Offset::Offset(stored),
                            Duration::from_secs(10),
                        )
                    });
                    if let Err(error) = seek {
                        tracing::error!(%error, "seek failed; the partition will be re-read after the next rebalance");
                        break;
                    }
                    resync_at = Some(stored);
                    // If the broker cannot serve `stored` any more (retention),
                    // the next batch starts later still; accept that gap then.
                    accept_gap_at = Some(stored);
                }
            }
        }
    }

    async fn process(
        &self,
        batch: &[OwnedMessage],
        cancel: &CancellationToken,
        accept_gap_at: Option<i64>,
    ) -> Flow {
        let topic = self.lane.topic();
        let items: Vec<Item<L::Input>> = batch
            .iter()
            .map(|m| Item {
                offset: m.offset(),
                decoded: L::Input::decode(m, topic),
            })
            .collect();
        for (message, item) in batch.iter().zip(&items) {
            if let Err(poison) = &item.decoded {
                if !self.dead_letter(message, &poison.reason, cancel).await {
                    return Flow::Stop;
                }
            }
        }

        let mut conflicts = Backoff::new();
        let mut outage = Backoff::new();
        loop {
            match self.apply(&items, None, accept_gap_at).await {
                Ok(()) => return Flow::Next,
                Err(BatchError::Gap { stored }) => return Flow::Seek(stored),
                Err(BatchError::Db(error)) => match classify(&error) {
                    ErrorClass::Conflict => {
                        // Serialization failures and deadlocks resolve by
                        // themselves; retry the whole batch, never fail it.
                        metrics::counter!("lane_retries_total", "lane" => self.lane.name(), "reason" => "conflict").increment(1);
                        tracing::debug!(%error, "conflict; retrying the batch");
                        let wait = conflicts.next_jittered();
                        tokio::select! {
                            _ = cancel.cancelled() => return Flow::Stop,
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                    ErrorClass::Unavailable => {
                        metrics::counter!("lane_retries_total", "lane" => self.lane.name(), "reason" => "unavailable").increment(1);
                        let wait = outage.next();
                        tracing::warn!(%error, wait_ms = wait.as_millis() as u64, "database unavailable; backing off");
                        tokio::select! {
                            _ = cancel.cancelled() => return Flow::Stop,
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                    ErrorClass::Permanent => {
                        tracing::warn!(%error, "batch failed; applying its records one by one");
                        return self.isolate(batch, &items, cancel, accept_gap_at).await;
                    }
                },
            }
        }
    }

    /// Applies each record in its own transaction, so one bad record fails
    /// alone (recorded FAILED and dead-lettered) and the rest go through.
    async fn isolate(
        &self,
        batch: &[OwnedMessage],
        items: &[Item<L::Input>],
        cancel: &CancellationToken,
        accept_gap_at: Option<i64>,
    ) -> Flow {
        for (message, item) in batch.iter().zip(items) {
            let single = std::slice::from_ref(item);
            let mut failed: Option<String> = None;
            let mut outage = Backoff::new();
            let mut conflicts = Backoff::new();
            loop {
                match self.apply(single, failed.as_deref(), accept_gap_at).await {
                    Ok(()) => break,
                    Err(BatchError::Gap { stored }) => return Flow::Seek(stored),
                    Err(BatchError::Db(error)) => match classify(&error) {
                        ErrorClass::Unavailable => {
                            tokio::select! {
                                _ = cancel.cancelled() => return Flow::Stop,
                                _ = tokio::time::sleep(outage.next()) => {}
                            }
                        }
                        ErrorClass::Conflict => {
                            tokio::select! {
                                _ = cancel.cancelled() => return Flow::Stop,
                                _ = tokio::time::sleep(conflicts.next_jittered()) => {}
                            }
                        }
                        ErrorClass::Permanent if failed.is_none() => {
                            tracing::error!(%error, offset = item.offset, "record cannot be applied; recording it FAILED");
                            let reason = format!("cannot be applied: {error}");
                            if !self.dead_letter(message, &reason, cancel).await {
                                return Flow::Stop;
                            }
                            failed = Some(reason);
                        }
                        ErrorClass::Permanent => {
                            tracing::error!(%error, "cannot even record the failure; retrying");
                            tokio::select! {
                                _ = cancel.cancelled() => return Flow::Stop,
                                _ = tokio::time::sleep(outage.next()) => {}
                            }
                        }
                    },
                }
            }
        }
        Flow::Next
    }

    /// The batch transaction. With `failed` set, no request is applied: each
    /// is recorded FAILED with that reason.
    async fn apply(
        &self,
        items: &[Item<L::Input>],
        failed: Option<&str>,
        accept_gap_at: Option<i64>,
    ) -> Result<(), BatchError> {
        let started = Instant::now();
        let first = items[0].offset;
        let last = items[items.len() - 1].offset;
        let mut tx = self.pool.begin().await?;
        let stored =
            store::lock_offset(&mut tx, &self.group, &self.topic, self.partition, first).await?;
        if stored > last {
            // Applied before (a replay after a crash or rebalance).
            metrics::counter!("lane_replayed_records_total", "lane" => self.lane.name())
                .increment(items.len() as u64);
            return Ok(());
        }
        if stored < first && accept_gap_at != Some(stored) {
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
        let already = store::decided(&mut tx, &ids).await?;
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
                    if let Some(request) = input.request() {
                        if already.contains(&request.id) || !seen.insert(request.id) {
                            metrics::counter!("lane_duplicate_requests_total", "lane" => self.lane.name()).increment(1);
                            continue;
                        }
                        if let Some(reason) = failed {
                            let mut outcome =
                                row(request.id, request.type_name, request.user_id, item);
                            outcome.error_code = Some(ErrorCode::Internal);
                            outcome.error_message = Some(reason.to_owned());
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
                        if already.contains(&id) || !seen.insert(id) {
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
                    outcome.result = Some(result);
                }
                Outcome::Rejected(code, message) => {
                    outcome.status = "REJECTED";
                    outcome.error_code = Some(code);
                    outcome.error_message = Some(message);
                }
            }
            metrics::counter!("lane_outcomes_total", "lane" => self.lane.name(), "status" => outcome.status).increment(1);
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
        store::store_offset(&mut tx, &self.group, &self.topic, self.partition, last + 1).await?;
        tx.commit().await?;
        metrics::histogram!("lane_batch_size", "lane" => self.lane.name())
            .record(items.len() as f64);
        metrics::histogram!("lane_batch_seconds", "lane" => self.lane.name())
            .record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Publishes `message` to the dead-letter topic with `reason`, retrying
    /// until the broker takes it. False if shutdown came first.
    async fn dead_letter(
        &self,
        message: &OwnedMessage,
        reason: &str,
        cancel: &CancellationToken,
    ) -> bool {
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
                    return true;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot dead-letter yet; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return false,
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
