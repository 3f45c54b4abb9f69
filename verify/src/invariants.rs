//! DESIGN §4.4 and exactly-once effects, as SQL that must count zero.
//! Each is one pass of joins and aggregates (no correlated subqueries), so
//! checking a long run's hundred thousand rows takes seconds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sqlx::PgPool;

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

/// Every invariant by name: true when it holds. `stats_wait` bounds how
/// long the stats lane may take to catch up; `business_tz` is the stack's
/// `BUSINESS_TZ`.
pub async fn check(
    pool: &PgPool,
    business_tz: &str,
    stats_wait: Duration,
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
    });
    let deadline = Instant::now() + stats_wait;
    let stats = loop {
        // The daily stats must equal the paid orders, per product and
        // business day; the stats lane folds order events asynchronously, so
        // this one is given time to catch up.
        let violations = sqlx::query_scalar!(
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
        .await?;
        if violations == 0 || Instant::now() >= deadline {
            break violations == 0;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    results.insert("stats_equal_paid_orders".to_owned(), stats);
    Ok(results)
}
