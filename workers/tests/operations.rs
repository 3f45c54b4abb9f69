//! What keeps "nothing lost" true over months: dead letters can be listed
//! and re-driven (decided once), rows are pruned past the retention
//! horizon, and records older than it are never applied twice.

use std::time::Duration;

use chrono::{DateTime, Utc};
use schemas::Topic;
use serde_json::json;
use testkit::api::Fan;
use testkit::scalar;
use testkit::stack::{Options, Stack};
use testkit::topics::charge_envelope;
use uuid::Uuid;

/// A charge record of `amount` to `user_id` as request `id`, accepted at
/// `accepted_at`.
fn charge_payload(
    id: Uuid,
    user_id: i64,
    amount: i64,
    accepted_at: DateTime<Utc>,
) -> anyhow::Result<String> {
    let mut envelope = charge_envelope(id, user_id, amount);
    envelope.timestamp = accepted_at;
    Ok(serde_json::to_string(&envelope)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_is_listed_and_re_driven_once() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let user = stack.api.create_user("redriven").await?;
    let common = &stack.env.common;
    let producer = platform::kafka::producer(common)?;
    let id = Uuid::now_v7();
    let now = Utc::now();
    // A request that fails validation in the lane (a negative amount).
    let invalid = charge_payload(id, user.id, -5, now)?;
    let key = user.id.to_string();
    stack
        .env
        .produce(Topic::ChargeRequests, None, &key, invalid.as_bytes())
        .await?;
    let failed = stack.env.decided(id).await?;
    assert_eq!(
        (failed.status.as_str(), failed.error_code.as_deref()),
        ("FAILED", Some("INVALID_REQUEST"))
    );

    // The operator lists the dead letters (the command line, as one would).
    let letters = testkit::eventually("the dead letter", Duration::from_secs(30), || async {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_workers"))
            .envs(stack.workers_env())
            .args(["dlq", "list", "--topic", "charge-requests", "--json"])
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let letters: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        Ok((!letters.is_empty()).then_some(letters))
    })
    .await?;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["request_id"], json!(id));
    assert!(letters[0]["reason"]
        .as_str()
        .unwrap_or_default()
        .contains("amount"));

    // Replaying it as it is would only dead-letter it again: refused.
    let letter = workers::dlq::find(common, Topic::ChargeRequests, 0, 0)
        .or_else(|_| workers::dlq::find(common, Topic::ChargeRequests, 1, 0))?;
    let replay = |corrected: Option<String>| {
        let (pool, producer, letter) = (&stack.env.pool, &producer, &letter);
        async move {
            workers::dlq::replay(
                common,
                pool,
                producer,
                Topic::ChargeRequests,
                letter,
                corrected.as_deref(),
                false,
            )
            .await
        }
    };
    let refused = replay(None).await;
    assert!(
        matches!(refused, Err(workers::dlq::DlqError::StillPoison(_))),
        "{refused:?}"
    );
    // A corrected payload must keep the request id.
    let other = replay(Some(charge_payload(Uuid::now_v7(), user.id, 5, now)?)).await;
    assert!(
        matches!(other, Err(workers::dlq::DlqError::OtherRequest { .. })),
        "{other:?}"
    );

    // The corrected record is decided once.
    let corrected = charge_payload(id, user.id, 5, now)?;
    let replayed = replay(Some(corrected.clone())).await?;
    assert_eq!(replayed.request_id, Some(id));
    stack.api.succeeded(&user, id).await?;
    assert_eq!(stack.api.balance(&user).await?, 5);
    // A second replay finds it decided.
    let again = replay(Some(corrected.clone())).await;
    assert!(
        matches!(again, Err(workers::dlq::DlqError::Decided(..))),
        "{again:?}"
    );
    assert_eq!(
        scalar!(
            stack,
            "SELECT count(*) FROM balance_histories WHERE request_id = $1",
            id
        )
        .await?,
        1
    );
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_past_the_horizon_are_pruned_and_old_records_never_apply_twice() -> anyhow::Result<()>
{
    let stack = Stack::start(Options::default()).await?;
    let user = stack.api.create_user("pruned").await?;
    // A keyed call, so its id is not one the gateway signed: a signed id
    // without a row answers PENDING until it is older than the horizon
    // (the gateway's tests cover that); this one's row is aged by hand.
    let (status, reply) = stack
        .api
        .post(
            &format!("/v1/users/{}/balance/charge", user.id),
            Some(&user.token),
            &[("Idempotency-Key", "pruned")],
            &json!({"amount": 100}),
        )
        .await?;
    anyhow::ensure!(status == reqwest::StatusCode::ACCEPTED, "{status} {reply}");
    let old: Uuid = reply["request_id"].as_str().unwrap_or_default().parse()?;
    let recent = stack.api.charge(&user, 100).await?;
    for id in [old, recent] {
        stack.api.outcome(&user.token, id).await?;
    }
    // An undecided request and a decided one, both from eight days ago, and
    // an old counted order.
    let stuck = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO requests (id, type, user_id, status, accepted_at)
         VALUES ($1, 'balance.charge', $2, 'PENDING', now() - interval '8 days')",
        stuck,
        user.id
    )
    .execute(&stack.env.pool)
    .await?;
    sqlx::query!(
        "UPDATE requests SET accepted_at = now() - interval '8 days',
                completed_at = now() - interval '8 days' WHERE id = $1",
        old
    )
    .execute(&stack.env.pool)
    .await?;
    sqlx::query!("INSERT INTO stats_counted_orders (order_id, counted_at) VALUES (1, now() - interval '8 days'),
                                                                       (2, now())")
    .execute(&stack.env.pool)
    .await?;

    let pruned =
        workers::schedulers::prune::prune(&stack.env.pool, chrono::TimeDelta::days(7)).await?;
    assert_eq!((pruned.requests, pruned.counted_orders), (1, 1));
    let (status, _) = stack
        .api
        .get(&format!("/v1/requests/{old}"), &user.token)
        .await?;
    assert_eq!(
        status,
        reqwest::StatusCode::NOT_FOUND,
        "a pruned request is gone"
    );
    let kept = scalar!(
        stack,
        "SELECT count(*) FROM requests WHERE id = ANY($1)",
        &[recent, stuck][..]
    )
    .await?;
    assert_eq!(kept, 2, "recent and undecided requests stay");

    // The pruned request's record read again (a log re-read from an old
    // start) must not apply a second time; an old record whose request is
    // still PENDING is applied.
    let eight_days_ago = Utc::now() - chrono::TimeDelta::days(8);
    let key = user.id.to_string();
    for (id, amount) in [(old, 100), (stuck, 7)] {
        let record = charge_payload(id, user.id, amount, eight_days_ago)?;
        stack
            .env
            .produce(Topic::ChargeRequests, None, &key, record.as_bytes())
            .await?;
    }
    stack.api.succeeded(&user, stuck).await?;
    stack.api.charged(&user, 1).await?;
    assert_eq!(stack.api.balance(&user).await?, 100 + 100 + 7 + 1);
    assert_eq!(
        scalar!(stack, "SELECT count(*) FROM requests WHERE id = $1", old).await?,
        0,
        "the stale record left no row behind"
    );
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_are_not_ready_without_kafka() -> anyhow::Result<()> {
    let env = testkit::TestEnv::new().await?;
    let mut dead = env.common.clone();
    dead.kafka_brokers = "127.0.0.1:1".into();
    let router = workers::health_router(env.pool.clone(), platform::kafka::producer(&dead)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/readyz", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });
    let (status, body) = testkit::Api::read(reqwest::get(&url).await?).await?;
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        (body["database"].clone(), body["kafka"].clone()),
        (json!(true), json!(false))
    );

    let live = workers::health_router(env.pool.clone(), platform::kafka::producer(&env.common)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/readyz", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, live).await });
    let (status, body) = testkit::Api::read(reqwest::get(&url).await?).await?;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hold_expiry_holds_no_locks_while_the_broker_is_slow() -> anyhow::Result<()> {
    let mut stack = Stack::start(Options::default()).await?;
    let api = &stack.api;
    let Fan {
        seats, user, token, ..
    } = api.fan(1, 1_000, 0).await?;
    let reservation = api.held(&user, &token, seats[0]).await?;
    // Only the round below schedules expiries.
    stack.stop_workers().await?;
    sqlx::query!(
        "UPDATE reservations SET expires_at = now() - interval '1 second' WHERE id = $1",
        reservation
    )
    .execute(&stack.env.pool)
    .await?;
    // A scheduler round whose broker never answers (3 s produce timeout).
    let mut unreachable = stack.env.common.clone();
    unreachable.kafka_brokers = "127.0.0.1:1".into();
    let producer = platform::kafka::producer(&unreachable)?;
    let (pool, topics) = (stack.env.pool.clone(), stack.env.common.topics());
    let round = tokio::spawn(async move {
        workers::concert::hold_expiry::publish_due(
            &pool,
            &producer,
            &topics,
            Duration::from_secs(3),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Meanwhile the lanes can lock the reservation (a payment would).
    let mut tx = stack.env.pool.begin().await?;
    let locked = sqlx::query!(
        "SELECT id FROM reservations WHERE id = $1 FOR UPDATE NOWAIT",
        reservation
    )
    .fetch_all(&mut *tx)
    .await;
    tx.rollback().await?;
    assert!(
        locked.is_ok(),
        "the scheduler held the row while waiting for the broker: {locked:?}"
    );
    assert!(
        round.await?.is_err(),
        "the round reports its failed publish"
    );
    // The claim was given back: the next round tries again at once.
    let requested: Option<DateTime<Utc>> = sqlx::query_scalar!(
        "SELECT expiry_requested_at FROM reservations WHERE id = $1",
        reservation
    )
    .fetch_one(&stack.env.pool)
    .await?;
    assert_eq!(requested, None);
    stack.stop().await
}

/// The value of `lane_consumer_lag` for `lane` on `topic`, summed over its
/// partitions, as `/metrics` shows it now (None before the first sample).
fn reported_lag(lane: &str, topic: &str) -> Option<f64> {
    let prefix = "lane_consumer_lag{";
    let rendered = platform::observability::metrics_handle().render();
    let values: Vec<f64> = rendered
        .lines()
        .filter(|line| {
            line.starts_with(prefix)
                && line.contains(&format!("lane=\"{lane}\""))
                && line.contains(&format!("topic=\"{topic}\""))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumer_lag_shows_a_lane_that_is_behind_and_falls_back_to_zero() -> anyhow::Result<()> {
    let mut stack = Stack::start(Options::without_workers()).await?;
    stack.workers_config.gauge_interval_ms = 100;
    let user = stack.api.create_user("lagging").await?;
    let topic = stack.env.common.topics().name(Topic::ChargeRequests);

    // The charge lane is stuck behind a lock on the user's balance row.
    let blocker = stack.env.lock_balance(user.id).await?;
    let charges = stack.api.charges(&user, 3, 100).await?;
    stack.start_workers();
    let lag = testkit::eventually("lag reported", Duration::from_secs(30), || async {
        Ok(reported_lag("charge", &topic).filter(|lag| *lag >= 3.0))
    })
    .await?;
    assert_eq!(lag, 3.0, "three charges wait behind the lock");

    // Released, the lane applies them and the lag returns to zero.
    blocker.rollback().await?;
    for id in charges {
        assert_eq!(stack.env.decided(id).await?.status.as_str(), "SUCCEEDED");
    }
    testkit::eventually("lag back to zero", Duration::from_secs(30), || async {
        Ok(reported_lag("charge", &topic).filter(|lag| *lag == 0.0))
    })
    .await?;
    stack.stop().await
}
