//! Seat holds: request a hold or a cancel (202), read reservations.

use api::concert::{HoldSeat, Reservation};
use api::status::ReservationStatus;
use api::Paged;
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use quick_cache::sync::Cache;
use schemas::requests::{self, CancelReservation};
use schemas::Request;
use sqlx::PgPool;
use std::sync::Arc;

use crate::auth::{Caller, ReadableUser};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, QueueTokenHeader};
use crate::publish::{Accepted, Intake};
use crate::routes::page::NewestFirst;
use crate::routes::queue::require_active_token;
use crate::routes::{accessible, Owned};
use crate::state::AppState;

/// The schedule of each seat a gateway has seen held. A seat never changes
/// schedule (nothing updates or deletes a seat's `concert_schedule_id`), so
/// the answer is read once per seat and gateway: a rush's holds, thousands
/// on a few seats, each cost one read less. Bounded: the least used seats
/// are forgotten first.
#[derive(Clone)]
pub struct SeatSchedules(Arc<Cache<i64, i64>>);

impl Default for SeatSchedules {
    fn default() -> Self {
        Self(Arc::new(Cache::new(Self::ENTRIES)))
    }
}

impl SeatSchedules {
    /// How many seats a gateway remembers (about 2 MB).
    const ENTRIES: usize = 100_000;

    /// The schedule of `seat_id`, or NOT_FOUND.
    pub async fn schedule_of(&self, pool: &PgPool, seat_id: i64) -> ApiResult<i64> {
        if let Some(schedule_id) = self.0.get(&seat_id) {
            return Ok(schedule_id);
        }
        let schedule_id = sqlx::query_scalar!(
            "SELECT concert_schedule_id FROM seats WHERE id = $1",
            seat_id,
        )
        .fetch_optional(pool)
        .await?
        .ok_or(ApiError::NotFound("seat"))?;
        self.0.insert(seat_id, schedule_id);
        Ok(schedule_id)
    }
}

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
            let schedule_id = state
                .seat_schedules
                .schedule_of(&state.pool, body.seat_id)
                .await?;
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

#[cfg(test)]
mod tests {
    use super::SeatSchedules;
    use crate::error::ApiError;
    use sqlx::PgPool;

    #[sqlx::test(migrations = "../migrations")]
    async fn a_seat_schedule_is_read_once_and_an_unknown_seat_is_not_found(pool: PgPool) {
        let schedule_id: i64 = sqlx::query_scalar(
            "WITH c AS (INSERT INTO concerts (title) VALUES ('Cache') RETURNING id)
             INSERT INTO concert_schedules (concert_id, starts_at, available_seats_count)
             SELECT id, now(), 1 FROM c RETURNING id",
        )
        .fetch_one(&pool)
        .await
        .expect("schedule");
        let seat_id: i64 = sqlx::query_scalar(
            "INSERT INTO seats (concert_schedule_id, seat_no, seat_number, price)
             VALUES ($1, 1, 'A1', 1000) RETURNING id",
        )
        .bind(schedule_id)
        .fetch_one(&pool)
        .await
        .expect("seat");
        let seats = SeatSchedules::default();
        assert!(matches!(
            seats.schedule_of(&pool, seat_id + 1).await,
            Err(ApiError::NotFound("seat"))
        ));
        assert_eq!(
            seats.schedule_of(&pool, seat_id).await.ok(),
            Some(schedule_id)
        );
        pool.close().await;
        assert_eq!(
            seats.schedule_of(&pool, seat_id).await.ok(),
            Some(schedule_id),
            "answered from memory"
        );
        assert!(
            seats.schedule_of(&pool, seat_id + 1).await.is_err(),
            "an unknown seat is not remembered"
        );
    }
}
