//! The order and stats lanes' business steps on a fresh database per test,
//! without Kafka: each test runs a lane's `prepare`, `apply` and `finish`
//! in a transaction of its own, as the engine would.

use std::sync::Arc;

use api::outcomes::OrderResult;
use api::status::{OrderStatus, PaymentStatus};
use chrono::{DateTime, NaiveDate, Utc};
use schemas::events::{
    BalanceChangeKind, BalanceChanged, OrderPaid, OrderPaidItem, ProductDailyStats,
};
use schemas::requests::OrderRequest;
use schemas::requests::{OrderLine, PlaceOrder};
use schemas::{ErrorCode, Event, EventEnvelope, RequestEnvelope};
use sqlx::PgPool;

use super::{OrderLane, StatsLane};
use crate::engine::Outcome;
use crate::fixtures::{
    balance_of, commit_batch, payments, race, rejection, rejections, request, result_as, snapshot,
    user_with_balance,
};

/// A product at `price` with a stock per `(size, quantity)`; returns it and
/// its stocks in the order given.
async fn product(pool: &PgPool, price: i64, stocks: &[(&str, i32)]) -> (i64, Vec<i64>) {
    let product_id = sqlx::query_scalar!(
        "INSERT INTO products (name, category, price) VALUES ('Lane test', 'tops', $1)
         RETURNING id",
        price
    )
    .fetch_one(pool)
    .await
    .expect("product");
    let mut ids = Vec::with_capacity(stocks.len());
    for (size, quantity) in stocks {
        let id = sqlx::query_scalar!(
            "INSERT INTO product_stocks (product_id, size, quantity) VALUES ($1, $2, $3)
             RETURNING id",
            product_id,
            size,
            quantity
        )
        .fetch_one(pool)
        .await
        .expect("stock");
        ids.push(id);
    }
    (product_id, ids)
}

async fn stock_left(pool: &PgPool, stock_id: i64) -> i32 {
    sqlx::query_scalar!(
        "SELECT quantity FROM product_stocks WHERE id = $1",
        stock_id
    )
    .fetch_one(pool)
    .await
    .expect("stock")
}

async fn put_in_cart(pool: &PgPool, user_id: i64, product_id: i64, stock_id: i64) {
    sqlx::query!(
        "INSERT INTO user_carts (user_id, product_id, product_stock_id, quantity)
         VALUES ($1, $2, $3, 1)",
        user_id,
        product_id,
        stock_id
    )
    .execute(pool)
    .await
    .expect("cart");
}

fn order(user_id: i64, lines: &[(i64, i32)], from_cart: bool) -> RequestEnvelope<OrderRequest> {
    request(OrderRequest::PlaceOrder(PlaceOrder {
        user_id,
        items: lines
            .iter()
            .map(|&(product_stock_id, quantity)| OrderLine {
                product_stock_id,
                quantity,
            })
            .collect(),
        from_cart,
    }))
}

#[sqlx::test(migrations = "../migrations")]
async fn placing_an_order_takes_stock_and_pays(pool: PgPool) {
    let (shirt, shirts) = product(&pool, 10_000, &[("S", 5), ("M", 3)]).await;
    let (cap, caps) = product(&pool, 5_000, &[("F", 1)]).await;
    let user = user_with_balance(&pool, 100_000).await;
    put_in_cart(&pool, user, shirt, shirts[0]).await;
    put_in_cart(&pool, user, shirt, shirts[1]).await;
    put_in_cart(&pool, user, cap, caps[0]).await;

    let placed = order(user, &[(shirts[0], 2), (caps[0], 1)], true);
    let (applied, finished) = commit_batch(&pool, &OrderLane, std::slice::from_ref(&placed)).await;
    assert!(finished.is_empty());
    let result = result_as::<OrderResult>(&applied[0]);
    assert_eq!((result.total_amount, result.balance), (25_000, 75_000));

    let row = sqlx::query!(
        r#"SELECT status AS "status: OrderStatus", user_id, total_amount,
                  order_date AS "order_date!", request_id
           FROM orders WHERE id = $1"#,
        result.order_id
    )
    .fetch_one(&pool)
    .await
    .expect("order");
    assert_eq!(
        (row.status, row.user_id, row.total_amount, row.request_id),
        (OrderStatus::Paid, user, 25_000, Some(placed.request_id))
    );
    let payment = payments(&pool).await;
    assert_eq!(payment.len(), 1);
    assert_eq!(
        (
            payment[0].id,
            payment[0].order_id,
            payment[0].reservation_id,
            payment[0].amount,
            payment[0].status,
            payment[0].paid_at
        ),
        (
            result.payment_id,
            Some(result.order_id),
            None,
            25_000,
            PaymentStatus::Success,
            Some(row.order_date)
        )
    );
    let items = sqlx::query!(
        "SELECT product_stock_id, product_id, size, quantity, unit_price FROM order_items
         WHERE order_id = $1 ORDER BY id",
        result.order_id
    )
    .fetch_all(&pool)
    .await
    .expect("items");
    let items: Vec<OrderPaidItem> = items
        .into_iter()
        .map(|i| OrderPaidItem {
            product_id: i.product_id,
            product_stock_id: i.product_stock_id,
            size: i.size,
            quantity: i.quantity,
            unit_price: i.unit_price,
        })
        .collect();
    assert_eq!(
        items,
        [
            OrderPaidItem {
                product_id: shirt,
                product_stock_id: shirts[0],
                size: "S".into(),
                quantity: 2,
                unit_price: 10_000,
            },
            OrderPaidItem {
                product_id: cap,
                product_stock_id: caps[0],
                size: "F".into(),
                quantity: 1,
                unit_price: 5_000,
            },
        ]
    );
    let [Event::OrderPaid(paid), Event::BalanceChanged(change)] = applied[0].events.as_slice()
    else {
        panic!("unexpected events {:?}", applied[0].events);
    };
    assert_eq!(
        paid,
        &OrderPaid {
            order_id: result.order_id,
            user_id: user,
            payment_id: result.payment_id,
            items,
            total_amount: 25_000,
            paid_at: row.order_date,
        }
    );
    assert_eq!(
        change,
        &BalanceChanged {
            user_id: user,
            history_id: change.history_id,
            kind: BalanceChangeKind::Use,
            amount: 25_000,
            balance_after: 75_000,
            payment_id: Some(result.payment_id),
        }
    );

    assert_eq!(stock_left(&pool, shirts[0]).await, 3);
    assert_eq!(stock_left(&pool, shirts[1]).await, 3);
    assert_eq!(stock_left(&pool, caps[0]).await, 0);
    assert_eq!(balance_of(&pool, user).await, 75_000);
    let cart = sqlx::query_scalar!(
        "SELECT product_stock_id FROM user_carts WHERE user_id = $1",
        user
    )
    .fetch_all(&pool)
    .await
    .expect("cart");
    assert_eq!(cart, [shirts[1]], "ordered lines leave the cart");
}

#[sqlx::test(migrations = "../migrations")]
async fn an_order_over_stock_or_balance_changes_nothing(pool: PgPool) {
    let (_, shirts) = product(&pool, 10_000, &[("S", 5)]).await;
    let (_, caps) = product(&pool, 5_000, &[("F", 1)]).await;
    let user = user_with_balance(&pool, 100_000).await;
    let poor = user_with_balance(&pool, 9_999).await;
    let before = snapshot(&pool).await;

    let (applied, finished) = commit_batch(
        &pool,
        &OrderLane,
        &[
            order(user, &[(shirts[0], 2), (caps[0], 3)], false),
            order(poor, &[(shirts[0], 1)], false),
            order(user, &[(caps[0] + 1_000, 1)], false),
        ],
    )
    .await;
    assert_eq!(
        rejections(&applied),
        [
            Some(ErrorCode::OutOfStock),
            Some(ErrorCode::InsufficientBalance),
            Some(ErrorCode::NotFound),
        ]
    );
    assert!(
        matches!(&applied[0].outcome, Outcome::Rejected(_, message)
            if message.contains(&format!("product stock {}", caps[0]))),
        "names the short line: {:?}",
        applied[0].outcome
    );
    assert!(applied.iter().all(|a| a.events.is_empty()));
    assert!(finished.is_empty());
    assert_eq!(snapshot(&pool).await, before);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_last_unit_goes_to_exactly_one_of_concurrent_orders(pool: PgPool) {
    let (_, stocks) = product(&pool, 30_000, &[("M", 1)]).await;
    let mut buyers = Vec::new();
    for _ in 0..4 {
        buyers.push(user_with_balance(&pool, 100_000).await);
    }
    let batches = buyers
        .iter()
        .map(|&buyer| vec![order(buyer, &[(stocks[0], 1)], false)])
        .collect();

    let decided = race(&pool, Arc::new(OrderLane), batches).await;
    let codes: Vec<Option<ErrorCode>> = decided.iter().map(|b| rejection(&b[0])).collect();
    let winners: Vec<usize> = (0..codes.len()).filter(|&i| codes[i].is_none()).collect();
    assert_eq!(winners.len(), 1, "{codes:?}");
    assert_eq!(
        codes
            .iter()
            .filter(|c| **c == Some(ErrorCode::OutOfStock))
            .count(),
        3,
        "{codes:?}"
    );

    assert_eq!(stock_left(&pool, stocks[0]).await, 0);
    let orders = sqlx::query_scalar!("SELECT user_id FROM orders")
        .fetch_all(&pool)
        .await
        .expect("orders");
    assert_eq!(orders, [buyers[winners[0]]]);
    for (i, &buyer) in buyers.iter().enumerate() {
        let expected = if i == winners[0] { 70_000 } else { 100_000 };
        assert_eq!(balance_of(&pool, buyer).await, expected);
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn concurrent_orders_cannot_spend_one_balance_twice(pool: PgPool) {
    let user = user_with_balance(&pool, 30_000).await;
    let mut stocks = Vec::new();
    for _ in 0..3 {
        stocks.push(product(&pool, 20_000, &[("F", 10)]).await.1[0]);
    }
    let batches = stocks
        .iter()
        .map(|&stock| vec![order(user, &[(stock, 1)], false)])
        .collect();

    let decided = race(&pool, Arc::new(OrderLane), batches).await;
    let codes: Vec<Option<ErrorCode>> = decided.iter().map(|b| rejection(&b[0])).collect();
    assert_eq!(codes.iter().filter(|c| c.is_none()).count(), 1, "{codes:?}");
    assert_eq!(
        codes
            .iter()
            .filter(|c| **c == Some(ErrorCode::InsufficientBalance))
            .count(),
        2,
        "{codes:?}"
    );

    assert_eq!(balance_of(&pool, user).await, 10_000);
    let mut left = Vec::new();
    for &stock in &stocks {
        left.push(stock_left(&pool, stock).await);
    }
    left.sort_unstable();
    assert_eq!(left, [9, 10, 10], "only the paid order took stock");
}

fn paid_at(text: &str) -> DateTime<Utc> {
    text.parse().expect("timestamp")
}

fn paid_event(order_id: i64, paid_at: DateTime<Utc>, items: &[(i64, i32, i64)]) -> EventEnvelope {
    EventEnvelope::new(
        None,
        Event::OrderPaid(OrderPaid {
            order_id,
            user_id: 1,
            payment_id: order_id,
            items: items
                .iter()
                .enumerate()
                .map(|(i, &(product_id, quantity, unit_price))| OrderPaidItem {
                    product_id,
                    product_stock_id: i as i64 + 1,
                    size: format!("size{i}"),
                    quantity,
                    unit_price,
                })
                .collect(),
            total_amount: items.iter().map(|i| i64::from(i.1) * i.2).sum(),
            paid_at,
        }),
    )
}

fn day(text: &str) -> NaiveDate {
    text.parse().expect("date")
}

fn stats(
    product_id: i64,
    date: &str,
    orders: i64,
    quantity: i64,
    amount: i64,
) -> ProductDailyStats {
    ProductDailyStats {
        product_id,
        date: day(date),
        total_orders: orders,
        total_quantity: quantity,
        total_sales_amount: amount,
    }
}

/// The `product.daily_stats` events of a batch, in key order.
fn daily(events: Vec<Event>) -> Vec<ProductDailyStats> {
    let mut stats: Vec<ProductDailyStats> = events
        .into_iter()
        .map(|event| match event {
            Event::ProductDailyStats(stats) => stats,
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    stats.sort_by_key(|s| (s.product_id, s.date));
    stats
}

#[sqlx::test(migrations = "../migrations")]
async fn the_stats_lane_counts_a_paid_order_once(pool: PgPool) {
    let lane = StatsLane {
        business_tz: "Asia/Seoul".into(),
    };
    let (hoodie, _) = product(&pool, 10_000, &[("M", 1)]).await;
    let (cap, _) = product(&pool, 5_000, &[("F", 1)]).await;
    // 00:30 on 2 May in Seoul; two sizes of the hoodie count as one order.
    let late = paid_event(
        1,
        paid_at("2024-05-01T15:30:00Z"),
        &[(hoodie, 2, 10_000), (hoodie, 1, 10_000), (cap, 1, 5_000)],
    );
    // 23:00 on 1 May in Seoul.
    let early = paid_event(2, paid_at("2024-05-01T14:00:00Z"), &[(hoodie, 1, 10_000)]);

    // The relay published order 1 twice.
    let (applied, finished) =
        commit_batch(&pool, &lane, &[late.clone(), late.clone(), early]).await;
    assert!(applied
        .iter()
        .all(|a| a.outcome == Outcome::Succeeded(None) && a.events.is_empty()));
    assert_eq!(
        daily(finished),
        [
            stats(hoodie, "2024-05-01", 1, 1, 10_000),
            stats(hoodie, "2024-05-02", 1, 3, 30_000),
            stats(cap, "2024-05-02", 1, 1, 5_000),
        ]
    );

    // And once more in a later batch: counted already.
    let before = snapshot(&pool).await;
    let (_, finished) = commit_batch(&pool, &lane, &[late]).await;
    assert!(finished.is_empty());
    assert_eq!(snapshot(&pool).await, before);

    // Another order on the same day adds to its totals.
    let next = paid_event(3, paid_at("2024-05-02T01:00:00Z"), &[(hoodie, 4, 10_000)]);
    let (_, finished) = commit_batch(&pool, &lane, &[next]).await;
    assert_eq!(daily(finished), [stats(hoodie, "2024-05-02", 2, 7, 70_000)]);
    let rows = sqlx::query!(
        "SELECT product_id, order_date, total_orders, total_quantity, total_sales_amount
         FROM product_order_stats ORDER BY product_id, order_date"
    )
    .fetch_all(&pool)
    .await
    .expect("stats");
    let rows: Vec<ProductDailyStats> = rows
        .into_iter()
        .map(|r| ProductDailyStats {
            product_id: r.product_id,
            date: r.order_date,
            total_orders: i64::from(r.total_orders),
            total_quantity: r.total_quantity,
            total_sales_amount: r.total_sales_amount,
        })
        .collect();
    assert_eq!(
        rows,
        [
            stats(hoodie, "2024-05-01", 1, 1, 10_000),
            stats(hoodie, "2024-05-02", 2, 7, 70_000),
            stats(cap, "2024-05-02", 1, 1, 5_000),
        ]
    );
}
