//! Balance: charge (202), current balance, history.

use api::users::{Balance, BalanceEntry, Charge};
use api::{Accepted, Cursor, Paged};
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use schemas::requests::ChargeBalance;
use schemas::Request;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::publish::Intake;
use crate::routes::page;
use crate::state::AppState;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(show))
        .routes(routes!(charge))
        .routes(routes!(history))
}

/// Adds money to the caller's own balance.
#[utoipa::path(post, path = "/v1/users/{id}/balance/charge", operation_id = "charge_balance", tag = "balance", request_body = Charge,
    params(("id" = i64, Path, description = "The caller's own user id"), crate::openapi::IdempotencyKey),
    security(("user" = [])),
    responses((status = 202, description = "Accepted: poll Location for the outcome",
               body = Accepted, headers(("Location" = String, description = "/v1/requests/{request_id}")))))]
async fn charge(
    intake: Intake,
    ApiPath(user_id): ApiPath<i64>,
    ApiJson(body): ApiJson<Charge>,
) -> ApiResult<Response> {
    intake.user().require_self(user_id)?;
    intake
        .accept(&body, async |_| {
            Ok(Request::ChargeBalance(ChargeBalance {
                user_id,
                amount: body.amount,
            }))
        })
        .await
}

/// A user's balance.
#[utoipa::path(get, path = "/v1/users/{id}/balance", operation_id = "get_balance", tag = "balance",
    params(("id" = i64, Path, description = "The user")),
    security(("user" = []), ("admin" = [])),
    responses((status = 200, description = "The balance", body = Balance)))]
async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<i64>,
) -> ApiResult<Json<Balance>> {
    caller.require_access(user_id)?;
    let (balance, updated_at): (i64, DateTime<Utc>) =
        sqlx::query_as("SELECT balance, updated_at FROM balances WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&state.pool)
            .await?
            .ok_or(ApiError::NotFound("user"))?;
    Ok(Json(Balance {
        user_id,
        balance,
        updated_at,
    }))
}

/// A user's balance changes, newest first.
#[utoipa::path(get, path = "/v1/users/{id}/balance/history", operation_id = "list_balance_history", tag = "balance",
    params(("id" = i64, Path, description = "The user"), Cursor),
    security(("user" = []), ("admin" = [])),
    responses((status = 200, description = "A page of changes", body = Paged<BalanceEntry>)))]
async fn history(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<i64>,
    ApiQuery(cursor): ApiQuery<Cursor>,
) -> ApiResult<Json<Paged<BalanceEntry>>> {
    caller.require_access(user_id)?;
    let (limit, before) = page::backward(&cursor)?;
    let rows: Vec<BalanceEntry> = sqlx::query_as(
        "SELECT id, type, amount, balance_after, reason, payment_id, created_at
         FROM balance_histories WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
    )
    .bind(user_id)
    .bind(before)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(Paged::from_rows(rows, limit, |e| e.id)))
}
