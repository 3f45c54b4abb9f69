//! Concert booking end to end: real broker, real Postgres, gateway and
//! workers in-process.

use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::{json, Value};
use testkit::api::{codes, refusal_code, Fan};
use testkit::scalar;
use testkit::stack::{Options, Stack};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_users_race_for_one_seat() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let schedule_id = stack.api.create_schedule(10, 50_000).await?;
    let seat_id = stack.api.seat_ids(schedule_id).await?[0];
    let users = stack.api.admitted_users(500, schedule_id).await?;

    let api = &stack.api;
    let requests: Vec<(String, Uuid)> = stream::iter(users.iter())
        .map(|(user, token)| async move {
            anyhow::Ok((user.token.clone(), api.hold(user, token, seat_id).await?))
        })
        .buffer_unordered(100)
        .try_collect()
        .await?;
    let counts = codes(&api.outcomes(&requests).await?);
    assert_eq!(counts.get("SUCCEEDED"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("SEAT_TAKEN"), Some(&499), "{counts:?}");

    assert_eq!(
        stack.env.available_seats(schedule_id).await?,
        9,
        "seat count decremented exactly once"
    );
    let live = scalar!(stack, "SELECT count(*) FROM reservations WHERE seat_id = $1 AND status IN ('PENDING', 'CONFIRMED')", seat_id).await?;
    assert_eq!(live, 1);
    let all = scalar!(
        stack,
        "SELECT count(*) FROM reservations WHERE seat_id = $1",
        seat_id
    )
    .await?;
    assert_eq!(all, 1);
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
    let results = api.outcomes(&requests).await?;
    assert_eq!(codes(&results).get("SUCCEEDED"), Some(&300));
    assert_eq!(api.balance(&user).await?, 150_000);
    let charges = scalar!(
        stack,
        "SELECT count(*) FROM balance_histories WHERE user_id = $1 AND type = 'CHARGE'",
        user.id
    );
    let history_sum = scalar!(
        stack,
        "SELECT sum(amount)::int8 FROM balance_histories WHERE user_id = $1",
        user.id
    );
    assert_eq!((charges.await?, history_sum.await?), (300, 150_000));
    // Every change reached balance-events through the outbox.
    let outbox = || scalar!(stack, "SELECT count(*) FROM outbox");
    let wait = Duration::from_secs(30);
    testkit::wait_until("outbox to drain", wait, outbox, |n| *n == 0).await?;
    let topic = stack.env.topic(schemas::Topic::BalanceEvents);
    assert_eq!(stack.env.record_counts()?[&topic], 300);
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paying_one_reservation_twenty_times_pays_once() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let Fan {
        seats, user, token, ..
    } = stack.api.fan(5, 30_000, 100_000).await?;
    let reservation_id = stack.api.held(&user, &token, seats[2]).await?;

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
    let counts = codes(&api.outcomes(&requests).await?);
    assert_eq!(counts.get("SUCCEEDED"), Some(&1), "{counts:?}");
    assert_eq!(
        counts.get("INVALID_STATE").copied().unwrap_or(0),
        requests.len() - 1,
        "{counts:?}"
    );

    assert_eq!(
        scalar!(
            stack,
            "SELECT count(*) FROM payments WHERE reservation_id = $1",
            reservation_id
        )
        .await?,
        1
    );
    assert_eq!(
        scalar!(
            stack,
            "SELECT count(*) FROM balance_histories WHERE user_id = $1 AND type = 'USE'",
            user.id
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
    let api = &stack.api;
    let Fan {
        seats, user, token, ..
    } = api.fan(5, 40_000, 50_000).await?;
    let first = api.held(&user, &token, seats[0]).await?;
    let second = api.held(&user, &token, seats[1]).await?;

    let (a, b) = tokio::join!(
        api.pay(&user, &token, first),
        api.pay(&user, &token, second)
    );
    // A payment spends the queue token. When the lane decides the first
    // payment before the second call reaches the gateway, the gateway
    // refuses that call itself (403 QUEUE_TOKEN_INVALID) instead of the
    // lane refusing it (INSUFFICIENT_BALANCE): one payment either way.
    let mut accepted = Vec::new();
    let mut refused_at_gateway = 0;
    for paid in [a, b] {
        match paid {
            Ok(id) => accepted.push((user.token.clone(), id)),
            Err(error) => {
                assert_eq!(refusal_code(&error), Some("QUEUE_TOKEN_INVALID"), "{error}");
                refused_at_gateway += 1;
            }
        }
    }
    let results = api.outcomes(&accepted).await?;
    let counts = codes(&results);
    assert_eq!(counts.get("SUCCEEDED"), Some(&1), "{counts:?}");
    assert_eq!(
        counts.get("INSUFFICIENT_BALANCE").copied().unwrap_or(0) + refused_at_gateway,
        1,
        "{counts:?}"
    );
    assert_eq!(api.balance(&user).await?, 10_000);
    // The long-polls were answered from the lanes' notifications; a plain
    // GET reads the database. A success with its result and a rejection
    // with its code read the same either way.
    for answer in &results {
        let stored = api
            .as_user(&user)
            .outcome(answer.request_id, Duration::ZERO)
            .await?;
        assert_eq!(stored.as_ref(), Some(answer));
    }
    assert_eq!(
        scalar!(
            stack,
            "SELECT count(*) FROM payments WHERE user_id = $1",
            user.id
        )
        .await?,
        1
    );
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_hold_releases_the_seat_and_late_payment_is_rejected() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default().hold_secs(1)).await?;
    let api = &stack.api;
    let Fan {
        schedule_id,
        seats,
        user,
        token,
    } = api.fan(3, 10_000, 20_000).await?;
    let seat_id = seats[0];
    let reservation_id = api.held(&user, &token, seat_id).await?;

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
    assert_eq!(stack.env.available_seats(schedule_id).await?, 3);

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
    let api = &stack.api;
    let fan = api.fan(3, 25_000, 30_000).await?;
    let (user, token, seat_id) = (&fan.user, fan.token.as_str(), fan.seats[1]);
    let reservation_id = api.held(user, token, seat_id).await?;
    let pay = json!({"reservation_id": reservation_id});
    let headers = [("X-Queue-Token", token), ("Idempotency-Key", "pay-7")];
    let paid = api
        .submit("/v1/payments", &user.token, &headers, &pay)
        .await?;
    api.succeeded(user, paid).await?;
    assert_eq!(api.balance(user).await?, 5_000);
    // The payment expired the queue token, yet a client retrying with the
    // same Idempotency-Key gets its original request back, not a refusal.
    assert_eq!(
        api.submit("/v1/payments", &user.token, &headers, &pay)
            .await?,
        paid
    );
    let fresh = [("X-Queue-Token", token)];
    let (status, reply) = api
        .post("/v1/payments", Some(&user.token), &fresh, &pay)
        .await?;
    assert_eq!(
        status,
        reqwest::StatusCode::FORBIDDEN,
        "a new payment needs a live token: {reply}"
    );

    let cancel = api
        .submit(
            &format!("/v1/reservations/{reservation_id}/cancel"),
            &user.token,
            &[],
            &json!({}),
        )
        .await?;
    let outcome = api.outcome(&user.token, cancel).await?;
    assert_eq!(outcome.status.as_str(), "SUCCEEDED", "{outcome:?}");
    assert_eq!(
        outcome.cancelled().expect("a cancel result").refunded,
        25_000
    );
    assert_eq!(api.balance(user).await?, 30_000);
    let history = format!("/v1/users/{}/balance/history", user.id);
    let (_, history) = api.get(&history, &user.token).await?;
    let kinds: Vec<&str> = history["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|h| h["type"].as_str())
        .collect();
    assert_eq!(kinds, vec!["REFUND", "USE", "CHARGE"]);
    assert_eq!(scalar!(stack, "SELECT count(*) FROM reservations WHERE seat_id = $1 AND status IN ('PENDING', 'CONFIRMED')", seat_id).await?, 0);
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
    assert_eq!(stack.env.history_rows(user.id).await?, 2);
    stack.stop().await
}
