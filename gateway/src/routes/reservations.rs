//! Seat holds: request a hold or a cancel (202), read reservations.

use api::concert::{HoldSeat, Reservation};
use api::status::ReservationStatus;
use api::Paged;
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use schemas::requests::{self, CancelReservation};
use schemas::Request;

use crate::auth::{Caller, ReadableUser};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, QueueTokenHeader};
use crate::publish::{Accepted, Intake};
use crate::routes::page::NewestFirst;
use crate::routes::queue::require_active_token;
use crate::routes::{accessible, Owned};
use crate::state::AppState;

/// Holds a seat for the caller until paid or expired (needs the caller's
/// ACTIVE queue token for the seat's schedule).
#[utoipa::path(post, path = "/v1/reservations", operation_id = "hold_seat", tag = "reservations", request_body = HoldSeat,
    params(crate::openapi::IdempotencyKey, crate::extract::QueueTokenHeader),
    security(("user" = [])),
    responses(Accepted))]
pub(crate) async fn hold(
    intake: Intake,
    token: QueueTokenHeader,
    ApiJson(body): ApiJson<HoldSeat>,
) -> ApiResult<Accepted> {
    intake
        .accept(&body, async |intake| {
            let state = intake.state();
            let schedule_id = sqlx::query_scalar!(
                "SELECT concert_schedule_id FROM seats WHERE id = $1",
                body.seat_id,
            )
            .fetch_optional(&state.pool)
            .await?
            .ok_or(ApiError::NotFound("seat"))?;
            let queue_token =
                require_active_token(state, token, intake.user_id(), schedule_id).await?;
            Ok(Request::HoldSeat(requests::HoldSeat {
                seat_id: body.seat_id,
                user_id: intake.user_id(),
                queue_token,
            }))
        })
        .await
}

/// Columns of a reservation as the API shows it.
#[derive(Debug)]
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

/// `query_as!` of [`ReservationRow`]s: the columns, then `$tail` (the
/// rest of the `WHERE`), in one statement the compiler checks.
macro_rules! select_reservations {
    ($tail:literal, $($arg:expr),+ $(,)?) => {
        sqlx::query_as!(
            ReservationRow,
            r#"SELECT id, user_id, concert_schedule_id, seat_id, status AS "status: ReservationStatus",
                total_amount, expires_at, confirmed_at, cancelled_at, created_at
         FROM reservations WHERE "# + $tail,
            $($arg),+
        )
    };
}

/// Reservation `id`, if it exists.
pub(crate) async fn find(state: &AppState, id: i64) -> ApiResult<Option<ReservationRow>> {
    Ok(select_reservations!("id = $1", id)
        .fetch_optional(&state.pool)
        .await?)
}

impl Owned for ReservationRow {
    const NAME: &'static str = "reservation";

    fn owner(&self) -> i64 {
        self.user_id
    }
}

impl ReservationRow {
    pub(crate) fn schedule_id(&self) -> i64 {
        self.concert_schedule_id
    }
}

/// One reservation (its user's, or any for the admin).
#[utoipa::path(get, path = "/v1/reservations/{id}", operation_id = "get_reservation", tag = "reservations",
    params(("id" = i64, Path, description = "The reservation")),
    security(("user" = []), ("admin" = [])),
    responses((status = 200, description = "The reservation", body = Reservation)))]
pub(crate) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Reservation>> {
    let row = accessible(caller, find(&state, id).await?)?;
    Ok(Json(row.into()))
}

/// Cancels the caller's reservation: a hold is released, a paid one is
/// refunded to the balance.
#[utoipa::path(post, path = "/v1/reservations/{id}/cancel", operation_id = "cancel_reservation", tag = "reservations",
    params(("id" = i64, Path, description = "The reservation"), crate::openapi::IdempotencyKey),
    security(("user" = [])),
    responses(Accepted))]
pub(crate) async fn cancel(intake: Intake, ApiPath(id): ApiPath<i64>) -> ApiResult<Accepted> {
    intake
        .accept(&(), async |intake| {
            let row = accessible(intake.user(), find(intake.state(), id).await?)?;
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
    params(ReadableUser, NewestFirst),
    security(("user" = []), ("admin" = [])),
    responses((status = 200, description = "A page of reservations", body = Paged<Reservation>)))]
pub(crate) async fn list_for_user(
    State(state): State<AppState>,
    user: ReadableUser,
    NewestFirst(page): NewestFirst,
) -> ApiResult<Json<Paged<Reservation>>> {
    let rows = select_reservations!(
        "user_id = $1 AND id < $2
         ORDER BY id DESC LIMIT $3",
        user.id,
        page.past,
        page.fetch(),
    )
    .fetch_all(&state.pool);
    page.answer(rows, |r| r.id).await
}
