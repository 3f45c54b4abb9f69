//! Concert booking end to end: real broker, real Postgres, gateway and
//! workers in-process.

mod common;

use std::time::Duration;

use common::{codes, outcomes, scalar, Options, Stack};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::{json, Value};
use testkit::api::User;
use uuid::Uuid;

/// Creates `n` users, each with an ACTIVE queue token for `schedule_id`.
async fn admitted_users(
    stack: &Stack,
    n: usize,
    schedule_id: i64,
) -> anyhow::Result<Vec<(User, String)>> {
    let api = &stack.api;
    let users: Vec<(User, String)> = stream::iter(0..n)
        .map(|i| async move {
            let user = api.create_user(&format!("fan{i}")).await?;
            let token = api.join_queue(&user, schedule_id).await?;
            anyhow::Ok((user, token))
        })
        .buffer_unordered(32)
        .try_collect()
        .await?;
    for (user, token) in &users {
        api.wait_active(user, token).await?;
    }
    Ok(users)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_users_race_for_one_seat() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let schedule_id = stack.api.create_schedule(10, 50_000).await?;
    let seat_id = stack.api.seat_ids(schedule_id).await?[0];
    let users = admitted_users(&stack, 500, schedule_id).await?;

    let api = &stack.api;
    let requests: Vec<(String, Uuid)> = stream::iter(users.iter())
        .map(|(user, token)| async move {
            anyhow::Ok((user.token.clone(), api.hold(user, token, seat_id).await?))
        })
        .buffer_unordered(100)
        .try_collect()
        .await?;
    let results = outcomes(&stack, &requests).await?;
    let counts = codes(&results);
    assert_eq!(counts.get("SUCCEEDED"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("SEAT_TAKEN"), Some(&499), "{counts:?}");

    let live = scalar(&stack, &format!(
        "SELECT count(*) FROM reservations WHERE seat_id = {seat_id} AND status IN ('PENDING', 'CONFIRMED')"
    )).await?;
    assert_eq!(live, 1);
    let all = scalar(
        &stack,
        &format!("SELECT count(*) FROM reservations WHERE seat_id = {seat_id}"),
    )
    .await?;
    assert_eq!(all, 1);
    let available = scalar(
        &stack,
        &format!(
            "SELECT available_seats_count::int8 FROM concert_schedules WHERE id = {schedule_id}"
        ),
    )
    .await?;
    assert_eq!(available, 9, "seat count decremented exactly once");
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_concurrent_charges_to_one_user() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let user = stack.api.create_user("saver").await?;
    let api = &stack.api;
    let requests: Vec<(String, Uuid)> = stream::iter(0..300)
        .map(|_| async { anyhow::Ok((user.token.clone(), api.charge(&user, 500).await?)) })
        .buffer_unordered(100)
        .try_collect()
        .await?;
    let results = outcomes(&stack, &requests).await?;
    assert_eq!(codes(&results).get("SUCCEEDED"), Some(&300));
    assert_eq!(api.balance(&user).await?, 150_000);
    let charges = scalar(
        &stack,
        &format!(
            "SELECT count(*) FROM balance_histories WHERE user_id = {} AND type = 'CHARGE'",
            user.id
        ),
    )
    .await?;
    assert_eq!(charges, 300);
    let history_sum = scalar(
        &stack,
        &format!(
            "SELECT sum(amount)::int8 FROM balance_histories WHERE user_id = {}",
            user.id
        ),
    )
    .await?;
    assert_eq!(history_sum, 150_000);
    // Every change reached balance-events through the outbox.
    testkit::eventually("outbox to drain", Duration::from_secs(30), || async {
        Ok((scalar(&stack, "SELECT count(*) FROM outbox").await? == 0).then_some(()))
    })
    .await?;
    let topic = stack
        .env
        .common
        .topics()
        .name(schemas::Topic::BalanceEvents);
    assert_eq!(stack.env.record_counts()?[&topic], 300);
    stack.stop().await
}

/// Holds `seat_id` for `user` and returns the reservation id.
async fn held(stack: &Stack, user: &User, token: &str, seat_id: i64) -> anyhow::Result<i64> {
    let id = stack.api.hold(user, token, seat_id).await?;
    let outcome = stack.api.outcome(&user.token, id).await?;
    assert_eq!(outcome.status.as_str(), "SUCCEEDED", "{outcome:?}");
    Ok(outcome.held().expect("a hold result").reservation_id)
}

async fn charged(stack: &Stack, user: &User, amount: i64) -> anyhow::Result<()> {
    let id = stack.api.charge(user, amount).await?;
    let outcome = stack.api.outcome(&user.token, id).await?;
    assert_eq!(outcome.status.as_str(), "SUCCEEDED", "{outcome:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paying_one_reservation_twenty_times_pays_once() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let schedule_id = stack.api.create_schedule(5, 30_000).await?;
    let seat_id = stack.api.seat_ids(schedule_id).await?[2];
    let (user, token) = admitted_users(&stack, 1, schedule_id).await?.remove(0);
    charged(&stack, &user, 100_000).await?;
    let reservation_id = held(&stack, &user, &token, seat_id).await?;

    let api = &stack.api;
    let body = json!({"reservation_id": reservation_id});
    let headers = [("X-Queue-Token", token.as_str())];
    let calls: Vec<(reqwest::StatusCode, Value)> = stream::iter(0..20)
        .map(|_| api.post("/v1/payments", Some(&user.token), &headers, &body))
        .buffer_unordered(20)
        .try_collect()
        .await?;
    // Once the first payment lands the queue token is expired, so later
    // calls may be refused at the gateway already.
    let mut requests = Vec::new();
    for (status, body) in &calls {
        if *status == reqwest::StatusCode::ACCEPTED {
            let id = Uuid::parse_str(body["request_id"].as_str().expect("request_id"))?;
            requests.push((user.token.clone(), id));
        } else {
            assert_eq!(
                body["error"]["code"], "QUEUE_TOKEN_INVALID",
                "{status} {body}"
            );
        }
    }
    let results = outcomes(&stack, &requests).await?;
    let counts = codes(&results);
    assert_eq!(counts.get("SUCCEEDED"), Some(&1), "{counts:?}");
    assert_eq!(
        counts.get("INVALID_STATE").copied().unwrap_or(0),
        requests.len() - 1,
        "{counts:?}"
    );

    assert_eq!(
        scalar(
            &stack,
            &format!("SELECT count(*) FROM payments WHERE reservation_id = {reservation_id}")
        )
        .await?,
        1
    );
    assert_eq!(
        scalar(
            &stack,
            &format!(
                "SELECT count(*) FROM balance_histories WHERE user_id = {} AND type = 'USE'",
                user.id
            )
        )
        .await?,
        1
    );
    assert_eq!(api.balance(&user).await?, 70_000);
    let (_, reservation) = api
        .get(&format!("/v1/reservations/{reservation_id}"), &user.token)
        .await?;
    assert_eq!(reservation["status"], "CONFIRMED");
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn balance_for_one_seat_pays_only_one_of_two_holds() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let schedule_id = stack.api.create_schedule(5, 40_000).await?;
    let seats = stack.api.seat_ids(schedule_id).await?;
    let (user, token) = admitted_users(&stack, 1, schedule_id).await?.remove(0);
    charged(&stack, &user, 50_000).await?;
    let first = held(&stack, &user, &token, seats[0]).await?;
    let second = held(&stack, &user, &token, seats[1]).await?;

    let (a, b) = tokio::join!(
        stack.api.pay(&user, &token, first),
        stack.api.pay(&user, &token, second)
    );
    let results = outcomes(
        &stack,
        &[(user.token.clone(), a?), (user.token.clone(), b?)],
    )
    .await?;
    let counts = codes(&results);
    assert_eq!(counts.get("SUCCEEDED"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("INSUFFICIENT_BALANCE"), Some(&1), "{counts:?}");
    assert_eq!(stack.api.balance(&user).await?, 10_000);
    // The long-polls were answered from the lanes' notifications; a plain
    // GET reads the database. A success with its result and a rejection
    // with its code read the same either way.
    for answer in &results {
        let stored = stack
            .api
            .as_user(&user)
            .outcome(answer.request_id, Duration::ZERO)
            .await?;
        assert_eq!(stored.as_ref(), Some(answer));
    }
    assert_eq!(
        scalar(
            &stack,
            &format!("SELECT count(*) FROM payments WHERE user_id = {}", user.id)
        )
        .await?,
        1
    );
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_hold_releases_the_seat_and_late_payment_is_rejected() -> anyhow::Result<()> {
    let stack = Stack::start(Options {
        hold_secs: 1,
        ..Options::default()
    })
    .await?;
    let schedule_id = stack.api.create_schedule(3, 10_000).await?;
    let seat_id = stack.api.seat_ids(schedule_id).await?[0];
    let (user, token) = admitted_users(&stack, 1, schedule_id).await?.remove(0);
    charged(&stack, &user, 20_000).await?;
    let reservation_id = held(&stack, &user, &token, seat_id).await?;

    let api = &stack.api;
    testkit::eventually("hold to expire", Duration::from_secs(30), || async {
        let (_, body) = api
            .get(&format!("/v1/reservations/{reservation_id}"), &user.token)
            .await?;
        Ok((body["status"] == "EXPIRED").then_some(()))
    })
    .await?;
    let (_, seats) = api
        .get(
            &format!("/v1/schedules/{schedule_id}/seats?available=true"),
            &user.token,
        )
        .await?;
    assert!(
        seats["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|s| s["id"] == seat_id),
        "seat back on sale"
    );
    assert_eq!(
        scalar(
            &stack,
            &format!(
        "SELECT available_seats_count::int8 FROM concert_schedules WHERE id = {schedule_id}"
    )
        )
        .await?,
        3
    );

    let late = api.pay(&user, &token, reservation_id).await?;
    let outcome = api.outcome(&user.token, late).await?;
    assert_eq!(outcome.status.as_str(), "REJECTED");
    assert_eq!(outcome.error_code(), Some("HOLD_EXPIRED"));
    assert_eq!(api.balance(&user).await?, 20_000);
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_paid_reservation_refunds_it() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let schedule_id = stack.api.create_schedule(3, 25_000).await?;
    let seat_id = stack.api.seat_ids(schedule_id).await?[1];
    let (user, token) = admitted_users(&stack, 1, schedule_id).await?.remove(0);
    charged(&stack, &user, 30_000).await?;
    let reservation_id = held(&stack, &user, &token, seat_id).await?;
    let pay = json!({"reservation_id": reservation_id});
    let headers = [
        ("X-Queue-Token", token.as_str()),
        ("Idempotency-Key", "pay-7"),
    ];
    let paid = stack
        .api
        .submit("/v1/payments", &user.token, &headers, &pay)
        .await?;
    assert_eq!(
        stack.api.outcome(&user.token, paid).await?.status.as_str(),
        "SUCCEEDED"
    );
    assert_eq!(stack.api.balance(&user).await?, 5_000);
    // The payment expired the queue token, yet a client retrying with the
    // same Idempotency-Key gets its original request back, not a refusal.
    assert_eq!(
        stack
            .api
            .submit("/v1/payments", &user.token, &headers, &pay)
            .await?,
        paid
    );
    let fresh = [("X-Queue-Token", token.as_str())];
    let (status, reply) = stack
        .api
        .post("/v1/payments", Some(&user.token), &fresh, &pay)
        .await?;
    assert_eq!(
        status,
        reqwest::StatusCode::FORBIDDEN,
        "a new payment needs a live token: {reply}"
    );

    let cancel = stack
        .api
        .submit(
            &format!("/v1/reservations/{reservation_id}/cancel"),
            &user.token,
            &[],
            &json!({}),
        )
        .await?;
    let outcome = stack.api.outcome(&user.token, cancel).await?;
    assert_eq!(outcome.status.as_str(), "SUCCEEDED", "{outcome:?}");
    assert_eq!(
        outcome.cancelled().expect("a cancel result").refunded,
        25_000
    );
    assert_eq!(stack.api.balance(&user).await?, 30_000);
    let (_, history) = stack
        .api
        .get(
            &format!("/v1/users/{}/balance/history", user.id),
            &user.token,
        )
        .await?;
    let kinds: Vec<&str> = history["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|h| h["type"].as_str())
        .collect();
    assert_eq!(kinds, vec!["REFUND", "USE", "CHARGE"]);
    assert_eq!(scalar(&stack, &format!(
        "SELECT count(*) FROM reservations WHERE seat_id = {seat_id} AND status IN ('PENDING', 'CONFIRMED')"
    )).await?, 0);
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_idempotency_key_twice_is_one_request_and_one_effect() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let user = stack.api.create_user("careful").await?;
    let path = format!("/v1/users/{}/balance/charge", user.id);
    let key = [("Idempotency-Key", "charge-once-7")];
    let first = stack
        .api
        .submit(&path, &user.token, &key, &json!({"amount": 1234}))
        .await?;
    let second = stack
        .api
        .submit(&path, &user.token, &key, &json!({"amount": 1234}))
        .await?;
    assert_eq!(first, second);
    stack.api.outcome(&user.token, first).await?;
    let third = stack
        .api
        .submit(&path, &user.token, &key, &json!({"amount": 1234}))
        .await?;
    assert_eq!(first, third);
    // A different key is a different request.
    let other = stack
        .api
        .submit(
            &path,
            &user.token,
            &[("Idempotency-Key", "charge-once-8")],
            &json!({"amount": 1}),
        )
        .await?;
    assert_ne!(first, other);
    stack.api.outcome(&user.token, other).await?;
    assert_eq!(stack.api.balance(&user).await?, 1235);
    assert_eq!(
        scalar(
            &stack,
            &format!(
                "SELECT count(*) FROM balance_histories WHERE user_id = {}",
                user.id
            )
        )
        .await?,
        2
    );
    stack.stop().await
}
