//! Shop end to end: orders on shared stock, all-or-nothing lines, balance
//! checks, cart checkout, and exactly-once daily product stats.

use api::status::RequestStatus;
use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::json;
use testkit::api::codes;
use testkit::scalar;
use testkit::stack::{Options, Stack};
use uuid::Uuid;

/// The workers binary, for worker processes.
const WORKERS: &str = env!("CARGO_BIN_EXE_workers");

async fn stock_left(stack: &Stack, stock_id: i64) -> anyhow::Result<i64> {
    scalar!(
        stack,
        "SELECT quantity::int8 FROM product_stocks WHERE id = $1",
        stock_id
    )
    .await
}

/// Waits until the stats lane has counted `orders` orders of `product_id`
/// today, and returns (orders, quantity, amount).
async fn stats_reach(
    stack: &Stack,
    product_id: i64,
    orders: i64,
) -> anyhow::Result<(i64, i64, i64)> {
    testkit::eventually(
        "daily stats to catch up",
        Duration::from_secs(60),
        || async {
            let row = sqlx::query!(
                r#"SELECT total_orders::int8 AS "orders!", total_quantity, total_sales_amount
                   FROM product_order_stats
                   WHERE product_id = $1 AND order_date = (now() AT TIME ZONE 'Asia/Seoul')::date"#,
                product_id
            )
            .fetch_optional(&stack.env.pool)
            .await?
            .map(|r| (r.orders, r.total_quantity, r.total_sales_amount));
            Ok(row.filter(|r| r.0 >= orders))
        },
    )
    .await
}

async fn race_for_stock(initial: i32, buyers_count: usize) -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let (product_id, stocks) = stack
        .api
        .create_product("Hoodie", "tops", 30_000, &[("M", initial)])
        .await?;
    let users = stack.api.funded_users(buyers_count, 100_000).await?;
    let api = &stack.api;
    let stock = stocks[0];
    let requests: Vec<(String, Uuid)> = stream::iter(users.iter())
        .map(|user| async move {
            anyhow::Ok((user.token.clone(), api.order(user, &[(stock, 1)]).await?))
        })
        .buffer_unordered(100)
        .try_collect()
        .await?;
    let counts = codes(&api.outcomes(&requests).await?);
    let winners = (initial as usize).min(buyers_count);
    assert_eq!(
        counts.get("SUCCEEDED").copied().unwrap_or(0),
        winners,
        "{counts:?}"
    );
    assert_eq!(
        counts.get("OUT_OF_STOCK").copied().unwrap_or(0),
        buyers_count - winners,
        "{counts:?}"
    );
    assert_eq!(
        stock_left(&stack, stocks[0]).await?,
        i64::from(initial) - winners as i64
    );
    assert_eq!(
        scalar!(stack, "SELECT count(*) FROM orders").await?,
        winners as i64
    );
    assert_eq!(
        scalar!(
            stack,
            "SELECT count(*) FROM payments WHERE order_id IS NOT NULL"
        )
        .await?,
        winners as i64
    );
    let (orders, quantity, amount) = stats_reach(&stack, product_id, winners as i64).await?;
    assert_eq!(
        (orders, quantity, amount),
        (winners as i64, winners as i64, winners as i64 * 30_000)
    );
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stock_of_ten_and_a_hundred_buyers_sells_ten() -> anyhow::Result<()> {
    race_for_stock(10, 100).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stock_of_fifty_and_fifty_buyers_sells_out() -> anyhow::Result<()> {
    race_for_stock(50, 50).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_with_one_short_line_changes_nothing() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let api = &stack.api;
    let (_, shirts) = api
        .create_product("Shirt", "tops", 10_000, &[("S", 5)])
        .await?;
    let (_, caps) = api
        .create_product("Cap", "hats", 5_000, &[("F", 1)])
        .await?;
    let user = api.funded_user(100_000).await?;
    let id = api.order(&user, &[(shirts[0], 2), (caps[0], 3)]).await?;
    let outcome = api.outcome(&user.token, id).await?;
    assert_eq!(outcome.error_code(), Some("OUT_OF_STOCK"), "{outcome:?}");
    assert!(
        outcome
            .error
            .as_ref()
            .is_some_and(|e| e.message.contains(&caps[0].to_string())),
        "names the item: {outcome:?}"
    );
    assert_eq!(stock_left(&stack, shirts[0]).await?, 5);
    assert_eq!(stock_left(&stack, caps[0]).await?, 1);
    assert_eq!(api.balance(&user).await?, 100_000);
    assert_eq!(scalar!(stack, "SELECT count(*) FROM orders").await?, 0);

    // Too little money: refused, stock untouched.
    let poor = api.funded_user(9_999).await?;
    let id = api.order(&poor, &[(shirts[0], 1)]).await?;
    assert_eq!(
        api.outcome(&poor.token, id).await?.error_code(),
        Some("INSUFFICIENT_BALANCE")
    );
    assert_eq!(stock_left(&stack, shirts[0]).await?, 5);
    assert_eq!(api.balance(&poor).await?, 9_999);

    // Enough of both: one order, both lines, one debit.
    let id = api.order(&user, &[(shirts[0], 2), (caps[0], 1)]).await?;
    let outcome = api.outcome(&user.token, id).await?;
    assert_eq!(outcome.status.as_str(), "SUCCEEDED", "{outcome:?}");
    let ordered = outcome.ordered().expect("an order result");
    assert_eq!(ordered.total_amount, 25_000);
    let order_id = ordered.order_id;
    let (status, order) = api
        .get(&format!("/v1/orders/{order_id}"), &user.token)
        .await?;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(order["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(order["payment"]["amount"], 25_000);
    assert_eq!(api.balance(&user).await?, 75_000);
    let (_, mine) = api
        .get(&format!("/v1/users/{}/orders", user.id), &user.token)
        .await?;
    assert_eq!(mine["items"][0]["id"], order_id);
    let (status, _) = api
        .get(&format!("/v1/orders/{order_id}"), &poor.token)
        .await?;
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN);
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_multi_item_orders_never_oversell_or_deadlock() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let initial = 40;
    let mut stock_ids = Vec::new();
    for name in ["A", "B", "C", "D"] {
        let (_, ids) = stack
            .api
            .create_product(name, "mix", 1_000, &[("F", initial)])
            .await?;
        stock_ids.push(ids[0]);
    }
    let users = stack.api.funded_users(60, 1_000_000).await?;
    let api = &stack.api;
    // Each user orders the four items, half of them in reverse order.
    let requests: Vec<(String, Uuid)> = stream::iter(users.iter().enumerate())
        .map(|(i, user)| {
            let mut lines: Vec<(i64, i32)> = stock_ids
                .iter()
                .map(|id| (*id, 1 + (i % 2) as i32))
                .collect();
            if i % 2 == 1 {
                lines.reverse();
            }
            async move { anyhow::Ok((user.token.clone(), api.order(user, &lines).await?)) }
        })
        .buffer_unordered(60)
        .try_collect()
        .await?;
    let results = api.outcomes(&requests).await?;
    for outcome in &results {
        assert!(
            outcome.status.as_str() == "SUCCEEDED" || outcome.error_code() == Some("OUT_OF_STOCK"),
            "no failure, no unretried deadlock: {outcome:?}"
        );
    }
    for stock in &stock_ids {
        let left = stock_left(&stack, *stock).await?;
        let sold = scalar!(
            stack,
            "SELECT coalesce(sum(quantity), 0)::int8 FROM order_items WHERE product_stock_id = $1",
            stock
        )
        .await?;
        assert!(left >= 0);
        assert_eq!(
            left + sold,
            i64::from(initial),
            "stock + sold = initial for {stock}"
        );
    }
    let paid = scalar!(
        stack,
        "SELECT coalesce(sum(total_amount), 0)::int8 FROM orders"
    )
    .await?;
    let spent = scalar!(
        stack,
        "SELECT coalesce(sum(amount), 0)::int8 FROM balance_histories WHERE type = 'USE'"
    )
    .await?;
    assert_eq!(paid, spent);
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cart_checkout_orders_the_cart_and_empties_it_only_on_success() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let (_, socks) = stack
        .api
        .create_product("Socks", "misc", 2_000, &[("M", 10), ("L", 1)])
        .await?;
    let user = stack.api.funded_user(50_000).await?;
    let api = &stack.api;
    let put = |stock: i64, quantity: i32| {
        api.http
            .put(api.url(&format!("/v1/users/{}/cart/items/{stock}", user.id)))
            .bearer_auth(&user.token)
            .json(&json!({"quantity": quantity}))
            .send()
    };
    let cart_lines = || async {
        let cart = format!("/v1/users/{}/cart", user.id);
        let (_, cart) = api.get(&cart, &user.token).await?;
        anyhow::Ok(cart["items"].as_array().map(Vec::len))
    };
    let (status, cart) = testkit::Api::read(put(socks[0], 3).await?).await?;
    assert_eq!(status, reqwest::StatusCode::OK, "{cart}");
    let (_, cart) = testkit::Api::read(put(socks[1], 2).await?).await?;
    assert_eq!(cart["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(cart["total_amount"], 10_000);
    let (status, reply) = testkit::Api::read(put(socks[0], 0).await?).await?;
    assert_eq!(status, reqwest::StatusCode::UNPROCESSABLE_ENTITY, "{reply}");

    // Size L has 1 left but the cart wants 2: the order fails, the cart stays.
    let checkout = format!("/v1/users/{}/cart/checkout", user.id);
    let id = api.submit(&checkout, &user.token, &[], &json!({})).await?;
    assert_eq!(
        api.outcome(&user.token, id).await?.error_code(),
        Some("OUT_OF_STOCK")
    );
    assert_eq!(
        cart_lines().await?,
        Some(2),
        "cart kept after a failed order"
    );

    // Fix the cart and check out again: ordered, cart emptied.
    let (_, _) = testkit::Api::read(put(socks[1], 1).await?).await?;
    let id = api.submit(&checkout, &user.token, &[], &json!({})).await?;
    let outcome = api.outcome(&user.token, id).await?;
    assert_eq!(outcome.status.as_str(), "SUCCEEDED", "{outcome:?}");
    let order_id = outcome.ordered().expect("an order result").order_id;
    let (_, order) = api
        .get(&format!("/v1/orders/{order_id}"), &user.token)
        .await?;
    let lines: Vec<(i64, i64)> = order["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                i["product_stock_id"].as_i64().unwrap_or(0),
                i["quantity"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(lines, vec![(socks[0], 3), (socks[1], 1)]);
    assert_eq!(cart_lines().await?, Some(0), "cart emptied");
    assert_eq!(api.balance(&user).await?, 50_000 - 8_000);
    let (status, reply) = api
        .post(&checkout, Some(&user.token), &[], &json!({}))
        .await?;
    assert_eq!(
        status,
        reqwest::StatusCode::UNPROCESSABLE_ENTITY,
        "empty cart: {reply}"
    );
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn top_products_rank_by_units_then_sales_then_id() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let api = &stack.api;
    let mut products = Vec::new();
    let mut stocks = Vec::new();
    for name in ["P1", "P2", "P3", "P4", "P5", "P6"] {
        let (product, stock_ids) = api
            .create_product(name, "rank", 1_000, &[("F", 100)])
            .await?;
        products.push(product);
        stocks.push(stock_ids[0]);
    }
    // Earlier days come straight into the stats table; today's from orders.
    let seed = |product: i64, days_ago: i32, quantity: i64, amount: i64| {
        sqlx::query!("INSERT INTO product_order_stats (product_id, order_date, total_orders, total_quantity, total_sales_amount)
             VALUES ($1, (now() AT TIME ZONE 'Asia/Seoul')::date - $2::int4, 1, $3, $4)", product, days_ago, quantity, amount)
        .execute(&stack.env.pool)
    };
    seed(products[0], 1, 5, 5_000).await?; // P1: 5 units
    seed(products[1], 2, 5, 9_000).await?; // P2: 5 units, more sales than P1
    seed(products[2], 1, 4, 4_000).await?; // P3: 4 units + today's order
    seed(products[3], 3, 50, 50_000).await?; // P4: outside the 3-day window
    seed(products[4], 1, 3, 3_000).await?; // P5: ties with P6 ...
    seed(products[5], 2, 3, 3_000).await?; // P6: ... broken by id
    let user = api.funded_user(100_000).await?;
    let id = api.order(&user, &[(stocks[2], 2)]).await?;
    assert_eq!(
        api.outcome(&user.token, id).await?.status.as_str(),
        "SUCCEEDED"
    );
    stats_reach(&stack, products[2], 1).await?; // today's real order

    let (status, top) = api
        .get("/v1/products/top?days=3&limit=5", &user.token)
        .await?;
    assert_eq!(status, reqwest::StatusCode::OK, "{top}");
    let ranked: Vec<i64> = top["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["product_id"].as_i64())
        .collect();
    // P3 6 units; P2 5 (9,000); P1 5 (5,000); P5 3 and P6 3 by id.
    assert_eq!(
        ranked,
        vec![
            products[2],
            products[1],
            products[0],
            products[4],
            products[5]
        ]
    );
    let (_, daily) = api.get("/v1/stats/products/daily", &user.token).await?;
    assert_eq!(daily["items"].as_array().map(Vec::len), Some(1), "{daily}");
    let (status, reply) = api.get("/v1/products/top?days=0", &user.token).await?;
    assert_eq!(status, reqwest::StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stats_survive_a_killed_worker_without_double_counting() -> anyhow::Result<()> {
    let stack = Stack::start(Options::without_workers()).await?;
    let mut worker = stack.start_worker_process(WORKERS).await?;
    let api = &stack.api;
    let (a, a_stocks) = api
        .create_product("A", "k", 1_000, &[("F", 100_000)])
        .await?;
    let (b, b_stocks) = api.create_product("B", "k", 700, &[("F", 100_000)]).await?;
    let users = api.funded_users(30, 10_000_000).await?;
    let submit = |i: usize| {
        let user = &users[i % users.len()];
        let lines = if i.is_multiple_of(3) {
            vec![(a_stocks[0], 1), (b_stocks[0], 2)]
        } else {
            vec![(a_stocks[0], 1 + (i % 4) as i32)]
        };
        async move { anyhow::Ok((user.token.clone(), api.order(user, &lines).await?)) }
    };
    let mut requests: Vec<(String, Uuid)> = stream::iter(0..300)
        .map(submit)
        .buffer_unordered(32)
        .try_collect()
        .await?;
    let counted = || {
        scalar!(
            stack,
            "SELECT coalesce(sum(total_orders), 0)::int8 FROM product_order_stats"
        )
    };
    let wait = Duration::from_secs(60);
    testkit::wait_until("the stats lane to be mid-load", wait, counted, |n| *n > 0).await?;
    worker.kill()?;
    let mut worker = stack.start_worker_process(WORKERS).await?;
    let more: Vec<(String, Uuid)> = stream::iter(300..600)
        .map(submit)
        .buffer_unordered(32)
        .try_collect()
        .await?;
    requests.extend(more);
    let results = api.outcomes(&requests).await?;
    assert!(
        results.iter().all(|o| o.status == RequestStatus::Succeeded),
        "{:?}",
        codes(&results)
    );

    // Stats equal the sum over paid orders per product and business day.
    let expected: Vec<(i64, i64, i64, i64)> = sqlx::query!(
        r#"SELECT i.product_id, count(DISTINCT o.id)::int8 AS "orders!",
                  sum(i.quantity)::int8 AS "quantity!", sum(i.quantity * i.unit_price)::int8 AS "amount!"
           FROM orders o JOIN order_items i ON i.order_id = o.id WHERE o.status = 'PAID'
           GROUP BY i.product_id ORDER BY i.product_id"#
    )
    .fetch_all(&stack.env.pool)
    .await?
    .into_iter()
    .map(|r| (r.product_id, r.orders, r.quantity, r.amount))
    .collect();
    assert_eq!(expected.iter().map(|e| e.0).collect::<Vec<_>>(), vec![a, b]);
    let stats_now = || async {
        let rows = sqlx::query!(
            r#"SELECT product_id, sum(total_orders)::int8 AS "orders!",
                      sum(total_quantity)::int8 AS "quantity!", sum(total_sales_amount)::int8 AS "amount!"
               FROM product_order_stats GROUP BY product_id ORDER BY product_id"#
        )
        .fetch_all(&stack.env.pool)
        .await?;
        anyhow::Ok(
            rows.into_iter()
                .map(|r| (r.product_id, r.orders, r.quantity, r.amount))
                .collect::<Vec<_>>(),
        )
    };
    testkit::eventually(
        "stats to equal the paid orders",
        Duration::from_secs(60),
        || async {
            let rows = stats_now().await?;
            for (got, want) in rows.iter().zip(&expected) {
                assert!(got.1 <= want.1, "double counted: {got:?} > {want:?}");
            }
            Ok((rows == expected).then_some(()))
        },
    )
    .await?;
    worker.kill()?;
    stack.stop().await
}
