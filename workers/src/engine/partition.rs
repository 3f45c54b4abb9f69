//! One partition of one lane: collect a batch, apply it (see
//! `transaction`), retry what is transient, isolate what is not, dead-letter
//! poison, and re-read the log where the stored offset says.

use std::time::Duration;

use platform::lifecycle::pause;
use rdkafka::message::{Message, OwnedMessage};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::decode::{record_digest, LaneInput};
use super::log::{DeadLettered, PartitionLog, Reason};
use super::retry::{Next, Retry};
use super::settings::LaneSettings;
use super::store;
use super::transaction::{BatchError, Item};
use super::Lane;
use crate::error::LaneError;

/// What a client reads for a request that was set aside because applying
/// it failed (the dead letter's `dlq-reason` header and the logs have the
/// cause; internals never reach the client).
pub(super) const FAILED_MESSAGE: &str =
    "the request could not be applied and had no effect; it was set aside for operators";

/// How processing of a batch ended.
enum Flow {
    /// Committed (or nothing to do); take the next batch.
    Next,
    /// Re-read the partition from this offset.
    Seek(i64),
    /// Shutting down or revoked.
    Stop,
}

/// Where a partition's offsets are stored: its consumer group, topic and
/// partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionId {
    /// The lane's consumer group.
    pub group: String,
    /// The request topic (with the deployment's prefix).
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

/// Everything one partition task needs.
pub struct PartitionWorker<L: Lane, P: PartitionLog> {
    pub(super) lane: L,
    pub(super) pool: PgPool,
    pub(super) log: P,
    pub(super) id: PartitionId,
    pub(super) settings: LaneSettings,
}

impl<L: Lane, P: PartitionLog> PartitionWorker<L, P> {
    /// A task for partition `id` of `lane`, reading `log`.
    pub fn new(lane: L, pool: PgPool, log: P, id: PartitionId, settings: LaneSettings) -> Self {
        Self {
            lane,
            pool,
            log,
            id,
            settings,
        }
    }

    /// Runs until `cancel` fires or the dispatcher goes away.
    pub async fn run(self, mut rx: mpsc::Receiver<OwnedMessage>, cancel: CancellationToken) {
        // After a seek, records below the seek offset are stale.
        let mut resync_at: Option<i64> = None;
        while let Some(mut batch) = collect(
            &mut rx,
            &cancel,
            self.settings.batch_max,
            self.settings.batch_wait,
        )
        .await
        {
            if let Some(at) = resync_at {
                batch.retain(|m| m.offset() >= at);
                if batch.is_empty() {
                    continue;
                }
                resync_at = None;
            }
            let first = batch[0].offset();
            let last = batch[batch.len() - 1].offset();
            let span = tracing::info_span!("batch", lane = L::NAME, topic = %self.id.topic,
                partition = self.id.partition, first_offset = first, last_offset = last);
            match self.process(&batch, &cancel).instrument(span).await {
                Flow::Next => {}
                Flow::Stop => break,
                Flow::Seek(offset) => {
                    tracing::info!(
                        lane = L::NAME,
                        partition = self.id.partition,
                        offset,
                        first,
                        "re-reading the partition from the stored offset"
                    );
                    if let Err(error) = self.log.seek(offset) {
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
        let items: Vec<Item<L::Input>> = batch
            .iter()
            .map(|m| Item {
                offset: m.offset(),
                digest: record_digest(m),
                trace_id: super::decode::trace_id(m),
                decoded: L::Input::decode(m),
            })
            .collect();
        if items.iter().any(|i| i.decoded.is_err())
            && !self.dead_letter_poison(batch, &items, cancel).await
        {
            return Flow::Stop;
        }

        let mut retry = Retry::new(L::NAME);
        loop {
            let error = match self.apply(&items, None).await {
                Ok(()) => return Flow::Next,
                Err(error) => match self.resolve(error).await {
                    Ok(offset) => return Flow::Seek(offset),
                    Err(error) => error,
                },
            };
            let wait = match retry.after(&error) {
                Next::Wait(wait) => wait,
                Next::Isolate => {
                    tracing::warn!(%error, kind = error.kind(), "batch failed; applying its records one by one");
                    return self.isolate(batch, &items, cancel).await;
                }
            };
            if !pause(cancel, wait).await {
                return Flow::Stop;
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
    ) -> Flow {
        for (message, item) in batch.iter().zip(items) {
            let single = std::slice::from_ref(item);
            let mut failed = false;
            let mut retry = Retry::new(L::NAME);
            loop {
                let error = match self.apply(single, failed.then_some(FAILED_MESSAGE)).await {
                    Ok(()) => break,
                    Err(error) => match self.resolve(error).await {
                        Ok(offset) => return Flow::Seek(offset),
                        Err(error) => error,
                    },
                };
                let wait = match retry.after(&error) {
                    Next::Wait(wait) => wait,
                    Next::Isolate if !failed => {
                        metrics::counter!("lane_failed_records_total", "lane" => L::NAME, "kind" => error.kind()).increment(1);
                        tracing::error!(%error, kind = error.kind(), offset = item.offset, "record cannot be applied; recording it FAILED");
                        let text = format!("cannot be applied ({}): {error}", error.kind());
                        let reason = Reason {
                            kind: error.kind(),
                            text: &text,
                        };
                        if let DeadLettered::Cancelled =
                            self.log.dead_letter(message, reason, cancel).await
                        {
                            return Flow::Stop;
                        }
                        failed = true;
                        continue;
                    }
                    Next::Isolate => {
                        tracing::error!(%error, "cannot even record the failure; retrying");
                        retry.outage()
                    }
                };
                if !pause(cancel, wait).await {
                    return Flow::Stop;
                }
            }
        }
        Flow::Next
    }

    /// Where to re-read from when a batch found the stored offset elsewhere
    /// (`Ok`), or the error to retry or isolate.
    async fn resolve(&self, error: BatchError) -> Result<i64, LaneError> {
        match error {
            BatchError::Gap { stored } => self.resolve_gap(stored).await,
            BatchError::Recreated { stored } => self.resolve_recreated(stored).await,
            BatchError::Lane(error) => Err(error),
        }
    }

    /// The batch starts after the stored offset. If the log still holds
    /// the stored offset, re-read from there (records queued before a seek
    /// or a rebalance were dropped). If retention deleted it before it was
    /// applied, those records are gone: count and log the gap, decide their
    /// requests as `RECORD_LOST`, and resume from the log's start.
    async fn resolve_gap(&self, stored: i64) -> Result<i64, LaneError> {
        let (low, _) = self.log.watermarks()?;
        if stored >= low {
            return Ok(stored);
        }
        let lost = store::skip_deleted_records(&self.pool, &self.id, stored, low).await?;
        let Some(requests) = lost else {
            // Another process moved the offset first; it re-reads from there.
            return Ok(stored);
        };
        metrics::counter!("lane_offset_gaps_total", "lane" => L::NAME).increment(1);
        metrics::counter!("lane_lost_records_total", "lane" => L::NAME)
            .increment((low - stored) as u64);
        tracing::error!(
            lane = L::NAME, topic = %self.id.topic, partition = self.id.partition,
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
        let (low, high) = self.log.watermarks()?;
        let start = low.max(0);
        if !store::move_offset(&self.pool, &self.id, stored, start).await? {
            return Ok(stored);
        }
        metrics::counter!("lane_log_resets_total").increment(1);
        tracing::error!(
            lane = L::NAME, topic = %self.id.topic, partition = self.id.partition,
            stored, high_watermark = high,
            "another record sits where the last applied one was: the log was recreated; resuming from its start"
        );
        Ok(start)
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
        let mut retry = Retry::new(L::NAME);
        let stored = loop {
            match store::stored_offset(&self.pool, &self.id).await {
                Ok(stored) => break stored.unwrap_or(0),
                Err(error) => {
                    tracing::warn!(%error, "cannot read the stored offset; retrying");
                    if !pause(cancel, retry.outage()).await {
                        return false;
                    }
                }
            }
        };
        for (message, item) in batch.iter().zip(items) {
            let Err(poison) = &item.decoded else { continue };
            if item.offset < stored {
                continue;
            }
            let reason = Reason {
                kind: "undecodable",
                text: &poison.reason,
            };
            if let DeadLettered::Cancelled = self.log.dead_letter(message, reason, cancel).await {
                return false;
            }
        }
        true
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
