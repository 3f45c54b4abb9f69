//! Balance changes with their history rows, shared by every lane that moves
//! money. A balance always equals the sum of its history.
//!
//! A [`Ledger`] lives for one batch transaction (group commit): it locks the
//! batch's balances with one statement in balance id order, applies changes
//! in memory, and writes every changed balance and every history row with
//! one multi-row statement each in [`Ledger::flush`]. History ids are taken
//! from the sequence after the locks, so one user's history stays in id
//! order across concurrent batches.

use std::collections::{HashMap, VecDeque};

use schemas::events::{BalanceChangeKind, BalanceChanged};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{LaneError, LaneResult};

pub mod charge;
#[cfg(test)]
pub(crate) mod tests;

pub use charge::ChargeLane;

/// Upper bound of any balance, in won.
pub const MAX_BALANCE: i64 = 1_000_000_000_000;

/// A locked balance and its pending change.
#[derive(Debug, Clone, Copy)]
struct Account {
    /// `balances.id`.
    id: i64,
    /// Balance with this batch's changes applied.
    balance: i64,
    /// How many changes this batch made.
    changes: i64,
}

/// One history row to write.
#[derive(Debug, Clone)]
struct HistoryRow {
    id: i64,
    balance_id: i64,
    change: BalanceChanged,
    reason: Option<&'static str>,
    request_id: Uuid,
}

/// The balances one batch transaction has locked, with its staged changes.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    accounts: HashMap<i64, Account>,
    history: Vec<HistoryRow>,
    history_ids: VecDeque<i64>,
}

impl Ledger {
    /// Locks the balances of `user_ids` (any order, duplicates allowed) in
    /// balance id order, and reserves `expected_changes` history ids.
    /// Users without a balance row are simply not locked.
    pub async fn lock(
        &mut self,
        tx: &mut PgConnection,
        user_ids: &[i64],
        expected_changes: usize,
    ) -> Result<(), sqlx::Error> {
        let wanted: Vec<i64> = user_ids
            .iter()
            .copied()
            .filter(|u| !self.accounts.contains_key(u))
            .collect();
        if !wanted.is_empty() {
            let rows = sqlx::query!(
                "SELECT id, user_id, balance FROM balances WHERE user_id = ANY($1)
                 ORDER BY id FOR UPDATE",
                &wanted
            )
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                self.accounts.insert(
                    row.user_id,
                    Account {
                        id: row.id,
                        balance: row.balance,
                        changes: 0,
                    },
                );
            }
            // Ids taken before these locks could order this batch's rows for
            // the new users before rows another batch committed first.
            self.history_ids.clear();
        }
        self.reserve_ids(tx, expected_changes).await
    }

    /// The current balance of `user_id` within this batch, locking it first
    /// if the batch has not. None if the user has no balance.
    pub async fn balance(
        &mut self,
        tx: &mut PgConnection,
        user_id: i64,
    ) -> Result<Option<i64>, sqlx::Error> {
        if !self.accounts.contains_key(&user_id) {
            self.lock(tx, &[user_id], 0).await?;
        }
        Ok(self.accounts.get(&user_id).map(|a| a.balance))
    }

    /// Applies a change of `amount` (positive) to `user_id`'s balance, which
    /// [`Ledger::balance`] or [`Ledger::lock`] has locked, and stages its
    /// history row. The caller has checked that the result stays within
    /// 0 ..= [`MAX_BALANCE`]. Changing a balance the batch has not locked
    /// is a bug in the lane, and fails the batch.
    #[allow(clippy::too_many_arguments)]
    pub async fn change(
        &mut self,
        tx: &mut PgConnection,
        user_id: i64,
        kind: BalanceChangeKind,
        amount: i64,
        payment_id: Option<i64>,
        reason: Option<&'static str>,
        request_id: Uuid,
    ) -> LaneResult<BalanceChanged> {
        let unlocked = || {
            LaneError::Bug(format!(
                "balance of user {user_id} changed without its lock"
            ))
        };
        if !self.accounts.contains_key(&user_id) {
            return Err(unlocked());
        }
        if self.history_ids.is_empty() {
            self.reserve_ids(tx, 1).await?;
        }
        let history_id = self
            .history_ids
            .pop_front()
            .ok_or_else(|| LaneError::Bug("no history id reserved".into()))?;
        let account = self.accounts.get_mut(&user_id).ok_or_else(unlocked)?;
        account.balance += match kind {
            BalanceChangeKind::Use => -amount,
            BalanceChangeKind::Charge | BalanceChangeKind::Refund => amount,
        };
        account.changes += 1;
        let change = BalanceChanged {
            user_id,
            history_id,
            kind,
            amount,
            balance_after: account.balance,
            payment_id,
        };
        self.history.push(HistoryRow {
            id: history_id,
            balance_id: account.id,
            change: change.clone(),
            reason,
            request_id,
        });
        Ok(change)
    }

    /// Writes the changed balances and the history rows: two statements
    /// whatever the batch size.
    pub async fn flush(self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.history.is_empty() {
            return Ok(());
        }
        let (mut ids, mut balances, mut versions) = (Vec::new(), Vec::new(), Vec::new());
        for account in self.accounts.values().filter(|a| a.changes > 0) {
            ids.push(account.id);
            balances.push(account.balance);
            versions.push(account.changes);
        }
        sqlx::query!(
            "UPDATE balances b SET balance = d.balance, version = b.version + d.changes,
                    updated_at = now()
             FROM UNNEST($1::int8[], $2::int8[], $3::int8[]) AS d(id, balance, changes)
             WHERE b.id = d.id",
            &ids,
            &balances,
            &versions
        )
        .execute(&mut *tx)
        .await?;
        let rows = &self.history;
        let kinds: Vec<&str> = rows.iter().map(|r| r.change.kind.as_str()).collect();
        let reasons: Vec<Option<&str>> = rows.iter().map(|r| r.reason).collect();
        let payment_ids: Vec<Option<i64>> = rows.iter().map(|r| r.change.payment_id).collect();
        sqlx::query!(
            "INSERT INTO balance_histories
                 (id, balance_id, user_id, type, amount, balance_after, reason, payment_id, request_id)
             SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::text[], $5::int8[],
                                  $6::int8[], $7::text[], $8::int8[], $9::uuid[])",
            &rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            &rows.iter().map(|r| r.balance_id).collect::<Vec<_>>(),
            &rows.iter().map(|r| r.change.user_id).collect::<Vec<_>>(),
            &kinds as &[&str],
            &rows.iter().map(|r| r.change.amount).collect::<Vec<_>>(),
            &rows
                .iter()
                .map(|r| r.change.balance_after)
                .collect::<Vec<_>>(),
            // The macro's check knows arrays of non-null values only.
            &reasons as _,
            &payment_ids as _,
            &rows.iter().map(|r| r.request_id).collect::<Vec<_>>()
        )
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    async fn reserve_ids(
        &mut self,
        tx: &mut PgConnection,
        count: usize,
    ) -> Result<(), sqlx::Error> {
        let ids = crate::sequence::next_ids(tx, "balance_histories", count).await?;
        self.history_ids.extend(ids);
        Ok(())
    }
}
