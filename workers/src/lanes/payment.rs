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
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use schemas::events::{BalanceChangeKind, PaymentChanged};
use schemas::requests::PayReservation;
use schemas::{ErrorCode, Event, Request, RequestEnvelope, Topic};
use sqlx::PgConnection;
use uuid::Uuid;

use super::ledger::Ledger;
use super::next_ids;
use super::reservation::{lock_reservations, ReservationRow};
use crate::engine::{Applied, Lane};
use crate::error::{LaneError, LaneResult};

/// Applies `payment.pay`.
#[derive(Debug, Default)]
pub struct PaymentLane;

/// One batch's locked rows and staged writes.
#[derive(Debug, Default)]
pub struct PaymentBatch {
    reservations: HashMap<i64, ReservationRow>,
    ledger: Ledger,
    payment_ids: Vec<i64>,
    now: Option<DateTime<Utc>>,
    payments: Vec<(i64, i64, i64, i64)>,
    confirmed: Vec<i64>,
    tokens: Vec<Uuid>,
}

impl PaymentLane {
    async fn pay(
        &self,
        tx: &mut PgConnection,
        batch: &mut PaymentBatch,
        pay: &PayReservation,
        request_id: Uuid,
    ) -> LaneResult<Applied> {
        // Locked by `prepare`; updated here so a second payment for it in
        // the same batch sees it paid.
        let Some(reservation) = batch.reservations.get_mut(&pay.reservation_id) else {
            return Ok(Applied::rejected(
                ErrorCode::NotFound,
                "reservation not found",
            ));
        };
        if reservation.user_id != pay.user_id {
            return Ok(Applied::rejected(
                ErrorCode::Forbidden,
                "another user's reservation",
            ));
        }
        let Some(paid_at) = batch.now else {
            return Err(LaneError::Bug("payment applied without prepare".into()));
        };
        match reservation.status.as_str() {
            "PENDING" if !reservation.lapsed => {}
            "PENDING" | "EXPIRED" => {
                return Ok(Applied::rejected(
                    ErrorCode::HoldExpired,
                    "the hold expired before payment",
                ))
            }
            "CONFIRMED" => {
                return Ok(Applied::rejected(
                    ErrorCode::InvalidState,
                    "the reservation is already paid",
                ))
            }
            other => {
                return Ok(Applied::rejected(
                    ErrorCode::InvalidState,
                    format!("the reservation is {other}"),
                ))
            }
        }
        let amount = reservation.total_amount;
        let Some(balance) = batch.ledger.balance(tx, pay.user_id).await? else {
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
        let payment_id = match batch.payment_ids.pop() {
            Some(id) => id,
            None => next_ids(tx, "payments", 1).await?[0],
        };
        let changed = batch
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
        reservation.status = "CONFIRMED".into();
        batch
            .payments
            .push((payment_id, reservation.id, pay.user_id, amount));
        batch.confirmed.push(reservation.id);
        batch.tokens.push(pay.queue_token);
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
                    status: "SUCCESS".into(),
                    paid_at,
                }),
                Event::ReservationConfirmed(reservation.changed("CONFIRMED")),
                Event::BalanceChanged(changed),
            ],
        ))
    }
}

#[async_trait]
impl Lane for PaymentLane {
    type Input = RequestEnvelope;
    type Batch = PaymentBatch;

    fn name(&self) -> &'static str {
        "payment"
    }

    fn topic(&self) -> Topic {
        Topic::PaymentRequests
    }

    async fn prepare(
        &self,
        tx: &mut PgConnection,
        batch: &mut PaymentBatch,
        inputs: &[&RequestEnvelope],
    ) -> LaneResult<()> {
        let pays: Vec<&PayReservation> = inputs
            .iter()
            .filter_map(|input| match &input.request {
                Request::PayReservation(pay) => Some(pay),
                _ => None,
            })
            .collect();
        if pays.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = pays.iter().map(|p| p.reservation_id).collect();
        batch.reservations = lock_reservations(tx, &ids)
            .await?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        let users: Vec<i64> = pays.iter().map(|p| p.user_id).collect();
        batch.ledger.lock(tx, &users, pays.len()).await?;
        batch.payment_ids = next_ids(tx, "payments", pays.len()).await?;
        // Pop from the back, so the first payment gets the lowest id.
        batch.payment_ids.reverse();
        batch.now = Some(
            sqlx::query_scalar("SELECT now()")
                .fetch_one(&mut *tx)
                .await?,
        );
        Ok(())
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        batch: &mut PaymentBatch,
        envelope: &RequestEnvelope,
    ) -> LaneResult<Applied> {
        match &envelope.request {
            Request::PayReservation(pay) => self.pay(tx, batch, pay, envelope.request_id).await,
            _ => Ok(Applied::rejected(
                ErrorCode::InvalidRequest,
                "not a payment request",
            )),
        }
    }

    async fn finish(&self, tx: &mut PgConnection, batch: PaymentBatch) -> LaneResult<Vec<Event>> {
        if batch.payments.is_empty() {
            return Ok(Vec::new());
        }
        let p = &batch.payments;
        sqlx::query(
            "INSERT INTO payments (id, reservation_id, user_id, amount, method, status, paid_at)
             SELECT d.id, d.reservation_id, d.user_id, d.amount, 'BALANCE', 'SUCCESS', now()
             FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[])
                  AS d(id, reservation_id, user_id, amount)",
        )
        .bind(p.iter().map(|r| r.0).collect::<Vec<_>>())
        .bind(p.iter().map(|r| r.1).collect::<Vec<_>>())
        .bind(p.iter().map(|r| r.2).collect::<Vec<_>>())
        .bind(p.iter().map(|r| r.3).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE reservations SET status = 'CONFIRMED', confirmed_at = now(),
                    version = version + 1, updated_at = now()
             WHERE id = ANY($1)",
        )
        .bind(&batch.confirmed)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE reservation_queue SET status = 'EXPIRED', updated_at = now()
             WHERE token = ANY($1) AND status IN ('WAITING', 'ACTIVE')",
        )
        .bind(&batch.tokens)
        .execute(&mut *tx)
        .await?;
        batch.ledger.flush(tx).await?;
        Ok(Vec::new())
    }
}
