//! What keeps "nothing lost" true over months: dead letters can be listed
//! and re-driven (decided once), rows are pruned past the retention
//! horizon, and records older than it are never applied twice.

mod common;

use std::time::Duration;

use common::{scalar, Options, Stack};
use serde_json::json;
use uuid::Uuid;

fn charge_payload(id: Uuid, user_id: i64, amount: i64, timestamp: &str) -> String {
    json!({"request_id": id, "version": 1, "timestamp": timestamp, "type": "balance.charge",
           "payload": {"user_id": user_id, "amount": amount}})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_is_listed_and_re_driven_once() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let user = stack.api.create_user("redriven").await?;
    let common = &stack.env.common;
    let topic = common.topics().name(schemas::Topic::ChargeRequests);
    let producer = platform::kafka::producer(common)?;
    let id = Uuid::now_v7();
    let now = chrono::Utc::now().to_rfc3339();
    // A request that fails validation in the lane (a negative amount).
    testkit::topics::produce(
        &producer,
        &topic,
        None,
        &user.id.to_string(),
        charge_payload(id, user.id, -5, &now).as_bytes(),
        &[],
    )
    .await?;
    let failed = testkit::eventually("the FAILED outcome", Duration::from_secs(30), || async {
        Ok(sqlx::query_scalar::<_, String>(
            "SELECT error_code FROM requests WHERE id = $1 AND status = 'FAILED'",
        )
        .bind(id)
        .fetch_optional(&stack.env.pool)
        .await?)
    })
    .await?;
    assert_eq!(failed, "INVALID_REQUEST");

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
    let letter = workers::dlq::find(common, schemas::Topic::ChargeRequests, 0, 0)
        .or_else(|_| workers::dlq::find(common, schemas::Topic::ChargeRequests, 1, 0))?;
    let replay = |corrected: Option<String>| {
        let (pool, producer, letter) = (&stack.env.pool, &producer, &letter);
        async move {
            workers::dlq::replay(
                common,
                pool,
                producer,
                schemas::Topic::ChargeRequests,
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
    let other = replay(Some(charge_payload(Uuid::now_v7(), user.id, 5, &now))).await;
    assert!(
        matches!(other, Err(workers::dlq::DlqError::OtherRequest { .. })),
        "{other:?}"
    );

    // The corrected record is decided once.
    let corrected = charge_payload(id, user.id, 5, &now);
    let replayed = replay(Some(corrected.clone())).await?;
    assert_eq!(replayed.request_id, Some(id));
    let outcome = stack.api.outcome(&user.token, id).await?;
    assert_eq!(outcome.status.as_str(), "SUCCEEDED", "{outcome:?}");
    assert_eq!(stack.api.balance(&user).await?, 5);
    // A second replay finds it decided.
    let again = replay(Some(corrected.clone())).await;
    assert!(
        matches!(again, Err(workers::dlq::DlqError::Decided(..))),
        "{again:?}"
    );
    assert_eq!(
        scalar(
            &stack,
            &format!("SELECT count(*) FROM balance_histories WHERE request_id = '{id}'")
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
    let old = stack.api.charge(&user, 100).await?;
    let recent = stack.api.charge(&user, 100).await?;
    for id in [old, recent] {
        stack.api.outcome(&user.token, id).await?;
    }
    // An undecided request and a decided one, both from eight days ago, and
    // an old counted order.
    let stuck = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO requests (id, type, user_id, status, accepted_at)
         VALUES ($1, 'balance.charge', $2, 'PENDING', now() - interval '8 days')",
    )
    .bind(stuck)
    .bind(user.id)
    .execute(&stack.env.pool)
    .await?;
    sqlx::query(
        "UPDATE requests SET accepted_at = now() - interval '8 days',
                completed_at = now() - interval '8 days' WHERE id = $1",
    )
    .bind(old)
    .execute(&stack.env.pool)
    .await?;
    sqlx::query(
        "INSERT INTO stats_counted_orders (order_id, counted_at) VALUES (1, now() - interval '8 days'),
                                                                       (2, now())",
    )
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
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM requests WHERE id = ANY($1)")
        .bind(vec![recent, stuck])
        .fetch_one(&stack.env.pool)
        .await?;
    assert_eq!(kept, 2, "recent and undecided requests stay");

    // The pruned request's record read again (a log re-read from an old
    // start) must not apply a second time; an old record whose request is
    // still PENDING is applied.
    let topic = stack
        .env
        .common
        .topics()
        .name(schemas::Topic::ChargeRequests);
    let producer = platform::kafka::producer(&stack.env.common)?;
    let eight_days_ago = (chrono::Utc::now() - chrono::TimeDelta::days(8)).to_rfc3339();
    for (id, amount) in [(old, 100), (stuck, 7)] {
        testkit::topics::produce(
            &producer,
            &topic,
            None,
            &user.id.to_string(),
            charge_payload(id, user.id, amount, &eight_days_ago).as_bytes(),
            &[],
        )
        .await?;
    }
    assert_eq!(
        stack.api.outcome(&user.token, stuck).await?.status.as_str(),
        "SUCCEEDED"
    );
    let behind = stack.api.charge(&user, 1).await?;
    stack.api.outcome(&user.token, behind).await?;
    assert_eq!(stack.api.balance(&user).await?, 100 + 100 + 7 + 1);
    assert_eq!(
        scalar(
            &stack,
            &format!("SELECT count(*) FROM requests WHERE id = '{old}'")
        )
        .await?,
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
    let schedule_id = api.create_schedule(1, 1_000).await?;
    let seat = api.seat_ids(schedule_id).await?[0];
    let user = api.create_user("held").await?;
    let token = api.join_queue(&user, schedule_id).await?;
    api.wait_active(&user, &token).await?;
    let hold = api.hold(&user, &token, seat).await?;
    let reservation = api
        .outcome(&user.token, hold)
        .await?
        .held()
        .map(|held| held.reservation_id)
        .unwrap_or_default();
    // Only the round below schedules expiries.
    stack.stop_workers().await?;
    sqlx::query("UPDATE reservations SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(reservation)
        .execute(&stack.env.pool)
        .await?;
    // A scheduler round whose broker never answers (3 s produce timeout).
    let mut unreachable = stack.env.common.clone();
    unreachable.kafka_brokers = "127.0.0.1:1".into();
    let producer = platform::kafka::producer(&unreachable)?;
    let (pool, topics) = (stack.env.pool.clone(), stack.env.common.topics());
    let round = tokio::spawn(async move {
        workers::schedulers::hold_expiry::publish_due(
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
    let locked = sqlx::query("SELECT id FROM reservations WHERE id = $1 FOR UPDATE NOWAIT")
        .bind(reservation)
        .execute(&mut *tx)
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
    let requested: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT expiry_requested_at FROM reservations WHERE id = $1")
            .bind(reservation)
            .fetch_one(&stack.env.pool)
            .await?;
    assert_eq!(requested, None);
    stack.stop().await
}
