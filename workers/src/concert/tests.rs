//! The reservation and payment lanes' business steps on a fresh database
//! per test, without Kafka: each test runs a lane's `prepare`, `apply` and
//! `finish` in a transaction of its own, as the engine would.

use std::time::Duration;

use api::outcomes::{CancelResult, ExpireResult, HoldResult, PaymentResult};
use api::status::{PaymentMethod, PaymentStatus, QueueStatus, ReservationStatus};
use chrono::{DateTime, Utc};
use schemas::events::{BalanceChangeKind, PaymentChanged, ReservationChanged};
use schemas::requests::{CancelReservation, ExpireHold, HoldSeat, PayReservation};
use schemas::requests::{PaymentRequest, ReservationRequest};
use schemas::{ErrorCode, Event, RequestEnvelope};
use sqlx::PgPool;
use uuid::Uuid;

use super::{PaymentLane, ReservationLane};
use crate::fixtures::{
    balance_of, commit_batch, commit_refused, commit_unchanged, payments, race_for_one, rejection,
    rejections, request, result_as, spent, user_with_balance, users_with_balance,
};

const PRICE: i64 = 40_000;

fn lane() -> ReservationLane {
    ReservationLane::new(Duration::from_secs(300))
}

/// A schedule with `seats` seats at [`PRICE`]; returns it and its seats.
async fn schedule(pool: &PgPool, seats: i32) -> (i64, Vec<i64>) {
    crate::fixtures::schedule(pool, seats, PRICE).await
}

/// An ACTIVE queue token of `user_id` for `schedule_id`.
async fn admitted(pool: &PgPool, user_id: i64, schedule_id: i64) -> Uuid {
    let token = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO reservation_queue
             (user_id, concert_schedule_id, token, line_no, status, activated_at, expires_at)
         VALUES ($1, $2, $3, nextval(queue_line_sequence($2)), 'ACTIVE', now(),
                 now() + interval '10 minutes')",
        user_id,
        schedule_id,
        token
    )
    .execute(pool)
    .await
    .expect("queue token");
    token
}

/// Which of `seats` (of one schedule) are flagged reserved, in their
/// order, and how many free seats their schedule counts.
async fn seat_map(pool: &PgPool, seats: &[i64]) -> (Vec<bool>, i32) {
    let rows = sqlx::query!(
        "SELECT s.is_reserved, c.available_seats_count
         FROM UNNEST($1::int8[]) WITH ORDINALITY AS t(id, n)
         JOIN seats s ON s.id = t.id JOIN concert_schedules c ON c.id = s.concert_schedule_id
         ORDER BY t.n",
        seats
    )
    .fetch_all(pool)
    .await
    .expect("seats");
    let available = rows.first().map_or(0, |r| r.available_seats_count);
    (rows.iter().map(|r| r.is_reserved).collect(), available)
}

/// A reservation as the tests look at it.
#[derive(Debug)]
struct Reservation {
    user_id: i64,
    seat_id: i64,
    status: ReservationStatus,
    total_amount: i64,
    /// `expires_at` is exactly the hold's length after creation.
    held_for_hold: bool,
    confirmed: bool,
    cancelled: bool,
}

async fn reservation(pool: &PgPool, id: i64) -> Reservation {
    sqlx::query_as!(
        Reservation,
        r#"SELECT user_id, seat_id, status AS "status: ReservationStatus", total_amount,
                  expires_at = created_at + interval '300 seconds' AS "held_for_hold!",
                  confirmed_at IS NOT NULL AS "confirmed!",
                  cancelled_at IS NOT NULL AS "cancelled!"
           FROM reservations WHERE id = $1"#,
        id
    )
    .fetch_one(pool)
    .await
    .expect("reservation")
}

/// Moves the hold's end a minute into the past, by the database's clock.
async fn lapse(pool: &PgPool, reservation_id: i64) {
    sqlx::query!(
        "UPDATE reservations SET expires_at = now() - interval '1 minute' WHERE id = $1",
        reservation_id
    )
    .execute(pool)
    .await
    .expect("lapse");
}

fn hold(user_id: i64, seat_id: i64) -> RequestEnvelope<ReservationRequest> {
    request(ReservationRequest::HoldSeat(HoldSeat {
        seat_id,
        user_id,
        queue_token: Uuid::now_v7(),
    }))
}

fn cancel(user_id: i64, reservation_id: i64, seat_id: i64) -> RequestEnvelope<ReservationRequest> {
    request(ReservationRequest::CancelReservation(CancelReservation {
        reservation_id,
        seat_id,
        user_id,
    }))
}

fn expire(reservation_id: i64, seat_id: i64) -> RequestEnvelope<ReservationRequest> {
    request(ReservationRequest::ExpireHold(ExpireHold {
        reservation_id,
        seat_id,
    }))
}

fn pay(user_id: i64, reservation_id: i64, queue_token: Uuid) -> RequestEnvelope<PaymentRequest> {
    request(PaymentRequest::PayReservation(PayReservation {
        reservation_id,
        user_id,
        queue_token,
    }))
}

/// Holds `seat_id` for `user_id` in a batch of its own; returns the hold.
async fn held_seat(pool: &PgPool, user_id: i64, seat_id: i64) -> HoldResult {
    let (applied, _) = commit_batch(pool, &lane(), &[hold(user_id, seat_id)]).await;
    result_as::<HoldResult>(&applied[0]).clone()
}

#[sqlx::test(migrations = "../migrations")]
async fn holding_a_free_seat_reserves_it(pool: PgPool) {
    let (schedule_id, seats) = schedule(&pool, 3).await;
    let user = user_with_balance(&pool, 0).await;

    let (applied, finished) = commit_batch(&pool, &lane(), &[hold(user, seats[1])]).await;
    assert!(finished.is_empty());
    let result = result_as::<HoldResult>(&applied[0]);
    assert_eq!(
        (result.seat_id, result.schedule_id, result.amount),
        (seats[1], schedule_id, PRICE)
    );
    assert_eq!(
        applied[0].events,
        [Event::ReservationHeld(ReservationChanged {
            reservation_id: result.reservation_id,
            seat_id: seats[1],
            schedule_id,
            user_id: user,
            status: "PENDING".into(),
            amount: PRICE,
            expires_at: Some(result.expires_at),
        })]
    );

    let row = reservation(&pool, result.reservation_id).await;
    assert_eq!(
        (row.user_id, row.seat_id, row.status, row.total_amount),
        (user, seats[1], ReservationStatus::Pending, PRICE)
    );
    assert!(row.held_for_hold, "held for the lane's hold length");
    assert_eq!(seat_map(&pool, &seats).await, (vec![false, true, false], 2));
}

#[sqlx::test(migrations = "../migrations")]
async fn holding_a_taken_seat_is_rejected_and_writes_nothing(pool: PgPool) {
    let (_, seats) = schedule(&pool, 2).await;
    let [first, second] = users_with_balance(&pool, [0, 0]).await;
    held_seat(&pool, first, seats[0]).await;

    let cases = vec![
        (hold(second, seats[0]), ErrorCode::SeatTaken),
        (hold(second, seats[1] + 1_000), ErrorCode::NotFound),
    ];
    commit_refused(&pool, &lane(), cases).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_lapsed_hold_gives_way_to_the_next_hold(pool: PgPool) {
    let (_, seats) = schedule(&pool, 2).await;
    let [first, second] = users_with_balance(&pool, [0, 0]).await;
    let old = held_seat(&pool, first, seats[0]).await;
    lapse(&pool, old.reservation_id).await;

    let (applied, _) = commit_batch(&pool, &lane(), &[hold(second, seats[0])]).await;
    let new = result_as::<HoldResult>(&applied[0]);
    assert!(matches!(
        applied[0].events.as_slice(),
        [Event::ReservationExpired(expired), Event::ReservationHeld(held)]
            if expired.reservation_id == old.reservation_id && expired.status == "EXPIRED"
                && held.reservation_id == new.reservation_id
    ));
    assert_eq!(
        reservation(&pool, old.reservation_id).await.status,
        ReservationStatus::Expired
    );
    assert_eq!(reservation(&pool, new.reservation_id).await.user_id, second);
    // Released and taken again: one seat less in all.
    assert_eq!(seat_map(&pool, &seats).await, (vec![true, false], 1));
}

#[sqlx::test(migrations = "../migrations")]
async fn cancelling_a_hold_frees_the_seat(pool: PgPool) {
    let (_, seats) = schedule(&pool, 2).await;
    let [owner, stranger] = users_with_balance(&pool, [0, 0]).await;
    let hold = held_seat(&pool, owner, seats[0]).await;
    let id = hold.reservation_id;

    let (applied, _) = commit_batch(
        &pool,
        &lane(),
        &[
            cancel(stranger, id, seats[0]),
            cancel(owner, id, seats[0]),
            cancel(owner, id, seats[0]),
        ],
    )
    .await;
    assert_eq!(rejection(&applied[0]), Some(ErrorCode::Forbidden));
    assert_eq!(
        result_as::<CancelResult>(&applied[1]),
        &CancelResult {
            reservation_id: id,
            status: ReservationStatus::Cancelled,
            refunded: 0,
        }
    );
    assert!(matches!(
        applied[1].events.as_slice(),
        [Event::ReservationCancelled(c)] if c.status == "CANCELLED" && c.expires_at.is_none()
    ));
    assert_eq!(rejection(&applied[2]), Some(ErrorCode::InvalidState));

    let row = reservation(&pool, id).await;
    assert_eq!(row.status, ReservationStatus::Cancelled);
    assert!(row.cancelled);
    assert_eq!(seat_map(&pool, &seats).await, (vec![false, false], 2));
}

/// One batch decides its holds against what it has seen and done: a seat it
/// knows taken is refused, and one that a cancel or an expiry in the same
/// batch freed goes to the next hold.
#[sqlx::test(migrations = "../migrations")]
async fn a_batch_of_holds_sees_its_own_cancels_and_expiries(pool: PgPool) {
    let (_, seats) = schedule(&pool, 3).await;
    let [a, b, c, d, e] = users_with_balance(&pool, [0; 5]).await;
    let first = held_seat(&pool, a, seats[0]).await.reservation_id;
    let lapsed = held_seat(&pool, a, seats[1]).await.reservation_id;
    lapse(&pool, lapsed).await;

    let (applied, _) = commit_batch(
        &pool,
        &lane(),
        &[
            hold(b, seats[0]),
            cancel(a, first, seats[0]),
            hold(c, seats[0]),
            hold(d, seats[0]),
            expire(lapsed, seats[1]),
            hold(e, seats[1]),
            hold(b, seats[2]),
            hold(c, seats[2]),
        ],
    )
    .await;
    let taken = Some(ErrorCode::SeatTaken);
    assert_eq!(
        rejections(&applied),
        [taken, None, None, taken, None, None, None, taken],
        "{applied:?}"
    );
    let holders = sqlx::query!(
        "SELECT seat_id, user_id FROM reservations WHERE status = 'PENDING' ORDER BY seat_id"
    )
    .fetch_all(&pool)
    .await
    .expect("holds");
    let holders: Vec<(i64, i64)> = holders.iter().map(|r| (r.seat_id, r.user_id)).collect();
    assert_eq!(holders, [(seats[0], c), (seats[1], e), (seats[2], b)]);
    assert_eq!(seat_map(&pool, &seats).await, (vec![true, true, true], 0));
}

#[sqlx::test(migrations = "../migrations")]
async fn cancelling_a_paid_reservation_refunds_it(pool: PgPool) {
    let (schedule_id, seats) = schedule(&pool, 2).await;
    let user = user_with_balance(&pool, 100_000).await;
    let token = admitted(&pool, user, schedule_id).await;
    let hold = held_seat(&pool, user, seats[0]).await;
    let id = hold.reservation_id;
    let (applied, _) = commit_batch(&pool, &PaymentLane::default(), &[pay(user, id, token)]).await;
    let payment_id = result_as::<PaymentResult>(&applied[0]).payment_id;
    assert_eq!(balance_of(&pool, user).await, 100_000 - PRICE);

    let (applied, _) = commit_batch(&pool, &lane(), &[cancel(user, id, seats[0])]).await;
    assert_eq!(
        result_as::<CancelResult>(&applied[0]),
        &CancelResult {
            reservation_id: id,
            status: ReservationStatus::Cancelled,
            refunded: PRICE,
        }
    );
    let payment = payments(&pool).await.remove(0);
    assert_eq!(payment.id, payment_id);
    assert_eq!(payment.status, PaymentStatus::Refunded);
    assert!(payment.paid_at.is_some() && payment.refunded_at.is_some());
    let [Event::ReservationCancelled(reservation_event), Event::PaymentRefunded(refund), Event::BalanceChanged(change)] =
        applied[0].events.as_slice()
    else {
        panic!("unexpected events {:?}", applied[0].events);
    };
    assert_eq!(reservation_event.status, "CANCELLED");
    assert_eq!(
        refund,
        &PaymentChanged {
            payment_id,
            reservation_id: id,
            user_id: user,
            amount: PRICE,
            status: "REFUNDED".into(),
            paid_at: payment.paid_at.expect("paid"),
        }
    );
    assert_eq!(
        (
            change.kind,
            change.amount,
            change.balance_after,
            change.payment_id
        ),
        (BalanceChangeKind::Refund, PRICE, 100_000, Some(payment_id))
    );

    assert_eq!(balance_of(&pool, user).await, 100_000);
    let refunds = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM balance_histories
           WHERE user_id = $1 AND type = 'REFUND' AND payment_id = $2"#,
        user,
        payment_id
    )
    .fetch_one(&pool)
    .await
    .expect("refunds");
    assert_eq!(refunds, 1);
    assert_eq!(
        reservation(&pool, id).await.status,
        ReservationStatus::Cancelled
    );
    assert_eq!(seat_map(&pool, &seats).await, (vec![false, false], 2));
}

#[sqlx::test(migrations = "../migrations")]
async fn expiring_a_lapsed_hold_frees_the_seat(pool: PgPool) {
    let (_, seats) = schedule(&pool, 2).await;
    let user = user_with_balance(&pool, 0).await;
    let hold = held_seat(&pool, user, seats[0]).await;
    let id = hold.reservation_id;

    // Not due yet: nothing to do.
    let applied = commit_unchanged(&pool, &lane(), &[expire(id, seats[0])]).await;
    assert_eq!(
        result_as::<ExpireResult>(&applied[0]),
        &ExpireResult {
            reservation_id: id,
            expired: false,
            status: ReservationStatus::Pending,
        }
    );

    lapse(&pool, id).await;
    let (applied, _) = commit_batch(
        &pool,
        &lane(),
        &[expire(id, seats[0]), expire(id, seats[0])],
    )
    .await;
    assert_eq!(
        result_as::<ExpireResult>(&applied[0]),
        &ExpireResult {
            reservation_id: id,
            expired: true,
            status: ReservationStatus::Expired,
        }
    );
    assert!(matches!(
        applied[0].events.as_slice(),
        [Event::ReservationExpired(e)] if e.reservation_id == id && e.status == "EXPIRED"
    ));
    // A second expire request finds it expired already.
    assert_eq!(
        result_as::<ExpireResult>(&applied[1]),
        &ExpireResult {
            reservation_id: id,
            expired: false,
            status: ReservationStatus::Expired,
        }
    );
    assert_eq!(
        reservation(&pool, id).await.status,
        ReservationStatus::Expired
    );
    // Counted back once.
    assert_eq!(seat_map(&pool, &seats).await, (vec![false, false], 2));
}

#[sqlx::test(migrations = "../migrations")]
async fn paying_a_held_seat_debits_the_balance_once(pool: PgPool) {
    let (schedule_id, seats) = schedule(&pool, 2).await;
    let user = user_with_balance(&pool, 100_000).await;
    let token = admitted(&pool, user, schedule_id).await;
    let hold = held_seat(&pool, user, seats[0]).await;
    let id = hold.reservation_id;

    // The same reservation paid twice in one batch, then once more.
    let (applied, finished) = commit_batch(
        &pool,
        &PaymentLane::default(),
        &[pay(user, id, token), pay(user, id, token)],
    )
    .await;
    assert!(finished.is_empty());
    let result = result_as::<PaymentResult>(&applied[0]);
    assert_eq!(
        (result.reservation_id, result.amount, result.balance),
        (id, PRICE, 100_000 - PRICE)
    );
    assert_eq!(rejection(&applied[1]), Some(ErrorCode::InvalidState));
    let (again, _) = commit_batch(&pool, &PaymentLane::default(), &[pay(user, id, token)]).await;
    assert_eq!(rejection(&again[0]), Some(ErrorCode::InvalidState));

    let payment = payments(&pool).await;
    assert_eq!(payment.len(), 1, "one payment row");
    let payment = &payment[0];
    assert_eq!(
        (
            payment.id,
            payment.reservation_id,
            payment.user_id,
            payment.amount,
            payment.method,
            payment.status
        ),
        (
            result.payment_id,
            Some(id),
            user,
            PRICE,
            PaymentMethod::Balance,
            PaymentStatus::Success
        )
    );
    let [Event::PaymentSucceeded(payment_event), Event::ReservationConfirmed(confirmed), Event::BalanceChanged(change)] =
        applied[0].events.as_slice()
    else {
        panic!("unexpected events {:?}", applied[0].events);
    };
    assert_eq!(payment_event.status, "SUCCESS");
    assert_eq!(payment_event.payment_id, payment.id);
    assert_eq!(
        (confirmed.status.as_str(), confirmed.expires_at),
        ("CONFIRMED", None::<DateTime<Utc>>)
    );
    let history_id = change.history_id;
    let expected = spent(user, PRICE, 100_000 - PRICE, payment.id, history_id);
    assert_eq!(*change, expected);

    assert_eq!(balance_of(&pool, user).await, 100_000 - PRICE);
    let row = reservation(&pool, id).await;
    assert_eq!(row.status, ReservationStatus::Confirmed);
    assert!(row.confirmed);
    let queue = sqlx::query_scalar!(
        r#"SELECT status AS "status: QueueStatus" FROM reservation_queue WHERE token = $1"#,
        token
    )
    .fetch_one(&pool)
    .await
    .expect("queue token");
    assert_eq!(queue, QueueStatus::Expired, "the queue token is used up");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_refused_payment_changes_nothing(pool: PgPool) {
    let (schedule_id, seats) = schedule(&pool, 3).await;
    let (poor, other) = (
        user_with_balance(&pool, PRICE - 1).await,
        user_with_balance(&pool, 100_000).await,
    );
    let token = admitted(&pool, poor, schedule_id).await;
    let unaffordable = held_seat(&pool, poor, seats[0]).await.reservation_id;
    let lapsed = held_seat(&pool, other, seats[1]).await.reservation_id;
    lapse(&pool, lapsed).await;

    let cases = vec![
        (
            pay(poor, unaffordable, token),
            ErrorCode::InsufficientBalance,
        ),
        (pay(other, unaffordable, token), ErrorCode::Forbidden),
        (pay(other, lapsed, token), ErrorCode::HoldExpired),
        (pay(other, lapsed + 1_000, token), ErrorCode::NotFound),
    ];
    commit_refused(&pool, &PaymentLane::default(), cases).await;
    assert_eq!(balance_of(&pool, poor).await, PRICE - 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn concurrent_holds_of_one_seat_let_exactly_one_win(pool: PgPool) {
    let (_, seats) = schedule(&pool, 2).await;
    let mut batches = Vec::new();
    for _ in 0..4 {
        let user = user_with_balance(&pool, 0).await;
        batches.push(vec![hold(user, seats[0])]);
    }

    race_for_one(&pool, lane(), batches, ErrorCode::SeatTaken).await;

    let reservations = sqlx::query!(
        r#"SELECT status AS "status: ReservationStatus" FROM reservations WHERE seat_id = $1"#,
        seats[0]
    )
    .fetch_all(&pool)
    .await
    .expect("reservations");
    assert_eq!(reservations.len(), 1, "one reservation written");
    assert_eq!(reservations[0].status, ReservationStatus::Pending);
    let taken = vec![true, false];
    assert_eq!(seat_map(&pool, &seats).await, (taken, 1), "counted once");
}
