//! Faults: a worker process killed mid-load, poison records, and a database
//! outage. Nothing accepted is lost and nothing is applied twice.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use api::status::{QueueStatus, RequestStatus};
use futures::stream::{self, StreamExt, TryStreamExt};
use schemas::Topic;
use serde_json::json;
use sqlx::ConnectOptions;
use testkit::api::User;
use testkit::scalar;
use testkit::stack::{Options, Stack};
use uuid::Uuid;

/// The workers binary, for worker processes.
const WORKERS: &str = env!("CARGO_BIN_EXE_workers");

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
    let stack = Stack::start(Options::without_workers()).await?;
    let mut worker = stack.start_worker_process(WORKERS).await?;
    let api = &stack.api;
    let schedule_id = api.create_schedule(150, 1_000).await?;
    let seats = api.seat_ids(schedule_id).await?;
    let users = api.admitted_users(40, schedule_id).await?;

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
    let first_ids: Vec<Uuid> = first_half.iter().map(|(_, id)| *id).collect();
    let decided = || stack.env.decided_among(&first_ids);
    let wait = Duration::from_secs(60);
    testkit::wait_until("the worker to be mid-load", wait, decided, |n| *n >= 50).await?;
    worker.kill()?;
    let decided_at_kill = decided().await?;
    let worker = stack.start_worker_process(WORKERS).await?;
    let second_half: Vec<(Call, Uuid)> = stream::iter(calls[1000..].to_vec())
        .map(submit)
        .buffer_unordered(32)
        .try_collect()
        .await?;
    let accepted: Vec<(Call, Uuid)> = first_half.into_iter().chain(second_half).collect();

    let requests: Vec<(String, Uuid)> = accepted
        .iter()
        .map(|(call, id)| {
            let user = match call {
                Call::Charge { user, .. } | Call::Hold { user, .. } => &users[*user].0,
            };
            (user.token.clone(), *id)
        })
        .collect();
    // In order: outcomes are zipped with the calls below.
    let outcomes = api.outcomes(&requests).await?;
    // Stop the second worker the polite way: SIGTERM must drain and exit 0.
    let exit = worker.terminate().await?;
    assert!(exit.success(), "graceful shutdown exits cleanly: {exit:?}");
    assert!(
        decided_at_kill < 2000,
        "the kill happened mid-load ({decided_at_kill} decided)"
    );

    // Exactly one outcome per request.
    let ids: Vec<Uuid> = accepted.iter().map(|(_, id)| *id).collect();
    assert_eq!(stack.env.decided_among(&ids).await?, 2000);

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
        let row = sqlx::query!(
            r#"SELECT b.balance, coalesce(sum(h.amount), 0)::int8 AS "history_sum!",
                      count(h.id) AS "history_rows!"
               FROM balances b LEFT JOIN balance_histories h ON h.balance_id = b.id
               WHERE b.user_id = $1 GROUP BY b.balance"#,
            user_id
        )
        .fetch_one(&stack.env.pool)
        .await?;
        let (balance, history_sum, history_rows) = (row.balance, row.history_sum, row.history_rows);
        assert_eq!(
            (balance, history_sum, history_rows),
            (*sum, *sum, *count),
            "user {user_id}"
        );
    }
    assert_eq!(
        scalar!(
            stack,
            "SELECT count(*) - count(DISTINCT request_id) FROM balance_histories"
        )
        .await?,
        0,
        "no request changed a balance twice"
    );

    // Seats: one live reservation per won hold, counts consistent.
    let live = scalar!(
        stack,
        "SELECT count(*) FROM reservations WHERE status IN ('PENDING', 'CONFIRMED')"
    )
    .await?;
    assert_eq!(live, holds_won);
    assert_eq!(
        scalar!(stack, "SELECT count(*) FROM reservations").await?,
        holds_won
    );
    assert_eq!(
        scalar!(stack, "SELECT count(*) FROM seats WHERE is_reserved").await?,
        holds_won
    );
    assert_eq!(
        stack.env.available_seats(schedule_id).await?,
        seats.len() as i64 - holds_won
    );
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_records_go_to_the_dlq_and_the_lane_moves_on() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let user = stack.api.create_user("victim").await?;
    let key = user.id.to_string();
    let bad_id = Uuid::now_v7();
    let invalid = testkit::topics::charge_envelope(bad_id, user.id, -5);
    for payload in [b"{not json".to_vec(), serde_json::to_vec(&invalid)?] {
        stack
            .env
            .produce(Topic::ChargeRequests, None, &key, &payload)
            .await?;
    }
    // A good request behind the poison on the same partition still lands.
    let good = stack.api.charge(&user, 900).await?;
    stack.api.succeeded(&user, good).await?;
    assert_eq!(stack.api.balance(&user).await?, 900);

    let row = stack
        .env
        .request(bad_id)
        .await?
        .context("the poison's row")?;
    assert_eq!(
        (row.status.as_str(), row.error_code.as_deref()),
        ("FAILED", Some("INVALID_REQUEST"))
    );

    let letters = stack
        .env
        .wait_dead_letters(Topic::ChargeRequests, 2)
        .await?;
    let mut reasons = Vec::new();
    for letter in &letters {
        assert_eq!(letter.key.as_deref(), Some(key.as_str()));
        let reason = letter
            .header(schemas::HEADER_DLQ_REASON)
            .expect("reason header");
        reasons.push(reason.to_owned());
    }
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("undecodable"), "{reasons:?}");
    assert!(reasons[1].contains("amount"), "{reasons:?}");
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_outage_pauses_the_lanes_and_loses_nothing() -> anyhow::Result<()> {
    let mut stack = Stack::start(Options::without_workers()).await?;
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
    stack.api.charged(&user, 1).await?;

    proxy.down();
    let api = &stack.api;
    let during = api.charges(&user, 50, 100).await?;
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
    assert_eq!(stack.env.decided_among(&during).await?, 0);

    proxy.up();
    for id in &during {
        stack.api.succeeded(&user, *id).await?;
    }
    assert_eq!(stack.api.balance(&user).await?, 1 + 50 * 100);
    assert_eq!(stack.env.history_rows(user.id).await?, 51);
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_worker_processes_share_lanes_and_schedulers_safely() -> anyhow::Result<()> {
    let mut stack = Stack::start(Options::default().active_limit(10)).await?;
    stack.start_workers();
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
        scalar!(stack, "SELECT count(*) FROM reservation_queue WHERE concert_schedule_id = $1 AND status = 'ACTIVE'", schedule_id)
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
    let requests: Vec<(String, Uuid)> =
        stream::iter((0..seats.len()).flat_map(|s| (0..admitted.len()).map(move |u| (s, u))))
            .map(|(s, u)| async move {
                let (user, token) = &admitted[u];
                anyhow::Ok((user.token.clone(), api.hold(user, token, seats[s]).await?))
            })
            .buffer_unordered(32)
            .try_collect()
            .await?;
    let outcomes = api.outcomes(&requests).await?;
    let won = outcomes
        .iter()
        .filter(|o| o.status == RequestStatus::Succeeded)
        .count();
    assert_eq!(won, seats.len(), "every seat is sold exactly once");
    assert!(outcomes
        .iter()
        .all(|o| o.status == RequestStatus::Succeeded || o.error_code() == Some("SEAT_TAKEN")));
    assert_eq!(
        scalar!(stack, "SELECT count(*) FROM reservations").await?,
        seats.len() as i64
    );
    assert_eq!(stack.env.available_seats(schedule_id).await?, 0);
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
    let before = api.charges(&user, 20, 10).await?;
    for id in &before {
        stack.api.succeeded(&user, *id).await?;
    }
    stack.stop_workers().await?;
    stack.env.recreate_topic(Topic::ChargeRequests).await?;

    let api = &stack.api;
    // The gateway's idempotent producer has sequence numbers for the old
    // log. Kafka answers the first produce to the new log with
    // UNKNOWN_PRODUCER_ID, which librdkafka resolves by itself (KIP-360):
    // the call is accepted. A broker that refuses the old sequence numbers
    // instead makes it a fatal producer error: the call that meets it is
    // refused (never a 202 for an unpublished request), and the gateway
    // builds a new producer by itself. Either way the gateway is ready
    // afterwards and every accepted charge is applied from the new log.
    let charge = format!("/v1/users/{}/balance/charge", user.id);
    let (status, body) = api.post_as(&user, &charge, &json!({"amount": 5})).await?;
    let first = match status {
        reqwest::StatusCode::ACCEPTED => {
            Some(serde_json::from_value::<Uuid>(body["request_id"].clone())?)
        }
        reqwest::StatusCode::SERVICE_UNAVAILABLE => None,
        other => panic!("{other}: {body}"),
    };
    let (status, ready) = api.get_public("/readyz").await?;
    assert_eq!(status, reqwest::StatusCode::OK, "{ready}");
    assert!(ready["producer_error"].is_null(), "{ready}");
    let after = api.charges(&user, 1, 1_000).await?[0];
    stack.start_workers();
    stack.api.succeeded(&user, after).await?;
    let mut expected = 20 * 10 + 1_000;
    if let Some(first) = first {
        stack.api.succeeded(&user, first).await?;
        expected += 5;
    }
    assert_eq!(stack.api.balance(&user).await?, expected);
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebalance_while_stored_offsets_cannot_be_read_does_not_rewind_the_lane(
) -> anyhow::Result<()> {
    let stack = Stack::start(Options::without_workers()).await?;
    let first = stack.start_worker_process(WORKERS).await?;
    let user = stack.api.create_user("offsets").await?;
    for id in stack.api.charges(&user, 40, 10).await? {
        stack.api.succeeded(&user, id).await?;
    }
    // The stored offsets cannot be read (nor written) while a second
    // worker joins: every partition of every lane is assigned anew.
    sqlx::query("ALTER TABLE consumer_offsets RENAME TO consumer_offsets_away")
        .execute(&stack.env.pool)
        .await?;
    let joining = {
        let (stack, workers) = (&stack, WORKERS);
        async move { stack.start_worker_process(workers).await }
    };
    let restore = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        sqlx::query("ALTER TABLE consumer_offsets_away RENAME TO consumer_offsets")
            .execute(&stack.env.pool)
            .await
    };
    let (joined, restored) = tokio::join!(joining, restore);
    restored?;
    let second = joined?;
    let after = stack.api.charges(&user, 4, 1_000).await?;
    for id in after {
        stack.api.succeeded(&user, id).await?;
    }
    assert_eq!(stack.api.balance(&user).await?, 40 * 10 + 4 * 1_000);
    // A partition started at the start of its log would have read its 40
    // applied records again; one started at its stored offset re-reads the
    // last applied record at most (to check it).
    let mut replayed = 0.0;
    let mut retries = 0.0;
    for worker in [&first, &second] {
        replayed += worker.counter("lane_replayed_records_total").await?;
        retries += worker.counter("lane_offset_read_retries_total").await?;
    }
    assert!(
        retries > 0.0,
        "the offsets were read while the table was away"
    );
    assert!(
        replayed <= 2.0,
        "{replayed} records re-read: a partition rewound"
    );
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_its_topic_cannot_take_is_parked_in_postgres() -> anyhow::Result<()> {
    // The workers' producer takes records of 2,000 bytes at most; the
    // broker took a 5,000-byte poison record from another producer.
    let mut stack = Stack::start(Options::without_workers()).await?;
    stack.workers_config.common.kafka_message_max_bytes = 2_000;
    stack.start_workers();
    let user = stack.api.create_user("parked").await?;
    let key = user.id.to_string();
    let poison = format!("{{\"not\": \"{}\"}}", "x".repeat(5_000));
    stack
        .env
        .produce(Topic::ChargeRequests, None, &key, poison.as_bytes())
        .await?;
    // The lane moves on past it.
    let good = stack.api.charge(&user, 700).await?;
    stack.api.succeeded(&user, good).await?;

    let pool = stack.env.pool.clone();
    let parked = testkit::wait_until(
        "the poison to be parked",
        Duration::from_secs(30),
        || async { anyhow::Ok(workers::dlq::parked(&pool).await?) },
        |parked| !parked.is_empty(),
    )
    .await?;
    assert_eq!(parked.len(), 1, "{parked:?}");
    let letter = &parked[0];
    assert_eq!(letter.key.as_deref(), Some(key.as_str()));
    assert_eq!(letter.payload, poison);
    assert!(letter.reason.contains("undecodable"), "{letter:?}");
    assert!(letter
        .origin
        .starts_with(&stack.env.topic(Topic::ChargeRequests)));
    // `workers dlq parked` shows it.
    let output = std::process::Command::new(WORKERS)
        .args(["dlq", "parked", "--json"])
        .envs(stack.workers_env())
        .output()?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shown = String::from_utf8(output.stdout)?;
    assert!(shown.contains(&letter.origin), "{shown}");
    stack.stop().await
}
