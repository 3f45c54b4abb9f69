//! Liveness, readiness, Prometheus metrics and the OpenAPI document.

use std::time::Duration;

use api::health::{Live, Ready};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(metrics))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", operation_id = "live", tag = "operations",
    responses((status = 200, description = "Up", body = Live)))]
async fn live() -> Json<Live> {
    Json(Live {
        status: "ok".into(),
    })
}

/// Ready when both Postgres and Kafka answer and the producer has not
/// failed for good (a fatal idempotence error, e.g. after a topic was
/// recreated under it, refuses every later publish until a restart).
#[utoipa::path(get, path = "/readyz", operation_id = "ready", tag = "operations",
    responses((status = 200, description = "Ready", body = Ready),
              (status = 503, description = "Not ready", body = Ready)))]
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Ready>) {
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
    let ready = database && kafka;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Ready {
            database,
            kafka,
            producer_error,
            ready,
        }),
    )
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations",
    responses((status = 200, description = "Metrics", body = String, content_type = "text/plain")))]
async fn metrics() -> String {
    platform::observability::metrics_handle().render()
}
