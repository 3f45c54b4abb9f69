//! Holds lapse by one clock, the database's: with the database's clock an
//! hour ahead of the workers' (a server of the test's own, under
//! libfaketime), a due hold still expires and a lapsed one is not paid.

mod common;

use std::time::Duration;

use common::{scalar, Options, Stack};
use testkit::skewed::SkewedPostgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn holds_lapse_by_the_databases_clock_not_the_workers() -> anyhow::Result<()> {
    let server = SkewedPostgres::start("+1h")?;
    let stack = Stack::start(Options {
        database_server: Some(server.url()),
        ..Options::default()
    })
    .await?;
    let api = &stack.api;
    let schedule_id = api.create_schedule(2, 1_000).await?;
    let seats = api.seat_ids(schedule_id).await?;
    let user = api.create_user("late").await?;
    let token = api.join_queue(&user, schedule_id).await?;
    api.wait_active(&user, &token).await?;
    let charged = api.charge(&user, 10_000).await?;
    api.outcome(&user.token, charged).await?;
    let mut holds = Vec::new();
    for seat in &seats {
        let id = api.hold(&user, &token, *seat).await?;
        let outcome = api.outcome(&user.token, id).await?;
        holds.push(
            outcome
                .held()
                .map(|held| held.reservation_id)
                .unwrap_or_default(),
        );
    }

    // The first hold lapsed a minute ago by the database's clock; its
    // expiry was requested just now, so the scheduler leaves it alone.
    sqlx::query(
        "UPDATE reservations SET expires_at = now() - interval '1 minute',
                expiry_requested_at = now() WHERE id = $1",
    )
    .bind(holds[0])
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
    sqlx::query("UPDATE reservations SET expires_at = now() - interval '1 minute' WHERE id = $1")
        .bind(holds[1])
        .execute(&stack.env.pool)
        .await?;
    testkit::eventually(
        "the lapsed hold to expire",
        Duration::from_secs(30),
        || async {
            let expired = scalar(
                &stack,
                &format!(
                    "SELECT count(*) FROM reservations WHERE id = {} AND status = 'EXPIRED'",
                    holds[1]
                ),
            )
            .await?;
            Ok((expired == 1).then_some(()))
        },
    )
    .await?;
    let free = scalar(
        &stack,
        &format!(
            "SELECT count(*) FROM seats WHERE id = {} AND NOT is_reserved",
            seats[1]
        ),
    )
    .await?;
    assert_eq!(free, 1, "the expired hold's seat is for sale again");
    stack.stop().await
}
