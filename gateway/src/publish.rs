//! Accepting a request: publish it to its topic, wait for the broker's
//! acknowledgement, record it PENDING and answer 202.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use platform::kafka::{self, OutgoingRecord};
use schemas::{Request, RequestEnvelope};
use serde_json::json;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::pending::PendingRow;
use crate::state::AppState;

/// Namespace of request ids derived from an `Idempotency-Key`.
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x6f1d_9a52_0c3e_4b8e_9d41_7a0b_52c8_e013);

/// The id of an accepted call.
#[derive(Debug, Clone, Copy)]
pub struct RequestId {
    /// The request id.
    pub id: Uuid,
    /// Derived from an `Idempotency-Key`: it may have been accepted before.
    keyed: bool,
}

/// The request id of a call: derived from the caller, the route and the
/// `Idempotency-Key` when there is one (so a retry maps to the same id),
/// fresh otherwise.
pub fn request_id(headers: &HeaderMap, caller: i64, route: &str) -> ApiResult<RequestId> {
    match headers.get("idempotency-key") {
        None => Ok(RequestId {
            id: Uuid::now_v7(),
            keyed: false,
        }),
        Some(value) => {
            let key = value
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 255)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "Idempotency-Key",
                        "must be 1 to 255 visible ASCII characters",
                    )
                })?;
            let name = format!("{caller}\u{1f}{route}\u{1f}{key}");
            Ok(RequestId {
                id: Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, name.as_bytes()),
                keyed: true,
            })
        }
    }
}

/// The answer to a repeated idempotent call whose request was accepted
/// before: the same request id, without checking or publishing again (the
/// first call may have changed what the checks see, for example by
/// expiring the queue token). A fresh id (no key) was never seen: no
/// database round trip.
pub async fn replay(state: &AppState, request_id: RequestId) -> ApiResult<Option<Response>> {
    if !request_id.keyed {
        return Ok(None);
    }
    let request_id = request_id.id;
    let already: Option<String> = sqlx::query_scalar("SELECT status FROM requests WHERE id = $1")
        .bind(request_id)
        .fetch_optional(&state.pool)
        .await?;
    Ok(already.map(|status| accepted(request_id, &status)))
}

/// Publishes `request` under `request_id` and answers 202. Callers look
/// for an earlier acceptance with [`replay`] first.
pub async fn submit(
    state: &AppState,
    request_id: RequestId,
    request: Request,
) -> ApiResult<Response> {
    let request_id = request_id.id;
    let envelope = RequestEnvelope::new(request_id, request);
    let record = OutgoingRecord::request(&state.topics, &envelope).map_err(anyhow::Error::from)?;
    let started = std::time::Instant::now();
    let delivered = kafka::produce(&state.producer, &record, state.produce_timeout)
        .await
        .map_err(|e| {
            metrics::counter!("gateway_publish_failures_total").increment(1);
            ApiError::KafkaUnavailable(e)
        })?;
    metrics::histogram!("gateway_publish_seconds").record(started.elapsed().as_secs_f64());
    let published = std::time::Instant::now();
    tracing::info!(
        %request_id,
        request_type = envelope.request.type_name(),
        topic = %record.topic,
        partition = delivered.partition,
        offset = delivered.offset,
        "request accepted"
    );
    metrics::counter!("gateway_requests_accepted_total", "type" => envelope.request.type_name())
        .increment(1);
    state.waiter.accepted(
        request_id,
        envelope.request.type_name(),
        envelope.request.user_id(),
    );

    // The record is durable in Kafka: the request is accepted whatever
    // happens next. The PENDING row only makes polling friendlier, so a
    // database hiccup here is logged, not returned.
    let inserted = state
        .pending
        .record(PendingRow {
            id: request_id,
            request_type: envelope.request.type_name(),
            user_id: envelope.request.user_id(),
            topic: record.topic.clone(),
            partition: delivered.partition,
            offset: delivered.offset,
        })
        .await;
    metrics::histogram!("gateway_pending_insert_seconds").record(published.elapsed().as_secs_f64());
    if let Err(error) = inserted {
        tracing::warn!(%request_id, %error, "could not record the accepted request as PENDING");
    }
    Ok(accepted(request_id, "PENDING"))
}

fn accepted(request_id: Uuid, status: &str) -> Response {
    let location = format!("/v1/requests/{request_id}");
    let mut response = (
        StatusCode::ACCEPTED,
        Json(json!({"request_id": request_id, "status": status})),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}
