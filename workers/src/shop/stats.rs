//! Stats lane: consumes `order-events`, folds each batch into per-(product,
//! business day) deltas and adds them to `product_order_stats` in the batch
//! transaction, together with the consumed offsets: a replay never counts
//! twice. The relay publishes at least once, so the same order can also
//! arrive in two records; `stats_counted_orders` makes it count once. The
//! updated day totals go to `product-daily-stats`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use schemas::events::ProductDailyStats;
use schemas::{Event, Topic};
use sqlx::PgConnection;

use crate::engine::{Applied, EventOn, EventTopic, Lane};
use crate::error::LaneResult;

/// Folds paid orders into daily product statistics: a batch gathers the
/// per-product lines of its orders, and adds them up once at its end.
#[derive(Debug, Clone)]
pub struct StatsLane {
    /// IANA time zone whose midnight separates business days.
    business_tz: Arc<str>,
    lines: Vec<Line>,
    orders: HashSet<i64>,
}

impl StatsLane {
    /// A lane whose business days end at midnight in `business_tz`.
    pub fn new(business_tz: impl Into<Arc<str>>) -> Self {
        Self {
            business_tz: business_tz.into(),
            lines: Vec::new(),
            orders: HashSet::new(),
        }
    }
}

/// What the stats lane consumes.
#[derive(Debug)]
pub enum OrderEvents {}

impl EventTopic for OrderEvents {
    const TOPIC: Topic = Topic::OrderEvents;
}

/// One product of one paid order.
#[derive(Debug, Clone)]
struct Line {
    order_id: i64,
    product_id: i64,
    paid_at: chrono::DateTime<chrono::Utc>,
    quantity: i64,
    amount: i64,
}

impl Lane for StatsLane {
    type Input = EventOn<OrderEvents>;
    const NAME: &'static str = "stats";

    async fn apply(&mut self, _tx: &mut PgConnection, input: &Self::Input) -> LaneResult<Applied> {
        if let Event::OrderPaid(order) = &input.envelope.event {
            if !self.orders.insert(order.order_id) {
                // The same order twice in one batch (a re-published event).
                return Ok(Applied::consumed(Vec::new()));
            }
            // One order counts once per product, whatever its sizes.
            let mut per_product: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
            for item in &order.items {
                let entry = per_product.entry(item.product_id).or_default();
                entry.0 += i64::from(item.quantity);
                entry.1 += i64::from(item.quantity) * item.unit_price;
            }
            for (product_id, (quantity, amount)) in per_product {
                self.lines.push(Line {
                    order_id: order.order_id,
                    product_id,
                    paid_at: order.paid_at,
                    quantity,
                    amount,
                });
            }
        }
        Ok(Applied::consumed(Vec::new()))
    }

    async fn finish(self, tx: &mut PgConnection) -> LaneResult<Vec<Event>> {
        if self.lines.is_empty() {
            return Ok(Vec::new());
        }
        let mut orders: Vec<i64> = self.lines.iter().map(|l| l.order_id).collect();
        orders.sort_unstable();
        orders.dedup();
        let fresh: HashSet<i64> = sqlx::query_scalar!(
            "INSERT INTO stats_counted_orders (order_id) SELECT * FROM UNNEST($1::int8[])
             ON CONFLICT DO NOTHING RETURNING order_id",
            &orders
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let lines: Vec<_> = self
            .lines
            .into_iter()
            .filter(|l| fresh.contains(&l.order_id))
            .collect();
        if lines.is_empty() {
            return Ok(Vec::new());
        }
        let products: Vec<i64> = lines.iter().map(|l| l.product_id).collect();
        let paid_at: Vec<chrono::DateTime<chrono::Utc>> = lines.iter().map(|l| l.paid_at).collect();
        let quantities: Vec<i64> = lines.iter().map(|l| l.quantity).collect();
        let amounts: Vec<i64> = lines.iter().map(|l| l.amount).collect();
        // Fold to (product, day) in SQL, where the time zone database lives;
        // upsert in key order so concurrent batches lock rows alike.
        let rows = sqlx::query!(
            "WITH lines AS (
                 SELECT product_id, (paid_at AT TIME ZONE $5)::date AS day, quantity, amount
                 FROM UNNEST($1::int8[], $2::timestamptz[], $3::int8[], $4::int8[])
                      AS t(product_id, paid_at, quantity, amount)
             ), deltas AS (
                 SELECT product_id, day, count(*)::int AS orders, sum(quantity)::int8 AS quantity,
                        sum(amount)::int8 AS amount
                 FROM lines GROUP BY product_id, day
             )
             INSERT INTO product_order_stats AS s
                 (product_id, order_date, total_orders, total_quantity, total_sales_amount)
             SELECT product_id, day, orders, quantity, amount FROM deltas ORDER BY product_id, day
             ON CONFLICT (product_id, order_date) DO UPDATE SET
                 total_orders = s.total_orders + EXCLUDED.total_orders,
                 total_quantity = s.total_quantity + EXCLUDED.total_quantity,
                 total_sales_amount = s.total_sales_amount + EXCLUDED.total_sales_amount,
                 updated_at = now()
             RETURNING product_id, order_date, total_orders, total_quantity, total_sales_amount",
            &products,
            &paid_at,
            &quantities,
            &amounts,
            &*self.business_tz
        )
        .fetch_all(&mut *tx)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                Event::ProductDailyStats(ProductDailyStats {
                    product_id: row.product_id,
                    date: row.order_date,
                    total_orders: i64::from(row.total_orders),
                    total_quantity: row.total_quantity,
                    total_sales_amount: row.total_sales_amount,
                })
            })
            .collect())
    }
}
