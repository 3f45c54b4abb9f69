//! Charge lane (key: user id): adds money to a balance.

use async_trait::async_trait;
use schemas::events::BalanceChangeKind;
use schemas::{ErrorCode, Event, Request, RequestEnvelope, Topic};
use serde_json::json;
use sqlx::PgConnection;

use super::ledger::{self, MAX_BALANCE};
use crate::engine::{Applied, Lane};

/// Applies `balance.charge`.
#[derive(Debug, Default)]
pub struct ChargeLane;

#[async_trait]
impl Lane for ChargeLane {
    type Input = RequestEnvelope;
    type Batch = ();

    fn name(&self) -> &'static str {
        "charge"
    }

    fn topic(&self) -> Topic {
        Topic::ChargeRequests
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        _batch: &mut (),
        envelope: &RequestEnvelope,
    ) -> Result<Applied, sqlx::Error> {
        let Request::ChargeBalance(charge) = &envelope.request else {
            return Ok(Applied::rejected(ErrorCode::InvalidRequest, "not a charge"));
        };
        let Some(balance) = ledger::lock(tx, charge.user_id).await? else {
            return Ok(Applied::rejected(ErrorCode::NotFound, "user not found"));
        };
        if balance.balance > MAX_BALANCE - charge.amount {
            return Ok(Applied::rejected(
                ErrorCode::BalanceLimitExceeded,
                format!("a balance may not exceed {MAX_BALANCE}"),
            ));
        }
        let changed = ledger::change(
            tx,
            balance,
            BalanceChangeKind::Charge,
            charge.amount,
            None,
            Some("charge"),
            envelope.request_id,
        )
        .await?;
        Ok(Applied::succeeded(
            json!({"user_id": charge.user_id, "balance": changed.balance_after, "history_id": changed.history_id}),
            vec![Event::BalanceChanged(changed)],
        ))
    }
}
