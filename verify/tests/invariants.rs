//! The checker catches what it claims to: each invariant holds on a
//! consistent database and is reported broken once a row breaks it.

use std::time::Duration;

use testkit::TestEnv;

async fn exec(env: &TestEnv, sql: &str) -> anyhow::Result<()> {
    sqlx::raw_sql(sql).execute(&env.pool).await?;
    Ok(())
}

async fn broken(env: &TestEnv) -> anyhow::Result<Vec<String>> {
    let checks = verify::invariants::check(&env.pool, "Asia/Seoul", Duration::ZERO).await?;
    Ok(checks
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| name)
        .collect())
}

#[tokio::test]
async fn each_invariant_is_reported_broken_when_a_row_breaks_it() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    // A consistent little world: a user charged 100 by one request, a seat
    // held, a paid order counted in the stats.
    exec(
        &env,
        "INSERT INTO users (id, email, name) VALUES (1, 'a@example.com', 'a');
         INSERT INTO balances (id, user_id, balance) VALUES (1, 1, 100);
         INSERT INTO requests (id, type, user_id, status)
              VALUES ('00000000-0000-0000-0000-000000000001', 'balance.charge', 1, 'SUCCEEDED');
         INSERT INTO balance_histories (balance_id, user_id, type, amount, balance_after, request_id)
              VALUES (1, 1, 'CHARGE', 100, 100, '00000000-0000-0000-0000-000000000001');
         INSERT INTO concerts (id, title) VALUES (1, 'c');
         INSERT INTO concert_schedules (id, concert_id, starts_at, available_seats_count)
              VALUES (1, 1, now(), 1);
         INSERT INTO seats (id, concert_schedule_id, seat_no, seat_number, price, is_reserved)
              VALUES (1, 1, 1, 'A1', 10, true), (2, 1, 2, 'A2', 10, false);
         INSERT INTO reservations (user_id, concert_schedule_id, seat_id, status, total_amount, expires_at)
              VALUES (1, 1, 1, 'PENDING', 10, now() + interval '5 minutes');
         INSERT INTO products (id, name, category, price) VALUES (1, 'p', 'c', 5);
         INSERT INTO product_stocks (id, product_id, size, quantity) VALUES (1, 1, 'M', 3);
         INSERT INTO orders (id, user_id, status, total_amount, order_date) VALUES (1, 1, 'PAID', 10, now());
         INSERT INTO order_items (order_id, product_stock_id, product_id, size, quantity, unit_price)
              VALUES (1, 1, 1, 'M', 2, 5);
         INSERT INTO product_order_stats (product_id, order_date, total_orders, total_quantity, total_sales_amount)
              VALUES (1, (now() AT TIME ZONE 'Asia/Seoul')::date, 1, 2, 10);",
    )
    .await?;
    assert_eq!(broken(&env).await?, Vec::<String>::new());

    let cases: &[(&str, &str, &str)] = &[
        (
            "UPDATE balances SET balance = 90",
            "UPDATE balances SET balance = 100",
            "balances_equal_history",
        ),
        (
            "UPDATE seats SET is_reserved = true WHERE id = 2",
            "UPDATE seats SET is_reserved = false WHERE id = 2",
            "seat_flags_match_reservations",
        ),
        (
            "UPDATE concert_schedules SET available_seats_count = 2",
            "UPDATE concert_schedules SET available_seats_count = 1",
            "available_seat_counts_match",
        ),
        (
            "UPDATE product_order_stats SET total_quantity = 3",
            "UPDATE product_order_stats SET total_quantity = 2",
            "stats_equal_paid_orders",
        ),
        (
            "INSERT INTO requests (id, type, user_id, status)
                  VALUES ('00000000-0000-0000-0000-000000000002', 'balance.charge', 1, 'SUCCEEDED')",
            "DELETE FROM requests WHERE id = '00000000-0000-0000-0000-000000000002'",
            "succeeded_charges_charged_once",
        ),
        (
            "UPDATE requests SET status = 'REJECTED'",
            "UPDATE requests SET status = 'SUCCEEDED'",
            "refused_requests_changed_nothing",
        ),
        (
            "INSERT INTO balance_histories (balance_id, user_id, type, amount, balance_after, request_id)
                  VALUES (1, 1, 'CHARGE', 1, 101, '00000000-0000-0000-0000-000000000001');
             UPDATE balances SET balance = 101",
            "DELETE FROM balance_histories WHERE amount = 1; UPDATE balances SET balance = 100",
            "no_request_applied_twice",
        ),
        (
            "UPDATE reservations SET status = 'CONFIRMED'",
            "UPDATE reservations SET status = 'PENDING'",
            "confirmed_reservations_paid_once",
        ),
        (
            "INSERT INTO requests (id, type, user_id, status)
                  VALUES ('00000000-0000-0000-0000-000000000003', 'order.place', 1, 'SUCCEEDED')",
            "DELETE FROM requests WHERE id = '00000000-0000-0000-0000-000000000003'",
            "succeeded_orders_ordered_once",
        ),
    ];
    for (break_it, mend_it, name) in cases {
        exec(&env, break_it).await?;
        let found = broken(&env).await?;
        assert!(
            found.iter().any(|n| n == name),
            "{name} not caught: {found:?}"
        );
        exec(&env, mend_it).await?;
        assert_eq!(
            broken(&env).await?,
            Vec::<String>::new(),
            "after mending {name}"
        );
    }
    Ok(())
}
