//! Balance: charge (202), current balance, history.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use schemas::requests::{ChargeBalance, MAX_CHARGE_AMOUNT};
use schemas::Request;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::{AuthUser, Caller};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::publish::{replay, request_id, submit};
use crate::routes::Page;
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users/{id}/balance", get(show))
        .route("/v1/users/{id}/balance/charge", post(charge))
        .route("/v1/users/{id}/balance/history", get(history))
}

/// Body of the charge call.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChargeBody {
    amount: i64,
}

async fn charge(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiPath(user_id): ApiPath<i64>,
    ApiJson(body): ApiJson<ChargeBody>,
) -> ApiResult<Response> {
    user.require_self(user_id)?;
    if !(1..=MAX_CHARGE_AMOUNT).contains(&body.amount) {
        return Err(ApiError::invalid(
            "amount",
            format!("must be 1 to {MAX_CHARGE_AMOUNT}"),
        ));
    }
    let id = request_id(
        &headers,
        user_id,
        "POST /v1/users/{id}/balance/charge",
        &(user_id, &body),
    )?;
    if let Some(response) = replay(&state, &id).await? {
        return Ok(response);
    }
    submit(
        &state,
        id,
        Request::ChargeBalance(ChargeBalance {
            user_id,
            amount: body.amount,
        }),
    )
    .await
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    caller.require_access(user_id)?;
    let row: (i64, DateTime<Utc>) =
        sqlx::query_as("SELECT balance, updated_at FROM balances WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&state.pool)
            .await?
            .ok_or(ApiError::NotFound("user"))?;
    Ok(Json(
        json!({"user_id": user_id, "balance": row.0, "updated_at": row.1}),
    ))
}

async fn history(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<i64>,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult<Json<Value>> {
    caller.require_access(user_id)?;
    let (limit, offset) = page.bounds();
    #[allow(clippy::type_complexity)]
    let rows: Vec<(
        i64,
        String,
        i64,
        i64,
        Option<String>,
        Option<i64>,
        DateTime<Utc>,
    )> = sqlx::query_as(
        "SELECT id, type, amount, balance_after, reason, payment_id, created_at
         FROM balance_histories WHERE user_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3",
    )
    .bind(user_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.pool)
    .await?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(
            |(id, kind, amount, balance_after, reason, payment_id, created_at)| {
                json!({"id": id, "type": kind, "amount": amount, "balance_after": balance_after,
                   "reason": reason, "payment_id": payment_id, "created_at": created_at})
            },
        )
        .collect();
    Ok(Json(json!({"items": items})))
}
