//! Correctness checks after a run, straight against Postgres.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::scenario::Scenario;
use crate::{Cli, ScenarioName};

async fn zero(pool: &PgPool, sql: &str) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await? == 0)
}

/// Invariants of DESIGN §4, plus the scenario's own expectations.
pub async fn run(
    pool: &PgPool,
    cli: &Cli,
    scenario: &Scenario,
) -> anyhow::Result<BTreeMap<String, bool>> {
    let mut checks = BTreeMap::new();
    checks.insert(
        "no_double_booked_seat".into(),
        zero(pool, "SELECT count(*) FROM (SELECT seat_id FROM reservations WHERE status IN ('PENDING', 'CONFIRMED')
                    GROUP BY seat_id HAVING count(*) > 1) t").await?,
    );
    checks.insert(
        "balances_equal_history".into(),
        zero(pool, "SELECT count(*) FROM balances b LEFT JOIN (SELECT balance_id, sum(CASE type WHEN 'USE'
                    THEN -amount ELSE amount END) AS total FROM balance_histories GROUP BY balance_id) h
                    ON h.balance_id = b.id WHERE b.balance <> coalesce(h.total, 0)").await?,
    );
    checks.insert(
        "confirmed_reservations_paid_once".into(),
        zero(pool, "SELECT count(*) FROM reservations r WHERE r.status = 'CONFIRMED' AND
                    (SELECT count(*) FROM payments p WHERE p.reservation_id = r.id AND p.status = 'SUCCESS') <> 1").await?,
    );
    checks.insert(
        "no_negative_stock".into(),
        zero(
            pool,
            "SELECT count(*) FROM product_stocks WHERE quantity < 0",
        )
        .await?,
    );
    // The stats lane folds order events asynchronously: give it a moment.
    let stats_sql = "SELECT count(*) FROM (
            SELECT i.product_id, sum(i.quantity) AS q FROM orders o JOIN order_items i ON i.order_id = o.id
            WHERE o.status = 'PAID' GROUP BY i.product_id) o
        FULL JOIN (SELECT product_id, sum(total_quantity) AS q FROM product_order_stats GROUP BY product_id) s
          ON s.product_id = o.product_id
        WHERE coalesce(o.q, 0) <> coalesce(s.q, 0)";
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stats_ok = zero(pool, stats_sql).await?;
    while !stats_ok && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stats_ok = zero(pool, stats_sql).await?;
    }
    checks.insert("stats_equal_orders".into(), stats_ok);
    if scenario.name == ScenarioName::Rush && scenario.users.len() as i64 >= i64::from(cli.seats) {
        let sold: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM reservations WHERE concert_schedule_id = $1 AND status IN ('PENDING', 'CONFIRMED')",
        )
        .bind(scenario.schedule_id)
        .fetch_one(pool)
        .await?;
        checks.insert(
            "rush_every_seat_sold_once".into(),
            sold == i64::from(cli.seats),
        );
    }
    Ok(checks)
}
