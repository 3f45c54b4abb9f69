//! Charge lane (key: user id): adds money to a balance. The whole batch is
//! one group commit: its balances are locked with one statement, every
//! charge is applied in memory, and the balances and history rows are
//! written with one statement each.

use api::outcomes::ChargeResult;
use schemas::events::BalanceChangeKind;
use schemas::requests::ChargeRequest;
use schemas::{ErrorCode, Event, RequestEnvelope};
use sqlx::PgConnection;

use super::{Ledger, MAX_BALANCE};
use crate::engine::{Applied, Lane};
use crate::error::LaneResult;

/// Applies `balance.charge`; a batch's balances are its ledger.
#[derive(Debug, Clone, Default)]
pub struct ChargeLane {
    ledger: Ledger,
}

impl Lane for ChargeLane {
    type Input = RequestEnvelope<ChargeRequest>;
    const NAME: &'static str = "charge";

    async fn prepare(&mut self, tx: &mut PgConnection, inputs: &[&Self::Input]) -> LaneResult<()> {
        let users: Vec<i64> = inputs
            .iter()
            .map(|input| match &input.request {
                ChargeRequest::ChargeBalance(charge) => charge.user_id,
            })
            .collect();
        Ok(self.ledger.lock(tx, &users, users.len()).await?)
    }

    async fn apply(&mut self, tx: &mut PgConnection, input: &Self::Input) -> LaneResult<Applied> {
        let ChargeRequest::ChargeBalance(charge) = &input.request;
        let Some(balance) = self.ledger.balance(tx, charge.user_id).await? else {
            return Ok(Applied::rejected(ErrorCode::NotFound, "user not found"));
        };
        if balance > MAX_BALANCE - charge.amount {
            return Ok(Applied::rejected(
                ErrorCode::BalanceLimitExceeded,
                format!("a balance may not exceed {MAX_BALANCE}"),
            ));
        }
        let changed = self
            .ledger
            .change(
                tx,
                charge.user_id,
                BalanceChangeKind::Charge,
                charge.amount,
                None,
                Some("charge"),
                input.request_id,
            )
            .await?;
        Ok(Applied::succeeded(
            ChargeResult {
                user_id: charge.user_id,
                balance: changed.balance_after,
                history_id: changed.history_id,
            },
            vec![Event::BalanceChanged(changed)],
        ))
    }

    async fn finish(self, tx: &mut PgConnection) -> LaneResult<Vec<Event>> {
        self.ledger.flush(tx).await?;
        Ok(Vec::new())
    }
}
