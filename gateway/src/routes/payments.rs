//! Paying a held reservation from the balance (202), and payment reads.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use schemas::requests::PayReservation;
use schemas::Request;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::{AuthUser, Caller};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::publish::{replay, request_id, submit};
use crate::routes::queue::require_active_token;
use crate::routes::{reservations, Page};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/payments", post(pay))
        .route("/v1/users/{id}/payments", get(list_for_user))
}

/// Body of `POST /v1/payments`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PayBody {
    reservation_id: i64,
}

async fn pay(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PayBody>,
) -> ApiResult<Response> {
    if body.reservation_id <= 0 {
        return Err(ApiError::invalid("reservation_id", "must be positive"));
    }
    let id = request_id(&headers, user.0, "POST /v1/payments", &body)?;
    if let Some(response) = replay(&state, &id).await? {
        return Ok(response);
    }
    let reservation = reservations::find(&state, body.reservation_id).await?;
    user.require_self(reservation.owner())?;
    let queue_token =
        require_active_token(&state, &headers, user.0, reservation.schedule_id()).await?;
    let request = Request::PayReservation(PayReservation {
        reservation_id: body.reservation_id,
        user_id: user.0,
        queue_token,
    });
    submit(&state, id, request).await
}

async fn list_for_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<i64>,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult<Json<Value>> {
    caller.require_access(user_id)?;
    let (limit, offset) = page.bounds();
    #[allow(clippy::type_complexity)]
    let rows: Vec<(
        i64,
        Option<i64>,
        Option<i64>,
        i64,
        String,
        String,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
        DateTime<Utc>,
    )> = sqlx::query_as(
        "SELECT id, reservation_id, order_id, amount, method, status, paid_at, refunded_at, created_at
             FROM payments WHERE user_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3",
    )
    .bind(user_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.pool)
    .await?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(|(id, reservation_id, order_id, amount, method, status, paid_at, refunded_at, created_at)| {
            json!({"id": id, "user_id": user_id, "reservation_id": reservation_id, "order_id": order_id,
                   "amount": amount,
                   "method": method, "status": status, "paid_at": paid_at,
                   "refunded_at": refunded_at, "created_at": created_at})
        })
        .collect();
    Ok(Json(json!({"items": items})))
}
