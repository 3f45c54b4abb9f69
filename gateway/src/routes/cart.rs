//! The cart: set or remove lines, read it, and check it out as an order.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use schemas::requests::{OrderLine, PlaceOrder, MAX_ITEM_QUANTITY, MAX_ORDER_ITEMS};
use schemas::Request;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{AuthUser, Caller};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::publish::{replay, request_id, submit};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users/{id}/cart", get(show).delete(clear))
        .route(
            "/v1/users/{id}/cart/items/{stock_id}",
            put(set_item).delete(remove_item),
        )
        .route("/v1/users/{id}/cart/checkout", post(checkout))
}

/// Body of `PUT /v1/users/{id}/cart/items/{stock_id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetQuantity {
    quantity: i32,
}

async fn cart_json(state: &AppState, user_id: i64) -> ApiResult<Value> {
    #[allow(clippy::type_complexity)]
    let rows: Vec<(i64, i64, String, String, i32, i64, i32)> = sqlx::query_as(
        "SELECT c.product_stock_id, c.product_id, p.name, s.size, c.quantity, p.price, s.quantity
         FROM user_carts c JOIN product_stocks s ON s.id = c.product_stock_id JOIN products p ON p.id = c.product_id
         WHERE c.user_id = $1 ORDER BY c.id",
    )
    .bind(user_id)
    .fetch_all(&state.pool)
    .await?;
    let total: i64 = rows.iter().map(|r| r.5 * i64::from(r.4)).sum();
    let items: Vec<Value> = rows
        .into_iter()
        .map(|(stock_id, product_id, name, size, quantity, price, in_stock)| {
            json!({"product_stock_id": stock_id, "product_id": product_id, "name": name, "size": size,
                   "quantity": quantity, "unit_price": price, "in_stock": in_stock})
        })
        .collect();
    Ok(json!({"user_id": user_id, "items": items, "total_amount": total}))
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    caller.require_access(user_id)?;
    Ok(Json(cart_json(&state, user_id).await?))
}

async fn set_item(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath((user_id, stock_id)): ApiPath<(i64, i64)>,
    ApiJson(body): ApiJson<SetQuantity>,
) -> ApiResult<Json<Value>> {
    user.require_self(user_id)?;
    if !(1..=MAX_ITEM_QUANTITY).contains(&body.quantity) {
        return Err(ApiError::invalid(
            "quantity",
            format!("must be 1 to {MAX_ITEM_QUANTITY}"),
        ));
    }
    let lines: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM user_carts WHERE user_id = $1 AND product_stock_id <> $2",
    )
    .bind(user_id)
    .bind(stock_id)
    .fetch_one(&state.pool)
    .await?;
    if lines >= MAX_ORDER_ITEMS as i64 {
        return Err(ApiError::invalid(
            "product_stock_id",
            format!("a cart holds at most {MAX_ORDER_ITEMS} lines"),
        ));
    }
    let written = sqlx::query(
        "INSERT INTO user_carts (user_id, product_id, product_stock_id, quantity)
         SELECT $1, s.product_id, s.id, $3 FROM product_stocks s WHERE s.id = $2
         ON CONFLICT (user_id, product_stock_id) DO UPDATE SET quantity = EXCLUDED.quantity, updated_at = now()",
    )
    .bind(user_id)
    .bind(stock_id)
    .bind(body.quantity)
    .execute(&state.pool)
    .await?;
    if written.rows_affected() == 0 {
        return Err(ApiError::NotFound("product stock"));
    }
    Ok(Json(cart_json(&state, user_id).await?))
}

async fn remove_item(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath((user_id, stock_id)): ApiPath<(i64, i64)>,
) -> ApiResult<Json<Value>> {
    user.require_self(user_id)?;
    sqlx::query("DELETE FROM user_carts WHERE user_id = $1 AND product_stock_id = $2")
        .bind(user_id)
        .bind(stock_id)
        .execute(&state.pool)
        .await?;
    Ok(Json(cart_json(&state, user_id).await?))
}

async fn clear(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(user_id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    user.require_self(user_id)?;
    sqlx::query("DELETE FROM user_carts WHERE user_id = $1")
        .bind(user_id)
        .execute(&state.pool)
        .await?;
    Ok(Json(cart_json(&state, user_id).await?))
}

/// Orders the cart's lines as they are now; the order lane removes them
/// from the cart only if the order succeeds.
async fn checkout(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiPath(user_id): ApiPath<i64>,
) -> ApiResult<Response> {
    user.require_self(user_id)?;
    let id = request_id(
        &headers,
        user_id,
        "POST /v1/users/{id}/cart/checkout",
        &user_id,
    )?;
    if let Some(response) = replay(&state, &id).await? {
        return Ok(response);
    }
    let lines: Vec<(i64, i32)> = sqlx::query_as(
        "SELECT product_stock_id, quantity FROM user_carts WHERE user_id = $1 ORDER BY id",
    )
    .bind(user_id)
    .fetch_all(&state.pool)
    .await?;
    if lines.is_empty() {
        return Err(ApiError::invalid("cart", "the cart is empty"));
    }
    let order = PlaceOrder {
        user_id,
        items: lines
            .into_iter()
            .map(|(product_stock_id, quantity)| OrderLine {
                product_stock_id,
                quantity,
            })
            .collect(),
        from_cart: true,
    };
    order
        .validate()
        .map_err(|message| ApiError::invalid("cart", message))?;
    submit(&state, id, Request::PlaceOrder(order)).await
}
