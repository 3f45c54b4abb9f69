//! The batch transaction: a batch's effects, each request's outcome, the
//! outbox events and the partition's next offset, committed together.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use api::status::RequestStatus;
use schemas::{ErrorCode, EventEnvelope};
use tracing::Instrument;
use uuid::Uuid;

use super::decode::{LaneInput, Poison};
use super::log::PartitionLog;
use super::partition::PartitionWorker;
use super::store::{self, OutcomeRow};
use super::{Lane, Outcome};
use crate::error::LaneError;

/// A consumed record, decoded or not.
pub(super) struct Item<I> {
    pub(super) offset: i64,
    pub(super) digest: i64,
    /// The trace the record continues (its `traceparent`), if it has one.
    pub(super) trace_id: Option<String>,
    pub(super) decoded: Result<I, Poison>,
}

/// Why a batch did not commit.
pub(super) enum BatchError {
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

impl<L: Lane, P: PartitionLog> PartitionWorker<L, P> {
    /// The batch transaction. With `failed` set, no request is applied: each
    /// is recorded FAILED with that message.
    pub(super) async fn apply(
        &self,
        items: &[Item<L::Input>],
        failed: Option<&str>,
    ) -> Result<(), BatchError> {
        let started = Instant::now();
        let (first, last) = (items[0].offset, items[items.len() - 1].offset);
        let mut tx = self.pool.begin().await?;
        let position = store::lock_offset(&mut tx, &self.id, first).await?;
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
            metrics::counter!("lane_replayed_records_total", "lane" => L::NAME)
                .increment(items.len() as u64);
            return Ok(());
        }
        if stored < first {
            return Err(BatchError::Gap { stored });
        }
        let pending: Vec<&Item<L::Input>> = items.iter().filter(|i| i.offset >= stored).collect();
        let ids: Vec<Uuid> = pending
            .iter()
            .filter_map(|i| match &i.decoded {
                Ok(input) => input.request().map(|r| r.id),
                Err(poison) => poison.request_id,
            })
            .collect();
        let known = store::known(&mut tx, &ids).await?;
        let (to_apply, mut outcomes) = self.sort_out(pending, &known, failed);

        let mut lane = self.lane.clone();
        let inputs: Vec<&L::Input> = to_apply
            .iter()
            .filter_map(|i| i.decoded.as_ref().ok())
            .collect();
        let mut events: Vec<EventEnvelope> = Vec::new();
        if !inputs.is_empty() {
            lane.prepare(&mut tx, &inputs).await?;
        }
        for item in to_apply {
            let Ok(input) = &item.decoded else { continue };
            let request = input.request();
            let span = tracing::info_span!(
                "request",
                request_id = request.map(|r| tracing::field::display(r.id)),
                request_type = request.map(|r| r.type_name),
                trace_id = item.trace_id.as_deref(),
                offset = item.offset,
            );
            let applied = lane.apply(&mut tx, input).instrument(span).await?;
            let cause = input.causation_id();
            events.extend(
                applied
                    .events
                    .into_iter()
                    .map(|event| EventEnvelope::new(cause, event)),
            );
            let Some(request) = request else { continue };
            let mut outcome =
                self.outcome_row(request.id, request.type_name, request.user_id, item);
            match applied.outcome {
                Outcome::Succeeded(result) => {
                    outcome.status = RequestStatus::Succeeded;
                    outcome.result = result
                        .map(serde_json::to_value)
                        .transpose()
                        .map_err(|e| LaneError::Bug(e.to_string()))?;
                }
                Outcome::Rejected(code, message) => {
                    outcome.status = RequestStatus::Rejected;
                    outcome.error_code = Some(code);
                    outcome.error_message = Some(message);
                }
            }
            outcomes.push(outcome);
        }
        let finished = lane.finish(&mut tx).await?;
        events.extend(
            finished
                .into_iter()
                .map(|event| EventEnvelope::new(None, event)),
        );
        store::record_outcomes(&mut tx, &outcomes).await?;
        store::enqueue_events(&mut tx, &events).await?;
        store::store_offset(&mut tx, &self.id, last + 1, items[items.len() - 1].digest).await?;
        tx.commit().await?;
        for outcome in &outcomes {
            metrics::counter!("lane_outcomes_total", "lane" => L::NAME, "status" => outcome.status.as_str()).increment(1);
        }
        metrics::histogram!("lane_batch_size", "lane" => L::NAME).record(items.len() as f64);
        metrics::histogram!("lane_batch_seconds", "lane" => L::NAME)
            .record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Splits the records not applied yet into the inputs to apply and the
    /// outcomes decided without applying: poison (INVALID_REQUEST), and with
    /// `failed` set every request (FAILED). Skips requests decided before or
    /// twice in the batch, and records older than the retention horizon.
    fn sort_out<'a>(
        &self,
        pending: Vec<&'a Item<L::Input>>,
        known: &HashMap<Uuid, bool>,
        failed: Option<&str>,
    ) -> (Vec<&'a Item<L::Input>>, Vec<OutcomeRow>) {
        let decided = |id: &Uuid| known.get(id).copied().unwrap_or(false);
        // Request rows (and counted orders) are pruned past the retention
        // horizon, so a record older than that (a log re-read from an old
        // start) could apply a second time: skip it, unless its request is
        // known and still PENDING. Day-scale, so the worker's clock will do.
        let stale_before = chrono::Utc::now() - self.settings.retention;
        let mut seen: HashSet<Uuid> = HashSet::new();
        let mut to_apply = Vec::with_capacity(pending.len());
        let mut outcomes = Vec::with_capacity(pending.len());
        for item in pending {
            match &item.decoded {
                Ok(input) => {
                    let request = input.request();
                    let pending_row = request.is_some_and(|r| known.get(&r.id) == Some(&false));
                    if input.timestamp() < stale_before && !pending_row {
                        metrics::counter!("lane_stale_records_total", "lane" => L::NAME)
                            .increment(1);
                        tracing::warn!(offset = item.offset, timestamp = %input.timestamp(), "record older than the retention horizon; skipped");
                        continue;
                    }
                    match (request, failed) {
                        (Some(request), _) if decided(&request.id) || !seen.insert(request.id) => {
                            metrics::counter!("lane_duplicate_requests_total", "lane" => L::NAME)
                                .increment(1);
                        }
                        (Some(request), Some(message)) => {
                            let mut outcome = self.outcome_row(
                                request.id,
                                request.type_name,
                                request.user_id,
                                item,
                            );
                            outcome.error_code = Some(ErrorCode::Internal);
                            outcome.error_message = Some(message.to_owned());
                            outcomes.push(outcome);
                        }
                        // An event that cannot be applied was dead-lettered.
                        (None, Some(_)) => {}
                        (_, None) => to_apply.push(item),
                    }
                }
                Err(poison) => {
                    let Some(id) = poison.request_id else {
                        continue;
                    };
                    if decided(&id) || !seen.insert(id) {
                        continue;
                    }
                    let mut outcome = self.outcome_row(id, "unknown", None, item);
                    outcome.error_code = Some(ErrorCode::InvalidRequest);
                    outcome.error_message = Some(poison.reason.clone());
                    outcomes.push(outcome);
                }
            }
        }
        (to_apply, outcomes)
    }

    /// A FAILED outcome of `id` consumed at `item`'s offset, to fill in.
    fn outcome_row(
        &self,
        id: Uuid,
        request_type: &str,
        user_id: Option<i64>,
        item: &Item<L::Input>,
    ) -> OutcomeRow {
        OutcomeRow {
            id,
            request_type: request_type.to_owned(),
            user_id,
            status: RequestStatus::Failed,
            result: None,
            error_code: None,
            error_message: None,
            topic: self.id.topic.clone(),
            partition: self.id.partition,
            offset: item.offset,
        }
    }
}
