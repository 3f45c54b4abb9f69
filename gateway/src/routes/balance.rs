//! Balance: charge (202), current balance, history.

use api::status::BalanceChange;
use api::users::{Balance, BalanceEntry, Charge};
use api::Paged;
use axum::extract::State;
use axum::Json;
use schemas::requests::ChargeBalance;
use schemas::Request;

use crate::auth::{OwnUser, ReadableUser};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::publish::{Accepted, Intake};
use crate::routes::page::NewestFirst;
use crate::state::AppState;

/// Adds money to the caller's own balance.
#[utoipa::path(post, path = "/v1/users/{id}/balance/charge", operation_id = "charge_balance", tag = "balance", request_body = Charge,
    params(OwnUser, crate::openapi::IdempotencyKey),
    security(("user" = [])),
    responses(Accepted))]
pub(crate) async fn charge(
    intake: Intake,
    user: OwnUser,
    ApiJson(body): ApiJson<Charge>,
) -> ApiResult<Accepted> {
    intake
        .accept(&body, async |_| {
            Ok(Request::ChargeBalance(ChargeBalance {
                user_id: user.id,
                amount: body.amount,
            }))
        })
        .await
}

/// A user's balance.
#[utoipa::path(get, path = "/v1/users/{id}/balance", operation_id = "get_balance", tag = "balance",
    params(ReadableUser),
    security(("user" = []), ("admin" = [])),
    responses((status = 200, description = "The balance", body = Balance)))]
pub(crate) async fn show(
    State(state): State<AppState>,
    user: ReadableUser,
) -> ApiResult<Json<Balance>> {
    let row = sqlx::query!(
        "SELECT balance, updated_at FROM balances WHERE user_id = $1",
        user.id,
    )
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound("user"))?;
    Ok(Json(Balance {
        user_id: user.id,
        balance: row.balance,
        updated_at: row.updated_at,
    }))
}

/// A user's balance changes, newest first.
#[utoipa::path(get, path = "/v1/users/{id}/balance/history", operation_id = "list_balance_history", tag = "balance",
    params(ReadableUser, NewestFirst),
    security(("user" = []), ("admin" = [])),
    responses((status = 200, description = "A page of changes", body = Paged<BalanceEntry>)))]
pub(crate) async fn history(
    State(state): State<AppState>,
    user: ReadableUser,
    NewestFirst(page): NewestFirst,
) -> ApiResult<Json<Paged<BalanceEntry>>> {
    let rows = sqlx::query_as!(
        BalanceEntry,
        r#"SELECT id, type AS "kind: BalanceChange", amount, balance_after, reason, payment_id,
                created_at
         FROM balance_histories WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"#,
        user.id,
        page.past,
        page.fetch(),
    )
    .fetch_all(&state.pool);
    page.answer(rows, |e| e.id).await
}
