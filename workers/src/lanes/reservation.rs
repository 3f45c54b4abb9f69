//! Reservation lane (key: seat id): hold, cancel (with refund when paid),
//! and expiry of unpaid holds.

use std::collections::BTreeMap;
use std::time::Duration;

use api::outcomes::{CancelResult, ExpireResult, HoldResult};
use api::status::{ReservationStatus, UnknownStatus};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use schemas::events::{BalanceChangeKind, PaymentChanged, ReservationChanged};
use schemas::requests::{CancelReservation, ExpireHold, HoldSeat};
use schemas::{ErrorCode, Event, Request, RequestEnvelope, Topic};
use sqlx::PgConnection;
use uuid::Uuid;

use super::ledger::{self, Ledger};
use crate::engine::{Applied, Lane};
use crate::error::{LaneError, LaneResult};

/// Applies `reservation.hold`, `reservation.cancel` and `reservation.expire`.
#[derive(Debug, Clone)]
pub struct ReservationLane {
    /// How long a hold lasts.
    pub hold: Duration,
}

/// Seat count changes per schedule, applied once per batch in schedule id
/// order, so concurrent batches lock schedules in the same order.
pub type SeatDeltas = BTreeMap<i64, i32>;

/// One batch's staged writes.
#[derive(Debug, Default)]
pub struct ReservationBatch {
    deltas: SeatDeltas,
    /// Refunds; balances are locked when a refund needs them.
    ledger: Ledger,
}

/// A reservation row locked for this transaction.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReservationRow {
    /// Reservation id.
    pub id: i64,
    /// Owner.
    pub user_id: i64,
    /// Schedule.
    pub concert_schedule_id: i64,
    /// Seat.
    pub seat_id: i64,
    /// PENDING, CONFIRMED, CANCELLED or EXPIRED.
    pub status: String,
    /// Price.
    pub total_amount: i64,
    /// End of the hold.
    pub expires_at: DateTime<Utc>,
    /// Whether the hold has run out, by the database's clock: the clock the
    /// hold-expiry scheduler picks due holds by. The worker's own clock is
    /// never asked, so a skewed worker cannot keep an expired seat held or
    /// take a payment for a lapsed hold.
    pub lapsed: bool,
}

impl ReservationRow {
    /// The event payload describing this reservation with `status`.
    pub fn changed(&self, status: &str) -> ReservationChanged {
        ReservationChanged {
            reservation_id: self.id,
            seat_id: self.seat_id,
            schedule_id: self.concert_schedule_id,
            user_id: self.user_id,
            status: status.to_owned(),
            amount: self.total_amount,
            expires_at: (status == "PENDING").then_some(self.expires_at),
        }
    }
}

const COLUMNS: &str =
    "id, user_id, concert_schedule_id, seat_id, status, total_amount, expires_at, \
                       expires_at <= now() AS lapsed";

/// Locks the reservations `ids` in id order (one batch's worth).
pub async fn lock_reservations(
    tx: &mut PgConnection,
    ids: &[i64],
) -> Result<Vec<ReservationRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM reservations WHERE id = ANY($1) ORDER BY id FOR UPDATE"
    ))
    .bind(ids)
    .fetch_all(&mut *tx)
    .await
}

/// Locks reservation `id`.
pub async fn lock_reservation(
    tx: &mut PgConnection,
    id: i64,
) -> Result<Option<ReservationRow>, sqlx::Error> {
    Ok(lock_reservations(tx, &[id]).await?.pop())
}

/// Moves a live reservation to `status` and frees its seat.
async fn release(
    tx: &mut PgConnection,
    deltas: &mut SeatDeltas,
    reservation: &ReservationRow,
    status: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE reservations SET status = $2, version = version + 1, updated_at = now(),
                cancelled_at = CASE WHEN $2 = 'CANCELLED' THEN now() ELSE cancelled_at END
         WHERE id = $1",
    )
    .bind(reservation.id)
    .bind(status)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE seats SET is_reserved = false, version = version + 1, updated_at = now() WHERE id = $1")
        .bind(reservation.seat_id)
        .execute(&mut *tx)
        .await?;
    *deltas.entry(reservation.concert_schedule_id).or_default() += 1;
    Ok(())
}

impl ReservationLane {
    async fn hold(
        &self,
        tx: &mut PgConnection,
        deltas: &mut SeatDeltas,
        hold: &HoldSeat,
    ) -> LaneResult<Applied> {
        let seat: Option<(i64, i64)> =
            sqlx::query_as("SELECT concert_schedule_id, price FROM seats WHERE id = $1 FOR UPDATE")
                .bind(hold.seat_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((schedule_id, price)) = seat else {
            return Ok(Applied::rejected(ErrorCode::NotFound, "seat not found"));
        };
        let mut events = Vec::new();
        let live: Option<ReservationRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM reservations WHERE seat_id = $1 AND status IN ('PENDING', 'CONFIRMED') FOR UPDATE"
        ))
        .bind(hold.seat_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(live) = live {
            let lapsed = live.status == "PENDING" && live.lapsed;
            if !lapsed {
                return Ok(Applied::rejected(
                    ErrorCode::SeatTaken,
                    "the seat is held or sold",
                ));
            }
            // The hold ran out but its expire request has not arrived yet:
            // release it here so the seat is sold to this request.
            release(tx, deltas, &live, "EXPIRED").await?;
            events.push(Event::ReservationExpired(live.changed("EXPIRED")));
        }
        let hold_secs = i64::try_from(self.hold.as_secs()).unwrap_or(i64::MAX);
        let reservation: ReservationRow = sqlx::query_as(&format!(
            "INSERT INTO reservations (user_id, concert_schedule_id, seat_id, status, total_amount, expires_at)
             VALUES ($1, $2, $3, 'PENDING', $4, now() + make_interval(secs => $5))
             RETURNING {COLUMNS}"
        ))
        .bind(hold.user_id)
        .bind(schedule_id)
        .bind(hold.seat_id)
        .bind(price)
        .bind(hold_secs as f64)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("UPDATE seats SET is_reserved = true, version = version + 1, updated_at = now() WHERE id = $1")
            .bind(hold.seat_id)
            .execute(&mut *tx)
            .await?;
        *deltas.entry(schedule_id).or_default() -= 1;
        events.push(Event::ReservationHeld(reservation.changed("PENDING")));
        Ok(Applied::succeeded(
            HoldResult {
                reservation_id: reservation.id,
                seat_id: hold.seat_id,
                schedule_id,
                amount: price,
                expires_at: reservation.expires_at,
            },
            events,
        ))
    }

    async fn cancel(
        &self,
        tx: &mut PgConnection,
        batch: &mut ReservationBatch,
        cancel: &CancelReservation,
        request_id: Uuid,
    ) -> LaneResult<Applied> {
        let Some(reservation) = lock_reservation(tx, cancel.reservation_id).await? else {
            return Ok(Applied::rejected(
                ErrorCode::NotFound,
                "reservation not found",
            ));
        };
        if reservation.user_id != cancel.user_id {
            return Ok(Applied::rejected(
                ErrorCode::Forbidden,
                "another user's reservation",
            ));
        }
        match reservation.status.as_str() {
            "PENDING" => {
                release(tx, &mut batch.deltas, &reservation, "CANCELLED").await?;
                Ok(Applied::succeeded(
                    CancelResult {
                        reservation_id: reservation.id,
                        status: ReservationStatus::Cancelled,
                        refunded: 0,
                    },
                    vec![Event::ReservationCancelled(
                        reservation.changed("CANCELLED"),
                    )],
                ))
            }
            "CONFIRMED" => {
                let payment: Option<(i64, i64)> = sqlx::query_as(
                    "SELECT id, amount FROM payments WHERE reservation_id = $1 AND status = 'SUCCESS' FOR UPDATE",
                )
                .bind(reservation.id)
                .fetch_optional(&mut *tx)
                .await?;
                let mut events = Vec::new();
                let mut refunded = 0;
                if let Some((payment_id, amount)) = payment {
                    let Some(balance) = batch.ledger.balance(tx, reservation.user_id).await? else {
                        return Ok(Applied::rejected(
                            ErrorCode::NotFound,
                            "user has no balance",
                        ));
                    };
                    if balance > ledger::MAX_BALANCE - amount {
                        return Ok(Applied::rejected(
                            ErrorCode::BalanceLimitExceeded,
                            "refund would exceed the balance limit",
                        ));
                    }
                    let paid_at: DateTime<Utc> = sqlx::query_scalar(
                        "UPDATE payments SET status = 'REFUNDED', refunded_at = now(), version = version + 1,
                                updated_at = now()
                         WHERE id = $1 RETURNING coalesce(paid_at, created_at)",
                    )
                    .bind(payment_id)
                    .fetch_one(&mut *tx)
                    .await?;
                    let changed = batch
                        .ledger
                        .change(
                            tx,
                            reservation.user_id,
                            BalanceChangeKind::Refund,
                            amount,
                            Some(payment_id),
                            Some("reservation cancelled"),
                            request_id,
                        )
                        .await?;
                    refunded = amount;
                    events.push(Event::PaymentRefunded(PaymentChanged {
                        payment_id,
                        reservation_id: reservation.id,
                        user_id: reservation.user_id,
                        amount,
                        status: "REFUNDED".into(),
                        paid_at,
                    }));
                    events.push(Event::BalanceChanged(changed));
                }
                release(tx, &mut batch.deltas, &reservation, "CANCELLED").await?;
                events.insert(
                    0,
                    Event::ReservationCancelled(reservation.changed("CANCELLED")),
                );
                Ok(Applied::succeeded(
                    CancelResult {
                        reservation_id: reservation.id,
                        status: ReservationStatus::Cancelled,
                        refunded,
                    },
                    events,
                ))
            }
            other => Ok(Applied::rejected(
                ErrorCode::InvalidState,
                format!("reservation is {other}"),
            )),
        }
    }

    async fn expire(
        &self,
        tx: &mut PgConnection,
        deltas: &mut SeatDeltas,
        expire: &ExpireHold,
    ) -> LaneResult<Applied> {
        let Some(reservation) = lock_reservation(tx, expire.reservation_id).await? else {
            return Ok(Applied::rejected(
                ErrorCode::NotFound,
                "reservation not found",
            ));
        };
        if reservation.status != "PENDING" || !reservation.lapsed {
            // Paid, cancelled, already expired, or not due: nothing to do.
            return Ok(Applied::succeeded(
                ExpireResult {
                    reservation_id: reservation.id,
                    expired: false,
                    status: reservation
                        .status
                        .parse()
                        .map_err(|e: UnknownStatus| LaneError::Bug(e.to_string()))?,
                },
                Vec::new(),
            ));
        }
        release(tx, deltas, &reservation, "EXPIRED").await?;
        Ok(Applied::succeeded(
            ExpireResult {
                reservation_id: reservation.id,
                expired: true,
                status: ReservationStatus::Expired,
            },
            vec![Event::ReservationExpired(reservation.changed("EXPIRED"))],
        ))
    }
}

#[async_trait]
impl Lane for ReservationLane {
    type Input = RequestEnvelope;
    type Batch = ReservationBatch;

    fn name(&self) -> &'static str {
        "reservation"
    }

    fn topic(&self) -> Topic {
        Topic::ReservationRequests
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        batch: &mut ReservationBatch,
        envelope: &RequestEnvelope,
    ) -> LaneResult<Applied> {
        match &envelope.request {
            Request::HoldSeat(hold) => self.hold(tx, &mut batch.deltas, hold).await,
            Request::CancelReservation(cancel) => {
                self.cancel(tx, batch, cancel, envelope.request_id).await
            }
            Request::ExpireHold(expire) => self.expire(tx, &mut batch.deltas, expire).await,
            _ => Ok(Applied::rejected(
                ErrorCode::InvalidRequest,
                "not a reservation request",
            )),
        }
    }

    async fn finish(
        &self,
        tx: &mut PgConnection,
        batch: ReservationBatch,
    ) -> LaneResult<Vec<Event>> {
        batch.ledger.flush(tx).await?;
        let (ids, changes): (Vec<i64>, Vec<i32>) =
            batch.deltas.into_iter().filter(|(_, d)| *d != 0).unzip();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Lock in id order first: an UPDATE ... FROM join does not promise
        // an order, and two batches locking schedules in different orders
        // would deadlock. NO KEY UPDATE (what the UPDATE itself takes) does
        // not conflict with the KEY SHARE locks that inserting reservations
        // of the same schedule take in other batches; FOR UPDATE would, and
        // two batches would deadlock on their own foreign keys.
        sqlx::query(
            "SELECT id FROM concert_schedules WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE concert_schedules s
             SET available_seats_count = s.available_seats_count + d.delta,
                 version = s.version + 1, updated_at = now()
             FROM UNNEST($1::int8[], $2::int4[]) AS d(id, delta)
             WHERE s.id = d.id",
        )
        .bind(&ids)
        .bind(&changes)
        .execute(&mut *tx)
        .await?;
        Ok(Vec::new())
    }
}
