//! Accepted requests: 503 (never 202) on a dead broker, signed ids that
//! answer PENDING before any row, one PENDING row per accepted id still
//! undecided after the delay, `Idempotency-Key` semantics under races, and
//! the outcome long-poll (woken by notifications, capped, falling back to
//! the database).

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use api::status::RequestStatus;
use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::api::User;
use testkit::stack::{Options, Stack};
use testkit::{scalar, Api};
use uuid::Uuid;

use common::{assert_error, charge_path, code, gateway};

/// A charge's result whose `history_id` says where the answer came from.
fn marked(history_id: i64) -> Value {
    json!({"user_id": 1, "balance": 0, "history_id": history_id})
}
const FROM_NOTIFICATION: i64 = 1;
const FROM_ROW: i64 = 2;

/// Writes the row of `request_id` (a charge of `user_id`) as SUCCEEDED
/// with `result`, as a lane does (whether or not the gateway wrote a
/// PENDING row), without notifying.
async fn succeed_row<'e>(
    db: impl sqlx::PgExecutor<'e>,
    request_id: Uuid,
    user_id: i64,
    result: Value,
) -> anyhow::Result<()> {
    sqlx::query!(
        "INSERT INTO requests (id, type, user_id, status, result, completed_at)
         VALUES ($1, 'balance.charge', $2, 'SUCCEEDED', $3, now())
         ON CONFLICT (id) DO UPDATE SET status = 'SUCCEEDED', result = EXCLUDED.result,
             completed_at = now()",
        request_id,
        user_id,
        result,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Sends `payload` on `request_outcomes`: a lane's outcomes, or a bare id
/// (what an operator sends to wake long-polls after fixing a row).
async fn notify<'e>(db: impl sqlx::PgExecutor<'e>, payload: &str) -> anyhow::Result<()> {
    sqlx::query!(
        "SELECT pg_notify($1, $2)",
        gateway::waiter::OUTCOME_CHANNEL,
        payload,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Sends what a lane sends on `request_outcomes` for a decided request,
/// without writing the row.
async fn notify_outcome(pool: &sqlx::PgPool, request_id: Uuid, user_id: i64) -> anyhow::Result<()> {
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
        notify(pool, &payload).await?;
    }
    Ok(())
}

/// The outcome of request `id` as `user` sees it: at once when `wait_ms`
/// is 0 (a plain GET), else long-polled for up to `wait_ms`.
async fn outcome(
    h: &Stack,
    user: &User,
    id: Uuid,
    wait_ms: u64,
) -> anyhow::Result<(StatusCode, Value)> {
    let wait = match wait_ms {
        0 => String::new(),
        ms => format!("?wait_ms={ms}"),
    };
    h.api
        .get(&format!("/v1/requests/{id}{wait}"), &user.token)
        .await
}

/// Long-polls request `id` as `user` (for up to `wait_ms`) while `lane`,
/// started a moment later so that the poll waits already, decides it.
/// Returns the answer, which must be SUCCEEDED, and how long it took.
async fn outcome_while(
    h: &Stack,
    user: &User,
    id: Uuid,
    wait_ms: u64,
    lane: impl Future<Output = anyhow::Result<()>> + Send + 'static,
) -> anyhow::Result<(Value, Duration)> {
    let lane = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        lane.await
    });
    let started = Instant::now();
    let (status, reply) = outcome(h, user, id, wait_ms).await?;
    lane.await??;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["status"], "SUCCEEDED", "{reply}");
    Ok((reply, started.elapsed()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_is_503_with_retry_after_never_202() -> anyhow::Result<()> {
    let h = Stack::start(Options::without_workers().gateway(|config| {
        // Nothing listens on port 1.
        config.common.kafka_brokers = "127.0.0.1:1".into();
        config.common.kafka_produce_timeout_ms = 500;
    }))
    .await?;
    let alice = h.api.create_user("alice").await?;

    let response = h
        .api
        .http
        .post(h.api.url(&charge_path(&alice)))
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
    assert_error!(
        Api::read(response).await?,
        StatusCode::SERVICE_UNAVAILABLE,
        "KAFKA_UNAVAILABLE"
    );
    // A keyed call claims its id before publishing. Its produce timed out,
    // which cannot tell a record never sent from an acknowledgement lost:
    // the claim stays, open to its retry at once (not "in progress"), which
    // publishes again under the same id.
    for attempt in 1..=2 {
        assert_error!(
            h.api
                .post(
                    &charge_path(&alice),
                    Some(&alice.token),
                    &[("Idempotency-Key", "while-down")],
                    &json!({"amount": 100}),
                )
                .await?,
            StatusCode::SERVICE_UNAVAILABLE,
            "KAFKA_UNAVAILABLE",
            "attempt {attempt}"
        );
    }
    assert_eq!(
        scalar!(
            h,
            "SELECT count(*) FROM requests WHERE status = 'PENDING' AND kafka_offset IS NULL"
        )
        .await?,
        1,
        "the keyed call's claim, kept for its retry; the unkeyed call leaves no trace"
    );

    let (status, reply) = h.api.get_public("/readyz").await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{reply}");
    assert_eq!(reply["kafka"], false);
    assert_eq!(reply["database"], true);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_long_poll_wake_up() -> anyhow::Result<()> {
    let h = gateway().await?;
    let (status, reply) = h.api.get_public("/readyz").await?;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (status, _) = h.api.get_public("/healthz").await?;
    assert_eq!(status, StatusCode::OK);

    let alice = h.api.create_user("alice").await?;
    let request_id = h.api.charge(&alice, 700).await?;
    let response = h.api.metrics().await?;
    assert!(response.contains("http_requests_total"), "{response}");
    assert!(
        response.contains("http_request_duration_seconds_bucket{"),
        "latencies export as histograms: {response}"
    );
    let (status, reply) = outcome(&h, &alice, request_id, 0).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["status"], "PENDING");
    assert_eq!(reply["type"], "balance.charge");

    // Write the outcome the way a lane does and check that a long-poll
    // returns on the notification, well before its deadline.
    let (pool, alice_id) = (h.env.pool.clone(), alice.id);
    let lane = async move {
        let mut tx = pool.begin().await?;
        succeed_row(&mut *tx, request_id, alice_id, marked(7)).await?;
        notify(&mut *tx, &request_id.to_string()).await?;
        tx.commit().await?;
        anyhow::Ok(())
    };
    let (reply, took) = outcome_while(&h, &alice, request_id, 20_000, lane).await?;
    assert_eq!(reply["result"]["history_id"], 7);
    assert!(
        took < Duration::from_secs(10),
        "long-poll woke up on the outcome"
    );

    let bob = h.api.create_user("bob").await?;
    assert_error!(
        outcome(&h, &bob, request_id, 0).await?,
        StatusCode::FORBIDDEN,
        "FORBIDDEN"
    );
    let (status, _) = outcome(&h, &bob, Uuid::new_v4(), 0).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_answer_from_notifications_and_fall_back_to_the_database() -> anyhow::Result<()>
{
    let h = gateway().await?;
    let alice = h.api.create_user("alice").await?;
    let bob = h.api.create_user("bob").await?;

    // 1. The outcome arrives in the notification: the long-poll answers
    //    with it, without reading the row (which this test leaves PENDING).
    let first = h.api.charge(&alice, 100).await?;
    let (pool, alice_id) = (h.env.pool.clone(), alice.id);
    let lane = async move { notify_outcome(&pool, first, alice_id).await };
    let (reply, _) = outcome_while(&h, &alice, first, 3000, lane).await?;
    assert_eq!(reply["result"]["history_id"], FROM_NOTIFICATION, "{reply}");
    assert_eq!(reply["type"], "balance.charge");
    // Access is checked against what the gateway knows, as against the row.
    assert_error!(
        outcome(&h, &bob, first, 3000).await?,
        StatusCode::FORBIDDEN,
        "FORBIDDEN"
    );
    // A plain GET is the database's answer (no row yet: the signed id's).
    let (_, reply) = outcome(&h, &alice, first, 0).await?;
    assert_eq!(reply["status"], "PENDING");

    // 2. The notification is lost: the request is still known as accepted
    //    here, but that is trusted only once; the long-poll reads the row
    //    at its next check and answers well before its deadline.
    let second = h.api.charge(&alice, 200).await?;
    let pool = h.env.pool.clone();
    let lane = async move { succeed_row(&pool, second, alice_id, marked(FROM_ROW)).await };
    let (reply, took) = outcome_while(&h, &alice, second, 20_000, lane).await?;
    assert_eq!(reply["result"]["history_id"], FROM_ROW, "{reply}");
    assert!(
        took < Duration::from_secs(10),
        "a stale cache entry held the long-poll: {took:?}"
    );

    // 3. A bare id on the channel (an outcome too large to notify, or an
    //    operator after fixing a row) means "read the row": what the cache
    //    held for that request is forgotten.
    succeed_row(&h.env.pool, first, alice.id, marked(FROM_ROW)).await?;
    notify(&h.env.pool, &first.to_string()).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, reply) = outcome(&h, &alice, first, 100).await?;
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

/// An unkeyed call's id is signed for its caller. On a gateway that did not
/// accept the call (here: one with its cache off, so it knows nothing it
/// did not read), before any row, the caller's polls (plain and long)
/// answer PENDING, and anyone else's, the admin's and a forged id's 404; so
/// do ids past the retention horizon. Once the row exists it says whose
/// the request is (403 for another user).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_id_answers_pending_to_its_caller_alone_before_any_row() -> anyhow::Result<()> {
    let options = Options::without_workers().gateway(|c| {
        c.pending_row_after_ms = 60_000;
        c.outcome_cache_entries = 0;
    });
    let h = Stack::start(options).await?;
    let alice = h.api.create_user("alice").await?;
    let bob = h.api.create_user("bob").await?;
    let id = h.api.charge(&alice, 10).await?;
    assert_eq!(
        scalar!(h, "SELECT count(*) FROM requests").await?,
        0,
        "no row written at accept"
    );

    for wait in [0, 300] {
        let (status, reply) = outcome(&h, &alice, id, wait).await?;
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert_eq!(
            (&reply["status"], &reply["type"], &reply["request_id"]),
            (&json!("PENDING"), &json!("balance.charge"), &json!(id)),
            "wait {wait}"
        );
        assert_error!(
            outcome(&h, &bob, id, wait).await?,
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "bob, wait {wait}"
        );
    }
    let path = format!("/v1/requests/{id}");
    assert_error!(
        h.api.get(&path, &h.api.admin_token).await?,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "the admin"
    );
    let mut forged = *id.as_bytes();
    forged[15] ^= 1;
    assert_error!(
        outcome(&h, &alice, Uuid::from_bytes(forged), 0).await?,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "a forged id"
    );

    // Ids signed for alice with the stack's secret and never used: PENDING
    // while younger than `REQUEST_RETENTION_DAYS` (7), 404 past it, when
    // the row would have been pruned.
    let ids = gateway::auth::request_ids::RequestIds::new(testkit::TEST_AUTH_SECRET, []);
    let charge = schemas::Request::ChargeBalance(schemas::requests::ChargeBalance {
        user_id: alice.id,
        amount: 1,
    });
    let days_ago = |days: u64| std::time::SystemTime::now() - Duration::from_secs(days * 86_400);
    let recent = ids.issue_at(days_ago(6), alice.id, &charge);
    let (status, reply) = outcome(&h, &alice, recent, 0).await?;
    assert_eq!(
        (status, &reply["status"]),
        (StatusCode::OK, &json!("PENDING"))
    );
    assert_error!(
        outcome(&h, &alice, ids.issue_at(days_ago(8), alice.id, &charge), 0).await?,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "past the horizon"
    );

    // Decided: the row says whose it is.
    succeed_row(&h.env.pool, id, alice.id, marked(FROM_ROW)).await?;
    assert_error!(
        outcome(&h, &bob, id, 0).await?,
        StatusCode::FORBIDDEN,
        "FORBIDDEN"
    );
    let (status, reply) = h.api.get(&path, &h.api.admin_token).await?;
    assert_eq!(
        (status, &reply["status"]),
        (StatusCode::OK, &json!("SUCCEEDED"))
    );
    Ok(())
}

/// On the gateway that accepted an unkeyed call, what it remembers of the
/// call answers before any row: PENDING to the caller and the admin, 403 to
/// another user. A request still undecided `PENDING_ROW_AFTER_MS` after its
/// 202 gets its row, dated when it was accepted; one whose outcome was
/// notified sooner gets none from the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecided_requests_get_their_row_after_the_delay_and_decided_ones_none(
) -> anyhow::Result<()> {
    let h = Stack::start(Options::without_workers().gateway(|c| c.pending_row_after_ms = 1_500))
        .await?;
    let alice = h.api.create_user("alice").await?;
    let bob = h.api.create_user("bob").await?;
    let before = chrono::Utc::now();
    let undecided = h.api.charge(&alice, 10).await?;
    let decided = h.api.charge(&alice, 20).await?;
    let accepted = chrono::Utc::now();
    // A lane decided the second one: its notification reaches the gateway
    // (the row is the lane's to write; this test leaves it out).
    notify_outcome(&h.env.pool, decided, alice.id).await?;

    let path = format!("/v1/requests/{undecided}");
    for wait in [0, 300] {
        let (status, reply) = outcome(&h, &alice, undecided, wait).await?;
        assert_eq!(
            (status, &reply["status"]),
            (StatusCode::OK, &json!("PENDING")),
            "wait {wait}"
        );
        assert_error!(
            outcome(&h, &bob, undecided, wait).await?,
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "bob, wait {wait}"
        );
    }
    let (status, reply) = h.api.get(&path, &h.api.admin_token).await?;
    assert_eq!(
        (status, &reply["status"]),
        (StatusCode::OK, &json!("PENDING")),
        "{reply}"
    );

    let row = testkit::eventually(
        "the undecided request's row",
        Duration::from_secs(10),
        || async {
            Ok(sqlx::query!(
                r#"SELECT user_id, status, accepted_at, topic AS "topic!", kafka_offset AS "offset!"
                   FROM requests WHERE id = $1"#,
                undecided
            )
            .fetch_optional(&h.env.pool)
            .await?)
        },
    )
    .await?;
    assert_eq!(
        (row.user_id, row.status.as_str()),
        (Some(alice.id), "PENDING")
    );
    assert!(row.topic.ends_with("charge-requests"), "{}", row.topic);
    assert!(row.offset >= 0);
    assert!(
        before - chrono::TimeDelta::milliseconds(1) <= row.accepted_at && row.accepted_at <= accepted,
        "accepted_at {} is when the call was accepted ({before} to {accepted}), not when the row was written",
        row.accepted_at
    );
    assert_eq!(
        scalar!(h, "SELECT count(*) FROM requests WHERE id = $1", decided).await?,
        0,
        "a request decided before its delay gets no row from the gateway"
    );
    Ok(())
}

/// Accepts record their PENDING rows through one writer that puts many rows
/// in one statement: every accepted id must get its own row, with its own
/// caller, topic and broker position, even when calls race (and a retried
/// idempotent call in the same batch must not fail the others). Rows are
/// written at once here (`PENDING_ROW_AFTER_MS=0`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_accepts_each_get_their_own_pending_row() -> anyhow::Result<()> {
    use futures::stream::{self, StreamExt, TryStreamExt};

    let h =
        Stack::start(Options::without_workers().gateway(|c| c.pending_row_after_ms = 0)).await?;
    let mut users = Vec::new();
    for name in ["ann", "ben", "cid", "dee"] {
        users.push(h.api.create_user(name).await?);
    }
    let api = &h.api;
    let users = &users;
    let sent: Vec<(Uuid, i64)> = stream::iter(0..120usize)
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
                    .post(api.url(&charge_path(user)))
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
            let id = Uuid::parse_str(body["request_id"].as_str().unwrap_or(""))?;
            anyhow::Ok((id, user.id))
        })
        .buffer_unordered(60)
        .try_collect()
        .await?;

    let mut expected: std::collections::HashMap<Uuid, i64> = Default::default();
    for (id, user) in sent {
        assert_eq!(
            *expected.entry(id).or_insert(user),
            user,
            "one id, one caller"
        );
    }
    assert_eq!(expected.len(), 109, "108 fresh ids and one repeated call");
    testkit::eventually("a row per accepted id", Duration::from_secs(10), || async {
        let rows = scalar!(h, "SELECT count(*) FROM requests").await?;
        Ok((rows >= expected.len() as i64).then_some(()))
    })
    .await?;
    let rows = sqlx::query!(
        r#"SELECT id, type AS request_type, user_id, status AS "status: RequestStatus",
                topic AS "topic!", kafka_partition AS "partition!", kafka_offset AS "offset!"
         FROM requests"#
    )
    .fetch_all(&h.env.pool)
    .await?;
    assert_eq!(rows.len(), expected.len(), "one row per accepted id");
    let mut positions = std::collections::HashSet::new();
    for row in rows {
        assert_eq!(
            row.user_id,
            expected.get(&row.id).copied(),
            "row {} has its caller",
            row.id
        );
        assert_eq!(
            (row.request_type.as_str(), row.status),
            ("balance.charge", RequestStatus::Pending)
        );
        assert!(row.topic.ends_with("charge-requests"), "{}", row.topic);
        assert!(row.offset >= 0);
        positions.insert((row.partition, row.offset));
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
    let h = gateway().await?;
    let alice = h.api.create_user("alice").await?;
    let path = charge_path(&alice);
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
    assert_error!(
        charge("once", 200).await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED"
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
    assert_eq!(
        scalar!(h, "SELECT count(*) FROM requests").await?,
        2,
        "one row per key"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_are_capped_and_an_abandoned_one_frees_its_place() -> anyhow::Result<()> {
    let options = Options::without_workers().gateway(|config| config.long_poll_max = 1);
    let h = Stack::start(options).await?;
    let alice = h.api.create_user("alice").await?;
    // No workers: the request stays PENDING, so a long-poll waits it out.
    let id = h.api.charge(&alice, 10).await?;
    let timed_poll = || {
        let (h, alice) = (&h, &alice);
        async move {
            let started = Instant::now();
            let (status, body) = outcome(h, alice, id, 2000).await?;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keyed_call_answered_503_while_the_broker_froze_keeps_its_id_and_one_effect(
) -> anyhow::Result<()> {
    // A broker of this test's own, to freeze.
    let broker = testkit::broker::OwnBroker::start().await?;
    let h = Stack::start(
        Options::default()
            .brokers(broker.brokers.clone())
            .gateway(|config| config.common.kafka_produce_timeout_ms = 2_000),
    )
    .await?;
    let alice = h.api.create_user("alice").await?;
    h.api.charged(&alice, 100).await?;
    let path = charge_path(&alice);
    let body = json!({"amount": 500});
    let keyed = || {
        h.api.post(
            &path,
            Some(&alice.token),
            &[("Idempotency-Key", "while-frozen")],
            &body,
        )
    };

    // The record reaches the frozen broker's socket; its acknowledgement
    // does not come back in time.
    broker.freeze()?;
    let answer = keyed().await;
    broker.resume()?;
    assert_error!(
        answer?,
        StatusCode::SERVICE_UNAVAILABLE,
        "KAFKA_UNAVAILABLE"
    );
    // Thawed, the broker writes it and the lane applies it.
    testkit::wait_until(
        "the charge answered 503 to be applied",
        Duration::from_secs(60),
        || h.api.balance(&alice),
        |balance| *balance == 600,
    )
    .await?;
    // The retry with the same key and body gets the request's id and its
    // outcome, not "key reused", and nothing is charged twice.
    let (status, body) = keyed().await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "SUCCEEDED", "{body}");
    let id: Uuid = serde_json::from_value(body["request_id"].clone())?;
    h.api.succeeded(&alice, id).await?;
    assert_eq!(h.api.balance(&alice).await?, 600, "one charge");
    h.stop().await
}
