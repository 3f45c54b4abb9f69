//! Requests the gateway (and the hold-expiry scheduler) publish to the
//! `*-requests` topics, and the lanes apply.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Topic;

/// Current version of every request payload.
pub const REQUEST_VERSION: u32 = 1;
/// Largest amount one charge may add, in won.
pub const MAX_CHARGE_AMOUNT: i64 = 10_000_000;

/// One request record: the envelope fields and the typed payload
/// (`{"request_id", "type", "version", "timestamp", "payload"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RequestEnvelope {
    /// Unique id of the request; the client polls `GET /v1/requests/{id}`.
    pub request_id: Uuid,
    /// Schema version of the payload.
    pub version: u32,
    /// When the request was accepted.
    pub timestamp: DateTime<Utc>,
    /// The request itself; `type` names it and `payload` carries it.
    #[serde(flatten)]
    pub request: Request,
}

impl RequestEnvelope {
    /// Wraps `request` with a fresh timestamp and the current version.
    pub fn new(request_id: Uuid, request: Request) -> Self {
        Self {
            request_id,
            version: REQUEST_VERSION,
            timestamp: Utc::now(),
            request,
        }
    }
}

/// Every request type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "payload")]
pub enum Request {
    /// Hold a seat for the user (reservation lane, key: seat id).
    #[serde(rename = "reservation.hold")]
    HoldSeat(HoldSeat),
    /// Cancel a hold, or a confirmed reservation with refund (reservation lane).
    #[serde(rename = "reservation.cancel")]
    CancelReservation(CancelReservation),
    /// Release an unpaid hold whose time ran out (reservation lane).
    #[serde(rename = "reservation.expire")]
    ExpireHold(ExpireHold),
    /// Pay a held reservation from the balance (payment lane, key: user id).
    #[serde(rename = "payment.pay")]
    PayReservation(PayReservation),
    /// Add money to a balance (charge lane, key: user id).
    #[serde(rename = "balance.charge")]
    ChargeBalance(ChargeBalance),
    /// Order items paid from the balance (order lane, key: user id).
    #[serde(rename = "order.place")]
    PlaceOrder(PlaceOrder),
}

/// Most distinct items one order may hold.
pub const MAX_ORDER_ITEMS: usize = 50;
/// Largest quantity of one item in one order.
pub const MAX_ITEM_QUANTITY: i32 = 1_000;

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderLine {
    /// The product stock (product and size).
    pub product_stock_id: i64,
    /// How many: 1 ..= [`MAX_ITEM_QUANTITY`].
    pub quantity: i32,
}

/// Payload of `order.place`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PlaceOrder {
    /// The buyer.
    pub user_id: i64,
    /// 1 ..= [`MAX_ORDER_ITEMS`] lines with distinct stocks.
    pub items: Vec<OrderLine>,
    /// Whether the order checks out the user's cart: on success the ordered
    /// lines leave the cart.
    #[serde(default)]
    pub from_cart: bool,
}

impl PlaceOrder {
    /// Checks counts, quantities and distinct stocks.
    pub fn validate(&self) -> Result<(), String> {
        if self.user_id <= 0 {
            return Err("user_id must be positive".into());
        }
        if self.items.is_empty() || self.items.len() > MAX_ORDER_ITEMS {
            return Err(format!("items must hold 1 to {MAX_ORDER_ITEMS} lines"));
        }
        let mut seen = std::collections::HashSet::new();
        for line in &self.items {
            if line.product_stock_id <= 0 {
                return Err("items.product_stock_id must be positive".into());
            }
            if !(1..=MAX_ITEM_QUANTITY).contains(&line.quantity) {
                return Err(format!("items.quantity must be 1 to {MAX_ITEM_QUANTITY}"));
            }
            if !seen.insert(line.product_stock_id) {
                return Err(format!("items names stock {} twice", line.product_stock_id));
            }
        }
        Ok(())
    }
}

/// Payload of `reservation.hold`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HoldSeat {
    /// The seat to hold.
    pub seat_id: i64,
    /// The user holding it.
    pub user_id: i64,
    /// The user's ACTIVE queue token for the seat's schedule.
    pub queue_token: Uuid,
}

/// Payload of `reservation.cancel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CancelReservation {
    /// The reservation to cancel.
    pub reservation_id: i64,
    /// Its seat (the partition key).
    pub seat_id: i64,
    /// The user asking; must own the reservation.
    pub user_id: i64,
}

/// Payload of `reservation.expire`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExpireHold {
    /// The hold to release.
    pub reservation_id: i64,
    /// Its seat (the partition key).
    pub seat_id: i64,
}

/// Payload of `payment.pay`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PayReservation {
    /// The held reservation to pay.
    pub reservation_id: i64,
    /// The paying user; must own the reservation.
    pub user_id: i64,
    /// The queue token, expired once the payment succeeds.
    pub queue_token: Uuid,
}

/// Payload of `balance.charge`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChargeBalance {
    /// Whose balance.
    pub user_id: i64,
    /// Won to add: 1 ..= [`MAX_CHARGE_AMOUNT`].
    pub amount: i64,
}

impl Request {
    /// The topic the request travels on.
    pub fn topic(&self) -> Topic {
        match self {
            Request::HoldSeat(_) | Request::CancelReservation(_) | Request::ExpireHold(_) => {
                Topic::ReservationRequests
            }
            Request::PayReservation(_) => Topic::PaymentRequests,
            Request::ChargeBalance(_) => Topic::ChargeRequests,
            Request::PlaceOrder(_) => Topic::OrderRequests,
        }
    }

    /// The partition key: the seat id on the reservation topic, the user id
    /// on the others.
    pub fn key(&self) -> String {
        match self {
            Request::HoldSeat(r) => r.seat_id.to_string(),
            Request::CancelReservation(r) => r.seat_id.to_string(),
            Request::ExpireHold(r) => r.seat_id.to_string(),
            Request::PayReservation(r) => r.user_id.to_string(),
            Request::ChargeBalance(r) => r.user_id.to_string(),
            Request::PlaceOrder(r) => r.user_id.to_string(),
        }
    }

    /// The `type` string on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            Request::HoldSeat(_) => "reservation.hold",
            Request::CancelReservation(_) => "reservation.cancel",
            Request::ExpireHold(_) => "reservation.expire",
            Request::PayReservation(_) => "payment.pay",
            Request::ChargeBalance(_) => "balance.charge",
            Request::PlaceOrder(_) => "order.place",
        }
    }

    /// The user the request acts for, if any.
    pub fn user_id(&self) -> Option<i64> {
        match self {
            Request::HoldSeat(r) => Some(r.user_id),
            Request::CancelReservation(r) => Some(r.user_id),
            Request::ExpireHold(_) => None,
            Request::PayReservation(r) => Some(r.user_id),
            Request::ChargeBalance(r) => Some(r.user_id),
            Request::PlaceOrder(r) => Some(r.user_id),
        }
    }

    /// Checks what a decoder cannot: ranges and positivity. Lanes call this
    /// on every record so a bad record produced by anyone is dead-lettered.
    pub fn validate(&self) -> Result<(), String> {
        fn positive(field: &str, v: i64) -> Result<(), String> {
            if v > 0 {
                Ok(())
            } else {
                Err(format!("{field} must be positive"))
            }
        }
        match self {
            Request::HoldSeat(r) => {
                positive("seat_id", r.seat_id)?;
                positive("user_id", r.user_id)
            }
            Request::CancelReservation(r) => {
                positive("reservation_id", r.reservation_id)?;
                positive("seat_id", r.seat_id)?;
                positive("user_id", r.user_id)
            }
            Request::ExpireHold(r) => {
                positive("reservation_id", r.reservation_id)?;
                positive("seat_id", r.seat_id)
            }
            Request::PayReservation(r) => {
                positive("reservation_id", r.reservation_id)?;
                positive("user_id", r.user_id)
            }
            Request::ChargeBalance(r) => {
                positive("user_id", r.user_id)?;
                positive("amount", r.amount)?;
                if r.amount > MAX_CHARGE_AMOUNT {
                    return Err(format!("amount must be at most {MAX_CHARGE_AMOUNT}"));
                }
                Ok(())
            }
            Request::PlaceOrder(r) => r.validate(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_wire_form_is_flat_with_type_and_payload() {
        let id = Uuid::nil();
        let env = RequestEnvelope::new(
            id,
            Request::ChargeBalance(ChargeBalance {
                user_id: 7,
                amount: 500,
            }),
        );
        let json = serde_json::to_value(&env).expect("serialize");
        assert_eq!(json["type"], "balance.charge");
        assert_eq!(json["version"], 1);
        assert_eq!(json["payload"]["amount"], 500);
        assert_eq!(json["request_id"], id.to_string());
        let back: RequestEnvelope = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, env);
        assert_eq!(back.request.key(), "7");
        assert_eq!(back.request.topic(), Topic::ChargeRequests);
    }

    #[test]
    fn validation_rejects_out_of_range_amounts() {
        let charge = |amount| Request::ChargeBalance(ChargeBalance { user_id: 1, amount });
        assert!(charge(0).validate().is_err());
        assert!(charge(-5).validate().is_err());
        assert!(charge(MAX_CHARGE_AMOUNT + 1).validate().is_err());
        assert!(charge(MAX_CHARGE_AMOUNT).validate().is_ok());
    }

    #[test]
    fn orders_need_distinct_bounded_lines() {
        let order = |items: Vec<(i64, i32)>| {
            Request::PlaceOrder(PlaceOrder {
                user_id: 1,
                items: items
                    .into_iter()
                    .map(|(product_stock_id, quantity)| OrderLine {
                        product_stock_id,
                        quantity,
                    })
                    .collect(),
                from_cart: false,
            })
        };
        assert!(order(vec![(1, 2), (2, 1)]).validate().is_ok());
        assert!(order(vec![]).validate().is_err());
        assert!(order(vec![(1, 0)]).validate().is_err());
        assert!(order(vec![(1, MAX_ITEM_QUANTITY + 1)]).validate().is_err());
        assert!(order(vec![(1, 1), (1, 2)]).validate().is_err());
        assert!(order(vec![(-1, 1)]).validate().is_err());
    }

    #[test]
    fn unknown_type_does_not_decode() {
        let raw = r#"{"request_id":"00000000-0000-0000-0000-000000000000","version":1,"timestamp":"2026-01-01T00:00:00Z","type":"nope","payload":{}}"#;
        assert!(serde_json::from_str::<RequestEnvelope>(raw).is_err());
    }
}
