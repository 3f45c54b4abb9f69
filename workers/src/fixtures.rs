//! What every lane's tests share: a user with a balance, one batch of a
//! lane, a race of batches, a snapshot of the tables lanes write, and
//! readers of what a request decided. Each test has a fresh database
//! (`#[sqlx::test]`); no Kafka.

use std::sync::Arc;

use api::status::{PaymentMethod, PaymentStatus};
use api::RequestResult;
use schemas::events::{BalanceChangeKind, BalanceChanged};
use schemas::{ErrorCode, Event, RequestEnvelope};
use sqlx::{PgConnection, PgPool};
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::engine::{Applied, Lane, Outcome};

/// A user per balance of `balances`, in order.
pub(crate) async fn users_with_balance<const N: usize>(
    pool: &PgPool,
    balances: [i64; N],
) -> [i64; N] {
    let mut users = [0; N];
    for (user, balance) in users.iter_mut().zip(balances) {
        *user = user_with_balance(pool, balance).await;
    }
    users
}

/// Creates a user whose balance is `balance`, with the CHARGE history row
/// that explains it (a balance always equals the sum of its history).
pub(crate) async fn user_with_balance(pool: &PgPool, balance: i64) -> i64 {
    let email = format!("{}@example.com", Uuid::now_v7());
    let user_id = sqlx::query_scalar!(
        "INSERT INTO users (email, name) VALUES ($1, 'tester') RETURNING id",
        email
    )
    .fetch_one(pool)
    .await
    .expect("user");
    let balance_id = sqlx::query_scalar!(
        "INSERT INTO balances (user_id, balance) VALUES ($1, $2) RETURNING id",
        user_id,
        balance
    )
    .fetch_one(pool)
    .await
    .expect("balance");
    if balance > 0 {
        sqlx::query!(
            "INSERT INTO balance_histories (balance_id, user_id, type, amount, balance_after)
             VALUES ($1, $2, 'CHARGE', $3, $3)",
            balance_id,
            user_id,
            balance
        )
        .execute(pool)
        .await
        .expect("history");
    }
    user_id
}

/// A concert with one schedule of `seats` seats at `price`; returns the
/// schedule and its seats, in seat order.
pub(crate) async fn schedule(pool: &PgPool, seats: i32, price: i64) -> (i64, Vec<i64>) {
    let concert_id =
        sqlx::query_scalar!("INSERT INTO concerts (title) VALUES ('Lane test') RETURNING id")
            .fetch_one(pool)
            .await
            .expect("concert");
    let schedule_id = sqlx::query_scalar!(
        "INSERT INTO concert_schedules (concert_id, starts_at, available_seats_count)
         VALUES ($1, now() + interval '30 days', $2) RETURNING id",
        concert_id,
        seats
    )
    .fetch_one(pool)
    .await
    .expect("schedule");
    let mut seat_ids = sqlx::query_scalar!(
        "INSERT INTO seats (concert_schedule_id, seat_no, seat_number, price)
         SELECT $1, n, 'A' || n, $2 FROM generate_series(1, $3) AS n RETURNING id",
        schedule_id,
        price,
        seats
    )
    .fetch_all(pool)
    .await
    .expect("seats");
    seat_ids.sort_unstable();
    (schedule_id, seat_ids)
}

/// The balance of `user_id`, after checking it equals the sum of its
/// history and the last history row's `balance_after`.
pub(crate) async fn balance_of(pool: &PgPool, user_id: i64) -> i64 {
    let row = sqlx::query!(
        r#"SELECT b.balance,
                  (SELECT coalesce(sum(CASE h.type WHEN 'USE' THEN -h.amount ELSE h.amount END), 0)
                   FROM balance_histories h WHERE h.user_id = b.user_id)::int8 AS "history!",
                  (SELECT h.balance_after FROM balance_histories h WHERE h.user_id = b.user_id
                   ORDER BY h.id DESC LIMIT 1) AS last_after
           FROM balances b WHERE b.user_id = $1"#,
        user_id
    )
    .fetch_one(pool)
    .await
    .expect("balance");
    assert_eq!(row.balance, row.history, "balance equals its history");
    assert_eq!(
        row.last_after.unwrap_or(0),
        row.balance,
        "the last history row"
    );
    row.balance
}

/// The `balance.changed` of a payment (`payment_id`) that took `amount`
/// from `user_id`'s balance, leaving `balance_after`, with history row
/// `history_id`.
pub(crate) fn spent(
    user_id: i64,
    amount: i64,
    balance_after: i64,
    payment_id: i64,
    history_id: i64,
) -> BalanceChanged {
    BalanceChanged {
        user_id,
        history_id,
        kind: BalanceChangeKind::Use,
        amount,
        balance_after,
        payment_id: Some(payment_id),
    }
}

/// A request envelope with a fresh id.
pub(crate) fn request<R>(request: R) -> RequestEnvelope<R> {
    RequestEnvelope::new(Uuid::now_v7(), request)
}

/// Runs one batch of `lane` over `inputs` in `tx`, as the engine does:
/// `prepare` with every input, `apply` each, `finish`. Returns what each
/// input decided and the events `finish` emitted.
pub(crate) async fn run_batch<L: Lane>(
    lane: &L,
    tx: &mut PgConnection,
    inputs: &[L::Input],
) -> (Vec<Applied>, Vec<Event>) {
    let mut batch = lane.clone();
    let all: Vec<&L::Input> = inputs.iter().collect();
    batch.prepare(tx, &all).await.expect("prepare");
    let mut applied = Vec::with_capacity(inputs.len());
    for input in inputs {
        applied.push(batch.apply(tx, input).await.expect("apply"));
    }
    let finished = batch.finish(tx).await.expect("finish");
    (applied, finished)
}

/// [`run_batch`] in a transaction of its own, committed.
pub(crate) async fn commit_batch<L: Lane>(
    pool: &PgPool,
    lane: &L,
    inputs: &[L::Input],
) -> (Vec<Applied>, Vec<Event>) {
    let mut tx = pool.begin().await.expect("begin");
    let result = run_batch(lane, &mut tx, inputs).await;
    tx.commit().await.expect("commit");
    result
}

/// [`commit_batch`] of a batch that must change nothing: afterwards every
/// table a lane writes is as it was, and no input and no `finish` emitted
/// events. Returns what each input decided.
pub(crate) async fn commit_unchanged<L: Lane>(
    pool: &PgPool,
    lane: &L,
    inputs: &[L::Input],
) -> Vec<Applied> {
    let before = snapshot(pool).await;
    let (applied, finished) = commit_batch(pool, lane, inputs).await;
    assert!(applied.iter().all(|a| a.events.is_empty()), "{applied:?}");
    assert!(finished.is_empty(), "{finished:?}");
    assert_eq!(snapshot(pool).await, before, "nothing written");
    applied
}

/// [`commit_unchanged`] of a batch whose every input must be refused with
/// the code beside it.
pub(crate) async fn commit_refused<L: Lane>(
    pool: &PgPool,
    lane: &L,
    cases: Vec<(L::Input, ErrorCode)>,
) -> Vec<Applied> {
    let (inputs, codes): (Vec<L::Input>, Vec<ErrorCode>) = cases.into_iter().unzip();
    let applied = commit_unchanged(pool, lane, &inputs).await;
    let expected: Vec<Option<ErrorCode>> = codes.into_iter().map(Some).collect();
    assert_eq!(rejections(&applied), expected);
    applied
}

/// Runs each of `batches` in its own transaction on its own connection,
/// all started together (every transaction is open before any applies),
/// and returns what each batch's inputs decided once all have committed.
pub(crate) async fn race<L: Lane>(
    pool: &PgPool,
    lane: L,
    batches: Vec<Vec<L::Input>>,
) -> Vec<Vec<Applied>> {
    let start = Arc::new(Barrier::new(batches.len()));
    let mut contenders = JoinSet::new();
    for (index, inputs) in batches.into_iter().enumerate() {
        let (pool, lane, start) = (pool.clone(), lane.clone(), start.clone());
        contenders.spawn(async move {
            let mut tx = pool.begin().await.expect("begin");
            start.wait().await;
            let (applied, _) = run_batch(&lane, &mut tx, &inputs).await;
            tx.commit().await.expect("commit");
            (index, applied)
        });
    }
    let mut decided: Vec<(usize, Vec<Applied>)> = contenders.join_all().await;
    decided.sort_by_key(|(index, _)| *index);
    decided.into_iter().map(|(_, applied)| applied).collect()
}

/// [`race`] of one-request batches that exactly one may win: every other
/// request must be refused with `code`. Returns the winner's index.
pub(crate) async fn race_for_one<L: Lane>(
    pool: &PgPool,
    lane: L,
    batches: Vec<Vec<L::Input>>,
    code: ErrorCode,
) -> usize {
    let decided = race(pool, lane, batches).await;
    let codes: Vec<Option<ErrorCode>> = decided.iter().map(|b| rejection(&b[0])).collect();
    let winners: Vec<usize> = (0..codes.len()).filter(|&i| codes[i].is_none()).collect();
    assert_eq!(winners.len(), 1, "one winner: {codes:?}");
    let losers = codes.iter().filter(|c| **c == Some(code)).count();
    assert_eq!(losers, codes.len() - 1, "the others refused: {codes:?}");
    winners[0]
}

/// The tables lanes write.
const LANE_TABLES: [&str; 13] = [
    "balances",
    "balance_histories",
    "concert_schedules",
    "seats",
    "reservations",
    "reservation_queue",
    "payments",
    "product_stocks",
    "user_carts",
    "orders",
    "order_items",
    "product_order_stats",
    "stats_counted_orders",
];

/// Every row of every table a lane writes, to show that a refusal wrote
/// nothing (not even a version or `updated_at`).
pub(crate) async fn snapshot(pool: &PgPool) -> Vec<Option<serde_json::Value>> {
    let mut tables = Vec::with_capacity(LANE_TABLES.len());
    for table in LANE_TABLES {
        // Runtime SQL: a table name cannot be a bound parameter.
        let rows = sqlx::query_scalar(&format!(
            "SELECT json_agg(t ORDER BY t::text) FROM {table} t"
        ))
        .fetch_one(pool)
        .await
        .expect("snapshot");
        tables.push(rows);
    }
    tables
}

/// Every payment, as the API shows them.
pub(crate) async fn payments(pool: &PgPool) -> Vec<api::concert::Payment> {
    sqlx::query_as!(
        api::concert::Payment,
        r#"SELECT id, user_id, reservation_id, order_id, amount,
                method AS "method: PaymentMethod", status AS "status: PaymentStatus",
                paid_at, refunded_at, created_at
           FROM payments ORDER BY id"#
    )
    .fetch_all(pool)
    .await
    .expect("payments")
}

/// The refusal's code, if `applied` is one.
pub(crate) fn rejection(applied: &Applied) -> Option<ErrorCode> {
    match &applied.outcome {
        Outcome::Rejected(code, _) => Some(*code),
        Outcome::Succeeded(_) => None,
    }
}

/// The refusal of each request, None for those that succeeded.
pub(crate) fn rejections(applied: &[Applied]) -> Vec<Option<ErrorCode>> {
    applied.iter().map(rejection).collect()
}

/// The result of a succeeded request.
pub(crate) fn result(applied: &Applied) -> &RequestResult {
    match &applied.outcome {
        Outcome::Succeeded(Some(result)) => result,
        other => panic!("expected a result, got {other:?}"),
    }
}

/// The result of a succeeded request, as the `T` it must be
/// (`result_as::<HoldResult>(&applied)`).
pub(crate) fn result_as<T>(applied: &Applied) -> &T
where
    for<'a> &'a T: TryFrom<&'a RequestResult>,
{
    result(applied)
        .try_into()
        .unwrap_or_else(|_| panic!("expected a {}", std::any::type_name::<T>()))
}
