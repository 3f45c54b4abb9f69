//! The lane engine, written once for every lane.
//!
//! A lane consumes one request topic as a member of its consumer group. Each
//! assigned partition runs in its own task; a task collects a batch of records
//! and applies it in one Postgres transaction together with each request's
//! outcome row, its outbox events and the partition's next offset. Offsets
//! live in Postgres (`consumer_offsets`): on assignment a partition resumes
//! from there, and every batch re-checks it under a row lock, so a batch is
//! applied at most once even when two processes briefly own a partition.
//!
//! A lane adds only its business step: [`Lane::apply`].
//!
//! The modules, in the order a record meets them: `group` (consumer group
//! membership, one task per assigned partition), `partition` (a task's loop:
//! batches, retries, isolation, re-reads), `decode` (record to input or
//! poison), `transaction` (the batch transaction), `store` (its SQL),
//! `retry` (the waits), `log` (watermarks, seeks and the dead-letter topic,
//! behind a trait the engine's tests replace), `settings`.

pub(crate) mod decode;
mod group;
pub mod log;
pub mod partition;
mod retry;
mod settings;
pub mod store;
#[cfg(test)]
mod tests;
mod transaction;

use async_trait::async_trait;
use schemas::{ErrorCode, Event, Topic};
use sqlx::PgConnection;

use crate::error::LaneResult;

pub use decode::{LaneInput, Poison, RequestMeta};
pub use group::run_lane;
pub use settings::LaneSettings;

/// What applying one request decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Applied; the value is the request's `result` (none for an event).
    Succeeded(Option<api::RequestResult>),
    /// A business rule refused it. Nothing was changed.
    Rejected(ErrorCode, String),
}

/// The outcome of one request and the events it emits.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The outcome.
    pub outcome: Outcome,
    /// Events to publish through the outbox, in order.
    pub events: Vec<Event>,
}

impl Applied {
    /// A request applied with `result` and `events`.
    pub fn succeeded(result: impl Into<api::RequestResult>, events: Vec<Event>) -> Self {
        Self {
            outcome: Outcome::Succeeded(Some(result.into())),
            events,
        }
    }

    /// An event consumed, emitting `events`.
    pub fn consumed(events: Vec<Event>) -> Self {
        Self {
            outcome: Outcome::Succeeded(None),
            events,
        }
    }

    /// A rejection with `code`; no events.
    pub fn rejected(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Rejected(code, message.into()),
            events: Vec::new(),
        }
    }
}

/// A lane's business step.
#[async_trait]
pub trait Lane: Send + Sync + 'static {
    /// What the lane consumes: requests (with an outcome each) or events.
    type Input: LaneInput;

    /// Per-batch scratch state (for example deltas applied once at the end).
    type Batch: Default + Send;

    /// Short name, used for the consumer group and in logs and metrics.
    const NAME: &'static str;

    /// The topic the lane consumes.
    const TOPIC: Topic;

    /// Runs once per batch before any input is applied, with every input
    /// that will be (for example to take row locks in one global order, so
    /// batches on different partitions cannot deadlock).
    async fn prepare(
        &self,
        _tx: &mut PgConnection,
        _batch: &mut Self::Batch,
        _inputs: &[&Self::Input],
    ) -> LaneResult<()> {
        Ok(())
    }

    /// Applies one input inside the batch transaction. A business refusal
    /// is an `Ok` rejection and must leave no writes behind; an `Err` aborts
    /// the batch (it is retried or isolated by the engine). For event inputs
    /// the outcome is not recorded.
    async fn apply(
        &self,
        tx: &mut PgConnection,
        batch: &mut Self::Batch,
        input: &Self::Input,
    ) -> LaneResult<Applied>;

    /// Runs once per batch after every input, before the commit; returns
    /// events to publish.
    async fn finish(&self, _tx: &mut PgConnection, _batch: Self::Batch) -> LaneResult<Vec<Event>> {
        Ok(Vec::new())
    }
}
