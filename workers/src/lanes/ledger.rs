//! Balance changes with their history row, shared by every lane that moves
//! money. A balance always equals the sum of its history.

use schemas::events::{BalanceChangeKind, BalanceChanged};
use sqlx::PgConnection;
use uuid::Uuid;

/// Upper bound of any balance, in won.
pub const MAX_BALANCE: i64 = 1_000_000_000_000;

/// A balance row locked for this transaction.
#[derive(Debug, Clone, Copy)]
pub struct LockedBalance {
    /// `balances.id`.
    pub id: i64,
    /// The user.
    pub user_id: i64,
    /// Current balance.
    pub balance: i64,
}

/// Locks `user_id`'s balance row (None if the user has none).
pub async fn lock(
    tx: &mut PgConnection,
    user_id: i64,
) -> Result<Option<LockedBalance>, sqlx::Error> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT id, balance FROM balances WHERE user_id = $1 FOR UPDATE")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(row.map(|(id, balance)| LockedBalance {
        id,
        user_id,
        balance,
    }))
}

/// Applies a change of `amount` (positive) to a locked balance and writes
/// its history row. The caller has checked that the result stays within
/// 0 ..= [`MAX_BALANCE`].
pub async fn change(
    tx: &mut PgConnection,
    balance: LockedBalance,
    kind: BalanceChangeKind,
    amount: i64,
    payment_id: Option<i64>,
    reason: Option<&str>,
    request_id: Uuid,
) -> Result<BalanceChanged, sqlx::Error> {
    let delta = match kind {
        BalanceChangeKind::Use => -amount,
        BalanceChangeKind::Charge | BalanceChangeKind::Refund => amount,
    };
    let balance_after: i64 = sqlx::query_scalar(
        "UPDATE balances SET balance = balance + $2, version = version + 1, updated_at = now()
         WHERE id = $1 RETURNING balance",
    )
    .bind(balance.id)
    .bind(delta)
    .fetch_one(&mut *tx)
    .await?;
    let history_id: i64 = sqlx::query_scalar(
        "INSERT INTO balance_histories (balance_id, user_id, type, amount, balance_after, reason, payment_id, request_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(balance.id)
    .bind(balance.user_id)
    .bind(kind.as_str())
    .bind(amount)
    .bind(balance_after)
    .bind(reason)
    .bind(payment_id)
    .bind(request_id)
    .fetch_one(&mut *tx)
    .await?;
    Ok(BalanceChanged {
        user_id: balance.user_id,
        history_id,
        kind,
        amount,
        balance_after,
        payment_id,
    })
}
