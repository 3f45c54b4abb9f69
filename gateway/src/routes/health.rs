//! Liveness, readiness, Prometheus metrics and the OpenAPI document.

use api::health::{Live, Ready};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use crate::state::AppState;

/// The process is up.
#[utoipa::path(get, path = "/healthz", operation_id = "live", tag = "operations",
    responses((status = 200, description = "Up", body = Live)))]
pub(crate) async fn live() -> Json<Live> {
    Json(Live {
        status: "ok".into(),
    })
}

/// Ready when both Postgres and Kafka answer and the producer has not
/// failed for good (a fatal idempotence error, e.g. after a topic was
/// recreated under it; the gateway builds a new producer on the next
/// publish or readiness check, and is ready again once that one works).
#[utoipa::path(get, path = "/readyz", operation_id = "ready", tag = "operations",
    responses((status = 200, description = "Ready", body = Ready),
              (status = 503, description = "Not ready", body = Ready)))]
pub(crate) async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Ready>) {
    platform::health::answer(&state.pool, &state.producer).await
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations",
    responses((status = 200, description = "Metrics", body = String, content_type = "text/plain")))]
pub(crate) async fn metrics() -> String {
    platform::observability::metrics_handle().render()
}
