//! The client's retry policy against a local server that answers as the
//! gateway does when it cannot accept (503 with `Retry-After`, the contract's
//! error body). The gateway's own 503s are covered by the fault tests; this
//! pins what the client does with them.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use client::api::users::Charge;
use client::Client;

/// Serves `/v1/users/1/balance/charge`: 503 (`Retry-After: 1`) for the
/// first `refusals` calls, then 202; records the `Idempotency-Key` of
/// every call.
async fn gateway(
    refusals: u32,
) -> anyhow::Result<(String, Arc<AtomicU32>, Arc<std::sync::Mutex<Vec<String>>>)> {
    let calls = Arc::new(AtomicU32::new(0));
    let keys = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (c, k) = (calls.clone(), keys.clone());
    let app = Router::new().route(
        "/v1/users/1/balance/charge",
        post(move |headers: HeaderMap| {
            let (calls, keys) = (c.clone(), k.clone());
            async move {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                let key = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                keys.lock().expect("keys").push(key);
                if n < refusals {
                    let body = r#"{"error":{"code":"KAFKA_UNAVAILABLE","message":"try again"}}"#;
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [("retry-after", "1"), ("content-type", "application/json")],
                        body,
                    )
                        .into_response();
                }
                let body =
                    r#"{"request_id":"0190a6f0-0000-7000-8000-000000000001","status":"PENDING"}"#;
                (
                    StatusCode::ACCEPTED,
                    [("retry-after", "0"), ("content-type", "application/json")],
                    body,
                )
                    .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((base, calls, keys))
}

#[tokio::test]
async fn a_patient_client_waits_out_503s_per_retry_after_under_one_key() -> anyhow::Result<()> {
    let (base, calls, keys) = gateway(2).await?;
    let client = Client::new(&base)
        .patient(Duration::from_secs(30))
        .with_token("t");
    let started = Instant::now();
    let submitted = client.charge(1, &Charge { amount: 5 }).await?;
    assert_eq!(submitted.retried_503, 2);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // Two waits of `Retry-After: 1`.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let keys = keys.lock().expect("keys").clone();
    assert!(!keys[0].is_empty(), "a patient client keys its writes");
    assert!(
        keys.iter().all(|k| k == &keys[0]),
        "one key for every repeat: {keys:?}"
    );
    Ok(())
}

/// The error of a charge `client` gives up on: the gateway's 503.
async fn unavailable(client: &Client) -> client::Error {
    let error = client
        .charge(1, &Charge { amount: 5 })
        .await
        .expect_err("refused");
    assert_eq!(
        error.status(),
        Some(reqwest::StatusCode::SERVICE_UNAVAILABLE)
    );
    error
}

#[tokio::test]
async fn an_impatient_client_shows_the_503_with_its_code() -> anyhow::Result<()> {
    let (base, calls, keys) = gateway(1).await?;
    let client = Client::new(&base).with_token("t");
    let error = unavailable(&client).await;
    assert_eq!(error.code(), Some("KAFKA_UNAVAILABLE"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(keys.lock().expect("keys").as_slice(), [String::new()]);
    Ok(())
}

#[tokio::test]
async fn patience_bounds_the_retrying() -> anyhow::Result<()> {
    let (base, calls, _) = gateway(u32::MAX).await?;
    let client = Client::new(&base)
        .patient(Duration::from_millis(1_500))
        .with_token("t");
    unavailable(&client).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3, "at 0 s, 1 s and 2 s");
    Ok(())
}
