//! Row ids taken ahead of a group commit.

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
    sqlx::query_scalar!(
        r#"SELECT nextval(pg_get_serial_sequence($1, 'id')) AS "id!" FROM generate_series(1, $2)"#,
        table,
        i32::try_from(count).unwrap_or(i32::MAX)
    )
    .fetch_all(&mut *tx)
    .await
}
