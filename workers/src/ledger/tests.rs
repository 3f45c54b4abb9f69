//! The charge lane's business step on a fresh database per test, without
//! Kafka.

use api::outcomes::ChargeResult;
use schemas::events::{BalanceChangeKind, BalanceChanged};
use schemas::requests::ChargeBalance;
use schemas::requests::ChargeRequest;
use schemas::{ErrorCode, Event, RequestEnvelope};
use sqlx::PgPool;

use super::{ChargeLane, MAX_BALANCE};
use crate::engine::Applied;
use crate::fixtures::*;

fn charge(user_id: i64, amount: i64) -> RequestEnvelope<ChargeRequest> {
    request(ChargeRequest::ChargeBalance(ChargeBalance {
        user_id,
        amount,
    }))
}

fn charged(applied: &Applied) -> &ChargeResult {
    result_as(applied)
}

#[sqlx::test(migrations = "../migrations")]
async fn charges_add_to_balances_with_one_history_row_each(pool: PgPool) {
    let [saver, newcomer] = users_with_balance(&pool, [1_000, 0]).await;
    let (applied, finished) = commit_batch(
        &pool,
        &ChargeLane::default(),
        &[
            charge(saver, 500),
            charge(newcomer, 200),
            charge(saver, 300),
        ],
    )
    .await;
    assert!(finished.is_empty());
    let balances: Vec<(i64, i64)> = applied
        .iter()
        .map(|a| (charged(a).user_id, charged(a).balance))
        .collect();
    assert_eq!(balances, [(saver, 1_500), (newcomer, 200), (saver, 1_800)]);
    let history_ids: Vec<i64> = applied.iter().map(|a| charged(a).history_id).collect();
    assert!(
        history_ids.windows(2).all(|w| w[0] < w[1]),
        "{history_ids:?}"
    );
    assert_eq!(
        applied[2].events,
        [Event::BalanceChanged(BalanceChanged {
            user_id: saver,
            history_id: history_ids[2],
            kind: BalanceChangeKind::Charge,
            amount: 300,
            balance_after: 1_800,
            payment_id: None,
        })]
    );

    assert_eq!(balance_of(&pool, saver).await, 1_800);
    assert_eq!(balance_of(&pool, newcomer).await, 200);
    let history = sqlx::query!(
        "SELECT id, type, amount, balance_after, reason, request_id FROM balance_histories
         WHERE user_id = $1 ORDER BY id",
        saver
    )
    .fetch_all(&pool)
    .await
    .expect("history");
    let written: Vec<(i64, &str, i64, i64)> = history
        .iter()
        .map(|h| (h.id, h.r#type.as_str(), h.amount, h.balance_after))
        .collect();
    assert_eq!(
        written[1..],
        [
            (history_ids[0], "CHARGE", 500, 1_500),
            (history_ids[2], "CHARGE", 300, 1_800)
        ]
    );
    assert!(history[1..]
        .iter()
        .all(|h| h.reason.as_deref() == Some("charge") && h.request_id.is_some()));
    let version = sqlx::query_scalar!("SELECT version FROM balances WHERE user_id = $1", saver)
        .fetch_one(&pool)
        .await
        .expect("version");
    assert_eq!(version, 2, "one version per change");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_charge_past_the_limit_or_without_a_balance_changes_nothing(pool: PgPool) {
    let rich = user_with_balance(&pool, MAX_BALANCE - 100).await;
    let cases = vec![
        (charge(rich, 101), ErrorCode::BalanceLimitExceeded),
        (charge(rich + 1_000, 5), ErrorCode::NotFound),
    ];
    commit_refused(&pool, &ChargeLane::default(), cases).await;

    // Exactly up to the limit is fine.
    let (applied, _) = commit_batch(&pool, &ChargeLane::default(), &[charge(rich, 100)]).await;
    assert_eq!(charged(&applied[0]).balance, MAX_BALANCE);
    assert_eq!(balance_of(&pool, rich).await, MAX_BALANCE);
}
