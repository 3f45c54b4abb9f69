//! Reservation lane (key: seat id): hold, cancel (with refund when paid),
//! and expiry of unpaid holds.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use api::outcomes::{CancelResult, ExpireResult, HoldResult};
use api::status::{PaymentStatus, ReservationStatus};
use chrono::{DateTime, Utc};
use schemas::events::{BalanceChangeKind, PaymentChanged, ReservationChanged};
use schemas::requests::ReservationRequest;
use schemas::requests::{CancelReservation, ExpireHold, HoldSeat};
use schemas::{ErrorCode, Event, RequestEnvelope};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::engine::{Applied, Lane};
use crate::error::LaneResult;
use crate::ledger::{self, Ledger};

/// Applies `reservation.hold`, `reservation.cancel` and
/// `reservation.expire`; holds one batch's staged writes.
#[derive(Debug, Clone)]
pub struct ReservationLane {
    /// How long a hold lasts.
    hold_for: Duration,
    deltas: SeatDeltas,
    /// Refunds; balances are locked when a refund needs them.
    ledger: Ledger,
    /// The seats this batch has locked, with what it knows of them.
    seats: HashMap<i64, LockedSeat>,
}

/// A seat this batch has locked: its schedule and price (which never
/// change), and its live reservation while the batch knows it.
#[derive(Debug, Clone)]
struct LockedSeat {
    schedule_id: i64,
    price: i64,
    /// `Some(None)`: no live reservation. `None`: not known (a cancel or an
    /// expiry in this batch released one); read it again.
    live: Option<Option<ReservationRow>>,
}

/// Seat count changes per schedule, applied once per batch in schedule id
/// order, so concurrent batches lock schedules in the same order.
pub type SeatDeltas = BTreeMap<i64, i32>;

/// A reservation row locked for this transaction.
#[derive(Debug, Clone)]
pub struct ReservationRow {
    /// Reservation id.
    pub id: i64,
    /// Owner.
    pub user_id: i64,
    /// Schedule.
    pub concert_schedule_id: i64,
    /// Seat.
    pub seat_id: i64,
    /// Where it stands.
    pub status: ReservationStatus,
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
    pub fn changed(&self, status: ReservationStatus) -> ReservationChanged {
        ReservationChanged {
            reservation_id: self.id,
            seat_id: self.seat_id,
            schedule_id: self.concert_schedule_id,
            user_id: self.user_id,
            status: status.as_str().to_owned(),
            amount: self.total_amount,
            expires_at: (status == ReservationStatus::Pending).then_some(self.expires_at),
        }
    }
}

/// `query_as!` of the [`ReservationRow`]s `$filter` (the `WHERE` clause,
/// with `$1` bound to `$ids`) selects, locked in id order: one statement
/// the compiler checks.
macro_rules! lock_reservation_rows {
    ($filter:literal, $ids:expr) => {
        sqlx::query_as!(
            ReservationRow,
            r#"SELECT id, user_id, concert_schedule_id, seat_id,
                      status AS "status: ReservationStatus", total_amount, expires_at,
                      expires_at <= now() AS "lapsed!"
               FROM reservations WHERE "#
                + $filter
                + " ORDER BY id FOR UPDATE",
            $ids
        )
    };
}

/// Locks the reservations `ids` in id order (one batch's worth).
pub async fn lock_reservations(
    tx: &mut PgConnection,
    ids: &[i64],
) -> Result<Vec<ReservationRow>, sqlx::Error> {
    lock_reservation_rows!("id = ANY($1)", ids)
        .fetch_all(&mut *tx)
        .await
}

/// `reservation` if there is one and it is `user_id`'s, or the refusal.
pub fn owned_by<R: Borrow<ReservationRow>>(
    reservation: Option<R>,
    user_id: i64,
) -> Result<R, Applied> {
    match reservation {
        None => Err(Applied::rejected(
            ErrorCode::NotFound,
            "reservation not found",
        )),
        Some(r) if r.borrow().user_id != user_id => Err(Applied::rejected(
            ErrorCode::Forbidden,
            "another user's reservation",
        )),
        Some(r) => Ok(r),
    }
}

/// Locks the live (held or confirmed) reservations of the seats `seat_ids`
/// in id order: one per seat at most.
async fn lock_live_reservations(
    tx: &mut PgConnection,
    seat_ids: &[i64],
) -> Result<Vec<ReservationRow>, sqlx::Error> {
    lock_reservation_rows!(
        "seat_id = ANY($1) AND status IN ('PENDING', 'CONFIRMED')",
        seat_ids
    )
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
    status: ReservationStatus,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE reservations SET status = $2, version = version + 1, updated_at = now(),
                cancelled_at = CASE WHEN $2 = 'CANCELLED' THEN now() ELSE cancelled_at END
         WHERE id = $1",
        reservation.id,
        // The spelling, not the enum: its `sqlx::Type` names `text` instead of
        // giving its OID, which would cost a type lookup per connection.
        status.as_str()
    )
    .execute(&mut *tx)
    .await?;
    set_reserved(
        tx,
        deltas,
        reservation.concert_schedule_id,
        reservation.seat_id,
        false,
    )
    .await
}

/// Refunds the successful payment of a confirmed `reservation` to its
/// user's balance, if it has one: the amount refunded and the events, or
/// the refusal (the balance would pass its limit).
async fn refund(
    tx: &mut PgConnection,
    ledger: &mut Ledger,
    reservation: &ReservationRow,
    request_id: Uuid,
) -> LaneResult<Result<(i64, Vec<Event>), Applied>> {
    let payment = sqlx::query!(
        "SELECT id, amount FROM payments
         WHERE reservation_id = $1 AND status = 'SUCCESS' FOR UPDATE",
        reservation.id
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(payment) = payment else {
        return Ok(Ok((0, Vec::new())));
    };
    let (payment_id, amount) = (payment.id, payment.amount);
    let Some(balance) = ledger.balance(tx, reservation.user_id).await? else {
        return Ok(Err(Applied::rejected(
            ErrorCode::NotFound,
            "user has no balance",
        )));
    };
    if balance > ledger::MAX_BALANCE - amount {
        return Ok(Err(Applied::rejected(
            ErrorCode::BalanceLimitExceeded,
            "refund would exceed the balance limit",
        )));
    }
    let paid_at = sqlx::query_scalar!(
        r#"UPDATE payments SET status = 'REFUNDED', refunded_at = now(),
                  version = version + 1, updated_at = now()
           WHERE id = $1 RETURNING coalesce(paid_at, created_at) AS "paid_at!""#,
        payment_id
    )
    .fetch_one(&mut *tx)
    .await?;
    let changed = ledger
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
    let refunded = Event::PaymentRefunded(PaymentChanged {
        payment_id,
        reservation_id: reservation.id,
        user_id: reservation.user_id,
        amount,
        status: PaymentStatus::Refunded.as_str().to_owned(),
        paid_at,
    });
    Ok(Ok((amount, vec![refunded, Event::BalanceChanged(changed)])))
}

/// Flags seat `seat_id` of schedule `schedule_id` reserved or free, and
/// counts the change in the schedule's available seats.
async fn set_reserved(
    tx: &mut PgConnection,
    deltas: &mut SeatDeltas,
    schedule_id: i64,
    seat_id: i64,
    reserved: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE seats SET is_reserved = $2, version = version + 1, updated_at = now()
         WHERE id = $1",
        seat_id,
        reserved
    )
    .execute(&mut *tx)
    .await?;
    *deltas.entry(schedule_id).or_default() += if reserved { -1 } else { 1 };
    Ok(())
}

impl ReservationLane {
    /// A lane whose holds last `hold_for`.
    pub fn new(hold_for: Duration) -> Self {
        Self {
            hold_for,
            deltas: SeatDeltas::new(),
            ledger: Ledger::default(),
            seats: HashMap::new(),
        }
    }

    /// Locks the seats of `ids` this batch has not locked, in id order, and
    /// reads their live reservations, locked too: two statements for a
    /// batch of holds, however many, and a hold on a seat the batch already
    /// knows taken is refused without one. The view stays exact for the
    /// batch: no other transaction can change a locked seat's reservations
    /// (holds, cancels and expiries of a seat all come through this lane,
    /// and a payment waits for the reservation's lock), `lapsed` is judged
    /// by `now()`, which is the transaction's start throughout, and this
    /// lane's own changes update it.
    async fn lock_seats(&mut self, tx: &mut PgConnection, ids: &BTreeSet<i64>) -> LaneResult<()> {
        let wanted: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| !self.seats.contains_key(id))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let seats = sqlx::query!(
            "SELECT id, concert_schedule_id, price FROM seats WHERE id = ANY($1)
             ORDER BY id FOR UPDATE",
            &wanted
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut live: HashMap<i64, ReservationRow> = lock_live_reservations(tx, &wanted)
            .await?
            .into_iter()
            .map(|r| (r.seat_id, r))
            .collect();
        for seat in seats {
            self.seats.insert(
                seat.id,
                LockedSeat {
                    schedule_id: seat.concert_schedule_id,
                    price: seat.price,
                    live: Some(live.remove(&seat.id)),
                },
            );
        }
        Ok(())
    }

    /// The live reservation of `seat_id`, locked (the seat is).
    async fn live_reservation(
        &mut self,
        tx: &mut PgConnection,
        seat_id: i64,
    ) -> LaneResult<Option<ReservationRow>> {
        if let Some(Some(known)) = self.seats.get(&seat_id).map(|s| &s.live) {
            return Ok(known.clone());
        }
        // One at most: the partial unique index allows one live
        // reservation per seat.
        let live = lock_live_reservations(tx, &[seat_id]).await?.pop();
        self.know(seat_id, Some(live.clone()));
        Ok(live)
    }

    /// Records what the batch knows of `seat_id`'s live reservation.
    fn know(&mut self, seat_id: i64, live: Option<Option<ReservationRow>>) {
        if let Some(seat) = self.seats.get_mut(&seat_id) {
            seat.live = live;
        }
    }

    async fn hold(&mut self, tx: &mut PgConnection, hold: &HoldSeat) -> LaneResult<Applied> {
        self.lock_seats(tx, &BTreeSet::from([hold.seat_id])).await?;
        let Some(seat) = self.seats.get(&hold.seat_id) else {
            return Ok(Applied::rejected(ErrorCode::NotFound, "seat not found"));
        };
        let (schedule_id, price) = (seat.schedule_id, seat.price);
        let mut events = Vec::new();
        if let Some(live) = self.live_reservation(tx, hold.seat_id).await? {
            let lapsed = live.status == ReservationStatus::Pending && live.lapsed;
            if !lapsed {
                return Ok(Applied::rejected(
                    ErrorCode::SeatTaken,
                    "the seat is held or sold",
                ));
            }
            // The hold ran out but its expire request has not arrived yet:
            // release it here so the seat is sold to this request.
            release(tx, &mut self.deltas, &live, ReservationStatus::Expired).await?;
            self.know(hold.seat_id, Some(None));
            events.push(Event::ReservationExpired(
                live.changed(ReservationStatus::Expired),
            ));
        }
        let hold_secs = i64::try_from(self.hold_for.as_secs()).unwrap_or(i64::MAX);
        let reservation = sqlx::query_as!(
            ReservationRow,
            r#"INSERT INTO reservations
                   (user_id, concert_schedule_id, seat_id, status, total_amount, expires_at)
               VALUES ($1, $2, $3, 'PENDING', $4, now() + make_interval(secs => $5))
               RETURNING id, user_id, concert_schedule_id, seat_id,
                         status AS "status: ReservationStatus", total_amount, expires_at,
                         expires_at <= now() AS "lapsed!""#,
            hold.user_id,
            schedule_id,
            hold.seat_id,
            price,
            hold_secs as f64
        )
        .fetch_one(&mut *tx)
        .await?;
        set_reserved(tx, &mut self.deltas, schedule_id, hold.seat_id, true).await?;
        self.know(hold.seat_id, Some(Some(reservation.clone())));
        events.push(Event::ReservationHeld(
            reservation.changed(ReservationStatus::Pending),
        ));
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
        &mut self,
        tx: &mut PgConnection,
        cancel: &CancelReservation,
        request_id: Uuid,
    ) -> LaneResult<Applied> {
        let locked = lock_reservation(tx, cancel.reservation_id).await?;
        let reservation = match owned_by(locked, cancel.user_id) {
            Ok(reservation) => reservation,
            Err(refused) => return Ok(refused),
        };
        let (refunded, mut events) = match reservation.status {
            ReservationStatus::Pending => (0, Vec::new()),
            ReservationStatus::Confirmed => {
                match refund(tx, &mut self.ledger, &reservation, request_id).await? {
                    Ok(refund) => refund,
                    Err(refused) => return Ok(refused),
                }
            }
            other @ (ReservationStatus::Cancelled | ReservationStatus::Expired) => {
                return Ok(Applied::rejected(
                    ErrorCode::InvalidState,
                    format!("reservation is {other}"),
                ));
            }
        };
        release(
            tx,
            &mut self.deltas,
            &reservation,
            ReservationStatus::Cancelled,
        )
        .await?;
        self.know(reservation.seat_id, None);
        events.insert(
            0,
            Event::ReservationCancelled(reservation.changed(ReservationStatus::Cancelled)),
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

    async fn expire(&mut self, tx: &mut PgConnection, expire: &ExpireHold) -> LaneResult<Applied> {
        let Some(reservation) = lock_reservation(tx, expire.reservation_id).await? else {
            return Ok(Applied::rejected(
                ErrorCode::NotFound,
                "reservation not found",
            ));
        };
        if reservation.status != ReservationStatus::Pending || !reservation.lapsed {
            // Paid, cancelled, already expired, or not due: nothing to do.
            return Ok(Applied::succeeded(
                ExpireResult {
                    reservation_id: reservation.id,
                    expired: false,
                    status: reservation.status,
                },
                Vec::new(),
            ));
        }
        release(
            tx,
            &mut self.deltas,
            &reservation,
            ReservationStatus::Expired,
        )
        .await?;
        self.know(reservation.seat_id, None);
        Ok(Applied::succeeded(
            ExpireResult {
                reservation_id: reservation.id,
                expired: true,
                status: ReservationStatus::Expired,
            },
            vec![Event::ReservationExpired(
                reservation.changed(ReservationStatus::Expired),
            )],
        ))
    }
}

impl Lane for ReservationLane {
    type Input = RequestEnvelope<ReservationRequest>;
    const NAME: &'static str = "reservation";

    /// Locks the seats of the batch's holds and reads their live
    /// reservations ([`ReservationLane::lock_seats`]).
    async fn prepare(&mut self, tx: &mut PgConnection, inputs: &[&Self::Input]) -> LaneResult<()> {
        let seats: BTreeSet<i64> = inputs
            .iter()
            .filter_map(|input| match &input.request {
                ReservationRequest::HoldSeat(hold) => Some(hold.seat_id),
                _ => None,
            })
            .collect();
        self.lock_seats(tx, &seats).await
    }

    async fn apply(&mut self, tx: &mut PgConnection, input: &Self::Input) -> LaneResult<Applied> {
        match &input.request {
            ReservationRequest::HoldSeat(hold) => self.hold(tx, hold).await,
            ReservationRequest::CancelReservation(cancel) => {
                self.cancel(tx, cancel, input.request_id).await
            }
            ReservationRequest::ExpireHold(expire) => self.expire(tx, expire).await,
        }
    }

    async fn finish(self, tx: &mut PgConnection) -> LaneResult<Vec<Event>> {
        self.ledger.flush(tx).await?;
        let (ids, changes): (Vec<i64>, Vec<i32>) =
            self.deltas.into_iter().filter(|(_, d)| *d != 0).unzip();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Lock in id order first: an UPDATE ... FROM join does not promise
        // an order, and two batches locking schedules in different orders
        // would deadlock. NO KEY UPDATE (what the UPDATE itself takes) does
        // not conflict with the KEY SHARE locks that inserting reservations
        // of the same schedule take in other batches; FOR UPDATE would, and
        // two batches would deadlock on their own foreign keys.
        // Only the locks are wanted; the ids come back unread.
        sqlx::query_scalar!(
            "SELECT id FROM concert_schedules WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
            &ids
        )
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query!(
            "UPDATE concert_schedules s
             SET available_seats_count = s.available_seats_count + d.delta,
                 version = s.version + 1, updated_at = now()
             FROM UNNEST($1::int8[], $2::int4[]) AS d(id, delta)
             WHERE s.id = d.id",
            &ids,
            &changes
        )
        .execute(&mut *tx)
        .await?;
        Ok(Vec::new())
    }
}
