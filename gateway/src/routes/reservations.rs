//! Seat holds: request a hold or a cancel (202), read reservations.

use api::concert::{HoldSeat, Reservation};
use api::status::ReservationStatus;
use api::{Accepted, Cursor, Paged};
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use schemas::requests::{self, CancelReservation};
use schemas::Request;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::publish::Intake;
use crate::routes::page;
use crate::routes::queue::require_active_token;
use crate::state::AppState;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(hold))
        .routes(routes!(show))
        .routes(routes!(cancel))
        .routes(routes!(list_for_user))
}

/// Holds a seat for the caller until paid or expired (needs the caller's
/// ACTIVE queue token for the seat's schedule).
#[utoipa::path(post, path = "/v1/reservations", operation_id = "hold_seat", tag = "reservations", request_body = HoldSeat,
    params(crate::openapi::IdempotencyKey, crate::openapi::QueueToken),
    security(("user" = [])),
    responses((status = 202, description = "Accepted: poll Location for the outcome",
               body = Accepted, headers(("Location" = String, description = "/v1/requests/{request_id}")))))]
async fn hold(intake: Intake, ApiJson(body): ApiJson<HoldSeat>) -> ApiResult<Response> {
    intake
        .accept(&body, async |intake| {
            let state = intake.state();
            let schedule_id: i64 =
                sqlx::query_scalar("SELECT concert_schedule_id FROM seats WHERE id = $1")
                    .bind(body.seat_id)
                    .fetch_optional(&state.pool)
                    .await?
                    .ok_or(ApiError::NotFound("seat"))?;
            let queue_token =
                require_active_token(state, intake.headers(), intake.user_id(), schedule_id)
                    .await?;
            Ok(Request::HoldSeat(requests::HoldSeat {
                seat_id: body.seat_id,
                user_id: intake.user_id(),
                queue_token,
            }))
        })
        .await
}

/// Columns of a reservation as the API shows it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ReservationRow {
    id: i64,
    user_id: i64,
    concert_schedule_id: i64,
    seat_id: i64,
    status: ReservationStatus,
    total_amount: i64,
    expires_at: DateTime<Utc>,
    confirmed_at: Option<DateTime<Utc>>,
    cancelled_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

const RESERVATION_COLUMNS: &str =
    "id, user_id, concert_schedule_id, seat_id, status, total_amount, \
     expires_at, confirmed_at, cancelled_at, created_at";

impl From<ReservationRow> for Reservation {
    fn from(row: ReservationRow) -> Self {
        Reservation {
            id: row.id,
            user_id: row.user_id,
            schedule_id: row.concert_schedule_id,
            seat_id: row.seat_id,
            status: row.status,
            total_amount: row.total_amount,
            expires_at: (row.status == ReservationStatus::Pending).then_some(row.expires_at),
            confirmed_at: row.confirmed_at,
            cancelled_at: row.cancelled_at,
            created_at: row.created_at,
        }
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

/// One reservation (its user's, or any for the admin).
#[utoipa::path(get, path = "/v1/reservations/{id}", operation_id = "get_reservation", tag = "reservations",
    params(("id" = i64, Path, description = "The reservation")),
    security(("user" = []), ("admin" = [])),
    responses((status = 200, description = "The reservation", body = Reservation)))]
async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Reservation>> {
    let row = find(&state, id).await?;
    caller.require_access(row.user_id)?;
    Ok(Json(row.into()))
}

/// Cancels the caller's reservation: a hold is released, a paid one is
/// refunded to the balance.
#[utoipa::path(post, path = "/v1/reservations/{id}/cancel", operation_id = "cancel_reservation", tag = "reservations",
    params(("id" = i64, Path, description = "The reservation"), crate::openapi::IdempotencyKey),
    security(("user" = [])),
    responses((status = 202, description = "Accepted: poll Location for the outcome",
               body = Accepted, headers(("Location" = String, description = "/v1/requests/{request_id}")))))]
async fn cancel(intake: Intake, ApiPath(id): ApiPath<i64>) -> ApiResult<Response> {
    intake
        .accept(&(), async |intake| {
            let row = find(intake.state(), id).await?;
            intake.user().require_self(row.user_id)?;
            Ok(Request::CancelReservation(CancelReservation {
                reservation_id: id,
                seat_id: row.seat_id,
                user_id: intake.user_id(),
            }))
        })
        .await
}

/// A user's reservations, newest first.
#[utoipa::path(get, path = "/v1/users/{id}/reservations", operation_id = "list_reservations", tag = "reservations",
    params(("id" = i64, Path, description = "The user"), Cursor),
    security(("user" = []), ("admin" = [])),
    responses((status = 200, description = "A page of reservations", body = Paged<Reservation>)))]
async fn list_for_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<i64>,
    ApiQuery(cursor): ApiQuery<Cursor>,
) -> ApiResult<Json<Paged<Reservation>>> {
    caller.require_access(user_id)?;
    let (limit, before) = page::backward(&cursor)?;
    let rows: Vec<ReservationRow> = sqlx::query_as(&format!(
        "SELECT {RESERVATION_COLUMNS} FROM reservations WHERE user_id = $1 AND id < $2
         ORDER BY id DESC LIMIT $3"
    ))
    .bind(user_id)
    .bind(before)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let rows: Vec<Reservation> = rows.into_iter().map(Reservation::from).collect();
    Ok(Json(Paged::from_rows(rows, limit, |r| r.id)))
}
