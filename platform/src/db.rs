//! The Postgres pool, migrations, and the classification of database errors
//! into "retry now", "back off" and "this record is at fault".

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use uuid::Uuid;

/// Channel the lanes `NOTIFY` after deciding requests; the payload is made
/// by [`outcome_payloads`] (a JSON array of [`OutcomeNotice`]s). The gateway
/// listens to answer long-polls.
pub const OUTCOME_CHANNEL: &str = "request_outcomes";
/// Channel queue admission `NOTIFY`s after admitting places of a schedule's
/// line; the payload is `<schedule id>:<admitted through>` (every place up
/// to that number is admitted or gone). The gateway listens to answer
/// long-polls on queue tokens.
pub const QUEUE_ADMITTED_CHANNEL: &str = "queue_admitted";
/// Advisory lock class (first half of the key) of a schedule's waiting line;
/// the second half is `queue_line_key(schedule id)` (a SQL function of the
/// migrations). Joins hold it shared while they take a place number,
/// admission exclusively while it admits: admission never passes a place
/// whose join is still in flight.
pub const QUEUE_LINE_LOCK_CLASS: i32 = 0x0b00_c0de;
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

/// Like [`pool`], with connections named `application_name` in
/// `pg_stat_activity`, so operators (and fault tests) can tell a job's
/// connections apart.
pub fn named_pool(
    url: &str,
    max_connections: u32,
    application_name: &str,
) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url
        .parse::<PgConnectOptions>()?
        .application_name(application_name)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options))
}

/// Listens to `channel` until `cancel` fires and hands each notification's
/// payload to `on`, reconnecting half a second after a failure (what was
/// notified meanwhile is lost: listeners must tolerate a missed
/// notification).
pub async fn listen(
    pool: &PgPool,
    channel: &str,
    cancel: &tokio_util::sync::CancellationToken,
    mut on: impl FnMut(&str),
) {
    loop {
        let listening = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
            listener.listen(channel).await?;
            loop {
                on(listener.recv().await?.payload());
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            result = listening => {
                if let Err(error) = result {
                    tracing::warn!(%error, channel, "listener failed; reconnecting");
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Runs pending migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// What to do about a database error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Serialization failure, deadlock, or a lock not available: retry the
    /// transaction at once.
    Conflict,
    /// The database is unreachable, out of resources, shutting down or
    /// failing: back off and retry, without advancing anything.
    Unavailable,
    /// The input broke a rule of the data (a constraint, a value out of
    /// range): the same input fails the same way.
    Refused,
    /// Anything else (syntax, an undefined object, decoding a column, a
    /// missing row): a bug.
    Bug,
}

/// The SQLSTATEs that are not bugs: a five-character code, or a class (its
/// first two characters). The one table every caller classifies by.
const SQLSTATES: &[(&str, ErrorClass)] = &[
    ("40001", ErrorClass::Conflict), // serialization_failure
    ("40P01", ErrorClass::Conflict), // deadlock_detected
    ("55P03", ErrorClass::Conflict), // lock_not_available
    ("08", ErrorClass::Unavailable), // connection exception
    ("53", ErrorClass::Unavailable), // insufficient resources
    ("57", ErrorClass::Unavailable), // operator intervention (shutdown)
    ("58", ErrorClass::Unavailable), // system error (I/O)
    ("22", ErrorClass::Refused),     // data exception
    ("23", ErrorClass::Refused),     // integrity constraint violation
];

/// Classifies a SQLSTATE by [`SQLSTATES`].
pub fn classify_sqlstate(code: &str) -> ErrorClass {
    SQLSTATES
        .iter()
        .find(|(key, _)| code == *key || (key.len() == 2 && code.starts_with(key)))
        .map_or(ErrorClass::Bug, |(_, class)| *class)
}

/// Classifies `err`: its SQLSTATE by [`SQLSTATES`]; every client-side
/// connection failure is [`ErrorClass::Unavailable`].
pub fn classify(err: &sqlx::Error) -> ErrorClass {
    match err {
        sqlx::Error::Database(db) => classify_sqlstate(db.code().as_deref().unwrap_or_default()),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => ErrorClass::Unavailable,
        _ => ErrorClass::Bug,
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

/// Largest `NOTIFY` payload Postgres accepts is 8000 bytes; stay under it.
const NOTIFY_PAYLOAD_BYTES: usize = 7_900;

/// A decided request as a lane notifies it: the committed row of
/// `requests`, so a gateway can answer a long-poll without reading it back.
/// An outcome too large for a notification travels as its id alone
/// (`outcome` is `None`) and the gateway reads the row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeNotice {
    /// Request id.
    pub id: Uuid,
    /// The decided row, when it fits.
    #[serde(default, skip_serializing_if = "Option::is_none", flatten)]
    pub outcome: Option<RequestView>,
}

/// The columns of a `requests` row a client sees: what a lane notifies for
/// a decided request, what the gateway caches, and what it reads back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct RequestView {
    /// Request type name.
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub request_type: String,
    /// The user the request acts for.
    pub user_id: Option<i64>,
    /// SUCCEEDED, REJECTED or FAILED.
    pub status: String,
    /// Result of a success.
    pub result: Option<serde_json::Value>,
    /// Code of a rejection or failure.
    pub error_code: Option<String>,
    /// Message of a rejection or failure.
    pub error_message: Option<String>,
}

/// Packs `notices` into as few `NOTIFY` payloads as fit the size limit,
/// in order. An outcome that cannot fit a payload by itself is sent as its
/// id alone.
pub fn outcome_payloads(notices: &[OutcomeNotice]) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut current = String::from("[");
    for notice in notices {
        let mut item = serde_json::to_string(notice).unwrap_or_default();
        if item.is_empty() || item.len() + 2 > NOTIFY_PAYLOAD_BYTES {
            item = serde_json::to_string(&OutcomeNotice {
                id: notice.id,
                outcome: None,
            })
            .unwrap_or_default();
        }
        if current.len() + item.len() + 2 > NOTIFY_PAYLOAD_BYTES {
            current.push(']');
            payloads.push(std::mem::replace(&mut current, String::from("[")));
        }
        if current.len() > 1 {
            current.push(',');
        }
        current.push_str(&item);
    }
    if current.len() > 1 {
        current.push(']');
        payloads.push(current);
    }
    payloads
}

/// Reads a payload of [`OUTCOME_CHANNEL`]: the JSON array
/// [`outcome_payloads`] makes, or a comma-separated list of ids (what
/// lanes of earlier versions send, and what an operator may send by hand
/// to wake long-polls after fixing rows).
pub fn parse_outcome_payload(payload: &str) -> Vec<OutcomeNotice> {
    if payload.trim_start().starts_with('[') {
        return serde_json::from_str(payload).unwrap_or_default();
    }
    payload
        .split(',')
        .filter_map(|s| Uuid::parse_str(s.trim()).ok())
        .map(|id| OutcomeNotice { id, outcome: None })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(n: u128, message_len: usize) -> OutcomeNotice {
        OutcomeNotice {
            id: Uuid::from_u128(n),
            outcome: Some(RequestView {
                request_type: "balance.charge".into(),
                user_id: Some(7),
                status: "REJECTED".into(),
                result: None,
                error_code: Some("INSUFFICIENT_BALANCE".into()),
                error_message: Some("x".repeat(message_len)),
            }),
        }
    }

    #[test]
    fn payloads_fit_notify_and_keep_every_notice_in_order() {
        let notices: Vec<OutcomeNotice> = (0..500).map(|n| notice(n, 40)).collect();
        let payloads = outcome_payloads(&notices);
        assert!(payloads.len() > 1, "500 notices need several payloads");
        assert!(payloads.iter().all(|p| p.len() < 8000));
        let back: Vec<OutcomeNotice> = payloads
            .iter()
            .flat_map(|p| parse_outcome_payload(p))
            .collect();
        assert_eq!(back, notices);
    }

    #[test]
    fn an_outcome_too_large_to_notify_travels_as_its_id() {
        let notices = vec![notice(1, 10), notice(2, 9_000), notice(3, 10)];
        let payloads = outcome_payloads(&notices);
        assert!(payloads.iter().all(|p| p.len() < 8000));
        let back: Vec<OutcomeNotice> = payloads
            .iter()
            .flat_map(|p| parse_outcome_payload(p))
            .collect();
        assert_eq!(back.len(), 3);
        assert_eq!(back[0], notices[0]);
        assert_eq!(back[1].id, notices[1].id);
        assert_eq!(back[1].outcome, None);
        assert_eq!(back[2], notices[2]);
        assert!(outcome_payloads(&[]).is_empty());
    }

    #[test]
    fn id_lists_still_parse() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        let back = parse_outcome_payload(&format!("{a}, {b},not-an-id"));
        assert_eq!(back.iter().map(|n| n.id).collect::<Vec<_>>(), vec![a, b]);
        assert!(back.iter().all(|n| n.outcome.is_none()));
        assert!(parse_outcome_payload("[not json").is_empty());
    }
}
