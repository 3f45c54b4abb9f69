//! The lanes: each adds only its business step to the engine.

pub mod charge;
pub mod ledger;
pub mod order;
pub mod payment;
pub mod reservation;
pub mod stats;

pub use charge::ChargeLane;
pub use order::OrderLane;
pub use payment::PaymentLane;
pub use reservation::ReservationLane;
pub use stats::StatsLane;

use sqlx::PgConnection;

/// Takes `count` ids from the serial sequence of `table`'s `id` column, so a
/// group commit can name rows before it writes them all in one statement.
pub(crate) async fn next_ids(
    tx: &mut PgConnection,
    table: &str,
    count: usize,
) -> Result<Vec<i64>, sqlx::Error> {
    if count == 0 {
        return Ok(Vec::new());
    }
    sqlx::query_scalar(
        "SELECT nextval(pg_get_serial_sequence($1, 'id')) FROM generate_series(1, $2)",
    )
    .bind(table)
    .bind(i32::try_from(count).unwrap_or(i32::MAX))
    .fetch_all(&mut *tx)
    .await
}
