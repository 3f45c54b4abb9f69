//! Liveness, readiness and Prometheus metrics.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .route(
            "/metrics",
            get(|| async { platform::observability::metrics_handle().render() }),
        )
}

/// Ready when both Postgres and Kafka answer and the producer has not
/// failed for good (a fatal idempotence error, e.g. after a topic was
/// recreated under it, refuses every later publish until a restart).
async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let producer_error = platform::kafka::fatal_error(&state.producer);
    let database = sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(&state.pool)
        .await
        .is_ok();
    let producer = state.producer.clone();
    let kafka = tokio::task::spawn_blocking(move || {
        platform::kafka::broker_reachable(&producer, Duration::from_secs(2))
    })
    .await
    .unwrap_or(false)
        && producer_error.is_none();
    let status = if database && kafka {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(
            json!({"database": database, "kafka": kafka, "producer_error": producer_error,
                    "ready": database && kafka}),
        ),
    )
}
