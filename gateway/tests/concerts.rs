//! Concerts, schedules, seats and the waiting queue: a hold needs the
//! caller's own ACTIVE queue token, and a refused hold publishes nothing.

mod common;

use api::status::QueueStatus;
use reqwest::StatusCode;
use serde_json::json;

use common::{assert_error, gateway, seat_and_users};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_token_is_required_active_and_the_callers_own() -> anyhow::Result<()> {
    let h = gateway().await?;
    let (schedule_id, seat_id, alice, bob) = seat_and_users(&h).await?;
    let body = json!({"seat_id": seat_id});
    let hold = |queue_token: &str| {
        let queue_token = queue_token.to_owned();
        let (h, alice, body) = (&h, &alice, &body);
        async move {
            h.api
                .post(
                    "/v1/reservations",
                    Some(&alice.token),
                    &[("X-Queue-Token", &queue_token)],
                    body,
                )
                .await
        }
    };

    assert_error!(
        h.api.post_as(&alice, "/v1/reservations", &body).await?,
        StatusCode::UNAUTHORIZED,
        "QUEUE_TOKEN_REQUIRED"
    );

    let alice_token = h.api.join_queue(&alice, schedule_id).await?;
    let status_body = h.api.queue_status(&alice, &alice_token).await?;
    assert_eq!(status_body.status, QueueStatus::Waiting);
    assert_eq!(status_body.position, Some(1));
    assert_error!(
        hold(&alice_token).await?,
        StatusCode::FORBIDDEN,
        "QUEUE_TOKEN_INVALID",
        "waiting token"
    );

    let bob_token = h.api.join_queue(&bob, schedule_id).await?;
    assert_eq!(
        h.api.queue_status(&bob, &bob_token).await?.position,
        Some(2)
    );
    h.activate(&bob_token).await?;
    assert_error!(
        hold(&bob_token).await?,
        StatusCode::FORBIDDEN,
        "QUEUE_TOKEN_INVALID",
        "another user's token"
    );
    assert_error!(
        h.api
            .get(&format!("/v1/queue/tokens/{bob_token}"), &alice.token)
            .await?,
        StatusCode::FORBIDDEN,
        "FORBIDDEN"
    );
    assert_error!(
        hold("not-a-uuid").await?,
        StatusCode::FORBIDDEN,
        "QUEUE_TOKEN_INVALID"
    );

    assert_eq!(h.env.total_records()?, 0, "refused calls publish nothing");

    // The same call with the caller's ACTIVE token is accepted and published.
    h.activate(&alice_token).await?;
    let (status, reply) = hold(&alice_token).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    assert_eq!(h.env.total_records()?, 1);

    // A keyed retry is answered from the first call only when it too
    // carries a well-formed token: the header is checked before the key.
    let keyed = |headers: &'static [(&'static str, &'static str)]| {
        let (h, alice, body) = (&h, &alice, &body);
        async move {
            h.api
                .post("/v1/reservations", Some(&alice.token), headers, body)
                .await
        }
    };
    let (status, first) = h
        .api
        .post(
            "/v1/reservations",
            Some(&alice.token),
            &[
                ("Idempotency-Key", "hold-once"),
                ("X-Queue-Token", &alice_token),
            ],
            &body,
        )
        .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_error!(
        keyed(&[("Idempotency-Key", "hold-once")]).await?,
        StatusCode::UNAUTHORIZED,
        "QUEUE_TOKEN_REQUIRED"
    );
    assert_error!(
        keyed(&[("Idempotency-Key", "hold-once"), ("X-Queue-Token", "nope")]).await?,
        StatusCode::FORBIDDEN,
        "QUEUE_TOKEN_INVALID"
    );
    assert_eq!(h.env.total_records()?, 2);
    Ok(())
}
