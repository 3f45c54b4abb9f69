//! Result events the outbox relay publishes for downstream consumers.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Topic;

/// Current version of every event payload.
pub const EVENT_VERSION: u32 = 1;

/// One event record (`{"event_id", "type", "version", "timestamp",
/// "request_id", "payload"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EventEnvelope {
    /// Unique id of the event; consumers deduplicate on it.
    pub event_id: Uuid,
    /// Schema version of the payload.
    pub version: u32,
    /// When the change happened.
    pub timestamp: DateTime<Utc>,
    /// The request that caused the event, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<Uuid>,
    /// The event itself; `type` names it and `payload` carries it.
    #[serde(flatten)]
    pub event: Event,
}

impl EventEnvelope {
    /// Wraps `event` with a fresh id and timestamp.
    pub fn new(request_id: Option<Uuid>, event: Event) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            version: EVENT_VERSION,
            timestamp: Utc::now(),
            request_id,
            event,
        }
    }
}

/// How a balance changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BalanceChangeKind {
    /// Money added by the user.
    Charge,
    /// Money spent on a payment.
    Use,
    /// Money returned by a cancelled payment.
    Refund,
}

impl BalanceChangeKind {
    /// The name stored in `balance_histories.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            BalanceChangeKind::Charge => "CHARGE",
            BalanceChangeKind::Use => "USE",
            BalanceChangeKind::Refund => "REFUND",
        }
    }
}

/// Every event type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "payload")]
pub enum Event {
    /// A seat was held (reservation PENDING).
    #[serde(rename = "reservation.held")]
    ReservationHeld(ReservationChanged),
    /// A hold was paid (reservation CONFIRMED).
    #[serde(rename = "reservation.confirmed")]
    ReservationConfirmed(ReservationChanged),
    /// A reservation was cancelled by its user.
    #[serde(rename = "reservation.cancelled")]
    ReservationCancelled(ReservationChanged),
    /// An unpaid hold expired and the seat returned to sale.
    #[serde(rename = "reservation.expired")]
    ReservationExpired(ReservationChanged),
    /// A payment succeeded.
    #[serde(rename = "payment.succeeded")]
    PaymentSucceeded(PaymentChanged),
    /// A payment was refunded.
    #[serde(rename = "payment.refunded")]
    PaymentRefunded(PaymentChanged),
    /// A balance changed.
    #[serde(rename = "balance.changed")]
    BalanceChanged(BalanceChanged),
    /// An order was paid: the feed of the external data platform and of the
    /// stats lane.
    #[serde(rename = "order.paid")]
    OrderPaid(OrderPaid),
    /// A product's totals for one business day changed.
    #[serde(rename = "product.daily_stats")]
    ProductDailyStats(ProductDailyStats),
}

/// One line of a paid order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderPaidItem {
    /// The product.
    pub product_id: i64,
    /// The product stock (product and size).
    pub product_stock_id: i64,
    /// The size.
    pub size: String,
    /// How many.
    pub quantity: i32,
    /// Price of one, in won, at the time of the order.
    pub unit_price: i64,
}

/// Payload of `order.paid`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderPaid {
    /// The order.
    pub order_id: i64,
    /// The buyer.
    pub user_id: i64,
    /// The payment.
    pub payment_id: i64,
    /// The lines.
    pub items: Vec<OrderPaidItem>,
    /// Sum of quantity times unit price, in won.
    pub total_amount: i64,
    /// When the order was paid.
    pub paid_at: DateTime<Utc>,
}

/// Payload of `product.daily_stats`: the totals after the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProductDailyStats {
    /// The product.
    pub product_id: i64,
    /// The business day (in the configured business time zone).
    pub date: chrono::NaiveDate,
    /// Paid orders that contained the product that day.
    pub total_orders: i64,
    /// Units sold that day.
    pub total_quantity: i64,
    /// Won taken for the product that day.
    pub total_sales_amount: i64,
}

/// Payload of the `reservation.*` events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReservationChanged {
    /// The reservation.
    pub reservation_id: i64,
    /// Its seat.
    pub seat_id: i64,
    /// Its schedule.
    pub schedule_id: i64,
    /// Its user.
    pub user_id: i64,
    /// Status after the change: PENDING, CONFIRMED, CANCELLED or EXPIRED.
    pub status: String,
    /// Price of the seat, in won.
    pub amount: i64,
    /// When an unpaid hold expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Payload of the `payment.*` events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentChanged {
    /// The payment.
    pub payment_id: i64,
    /// The reservation it pays.
    pub reservation_id: i64,
    /// The payer.
    pub user_id: i64,
    /// Amount in won.
    pub amount: i64,
    /// Status after the change: SUCCESS or REFUNDED.
    pub status: String,
    /// When the payment completed.
    pub paid_at: DateTime<Utc>,
}

/// Payload of `balance.changed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BalanceChanged {
    /// Whose balance.
    pub user_id: i64,
    /// The history row written for the change.
    pub history_id: i64,
    /// What changed it.
    pub kind: BalanceChangeKind,
    /// Won added (CHARGE, REFUND) or taken (USE); always positive.
    pub amount: i64,
    /// Balance after the change.
    pub balance_after: i64,
    /// The payment involved, for USE and REFUND.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<i64>,
}

impl Event {
    /// The topic the event is published on.
    pub fn topic(&self) -> Topic {
        match self {
            Event::ReservationHeld(_)
            | Event::ReservationConfirmed(_)
            | Event::ReservationCancelled(_)
            | Event::ReservationExpired(_) => Topic::ReservationEvents,
            Event::PaymentSucceeded(_) | Event::PaymentRefunded(_) => Topic::PaymentEvents,
            Event::BalanceChanged(_) => Topic::BalanceEvents,
            Event::OrderPaid(_) => Topic::OrderEvents,
            Event::ProductDailyStats(_) => Topic::ProductDailyStats,
        }
    }

    /// The event's `type` on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::ReservationHeld(_) => "reservation.held",
            Event::ReservationConfirmed(_) => "reservation.confirmed",
            Event::ReservationCancelled(_) => "reservation.cancelled",
            Event::ReservationExpired(_) => "reservation.expired",
            Event::PaymentSucceeded(_) => "payment.succeeded",
            Event::PaymentRefunded(_) => "payment.refunded",
            Event::BalanceChanged(_) => "balance.changed",
            Event::OrderPaid(_) => "order.paid",
            Event::ProductDailyStats(_) => "product.daily_stats",
        }
    }

    /// The partition key: seat id for reservation events, user id otherwise.
    pub fn key(&self) -> String {
        match self {
            Event::ReservationHeld(r)
            | Event::ReservationConfirmed(r)
            | Event::ReservationCancelled(r)
            | Event::ReservationExpired(r) => r.seat_id.to_string(),
            Event::PaymentSucceeded(p) | Event::PaymentRefunded(p) => p.user_id.to_string(),
            Event::BalanceChanged(b) => b.user_id.to_string(),
            Event::OrderPaid(o) => o.user_id.to_string(),
            Event::ProductDailyStats(s) => s.product_id.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_name_is_the_wire_tag() {
        let env = EventEnvelope::new(
            None,
            Event::BalanceChanged(BalanceChanged {
                user_id: 1,
                history_id: 1,
                kind: BalanceChangeKind::Charge,
                amount: 1,
                balance_after: 1,
                payment_id: None,
            }),
        );
        let wire = serde_json::to_value(&env).expect("serialize");
        assert_eq!(wire["type"], env.event.type_name());
    }

    #[test]
    fn balance_event_round_trips_with_type_tag() {
        let env = EventEnvelope::new(
            Some(Uuid::nil()),
            Event::BalanceChanged(BalanceChanged {
                user_id: 3,
                history_id: 9,
                kind: BalanceChangeKind::Use,
                amount: 100,
                balance_after: 400,
                payment_id: Some(2),
            }),
        );
        let json = serde_json::to_value(&env).expect("serialize");
        assert_eq!(json["type"], "balance.changed");
        assert_eq!(json["payload"]["kind"], "USE");
        let back: EventEnvelope = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, env);
        assert_eq!(back.event.topic(), Topic::BalanceEvents);
        assert_eq!(back.event.key(), "3");
    }
}
