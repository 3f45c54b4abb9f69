//! What tests read back from a test database, and the one row they set up
//! behind the gateway's back: checked statements.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::TestEnv;

/// How long a test waits for a request to be decided.
const DECISION_WAIT: Duration = Duration::from_secs(30);

/// A request's row: where it stands and, once refused or failed, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRow {
    /// `PENDING`, `SUCCEEDED`, `REJECTED` or `FAILED`.
    pub status: String,
    /// The stable code of a refusal or failure.
    pub error_code: Option<String>,
    /// The message clients see with it.
    pub error_message: Option<String>,
}

impl TestEnv {
    /// The row of request `id`, if the gateway or a lane wrote one.
    pub async fn request(&self, id: Uuid) -> anyhow::Result<Option<RequestRow>> {
        Ok(sqlx::query_as!(
            RequestRow,
            "SELECT status, error_code, error_message FROM requests WHERE id = $1",
            id
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Waits (30 s at most) until request `id` is decided, its row no
    /// longer `PENDING`; returns the row.
    pub async fn decided(&self, id: Uuid) -> anyhow::Result<RequestRow> {
        crate::eventually("the request to be decided", DECISION_WAIT, || async {
            Ok(self
                .request(id)
                .await?
                .filter(|row| row.status != "PENDING"))
        })
        .await
    }

    /// The seats of schedule `schedule_id` for sale, as the schedule
    /// counts them.
    pub async fn available_seats(&self, schedule_id: i64) -> anyhow::Result<i64> {
        let count = sqlx::query_scalar!(
            "SELECT available_seats_count FROM concert_schedules WHERE id = $1",
            schedule_id
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(i64::from(count))
    }

    /// Locks user `user_id`'s balance row until the returned transaction
    /// ends: every batch that touches the balance (the user's charge
    /// partition, for one) waits on it meanwhile.
    pub async fn lock_balance(
        &self,
        user_id: i64,
    ) -> anyhow::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query!(
            "SELECT balance FROM balances WHERE user_id = $1 FOR UPDATE",
            user_id
        )
        .fetch_one(&mut *tx)
        .await?;
        Ok(tx)
    }

    /// How many balance changes user `user_id`'s history holds.
    pub async fn history_rows(&self, user_id: i64) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar!(
            r#"SELECT count(*) AS "rows!" FROM balance_histories WHERE user_id = $1"#,
            user_id
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// How many of the requests `ids` are decided now.
    pub async fn decided_among(&self, ids: &[Uuid]) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar!(
            r#"SELECT count(*) AS "decided!" FROM requests WHERE id = ANY($1) AND status <> 'PENDING'"#,
            ids
        )
        .fetch_one(&self.pool)
        .await?)
    }
}

/// Makes queue token `token` ACTIVE the way the admission scheduler would.
pub(super) async fn activate(pool: &PgPool, token: Uuid) -> anyhow::Result<()> {
    sqlx::query!(
        "UPDATE reservation_queue SET status = 'ACTIVE', activated_at = now(),
                    expires_at = now() + interval '10 minutes' WHERE token = $1",
        token,
    )
    .execute(pool)
    .await?;
    Ok(())
}
