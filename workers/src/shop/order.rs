//! Order lane (key: user id): every line's stock is taken only if all lines
//! are available; the balance pays; order, items, payment and history rows
//! are written; `order.paid` goes to the outbox.

use std::collections::BTreeSet;

use api::outcomes::OrderResult;
use chrono::{DateTime, Utc};
use schemas::events::{BalanceChangeKind, OrderPaid, OrderPaidItem};
use schemas::requests::OrderRequest;
use schemas::requests::PlaceOrder;
use schemas::{ErrorCode, Event, RequestEnvelope};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::engine::{Applied, Lane};
use crate::error::LaneResult;
use crate::ledger::Ledger;

/// Applies `order.place`; a batch's balances are its ledger.
#[derive(Debug, Clone, Default)]
pub struct OrderLane {
    ledger: Ledger,
}

/// A product stock with its product's price.
#[derive(Debug)]
struct StockRow {
    id: i64,
    product_id: i64,
    size: String,
    quantity: i32,
    price: i64,
}

/// An order's lines, each with its stock's product, size and price (what
/// `order.paid` carries), or the refusal: a stock that does not exist or has
/// too little left. The stocks were locked by `prepare`.
async fn priced_lines(
    tx: &mut PgConnection,
    order: &PlaceOrder,
) -> LaneResult<Result<Vec<OrderPaidItem>, Applied>> {
    let ids: Vec<i64> = order.items.iter().map(|l| l.product_stock_id).collect();
    let stocks = sqlx::query_as!(
        StockRow,
        "SELECT s.id, s.product_id, s.size, s.quantity, p.price
         FROM product_stocks s JOIN products p ON p.id = s.product_id
         WHERE s.id = ANY($1)",
        &ids
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut lines = Vec::with_capacity(order.items.len());
    for line in &order.items {
        let Some(stock) = stocks.iter().find(|s| s.id == line.product_stock_id) else {
            return Ok(Err(Applied::rejected(
                ErrorCode::NotFound,
                format!("product stock {} not found", line.product_stock_id),
            )));
        };
        if stock.quantity < line.quantity {
            return Ok(Err(Applied::rejected(
                ErrorCode::OutOfStock,
                format!(
                    "product stock {} (product {}, size {}) has {} left, {} ordered",
                    stock.id, stock.product_id, stock.size, stock.quantity, line.quantity
                ),
            )));
        }
        lines.push(OrderPaidItem {
            product_id: stock.product_id,
            product_stock_id: stock.id,
            size: stock.size.clone(),
            quantity: line.quantity,
            unit_price: stock.price,
        });
    }
    Ok(Ok(lines))
}

/// A paid order's rows: stock taken, the order, its items and its payment.
struct Written {
    order_id: i64,
    payment_id: i64,
    paid_at: DateTime<Utc>,
}

/// Takes the stock of `lines` and writes the paid order of `user_id` for
/// `total`: order, items and payment rows.
async fn write_order(
    tx: &mut PgConnection,
    user_id: i64,
    lines: &[OrderPaidItem],
    total: i64,
    request_id: Uuid,
) -> Result<Written, sqlx::Error> {
    let stock_ids: Vec<i64> = lines.iter().map(|l| l.product_stock_id).collect();
    let quantities: Vec<i32> = lines.iter().map(|l| l.quantity).collect();
    sqlx::query!(
        "UPDATE product_stocks s
         SET quantity = s.quantity - d.q, version = s.version + 1, updated_at = now()
         FROM UNNEST($1::int8[], $2::int4[]) AS d(id, q) WHERE s.id = d.id",
        &stock_ids,
        &quantities
    )
    .execute(&mut *tx)
    .await?;
    let placed = sqlx::query!(
        r#"INSERT INTO orders (user_id, status, total_amount, order_date, request_id)
           VALUES ($1, 'PAID', $2, now(), $3) RETURNING id, order_date AS "order_date!""#,
        user_id,
        total,
        request_id
    )
    .fetch_one(&mut *tx)
    .await?;
    let (order_id, paid_at) = (placed.id, placed.order_date);
    let product_ids: Vec<i64> = lines.iter().map(|l| l.product_id).collect();
    let sizes: Vec<&str> = lines.iter().map(|l| l.size.as_str()).collect();
    let prices: Vec<i64> = lines.iter().map(|l| l.unit_price).collect();
    sqlx::query!(
        "INSERT INTO order_items
             (order_id, product_stock_id, product_id, size, quantity, unit_price)
         SELECT $1, * FROM UNNEST($2::int8[], $3::int8[], $4::text[], $5::int4[], $6::int8[])",
        order_id,
        &stock_ids,
        &product_ids,
        &sizes as &[&str],
        &quantities,
        &prices
    )
    .execute(&mut *tx)
    .await?;
    let payment_id = sqlx::query_scalar!(
        "INSERT INTO payments (order_id, user_id, amount, method, status, paid_at)
         VALUES ($1, $2, $3, 'BALANCE', 'SUCCESS', $4) RETURNING id",
        order_id,
        user_id,
        total,
        paid_at
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok(Written {
        order_id,
        payment_id,
        paid_at,
    })
}

impl OrderLane {
    async fn place(
        &mut self,
        tx: &mut PgConnection,
        order: &PlaceOrder,
        request_id: Uuid,
    ) -> LaneResult<Applied> {
        let lines = match priced_lines(tx, order).await? {
            Ok(lines) => lines,
            Err(refused) => return Ok(refused),
        };
        let total: i64 = lines
            .iter()
            .map(|l| l.unit_price * i64::from(l.quantity))
            .sum();
        let Some(balance) = self.ledger.balance(tx, order.user_id).await? else {
            return Ok(Applied::rejected(
                ErrorCode::NotFound,
                "user has no balance",
            ));
        };
        if balance < total {
            return Ok(Applied::rejected(
                ErrorCode::InsufficientBalance,
                format!("balance {balance} is less than {total}"),
            ));
        }
        let written = write_order(tx, order.user_id, &lines, total, request_id).await?;
        let mut events = Vec::with_capacity(2);
        let mut balance_after = balance;
        if total > 0 {
            let changed = self
                .ledger
                .change(
                    tx,
                    order.user_id,
                    BalanceChangeKind::Use,
                    total,
                    Some(written.payment_id),
                    Some("order payment"),
                    request_id,
                )
                .await?;
            balance_after = changed.balance_after;
            events.push(Event::BalanceChanged(changed));
        }
        if order.from_cart {
            let stock_ids: Vec<i64> = lines.iter().map(|l| l.product_stock_id).collect();
            sqlx::query!(
                "DELETE FROM user_carts WHERE user_id = $1 AND product_stock_id = ANY($2)",
                order.user_id,
                &stock_ids
            )
            .execute(&mut *tx)
            .await?;
        }
        events.insert(
            0,
            Event::OrderPaid(OrderPaid {
                order_id: written.order_id,
                user_id: order.user_id,
                payment_id: written.payment_id,
                items: lines,
                total_amount: total,
                paid_at: written.paid_at,
            }),
        );
        Ok(Applied::succeeded(
            OrderResult {
                order_id: written.order_id,
                payment_id: written.payment_id,
                total_amount: total,
                balance: balance_after,
            },
            events,
        ))
    }
}

impl Lane for OrderLane {
    type Input = RequestEnvelope<OrderRequest>;
    const NAME: &'static str = "order";

    /// Locks every stock the batch touches in ascending id order, so order
    /// batches on different partitions cannot deadlock on stock rows (NO KEY
    /// UPDATE does not conflict with the KEY SHARE locks that inserting
    /// order items takes), then the batch's balances.
    async fn prepare(&mut self, tx: &mut PgConnection, inputs: &[&Self::Input]) -> LaneResult<()> {
        let orders: Vec<&PlaceOrder> = inputs
            .iter()
            .map(|input| match &input.request {
                OrderRequest::PlaceOrder(order) => order,
            })
            .collect();
        let ids: BTreeSet<i64> = orders
            .iter()
            .flat_map(|order| order.items.iter().map(|l| l.product_stock_id))
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = ids.into_iter().collect();
        // Only the locks are wanted; the ids come back unread.
        sqlx::query_scalar!(
            "SELECT id FROM product_stocks WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
            &ids
        )
        .fetch_all(&mut *tx)
        .await?;
        let users: Vec<i64> = orders.iter().map(|order| order.user_id).collect();
        Ok(self.ledger.lock(tx, &users, users.len()).await?)
    }

    async fn apply(&mut self, tx: &mut PgConnection, input: &Self::Input) -> LaneResult<Applied> {
        match &input.request {
            OrderRequest::PlaceOrder(order) => self.place(tx, order, input.request_id).await,
        }
    }

    async fn finish(self, tx: &mut PgConnection) -> LaneResult<Vec<Event>> {
        self.ledger.flush(tx).await?;
        Ok(Vec::new())
    }
}
