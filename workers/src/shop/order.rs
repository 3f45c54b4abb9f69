//! Order lane (key: user id): every line's stock is taken only if all lines
//! are available; the balance pays; order, items, payment and history rows
//! are written; `order.paid` goes to the outbox.
//!
//! Like the [`Ledger`], a batch works in memory between its locks and its
//! writes: `prepare` locks and reads the batch's stocks (with their prices)
//! and reserves order and payment ids, `apply` decides each order against
//! the stock and balances in memory and stages its rows, and `finish`
//! writes them all with one statement per table. A batch's cost in round
//! trips does not grow with its orders, so the hot stocks' locks, which
//! serialize the order lane's partitions, are held for as short a time as
//! the batch allows.

use std::collections::{BTreeSet, HashMap, VecDeque};

use api::outcomes::OrderResult;
use chrono::{DateTime, Utc};
use schemas::events::{BalanceChangeKind, OrderPaid, OrderPaidItem};
use schemas::requests::OrderRequest;
use schemas::requests::PlaceOrder;
use schemas::{ErrorCode, Event, RequestEnvelope};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::engine::{Applied, Lane};
use crate::error::{LaneError, LaneResult};
use crate::ledger::Ledger;

/// Applies `order.place`; a batch's balances are its ledger, its stocks
/// and rows its [`OrderBook`].
#[derive(Debug, Clone, Default)]
pub struct OrderLane {
    ledger: Ledger,
    book: OrderBook,
}

/// A locked product stock with its product's price, and what this batch
/// took of it.
#[derive(Debug, Clone)]
struct Stock {
    product_id: i64,
    size: String,
    /// What is left with this batch's orders taken.
    quantity: i32,
    price: i64,
    /// How many of this batch's orders took from it.
    takes: i64,
}

/// The ids one paid order's rows get, and the time it is paid at (the
/// transaction's).
#[derive(Debug, Clone, Copy)]
struct OrderIds {
    order_id: i64,
    payment_id: i64,
    paid_at: DateTime<Utc>,
}

/// A paid order's rows, written by [`OrderBook::flush`].
#[derive(Debug, Clone)]
struct StagedOrder {
    ids: OrderIds,
    user_id: i64,
    total: i64,
    request_id: Uuid,
    lines: Vec<OrderPaidItem>,
    from_cart: bool,
}

/// The stocks one batch transaction has locked, its reserved ids and the
/// orders it staged.
#[derive(Debug, Clone, Default)]
struct OrderBook {
    /// Locked stocks by id.
    stocks: HashMap<i64, Stock>,
    ids: VecDeque<OrderIds>,
    orders: Vec<StagedOrder>,
}

impl OrderBook {
    /// Locks and reads the stocks of `ids` the book does not hold yet, in
    /// ascending id order, so order batches on different partitions cannot
    /// deadlock on stock rows (NO KEY UPDATE does not conflict with the KEY
    /// SHARE locks that inserting order items takes). A stock that does not
    /// exist is simply not held.
    async fn lock(&mut self, tx: &mut PgConnection, ids: &BTreeSet<i64>) -> LaneResult<()> {
        let wanted: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| !self.stocks.contains_key(id))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let rows = sqlx::query!(
            "SELECT s.id, s.product_id, s.size, s.quantity, p.price
             FROM product_stocks s JOIN products p ON p.id = s.product_id
             WHERE s.id = ANY($1) ORDER BY s.id FOR NO KEY UPDATE OF s",
            &wanted
        )
        .fetch_all(&mut *tx)
        .await?;
        for row in rows {
            self.stocks.insert(
                row.id,
                Stock {
                    product_id: row.product_id,
                    size: row.size,
                    quantity: row.quantity,
                    price: row.price,
                    takes: 0,
                },
            );
        }
        Ok(())
    }

    /// Takes ids for `count` more orders (after the batch's locks, so one
    /// user's orders stay in id order across batches).
    async fn reserve(&mut self, tx: &mut PgConnection, count: usize) -> LaneResult<()> {
        let rows = sqlx::query!(
            r#"SELECT nextval(pg_get_serial_sequence('orders', 'id')) AS "order_id!",
                      nextval(pg_get_serial_sequence('payments', 'id')) AS "payment_id!",
                      now() AS "paid_at!"
               FROM generate_series(1, $1)"#,
            i32::try_from(count).unwrap_or(i32::MAX)
        )
        .fetch_all(&mut *tx)
        .await?;
        self.ids.extend(rows.into_iter().map(|row| OrderIds {
            order_id: row.order_id,
            payment_id: row.payment_id,
            paid_at: row.paid_at,
        }));
        Ok(())
    }

    /// An order's lines, each with its stock's product, size and price (what
    /// `order.paid` carries), or the refusal: a stock that does not exist or
    /// has too little left.
    async fn priced_lines(
        &mut self,
        tx: &mut PgConnection,
        order: &PlaceOrder,
    ) -> LaneResult<Result<Vec<OrderPaidItem>, Applied>> {
        let ids = order.items.iter().map(|l| l.product_stock_id).collect();
        self.lock(tx, &ids).await?;
        let mut lines = Vec::with_capacity(order.items.len());
        for line in &order.items {
            let Some(stock) = self.stocks.get(&line.product_stock_id) else {
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
                        line.product_stock_id,
                        stock.product_id,
                        stock.size,
                        stock.quantity,
                        line.quantity
                    ),
                )));
            }
            lines.push(OrderPaidItem {
                product_id: stock.product_id,
                product_stock_id: line.product_stock_id,
                size: stock.size.clone(),
                quantity: line.quantity,
                unit_price: stock.price,
            });
        }
        Ok(Ok(lines))
    }

    /// Takes the stock of `lines` (checked by [`OrderBook::priced_lines`])
    /// and stages the paid order of `user_id` for `total`: order, items and
    /// payment rows, and with `from_cart` the removal of its cart lines.
    async fn take(
        &mut self,
        tx: &mut PgConnection,
        order: &PlaceOrder,
        lines: Vec<OrderPaidItem>,
        total: i64,
        request_id: Uuid,
    ) -> LaneResult<OrderIds> {
        for line in &lines {
            let stock = self
                .stocks
                .get_mut(&line.product_stock_id)
                .ok_or_else(|| LaneError::Bug("stock taken without its lock".into()))?;
            stock.quantity -= line.quantity;
            stock.takes += 1;
        }
        if self.ids.is_empty() {
            self.reserve(tx, 1).await?;
        }
        let ids = self
            .ids
            .pop_front()
            .ok_or_else(|| LaneError::Bug("no order id reserved".into()))?;
        self.orders.push(StagedOrder {
            ids,
            user_id: order.user_id,
            total,
            request_id,
            lines,
            from_cart: order.from_cart,
        });
        Ok(ids)
    }

    /// Writes what the batch took and the orders it staged: one statement
    /// per table, whatever the batch size. Before the ledger's flush, whose
    /// history rows name the payments.
    async fn flush(self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.orders.is_empty() {
            return Ok(());
        }
        let (mut stock_ids, mut quantities, mut takes) = (Vec::new(), Vec::new(), Vec::new());
        for (id, stock) in self.stocks.iter().filter(|(_, s)| s.takes > 0) {
            stock_ids.push(*id);
            quantities.push(stock.quantity);
            takes.push(stock.takes);
        }
        sqlx::query!(
            "UPDATE product_stocks s
             SET quantity = d.quantity, version = s.version + d.takes, updated_at = now()
             FROM UNNEST($1::int8[], $2::int4[], $3::int8[]) AS d(id, quantity, takes)
             WHERE s.id = d.id",
            &stock_ids,
            &quantities,
            &takes
        )
        .execute(&mut *tx)
        .await?;
        let orders = &self.orders;
        let order_ids: Vec<i64> = orders.iter().map(|o| o.ids.order_id).collect();
        let user_ids: Vec<i64> = orders.iter().map(|o| o.user_id).collect();
        let totals: Vec<i64> = orders.iter().map(|o| o.total).collect();
        let paid_at: Vec<DateTime<Utc>> = orders.iter().map(|o| o.ids.paid_at).collect();
        sqlx::query!(
            "INSERT INTO orders (id, user_id, status, total_amount, order_date, request_id)
             SELECT d.id, d.user_id, 'PAID', d.total, d.paid_at, d.request_id
             FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::timestamptz[], $5::uuid[])
                 AS d(id, user_id, total, paid_at, request_id)",
            &order_ids,
            &user_ids,
            &totals,
            &paid_at,
            &orders.iter().map(|o| o.request_id).collect::<Vec<_>>()
        )
        .execute(&mut *tx)
        .await?;
        let lines = || {
            orders
                .iter()
                .flat_map(|o| o.lines.iter().map(move |l| (o, l)))
        };
        sqlx::query!(
            "INSERT INTO order_items
                 (order_id, product_stock_id, product_id, size, quantity, unit_price)
             SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::text[], $5::int4[],
                                  $6::int8[])",
            &lines().map(|(o, _)| o.ids.order_id).collect::<Vec<_>>(),
            &lines().map(|(_, l)| l.product_stock_id).collect::<Vec<_>>(),
            &lines().map(|(_, l)| l.product_id).collect::<Vec<_>>(),
            &lines().map(|(_, l)| l.size.as_str()).collect::<Vec<_>>() as &[&str],
            &lines().map(|(_, l)| l.quantity).collect::<Vec<_>>(),
            &lines().map(|(_, l)| l.unit_price).collect::<Vec<_>>()
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "INSERT INTO payments (id, order_id, user_id, amount, method, status, paid_at)
             SELECT d.id, d.order_id, d.user_id, d.amount, 'BALANCE', 'SUCCESS', d.paid_at
             FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::timestamptz[])
                 AS d(id, order_id, user_id, amount, paid_at)",
            &orders.iter().map(|o| o.ids.payment_id).collect::<Vec<_>>(),
            &order_ids,
            &user_ids,
            &totals,
            &paid_at
        )
        .execute(&mut *tx)
        .await?;
        let carted = || lines().filter(|(o, _)| o.from_cart);
        if carted().next().is_some() {
            sqlx::query!(
                "DELETE FROM user_carts c
                 USING UNNEST($1::int8[], $2::int8[]) AS d(user_id, stock_id)
                 WHERE c.user_id = d.user_id AND c.product_stock_id = d.stock_id",
                &carted().map(|(o, _)| o.user_id).collect::<Vec<_>>(),
                &carted()
                    .map(|(_, l)| l.product_stock_id)
                    .collect::<Vec<_>>()
            )
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}

impl OrderLane {
    async fn place(
        &mut self,
        tx: &mut PgConnection,
        order: &PlaceOrder,
        request_id: Uuid,
    ) -> LaneResult<Applied> {
        let lines = match self.book.priced_lines(tx, order).await? {
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
        let ids = self
            .book
            .take(tx, order, lines.clone(), total, request_id)
            .await?;
        let paid = OrderPaid {
            order_id: ids.order_id,
            user_id: order.user_id,
            payment_id: ids.payment_id,
            items: lines,
            total_amount: total,
            paid_at: ids.paid_at,
        };
        let mut events = vec![Event::OrderPaid(paid)];
        let mut balance_after = balance;
        if total > 0 {
            let changed = self
                .ledger
                .change(
                    tx,
                    order.user_id,
                    BalanceChangeKind::Use,
                    total,
                    Some(ids.payment_id),
                    Some("order payment"),
                    request_id,
                )
                .await?;
            balance_after = changed.balance_after;
            events.push(Event::BalanceChanged(changed));
        }
        Ok(Applied::succeeded(
            OrderResult {
                order_id: ids.order_id,
                payment_id: ids.payment_id,
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

    /// Locks and reads every stock the batch touches (the [`OrderBook`]),
    /// then the batch's balances, then reserves an order's ids for each.
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
        self.book.lock(tx, &ids).await?;
        let users: Vec<i64> = orders.iter().map(|order| order.user_id).collect();
        self.ledger.lock(tx, &users, users.len()).await?;
        self.book.reserve(tx, orders.len()).await
    }

    async fn apply(&mut self, tx: &mut PgConnection, input: &Self::Input) -> LaneResult<Applied> {
        match &input.request {
            OrderRequest::PlaceOrder(order) => self.place(tx, order, input.request_id).await,
        }
    }

    async fn finish(self, tx: &mut PgConnection) -> LaneResult<Vec<Event>> {
        self.book.flush(tx).await?;
        self.ledger.flush(tx).await?;
        Ok(Vec::new())
    }
}
