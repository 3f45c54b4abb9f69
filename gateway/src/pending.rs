//! PENDING request rows, written by one task in batches. An accepted call
//! with an `Idempotency-Key` claimed its row before publishing: the writer
//! fills in where the record landed at once, and the call waits for it (a
//! retry must find the claim published). An accepted call without a key
//! needs no row to be polled (its signed id answers PENDING, see
//! [`crate::auth::request_ids`]): its row waits `PENDING_ROW_AFTER_MS` and
//! is written only if no outcome was notified meanwhile, so in the usual
//! case (decided within milliseconds) the gateway writes nothing for it.
//! Undecided rows still reach the table: what lets a lane answer
//! `RECORD_LOST` for a record retention deleted, and what operators see.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::waiter::{OutcomeWaiter, PENDING};

/// Most rows one statement writes.
const MAX_BATCH: usize = 500;
/// Most deferred rows kept while the database cannot take them; past it
/// the oldest are given up (counted in `gateway_pending_rows_dropped_total`):
/// their requests are in Kafka and will be decided all the same.
const MAX_DEFERRED: usize = 200_000;
/// Pause after a failed write before the next try.
const RETRY: Duration = Duration::from_secs(1);

/// A request the broker acknowledged, to record as PENDING.
#[derive(Debug)]
pub struct PendingRow {
    /// Request id.
    pub id: Uuid,
    /// Request type name.
    pub request_type: &'static str,
    /// The user the request acts for.
    pub user_id: Option<i64>,
    /// Where the record was published.
    pub topic: String,
    /// Partition of the record.
    pub partition: i32,
    /// Offset of the record.
    pub offset: i64,
    /// When the call was accepted (a deferred row is written later).
    pub accepted_at: chrono::DateTime<chrono::Utc>,
}

type Answer = oneshot::Sender<Result<(), String>>;

/// The rows waiting for the writer.
#[derive(Default)]
struct Rows {
    /// Keyed calls' rows, written at once; each call waits for its answer.
    now: Vec<(PendingRow, Answer)>,
    /// Unkeyed calls' rows, due in the order they came.
    later: VecDeque<(Instant, PendingRow)>,
    /// The writer has stopped: a keyed call is told so, not left waiting.
    stopped: bool,
}

/// Hands rows to the writer; cheap to clone.
#[derive(Clone)]
pub struct PendingWriter {
    rows: Arc<Mutex<Rows>>,
    wake: Arc<Notify>,
    delay: Duration,
}

/// The writer's end; [`PendingQueue::run`] writes what the writer hands in.
pub struct PendingQueue {
    rows: Arc<Mutex<Rows>>,
    wake: Arc<Notify>,
    /// What says a request is decided already (its row is then not written).
    waiter: OutcomeWaiter,
}

/// Creates the two ends: unkeyed rows wait `delay`.
pub fn channel(delay: Duration, waiter: OutcomeWaiter) -> (PendingWriter, PendingQueue) {
    let rows = Arc::new(Mutex::new(Rows::default()));
    let wake = Arc::new(Notify::new());
    (
        PendingWriter {
            rows: rows.clone(),
            wake: wake.clone(),
            delay,
        },
        PendingQueue { rows, wake, waiter },
    )
}

fn lock(rows: &Mutex<Rows>) -> std::sync::MutexGuard<'_, Rows> {
    rows.lock().unwrap_or_else(|p| p.into_inner())
}

impl PendingWriter {
    /// Records a keyed call's `row` (its claim) as published and returns
    /// once it is committed (or the write failed; the error says why).
    pub async fn record_now(&self, row: PendingRow) -> Result<(), String> {
        let (done, answer) = oneshot::channel();
        {
            let mut rows = lock(&self.rows);
            if rows.stopped {
                return Err("the PENDING writer has stopped".to_owned());
            }
            rows.now.push((row, done));
        }
        self.wake.notify_one();
        answer
            .await
            .map_err(|_| "the PENDING writer has stopped".to_owned())?
    }

    /// Records an unkeyed call's `row` if its request is still undecided
    /// after the delay; returns at once.
    pub fn record_later(&self, row: PendingRow) {
        let due = Instant::now() + self.delay;
        let (waiting, dropped) = {
            let mut rows = lock(&self.rows);
            let dropped = rows.later.len() >= MAX_DEFERRED;
            if dropped {
                rows.later.pop_front();
            }
            rows.later.push_back((due, row));
            (rows.later.len(), dropped)
        };
        if dropped {
            metrics::counter!("gateway_pending_rows_dropped_total").increment(1);
        }
        // The writer sleeps until the first row is due: only a first row
        // (or an immediate one) changes when it must wake.
        if waiting == 1 || self.delay.is_zero() {
            self.wake.notify_one();
        }
    }
}

/// What one round takes out: the keyed rows, and the unkeyed ones due.
struct Round {
    now: Vec<(PendingRow, Answer)>,
    due: Vec<PendingRow>,
}

impl Round {
    fn is_empty(&self) -> bool {
        self.now.is_empty() && self.due.is_empty()
    }
}

impl PendingQueue {
    /// Writes rows as they come and fall due until `stop` fires, then
    /// writes every row still undecided, due or not, and returns.
    pub async fn run(self, pool: PgPool, stop: CancellationToken) {
        loop {
            let round = self.take(Instant::now(), false);
            if round.is_empty() {
                let next = lock(&self.rows).later.front().map(|(due, _)| *due);
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    _ = self.wake.notified() => {}
                    _ = sleep_until(next) => {}
                }
                continue;
            }
            if self.write(&pool, round).await.is_err() {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(RETRY) => {}
                }
            }
        }
        // Shutting down: what is left is written now (a few tries), so a
        // restart keeps the rows of requests still undecided. Keyed calls
        // from now on are told the writer stopped (none should come: the
        // server has drained before `stop` fires).
        lock(&self.rows).stopped = true;
        let mut failures = 0;
        while failures < 3 {
            let round = self.take(Instant::now(), true);
            if round.is_empty() {
                return;
            }
            if self.write(&pool, round).await.is_err() {
                failures += 1;
                tokio::time::sleep(RETRY).await;
            }
        }
        let left = lock(&self.rows).later.len();
        if left > 0 {
            tracing::warn!(
                rows = left,
                "gave up writing PENDING rows at shutdown; their requests are decided all the same"
            );
        }
    }

    /// The keyed rows and up to a batch of due unkeyed ones (every unkeyed
    /// one when `all`), leaving out those decided already.
    fn take(&self, now: Instant, all: bool) -> Round {
        let (keyed, due) = {
            let mut rows = lock(&self.rows);
            let keyed = std::mem::take(&mut rows.now);
            let room = MAX_BATCH.saturating_sub(keyed.len()).max(1);
            let mut due = Vec::new();
            while due.len() < room && rows.later.front().is_some_and(|(at, _)| all || *at <= now) {
                if let Some((_, row)) = rows.later.pop_front() {
                    due.push(row);
                }
            }
            metrics::gauge!("gateway_pending_rows_deferred").set(rows.later.len() as f64);
            (keyed, due)
        };
        let taken = due.len();
        let due: Vec<PendingRow> = due
            .into_iter()
            .filter(|row| !self.decided(row.id))
            .collect();
        metrics::counter!("gateway_pending_rows_skipped_total")
            .increment((taken - due.len()) as u64);
        Round { now: keyed, due }
    }

    /// Whether an outcome of `id` was notified to this gateway.
    fn decided(&self, id: Uuid) -> bool {
        self.waiter
            .known(id)
            .is_some_and(|known| known.status != PENDING)
    }

    /// Writes a round; on failure the keyed calls get the error and the
    /// unkeyed rows go back to the front, to be tried again.
    async fn write(&self, pool: &PgPool, round: Round) -> Result<(), ()> {
        if round.is_empty() {
            return Ok(());
        }
        let Round { now, due } = round;
        let rows: Vec<&PendingRow> = now.iter().map(|(row, _)| row).chain(&due).collect();
        metrics::histogram!("gateway_pending_batch_rows").record(rows.len() as f64);
        let written = insert(pool, &rows).await.map_err(|e| e.to_string());
        let failed = written.is_err();
        if let Err(error) = &written {
            metrics::counter!("gateway_pending_write_failures_total").increment(1);
            tracing::warn!(%error, rows = rows.len(), "could not write PENDING rows; retrying");
        } else {
            metrics::counter!("gateway_pending_rows_written_total").increment(rows.len() as u64);
        }
        for (_, done) in now {
            let _ = done.send(written.clone());
        }
        if failed {
            let mut queued = lock(&self.rows);
            let retry_at = Instant::now();
            for row in due.into_iter().rev() {
                queued.later.push_front((retry_at, row));
            }
            return Err(());
        }
        Ok(())
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn insert(pool: &PgPool, rows: &[&PendingRow]) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let types: Vec<&str> = rows.iter().map(|r| r.request_type).collect();
    let users: Vec<Option<i64>> = rows.iter().map(|r| r.user_id).collect();
    let topics: Vec<&str> = rows.iter().map(|r| r.topic.as_str()).collect();
    let partitions: Vec<i32> = rows.iter().map(|r| r.partition).collect();
    let offsets: Vec<i64> = rows.iter().map(|r| r.offset).collect();
    let accepted: Vec<chrono::DateTime<chrono::Utc>> = rows.iter().map(|r| r.accepted_at).collect();
    // A keyed call claimed its row before publishing: fill in where the
    // record landed. A lane may have decided the request already: its
    // outcome stays.
    sqlx::query!(
        "INSERT INTO requests (id, type, user_id, status, topic, kafka_partition, kafka_offset,
                               accepted_at)
         SELECT id, type, user_id, 'PENDING', topic, kafka_partition, kafka_offset, accepted_at
         FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::text[], $5::int4[], $6::int8[],
                     $7::timestamptz[])
              AS t(id, type, user_id, topic, kafka_partition, kafka_offset, accepted_at)
         ON CONFLICT (id) DO UPDATE SET topic = EXCLUDED.topic,
             kafka_partition = EXCLUDED.kafka_partition, kafka_offset = EXCLUDED.kafka_offset
         WHERE requests.status = 'PENDING' AND requests.kafka_offset IS NULL",
        // `as`: the macro would want owned strings and non-null ids; these
        // borrowed strings and nullable ids encode as the same arrays.
        &ids,
        &types as &[&str],
        &users as &[Option<i64>],
        &topics as &[&str],
        &partitions,
        &offsets,
        &accepted,
    )
    .execute(pool)
    .await?;
    Ok(())
}
