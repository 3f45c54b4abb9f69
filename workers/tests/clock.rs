//! Holds lapse by one clock, the database's: with the database's clock an
//! hour ahead of the workers' (a server of the test's own, under
//! libfaketime), a due hold still expires and a lapsed one is not paid.

use std::time::Duration;

use testkit::api::Fan;
use testkit::scalar;
use testkit::skewed::SkewedPostgres;
use testkit::stack::{Options, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn holds_lapse_by_the_databases_clock_not_the_workers() -> anyhow::Result<()> {
    let server = SkewedPostgres::start("+1h")?;
    let stack = Stack::start(Options::default().database_server(server.url())).await?;
    let api = &stack.api;
    let Fan {
        seats, user, token, ..
    } = api.fan(2, 1_000, 10_000).await?;
    let mut holds = Vec::new();
    for seat in &seats {
        holds.push(api.held(&user, &token, *seat).await?);
    }

    // The first hold lapsed a minute ago by the database's clock; its
    // expiry was requested just now, so the scheduler leaves it alone.
    sqlx::query!(
        "UPDATE reservations SET expires_at = now() - interval '1 minute',
                expiry_requested_at = now() WHERE id = $1",
        holds[0]
    )
    .execute(&stack.env.pool)
    .await?;
    let paid = api.pay(&user, &token, holds[0]).await?;
    let outcome = api.outcome(&user.token, paid).await?;
    assert_eq!(
        outcome.error_code(),
        Some("HOLD_EXPIRED"),
        "a worker an hour behind the database took payment for a lapsed hold: {outcome:?}"
    );

    // The second lapsed too, and the scheduler (which asks the database)
    // requests its expiry: the lane must agree it is due.
    sqlx::query!(
        "UPDATE reservations SET expires_at = now() - interval '1 minute' WHERE id = $1",
        holds[1]
    )
    .execute(&stack.env.pool)
    .await?;
    let expired = || {
        scalar!(
            stack,
            "SELECT count(*) FROM reservations WHERE id = $1 AND status = 'EXPIRED'",
            holds[1]
        )
    };
    let wait = Duration::from_secs(30);
    testkit::wait_until("the lapsed hold to expire", wait, expired, |n| *n == 1).await?;
    let free = scalar!(
        stack,
        "SELECT count(*) FROM seats WHERE id = $1 AND NOT is_reserved",
        seats[1]
    )
    .await?;
    assert_eq!(free, 1, "the expired hold's seat is for sale again");
    stack.stop().await
}
