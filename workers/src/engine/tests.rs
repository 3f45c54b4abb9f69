//! The engine without Kafka: a fake lane and a fake log on a fresh database
//! per test (`#[sqlx::test]` creates it and runs the migrations).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::outcomes::ChargeResult;
use rdkafka::message::OwnedMessage;
use rdkafka::Timestamp;
use schemas::requests::ChargeBalance;
use schemas::requests::ChargeRequest;
use schemas::{ErrorCode, Request, RequestEnvelope};
use sqlx::{PgConnection, PgPool};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::log::{DeadLettered, PartitionLog, Reason};
use super::partition::{PartitionId, PartitionWorker};
use super::{Applied, Lane, LaneSettings};
use crate::error::{LaneError, LaneResult};

/// Amount of a charge the fake lane fails on (a bug).
const FAILS: i64 = 13;
/// Amount of a charge the fake lane refuses (a business rule).
const REFUSED: i64 = 7;

/// Charges that succeed, are refused or fail by their amount, and conflict
/// while `conflicts` lasts; every batch (a clone) shares the counters.
#[derive(Default, Clone)]
struct FakeLane {
    counters: Arc<Counters>,
}

impl Lane for FakeLane {
    type Input = RequestEnvelope<ChargeRequest>;
    const NAME: &'static str = "fake";

    async fn apply(&mut self, _tx: &mut PgConnection, input: &Self::Input) -> LaneResult<Applied> {
        let ChargeRequest::ChargeBalance(charge) = &input.request;
        if self
            .counters
            .conflicts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(LaneError::Conflict("deadlock detected".into()));
        }
        match charge.amount {
            FAILS => Err(LaneError::Bug("unlucky amount".into())),
            REFUSED => Ok(Applied::rejected(ErrorCode::InvalidRequest, "seven")),
            amount => {
                self.counters.applied.fetch_add(1, Ordering::SeqCst);
                let result = ChargeResult {
                    user_id: charge.user_id,
                    balance: amount,
                    history_id: 1,
                };
                Ok(Applied::succeeded(result, Vec::new()))
            }
        }
    }
}

/// What the fake lane's batches count together.
#[derive(Default)]
struct Counters {
    /// Conflicts still to fail with.
    conflicts: AtomicUsize,
    /// Charges applied (also those rolled back later).
    applied: AtomicUsize,
}

/// A log with fixed watermarks that remembers seeks and dead letters.
struct FakeLog {
    low: i64,
    high: i64,
    seeks: Mutex<Vec<i64>>,
    dead: Mutex<Vec<(i64, &'static str)>>,
}

impl FakeLog {
    fn new(low: i64, high: i64) -> Arc<Self> {
        Arc::new(Self {
            low,
            high,
            seeks: Mutex::default(),
            dead: Mutex::default(),
        })
    }

    fn seeks(&self) -> Vec<i64> {
        self.seeks.lock().expect("lock").clone()
    }

    fn dead(&self) -> Vec<(i64, &'static str)> {
        self.dead.lock().expect("lock").clone()
    }
}

impl PartitionLog for Arc<FakeLog> {
    fn watermarks(&self) -> Result<(i64, i64), LaneError> {
        Ok((self.low, self.high))
    }

    fn seek(&self, offset: i64) -> Result<(), LaneError> {
        self.seeks.lock().expect("lock").push(offset);
        Ok(())
    }

    async fn dead_letter(
        &self,
        record: &OwnedMessage,
        reason: Reason<'_>,
        _cancel: &CancellationToken,
    ) -> DeadLettered {
        use rdkafka::Message;
        self.dead
            .lock()
            .expect("lock")
            .push((record.offset(), reason.kind));
        DeadLettered::Published
    }
}

fn partition() -> PartitionId {
    PartitionId {
        group: "fake-group".into(),
        topic: "fake-topic".into(),
        partition: 0,
    }
}

/// A charge request record at `offset`.
fn charge(offset: i64, id: Uuid, amount: i64) -> OwnedMessage {
    let envelope = RequestEnvelope::new(
        id,
        Request::ChargeBalance(ChargeBalance { user_id: 1, amount }),
    );
    raw(offset, serde_json::to_vec(&envelope).expect("json"))
}

fn raw(offset: i64, payload: Vec<u8>) -> OwnedMessage {
    OwnedMessage::new(
        Some(payload),
        Some(b"1".to_vec()),
        "fake-topic".into(),
        Timestamp::NotAvailable,
        0,
        offset,
        None,
    )
}

/// A partition task's world: its database, its lane and its log.
struct Partition {
    pool: PgPool,
    lane: FakeLane,
    log: Arc<FakeLog>,
}

impl Partition {
    /// A partition whose log holds offsets `low..high`.
    fn new(pool: PgPool, low: i64, high: i64) -> Self {
        Self::with_lane(pool, FakeLane::default(), low, high)
    }

    fn with_lane(pool: PgPool, lane: FakeLane, low: i64, high: i64) -> Self {
        Self {
            pool,
            lane,
            log: FakeLog::new(low, high),
        }
    }

    /// Runs a partition task over `records` until it has taken them all.
    async fn run(&self, records: Vec<OwnedMessage>) {
        let settings = LaneSettings {
            batch_max: 10,
            batch_wait: Duration::from_millis(5),
            produce_timeout: Duration::from_secs(1),
            retention: chrono::TimeDelta::days(7),
        };
        let worker = PartitionWorker::new(
            self.lane.clone(),
            self.pool.clone(),
            self.log.clone(),
            partition(),
            settings,
        );
        let (tx, rx) = mpsc::channel(records.len().max(1));
        for record in records {
            tx.send(record).await.expect("send");
        }
        drop(tx);
        worker.run(rx, CancellationToken::new()).await;
    }

    /// Runs fresh charges of 1 at `offsets`.
    async fn run_charges(&self, offsets: std::ops::Range<i64>) {
        self.run(offsets.map(|o| charge(o, Uuid::now_v7(), 1)).collect())
            .await;
    }

    /// Status and error code of request `id`, if it has a row.
    async fn outcome(&self, id: Uuid) -> Option<(String, Option<String>)> {
        sqlx::query!("SELECT status, error_code FROM requests WHERE id = $1", id)
            .fetch_optional(&self.pool)
            .await
            .expect("outcome")
            .map(|row| (row.status, row.error_code))
    }

    /// Asserts request `id` was decided `status`, with `code`.
    async fn assert_decided(&self, id: Uuid, status: &str, code: Option<&str>) {
        let expected = (status.to_owned(), code.map(str::to_owned));
        assert_eq!(self.outcome(id).await, Some(expected), "request {id}");
    }

    async fn stored(&self) -> Option<i64> {
        super::store::stored_offset(&self.pool, &partition())
            .await
            .expect("stored offset")
    }

    fn applied(&self) -> usize {
        self.lane.counters.applied.load(Ordering::SeqCst)
    }
}

/// `n` fresh request ids.
fn ids(n: usize) -> Vec<Uuid> {
    (0..n).map(|_| Uuid::now_v7()).collect()
}

/// Charges of `amounts` at offsets from 0, with fresh request ids.
fn charges(amounts: &[i64]) -> (Vec<Uuid>, Vec<OwnedMessage>) {
    let ids = ids(amounts.len());
    let records = (0..).zip(&ids).zip(amounts);
    let records = records.map(|((o, id), a)| charge(o, *id, *a)).collect();
    (ids, records)
}

#[sqlx::test(migrations = "../migrations")]
async fn a_batch_commits_once_and_its_replay_is_skipped(pool: PgPool) {
    let partition = Partition::new(pool, 0, 3);
    let (ids, records) = charges(&[5, REFUSED, 6]);
    partition.run(records.clone()).await;
    partition.assert_decided(ids[0], "SUCCEEDED", None).await;
    partition
        .assert_decided(ids[1], "REJECTED", Some("INVALID_REQUEST"))
        .await;
    assert_eq!(partition.stored().await, Some(3));
    assert_eq!(partition.applied(), 2);

    // The same records again (a crash before the consumer moved on, or a
    // second process on the partition): the stored offset fences them off.
    partition.run(records).await;
    assert_eq!(partition.applied(), 2);
    assert_eq!(partition.stored().await, Some(3));
    assert!(partition.log.seeks().is_empty());
}

#[sqlx::test(migrations = "../migrations")]
async fn a_gap_re_reads_from_the_stored_offset(pool: PgPool) {
    let partition = Partition::new(pool, 0, 6);
    partition.run_charges(0..2).await;
    // Records 2 and 3 never reached the task: a batch from 4 is a gap.
    partition.run_charges(4..5).await;
    assert_eq!(partition.log.seeks(), [2]);
    assert_eq!(partition.stored().await, Some(2));
    let skipped = Uuid::now_v7();
    let records = vec![charge(2, skipped, 1), charge(3, Uuid::now_v7(), 1)];
    partition.run(records).await;
    partition.assert_decided(skipped, "SUCCEEDED", None).await;
    assert_eq!(partition.stored().await, Some(4));
}

#[sqlx::test(migrations = "../migrations")]
async fn records_retention_deleted_are_decided_lost(pool: PgPool) {
    let partition = Partition::new(pool, 4, 6);
    partition.run_charges(0..2).await;
    // The gateway recorded requests 2 and 3 PENDING; retention deleted
    // their records before the lane came back.
    let lost = ids(2);
    for (offset, id) in (2_i64..).zip(&lost) {
        sqlx::query!(
            "INSERT INTO requests (id, type, user_id, status, topic, kafka_partition, kafka_offset)
             VALUES ($1, 'balance.charge', 1, 'PENDING', 'fake-topic', 0, $2)",
            id,
            offset
        )
        .execute(&partition.pool)
        .await
        .expect("pending request");
    }
    partition.run_charges(4..5).await;
    assert_eq!(partition.log.seeks(), [4]);
    for id in lost {
        partition
            .assert_decided(id, "FAILED", Some("RECORD_LOST"))
            .await;
    }
    assert_eq!(partition.stored().await, Some(4));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_failing_record_is_isolated_and_dead_lettered(pool: PgPool) {
    let partition = Partition::new(pool, 0, 3);
    let (ids, records) = charges(&[5, FAILS, 6]);
    partition.run(records).await;
    partition.assert_decided(ids[0], "SUCCEEDED", None).await;
    partition
        .assert_decided(ids[1], "FAILED", Some("INTERNAL"))
        .await;
    partition.assert_decided(ids[2], "SUCCEEDED", None).await;
    assert_eq!(partition.log.dead(), [(1, "bug")]);
    assert_eq!(partition.stored().await, Some(3));
    // The batch's first attempt rolled back; each good record then
    // committed once on its own.
    assert_eq!(partition.applied(), 3);
}

#[sqlx::test(migrations = "../migrations")]
async fn conflicts_retry_the_whole_batch_and_never_fail_it(pool: PgPool) {
    let lane = FakeLane::default();
    lane.counters.conflicts.store(3, Ordering::SeqCst);
    let partition = Partition::with_lane(pool, lane, 0, 2);
    let (ids, records) = charges(&[5, 6]);
    partition.run(records).await;
    for id in ids {
        partition.assert_decided(id, "SUCCEEDED", None).await;
    }
    assert_eq!(partition.lane.counters.conflicts.load(Ordering::SeqCst), 0);
    assert!(partition.log.dead().is_empty());
}

#[sqlx::test(migrations = "../migrations")]
async fn poison_is_dead_lettered_and_its_request_refused(pool: PgPool) {
    let partition = Partition::new(pool, 0, 2);
    let [id, good] = [Uuid::now_v7(), Uuid::now_v7()];
    let poison = serde_json::json!({"request_id": id, "version": 1, "type": "balance.charge"});
    let records = vec![raw(0, poison.to_string().into_bytes()), charge(1, good, 5)];
    partition.run(records).await;
    partition
        .assert_decided(id, "FAILED", Some("INVALID_REQUEST"))
        .await;
    partition.assert_decided(good, "SUCCEEDED", None).await;
    assert_eq!(partition.log.dead(), [(0, "undecodable")]);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_recreated_log_resumes_from_its_start(pool: PgPool) {
    let partition = Partition::new(pool, 0, 5);
    partition.run_charges(0..2).await;
    // A take-over re-reads the last applied record (offset 1), but another
    // record sits there now.
    partition.run_charges(1..3).await;
    assert_eq!(partition.log.seeks(), [0]);
    assert_eq!(partition.stored().await, Some(0));
}
