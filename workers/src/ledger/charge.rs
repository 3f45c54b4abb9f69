//! Charge lane (key: user id): adds money to a balance. The whole batch is
//! one group commit: its balances are locked with one statement, every
//! charge is applied in memory, and the balances and history rows are
//! written with one statement each.

use api::outcomes::ChargeResult;
use async_trait::async_trait;
use schemas::events::BalanceChangeKind;
use schemas::requests::ChargeRequest;
use schemas::{ErrorCode, Event, RequestEnvelope, Topic};
use sqlx::PgConnection;

use super::{Ledger, MAX_BALANCE};
use crate::engine::{Applied, Lane};
use crate::error::LaneResult;

/// Applies `balance.charge`.
#[derive(Debug, Default)]
pub struct ChargeLane;

#[async_trait]
impl Lane for ChargeLane {
    type Input = RequestEnvelope<ChargeRequest>;
    type Batch = Ledger;

    const NAME: &'static str = "charge";
    const TOPIC: Topic = Topic::ChargeRequests;

    async fn prepare(
        &self,
        tx: &mut PgConnection,
        ledger: &mut Ledger,
        inputs: &[&RequestEnvelope<ChargeRequest>],
    ) -> LaneResult<()> {
        let users: Vec<i64> = inputs
            .iter()
            .map(|input| match &input.request {
                ChargeRequest::ChargeBalance(charge) => charge.user_id,
            })
            .collect();
        Ok(ledger.lock(tx, &users, users.len()).await?)
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        ledger: &mut Ledger,
        envelope: &RequestEnvelope<ChargeRequest>,
    ) -> LaneResult<Applied> {
        let ChargeRequest::ChargeBalance(charge) = &envelope.request;
        let Some(balance) = ledger.balance(tx, charge.user_id).await? else {
            return Ok(Applied::rejected(ErrorCode::NotFound, "user not found"));
        };
        if balance > MAX_BALANCE - charge.amount {
            return Ok(Applied::rejected(
                ErrorCode::BalanceLimitExceeded,
                format!("a balance may not exceed {MAX_BALANCE}"),
            ));
        }
        let changed = ledger
            .change(
                tx,
                charge.user_id,
                BalanceChangeKind::Charge,
                charge.amount,
                None,
                Some("charge"),
                envelope.request_id,
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

    async fn finish(&self, tx: &mut PgConnection, ledger: Ledger) -> LaneResult<Vec<Event>> {
        ledger.flush(tx).await?;
        Ok(Vec::new())
    }
}
