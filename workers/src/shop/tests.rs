//! The order and stats lanes' business steps on a fresh database per test,
//! without Kafka: each test runs a lane's `prepare`, `apply` and `finish`
//! in a transaction of its own, as the engine would.

use api::outcomes::OrderResult;
use api::status::{OrderStatus, PaymentStatus};
use chrono::{DateTime, NaiveDate, Utc};
use schemas::events::{OrderPaid, OrderPaidItem, ProductDailyStats};
use schemas::requests::OrderRequest;
use schemas::requests::{OrderLine, PlaceOrder};
use schemas::{ErrorCode, Event, EventEnvelope, RequestEnvelope};
use sqlx::PgPool;

use super::stats::OrderEvents;
use super::{OrderLane, StatsLane};
use crate::engine::{EventOn, Outcome};
use crate::fixtures::{
    balance_of, commit_batch, commit_refused, commit_unchanged, payments, race_for_one, rejections,
    request, result_as, spent, user_with_balance,
};

/// What the stats lane consumes.
type PaidOrder = EventOn<OrderEvents>;

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

/// What is left of each of `stocks`, in their order.
async fn stocks_left(pool: &PgPool, stocks: &[i64]) -> Vec<i32> {
    sqlx::query_scalar!(
        r#"SELECT s.quantity AS "quantity!"
           FROM UNNEST($1::int8[]) WITH ORDINALITY AS t(id, n)
           JOIN product_stocks s ON s.id = t.id ORDER BY t.n"#,
        stocks
    )
    .fetch_all(pool)
    .await
    .expect("stocks")
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
    let (applied, finished) =
        commit_batch(&pool, &OrderLane::default(), std::slice::from_ref(&placed)).await;
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
    let items = sqlx::query_as!(
        OrderPaidItem,
        "SELECT product_stock_id, product_id, size, quantity, unit_price FROM order_items
         WHERE order_id = $1 ORDER BY id",
        result.order_id
    )
    .fetch_all(&pool)
    .await
    .expect("items");
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
    let history_id = change.history_id;
    let expected = spent(user, 25_000, 75_000, result.payment_id, history_id);
    assert_eq!(*change, expected);

    let stocks = [shirts[0], shirts[1], caps[0]];
    assert_eq!(stocks_left(&pool, &stocks).await, [3, 3, 0]);
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

/// One batch decides its orders in turn against what the orders before it
/// left, and writes them all at its end.
#[sqlx::test(migrations = "../migrations")]
async fn orders_in_one_batch_share_its_stock_in_turn(pool: PgPool) {
    let (shirt, shirts) = product(&pool, 10_000, &[("S", 3), ("M", 5)]).await;
    let first = user_with_balance(&pool, 100_000).await;
    let second = user_with_balance(&pool, 100_000).await;
    let third = user_with_balance(&pool, 15_000).await;
    put_in_cart(&pool, third, shirt, shirts[1]).await;

    let batch = [
        order(first, &[(shirts[0], 2), (shirts[1], 1)], false),
        // One S left: refused, and takes nothing of M.
        order(second, &[(shirts[0], 2), (shirts[1], 1)], false),
        order(second, &[(shirts[0], 1)], false),
        // Paid from the balance the same batch left the first user.
        order(first, &[(shirts[1], 2)], false),
        order(third, &[(shirts[1], 1)], true),
        // One M is left, but the third user has only 5,000.
        order(third, &[(shirts[1], 1)], false),
    ];
    let (applied, _) = commit_batch(&pool, &OrderLane::default(), &batch).await;
    assert_eq!(
        rejections(&applied),
        [
            None,
            Some(ErrorCode::OutOfStock),
            None,
            None,
            None,
            Some(ErrorCode::InsufficientBalance)
        ]
    );
    assert_eq!(stocks_left(&pool, &shirts).await, [0, 1]);
    let versions = sqlx::query_scalar!(
        "SELECT version FROM product_stocks WHERE id = ANY($1) ORDER BY id",
        &shirts
    )
    .fetch_all(&pool)
    .await
    .expect("versions");
    assert_eq!(versions, [2, 3], "one version per order that took from it");
    assert_eq!(
        (
            balance_of(&pool, first).await,
            balance_of(&pool, second).await,
            balance_of(&pool, third).await
        ),
        (50_000, 90_000, 5_000)
    );

    let results: Vec<&OrderResult> = [0, 2, 3, 4]
        .into_iter()
        .map(|i| result_as::<OrderResult>(&applied[i]))
        .collect();
    assert!(
        results.windows(2).all(|w| w[0].order_id < w[1].order_id),
        "order ids follow the batch: {results:?}"
    );
    let rows = sqlx::query!(
        r#"SELECT o.id, o.user_id, o.total_amount, p.id AS payment_id, p.amount,
                  (SELECT sum(i.quantity) FROM order_items i WHERE i.order_id = o.id) AS "units!"
           FROM orders o JOIN payments p ON p.order_id = o.id ORDER BY o.id"#
    )
    .fetch_all(&pool)
    .await
    .expect("orders");
    let written: Vec<(i64, i64, i64, i64, i64, i64)> = rows
        .iter()
        .map(|r| {
            (
                r.id,
                r.user_id,
                r.total_amount,
                r.payment_id,
                r.amount,
                r.units,
            )
        })
        .collect();
    let expected: Vec<(i64, i64, i64, i64, i64, i64)> = results
        .iter()
        .zip([(first, 3), (second, 1), (first, 2), (third, 1)])
        .map(|(r, (user, units))| {
            (
                r.order_id,
                user,
                units * 10_000,
                r.payment_id,
                units * 10_000,
                units,
            )
        })
        .collect();
    assert_eq!(written, expected);
    let cart = sqlx::query_scalar!(
        r#"SELECT count(*) AS "lines!" FROM user_carts WHERE user_id = $1"#,
        third
    )
    .fetch_one(&pool)
    .await
    .expect("cart");
    assert_eq!(cart, 0, "the order from the cart emptied it");
}

#[sqlx::test(migrations = "../migrations")]
async fn an_order_over_stock_or_balance_changes_nothing(pool: PgPool) {
    let (_, shirts) = product(&pool, 10_000, &[("S", 5)]).await;
    let (_, caps) = product(&pool, 5_000, &[("F", 1)]).await;
    let user = user_with_balance(&pool, 100_000).await;
    let poor = user_with_balance(&pool, 9_999).await;

    let cases = vec![
        (
            order(user, &[(shirts[0], 2), (caps[0], 3)], false),
            ErrorCode::OutOfStock,
        ),
        (
            order(poor, &[(shirts[0], 1)], false),
            ErrorCode::InsufficientBalance,
        ),
        (
            order(user, &[(caps[0] + 1_000, 1)], false),
            ErrorCode::NotFound,
        ),
    ];
    let applied = commit_refused(&pool, &OrderLane::default(), cases).await;
    assert!(
        matches!(&applied[0].outcome, Outcome::Rejected(_, message)
            if message.contains(&format!("product stock {}", caps[0]))),
        "names the short line: {:?}",
        applied[0].outcome
    );
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

    let lane = OrderLane::default();
    let winner = race_for_one(&pool, lane, batches, ErrorCode::OutOfStock).await;

    assert_eq!(stocks_left(&pool, &stocks).await, [0]);
    let orders = sqlx::query_scalar!("SELECT user_id FROM orders")
        .fetch_all(&pool)
        .await
        .expect("orders");
    assert_eq!(orders, [buyers[winner]]);
    for (i, &buyer) in buyers.iter().enumerate() {
        let expected = if i == winner { 70_000 } else { 100_000 };
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

    let lane = OrderLane::default();
    race_for_one(&pool, lane, batches, ErrorCode::InsufficientBalance).await;

    assert_eq!(balance_of(&pool, user).await, 10_000);
    let mut left = stocks_left(&pool, &stocks).await;
    left.sort_unstable();
    assert_eq!(left, [9, 10, 10], "only the paid order took stock");
}

fn paid_at(text: &str) -> DateTime<Utc> {
    text.parse().expect("timestamp")
}

fn paid_event(order_id: i64, paid_at: DateTime<Utc>, items: &[(i64, i32, i64)]) -> PaidOrder {
    PaidOrder::from(EventEnvelope::new(
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
    ))
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
    let lane = StatsLane::new("Asia/Seoul");
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
    commit_unchanged(&pool, &lane, &[late]).await;

    // Another order on the same day adds to its totals.
    let next = paid_event(3, paid_at("2024-05-02T01:00:00Z"), &[(hoodie, 4, 10_000)]);
    let (_, finished) = commit_batch(&pool, &lane, &[next]).await;
    assert_eq!(daily(finished), [stats(hoodie, "2024-05-02", 2, 7, 70_000)]);
    let rows = sqlx::query_as!(
        ProductDailyStats,
        r#"SELECT product_id, order_date AS date, total_orders::int8 AS "total_orders!",
                  total_quantity, total_sales_amount
           FROM product_order_stats ORDER BY product_id, order_date"#
    )
    .fetch_all(&pool)
    .await
    .expect("stats");
    assert_eq!(
        rows,
        [
            stats(hoodie, "2024-05-01", 1, 1, 10_000),
            stats(hoodie, "2024-05-02", 2, 7, 70_000),
            stats(cap, "2024-05-02", 1, 1, 5_000),
        ]
    );
}
