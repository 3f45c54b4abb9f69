//! Shared state of the handlers.

use std::sync::Arc;
use std::time::Duration;

use schemas::TopicNames;
use sqlx::PgPool;

use crate::auth::limits::RateLimits;
use crate::auth::password::Passwords;
use crate::auth::request_ids::RequestIds;
use crate::auth::Signer;
use crate::pending::PendingWriter;
use crate::queue::QueueLines;
use crate::waiter::OutcomeWaiter;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Postgres (reads, request rows, catalogue and identity writes).
    pub pool: PgPool,
    /// The idempotent producer requests are published with (renewed after
    /// a fatal error).
    pub producer: platform::kafka::Producer,
    /// Topic names of this deployment.
    pub topics: TopicNames,
    /// Signs and checks user credentials.
    pub signer: Signer,
    /// Issues and checks the request ids of unkeyed calls.
    pub request_ids: RequestIds,
    /// Hashes and checks passwords.
    pub passwords: Passwords,
    /// Rate limits of sign-ups and logins.
    pub limits: RateLimits,
    /// The admin credential.
    pub admin_token: Arc<str>,
    /// Wakes long-polls when outcomes are written.
    pub waiter: OutcomeWaiter,
    /// The waiting lines: polling pace, long-polls, liveness.
    pub queue: QueueLines,
    /// The schedule of each seat, read once per seat.
    pub seat_schedules: crate::routes::reservations::SeatSchedules,
    /// Records accepted requests as PENDING, many per statement (an
    /// unkeyed call's row only if still undecided after a delay).
    pub pending: PendingWriter,
    /// How long a produce may wait for the broker.
    pub produce_timeout: Duration,
    /// Longest long-poll a client may ask for.
    pub max_wait: Duration,
    /// How long decided request rows are kept (`REQUEST_RETENTION_DAYS`).
    pub retention: Duration,
    /// Time zone of business days (product stats).
    pub business_tz: Arc<str>,
    /// Fires when the gateway starts shutting down: long-polls answer at
    /// once (with the status as it is), so a restart is not held up by
    /// clients waiting for outcomes; they poll again, here or elsewhere.
    pub shutdown: tokio_util::sync::CancellationToken,
}
