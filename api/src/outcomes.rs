//! Accepted requests and their outcomes: the `202` of every state-changing
//! call, `GET /v1/requests/{id}`, and the results lanes record.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::status::{RequestStatus, ReservationStatus};

/// `202 Accepted`: the request is durable in Kafka and will be decided;
/// poll `Location` (`/v1/requests/{request_id}`) for the outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// The request's id.
    pub request_id: Uuid,
    /// `PENDING`, or the outcome already reached when an
    /// `Idempotency-Key` repeats an earlier call.
    pub status: RequestStatus,
}

/// `GET /v1/requests/{id}`: where a request stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RequestOutcome {
    /// The request's id.
    pub request_id: Uuid,
    /// Its type: `reservation.hold`, `reservation.cancel`,
    /// `reservation.expire`, `payment.pay`, `balance.charge` or
    /// `order.place`.
    #[serde(rename = "type")]
    pub request_type: String,
    /// Where it stands.
    pub status: RequestStatus,
    /// What it did, once `SUCCEEDED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<RequestResult>,
    /// Why not, once `REJECTED` or `FAILED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<OutcomeError>,
}

impl RequestOutcome {
    /// The code of a refusal or failure (`SEAT_TAKEN`, …), once decided so.
    pub fn error_code(&self) -> Option<&str> {
        self.error.as_ref().map(|error| error.code.as_str())
    }

    /// The result, when the request succeeded with a `T`
    /// (`outcome.result_as::<HoldResult>()`).
    pub fn result_as<T>(&self) -> Option<&T>
    where
        for<'a> &'a T: TryFrom<&'a RequestResult>,
    {
        self.result.as_ref()?.try_into().ok()
    }

    /// What a succeeded hold did.
    pub fn held(&self) -> Option<&HoldResult> {
        self.result_as()
    }

    /// What a succeeded cancellation did.
    pub fn cancelled(&self) -> Option<&CancelResult> {
        self.result_as()
    }

    /// What a succeeded order did.
    pub fn ordered(&self) -> Option<&OrderResult> {
        self.result_as()
    }
}

/// A [`RequestResult`] of another kind than the one asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtherResult;

/// A refusal or failure of a decided request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OutcomeError {
    /// Stable code: `SEAT_TAKEN`, `INSUFFICIENT_BALANCE`, `OUT_OF_STOCK`,
    /// `HOLD_EXPIRED`, `NOT_FOUND`, `INVALID_STATE`, `FORBIDDEN`,
    /// `QUEUE_TOKEN_INVALID`, `INVALID_REQUEST`, `BALANCE_LIMIT_EXCEEDED`,
    /// `INTERNAL` or `RECORD_LOST`.
    pub code: String,
    /// For people.
    pub message: String,
}

/// What a succeeded request did; its shape follows the request's `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum RequestResult {
    /// `reservation.hold`.
    Held(HoldResult),
    /// `reservation.cancel`.
    Cancelled(CancelResult),
    /// `reservation.expire`.
    Expired(ExpireResult),
    /// `payment.pay`.
    Paid(PaymentResult),
    /// `balance.charge`.
    Charged(ChargeResult),
    /// `order.place`.
    Ordered(OrderResult),
}

/// Result of `reservation.hold`: the seat is held until `expires_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldResult {
    /// The new reservation (PENDING).
    pub reservation_id: i64,
    /// The held seat.
    pub seat_id: i64,
    /// Its schedule.
    pub schedule_id: i64,
    /// What paying it will cost, in won.
    pub amount: i64,
    /// When the hold lapses unless paid.
    pub expires_at: DateTime<Utc>,
}

/// Result of `reservation.cancel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelResult {
    /// The reservation.
    pub reservation_id: i64,
    /// CANCELLED.
    pub status: ReservationStatus,
    /// Won returned to the balance (0 for an unpaid hold).
    pub refunded: i64,
}

/// Result of `reservation.expire` (the hold-expiry job's request).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpireResult {
    /// The reservation.
    pub reservation_id: i64,
    /// Whether this request expired it (false: it was paid or cancelled
    /// first).
    pub expired: bool,
    /// Its status afterwards.
    pub status: ReservationStatus,
}

/// Result of `payment.pay`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentResult {
    /// The payment.
    pub payment_id: i64,
    /// The reservation it confirmed.
    pub reservation_id: i64,
    /// Won paid.
    pub amount: i64,
    /// Balance afterwards.
    pub balance: i64,
}

/// Result of `balance.charge`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChargeResult {
    /// Whose balance.
    pub user_id: i64,
    /// Balance afterwards.
    pub balance: i64,
    /// The history row of the charge.
    pub history_id: i64,
}

/// Result of `order.place`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderResult {
    /// The order (PAID).
    pub order_id: i64,
    /// Its payment.
    pub payment_id: i64,
    /// Won paid.
    pub total_amount: i64,
    /// Balance afterwards.
    pub balance: i64,
}

macro_rules! into_result {
    ($($ty:ident => $variant:ident),+) => {$(
        impl From<$ty> for RequestResult {
            fn from(result: $ty) -> Self {
                RequestResult::$variant(result)
            }
        }

        impl<'a> TryFrom<&'a RequestResult> for &'a $ty {
            type Error = OtherResult;

            fn try_from(result: &'a RequestResult) -> Result<Self, OtherResult> {
                match result {
                    RequestResult::$variant(result) => Ok(result),
                    _ => Err(OtherResult),
                }
            }
        }
    )+};
}

into_result!(HoldResult => Held, CancelResult => Cancelled, ExpireResult => Expired,
    PaymentResult => Paid, ChargeResult => Charged, OrderResult => Ordered);

#[cfg(test)]
mod tests {
    use super::*;

    /// Each result reads back as its own variant: no shape is a subset of
    /// another's, so the untagged union (and its `oneOf`) is unambiguous.
    #[test]
    fn every_result_reads_back_as_itself() {
        let results: Vec<RequestResult> = vec![
            HoldResult {
                reservation_id: 1,
                seat_id: 2,
                schedule_id: 3,
                amount: 4,
                expires_at: Utc::now(),
            }
            .into(),
            CancelResult {
                reservation_id: 1,
                status: ReservationStatus::Cancelled,
                refunded: 0,
            }
            .into(),
            ExpireResult {
                reservation_id: 1,
                expired: true,
                status: ReservationStatus::Expired,
            }
            .into(),
            PaymentResult {
                payment_id: 1,
                reservation_id: 2,
                amount: 3,
                balance: 4,
            }
            .into(),
            ChargeResult {
                user_id: 1,
                balance: 2,
                history_id: 3,
            }
            .into(),
            OrderResult {
                order_id: 1,
                payment_id: 2,
                total_amount: 3,
                balance: 4,
            }
            .into(),
        ];
        for result in results {
            let json = serde_json::to_string(&result).expect("serialize");
            let back: RequestResult = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(back, result, "{json}");
        }
    }
}
