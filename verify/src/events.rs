//! The event topics, read from their start with a fresh reader: every
//! effect in the database has its event (each reservation held, confirmed,
//! cancelled or expired; each seat payment made and refunded; each balance
//! change, CHARGE, USE and REFUND, with its amount; each paid order with its
//! total; each product's day totals as they stand), every succeeded request
//! has its event, a repeat is a whole copy of one event id, and each key's
//! events are in causal order.

use std::collections::{BTreeMap, HashMap, HashSet};

use platform::CommonConfig;
use schemas::events::{BalanceChangeKind, ReservationChanged};
use schemas::{Event, EventEnvelope, Topic};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// What reading the event topics found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EventCheck {
    /// Records read over the four event topics.
    pub records: usize,
    /// Records whose event id was seen before (at-least-once repeats).
    pub duplicates: usize,
    /// Repeats whose payload differs from the first copy (never allowed).
    pub conflicting_repeats: usize,
    /// Records that are not event envelopes.
    pub undecodable: usize,
    /// Events out of causal order for their key (a seat's reservation
    /// going confirmed before held, a user's `balance_after` not following
    /// from the one before).
    pub out_of_order: usize,
    /// Effects (rows, and succeeded requests) without their event.
    pub missing: usize,
    /// The first few problems, for the report.
    pub problems: Vec<String>,
}

impl EventCheck {
    fn problem(&mut self, text: String) {
        if self.problems.len() < 20 {
            self.problems.push(text);
        }
    }
}

/// The topics checked, and the event each successful request must leave.
const EFFECTS: &[(Topic, &str, &str)] = &[
    (Topic::BalanceEvents, "balance.charge", "balance.changed"),
    (
        Topic::ReservationEvents,
        "reservation.hold",
        "reservation.held",
    ),
    (Topic::PaymentEvents, "payment.pay", "payment.succeeded"),
    (Topic::OrderEvents, "order.place", "order.paid"),
];

/// Every topic the relay publishes events to.
const EVENT_TOPICS: [Topic; 5] = [
    Topic::ReservationEvents,
    Topic::PaymentEvents,
    Topic::BalanceEvents,
    Topic::OrderEvents,
    Topic::ProductDailyStats,
];

/// The effects in the database that must each have their event.
#[derive(Debug, Clone, Default)]
pub struct Effects {
    /// Reservations: id, status, and whether it was ever confirmed.
    pub reservations: Vec<(i64, String, bool)>,
    /// Seat payments: id, amount, status.
    pub seat_payments: Vec<(i64, i64, String)>,
    /// Balance history rows: id, type, amount.
    pub histories: Vec<(i64, String, i64)>,
    /// Paid orders: id, total.
    pub paid_orders: Vec<(i64, i64)>,
    /// Day totals: product, day, orders, quantity, amount.
    pub stats: Vec<(i64, chrono::NaiveDate, i64, i64, i64)>,
}

impl Effects {
    /// Reads them from `pool`.
    pub async fn load(pool: &PgPool) -> anyhow::Result<Self> {
        let reservations = sqlx::query!(
            r#"SELECT id, status, confirmed_at IS NOT NULL AS "confirmed!" FROM reservations"#
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| (r.id, r.status, r.confirmed))
        .collect();
        let seat_payments = sqlx::query!(
            "SELECT id, amount, status FROM payments WHERE reservation_id IS NOT NULL"
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|p| (p.id, p.amount, p.status))
        .collect();
        let histories = sqlx::query!("SELECT id, type, amount FROM balance_histories")
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|h| (h.id, h.r#type, h.amount))
            .collect();
        let paid_orders = sqlx::query!("SELECT id, total_amount FROM orders WHERE status = 'PAID'")
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|o| (o.id, o.total_amount))
            .collect();
        let stats = sqlx::query!(
            "SELECT product_id, order_date, total_orders, total_quantity, total_sales_amount
             FROM product_order_stats"
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|s| {
            (
                s.product_id,
                s.order_date,
                i64::from(s.total_orders),
                s.total_quantity,
                s.total_sales_amount,
            )
        })
        .collect();
        Ok(Self {
            reservations,
            seat_payments,
            histories,
            paid_orders,
            stats,
        })
    }
}

/// Reads the event topics of `common`'s deployment (its topic prefix) and
/// checks them against `effects` and the decided requests in `pool`.
/// `effects` is a snapshot taken before the outbox was drained: effects
/// committed later (a hold expiring meanwhile) may not be published yet.
pub async fn check(
    common: &CommonConfig,
    pool: &PgPool,
    effects: &Effects,
) -> anyhow::Result<EventCheck> {
    let mut result = EventCheck::default();
    let mut first_copies: HashMap<Uuid, Vec<u8>> = HashMap::new();
    // Per topic, in partition and offset order, each event once.
    let mut events: HashMap<Topic, Vec<EventEnvelope>> = HashMap::new();
    for topic in EVENT_TOPICS {
        let name = common.topics().name(topic);
        let reader = common.clone();
        let records =
            tokio::task::spawn_blocking(move || platform::kafka::read_all(&reader, &name))
                .await??;
        result.records += records.len();
        for record in records {
            let Ok(envelope) = serde_json::from_slice::<EventEnvelope>(&record.payload) else {
                result.undecodable += 1;
                result.problem(format!("{topic:?} offset {}: not an event", record.offset));
                continue;
            };
            match first_copies.get(&envelope.event_id) {
                Some(first) => {
                    result.duplicates += 1;
                    if *first != record.payload {
                        result.conflicting_repeats += 1;
                        result.problem(format!(
                            "event {} repeated with another payload",
                            envelope.event_id
                        ));
                    }
                }
                None => {
                    first_copies.insert(envelope.event_id, record.payload.clone());
                    events.entry(topic).or_default().push(envelope);
                }
            }
        }
    }
    check_balances(
        events.get(&Topic::BalanceEvents).map_or(&[], Vec::as_slice),
        &mut result,
    );
    check_seats(
        events
            .get(&Topic::ReservationEvents)
            .map_or(&[], Vec::as_slice),
        &mut result,
    );
    let all: Vec<&EventEnvelope> = events.values().flatten().collect();
    check_effects(&all, effects, &mut result);
    for (topic, request_type, event_type) in EFFECTS {
        let succeeded = sqlx::query_scalar!(
            "SELECT id FROM requests WHERE type = $1 AND status = 'SUCCEEDED'",
            request_type
        )
        .fetch_all(pool)
        .await?;
        let published: HashSet<Uuid> = events
            .get(topic)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .filter(|e| e.event.type_name() == *event_type)
            .filter_map(|e| e.request_id)
            .collect();
        for id in succeeded.iter().filter(|id| !published.contains(id)) {
            result.missing += 1;
            result.problem(format!(
                "{request_type} {id} succeeded but has no {event_type}"
            ));
        }
    }
    Ok(result)
}

/// Every effect in `effects` has its event, with the same figures.
fn check_effects(events: &[&EventEnvelope], effects: &Effects, result: &mut EventCheck) {
    let mut steps: HashSet<(i64, &str)> = HashSet::new();
    let mut payments: HashMap<i64, i64> = HashMap::new();
    let mut refunded: HashSet<i64> = HashSet::new();
    let mut histories: HashMap<i64, (&str, i64)> = HashMap::new();
    let mut orders: HashMap<i64, i64> = HashMap::new();
    let mut stats: BTreeMap<(i64, chrono::NaiveDate), (i64, i64, i64)> = BTreeMap::new();
    for envelope in events {
        match &envelope.event {
            Event::ReservationHeld(r) => {
                steps.insert((r.reservation_id, "held"));
            }
            Event::ReservationConfirmed(r) => {
                steps.insert((r.reservation_id, "confirmed"));
            }
            Event::ReservationCancelled(r) => {
                steps.insert((r.reservation_id, "cancelled"));
            }
            Event::ReservationExpired(r) => {
                steps.insert((r.reservation_id, "expired"));
            }
            Event::PaymentSucceeded(p) => {
                payments.insert(p.payment_id, p.amount);
            }
            Event::PaymentRefunded(p) => {
                refunded.insert(p.payment_id);
            }
            Event::BalanceChanged(b) => {
                histories.insert(b.history_id, (b.kind.as_str(), b.amount));
            }
            Event::OrderPaid(o) => {
                orders.insert(o.order_id, o.total_amount);
            }
            Event::ProductDailyStats(s) => {
                // Totals only grow: the largest is where the day stands.
                let totals = (s.total_orders, s.total_quantity, s.total_sales_amount);
                let entry = stats.entry((s.product_id, s.date)).or_default();
                *entry = (*entry).max(totals);
            }
        }
    }
    let missing = |result: &mut EventCheck, text: String| {
        result.missing += 1;
        result.problem(text);
    };
    for (id, status, confirmed) in &effects.reservations {
        let mut needed = vec!["held"];
        if *confirmed {
            needed.push("confirmed");
        }
        match status.as_str() {
            "CANCELLED" => needed.push("cancelled"),
            "EXPIRED" => needed.push("expired"),
            _ => {}
        }
        for step in needed {
            if !steps.contains(&(*id, step)) {
                missing(
                    result,
                    format!("reservation {id} ({status}) has no {step} event"),
                );
            }
        }
    }
    for (id, amount, status) in &effects.seat_payments {
        if payments.get(id) != Some(amount) {
            missing(
                result,
                format!("payment {id} of {amount} has no payment.succeeded of it"),
            );
        }
        if status == "REFUNDED" && !refunded.contains(id) {
            missing(
                result,
                format!("payment {id} was refunded without payment.refunded"),
            );
        }
    }
    for (id, kind, amount) in &effects.histories {
        if histories.get(id) != Some(&(kind.as_str(), *amount)) {
            missing(
                result,
                format!("balance history {id} ({kind} {amount}) has no balance.changed of it"),
            );
        }
    }
    for (id, total) in &effects.paid_orders {
        if orders.get(id) != Some(total) {
            missing(
                result,
                format!("order {id} of {total} has no order.paid of it"),
            );
        }
    }
    for (product, day, n, quantity, amount) in &effects.stats {
        let stands = stats.get(&(*product, *day));
        if stands != Some(&(*n, *quantity, *amount)) {
            missing(
                result,
                format!(
                    "product {product} on {day}: totals {n}/{quantity}/{amount}, last product.daily_stats {stands:?}"
                ),
            );
        }
    }
}

/// Along each user's `balance-events`, each `balance_after` follows from
/// the one before (users start at 0) and history ids increase.
fn check_balances(events: &[EventEnvelope], result: &mut EventCheck) {
    let mut last: HashMap<i64, (i64, i64)> = HashMap::new();
    for envelope in events {
        let Event::BalanceChanged(change) = &envelope.event else {
            continue;
        };
        let (balance, history) = last.get(&change.user_id).copied().unwrap_or((0, 0));
        let expected = match change.kind {
            BalanceChangeKind::Use => balance - change.amount,
            BalanceChangeKind::Charge | BalanceChangeKind::Refund => balance + change.amount,
        };
        if change.balance_after != expected || change.history_id <= history {
            result.out_of_order += 1;
            result.problem(format!(
                "user {}: history {} has balance_after {} after {balance} (expected {expected})",
                change.user_id, change.history_id, change.balance_after
            ));
        }
        last.insert(change.user_id, (change.balance_after, change.history_id));
    }
}

/// Along each seat's `reservation-events`: a hold only on a free seat; a
/// confirmation, cancellation or expiry only of the seat's live
/// reservation (confirmed only from held).
fn check_seats(events: &[EventEnvelope], result: &mut EventCheck) {
    // Seat -> (live reservation, confirmed?).
    let mut live: HashMap<i64, (i64, bool)> = HashMap::new();
    for envelope in events {
        let (r, step): (&ReservationChanged, &str) = match &envelope.event {
            Event::ReservationHeld(r) => (r, "held"),
            Event::ReservationConfirmed(r) => (r, "confirmed"),
            Event::ReservationCancelled(r) => (r, "cancelled"),
            Event::ReservationExpired(r) => (r, "expired"),
            _ => continue,
        };
        let current = live.get(&r.seat_id).copied();
        let ok = match (step, current) {
            ("held", None) => {
                live.insert(r.seat_id, (r.reservation_id, false));
                true
            }
            ("confirmed", Some((id, false))) if id == r.reservation_id => {
                live.insert(r.seat_id, (id, true));
                true
            }
            ("cancelled", Some((id, _))) if id == r.reservation_id => {
                live.remove(&r.seat_id);
                true
            }
            ("expired", Some((id, false))) if id == r.reservation_id => {
                live.remove(&r.seat_id);
                true
            }
            _ => false,
        };
        if !ok {
            result.out_of_order += 1;
            result.problem(format!(
                "seat {}: reservation {} {step} while the seat's live reservation is {current:?}",
                r.seat_id, r.reservation_id
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::events::{BalanceChanged, OrderPaid, PaymentChanged, ProductDailyStats};

    fn balance(
        user_id: i64,
        history_id: i64,
        kind: BalanceChangeKind,
        amount: i64,
        after: i64,
    ) -> EventEnvelope {
        EventEnvelope::new(
            None,
            Event::BalanceChanged(BalanceChanged {
                user_id,
                history_id,
                kind,
                amount,
                balance_after: after,
                payment_id: None,
            }),
        )
    }

    fn seat(event: fn(ReservationChanged) -> Event, reservation_id: i64) -> EventEnvelope {
        EventEnvelope::new(
            None,
            event(ReservationChanged {
                reservation_id,
                seat_id: 7,
                schedule_id: 1,
                user_id: 1,
                status: String::new(),
                amount: 10,
                expires_at: None,
            }),
        )
    }

    #[test]
    fn every_effect_needs_its_event_with_its_figures() {
        let day = chrono::NaiveDate::from_ymd_opt(2026, 12, 7).expect("a day");
        let effects = Effects {
            reservations: vec![(1, "CANCELLED".into(), true), (2, "EXPIRED".into(), false)],
            seat_payments: vec![(5, 10, "REFUNDED".into())],
            histories: vec![(9, "USE".into(), 10)],
            paid_orders: vec![(3, 30)],
            stats: vec![(4, day, 2, 3, 30)],
        };
        let changed = |kind: fn(PaymentChanged) -> Event| {
            EventEnvelope::new(
                None,
                kind(PaymentChanged {
                    payment_id: 5,
                    reservation_id: 1,
                    user_id: 1,
                    amount: 10,
                    status: String::new(),
                    paid_at: chrono::Utc::now(),
                }),
            )
        };
        let stats = |total_orders| {
            EventEnvelope::new(
                None,
                Event::ProductDailyStats(ProductDailyStats {
                    product_id: 4,
                    date: day,
                    total_orders,
                    total_quantity: if total_orders == 2 { 3 } else { 1 },
                    total_sales_amount: if total_orders == 2 { 30 } else { 10 },
                }),
            )
        };
        let all = vec![
            seat(Event::ReservationHeld, 1),
            seat(Event::ReservationConfirmed, 1),
            seat(Event::ReservationCancelled, 1),
            seat(Event::ReservationHeld, 2),
            seat(Event::ReservationExpired, 2),
            changed(Event::PaymentSucceeded),
            changed(Event::PaymentRefunded),
            balance(1, 9, BalanceChangeKind::Use, 10, 0),
            EventEnvelope::new(
                None,
                Event::OrderPaid(OrderPaid {
                    order_id: 3,
                    user_id: 1,
                    payment_id: 6,
                    items: Vec::new(),
                    total_amount: 30,
                    paid_at: chrono::Utc::now(),
                }),
            ),
            stats(2),
            stats(1),
        ];
        let mut result = EventCheck::default();
        check_effects(&all.iter().collect::<Vec<_>>(), &effects, &mut result);
        assert_eq!(result.missing, 0, "{:?}", result.problems);
        // Each event left out is one missing effect (without the latest
        // day totals the day stands at the older ones); so is a balance
        // change of another amount.
        for left_out in 0..all.len() - 1 {
            let mut fewer = all.clone();
            fewer.remove(left_out);
            let mut result = EventCheck::default();
            check_effects(&fewer.iter().collect::<Vec<_>>(), &effects, &mut result);
            assert_eq!(
                result.missing, 1,
                "without event {left_out}: {:?}",
                result.problems
            );
        }
        let mut other = all.clone();
        other[7] = balance(1, 9, BalanceChangeKind::Use, 11, 0);
        let mut result = EventCheck::default();
        check_effects(&other.iter().collect::<Vec<_>>(), &effects, &mut result);
        assert_eq!(result.missing, 1, "{:?}", result.problems);
    }

    #[test]
    fn a_users_balance_events_must_follow_each_other() {
        let mut result = EventCheck::default();
        let in_order = [
            balance(1, 1, BalanceChangeKind::Charge, 100, 100),
            balance(2, 2, BalanceChangeKind::Charge, 5, 5),
            balance(1, 3, BalanceChangeKind::Use, 30, 70),
            balance(1, 4, BalanceChangeKind::Refund, 30, 100),
        ];
        check_balances(&in_order, &mut result);
        assert_eq!(result.out_of_order, 0, "{:?}", result.problems);
        let swapped = [
            balance(1, 1, BalanceChangeKind::Charge, 100, 100),
            balance(1, 3, BalanceChangeKind::Use, 30, 100),
            balance(1, 2, BalanceChangeKind::Charge, 30, 130),
        ];
        check_balances(&swapped, &mut result);
        assert_eq!(result.out_of_order, 2, "{:?}", result.problems);
    }

    #[test]
    fn a_seat_is_held_before_it_is_confirmed_and_freed_before_it_is_held_again() {
        let mut result = EventCheck::default();
        let in_order = [
            seat(Event::ReservationHeld, 1),
            seat(Event::ReservationExpired, 1),
            seat(Event::ReservationHeld, 2),
            seat(Event::ReservationConfirmed, 2),
            seat(Event::ReservationCancelled, 2),
        ];
        check_seats(&in_order, &mut result);
        assert_eq!(result.out_of_order, 0, "{:?}", result.problems);
        for wrong in [
            vec![seat(Event::ReservationConfirmed, 1)],
            vec![
                seat(Event::ReservationHeld, 1),
                seat(Event::ReservationHeld, 2),
            ],
            vec![
                seat(Event::ReservationHeld, 1),
                seat(Event::ReservationExpired, 2),
            ],
            vec![
                seat(Event::ReservationHeld, 1),
                seat(Event::ReservationConfirmed, 1),
                seat(Event::ReservationExpired, 1),
            ],
        ] {
            let mut result = EventCheck::default();
            check_seats(&wrong, &mut result);
            assert_eq!(result.out_of_order, 1, "{:?}", result.problems);
        }
    }
}
