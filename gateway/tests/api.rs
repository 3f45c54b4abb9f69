//! Gateway behaviour against a real broker and Postgres, without workers:
//! authentication, queue-token checks, validation, 503 on a dead broker,
//! long-poll wake-up. Every refused call must publish nothing.

use std::time::{Duration, Instant};

use api::status::QueueStatus;
use gateway::{Gateway, GatewayConfig};
use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::api::User;
use testkit::{Api, TestEnv};
use tokio_util::sync::CancellationToken;

struct Harness {
    env: TestEnv,
    api: Api,
    cancel: CancellationToken,
}

impl Harness {
    async fn start() -> anyhow::Result<Self> {
        let env = TestEnv::new().await?;
        let mut config = GatewayConfig::local("admin-secret-token", testkit::TEST_AUTH_SECRET);
        config.common = env.common.clone();
        Self::with(env, config).await
    }

    async fn with(env: TestEnv, config: GatewayConfig) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let cancel = CancellationToken::new();
        tokio::spawn(Gateway::build(&config)?.serve(listener, cancel.clone()));
        Ok(Self {
            env,
            api: Api::new(base, config.admin_token.clone()),
            cancel,
        })
    }

    /// Makes `token` ACTIVE the way the admission scheduler would.
    async fn activate(&self, token: &str) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE reservation_queue SET status = 'ACTIVE', activated_at = now(),
                    expires_at = now() + interval '10 minutes' WHERE token = $1::uuid",
        )
        .bind(token)
        .execute(&self.env.pool)
        .await?;
        Ok(())
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

async fn seat_and_users(h: &Harness) -> anyhow::Result<(i64, i64, User, User)> {
    let schedule_id = h.api.create_schedule(5, 10_000).await?;
    let seat_id = h.api.seat_ids(schedule_id).await?[0];
    let alice = h.api.create_user("alice").await?;
    let bob = h.api.create_user("bob").await?;
    Ok((schedule_id, seat_id, alice, bob))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_token_is_required_active_and_the_callers_own() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let (schedule_id, seat_id, alice, bob) = seat_and_users(&h).await?;
    let body = json!({"seat_id": seat_id});

    let (status, reply) = h
        .api
        .post("/v1/reservations", Some(&alice.token), &[], &body)
        .await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::UNAUTHORIZED, "QUEUE_TOKEN_REQUIRED"),
        "{reply}"
    );

    let alice_token = h.api.join_queue(&alice, schedule_id).await?;
    let status_body = h.api.queue_status(&alice, &alice_token).await?;
    assert_eq!(status_body.status, QueueStatus::Waiting);
    assert_eq!(status_body.position, Some(1));
    let (status, reply) = h
        .api
        .post(
            "/v1/reservations",
            Some(&alice.token),
            &[("X-Queue-Token", &alice_token)],
            &body,
        )
        .await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::FORBIDDEN, "QUEUE_TOKEN_INVALID"),
        "waiting token: {reply}"
    );

    let bob_token = h.api.join_queue(&bob, schedule_id).await?;
    assert_eq!(
        h.api.queue_status(&bob, &bob_token).await?.position,
        Some(2)
    );
    h.activate(&bob_token).await?;
    let (status, reply) = h
        .api
        .post(
            "/v1/reservations",
            Some(&alice.token),
            &[("X-Queue-Token", &bob_token)],
            &body,
        )
        .await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::FORBIDDEN, "QUEUE_TOKEN_INVALID"),
        "another user's token: {reply}"
    );
    let (status, reply) = h
        .api
        .get(&format!("/v1/queue/tokens/{bob_token}"), &alice.token)
        .await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::FORBIDDEN, "FORBIDDEN"),
        "{reply}"
    );

    let (status, reply) = h
        .api
        .post(
            "/v1/reservations",
            Some(&alice.token),
            &[("X-Queue-Token", "not-a-uuid")],
            &body,
        )
        .await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::FORBIDDEN, "QUEUE_TOKEN_INVALID"),
        "{reply}"
    );

    assert_eq!(h.env.total_records()?, 0, "refused calls publish nothing");

    // The same call with the caller's ACTIVE token is accepted and published.
    h.activate(&alice_token).await?;
    let (status, reply) = h
        .api
        .post(
            "/v1/reservations",
            Some(&alice.token),
            &[("X-Queue-Token", &alice_token)],
            &body,
        )
        .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    assert_eq!(h.env.total_records()?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_checked_and_scoped_to_their_user() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let alice = h.api.create_user("alice").await?;
    let bob = h.api.create_user("bob").await?;

    let charge = json!({"amount": 1000});
    let path = format!("/v1/users/{}/balance/charge", alice.id);
    let (status, reply) = h.api.post(&path, Some(&bob.token), &[], &charge).await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::FORBIDDEN, "FORBIDDEN"),
        "{reply}"
    );
    let (status, reply) = h
        .api
        .get(&format!("/v1/users/{}/balance", alice.id), &bob.token)
        .await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::FORBIDDEN, "FORBIDDEN"),
        "{reply}"
    );
    let (status, reply) = h.api.post(&path, None, &[], &charge).await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
        "{reply}"
    );
    let forged = alice
        .token
        .replacen(&format!("v1.{}.", alice.id), &format!("v1.{}.", bob.id), 1);
    let (status, reply) = h
        .api
        .get(&format!("/v1/users/{}/balance", bob.id), &forged)
        .await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
        "{reply}"
    );
    let (status, reply) = h
        .api
        .post(
            "/v1/admin/concerts",
            Some(&alice.token),
            &[],
            &json!({"title": "x", "schedules": []}),
        )
        .await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
        "{reply}"
    );

    // The admin may read any user's balance.
    let (status, reply) = h
        .api
        .get(
            &format!("/v1/users/{}/balance", alice.id),
            "admin-secret-token",
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["balance"], 0);

    assert_eq!(h.env.total_records()?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_stable_code_and_publishes_nothing() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let (schedule_id, _, alice, _) = seat_and_users(&h).await?;
    let token = h.api.join_queue(&alice, schedule_id).await?;
    h.activate(&token).await?;
    let charge_path = format!("/v1/users/{}/balance/charge", alice.id);

    let raw = |path: &str, body: &str, content_type: &str| {
        h.api
            .http
            .post(h.api.url(path))
            .bearer_auth(&alice.token)
            .header("content-type", content_type.to_owned())
            .header("x-queue-token", token.clone())
            .body(body.to_owned())
            .send()
    };
    let (status, reply) =
        Api::read(raw(&charge_path, "{\"amount\": ", "application/json").await?).await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::BAD_REQUEST, "INVALID_JSON"),
        "{reply}"
    );
    let (status, reply) =
        Api::read(raw(&charge_path, "{\"amount\": 5}", "text/plain").await?).await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::BAD_REQUEST, "INVALID_JSON"),
        "{reply}"
    );
    let (status, reply) =
        Api::read(raw(&charge_path, "{\"amount\": \"lots\"}", "application/json").await?).await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"),
        "{reply}"
    );

    for amount in [-500, 0, 10_000_001] {
        let (status, reply) = h
            .api
            .post(
                &charge_path,
                Some(&alice.token),
                &[],
                &json!({"amount": amount}),
            )
            .await?;
        assert_eq!(
            (status, code(&reply)),
            (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"),
            "{amount}: {reply}"
        );
        assert_eq!(reply["error"]["field"], "amount");
    }
    let (status, reply) = h
        .api
        .post(&charge_path, Some(&alice.token), &[], &json!({}))
        .await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"),
        "{reply}"
    );

    let queue = [("X-Queue-Token", token.as_str())];
    let (status, reply) = h
        .api
        .post(
            "/v1/reservations",
            Some(&alice.token),
            &queue,
            &json!({"seat_id": 987_654_321}),
        )
        .await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::NOT_FOUND, "NOT_FOUND"),
        "{reply}"
    );
    let (status, reply) = h
        .api
        .post(
            "/v1/reservations",
            Some(&alice.token),
            &queue,
            &json!({"seat_id": -1}),
        )
        .await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"),
        "{reply}"
    );
    let (status, reply) = h
        .api
        .post(
            "/v1/payments",
            Some(&alice.token),
            &queue,
            &json!({"reservation_id": 424_242}),
        )
        .await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::NOT_FOUND, "NOT_FOUND"),
        "{reply}"
    );

    // The gateway refuses an oversized body without reading it and closes
    // the connection, so this call must not leave it in the client's pool
    // for the next one (which then failed now and then with a reset).
    let huge = format!("{{\"amount\": 5, \"pad\": \"{}\"}}", "x".repeat(64 * 1024));
    let oversized = h
        .api
        .http
        .post(h.api.url(&charge_path))
        .bearer_auth(&alice.token)
        .header("content-type", "application/json")
        .header("x-queue-token", token.clone())
        .header("connection", "close")
        .body(huge)
        .send();
    let (status, reply) = Api::read(oversized.await?).await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
        "{reply}"
    );

    let (status, reply) = h.api.get("/v1/reservations/abc", &alice.token).await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"),
        "{reply}"
    );
    let (status, reply) = h
        .api
        .post(
            "/v1/users",
            None,
            &[],
            &json!({"name": "", "email": "nope"}),
        )
        .await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"),
        "{reply}"
    );
    let (status, reply) = h
        .api
        .post(
            "/v1/users",
            None,
            &[],
            &json!({"name": "a", "email": "no-at-sign"}),
        )
        .await?;
    assert_eq!(reply["error"]["field"], "email", "{status} {reply}");
    let (status, reply) = h
        .api
        .post(
            "/v1/queue/tokens",
            Some(&alice.token),
            &[],
            &json!({"schedule_id": 999_999}),
        )
        .await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::NOT_FOUND, "NOT_FOUND"),
        "{reply}"
    );
    let (status, reply) = h
        .api
        .post(
            &charge_path,
            Some(&alice.token),
            &[("Idempotency-Key", "")],
            &json!({"amount": 5}),
        )
        .await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"),
        "{reply}"
    );

    let email = format!("dup-{}@example.com", uuid::Uuid::new_v4().simple());
    let (status, _) = h
        .api
        .post(
            "/v1/users",
            None,
            &[],
            &json!({"name": "a", "email": email}),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    let (status, reply) = h
        .api
        .post(
            "/v1/users",
            None,
            &[],
            &json!({"name": "b", "email": email}),
        )
        .await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::CONFLICT, "EMAIL_TAKEN"),
        "{reply}"
    );

    let (status, reply) = h.api.get("/v1/no-such-route", &alice.token).await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::NOT_FOUND, "NOT_FOUND"),
        "{reply}"
    );
    let response = h.api.http.delete(h.api.url("/v1/users")).send().await?;
    let (status, reply) = Api::read(response).await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
        "{reply}"
    );

    assert_eq!(h.env.total_records()?, 0, "bad input publishes nothing");
    let requests: i64 = sqlx::query_scalar("SELECT count(*) FROM requests")
        .fetch_one(&h.env.pool)
        .await?;
    assert_eq!(requests, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_is_503_with_retry_after_never_202() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let mut config = GatewayConfig::local("admin-secret-token", testkit::TEST_AUTH_SECRET);
    config.common = env.common.clone();
    // Nothing listens on port 1.
    config.common.kafka_brokers = "127.0.0.1:1".into();
    config.common.kafka_produce_timeout_ms = 500;
    let h = Harness::with(env, config).await?;
    let alice = h.api.create_user("alice").await?;

    let response = h
        .api
        .http
        .post(h.api.url(&format!("/v1/users/{}/balance/charge", alice.id)))
        .bearer_auth(&alice.token)
        .json(&json!({"amount": 100}))
        .send()
        .await?;
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or("")),
        Some("1")
    );
    let (status, reply) = Api::read(response).await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::SERVICE_UNAVAILABLE, "KAFKA_UNAVAILABLE"),
        "{reply}"
    );
    // A keyed call claims its id before publishing, and gives the claim
    // back when the broker refuses: its retry is not told "in progress".
    for _ in 0..2 {
        let (status, reply) = h
            .api
            .post(
                &format!("/v1/users/{}/balance/charge", alice.id),
                Some(&alice.token),
                &[("Idempotency-Key", "while-down")],
                &json!({"amount": 100}),
            )
            .await?;
        assert_eq!(
            (status, code(&reply)),
            (StatusCode::SERVICE_UNAVAILABLE, "KAFKA_UNAVAILABLE"),
            "{reply}"
        );
    }
    let requests: i64 = sqlx::query_scalar("SELECT count(*) FROM requests")
        .fetch_one(&h.env.pool)
        .await?;
    assert_eq!(requests, 0, "an unaccepted request leaves no trace");

    let ready = h.api.http.get(h.api.url("/readyz")).send().await?;
    let (status, reply) = Api::read(ready).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{reply}");
    assert_eq!(reply["kafka"], false);
    assert_eq!(reply["database"], true);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_long_poll_wake_up() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let (status, reply) = Api::read(h.api.http.get(h.api.url("/readyz")).send().await?).await?;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (status, _) = Api::read(h.api.http.get(h.api.url("/healthz")).send().await?).await?;
    assert_eq!(status, StatusCode::OK);

    let alice = h.api.create_user("alice").await?;
    let request_id = h.api.charge(&alice, 700).await?;
    let response = h
        .api
        .http
        .get(h.api.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(response.contains("http_requests_total"), "{response}");
    assert!(
        response.contains("http_request_duration_seconds_bucket{"),
        "latencies export as histograms: {response}"
    );
    let (status, reply) = h
        .api
        .get(&format!("/v1/requests/{request_id}"), &alice.token)
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["status"], "PENDING");
    assert_eq!(reply["type"], "balance.charge");

    // Write the outcome the way a lane does and check that a long-poll
    // returns on the notification, well before its deadline.
    let pool = h.env.pool.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut tx = pool.begin().await?;
        succeed_row(&mut *tx, request_id, marked(7)).await?;
        notify_id(&mut *tx, request_id).await?;
        tx.commit().await?;
        anyhow::Ok(())
    });
    let started = Instant::now();
    let (status, reply) = h
        .api
        .get(
            &format!("/v1/requests/{request_id}?wait_ms=20000"),
            &alice.token,
        )
        .await?;
    writer.await??;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["status"], "SUCCEEDED", "{reply}");
    assert_eq!(reply["result"]["history_id"], 7);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "long-poll woke up on the outcome"
    );

    let bob = h.api.create_user("bob").await?;
    let (status, reply) = h
        .api
        .get(&format!("/v1/requests/{request_id}"), &bob.token)
        .await?;
    assert_eq!((status, code(&reply)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    let (status, _) = h
        .api
        .get(
            &format!("/v1/requests/{}", uuid::Uuid::new_v4()),
            &bob.token,
        )
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    Ok(())
}

/// Writes the row of `request_id` as SUCCEEDED with `result`, as a lane
/// does, without notifying.
/// A charge's result whose `history_id` says where the answer came from.
fn marked(history_id: i64) -> Value {
    json!({"user_id": 1, "balance": 0, "history_id": history_id})
}
const FROM_NOTIFICATION: i64 = 1;
const FROM_ROW: i64 = 2;

async fn succeed_row<'e>(
    db: impl sqlx::PgExecutor<'e>,
    request_id: uuid::Uuid,
    result: Value,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE requests SET status = 'SUCCEEDED', result = $2, completed_at = now() WHERE id = $1",
    )
    .bind(request_id)
    .bind(result)
    .execute(db)
    .await?;
    Ok(())
}

/// Sends a bare id on `request_outcomes` (what an operator sends to wake
/// long-polls after fixing a row).
async fn notify_id<'e>(
    db: impl sqlx::PgExecutor<'e>,
    request_id: uuid::Uuid,
) -> anyhow::Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(gateway::waiter::OUTCOME_CHANNEL)
        .bind(request_id.to_string())
        .execute(db)
        .await?;
    Ok(())
}

/// Sends what a lane sends on `request_outcomes` for a decided request,
/// without writing the row.
async fn notify_outcome(
    pool: &sqlx::PgPool,
    request_id: uuid::Uuid,
    user_id: i64,
) -> anyhow::Result<()> {
    let notices = [platform::db::OutcomeNotice {
        id: request_id,
        outcome: Some(platform::db::RequestView {
            request_type: "balance.charge".into(),
            user_id: Some(user_id),
            status: "SUCCEEDED".into(),
            result: Some(marked(FROM_NOTIFICATION)),
            error_code: None,
            error_message: None,
        }),
    }];
    for payload in platform::db::outcome_payloads(&notices) {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(gateway::waiter::OUTCOME_CHANNEL)
            .bind(payload)
            .execute(pool)
            .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_answer_from_notifications_and_fall_back_to_the_database() -> anyhow::Result<()>
{
    let h = Harness::start().await?;
    let alice = h.api.create_user("alice").await?;
    let bob = h.api.create_user("bob").await?;

    // 1. The outcome arrives in the notification: the long-poll answers
    //    with it, without reading the row (which this test leaves PENDING).
    let first = h.api.charge(&alice, 100).await?;
    let pool = h.env.pool.clone();
    let alice_id = alice.id;
    let lane = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        notify_outcome(&pool, first, alice_id).await
    });
    let (status, reply) = h
        .api
        .get(&format!("/v1/requests/{first}?wait_ms=3000"), &alice.token)
        .await?;
    lane.await??;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["status"], "SUCCEEDED", "{reply}");
    assert_eq!(reply["result"]["history_id"], FROM_NOTIFICATION, "{reply}");
    assert_eq!(reply["type"], "balance.charge");
    // Access is checked against what the gateway knows, as against the row.
    let (status, reply) = h
        .api
        .get(&format!("/v1/requests/{first}?wait_ms=3000"), &bob.token)
        .await?;
    assert_eq!((status, code(&reply)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    // A plain GET is the database's answer.
    let (_, reply) = h
        .api
        .get(&format!("/v1/requests/{first}"), &alice.token)
        .await?;
    assert_eq!(reply["status"], "PENDING");

    // 2. The notification is lost: the request is still known as accepted
    //    here, but that is trusted only once; the long-poll reads the row
    //    at its next check and answers well before its deadline.
    let second = h.api.charge(&alice, 200).await?;
    let pool = h.env.pool.clone();
    let lane = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        succeed_row(&pool, second, marked(FROM_ROW)).await
    });
    let started = Instant::now();
    let (status, reply) = h
        .api
        .get(
            &format!("/v1/requests/{second}?wait_ms=20000"),
            &alice.token,
        )
        .await?;
    lane.await??;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["status"], "SUCCEEDED", "{reply}");
    assert_eq!(reply["result"]["history_id"], FROM_ROW, "{reply}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a stale cache entry held the long-poll: {:?}",
        started.elapsed()
    );

    // 3. A bare id on the channel (an outcome too large to notify, or an
    //    operator after fixing a row) means "read the row": what the cache
    //    held for that request is forgotten.
    succeed_row(&h.env.pool, first, marked(FROM_ROW)).await?;
    notify_id(&h.env.pool, first).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, reply) = h
            .api
            .get(&format!("/v1/requests/{first}?wait_ms=100"), &alice.token)
            .await?;
        if reply["result"]["history_id"] == FROM_ROW {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cached outcome outlived a bare-id notification: {reply}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shop_bad_input_gets_a_stable_code_and_publishes_nothing() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let alice = h.api.create_user("alice").await?;
    let bob = h.api.create_user("bob").await?;
    let (product_id, stocks) = h
        .api
        .create_product("Tee", "tops", 9_000, &[("S", 3), ("M", 0)])
        .await?;
    let order = |items: Value| json!({ "items": items });

    for (items, why) in [
        (json!([]), "empty"),
        (
            json!([{"product_stock_id": stocks[0], "quantity": 0}]),
            "zero quantity",
        ),
        (
            json!([{"product_stock_id": stocks[0], "quantity": -2}]),
            "negative quantity",
        ),
        (
            json!([{"product_stock_id": stocks[0], "quantity": 600}, {"product_stock_id": stocks[0], "quantity": 600}]),
            "same stock twice, over 1,000 together",
        ),
    ] {
        let (status, reply) = h
            .api
            .post("/v1/orders", Some(&alice.token), &[], &order(items))
            .await?;
        assert_eq!(
            (status, code(&reply)),
            (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"),
            "{why}: {reply}"
        );
    }
    let (status, reply) = h
        .api
        .post(
            "/v1/orders",
            Some(&alice.token),
            &[],
            &order(json!([{"product_stock_id": 99_999, "quantity": 1}])),
        )
        .await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::NOT_FOUND, "NOT_FOUND"),
        "{reply}"
    );
    let (status, reply) = h
        .api
        .post(
            "/v1/orders",
            None,
            &[],
            &order(json!([{"product_stock_id": stocks[0], "quantity": 1}])),
        )
        .await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
        "{reply}"
    );

    let cart_item = format!("/v1/users/{}/cart/items/{}", alice.id, stocks[0]);
    let put = |bearer: &str, body: Value| {
        h.api
            .http
            .put(h.api.url(&cart_item))
            .bearer_auth(bearer.to_owned())
            .json(&body)
            .send()
    };
    let (status, reply) = Api::read(put(&bob.token, json!({"quantity": 1})).await?).await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::FORBIDDEN, "FORBIDDEN"),
        "{reply}"
    );
    let (status, reply) = Api::read(put(&alice.token, json!({"quantity": 1001})).await?).await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"),
        "{reply}"
    );
    let missing = h
        .api
        .http
        .put(
            h.api
                .url(&format!("/v1/users/{}/cart/items/424242", alice.id)),
        )
        .bearer_auth(&alice.token)
        .json(&json!({"quantity": 1}))
        .send()
        .await?;
    let (status, reply) = Api::read(missing).await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::NOT_FOUND, "NOT_FOUND"),
        "{reply}"
    );
    let (status, reply) = h
        .api
        .post(
            &format!("/v1/users/{}/cart/checkout", alice.id),
            Some(&alice.token),
            &[],
            &json!({}),
        )
        .await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"),
        "empty cart: {reply}"
    );
    assert_eq!(reply["error"]["field"], "cart");

    let bad_product = json!({"name": "X", "category": "c", "price": -1, "stocks": [{"size": "S", "quantity": 1}]});
    let (status, reply) = h
        .api
        .post(
            "/v1/admin/products",
            Some("admin-secret-token"),
            &[],
            &bad_product,
        )
        .await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"),
        "{reply}"
    );
    let dup_sizes = json!({"name": "X", "category": "c", "price": 1, "stocks": [{"size": "S", "quantity": 1}, {"size": "S", "quantity": 2}]});
    let (status, reply) = h
        .api
        .post(
            "/v1/admin/products",
            Some("admin-secret-token"),
            &[],
            &dup_sizes,
        )
        .await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"),
        "{reply}"
    );

    // Reads: the product with stock per size, category filter, paging.
    let (status, product) = h
        .api
        .get(&format!("/v1/products/{product_id}"), &alice.token)
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        product["stocks"],
        json!([{"id": stocks[0], "size": "S", "quantity": 3}, {"id": stocks[1], "size": "M", "quantity": 0}])
    );
    let (_, listed) = h
        .api
        .get("/v1/products?category=tops", &alice.token)
        .await?;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));
    let (_, listed) = h
        .api
        .get("/v1/products?category=shoes", &alice.token)
        .await?;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(0));
    let (status, reply) = h
        .api
        .get("/v1/stats/products/daily?date=yesterday", &alice.token)
        .await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"),
        "{reply}"
    );

    assert_eq!(
        h.env.total_records()?,
        0,
        "bad shop input publishes nothing"
    );
    Ok(())
}

/// Accepts record their PENDING rows through one writer that puts many rows
/// in one statement: every accepted id must get its own row, with its own
/// caller, topic and broker position, even when calls race (and a retried
/// idempotent call in the same batch must not fail the others).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_accepts_each_get_their_own_pending_row() -> anyhow::Result<()> {
    use futures::stream::{self, StreamExt, TryStreamExt};

    let h = Harness::start().await?;
    let mut users = Vec::new();
    for name in ["ann", "ben", "cid", "dee"] {
        users.push(h.api.create_user(name).await?);
    }
    let api = &h.api;
    let users = &users;
    let sent: Vec<(uuid::Uuid, i64)> = stream::iter(0..120usize)
        .map(|i| async move {
            // Every tenth call repeats one idempotent call of the first user.
            let repeat = i % 10 == 0;
            let user = if repeat {
                &users[0]
            } else {
                &users[i % users.len()]
            };
            let amount = if repeat { 1 } else { 1 + i };
            // A repeat racing the first call with its key is told to retry
            // (409 IDEMPOTENCY_KEY_IN_USE), as a client would.
            let (status, body) = loop {
                let mut call = api
                    .http
                    .post(api.url(&format!("/v1/users/{}/balance/charge", user.id)))
                    .bearer_auth(&user.token)
                    .json(&json!({ "amount": amount }));
                if repeat {
                    call = call.header("Idempotency-Key", "same-charge");
                }
                let (status, body) = Api::read(call.send().await?).await?;
                if status != StatusCode::CONFLICT {
                    break (status, body);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            anyhow::ensure!(status == StatusCode::ACCEPTED, "{status} {body}");
            let id = uuid::Uuid::parse_str(body["request_id"].as_str().unwrap_or(""))?;
            anyhow::Ok((id, user.id))
        })
        .buffer_unordered(60)
        .try_collect()
        .await?;

    let mut expected: std::collections::HashMap<uuid::Uuid, i64> = Default::default();
    for (id, user) in sent {
        assert_eq!(
            *expected.entry(id).or_insert(user),
            user,
            "one id, one caller"
        );
    }
    assert_eq!(expected.len(), 109, "108 fresh ids and one repeated call");
    type Row = (uuid::Uuid, String, Option<i64>, String, String, i32, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, type, user_id, status, topic, kafka_partition, kafka_offset FROM requests",
    )
    .fetch_all(&h.env.pool)
    .await?;
    assert_eq!(rows.len(), expected.len(), "one row per accepted id");
    let mut positions = std::collections::HashSet::new();
    for (id, kind, user, status, topic, partition, offset) in rows {
        assert_eq!(user, expected.get(&id).copied(), "row {id} has its caller");
        assert_eq!(
            (kind.as_str(), status.as_str()),
            ("balance.charge", "PENDING")
        );
        assert!(topic.ends_with("charge-requests"), "{topic}");
        assert!(offset >= 0);
        positions.insert((partition, offset));
    }
    // Rows matched to the wrong ids would show as shared positions.
    assert_eq!(
        positions.len(),
        expected.len(),
        "each row has its own record"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_is_one_request_for_one_body_even_when_calls_race() -> anyhow::Result<()>
{
    let h = Harness::start().await?;
    let alice = h.api.create_user("alice").await?;
    let path = format!("/v1/users/{}/balance/charge", alice.id);
    let charge = |key: &'static str, amount: i64| {
        let (api, path, token) = (&h.api, path.clone(), alice.token.clone());
        async move {
            api.post(
                &path,
                Some(&token),
                &[("Idempotency-Key", key)],
                &json!({"amount": amount}),
            )
            .await
        }
    };

    // A retry with the same body is the same request; another body is refused.
    let (status, first) = charge("once", 100).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let (status, again) = charge("once", 100).await?;
    assert_eq!(
        (status, &again["request_id"]),
        (StatusCode::ACCEPTED, &first["request_id"])
    );
    let (status, reply) = charge("once", 200).await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED"),
        "{reply}"
    );

    // Twenty racing calls with one key and twenty bodies: one is published;
    // every other gets that request back, a refusal, or "in progress".
    let answers: Vec<(StatusCode, Value)> =
        futures::future::try_join_all((1..=20).map(|amount| charge("raced", amount))).await?;
    let accepted: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .map(|(_, body)| &body["request_id"])
        .collect();
    assert!(!accepted.is_empty(), "{answers:?}");
    assert!(accepted.iter().all(|id| *id == accepted[0]), "{answers:?}");
    for (status, body) in &answers {
        assert!(
            *status == StatusCode::ACCEPTED
                || (*status == StatusCode::UNPROCESSABLE_ENTITY
                    && code(body) == "IDEMPOTENCY_KEY_REUSED")
                || (*status == StatusCode::CONFLICT && code(body) == "IDEMPOTENCY_KEY_IN_USE"),
            "{status} {body}"
        );
    }
    let topic = h.env.common.topics().name(schemas::Topic::ChargeRequests);
    let raced_id = accepted[0].as_str().unwrap_or_default().to_owned();
    let published = testkit::topics::read_all(&h.env.common, &topic)?
        .into_iter()
        .filter(|r| r.header(schemas::HEADER_REQUEST_ID) == Some(raced_id.as_str()))
        .count();
    assert_eq!(published, 1, "one key, one published request");

    // A keyed call the broker refused leaves no claim behind: its retry
    // publishes (covered with a dead broker in the 503 test); a claim that
    // is never acknowledged blocks retries only briefly.
    let requests: i64 = sqlx::query_scalar("SELECT count(*) FROM requests")
        .fetch_one(&h.env.pool)
        .await?;
    assert_eq!(requests, 2, "one row per key");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_are_refused_with_the_field_named() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    // NUL, and any other control character in a text field.
    for name in ["a\u{0}b", "tab\there", "bell\u{7}"] {
        let (status, reply) = h
            .api
            .post(
                "/v1/users",
                None,
                &[],
                &json!({"name": name, "email": "nul@example.com"}),
            )
            .await?;
        assert_eq!(
            (status, code(&reply)),
            (StatusCode::BAD_REQUEST, "INVALID_TEXT"),
            "{name:?}: {reply}"
        );
        assert_eq!(reply["error"]["field"], "name");
    }
    let (status, reply) = h
        .api
        .post(
            "/v1/admin/products",
            Some(&h.api.admin_token),
            &[],
            &json!({"name": "Tee", "category": "tops", "price": 1000,
                    "stocks": [{"size": "M", "quantity": 1}, {"size": "L\u{0}", "quantity": 1}]}),
        )
        .await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::BAD_REQUEST, "INVALID_TEXT"),
        "{reply}"
    );
    assert_eq!(reply["error"]["field"], "stocks[1].size");
    let response = h
        .api
        .http
        .get(h.api.url("/v1/products?category=%00"))
        .send()
        .await?;
    let (status, reply) = Api::read(response).await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::BAD_REQUEST, "INVALID_TEXT"),
        "{reply}"
    );
    // An escaped backslash before "u0000" is text, not a NUL.
    let (status, reply) = h
        .api
        .post(
            "/v1/users",
            None,
            &[],
            &json!({"name": "a\\u0000b", "email": "text@example.com"}),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&h.env.pool)
        .await?;
    assert_eq!(users, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_its_413_even_when_the_client_sends_it_whole() -> anyhow::Result<()>
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start().await?;
    let address = h.api.base.trim_start_matches("http://").to_owned();
    // Within the bounded drain (limit + 1 MiB). A client over a network is
    // still writing when the server answers; one that stops reading and
    // closes makes the client's next write fail.
    let body = format!(
        "{{\"name\": \"{}\", \"email\": \"big@example.com\"}}",
        "x".repeat(256 * 1024)
    );
    // What Python's httpx and many JVM clients do: write the whole request,
    // then read the answer, and give up if the write fails.
    for _ in 0..3 {
        let stream = tokio::net::TcpStream::connect(&address).await?;
        let (mut reader, mut writer) = stream.into_split();
        let head = format!(
            "POST /v1/users HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let request: Vec<u8> = head.into_bytes().into_iter().chain(body.bytes()).collect();
        let written = tokio::spawn(async move {
            for chunk in request.chunks(16 * 1024) {
                writer.write_all(chunk).await?;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            writer.flush().await?;
            anyhow::Ok(writer)
        });
        let written = tokio::time::timeout(Duration::from_secs(10), written).await??;
        // Kept open until the answer is read: a half-closed connection is
        // one the server may drop.
        let _writer =
            written.map_err(|e| anyhow::anyhow!("the client could not send its body: {e}"))?;
        let mut answer = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut answer)).await?;
        read.map_err(|e| anyhow::anyhow!("the client saw {e} instead of the 413"))?;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("PAYLOAD_TOO_LARGE"), "{answer}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_are_capped_and_an_abandoned_one_frees_its_place() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let mut config = GatewayConfig::local("admin-secret-token", testkit::TEST_AUTH_SECRET);
    config.common = env.common.clone();
    config.long_poll_max = 1;
    let h = Harness::with(env, config).await?;
    let alice = h.api.create_user("alice").await?;
    // No workers: the request stays PENDING, so a long-poll waits it out.
    let id = h.api.charge(&alice, 10).await?;
    let path = format!("/v1/requests/{id}?wait_ms=2000");
    let timed_poll = || {
        let (api, path, token) = (&h.api, path.clone(), alice.token.clone());
        async move {
            let started = Instant::now();
            let (status, body) = api.get(&path, &token).await?;
            assert_eq!(
                (status, &body["status"]),
                (StatusCode::OK, &json!("PENDING"))
            );
            anyhow::Ok(started.elapsed())
        }
    };

    // A client that gives up mid-wait: its place must be freed.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()?;
    let gave_up = impatient
        .get(h.api.url(&format!("/v1/requests/{id}?wait_ms=10000")))
        .bearer_auth(&alice.token)
        .send()
        .await;
    assert!(gave_up.is_err(), "the client timed out");
    let waited = testkit::eventually(
        "the abandoned place to be freed",
        Duration::from_secs(10),
        || async {
            let waited = timed_poll().await?;
            Ok((waited >= Duration::from_millis(1500)).then_some(waited))
        },
    )
    .await?;
    assert!(waited < Duration::from_secs(5));

    // With the one place taken, a second long-poll is answered at once.
    let (held, second) = tokio::join!(timed_poll(), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        timed_poll().await
    });
    assert!(held? >= Duration::from_millis(1500));
    assert!(
        second? < Duration::from_millis(1000),
        "a second long-poll waited past the cap"
    );
    Ok(())
}

/// The contract's input rules at the edge: lines naming one stock are
/// merged, integers may be written `2.0`, lists page by cursor until
/// `next` is null.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_keeps_the_documented_input_rules() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let alice = h.api.create_user("alice").await?;
    let (_, stocks) = h
        .api
        .create_product("Cap", "hats", 1_000, &[("S", 10)])
        .await?;
    let (status, reply) = h
        .api
        .post(
            "/v1/orders",
            Some(&alice.token),
            &[],
            &json!({"items": [{"product_stock_id": stocks[0], "quantity": 1},
                              {"product_stock_id": stocks[0], "quantity": 2.0}]}),
        )
        .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    let records = testkit::topics::read_all(
        &h.env.common,
        &h.env.common.topics().name(schemas::Topic::OrderRequests),
    )?;
    assert_eq!(records.len(), 1);
    let published = records[0].json().unwrap_or_default();
    assert_eq!(
        published["payload"]["items"],
        json!([{"product_stock_id": stocks[0], "quantity": 3}]),
        "one line per stock, quantities added"
    );
    let (status, reply) = h
        .api
        .post(
            "/v1/orders",
            Some(&alice.token),
            &[],
            &json!({"items": [{"product_stock_id": stocks[0], "quantity": 1.5}]}),
        )
        .await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED")
    );

    for i in 0..5 {
        h.api
            .create_product(&format!("P{i}"), "pages", 100, &[("S", 1)])
            .await?;
    }
    let mut seen = Vec::new();
    let mut path = "/v1/products?category=pages&limit=2".to_owned();
    loop {
        let (status, page) = h.api.get(&path, &alice.token).await?;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().cloned().unwrap_or_default();
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .map(|p| p["name"].as_str().unwrap_or("").to_owned()),
        );
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/products?category=pages&limit=2&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ["P0", "P1", "P2", "P3", "P4"]);
    let (status, reply) = h
        .api
        .get("/v1/products?cursor=not-a-cursor", &alice.token)
        .await?;
    assert_eq!(
        (status, code(&reply)),
        (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED")
    );
    assert_eq!(reply["error"]["field"], "cursor");

    // `wait_ms` is an int64 of 0 or more, as documented (found by
    // schemathesis: a number past int64 was taken as a u64).
    let id = uuid::Uuid::new_v4();
    for wait in ["-1", "9223372036854775808", "15548317028459726848"] {
        let (status, reply) = h
            .api
            .get(&format!("/v1/requests/{id}?wait_ms={wait}"), &alice.token)
            .await?;
        assert_eq!(
            (status, code(&reply)),
            (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"),
            "wait_ms={wait}: {reply}"
        );
    }
    let (status, _) = h
        .api
        .get(
            &format!("/v1/requests/{id}?wait_ms=9223372036854775807"),
            &alice.token,
        )
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "the largest int64 is taken");
    Ok(())
}

/// A running gateway serves the document the code generates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_its_openapi_document() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let served = reqwest::get(h.api.url("/openapi.json")).await?;
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.text().await?, gateway::openapi::document_json());
    Ok(())
}
