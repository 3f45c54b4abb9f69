//! Group commit of PENDING request rows. Each accepted call hands its row to
//! one writer task, which inserts whatever has queued up meanwhile in one
//! statement: one commit for many accepts under load, no added wait when
//! idle (a lone row is written at once).

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Most rows one statement writes.
const MAX_BATCH: usize = 500;
/// Rows that may wait for the writer before accepts wait too.
const QUEUE: usize = 10_000;

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
}

type Job = (PendingRow, oneshot::Sender<Result<(), String>>);

/// Hands rows to the writer; cheap to clone.
#[derive(Clone)]
pub struct PendingWriter {
    jobs: mpsc::Sender<Job>,
}

/// The writer's end; [`PendingQueue::run`] drains it.
pub struct PendingQueue {
    jobs: mpsc::Receiver<Job>,
}

/// Creates the two ends.
pub fn channel() -> (PendingWriter, PendingQueue) {
    let (jobs, rx) = mpsc::channel(QUEUE);
    (PendingWriter { jobs }, PendingQueue { jobs: rx })
}

impl PendingWriter {
    /// Records `row` as PENDING and returns once it is committed (or the
    /// write failed; the error says why).
    pub async fn record(&self, row: PendingRow) -> Result<(), String> {
        let (done, answer) = oneshot::channel();
        self.jobs
            .send((row, done))
            .await
            .map_err(|_| "the PENDING writer has stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the PENDING writer has stopped".to_owned())?
    }
}

impl PendingQueue {
    /// Writes queued rows until `cancel` fires and the queue is empty.
    pub async fn run(mut self, pool: PgPool, cancel: CancellationToken) {
        let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
        loop {
            let first = tokio::select! {
                // Rows first: those queued before shutdown are still written.
                biased;
                job = self.jobs.recv() => match job {
                    Some(job) => job,
                    None => return,
                },
                _ = cancel.cancelled() => return,
            };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match self.jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            metrics::histogram!("gateway_pending_batch_rows").record(batch.len() as f64);
            let written = insert(&pool, &batch).await.map_err(|e| e.to_string());
            for (_, done) in batch.drain(..) {
                let _ = done.send(written.clone());
            }
        }
    }
}

async fn insert(pool: &PgPool, batch: &[Job]) -> Result<(), sqlx::Error> {
    let rows = batch.iter().map(|(row, _)| row);
    let ids: Vec<Uuid> = rows.clone().map(|r| r.id).collect();
    let types: Vec<&str> = rows.clone().map(|r| r.request_type).collect();
    let users: Vec<Option<i64>> = rows.clone().map(|r| r.user_id).collect();
    let topics: Vec<&str> = rows.clone().map(|r| r.topic.as_str()).collect();
    let partitions: Vec<i32> = rows.clone().map(|r| r.partition).collect();
    let offsets: Vec<i64> = rows.map(|r| r.offset).collect();
    // A keyed call claimed its row before publishing: fill in where the
    // record landed. A lane may have decided the request already: its
    // outcome stays.
    sqlx::query!(
        "INSERT INTO requests (id, type, user_id, status, topic, kafka_partition, kafka_offset)
         SELECT id, type, user_id, 'PENDING', topic, kafka_partition, kafka_offset
         FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::text[], $5::int4[], $6::int8[])
              AS t(id, type, user_id, topic, kafka_partition, kafka_offset)
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
    )
    .execute(pool)
    .await?;
    Ok(())
}
