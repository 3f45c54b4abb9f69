//! The engine's own SQL: stored offsets, request outcomes, outbox rows and
//! the notifications that wake long-polls and the relay.

use std::collections::HashMap;

use schemas::{ErrorCode, EventEnvelope};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use platform::db::{outcome_payloads, OutcomeNotice, RequestView, OUTBOX_CHANNEL, OUTCOME_CHANNEL};

use super::partition::PartitionId;
use crate::error::{LaneError, LaneResult};

/// Stored next offsets of `group` for `partitions` of `topic`.
pub async fn load_offsets(
    pool: &PgPool,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<HashMap<i32, i64>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT kafka_partition, next_offset FROM consumer_offsets
         WHERE consumer_group = $1 AND topic = $2 AND kafka_partition = ANY($3)",
        group,
        topic,
        partitions
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.kafka_partition, row.next_offset))
        .collect())
}

/// A partition's stored position: the next offset to apply and the digest
/// of the record applied just before it (None when unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Next offset to apply.
    pub next: i64,
    /// `record_digest` of the record at
    /// `next - 1`.
    pub digest: Option<i64>,
}

/// Locks the partition's offset row for this transaction and returns the
/// stored position, creating the row at `first_offset` when the partition
/// was never consumed.
pub async fn lock_offset(
    tx: &mut PgConnection,
    at: &PartitionId,
    first_offset: i64,
) -> Result<Position, sqlx::Error> {
    if let Some(position) = select_locked(tx, at).await? {
        return Ok(position);
    }
    sqlx::query!(
        "INSERT INTO consumer_offsets (consumer_group, topic, kafka_partition, next_offset)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        at.group,
        at.topic,
        at.partition,
        first_offset
    )
    .execute(&mut *tx)
    .await?;
    select_locked(tx, at).await?.ok_or(sqlx::Error::RowNotFound)
}

async fn select_locked(
    tx: &mut PgConnection,
    at: &PartitionId,
) -> Result<Option<Position>, sqlx::Error> {
    sqlx::query_as!(
        Position,
        r#"SELECT next_offset AS next, last_record_digest AS digest FROM consumer_offsets
           WHERE consumer_group = $1 AND topic = $2 AND kafka_partition = $3 FOR UPDATE"#,
        at.group,
        at.topic,
        at.partition
    )
    .fetch_optional(&mut *tx)
    .await
}

/// The stored next offset, read without a lock (None if never consumed).
pub async fn stored_offset(pool: &PgPool, at: &PartitionId) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT next_offset FROM consumer_offsets
         WHERE consumer_group = $1 AND topic = $2 AND kafka_partition = $3",
        at.group,
        at.topic,
        at.partition
    )
    .fetch_optional(pool)
    .await
}

/// Moves the stored next offset from `from` to `to` outside a batch (the
/// log was recreated, or retention deleted records before they were
/// applied), forgetting the digest. Does nothing if another process moved
/// it meanwhile; returns whether it moved.
pub async fn move_offset(
    pool: &PgPool,
    at: &PartitionId,
    from: i64,
    to: i64,
) -> Result<bool, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    move_offset_on(&mut conn, at, from, to).await
}

async fn move_offset_on(
    conn: &mut PgConnection,
    at: &PartitionId,
    from: i64,
    to: i64,
) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query!(
        "UPDATE consumer_offsets SET next_offset = $5, last_record_digest = NULL, updated_at = now()
         WHERE consumer_group = $1 AND topic = $2 AND kafka_partition = $3 AND next_offset = $4",
        at.group,
        at.topic,
        at.partition,
        from,
        to
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(moved == 1)
}

/// Retention deleted the records at offsets `from..to` of a request topic
/// before a lane applied them: their requests can never be applied. Moves
/// the stored offset past them and records every such request that is
/// still PENDING as FAILED with `RECORD_LOST` (they had no effect), so its
/// client gets an outcome. Returns how many requests that decided, or None
/// if another process moved the offset first.
pub async fn skip_deleted_records(
    pool: &PgPool,
    at: &PartitionId,
    from: i64,
    to: i64,
) -> Result<Option<u64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if !move_offset_on(&mut tx, at, from, to).await? {
        return Ok(None);
    }
    let lost = sqlx::query!(
        "UPDATE requests SET status = 'FAILED', error_code = $5, completed_at = now(),
                error_message = $6
         WHERE topic = $1 AND kafka_partition = $2 AND kafka_offset >= $3 AND kafka_offset < $4
           AND status = 'PENDING'
         RETURNING id, user_id, type",
        at.topic,
        at.partition,
        from,
        to,
        ErrorCode::RecordLost.as_str(),
        RECORD_LOST_MESSAGE
    )
    .fetch_all(&mut *tx)
    .await?;
    let notices: Vec<OutcomeNotice> = lost
        .iter()
        .map(|row| OutcomeNotice {
            id: row.id,
            outcome: Some(RequestView {
                request_type: row.r#type.clone(),
                user_id: row.user_id,
                status: "FAILED".into(),
                result: None,
                error_code: Some(ErrorCode::RecordLost.as_str().into()),
                error_message: Some(RECORD_LOST_MESSAGE.into()),
            }),
        })
        .collect();
    notify_outcomes(&mut tx, &notices).await?;
    tx.commit().await?;
    Ok(Some(lost.len() as u64))
}

/// What a client reads for a request whose record retention deleted.
const RECORD_LOST_MESSAGE: &str =
    "the request was deleted from the log (retention) before it was applied; it had no effect";

/// Advances the partition's stored next offset; `digest` is that of the
/// last record applied (at `next_offset - 1`).
pub async fn store_offset(
    tx: &mut PgConnection,
    at: &PartitionId,
    next_offset: i64,
    digest: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE consumer_offsets SET next_offset = $4, last_record_digest = $5, updated_at = now()
         WHERE consumer_group = $1 AND topic = $2 AND kafka_partition = $3",
        at.group,
        at.topic,
        at.partition,
        next_offset,
        digest
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Which of `ids` have a row, and whether it holds a final outcome
/// (applied earlier) or is still PENDING.
pub async fn known(
    tx: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, bool>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query!(
        r#"SELECT id, status <> 'PENDING' AS "decided!" FROM requests WHERE id = ANY($1)"#,
        ids
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.into_iter().map(|row| (row.id, row.decided)).collect())
}

/// A final outcome to record.
#[derive(Debug, Clone)]
pub struct OutcomeRow {
    /// Request id.
    pub id: Uuid,
    /// Request type, or `unknown` for undecodable records.
    pub request_type: String,
    /// The user the request acts for.
    pub user_id: Option<i64>,
    /// SUCCEEDED, REJECTED or FAILED.
    pub status: api::status::RequestStatus,
    /// Result of a success.
    pub result: Option<serde_json::Value>,
    /// Code of a rejection or failure.
    pub error_code: Option<ErrorCode>,
    /// Message of a rejection or failure.
    pub error_message: Option<String>,
    /// Where the record was consumed from.
    pub topic: String,
    /// Partition of the record.
    pub partition: i32,
    /// Offset of the record.
    pub offset: i64,
}

/// Writes final outcomes in one statement. The caller has checked (in this
/// transaction) that none of them was decided; if one was decided since by
/// another transaction (two records of one request on two partitions, say a
/// dead letter re-driven under another key), the batch must not commit its
/// effects twice: that is a [`LaneError::Conflict`], and the retried batch
/// finds the request decided and skips it.
pub async fn record_outcomes(tx: &mut PgConnection, rows: &[OutcomeRow]) -> LaneResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let types: Vec<&str> = rows.iter().map(|r| r.request_type.as_str()).collect();
    let users: Vec<Option<i64>> = rows.iter().map(|r| r.user_id).collect();
    let statuses: Vec<&str> = rows.iter().map(|r| r.status.as_str()).collect();
    let results: Vec<Option<serde_json::Value>> = rows.iter().map(|r| r.result.clone()).collect();
    let codes: Vec<Option<&str>> = rows
        .iter()
        .map(|r| r.error_code.map(|c| c.as_str()))
        .collect();
    let messages: Vec<Option<&str>> = rows.iter().map(|r| r.error_message.as_deref()).collect();
    let topics: Vec<&str> = rows.iter().map(|r| r.topic.as_str()).collect();
    let partitions: Vec<i32> = rows.iter().map(|r| r.partition).collect();
    let offsets: Vec<i64> = rows.iter().map(|r| r.offset).collect();
    // RETURNING names the rows this statement wrote: a request decided
    // before keeps its first outcome and is not notified again.
    // Arrays of optional values skip the macro's type check (`as _`): the
    // statement casts each to its column's array type.
    let written = sqlx::query!(
        "INSERT INTO requests (id, type, user_id, status, result, error_code, error_message,
                               topic, kafka_partition, kafka_offset, completed_at)
         SELECT t.*, now() FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::text[], $5::jsonb[],
                                       $6::text[], $7::text[], $8::text[], $9::int4[], $10::int8[]) AS t
         ON CONFLICT (id) DO UPDATE SET
             type = EXCLUDED.type,
             user_id = COALESCE(requests.user_id, EXCLUDED.user_id),
             status = EXCLUDED.status,
             result = EXCLUDED.result,
             error_code = EXCLUDED.error_code,
             error_message = EXCLUDED.error_message,
             topic = EXCLUDED.topic,
             kafka_partition = EXCLUDED.kafka_partition,
             kafka_offset = EXCLUDED.kafka_offset,
             completed_at = now()
         WHERE requests.status = 'PENDING'
         RETURNING id, user_id",
        &ids,
        &types as _,
        &users as _,
        &statuses as _,
        &results as _,
        &codes as _,
        &messages as _,
        &topics as _,
        &partitions,
        &offsets
    )
    .fetch_all(&mut *tx)
    .await?;
    if written.len() != rows.len() {
        return Err(LaneError::Conflict(format!(
            "{} of the batch's requests were decided by another transaction meanwhile",
            rows.len() - written.len()
        )));
    }
    let owners: HashMap<Uuid, Option<i64>> = written
        .into_iter()
        .map(|row| (row.id, row.user_id))
        .collect();
    let notices: Vec<OutcomeNotice> = rows
        .iter()
        .filter_map(|row| {
            let user_id = *owners.get(&row.id)?;
            Some(OutcomeNotice {
                id: row.id,
                outcome: Some(RequestView {
                    request_type: row.request_type.clone(),
                    user_id,
                    status: row.status.as_str().to_owned(),
                    result: row.result.clone(),
                    error_code: row.error_code.map(|c| c.as_str().to_owned()),
                    error_message: row.error_message.clone(),
                }),
            })
        })
        .collect();
    Ok(notify_outcomes(tx, &notices).await?)
}

/// Tells the gateways what was decided; delivered when the transaction
/// commits.
async fn notify_outcomes(
    tx: &mut PgConnection,
    notices: &[OutcomeNotice],
) -> Result<(), sqlx::Error> {
    if notices.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "SELECT pg_notify($1, p) FROM UNNEST($2::text[]) AS p",
        OUTCOME_CHANNEL,
        &outcome_payloads(notices)
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Writes events to the outbox in order and wakes the relay.
pub async fn enqueue_events(
    tx: &mut PgConnection,
    events: &[EventEnvelope],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let topics: Vec<&str> = events.iter().map(|e| e.event.topic().base_name()).collect();
    let keys: Vec<String> = events.iter().map(|e| e.event.key()).collect();
    let payloads: Vec<serde_json::Value> = events
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let request_ids: Vec<Option<Uuid>> = events.iter().map(|e| e.request_id).collect();
    sqlx::query!(
        "INSERT INTO outbox (event_id, topic, event_key, payload, request_id)
         SELECT id, topic, event_key, payload, request_id
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::uuid[])
              WITH ORDINALITY AS t(id, topic, event_key, payload, request_id, n)
         ORDER BY n",
        &ids,
        &topics as _,
        &keys,
        &payloads,
        &request_ids as _
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!("SELECT pg_notify($1, '')", OUTBOX_CHANNEL)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
