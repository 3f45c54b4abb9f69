//! docs/design.md §4.4 and exactly-once effects, as SQL that must count zero.
//! Each is one pass of joins and aggregates (no correlated subqueries), so
//! checking a long run's hundred thousand rows takes seconds.
//!
//! Three of them restate a table constraint ([`CONSTRAINT_BACKED`]): the
//! database refuses the row that would break them, so they cannot fail and
//! prove nothing about the lanes; they stay as a guard against a migration
//! that drops the constraint. Every other one can fail, and
//! `verify/tests/invariants.rs` breaks each on a consistent database.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sqlx::PgPool;

/// The invariants a table constraint already guarantees (the unique index
/// `reservations_one_live_per_seat`, `CHECK (balance >= 0)`,
/// `CHECK (quantity >= 0)`).
pub const CONSTRAINT_BACKED: &[&str] = &[
    "no_double_booked_seat",
    "no_negative_balance",
    "no_negative_stock",
];

/// Whether invariant `name` restates a table constraint.
pub fn constraint_backed(name: &str) -> bool {
    CONSTRAINT_BACKED.contains(&name)
}

/// Checks each invariant with its checked statement (a count of its
/// violations, `$sql` inside `SELECT (...)`) into `$results`.
macro_rules! check_all {
    ($pool:expr, $results:expr, { $($name:ident: $sql:literal,)+ }) => {
        $(
            let violations = sqlx::query_scalar!("SELECT (" + $sql + r#") AS "violations!""#)
                .fetch_one($pool)
                .await?;
            $results.insert(stringify!($name).to_owned(), violations == 0);
        )+
    };
}

/// Every invariant by name: true when it holds. `settle` bounds how long
/// the asynchronous parts may take to catch up (the stats lane folding
/// order events, the hold-expiry scheduler expiring lapsed holds);
/// `business_tz` is the stack's `BUSINESS_TZ`.
pub async fn check(
    pool: &PgPool,
    business_tz: &str,
    settle: Duration,
) -> anyhow::Result<BTreeMap<String, bool>> {
    let mut results = BTreeMap::new();
    check_all!(pool, results, {
        no_double_booked_seat: "SELECT count(*) FROM (SELECT seat_id FROM reservations
                     WHERE status IN ('PENDING', 'CONFIRMED') GROUP BY seat_id HAVING count(*) > 1) t",
        seat_flags_match_reservations: "SELECT count(*) FROM seats s
                     LEFT JOIN (SELECT DISTINCT seat_id FROM reservations
                                WHERE status IN ('PENDING', 'CONFIRMED')) r ON r.seat_id = s.id
                     WHERE s.is_reserved <> (r.seat_id IS NOT NULL)",
        available_seat_counts_match: "SELECT count(*) FROM concert_schedules c
                     LEFT JOIN (SELECT concert_schedule_id, count(*) AS n FROM seats
                                WHERE NOT is_reserved GROUP BY concert_schedule_id) s
                            ON s.concert_schedule_id = c.id
                     WHERE c.available_seats_count <> coalesce(s.n, 0)",
        no_negative_balance: "SELECT count(*) FROM balances WHERE balance < 0",
        balances_equal_history: "SELECT count(*) FROM balances b LEFT JOIN (
                     SELECT balance_id, sum(CASE type WHEN 'USE' THEN -amount ELSE amount END) AS total
                     FROM balance_histories GROUP BY balance_id) h ON h.balance_id = b.id
                     WHERE b.balance <> coalesce(h.total, 0)",
        confirmed_reservations_paid_once: "SELECT count(*) FROM reservations r
                     LEFT JOIN (SELECT reservation_id, count(*) AS n FROM payments
                                WHERE status = 'SUCCESS' GROUP BY reservation_id) p ON p.reservation_id = r.id
                     WHERE r.status = 'CONFIRMED' AND coalesce(p.n, 0) <> 1",
        no_negative_stock: "SELECT count(*) FROM product_stocks WHERE quantity < 0",
        no_request_applied_twice: "SELECT count(*) FROM (SELECT request_id FROM balance_histories
                     WHERE request_id IS NOT NULL GROUP BY request_id HAVING count(*) > 1) t",
        succeeded_charges_charged_once: "SELECT count(*) FROM requests q
                     LEFT JOIN (SELECT request_id, count(*) AS n FROM balance_histories
                                WHERE type = 'CHARGE' GROUP BY request_id) h ON h.request_id = q.id
                     WHERE q.type = 'balance.charge' AND q.status = 'SUCCEEDED' AND coalesce(h.n, 0) <> 1",
        succeeded_orders_ordered_once: "SELECT count(*) FROM requests q
                     LEFT JOIN (SELECT request_id, count(*) AS n FROM orders GROUP BY request_id) o
                            ON o.request_id = q.id
                     WHERE q.type = 'order.place' AND q.status = 'SUCCEEDED' AND coalesce(o.n, 0) <> 1",
        refused_requests_changed_nothing: "SELECT count(*) FROM requests q WHERE q.status IN ('REJECTED', 'FAILED')
                     AND q.id IN (SELECT request_id FROM balance_histories WHERE request_id IS NOT NULL
                                  UNION ALL SELECT request_id FROM orders WHERE request_id IS NOT NULL)",
        // Each succeeded hold names its reservation, of its user and seat;
        // each reservation comes from exactly one succeeded hold (a
        // rejected or failed hold that left a row breaks it).
        succeeded_holds_have_their_reservation: "SELECT count(*) FROM requests q
                     LEFT JOIN reservations r ON r.id = (q.result->>'reservation_id')::bigint
                           AND r.user_id = q.user_id AND r.seat_id = (q.result->>'seat_id')::bigint
                     WHERE q.type = 'reservation.hold' AND q.status = 'SUCCEEDED' AND r.id IS NULL",
        every_reservation_from_one_succeeded_hold: "SELECT count(*) FROM reservations r
                     LEFT JOIN (SELECT (result->>'reservation_id')::bigint AS id, count(*) AS n FROM requests
                                WHERE type = 'reservation.hold' AND status = 'SUCCEEDED' GROUP BY 1) h ON h.id = r.id
                     WHERE coalesce(h.n, 0) <> 1",
        // Each succeeded payment names its payment of the amount it
        // reports, taken from the balance by one USE row of that request;
        // each seat payment comes from exactly one succeeded payment.
        succeeded_payments_have_their_payment: "SELECT count(*) FROM requests q
                     LEFT JOIN payments p ON p.id = (q.result->>'payment_id')::bigint
                           AND p.reservation_id = (q.result->>'reservation_id')::bigint
                           AND p.user_id = q.user_id AND p.amount = (q.result->>'amount')::bigint
                           AND p.status IN ('SUCCESS', 'REFUNDED')
                     LEFT JOIN balance_histories h ON h.request_id = q.id AND h.type = 'USE'
                           AND h.payment_id = p.id AND h.amount = p.amount
                     WHERE q.type = 'payment.pay' AND q.status = 'SUCCEEDED' AND h.id IS NULL",
        every_seat_payment_from_one_succeeded_pay: "SELECT count(*) FROM payments p
                     LEFT JOIN (SELECT (result->>'payment_id')::bigint AS id, count(*) AS n FROM requests
                                WHERE type = 'payment.pay' AND status = 'SUCCEEDED' GROUP BY 1) q ON q.id = p.id
                     WHERE p.reservation_id IS NOT NULL AND coalesce(q.n, 0) <> 1",
        // A seat is paid at its price, and its hold quoted that price.
        payment_amounts_equal_seat_prices: "SELECT count(*) FROM payments p
                     JOIN reservations r ON r.id = p.reservation_id JOIN seats s ON s.id = r.seat_id
                     WHERE p.amount <> s.price OR r.total_amount <> s.price",
        // A refunded payment has one REFUND row of what it took, and its
        // reservation is cancelled; a payment that stands has no refund and
        // its reservation is confirmed; no refund pays back nothing.
        refunds_equal_what_was_paid: "SELECT (SELECT count(*) FROM payments p
                     JOIN reservations r ON r.id = p.reservation_id
                     LEFT JOIN (SELECT payment_id, count(*) AS n, sum(amount) AS total FROM balance_histories
                                WHERE type = 'REFUND' GROUP BY payment_id) f ON f.payment_id = p.id
                     WHERE CASE p.status
                           WHEN 'REFUNDED' THEN coalesce(f.n, 0) <> 1 OR f.total <> p.amount OR r.status <> 'CANCELLED'
                           ELSE f.n IS NOT NULL OR r.status <> 'CONFIRMED' END)
                   + (SELECT count(*) FROM balance_histories WHERE type = 'REFUND' AND payment_id IS NULL)",
        // An order comes from one succeeded request and is paid in full:
        // its payment and the USE row are its total, the sum of its lines.
        every_order_from_one_succeeded_place: "SELECT count(*) FROM orders o
                     LEFT JOIN requests q ON q.id = o.request_id AND q.type = 'order.place' AND q.status = 'SUCCEEDED'
                     WHERE q.id IS NULL",
        paid_orders_paid_in_full: "SELECT count(*) FROM orders o
                     LEFT JOIN (SELECT order_id, sum(quantity * unit_price) AS total FROM order_items
                                GROUP BY order_id) i ON i.order_id = o.id
                     LEFT JOIN payments p ON p.order_id = o.id AND p.amount = o.total_amount AND p.status = 'SUCCESS'
                     LEFT JOIN balance_histories h ON h.payment_id = p.id AND h.type = 'USE'
                           AND h.amount = o.total_amount AND h.request_id = o.request_id
                     WHERE o.status = 'PAID' AND (h.id IS NULL OR i.total IS DISTINCT FROM o.total_amount)",
        // Every CHARGE row comes from a succeeded charge.
        every_charge_from_one_succeeded_charge: "SELECT count(*) FROM balance_histories h
                     LEFT JOIN requests q ON q.id = h.request_id AND q.type = 'balance.charge' AND q.status = 'SUCCEEDED'
                     WHERE h.type = 'CHARGE' AND q.id IS NULL",
        // A hold expires only once due, and is paid only before.
        holds_expire_only_when_due: "SELECT count(*) FROM reservations
                     WHERE (status = 'EXPIRED' AND updated_at < expires_at)
                        OR (confirmed_at IS NOT NULL AND confirmed_at > expires_at)",
    });
    let deadline = Instant::now() + settle;
    // Lapsed holds must be expired (their seats back on sale) by the
    // scheduler and the lane, given `settle` to get there.
    let lapsed = settles(deadline, || {
        sqlx::query_scalar!(
            r#"SELECT count(*) AS "lapsed!" FROM reservations
               WHERE status = 'PENDING' AND expires_at < now() - interval '1 second'"#
        )
        .fetch_one(pool)
    })
    .await?;
    results.insert("lapsed_holds_expired".to_owned(), lapsed);
    // The daily stats must equal the paid orders, per product and business
    // day; the stats lane folds order events asynchronously.
    let stats = settles(deadline, || {
        sqlx::query_scalar!(
            r#"SELECT count(*) AS "violations!" FROM (
        SELECT i.product_id, (o.order_date AT TIME ZONE $1)::date AS day, count(DISTINCT o.id) AS orders,
               sum(i.quantity) AS quantity, sum(i.quantity * i.unit_price) AS amount
        FROM orders o JOIN order_items i ON i.order_id = o.id
        WHERE o.status = 'PAID' GROUP BY 1, 2) o
    FULL JOIN product_order_stats s ON s.product_id = o.product_id AND s.order_date = o.day
    WHERE coalesce(o.orders, 0) <> coalesce(s.total_orders, 0)
       OR coalesce(o.quantity, 0) <> coalesce(s.total_quantity, 0)
       OR coalesce(o.amount, 0) <> coalesce(s.total_sales_amount, 0)"#,
            business_tz
        )
        .fetch_one(pool)
    })
    .await?;
    results.insert("stats_equal_paid_orders".to_owned(), stats);
    Ok(results)
}

/// Counts violations with `count` until there are none or `deadline`
/// passes; whether there were none.
async fn settles<F, Fut>(deadline: Instant, mut count: F) -> anyhow::Result<bool>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<i64, sqlx::Error>>,
{
    loop {
        let violations = count().await?;
        if violations == 0 || Instant::now() >= deadline {
            return Ok(violations == 0);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
