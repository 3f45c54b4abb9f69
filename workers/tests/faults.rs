//! Faults: a worker process killed mid-load, poison records, and a database
//! outage. Nothing accepted is lost and nothing is applied twice.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use api::status::{QueueStatus, RequestStatus};
use common::{scalar, spawn_workers_process, Options, Stack};
use futures::stream::{self, StreamExt, TryStreamExt};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;
use sqlx::ConnectOptions;
use testkit::api::User;
use uuid::Uuid;

/// Small deterministic generator, so a failing run can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

#[derive(Clone)]
enum Call {
    Charge { user: usize, amount: i64 },
    Hold { user: usize, seat: usize },
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_killed_mid_load_loses_nothing_and_applies_nothing_twice() -> anyhow::Result<()> {
    let stack = Stack::start(Options {
        in_process_workers: false,
        ..Options::default()
    })
    .await?;
    let mut worker = spawn_workers_process(&stack)?;
    let api = &stack.api;
    let schedule_id = api.create_schedule(150, 1_000).await?;
    let seats = api.seat_ids(schedule_id).await?;
    let users: Vec<(User, String)> = stream::iter(0..40)
        .map(|i| async move {
            let user = api.create_user(&format!("u{i}")).await?;
            let token = api.join_queue(&user, schedule_id).await?;
            api.wait_active(&user, &token).await?;
            anyhow::Ok((user, token))
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;

    let mut rng = Lcg(0x5eed);
    let calls: Vec<Call> = (0..2000)
        .map(|_| {
            let user = rng.next(users.len() as u64) as usize;
            if rng.next(10) < 7 {
                Call::Charge {
                    user,
                    amount: 1 + rng.next(1000) as i64,
                }
            } else {
                Call::Hold {
                    user,
                    seat: rng.next(seats.len() as u64) as usize,
                }
            }
        })
        .collect();

    let submit = |call: Call| {
        let (users, seats) = (&users, &seats);
        async move {
            let id = match &call {
                Call::Charge { user, amount } => api.charge(&users[*user].0, *amount).await?,
                Call::Hold { user, seat } => {
                    api.hold(&users[*user].0, &users[*user].1, seats[*seat])
                        .await?
                }
            };
            anyhow::Ok((call, id))
        }
    };
    let first_half: Vec<(Call, Uuid)> = stream::iter(calls[..1000].to_vec())
        .map(submit)
        .buffer_unordered(32)
        .try_collect()
        .await?;
    // Kill the worker while it is working through the first half.
    testkit::eventually(
        "the worker to be mid-load",
        Duration::from_secs(60),
        || async {
            let done = scalar(
                &stack,
                "SELECT count(*) FROM requests WHERE status <> 'PENDING'",
            )
            .await?;
            Ok((done >= 50).then_some(()))
        },
    )
    .await?;
    worker.kill()?;
    let decided_at_kill = scalar(
        &stack,
        "SELECT count(*) FROM requests WHERE status <> 'PENDING'",
    )
    .await?;
    let mut worker = spawn_workers_process(&stack)?;
    let second_half: Vec<(Call, Uuid)> = stream::iter(calls[1000..].to_vec())
        .map(submit)
        .buffer_unordered(32)
        .try_collect()
        .await?;
    let accepted: Vec<(Call, Uuid)> = first_half.into_iter().chain(second_half).collect();

    let outcomes: Vec<api::RequestOutcome> = stream::iter(accepted.iter())
        .map(|(call, id)| {
            let user = match call {
                Call::Charge { user, .. } | Call::Hold { user, .. } => &users[*user].0,
            };
            api.outcome(&user.token, *id)
        })
        // In order: outcomes are zipped with the calls below.
        .buffered(64)
        .try_collect()
        .await?;
    // Stop the second worker the polite way: SIGTERM must drain and exit 0.
    let terminated = Command::new("kill")
        .arg("-TERM")
        .arg(worker.id().to_string())
        .status()?;
    assert!(terminated.success());
    let exit = tokio::task::spawn_blocking(move || worker.wait()).await??;
    assert!(exit.success(), "graceful shutdown exits cleanly: {exit:?}");
    assert!(
        decided_at_kill < 2000,
        "the kill happened mid-load ({decided_at_kill} decided)"
    );

    // Exactly one outcome per request.
    let ids: Vec<Uuid> = accepted.iter().map(|(_, id)| *id).collect();
    let decided: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM requests WHERE id = ANY($1) AND status <> 'PENDING'",
    )
    .bind(&ids)
    .fetch_one(&stack.env.pool)
    .await?;
    assert_eq!(decided, 2000);

    // Balances: each equals its history and the successful charges.
    let mut expected: HashMap<i64, (i64, i64)> = HashMap::new();
    let mut holds_won = 0;
    for ((call, _), outcome) in accepted.iter().zip(&outcomes) {
        let succeeded = outcome.status.as_str() == "SUCCEEDED";
        match call {
            Call::Charge { user, amount } => {
                assert!(succeeded, "{outcome:?}");
                let entry = expected.entry(users[*user].0.id).or_default();
                entry.0 += amount;
                entry.1 += 1;
            }
            Call::Hold { .. } => {
                if succeeded {
                    holds_won += 1;
                } else {
                    assert_eq!(outcome.error_code(), Some("SEAT_TAKEN"), "{outcome:?}");
                }
            }
        }
    }
    for (user_id, (sum, count)) in &expected {
        let (balance, history_sum, history_rows): (i64, i64, i64) = sqlx::query_as(
            "SELECT b.balance, coalesce(sum(h.amount), 0)::int8, count(h.id)
             FROM balances b LEFT JOIN balance_histories h ON h.balance_id = b.id
             WHERE b.user_id = $1 GROUP BY b.balance",
        )
        .bind(user_id)
        .fetch_one(&stack.env.pool)
        .await?;
        assert_eq!(
            (balance, history_sum, history_rows),
            (*sum, *sum, *count),
            "user {user_id}"
        );
    }
    assert_eq!(
        scalar(
            &stack,
            "SELECT count(*) - count(DISTINCT request_id) FROM balance_histories"
        )
        .await?,
        0,
        "no request changed a balance twice"
    );

    // Seats: one live reservation per won hold, counts consistent.
    let live = scalar(
        &stack,
        "SELECT count(*) FROM reservations WHERE status IN ('PENDING', 'CONFIRMED')",
    )
    .await?;
    assert_eq!(live, holds_won);
    assert_eq!(
        scalar(&stack, "SELECT count(*) FROM reservations").await?,
        holds_won
    );
    assert_eq!(
        scalar(&stack, "SELECT count(*) FROM seats WHERE is_reserved").await?,
        holds_won
    );
    assert_eq!(
        scalar(&stack, &format!("SELECT available_seats_count::int8 FROM concert_schedules WHERE id = {schedule_id}")).await?,
        seats.len() as i64 - holds_won
    );
    stack.stop().await
}

fn producer(stack: &Stack) -> anyhow::Result<FutureProducer> {
    Ok(platform::kafka::producer(&stack.env.common)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_records_go_to_the_dlq_and_the_lane_moves_on() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let user = stack.api.create_user("victim").await?;
    let topics = stack.env.common.topics();
    let topic = topics.name(schemas::Topic::ChargeRequests);
    let key = user.id.to_string();
    let producer = producer(&stack)?;
    let bad_id = Uuid::now_v7();
    let invalid = json!({"request_id": bad_id, "version": 1, "timestamp": "2026-01-01T00:00:00Z",
                         "type": "balance.charge", "payload": {"user_id": user.id, "amount": -5}});
    for payload in [b"{not json".to_vec(), serde_json::to_vec(&invalid)?] {
        let record = platform::kafka::OutgoingRecord {
            topic: topic.clone(),
            key: key.clone(),
            payload,
            headers: vec![],
        };
        platform::kafka::produce(&producer, &record, Duration::from_secs(10)).await?;
    }
    // A good request behind the poison on the same partition still lands.
    let good = stack.api.charge(&user, 900).await?;
    assert_eq!(
        stack.api.outcome(&user.token, good).await?.status.as_str(),
        "SUCCEEDED"
    );
    assert_eq!(stack.api.balance(&user).await?, 900);

    let (status, code): (String, Option<String>) =
        sqlx::query_as("SELECT status, error_code FROM requests WHERE id = $1")
            .bind(bad_id)
            .fetch_one(&stack.env.pool)
            .await?;
    assert_eq!(
        (status.as_str(), code.as_deref()),
        ("FAILED", Some("INVALID_REQUEST"))
    );

    let dlq = topics.dlq(schemas::Topic::ChargeRequests);
    let consumer: BaseConsumer =
        platform::kafka::consumer_config(&stack.env.common, "dlq-reader").create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(&dlq, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let mut reasons = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while reasons.len() < 2 && std::time::Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message?;
            assert_eq!(message.key(), Some(key.as_bytes()));
            let headers = message.headers().expect("dlq headers");
            let reason = headers
                .iter()
                .find(|h| h.key == schemas::HEADER_DLQ_REASON)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .expect("reason header");
            reasons.push(reason);
        }
    }
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("undecodable"), "{reasons:?}");
    assert!(reasons[1].contains("amount"), "{reasons:?}");
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_outage_pauses_the_lanes_and_loses_nothing() -> anyhow::Result<()> {
    let mut stack = Stack::start(Options {
        in_process_workers: false,
        ..Options::default()
    })
    .await?;
    // The workers reach Postgres through a proxy the test can cut; the
    // gateway keeps its direct connection, so requests are still accepted.
    let options: sqlx::postgres::PgConnectOptions =
        stack.workers_config.common.database_url.parse()?;
    let upstream = tokio::net::lookup_host((options.get_host(), options.get_port()))
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("no address for the database"))?;
    let proxy = testkit::proxy::TcpProxy::start(upstream).await?;
    let through_proxy = options.host("127.0.0.1").port(proxy.addr().port());
    stack.workers_config.common.database_url = through_proxy.to_url_lossy().to_string();
    stack.start_workers();

    let user = stack.api.create_user("patient").await?;
    let first = stack.api.charge(&user, 1).await?;
    assert_eq!(
        stack.api.outcome(&user.token, first).await?.status.as_str(),
        "SUCCEEDED"
    );

    proxy.down();
    let api = &stack.api;
    let during: Vec<Uuid> = stream::iter(0..50)
        .map(|_| api.charge(&user, 100))
        .buffer_unordered(10)
        .try_collect()
        .await?;
    // Wait until the charge lane has met the outage, then check that it
    // decided nothing while the database was away.
    testkit::eventually(
        "the charge lane to back off",
        Duration::from_secs(30),
        || async {
            let metrics = platform::observability::metrics_handle().render();
            Ok(metrics
                .lines()
                .any(|l| {
                    l.starts_with("lane_retries_total")
                        && l.contains("lane=\"charge\"")
                        && l.contains("unavailable")
                })
                .then_some(()))
        },
    )
    .await?;
    let decided: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM requests WHERE id = ANY($1) AND status <> 'PENDING'",
    )
    .bind(&during)
    .fetch_one(&stack.env.pool)
    .await?;
    assert_eq!(decided, 0);

    proxy.up();
    for id in &during {
        assert_eq!(
            stack.api.outcome(&user.token, *id).await?.status.as_str(),
            "SUCCEEDED"
        );
    }
    assert_eq!(stack.api.balance(&user).await?, 1 + 50 * 100);
    assert_eq!(
        scalar(
            &stack,
            &format!(
                "SELECT count(*) FROM balance_histories WHERE user_id = {}",
                user.id
            )
        )
        .await?,
        51
    );
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_worker_processes_share_lanes_and_schedulers_safely() -> anyhow::Result<()> {
    let mut stack = Stack::start(Options {
        active_limit: 10,
        ..Options::default()
    })
    .await?;
    stack.start_extra_workers();
    let api = &stack.api;
    let schedule_id = api.create_schedule(20, 1_000).await?;
    let seats = api.seat_ids(schedule_id).await?;

    // 30 users queue for a schedule that admits 10 at a time; two admission
    // schedulers run, yet never more than 10 are ACTIVE.
    let mut users: Vec<(User, String)> = Vec::new();
    for i in 0..30 {
        // Joined one after the other, so the vector is the queue order.
        let user = api.create_user(&format!("q{i}")).await?;
        let token = api.join_queue(&user, schedule_id).await?;
        users.push((user, token));
    }
    let active_now = || async {
        scalar(&stack, &format!(
            "SELECT count(*) FROM reservation_queue WHERE concert_schedule_id = {schedule_id} AND status = 'ACTIVE'"
        ))
        .await
    };
    testkit::eventually(
        "10 tokens to be admitted",
        Duration::from_secs(30),
        || async {
            let active = active_now().await?;
            assert!(active <= 10, "{active} ACTIVE tokens with a limit of 10");
            Ok((active == 10).then_some(()))
        },
    )
    .await?;
    // Admission follows join order.
    for (user, token) in &users[..10] {
        api.wait_active(user, token).await?;
    }
    assert_eq!(
        api.queue_status(&users[10].0, &users[10].1).await?.status,
        QueueStatus::Waiting
    );

    // The ten admitted users race for every seat while both workers share
    // the reservation partitions: each seat is won at most once.
    let admitted = &users[..10];
    let seats = &seats;
    let requests: Vec<(usize, Uuid)> =
        stream::iter((0..seats.len()).flat_map(|s| (0..admitted.len()).map(move |u| (s, u))))
            .map(|(s, u)| async move {
                let (user, token) = &admitted[u];
                anyhow::Ok((u, api.hold(user, token, seats[s]).await?))
            })
            .buffer_unordered(32)
            .try_collect()
            .await?;
    let outcomes: Vec<api::RequestOutcome> = stream::iter(requests.iter())
        .map(|(u, id)| api.outcome(&admitted[*u].0.token, *id))
        .buffered(64)
        .try_collect()
        .await?;
    let won = outcomes
        .iter()
        .filter(|o| o.status == RequestStatus::Succeeded)
        .count();
    assert_eq!(won, seats.len(), "every seat is sold exactly once");
    assert!(outcomes
        .iter()
        .all(|o| o.status == RequestStatus::Succeeded || o.error_code() == Some("SEAT_TAKEN")));
    assert_eq!(
        scalar(&stack, "SELECT count(*) FROM reservations").await?,
        seats.len() as i64
    );
    assert_eq!(
        scalar(&stack, &format!("SELECT available_seats_count::int8 FROM concert_schedules WHERE id = {schedule_id}")).await?,
        0
    );
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recreated_topic_is_consumed_from_its_start_not_skipped() -> anyhow::Result<()> {
    // The charge lane has stored offsets; then the topic is deleted and
    // created again (broker storage wiped), so offsets restart at 0. New
    // records must be applied, not mistaken for records applied before.
    let mut stack = Stack::start(Options::default()).await?;
    let user = stack.api.create_user("reset").await?;
    let api = &stack.api;
    let before: Vec<Uuid> = stream::iter(0..20)
        .map(|_| api.charge(&user, 10))
        .buffer_unordered(10)
        .try_collect()
        .await?;
    for id in &before {
        assert_eq!(
            stack.api.outcome(&user.token, *id).await?.status.as_str(),
            "SUCCEEDED"
        );
    }
    stack.stop_workers().await?;

    let topic = stack
        .env
        .common
        .topics()
        .name(schemas::Topic::ChargeRequests);
    testkit::topics::recreate(&stack.env.common, &topic).await?;

    let api = &stack.api;
    // The gateway's idempotent producer has sequence numbers for the old
    // log, which the broker refuses for the new one: a fatal producer error.
    // The gateway must refuse the call (never a 202 for an unpublished
    // request) and report itself not ready, so it gets restarted.
    let (status, body) = testkit::Api::read(
        api.http
            .post(api.url(&format!("/v1/users/{}/balance/charge", user.id)))
            .bearer_auth(&user.token)
            .json(&json!({"amount": 5}))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (status, ready) =
        testkit::Api::read(api.http.get(api.url("/readyz")).send().await?).await?;
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert!(ready["producer_error"].is_string(), "{ready}");

    // A fresh producer publishes to the new log.
    let after = Uuid::new_v4();
    let envelope = schemas::RequestEnvelope::new(
        after,
        schemas::Request::ChargeBalance(schemas::requests::ChargeBalance {
            user_id: user.id,
            amount: 1_000,
        }),
    );
    let producer = platform::kafka::producer(&stack.env.common)?;
    let record = platform::kafka::OutgoingRecord::request(&stack.env.common.topics(), &envelope)?;
    platform::kafka::produce(&producer, &record, Duration::from_secs(10)).await?;
    stack.start_workers();
    assert_eq!(
        stack.api.outcome(&user.token, after).await?.status.as_str(),
        "SUCCEEDED"
    );
    assert_eq!(stack.api.balance(&user).await?, 20 * 10 + 1_000);
    stack.stop().await
}
