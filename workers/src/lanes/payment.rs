//! Payment lane (key: user id): pays a held reservation from the balance,
//! confirms it and expires the queue token.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use schemas::events::{BalanceChangeKind, PaymentChanged};
use schemas::requests::PayReservation;
use schemas::{ErrorCode, Event, Request, RequestEnvelope, Topic};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::ledger;
use super::reservation::lock_reservation;
use crate::engine::{Applied, Lane};

/// Applies `payment.pay`.
#[derive(Debug, Default)]
pub struct PaymentLane;

impl PaymentLane {
    async fn pay(
        &self,
        tx: &mut PgConnection,
        pay: &PayReservation,
        request_id: Uuid,
    ) -> Result<Applied, sqlx::Error> {
        // Lock order everywhere: reservation, then payment, then balance.
        let Some(reservation) = lock_reservation(tx, pay.reservation_id).await? else {
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
        match reservation.status.as_str() {
            "PENDING" if reservation.expires_at > Utc::now() => {}
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
        let Some(balance) = ledger::lock(tx, pay.user_id).await? else {
            return Ok(Applied::rejected(
                ErrorCode::NotFound,
                "user has no balance",
            ));
        };
        if balance.balance < amount {
            return Ok(Applied::rejected(
                ErrorCode::InsufficientBalance,
                format!("balance {} is less than {amount}", balance.balance),
            ));
        }
        let (payment_id, paid_at): (i64, DateTime<Utc>) = sqlx::query_as(
            "INSERT INTO payments (reservation_id, user_id, amount, method, status, paid_at)
             VALUES ($1, $2, $3, 'BALANCE', 'SUCCESS', now()) RETURNING id, paid_at",
        )
        .bind(reservation.id)
        .bind(pay.user_id)
        .bind(amount)
        .fetch_one(&mut *tx)
        .await?;
        let changed = ledger::change(
            tx,
            balance,
            BalanceChangeKind::Use,
            amount,
            Some(payment_id),
            Some("reservation payment"),
            request_id,
        )
        .await?;
        sqlx::query(
            "UPDATE reservations SET status = 'CONFIRMED', confirmed_at = now(), version = version + 1,
                    updated_at = now()
             WHERE id = $1",
        )
        .bind(reservation.id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE reservation_queue SET status = 'EXPIRED', updated_at = now()
             WHERE token = $1 AND status IN ('WAITING', 'ACTIVE')",
        )
        .bind(pay.queue_token)
        .execute(&mut *tx)
        .await?;
        Ok(Applied::succeeded(
            json!({"payment_id": payment_id, "reservation_id": reservation.id, "amount": amount,
                   "balance": changed.balance_after}),
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
    type Batch = ();

    fn name(&self) -> &'static str {
        "payment"
    }

    fn topic(&self) -> Topic {
        Topic::PaymentRequests
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        _batch: &mut (),
        envelope: &RequestEnvelope,
    ) -> Result<Applied, sqlx::Error> {
        match &envelope.request {
            Request::PayReservation(pay) => self.pay(tx, pay, envelope.request_id).await,
            _ => Ok(Applied::rejected(
                ErrorCode::InvalidRequest,
                "not a payment request",
            )),
        }
    }
}
