//! Payment lane (key: user id): pays a held reservation from the balance,
//! confirms it and expires the queue token.
//!
//! A batch is one group commit: `prepare` locks the batch's reservations,
//! then its balances (the lock order every lane keeps: reservation, then
//! balance), and names the payment and history rows; each payment is then
//! decided in memory; `finish` writes payments, confirmations, queue tokens
//! and the ledger with one statement each.

use std::collections::HashMap;

use api::outcomes::PaymentResult;
use api::status::{PaymentStatus, ReservationStatus};
use chrono::{DateTime, Utc};
use schemas::events::{BalanceChangeKind, PaymentChanged};
use schemas::requests::PayReservation;
use schemas::requests::PaymentRequest;
use schemas::{ErrorCode, Event, RequestEnvelope};
use sqlx::PgConnection;
use uuid::Uuid;

use super::reservation::{lock_reservations, owned_by, ReservationRow};
use crate::engine::{Applied, Lane};
use crate::error::{LaneError, LaneResult};
use crate::ledger::Ledger;
use crate::sequence::next_ids;

/// Applies `payment.pay`; holds one batch's locked rows and staged writes.
#[derive(Debug, Clone, Default)]
pub struct PaymentLane {
    reservations: HashMap<i64, ReservationRow>,
    ledger: Ledger,
    payment_ids: Vec<i64>,
    now: Option<DateTime<Utc>>,
    payments: Vec<StagedPayment>,
    confirmed: Vec<i64>,
    tokens: Vec<Uuid>,
}

/// A payment decided in memory, written by `finish`.
#[derive(Debug, Clone)]
struct StagedPayment {
    id: i64,
    reservation_id: i64,
    user_id: i64,
    amount: i64,
}

impl PaymentLane {
    async fn pay(
        &mut self,
        tx: &mut PgConnection,
        pay: &PayReservation,
        request_id: Uuid,
    ) -> LaneResult<Applied> {
        // Locked by `prepare`; updated here so a second payment for it in
        // the same batch sees it paid.
        let locked = self.reservations.get_mut(&pay.reservation_id);
        let reservation = match owned_by(locked, pay.user_id) {
            Ok(reservation) => reservation,
            Err(refused) => return Ok(refused),
        };
        let Some(paid_at) = self.now else {
            return Err(LaneError::Bug("payment applied without prepare".into()));
        };
        match reservation.status {
            ReservationStatus::Pending if !reservation.lapsed => {}
            ReservationStatus::Pending | ReservationStatus::Expired => {
                return Ok(Applied::rejected(
                    ErrorCode::HoldExpired,
                    "the hold expired before payment",
                ))
            }
            ReservationStatus::Confirmed => {
                return Ok(Applied::rejected(
                    ErrorCode::InvalidState,
                    "the reservation is already paid",
                ))
            }
            other @ ReservationStatus::Cancelled => {
                return Ok(Applied::rejected(
                    ErrorCode::InvalidState,
                    format!("the reservation is {other}"),
                ))
            }
        }
        let amount = reservation.total_amount;
        let Some(balance) = self.ledger.balance(tx, pay.user_id).await? else {
            return Ok(Applied::rejected(
                ErrorCode::NotFound,
                "user has no balance",
            ));
        };
        if balance < amount {
            return Ok(Applied::rejected(
                ErrorCode::InsufficientBalance,
                format!("balance {balance} is less than {amount}"),
            ));
        }
        let payment_id = match self.payment_ids.pop() {
            Some(id) => id,
            None => next_ids(tx, "payments", 1).await?[0],
        };
        let changed = self
            .ledger
            .change(
                tx,
                pay.user_id,
                BalanceChangeKind::Use,
                amount,
                Some(payment_id),
                Some("reservation payment"),
                request_id,
            )
            .await?;
        reservation.status = ReservationStatus::Confirmed;
        self.payments.push(StagedPayment {
            id: payment_id,
            reservation_id: reservation.id,
            user_id: pay.user_id,
            amount,
        });
        self.confirmed.push(reservation.id);
        self.tokens.push(pay.queue_token);
        Ok(Applied::succeeded(
            PaymentResult {
                payment_id,
                reservation_id: reservation.id,
                amount,
                balance: changed.balance_after,
            },
            vec![
                Event::PaymentSucceeded(PaymentChanged {
                    payment_id,
                    reservation_id: reservation.id,
                    user_id: pay.user_id,
                    amount,
                    status: PaymentStatus::Success.as_str().to_owned(),
                    paid_at,
                }),
                Event::ReservationConfirmed(reservation.changed(ReservationStatus::Confirmed)),
                Event::BalanceChanged(changed),
            ],
        ))
    }
}

impl Lane for PaymentLane {
    type Input = RequestEnvelope<PaymentRequest>;
    const NAME: &'static str = "payment";

    async fn prepare(&mut self, tx: &mut PgConnection, inputs: &[&Self::Input]) -> LaneResult<()> {
        let pays: Vec<&PayReservation> = inputs
            .iter()
            .map(|input| match &input.request {
                PaymentRequest::PayReservation(pay) => pay,
            })
            .collect();
        if pays.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = pays.iter().map(|p| p.reservation_id).collect();
        self.reservations = lock_reservations(tx, &ids)
            .await?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        let users: Vec<i64> = pays.iter().map(|p| p.user_id).collect();
        self.ledger.lock(tx, &users, pays.len()).await?;
        self.payment_ids = next_ids(tx, "payments", pays.len()).await?;
        // Pop from the back, so the first payment gets the lowest id.
        self.payment_ids.reverse();
        self.now = Some(
            sqlx::query_scalar!(r#"SELECT now() AS "now!""#)
                .fetch_one(&mut *tx)
                .await?,
        );
        Ok(())
    }

    async fn apply(&mut self, tx: &mut PgConnection, input: &Self::Input) -> LaneResult<Applied> {
        match &input.request {
            PaymentRequest::PayReservation(pay) => self.pay(tx, pay, input.request_id).await,
        }
    }

    async fn finish(self, tx: &mut PgConnection) -> LaneResult<Vec<Event>> {
        if self.payments.is_empty() {
            return Ok(Vec::new());
        }
        let p = &self.payments;
        sqlx::query!(
            "INSERT INTO payments (id, reservation_id, user_id, amount, method, status, paid_at)
             SELECT d.id, d.reservation_id, d.user_id, d.amount, 'BALANCE', 'SUCCESS', now()
             FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[])
                  AS d(id, reservation_id, user_id, amount)",
            &p.iter().map(|r| r.id).collect::<Vec<_>>(),
            &p.iter().map(|r| r.reservation_id).collect::<Vec<_>>(),
            &p.iter().map(|r| r.user_id).collect::<Vec<_>>(),
            &p.iter().map(|r| r.amount).collect::<Vec<_>>()
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "UPDATE reservations SET status = 'CONFIRMED', confirmed_at = now(),
                    version = version + 1, updated_at = now()
             WHERE id = ANY($1)",
            &self.confirmed
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "UPDATE reservation_queue SET status = 'EXPIRED', updated_at = now()
             WHERE token = ANY($1) AND status IN ('WAITING', 'ACTIVE')",
            &self.tokens
        )
        .execute(&mut *tx)
        .await?;
        self.ledger.flush(tx).await?;
        Ok(Vec::new())
    }
}
