//! Seat holds: request a hold or a cancel (202), read reservations.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use schemas::requests::{CancelReservation, HoldSeat};
use schemas::Request;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::{AuthUser, Caller};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::publish::{replay, request_id, submit};
use crate::routes::queue::require_active_token;
use crate::routes::Page;
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/reservations", post(hold))
        .route("/v1/reservations/{id}", get(show))
        .route("/v1/reservations/{id}/cancel", post(cancel))
        .route("/v1/users/{id}/reservations", get(list_for_user))
}

/// Body of `POST /v1/reservations`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HoldBody {
    seat_id: i64,
}

async fn hold(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    headers: HeaderMap,
    ApiJson(body): ApiJson<HoldBody>,
) -> ApiResult<Response> {
    if body.seat_id <= 0 {
        return Err(ApiError::invalid("seat_id", "must be positive"));
    }
    let id = request_id(&headers, user_id, "POST /v1/reservations", &body)?;
    if let Some(response) = replay(&state, &id).await? {
        return Ok(response);
    }
    let schedule_id: i64 =
        sqlx::query_scalar("SELECT concert_schedule_id FROM seats WHERE id = $1")
            .bind(body.seat_id)
            .fetch_optional(&state.pool)
            .await?
            .ok_or(ApiError::NotFound("seat"))?;
    let queue_token = require_active_token(&state, &headers, user_id, schedule_id).await?;
    let request = Request::HoldSeat(HoldSeat {
        seat_id: body.seat_id,
        user_id,
        queue_token,
    });
    submit(&state, id, request).await
}

/// Columns of a reservation as the API shows it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ReservationRow {
    id: i64,
    user_id: i64,
    concert_schedule_id: i64,
    seat_id: i64,
    status: String,
    total_amount: i64,
    expires_at: DateTime<Utc>,
    confirmed_at: Option<DateTime<Utc>>,
    cancelled_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

const RESERVATION_COLUMNS: &str =
    "id, user_id, concert_schedule_id, seat_id, status, total_amount, \
     expires_at, confirmed_at, cancelled_at, created_at";

impl ReservationRow {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id, "user_id": self.user_id, "schedule_id": self.concert_schedule_id,
            "seat_id": self.seat_id, "status": self.status, "total_amount": self.total_amount,
            "expires_at": if self.status == "PENDING" { Some(self.expires_at) } else { None },
            "confirmed_at": self.confirmed_at, "cancelled_at": self.cancelled_at,
            "created_at": self.created_at,
        })
    }
}

pub(crate) async fn find(state: &AppState, id: i64) -> ApiResult<ReservationRow> {
    sqlx::query_as(&format!(
        "SELECT {RESERVATION_COLUMNS} FROM reservations WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound("reservation"))
}

impl ReservationRow {
    pub(crate) fn owner(&self) -> i64 {
        self.user_id
    }
    pub(crate) fn schedule_id(&self) -> i64 {
        self.concert_schedule_id
    }
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    let row = find(&state, id).await?;
    caller.require_access(row.user_id)?;
    Ok(Json(row.to_json()))
}

async fn cancel(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Response> {
    let request_id = request_id(&headers, user.0, "POST /v1/reservations/{id}/cancel", &id)?;
    if let Some(response) = replay(&state, &request_id).await? {
        return Ok(response);
    }
    let row = find(&state, id).await?;
    user.require_self(row.user_id)?;
    let request = Request::CancelReservation(CancelReservation {
        reservation_id: id,
        seat_id: row.seat_id,
        user_id: user.0,
    });
    submit(&state, request_id, request).await
}

async fn list_for_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<i64>,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult<Json<Value>> {
    caller.require_access(user_id)?;
    let (limit, offset) = page.bounds();
    let rows: Vec<ReservationRow> = sqlx::query_as(&format!(
        "SELECT {RESERVATION_COLUMNS} FROM reservations WHERE user_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3"
    ))
    .bind(user_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(
        json!({"items": rows.iter().map(ReservationRow::to_json).collect::<Vec<_>>()}),
    ))
}
