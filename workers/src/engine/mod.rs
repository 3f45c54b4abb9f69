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

use std::future::Future;

use schemas::{ErrorCode, Event};
use sqlx::PgConnection;

use crate::error::LaneResult;

pub use decode::{EventOn, EventTopic, LaneInput, Poison, RequestMeta};
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
///
/// The engine applies each batch to a fresh copy of the lane's value (its
/// `Clone`), inside the batch transaction: `prepare` with every input of the
/// batch, `apply` each input in order, then `finish` before the commit. So a
/// lane's fields hold both what every batch starts from (settings, empty
/// collections) and whatever one batch stages (row locks taken once, deltas
/// written once); nothing outlives a batch.
pub trait Lane: Clone + Send + Sync + 'static {
    /// What the lane consumes: its topic's requests (with an outcome each)
    /// or events. The input type names the topic.
    type Input: LaneInput;

    /// Short name, used for the consumer group and in logs and metrics.
    const NAME: &'static str;

    /// Runs once per batch before any input is applied, with every input
    /// that will be (for example to take row locks in one global order, so
    /// batches on different partitions cannot deadlock).
    fn prepare(
        &mut self,
        _tx: &mut PgConnection,
        _inputs: &[&Self::Input],
    ) -> impl Future<Output = LaneResult<()>> + Send {
        async { Ok(()) }
    }

    /// Applies one input inside the batch transaction. A business refusal
    /// is an `Ok` rejection and must leave no writes behind; an `Err` aborts
    /// the batch (it is retried or isolated by the engine). For event inputs
    /// the outcome is not recorded.
    fn apply(
        &mut self,
        tx: &mut PgConnection,
        input: &Self::Input,
    ) -> impl Future<Output = LaneResult<Applied>> + Send;

    /// Runs once per batch after every input, before the commit; returns
    /// events to publish.
    fn finish(self, _tx: &mut PgConnection) -> impl Future<Output = LaneResult<Vec<Event>>> + Send {
        async { Ok(Vec::new()) }
    }
}
