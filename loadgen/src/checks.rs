//! Correctness checks after a run: the invariants of docs/design.md §4 (the
//! `verify` library, which the chaos run uses too) plus the scenario's own
//! expectations.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::PgPool;

use crate::scenario::Scenario;
use crate::{Cli, ScenarioName};

/// Every check by name: true when it holds.
pub(crate) async fn run(
    pool: &PgPool,
    cli: &Cli,
    scenario: &Scenario,
) -> anyhow::Result<BTreeMap<String, bool>> {
    // The stats lane folds order events a moment after the orders.
    let mut checks =
        verify::invariants::check(pool, &cli.business_tz, Duration::from_secs(30)).await?;
    if scenario.name == ScenarioName::Rush && scenario.users.len() as i64 >= i64::from(cli.seats) {
        let sold = sqlx::query_scalar!(
            r#"SELECT count(*) AS "sold!" FROM reservations
               WHERE concert_schedule_id = $1 AND status IN ('PENDING', 'CONFIRMED')"#,
            scenario.schedule_id
        )
        .fetch_one(pool)
        .await?;
        checks.insert(
            "rush_every_seat_sold_once".into(),
            sold == i64::from(cli.seats),
        );
    }
    Ok(checks)
}
