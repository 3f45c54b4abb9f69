//! The concert domain: catalogue, waiting queue, reservations, payments.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::status::{PaymentMethod, PaymentStatus, QueueStatus, ReservationStatus, SeatStatus};

/// One concert of `GET /v1/concerts` (by id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct Concert {
    /// The concert.
    pub id: i64,
    /// Its title.
    pub title: String,
    /// When it was set up.
    pub created_at: DateTime<Utc>,
}

/// `?available=true`: only what can still be booked.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Availability {
    /// Only schedules with free seats / only free seats.
    #[serde(default)]
    pub available: bool,
}

/// One schedule of `GET /v1/concerts/{id}/schedules` (by start, then id;
/// a concert has at most 100, so the list is not paged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct Schedule {
    /// The schedule.
    pub id: i64,
    /// Its concert.
    pub concert_id: i64,
    /// When it starts.
    pub starts_at: DateTime<Utc>,
    /// Seats neither held nor sold.
    pub available_seats: i32,
    /// Seats in all.
    pub total_seats: i64,
}

/// One seat of `GET /v1/schedules/{id}/seats` (by seat number; a schedule
/// has at most 10,000, so the list is not paged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct Seat {
    /// The seat.
    pub id: i64,
    /// Its schedule.
    pub schedule_id: i64,
    /// Its number, from 1.
    pub seat_no: i32,
    /// Its label (`S001`).
    pub seat_number: String,
    /// Price in won.
    pub price: i64,
    /// On sale, held or sold.
    pub status: SeatStatus,
}

/// `POST /v1/admin/concerts`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConcert {
    /// 1 to 255 characters, no control characters (trimmed).
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001F\u007F]+$"
    )]
    pub title: String,
    /// 1 to 100 schedules.
    #[schema(min_items = 1, max_items = 100)]
    pub schedules: Vec<NewSchedule>,
}

/// One schedule of a new concert.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSchedule {
    /// When it starts.
    pub starts_at: DateTime<Utc>,
    /// Seats, 1 to 10,000 (numbered from 1, labelled `S001`...).
    #[serde(deserialize_with = "crate::numbers::whole")]
    #[schema(minimum = 1, maximum = 10_000)]
    pub seat_count: i32,
    /// Price of every seat in won, 1 to 100,000,000. A seat is paid for
    /// from the balance to be confirmed, so a free seat (0) is refused:
    /// there would be nothing to pay.
    #[serde(deserialize_with = "crate::numbers::whole")]
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub price: i64,
}

/// `201` of `POST /v1/admin/concerts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedConcert {
    /// The concert.
    pub id: i64,
    /// Its title as stored.
    pub title: String,
    /// Its schedules, in the order given.
    pub schedules: Vec<CreatedSchedule>,
}

/// One schedule of a created concert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedSchedule {
    /// The schedule.
    pub id: i64,
    /// When it starts.
    pub starts_at: DateTime<Utc>,
    /// Seats.
    pub seat_count: i32,
    /// Price of every seat.
    pub price: i64,
}

/// `POST /v1/queue/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinQueue {
    /// The schedule to queue for.
    #[serde(deserialize_with = "crate::numbers::whole")]
    #[schema(minimum = 1)]
    pub schedule_id: i64,
}

/// A place in the waiting queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueueToken {
    /// Send it as `X-Queue-Token` once ACTIVE.
    pub token: Uuid,
    /// Whose.
    pub user_id: i64,
    /// For which schedule.
    pub schedule_id: i64,
    /// Where it stands.
    pub status: QueueStatus,
    /// While WAITING, your place in line, 1 at the front: at most this many
    /// people are ahead of you, you included (the places of people who left
    /// count until admission passes them, so it may drop by more than the
    /// admitted).
    pub position: Option<i64>,
    /// While WAITING, ask again after this many milliseconds (sooner is
    /// refused with 429 and `Retry-After`). It grows with the distance to
    /// the front; a waiting token not asked for within it and the
    /// gateway's `QUEUE_ABANDON_SECS` is given up (EXPIRED).
    pub poll_after_ms: Option<i64>,
    /// Until when an ACTIVE token admits.
    pub active_until: Option<DateTime<Utc>>,
}

/// `POST /v1/reservations` (needs an ACTIVE `X-Queue-Token`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldSeat {
    /// The seat to hold.
    #[serde(deserialize_with = "crate::numbers::whole")]
    #[schema(minimum = 1)]
    pub seat_id: i64,
}

/// A reservation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Reservation {
    /// The reservation.
    pub id: i64,
    /// Whose.
    pub user_id: i64,
    /// The schedule.
    pub schedule_id: i64,
    /// The seat.
    pub seat_id: i64,
    /// Where it stands.
    pub status: ReservationStatus,
    /// Won to pay.
    pub total_amount: i64,
    /// While PENDING: when the hold lapses.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was paid.
    pub confirmed_at: Option<DateTime<Utc>>,
    /// When it was cancelled.
    pub cancelled_at: Option<DateTime<Utc>>,
    /// When the seat was held.
    pub created_at: DateTime<Utc>,
}

/// `POST /v1/payments` (needs an ACTIVE `X-Queue-Token`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayReservation {
    /// The held reservation to pay from the balance.
    #[serde(deserialize_with = "crate::numbers::whole")]
    #[schema(minimum = 1)]
    pub reservation_id: i64,
}

/// A payment (of a reservation or of an order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct Payment {
    /// The payment.
    pub id: i64,
    /// The payer.
    pub user_id: i64,
    /// The reservation it pays, if any.
    pub reservation_id: Option<i64>,
    /// The order it pays, if any.
    pub order_id: Option<i64>,
    /// Won.
    pub amount: i64,
    /// How.
    pub method: PaymentMethod,
    /// Where it stands.
    pub status: PaymentStatus,
    /// When it was paid.
    pub paid_at: Option<DateTime<Utc>>,
    /// When it was paid back.
    pub refunded_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}
