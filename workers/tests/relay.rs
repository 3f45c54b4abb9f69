//! One outbox relay at a time, even when the leader loses its database
//! connection or stalls past its lease and comes back: events are published
//! at least once, with at most one round repeated per lost lease, in order
//! per key.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};
use schemas::Topic;
use serde_json::Value;
use testkit::api::User;
use testkit::scalar;
use testkit::stack::{Options, Stack};
use uuid::Uuid;

/// The workers binary, for worker processes.
const WORKERS: &str = env!("CARGO_BIN_EXE_workers");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_that_lost_its_lease_stops_publishing() -> anyhow::Result<()> {
    let mut stack = Stack::start(Options::without_workers()).await?;
    stack.workers_config.outbox_lease_ms = 1_500;
    let workers = [
        stack.start_worker_process(WORKERS).await?,
        stack.start_worker_process(WORKERS).await?,
    ];
    let api = &stack.api;
    let users: Vec<User> = stream::iter(0..20)
        .map(|i| async move { api.create_user(&format!("r{i}")).await })
        .buffer_unordered(8)
        .try_collect()
        .await?;

    // A steady charge load while the faults below happen.
    let load = {
        let (api, users) = (api.clone(), users.clone());
        tokio::spawn(async move {
            let mut accepted: Vec<(usize, Uuid)> = Vec::new();
            for round in 0..60 {
                let ids: Vec<(usize, Uuid)> = stream::iter(0..users.len())
                    .map(|u| {
                        let (api, user) = (&api, &users[u]);
                        async move { anyhow::Ok((u, api.charge(user, 1 + round).await?)) }
                    })
                    .buffer_unordered(10)
                    .try_collect()
                    .await?;
                accepted.extend(ids);
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            anyhow::Ok(accepted)
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The relay's database connections die: the lease it holds outlives
    // them, and only a relay that renews it may publish.
    let terminated = scalar!(
        stack,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = $1 AND datname = current_database()",
        workers::outbox::APPLICATION_NAME
    )
    .await?;
    assert!(terminated > 0, "the relays' connections are named");
    // Each process in turn stalls past the lease (whichever leads loses it
    // to the other), then resumes: the old leader must not publish again.
    for worker in &workers {
        tokio::time::sleep(Duration::from_secs(1)).await;
        worker.signal("-STOP")?;
        tokio::time::sleep(Duration::from_secs(4)).await;
        worker.signal("-CONT")?;
    }
    let accepted = load.await??;
    for (u, id) in &accepted {
        api.outcome(&users[*u].token, *id).await?;
    }
    let outbox = || scalar!(stack, "SELECT count(*) FROM outbox");
    let wait = Duration::from_secs(60);
    testkit::wait_until("the outbox to drain", wait, outbox, |n| *n == 0).await?;
    // A stalled relay resuming a round publishes after its last check; let
    // anything in flight land before reading.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let topic = stack.env.topic(Topic::BalanceEvents);
    let records = testkit::topics::read_all(&stack.env.common, &topic)?;
    let mut seen: HashSet<String> = HashSet::new();
    let mut duplicates = 0;
    let mut last_balance: HashMap<i64, i64> = HashMap::new();
    for record in &records {
        let event_id = record
            .header(schemas::HEADER_EVENT_ID)
            .unwrap_or_default()
            .to_owned();
        if !seen.insert(event_id) {
            duplicates += 1;
            continue;
        }
        let payload: Value = record.json().unwrap_or_default()["payload"].clone();
        let (user, amount, after) = (
            payload["user_id"].as_i64().unwrap_or_default(),
            payload["amount"].as_i64().unwrap_or_default(),
            payload["balance_after"].as_i64().unwrap_or_default(),
        );
        let before = last_balance.insert(user, after).unwrap_or(0);
        assert_eq!(before + amount, after, "user {user}'s events out of order");
    }
    assert_eq!(seen.len(), accepted.len(), "every charge has its event");
    // Two relays publishing side by side repeat nearly every event after the
    // fault; a lost lease repeats at most the round in flight.
    assert!(
        duplicates <= 200,
        "{duplicates} repeated events of {}",
        accepted.len()
    );
    drop(workers);
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_stops_on_shutdown_even_with_a_backlog() -> anyhow::Result<()> {
    let mut stack = Stack::start(Options::without_workers()).await?;
    // A backlog of many rounds: the relay must still heed a shutdown
    // between rounds instead of draining all of it first.
    sqlx::query!(
        "INSERT INTO outbox (event_id, topic, event_key, payload)
         SELECT gen_random_uuid(), 'balance-events', (n % 50)::text,
                jsonb_build_object('n', n)
         FROM generate_series(1, 30000) AS n"
    )
    .execute(&stack.env.pool)
    .await?;
    stack.start_workers();
    let outbox = || scalar!(stack, "SELECT count(*) FROM outbox");
    let wait = Duration::from_secs(30);
    testkit::wait_until("the relay to start", wait, outbox, |n| *n < 30_000).await?;
    let stopping = std::time::Instant::now();
    stack.stop_workers().await?;
    let stopped_in = stopping.elapsed();
    let left = scalar!(stack, "SELECT count(*) FROM outbox").await?;
    assert!(
        left > 0,
        "the relay drained the whole backlog before it stopped"
    );
    assert!(
        stopped_in < Duration::from_secs(10),
        "shutdown took {stopped_in:?}"
    );
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_whose_lease_was_taken_over_publishes_nothing() -> anyhow::Result<()> {
    let env = testkit::TestEnv::new().await?;
    let producer = platform::kafka::producer(&env.common)?;
    let topics = env.common.topics();
    sqlx::query!(
        "INSERT INTO outbox (event_id, topic, event_key, payload)
         SELECT gen_random_uuid(), 'balance-events', n::text, jsonb_build_object('n', n)
         FROM generate_series(1, 10) AS n"
    )
    .execute(&env.pool)
    .await?;
    let lease = Duration::from_millis(500);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let old = workers::outbox::acquire(&env.pool, a, lease)
        .await?
        .expect("the lease is free");
    assert!(
        workers::outbox::acquire(&env.pool, b, lease)
            .await?
            .is_none(),
        "a live lease is not taken over"
    );
    // The leader stalls past its lease; another relay takes over.
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let new = workers::outbox::acquire(&env.pool, b, lease)
        .await?
        .expect("an expired lease is taken over");
    assert!(new.token > old.token);
    // The old leader wakes up and tries a round: refused before publishing.
    let stale =
        workers::outbox::publish_round(&env.pool, &producer, &topics, Duration::from_secs(5), &old)
            .await;
    assert!(
        matches!(stale, Err(workers::outbox::RelayError::LeaseLost)),
        "{stale:?}"
    );
    // The new leader's round follows at once (its lease is short); had the
    // stale round published, the topic would hold its records too, or the
    // new round would find the outbox empty.
    let published =
        workers::outbox::publish_round(&env.pool, &producer, &topics, Duration::from_secs(5), &new)
            .await?;
    assert_eq!(published, 10);
    let topic = env.topic(Topic::BalanceEvents);
    assert_eq!(testkit::topics::read_all(&env.common, &topic)?.len(), 10);
    Ok(())
}
