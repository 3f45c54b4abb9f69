//! The event topics, read from their start with a fresh reader: every
//! decided effect has its event, a repeat is a whole copy of one event id,
//! and each key's events are in causal order.

use std::collections::{HashMap, HashSet};

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
    /// Decided effects (successful charges, holds, payments, orders)
    /// without their event.
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

/// Reads the event topics of `common`'s deployment and checks them against
/// the decided requests in `pool`.
pub async fn check(common: &CommonConfig, pool: &PgPool) -> anyhow::Result<EventCheck> {
    let mut result = EventCheck::default();
    let mut first_copies: HashMap<Uuid, Vec<u8>> = HashMap::new();
    // Per topic, in partition and offset order, each event once.
    let mut events: HashMap<Topic, Vec<EventEnvelope>> = HashMap::new();
    for (topic, _, _) in EFFECTS {
        let name = common.topics().name(*topic);
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
                    events.entry(*topic).or_default().push(envelope);
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
    use schemas::events::BalanceChanged;

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
