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

// `R` is `Request` (any request) on the wire; a lane works on the requests
// of its own topic (`RequestEnvelope<ReservationRequest>`, ...), see
// `RequestEnvelope::for_topic`.
/// One request record: the envelope fields and the typed payload
/// (`{"request_id", "type", "version", "timestamp", "payload"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "RequestEnvelope")]
pub struct RequestEnvelope<R = Request> {
    /// Unique id of the request; the client polls `GET /v1/requests/{id}`.
    pub request_id: Uuid,
    /// Schema version of the payload.
    pub version: u32,
    /// When the request was accepted.
    pub timestamp: DateTime<Utc>,
    /// The request itself; `type` names it and `payload` carries it.
    #[serde(flatten)]
    pub request: R,
}

impl<R> RequestEnvelope<R> {
    /// Wraps `request` with a fresh timestamp and the current version.
    pub fn new(request_id: Uuid, request: R) -> Self {
        Self {
            request_id,
            version: REQUEST_VERSION,
            timestamp: Utc::now(),
            request,
        }
    }
}

impl RequestEnvelope {
    /// The envelope with its request as one of topic `T`'s, or the request
    /// back when it belongs on another topic.
    pub fn for_topic<T: TopicRequest>(self) -> Result<RequestEnvelope<T>, Request> {
        Ok(RequestEnvelope {
            request_id: self.request_id,
            version: self.version,
            timestamp: self.timestamp,
            request: T::try_from(self.request)?,
        })
    }
}

/// The requests of one topic: what its lane receives, and all it can.
pub trait TopicRequest:
    TryFrom<Request, Error = Request> + Into<Request> + Clone + Send + Sync + 'static
{
    /// The topic they travel on.
    const TOPIC: Topic;

    /// The `type` string on the wire.
    fn type_name(&self) -> &'static str;

    /// The user the request acts for, if any.
    fn user_id(&self) -> Option<i64>;
}

/// Declares the request enum of one topic: its variants are [`Request`]'s
/// of that topic, under the same names.
macro_rules! topic_requests {
    ($(#[$meta:meta])* $name:ident on $topic:ident { $($variant:ident($payload:ident)),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub enum $name {
            $(
                #[doc = concat!("See [`Request::", stringify!($variant), "`].")]
                $variant($payload),
            )+
        }

        impl TryFrom<Request> for $name {
            type Error = Request;

            fn try_from(request: Request) -> Result<Self, Request> {
                match request {
                    $(Request::$variant(r) => Ok(Self::$variant(r)),)+
                    #[allow(unreachable_patterns)]
                    other => Err(other),
                }
            }
        }

        impl From<$name> for Request {
            fn from(request: $name) -> Self {
                match request {
                    $($name::$variant(r) => Request::$variant(r),)+
                }
            }
        }

        impl TopicRequest for $name {
            const TOPIC: Topic = Topic::$topic;

            fn type_name(&self) -> &'static str {
                match self {
                    $($name::$variant(_) => <$payload as Payload>::TYPE,)+
                }
            }

            fn user_id(&self) -> Option<i64> {
                match self {
                    $($name::$variant(r) => Payload::user_id(r),)+
                }
            }
        }
    };
}

topic_requests! {
    /// The requests of `reservation-requests` (the reservation lane; key: seat id).
    ReservationRequest on ReservationRequests {
        HoldSeat(HoldSeat),
        CancelReservation(CancelReservation),
        ExpireHold(ExpireHold),
    }
}

topic_requests! {
    /// The requests of `payment-requests` (the payment lane; key: user id).
    PaymentRequest on PaymentRequests { PayReservation(PayReservation) }
}

topic_requests! {
    /// The requests of `charge-requests` (the charge lane; key: user id).
    ChargeRequest on ChargeRequests { ChargeBalance(ChargeBalance) }
}

topic_requests! {
    /// The requests of `order-requests` (the order lane; key: user id).
    OrderRequest on OrderRequests { PlaceOrder(PlaceOrder) }
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

/// What every request payload says of itself; [`Request`] and the
/// per-topic enums answer by asking their payload.
pub trait Payload {
    /// The `type` string on the wire.
    const TYPE: &'static str;
    /// The topic it travels on.
    const TOPIC: Topic;

    /// The user the request acts for, if any.
    fn user_id(&self) -> Option<i64>;
}

/// Implements [`Payload`] for `$payload`: its wire type, its topic, and
/// who it acts for.
macro_rules! payload {
    ($payload:ident, $type:literal, $topic:ident, |$r:ident| $user:expr) => {
        impl Payload for $payload {
            const TYPE: &'static str = $type;
            const TOPIC: Topic = Topic::$topic;

            fn user_id(&self) -> Option<i64> {
                let $r = self;
                $user
            }
        }
    };
}

payload!(HoldSeat, "reservation.hold", ReservationRequests, |r| Some(
    r.user_id
));
payload!(
    CancelReservation,
    "reservation.cancel",
    ReservationRequests,
    |r| Some(r.user_id)
);
payload!(
    ExpireHold,
    "reservation.expire",
    ReservationRequests,
    |_r| None
);
payload!(PayReservation, "payment.pay", PaymentRequests, |r| Some(
    r.user_id
));
payload!(ChargeBalance, "balance.charge", ChargeRequests, |r| Some(
    r.user_id
));
payload!(PlaceOrder, "order.place", OrderRequests, |r| Some(
    r.user_id
));

/// The `TYPE` of `_payload`'s type.
fn type_of<P: Payload>(_payload: &P) -> &'static str {
    P::TYPE
}

/// The `TOPIC` of `_payload`'s type.
fn topic_of<P: Payload>(_payload: &P) -> Topic {
    P::TOPIC
}

/// `$body` with `$r` bound to the payload of `$request`, whatever its type.
macro_rules! with_payload {
    ($request:expr, $r:ident => $body:expr) => {
        match $request {
            Request::HoldSeat($r) => $body,
            Request::CancelReservation($r) => $body,
            Request::ExpireHold($r) => $body,
            Request::PayReservation($r) => $body,
            Request::ChargeBalance($r) => $body,
            Request::PlaceOrder($r) => $body,
        }
    };
}

impl Request {
    /// Every request type, in a fixed order: a signed request id carries
    /// the index of its type (the gateway's `auth::request_ids`), so a type
    /// keeps its place for as long as ids are kept; new types go at the end.
    pub const TYPES: [&'static str; 6] = [
        HoldSeat::TYPE,
        CancelReservation::TYPE,
        ExpireHold::TYPE,
        PayReservation::TYPE,
        ChargeBalance::TYPE,
        PlaceOrder::TYPE,
    ];

    /// Where the request's type stands in [`Request::TYPES`].
    pub fn type_index(&self) -> usize {
        match self {
            Request::HoldSeat(_) => 0,
            Request::CancelReservation(_) => 1,
            Request::ExpireHold(_) => 2,
            Request::PayReservation(_) => 3,
            Request::ChargeBalance(_) => 4,
            Request::PlaceOrder(_) => 5,
        }
    }

    /// The topic the request travels on.
    pub fn topic(&self) -> Topic {
        with_payload!(self, r => topic_of(r))
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
        with_payload!(self, r => type_of(r))
    }

    /// The user the request acts for, if any.
    pub fn user_id(&self) -> Option<i64> {
        with_payload!(self, r => r.user_id())
    }

    /// Checks what a decoder cannot: ranges and positivity. Lanes call this
    /// on every record so a bad record produced by anyone is dead-lettered.
    pub fn validate(&self) -> Result<(), String> {
        /// The first of `fields` that is not positive, as the error.
        fn positive(fields: &[(&str, i64)]) -> Result<(), String> {
            match fields.iter().find(|(_, value)| *value <= 0) {
                Some((field, _)) => Err(format!("{field} must be positive")),
                None => Ok(()),
            }
        }
        match self {
            Request::HoldSeat(r) => positive(&[("seat_id", r.seat_id), ("user_id", r.user_id)]),
            Request::CancelReservation(r) => positive(&[
                ("reservation_id", r.reservation_id),
                ("seat_id", r.seat_id),
                ("user_id", r.user_id),
            ]),
            Request::ExpireHold(r) => {
                positive(&[("reservation_id", r.reservation_id), ("seat_id", r.seat_id)])
            }
            Request::PayReservation(r) => {
                positive(&[("reservation_id", r.reservation_id), ("user_id", r.user_id)])
            }
            Request::ChargeBalance(r) => {
                positive(&[("user_id", r.user_id), ("amount", r.amount)])?;
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
    fn the_wire_type_is_the_serde_tag_and_each_topic_takes_its_own() {
        let requests = [
            Request::HoldSeat(HoldSeat {
                seat_id: 1,
                user_id: 2,
                queue_token: Uuid::nil(),
            }),
            Request::CancelReservation(CancelReservation {
                reservation_id: 1,
                seat_id: 1,
                user_id: 2,
            }),
            Request::ExpireHold(ExpireHold {
                reservation_id: 1,
                seat_id: 1,
            }),
            Request::PayReservation(PayReservation {
                reservation_id: 1,
                user_id: 2,
                queue_token: Uuid::nil(),
            }),
            Request::ChargeBalance(ChargeBalance {
                user_id: 2,
                amount: 5,
            }),
            Request::PlaceOrder(PlaceOrder {
                user_id: 2,
                items: vec![OrderLine {
                    product_stock_id: 1,
                    quantity: 1,
                }],
                from_cart: false,
            }),
        ];
        for request in requests {
            let json = serde_json::to_value(&request).expect("serialize");
            assert_eq!(json["type"], request.type_name());
            assert_eq!(Request::TYPES[request.type_index()], request.type_name());
            let envelope = RequestEnvelope::new(Uuid::nil(), request.clone());
            let on = |topic: Topic| request.topic() == topic;
            assert_eq!(
                envelope.clone().for_topic::<ReservationRequest>().is_ok(),
                on(Topic::ReservationRequests)
            );
            assert_eq!(
                envelope.clone().for_topic::<PaymentRequest>().is_ok(),
                on(Topic::PaymentRequests)
            );
            assert_eq!(
                envelope.clone().for_topic::<ChargeRequest>().is_ok(),
                on(Topic::ChargeRequests)
            );
            let order = envelope.for_topic::<OrderRequest>();
            assert_eq!(order.is_ok(), on(Topic::OrderRequests));
            if let Ok(order) = order {
                assert_eq!(order.request.type_name(), request.type_name());
                assert_eq!(order.request.user_id(), request.user_id());
                assert_eq!(Request::from(order.request), request);
            }
        }
    }

    #[test]
    fn unknown_type_does_not_decode() {
        let raw = r#"{"request_id":"00000000-0000-0000-0000-000000000000","version":1,"timestamp":"2026-01-01T00:00:00Z","type":"nope","payload":{}}"#;
        assert!(serde_json::from_str::<RequestEnvelope>(raw).is_err());
    }
}
