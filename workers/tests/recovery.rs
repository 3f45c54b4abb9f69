//! A partition recovers from what its log and its neighbours do to it:
//! records deleted by retention before they were applied, a log recreated
//! and grown past the stored offset, a poison record re-read on take-over,
//! a neighbour partition stuck behind a lock, a dead letter the broker can
//! never take.

use std::time::Duration;

use schemas::requests::ChargeRequest;
use schemas::Topic;
use testkit::api::User;
use testkit::scalar;
use testkit::stack::{Options, Stack};
use testkit::topics::charge_envelope;
use uuid::Uuid;

/// The request-topic partition `user`'s requests go to (read from the
/// PENDING row of a charge of 1).
async fn partition_of(stack: &Stack, user: &User) -> anyhow::Result<i32> {
    let id = stack.api.charge(user, 1).await?;
    testkit::eventually("the request row", Duration::from_secs(10), || async {
        Ok(
            sqlx::query_scalar!("SELECT kafka_partition FROM requests WHERE id = $1", id)
                .fetch_optional(&stack.env.pool)
                .await?
                .flatten(),
        )
    })
    .await
}

/// A charge record of `amount` to `user_id` as request `id`.
fn charge_record(id: Uuid, user_id: i64, amount: i64) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec(&charge_envelope(id, user_id, amount))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_deleted_before_they_were_applied_are_counted_and_the_lane_goes_on(
) -> anyhow::Result<()> {
    // Undecided requests get their PENDING rows 200 ms after the 202.
    let options = Options::default().gateway(|c| c.pending_row_after_ms = 200);
    let mut stack = Stack::start(options).await?;
    let user = stack.api.create_user("retained").await?;
    stack.api.charged(&user, 100).await?;
    stack.stop_workers().await?;

    // Accepted while the workers are down, then deleted by "retention"
    // (which in practice comes long after the rows are written).
    let lost = [
        stack.api.charge(&user, 10).await?,
        stack.api.charge(&user, 20).await?,
    ];
    testkit::eventually("the PENDING rows", Duration::from_secs(10), || async {
        let rows = scalar!(
            stack,
            "SELECT count(*) FROM requests WHERE id = ANY($1)",
            &lost[..]
        )
        .await?;
        Ok((rows == 2).then_some(()))
    })
    .await?;
    let topic = stack.env.topic(Topic::ChargeRequests);
    testkit::topics::delete_all_records(&stack.env.common, &topic).await?;

    stack.start_workers();
    // Without the fix the partition waits forever for the deleted offset.
    stack.api.charged(&user, 1_000).await?;
    for id in lost {
        let outcome = stack.api.outcome(&user.token, id).await?;
        assert_eq!(outcome.status.as_str(), "FAILED", "{outcome:?}");
        assert_eq!(outcome.error_code(), Some("RECORD_LOST"), "{outcome:?}");
    }
    assert_eq!(stack.api.balance(&user).await?, 1_100);
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recreated_log_longer_than_the_stored_offset_is_read_from_its_start() -> anyhow::Result<()>
{
    let mut stack = Stack::start(Options::default()).await?;
    let user = stack.api.create_user("recreated").await?;
    for _ in 0..3 {
        stack.api.charged(&user, 10).await?;
    }
    stack.stop_workers().await?;
    stack.env.recreate_topic(Topic::ChargeRequests).await?;

    // The new log outgrows the stored offset (3) on the user's partition.
    let key = user.id.to_string();
    let mut fresh = Vec::new();
    for _ in 0..6 {
        let id = Uuid::now_v7();
        let record = charge_record(id, user.id, 1_000)?;
        stack
            .env
            .produce(Topic::ChargeRequests, None, &key, &record)
            .await?;
        fresh.push(id);
    }
    stack.start_workers();
    for id in &fresh {
        // Without the fix the first three new records are skipped as
        // "applied before" and never decided.
        stack.api.succeeded(&user, *id).await?;
    }
    assert_eq!(stack.api.balance(&user).await?, 30 + 6 * 1_000);
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_is_dead_lettered_once_however_often_it_is_re_read() -> anyhow::Result<()> {
    let mut stack = Stack::start(Options::default()).await?;
    let user = stack.api.create_user("poisoned").await?;
    let partition = partition_of(&stack, &user).await?;
    // The poison is the last record of the partition, so every take-over
    // re-reads it (the last applied record is checked against its digest).
    stack.api.charged(&user, 5).await?;
    let key = user.id.to_string();
    stack
        .env
        .produce(Topic::ChargeRequests, Some(partition), &key, b"{not json")
        .await?;
    stack
        .env
        .wait_dead_letters(Topic::ChargeRequests, 1)
        .await?;
    for _ in 0..2 {
        stack.stop_workers().await?;
        stack.start_workers();
        // A request behind the poison shows the partition was re-read.
        stack.api.charged(&user, 5).await?;
    }
    assert_eq!(
        stack.env.dead_letters(Topic::ChargeRequests)?.len(),
        1,
        "re-reading the poison dead-letters it again"
    );
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stuck_partition_never_stops_the_others() -> anyhow::Result<()> {
    let mut stack = Stack::start(Options::without_workers()).await?;
    // Small batches: the stuck partition's queue fills after a dozen records.
    stack.workers_config.batch_max = 4;
    stack.start_workers();
    let api = &stack.api;
    let stuck = api.create_user("stuck").await?;
    let stuck_partition = partition_of(&stack, &stuck).await?;
    let mut other = api.create_user("other").await?;
    while partition_of(&stack, &other).await? == stuck_partition {
        other = api.create_user("other").await?;
    }
    let settled = api.charge(&stuck, 1).await?;
    api.outcome(&stuck.token, settled).await?;

    // Hold the stuck user's balance row: its partition's batches wait on it.
    let blocker = stack.env.lock_balance(stuck.id).await?;
    let waiting = api.charges(&stuck, 60, 10).await?;
    // The other partition goes on while the stuck one waits.
    let free = api.charge(&other, 7).await?;
    let outcome = tokio::time::timeout(Duration::from_secs(20), api.outcome(&other.token, free))
        .await
        .map_err(|_| anyhow::anyhow!("the other partition stalled behind the stuck one"))??;
    assert_eq!(outcome.status.as_str(), "SUCCEEDED");
    assert_eq!(
        stack.env.decided_among(&waiting).await?,
        0,
        "the stuck partition decided nothing while blocked"
    );

    blocker.rollback().await?;
    for id in &waiting {
        api.succeeded(&stuck, *id).await?;
    }
    assert_eq!(api.balance(&stuck).await?, 2 + 60 * 10);
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_the_broker_can_never_take_is_skipped_past() -> anyhow::Result<()> {
    let mut stack = Stack::start(Options::without_workers()).await?;
    // The workers may send at most 20 kB; the poison below is 30 kB, so its
    // dead letter fails for good (and at once) in their producer.
    stack.workers_config.common.kafka_message_max_bytes = 20_000;
    stack.start_workers();
    let user = stack.api.create_user("oversized").await?;
    let poison = format!("{{not json {}", "x".repeat(30_000));
    let key = user.id.to_string();
    stack
        .env
        .produce(Topic::ChargeRequests, None, &key, poison.as_bytes())
        .await?;
    let behind = stack.api.charge(&user, 42).await?;
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        stack.api.outcome(&user.token, behind),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the lane retries the impossible dead letter forever"))??;
    assert_eq!(outcome.status.as_str(), "SUCCEEDED");
    assert!(stack.env.dead_letters(Topic::ChargeRequests)?.is_empty());
    let metrics = platform::observability::metrics_handle().render();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("lane_dead_letter_failures_total")),
        "the skipped dead letter is counted"
    );
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_records_of_one_request_on_two_partitions_apply_once() -> anyhow::Result<()> {
    // One request id on two partitions (a dead letter re-driven under
    // another key, a client reusing an id across users): the batches race,
    // and only one may commit its effects.
    let stack = Stack::start(Options::default()).await?;
    let a = stack.api.create_user("a").await?;
    let b = stack.api.create_user("b").await?;
    let id = Uuid::now_v7();
    // The test holds the request's row, so both batches get as far as
    // recording the outcome before either can commit.
    sqlx::query!(
        "INSERT INTO requests (id, type, status) VALUES ($1, 'balance.charge', 'PENDING')",
        id
    )
    .execute(&stack.env.pool)
    .await?;
    let mut blocker = stack.env.pool.begin().await?;
    sqlx::query!("SELECT id FROM requests WHERE id = $1 FOR UPDATE", id)
        .fetch_all(&mut *blocker)
        .await?;
    for (partition, user) in [(0, &a), (1, &b)] {
        let (key, record) = (user.id.to_string(), charge_record(id, user.id, 500)?);
        stack
            .env
            .produce(Topic::ChargeRequests, Some(partition), &key, &record)
            .await?;
    }
    // Both batches are now waiting on the row.
    let waiting = || {
        scalar!(stack, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()")
    };
    let wait = Duration::from_secs(30);
    testkit::wait_until(
        "both batches to wait on the request row",
        wait,
        waiting,
        |n| *n >= 2,
    )
    .await?;
    blocker.commit().await?;
    stack.env.decided(id).await?;
    // Let the loser retry, then count effects.
    let b_settled = stack.api.charge(&b, 1).await?;
    stack.api.outcome(&b.token, b_settled).await?;
    let a_settled = stack.api.charge(&a, 1).await?;
    stack.api.outcome(&a.token, a_settled).await?;
    let effects = scalar!(
        stack,
        "SELECT count(*) FROM balance_histories WHERE request_id = $1",
        id
    )
    .await?;
    assert_eq!(effects, 1, "one request applied twice");
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outcomes_of_failed_records_show_no_internals() -> anyhow::Result<()> {
    // A record whose statement the database refuses is isolated, recorded
    // FAILED with a generic message, and dead-lettered with the cause.
    let stack = Stack::start(Options::default()).await?;
    let user = stack.api.create_user("refused").await?;
    // A constraint the lane cannot foresee refuses one charge's history row.
    sqlx::query!("ALTER TABLE balance_histories ADD CONSTRAINT test_no_777 CHECK (amount <> 777)")
        .execute(&stack.env.pool)
        .await?;
    let bad = stack.api.charge(&user, 777).await?;
    let good = stack.api.charge(&user, 5).await?;
    let outcome = stack.api.outcome(&user.token, bad).await?;
    assert_eq!(outcome.status.as_str(), "FAILED", "{outcome:?}");
    assert_eq!(outcome.error_code(), Some("INTERNAL"), "{outcome:?}");
    let message = outcome.error.as_ref().map_or("", |e| e.message.as_str());
    assert!(
        !message.contains("test_no_777") && !message.contains("constraint"),
        "{message}"
    );
    stack.api.succeeded(&user, good).await?;
    let letters = stack
        .env
        .wait_dead_letters(Topic::ChargeRequests, 1)
        .await?;
    let reason = letters[0]
        .header(schemas::HEADER_DLQ_REASON)
        .unwrap_or_default();
    assert!(reason.contains("test_no_777"), "{reason}");
    stack.stop().await
}

/// A lane with a programming error: a charge of 13 changes a balance the
/// batch never locked (the ledger calls that a bug).
#[derive(Clone, Default)]
struct BuggyLane {
    ledger: workers::ledger::Ledger,
}

impl workers::engine::Lane for BuggyLane {
    type Input = schemas::RequestEnvelope<ChargeRequest>;
    const NAME: &'static str = "buggy";

    async fn apply(
        &mut self,
        tx: &mut sqlx::PgConnection,
        envelope: &Self::Input,
    ) -> workers::error::LaneResult<workers::engine::Applied> {
        let ChargeRequest::ChargeBalance(charge) = &envelope.request;
        if charge.amount == 13 {
            self.ledger
                .change(
                    tx,
                    charge.user_id,
                    schemas::events::BalanceChangeKind::Charge,
                    charge.amount,
                    None,
                    None,
                    envelope.request_id,
                )
                .await?;
        }
        Ok(workers::engine::Applied::succeeded(
            api::outcomes::ChargeResult {
                user_id: charge.user_id,
                balance: charge.amount,
                history_id: 0,
            },
            Vec::new(),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bug_in_a_lane_fails_its_record_and_the_partition_goes_on() -> anyhow::Result<()> {
    let env = testkit::TestEnv::new().await?;
    let producer = platform::kafka::producer(&env.common)?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let settings = workers::engine::LaneSettings {
        batch_max: 16,
        batch_wait: Duration::from_millis(5),
        produce_timeout: Duration::from_secs(5),
        retention: chrono::TimeDelta::days(7),
    };
    let lane = {
        let (common, pool, producer, cancel) = (
            env.common.clone(),
            env.pool.clone(),
            producer.clone(),
            cancel.clone(),
        );
        tokio::spawn(async move {
            workers::engine::run_lane(
                BuggyLane::default(),
                &common,
                settings,
                pool,
                producer,
                cancel,
            )
            .await
        })
    };
    let (buggy, fine) = (Uuid::now_v7(), Uuid::now_v7());
    // Same key, same partition: the fine record sits behind the buggy one.
    for (id, amount) in [(buggy, 13), (fine, 7)] {
        let record = charge_record(id, 1, amount)?;
        env.produce(Topic::ChargeRequests, Some(0), "1", &record)
            .await?;
    }
    // Without the fix the bug reads as "database unavailable" and the
    // partition retries it forever.
    assert_eq!(env.decided(fine).await?.status, "SUCCEEDED");
    let row = env.request(buggy).await?.expect("a row");
    assert_eq!(
        (row.status.as_str(), row.error_code.as_deref()),
        ("FAILED", Some("INTERNAL"))
    );
    assert!(
        !row.error_message.unwrap_or_default().contains("lock"),
        "internals leak to the client"
    );
    let letters = env.wait_dead_letters(Topic::ChargeRequests, 1).await?;
    let reason = letters[0]
        .header(schemas::HEADER_DLQ_REASON)
        .unwrap_or_default();
    assert!(
        reason.contains("bug") && reason.contains("without its lock"),
        "{reason}"
    );
    cancel.cancel();
    lane.await??;
    Ok(())
}
