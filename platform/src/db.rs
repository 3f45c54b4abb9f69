//! The Postgres pool, migrations, and the classification of database errors
//! into "retry now", "back off" and "this record is at fault".

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

/// Channel the lanes `NOTIFY` after deciding requests; the payload is a
/// comma-separated id list. The gateway listens to wake long-polls.
pub const OUTCOME_CHANNEL: &str = "request_outcomes";
/// Channel the lanes `NOTIFY` after writing outbox rows; wakes the relay.
pub const OUTBOX_CHANNEL: &str = "outbox_ready";

/// Migrations of the whole system, embedded from `migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Opens a pool. Connecting is lazy, so a process can start while Postgres
/// is down and report not-ready until it comes back.
pub fn pool(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url
        .parse::<PgConnectOptions>()?
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options))
}

/// Runs pending migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// What to do about a database error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Serialization failure or deadlock: retry the transaction at once.
    Conflict,
    /// The database is unreachable or shutting down: back off and retry,
    /// without advancing anything.
    Unavailable,
    /// The statement itself failed (constraint, data): retrying the same
    /// input fails the same way.
    Permanent,
}

/// Classifies `err` (SQLSTATE classes 40, 08, 57, 53 and connection errors).
pub fn classify(err: &sqlx::Error) -> ErrorClass {
    match err {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("40001") | Some("40P01") => ErrorClass::Conflict,
            Some(code)
                if code.starts_with("08") || code.starts_with("57") || code.starts_with("53") =>
            {
                ErrorClass::Unavailable
            }
            _ => ErrorClass::Permanent,
        },
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => ErrorClass::Unavailable,
        _ => ErrorClass::Permanent,
    }
}

/// Whether `err` is a unique violation of the named constraint or index.
pub fn is_unique_violation(err: &sqlx::Error, constraint: &str) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.code().as_deref() == Some("23505") && db.constraint() == Some(constraint)
        }
        _ => false,
    }
}
