//! The outbox relay: publishes committed events in id order with the
//! idempotent producer, then deletes them. One relay leads at a time; the
//! others stand by.
//!
//! Leadership is a lease row (`leases`, name `outbox-relay`) with a fencing
//! token, not a session lock: a session lock dies with its connection while
//! the process that held it goes on publishing, and a second relay takes
//! over next to it (every event twice, and out of order per key). Here every
//! round is one transaction that first renews the lease *with its token*,
//! keeps the lease row locked while it publishes, and deletes what the broker
//! acknowledged. A relay whose lease was taken over (it stalled past the
//! lease, or its connection died and it came back late) fails that renewal
//! and stops before it publishes anything. The transaction is bounded by
//! `idle_in_transaction_session_timeout`, so a frozen relay cannot hold the
//! lease row forever. What two relays can both publish is at most the one
//! round the old leader had in flight when it lost the lease.

use std::time::Duration;

use platform::kafka::{self, OutgoingRecord};
use schemas::{Topic, TopicNames};
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use platform::db::OUTBOX_CHANNEL;

/// Name of the relay's lease row.
pub const LEASE: &str = "outbox-relay";
/// `application_name` of the relay's database connections, so operators can
/// tell them apart in `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "booking-outbox-relay";
/// Events per round.
const ROUND: i64 = 1000;

struct OutboxRow {
    id: i64,
    event_id: Uuid,
    topic: String,
    event_key: String,
    payload: serde_json::Value,
    request_id: Option<Uuid>,
}

/// How the relay runs.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// How long the lease lasts without a renewal; a stand-by relay takes
    /// over this long after the leader stopped renewing.
    pub lease: Duration,
    /// How long a produce may wait for the broker.
    pub produce_timeout: Duration,
}

/// Why a round, or leading, ended.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Another relay holds the lease now (this one stalled or lost its
    /// connection past the lease): stand by.
    #[error("the relay lease was taken over")]
    LeaseLost,
    /// Postgres failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Publishing failed.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Runs the relay until `cancel` fires.
pub async fn run(
    pool: PgPool,
    producer: kafka::Producer,
    topics: TopicNames,
    settings: RelaySettings,
    cancel: CancellationToken,
) {
    let holder = Uuid::new_v4();
    loop {
        match acquire(&pool, holder, settings.lease).await {
            Ok(Some(lease)) => {
                let token = lease.token;
                tracing::info!(%holder, token, "outbox relay leads");
                match lead(&pool, &producer, &topics, &settings, &lease, &cancel).await {
                    Ok(()) => {}
                    Err(RelayError::LeaseLost) => {
                        metrics::counter!("outbox_lease_lost_total").increment(1);
                        tracing::warn!(%holder, token, "outbox relay lost its lease; standing by");
                    }
                    Err(error) => tracing::warn!(%error, "outbox relay interrupted; retrying"),
                }
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "cannot take the outbox relay lease; retrying"),
        }
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = release(&pool, holder).await;
                return;
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Takes the lease for `holder` if it is free, expired, or already this
/// holder's, for `lease`; returns it with a new fencing token.
pub async fn acquire(
    pool: &PgPool,
    holder: Uuid,
    lease: Duration,
) -> Result<Option<Lease>, sqlx::Error> {
    // Look first without waiting: the leader keeps the row locked while it
    // publishes, and a stand-by relay has no reason to queue behind it.
    let free = sqlx::query_scalar!(
        r#"SELECT expires_at <= now() OR holder = $2 AS "free!" FROM leases WHERE name = $1"#,
        LEASE,
        holder
    )
    .fetch_optional(pool)
    .await?;
    if free == Some(false) {
        return Ok(None);
    }
    let token = sqlx::query_scalar!(
        "INSERT INTO leases (name, holder, token, expires_at)
         VALUES ($1, $2, 1, now() + make_interval(secs => $3))
         ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, token = leases.token + 1,
                                          expires_at = EXCLUDED.expires_at
         WHERE leases.expires_at <= now() OR leases.holder = EXCLUDED.holder
         RETURNING token",
        LEASE,
        holder,
        lease.as_secs_f64()
    )
    .fetch_optional(pool)
    .await?;
    Ok(token.map(|token| Lease {
        holder,
        token,
        lease,
    }))
}

/// Gives the lease up on shutdown, so a stand-by relay takes over at once.
async fn release(pool: &PgPool, holder: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE leases SET expires_at = now() WHERE name = $1 AND holder = $2",
        LEASE,
        holder
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Publishes rounds until cancelled, the lease is lost, or a failure.
async fn lead(
    pool: &PgPool,
    producer: &kafka::Producer,
    topics: &TopicNames,
    settings: &RelaySettings,
    lease: &Lease,
    cancel: &CancellationToken,
) -> Result<(), RelayError> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(OUTBOX_CHANNEL).await?;
    loop {
        if cancel.is_cancelled() {
            return Ok(());
        }
        let published =
            publish_round(pool, producer, topics, settings.produce_timeout, lease).await?;
        if published as i64 >= ROUND {
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            notification = listener.recv() => { notification?; }
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// A relay's claim to lead: checked and renewed by every round.
#[derive(Debug, Clone, Copy)]
pub struct Lease {
    holder: Uuid,
    /// The fencing token: raised by every take-over.
    pub token: i64,
    lease: Duration,
}

impl Lease {
    /// Renews the lease inside `tx` if it is still this relay's (same
    /// token, not expired), locking its row until `tx` ends.
    async fn renew(&self, tx: &mut PgConnection) -> Result<(), RelayError> {
        let renewed = sqlx::query_scalar!(
            "UPDATE leases SET expires_at = now() + make_interval(secs => $4)
             WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > now()
             RETURNING token",
            LEASE,
            self.holder,
            self.token,
            self.lease.as_secs_f64()
        )
        .fetch_optional(&mut *tx)
        .await?;
        renewed.map(|_| ()).ok_or(RelayError::LeaseLost)
    }
}

/// One round: renews the lease, publishes up to `ROUND` events, deletes
/// them once every one was acknowledged, in one transaction. A lease taken
/// over since fails with [`RelayError::LeaseLost`] before anything is
/// published.
pub async fn publish_round(
    pool: &PgPool,
    producer: &kafka::Producer,
    topics: &TopicNames,
    produce_timeout: Duration,
    lease: &Lease,
) -> Result<usize, RelayError> {
    let mut tx = pool.begin().await?;
    // A relay frozen mid-round must not keep the lease row locked: past the
    // lease, Postgres ends its session and a stand-by relay takes over.
    sqlx::query!(
        "SELECT set_config('idle_in_transaction_session_timeout', $1, true)",
        lease.lease.as_millis().max(1).to_string()
    )
    .fetch_one(&mut *tx)
    .await?;
    lease.renew(&mut tx).await?;
    let rows = sqlx::query_as!(
        OutboxRow,
        "SELECT id, event_id, topic, event_key, payload, request_id FROM outbox ORDER BY id LIMIT $1",
        ROUND
    )
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }
    let sends = rows.iter().map(|row| {
        let topic = Topic::ALL
            .iter()
            .find(|t| t.base_name() == row.topic)
            .map(|t| topics.name(*t));
        async move {
            let topic = topic.ok_or_else(|| {
                anyhow::anyhow!("outbox row {} names unknown topic {}", row.id, row.topic)
            })?;
            let mut headers = vec![(schemas::HEADER_EVENT_ID, row.event_id.to_string())];
            if let Some(request_id) = row.request_id {
                headers.push((schemas::HEADER_REQUEST_ID, request_id.to_string()));
                headers.push((
                    schemas::HEADER_TRACEPARENT,
                    schemas::traceparent_for(request_id),
                ));
            }
            let record = OutgoingRecord {
                topic,
                key: row.event_key.clone(),
                payload: serde_json::to_vec(&row.payload)?,
                headers,
            };
            kafka::produce(producer, &record, produce_timeout).await?;
            anyhow::Ok(())
        }
    });
    // From the first send until the commit, the round's events may reach
    // the broker without the outbox knowing: a round that ends any other
    // way publishes them again. The chaos run bounds repeated events by
    // these two figures.
    metrics::gauge!("outbox_in_flight_events").set(rows.len() as f64);
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let confirmed = async {
        // Sent in id order; the idempotent producer keeps that order per
        // partition. Nothing is deleted unless every send was acknowledged.
        for result in futures::future::join_all(sends).await {
            result?;
        }
        sqlx::query!("DELETE FROM outbox WHERE id = ANY($1)", &ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok::<_, RelayError>(())
    }
    .await;
    metrics::gauge!("outbox_in_flight_events").set(0.0);
    if let Err(error) = confirmed {
        metrics::counter!("outbox_unconfirmed_events_total").increment(ids.len() as u64);
        return Err(error);
    }
    metrics::counter!("outbox_published_total").increment(ids.len() as u64);
    Ok(ids.len())
}
