//! The cart: set or remove lines, read it, and check it out as an order.

use api::limits::MAX_ORDER_ITEMS;
use api::shop::{Cart, CartLine, SetQuantity};
use api::Accepted;
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use schemas::requests::{OrderLine, PlaceOrder};
use schemas::Request;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{AuthUser, Caller};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::publish::Intake;
use crate::state::AppState;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(show, clear))
        .routes(routes!(set_item, remove_item))
        .routes(routes!(checkout))
}

async fn read_cart(state: &AppState, user_id: i64) -> ApiResult<Cart> {
    let items: Vec<CartLine> = sqlx::query_as(
        "SELECT c.product_stock_id, c.product_id, p.name, s.size, c.quantity,
                p.price AS unit_price, s.quantity AS in_stock
         FROM user_carts c JOIN product_stocks s ON s.id = c.product_stock_id JOIN products p ON p.id = c.product_id
         WHERE c.user_id = $1 ORDER BY c.id",
    )
    .bind(user_id)
    .fetch_all(&state.pool)
    .await?;
    let total_amount = items
        .iter()
        .map(|line| line.unit_price * i64::from(line.quantity))
        .sum();
    Ok(Cart {
        user_id,
        items,
        total_amount,
    })
}

/// A user's cart.
#[utoipa::path(get, path = "/v1/users/{id}/cart", operation_id = "get_cart", tag = "cart",
    params(("id" = i64, Path, description = "The user")),
    security(("user" = []), ("admin" = [])),
    responses((status = 200, description = "The cart", body = Cart)))]
async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<i64>,
) -> ApiResult<Json<Cart>> {
    caller.require_access(user_id)?;
    Ok(Json(read_cart(&state, user_id).await?))
}

/// Sets the quantity of one product stock in the caller's cart (adds the
/// line if new; a cart holds at most 50 lines).
#[utoipa::path(put, path = "/v1/users/{id}/cart/items/{stock_id}", operation_id = "set_cart_item", tag = "cart", request_body = SetQuantity,
    params(("id" = i64, Path, description = "The caller's own user id"),
           ("stock_id" = i64, Path, description = "The product stock")),
    security(("user" = [])),
    responses((status = 200, description = "The cart afterwards", body = Cart)))]
async fn set_item(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath((user_id, stock_id)): ApiPath<(i64, i64)>,
    ApiJson(body): ApiJson<SetQuantity>,
) -> ApiResult<Json<Cart>> {
    user.require_self(user_id)?;
    let lines: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM user_carts WHERE user_id = $1 AND product_stock_id <> $2",
    )
    .bind(user_id)
    .bind(stock_id)
    .fetch_one(&state.pool)
    .await?;
    if lines >= MAX_ORDER_ITEMS as i64 {
        return Err(ApiError::invalid(
            "stock_id",
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
    Ok(Json(read_cart(&state, user_id).await?))
}

/// Removes one product stock from the caller's cart.
#[utoipa::path(delete, path = "/v1/users/{id}/cart/items/{stock_id}", operation_id = "remove_cart_item", tag = "cart",
    params(("id" = i64, Path, description = "The caller's own user id"),
           ("stock_id" = i64, Path, description = "The product stock")),
    security(("user" = [])),
    responses((status = 200, description = "The cart afterwards", body = Cart)))]
async fn remove_item(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath((user_id, stock_id)): ApiPath<(i64, i64)>,
) -> ApiResult<Json<Cart>> {
    user.require_self(user_id)?;
    sqlx::query("DELETE FROM user_carts WHERE user_id = $1 AND product_stock_id = $2")
        .bind(user_id)
        .bind(stock_id)
        .execute(&state.pool)
        .await?;
    Ok(Json(read_cart(&state, user_id).await?))
}

/// Empties the caller's cart.
#[utoipa::path(delete, path = "/v1/users/{id}/cart", operation_id = "clear_cart", tag = "cart",
    params(("id" = i64, Path, description = "The caller's own user id")),
    security(("user" = [])),
    responses((status = 200, description = "The empty cart", body = Cart)))]
async fn clear(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(user_id): ApiPath<i64>,
) -> ApiResult<Json<Cart>> {
    user.require_self(user_id)?;
    sqlx::query("DELETE FROM user_carts WHERE user_id = $1")
        .bind(user_id)
        .execute(&state.pool)
        .await?;
    Ok(Json(read_cart(&state, user_id).await?))
}

/// Orders the cart's lines as they are now; the order lane removes them
/// from the cart only if the order succeeds.
#[utoipa::path(post, path = "/v1/users/{id}/cart/checkout", operation_id = "check_out_cart", tag = "cart",
    params(("id" = i64, Path, description = "The caller's own user id"), crate::openapi::IdempotencyKey),
    security(("user" = [])),
    responses((status = 202, description = "Accepted: poll Location for the outcome",
               body = Accepted, headers(("Location" = String, description = "/v1/requests/{request_id}")))))]
async fn checkout(intake: Intake, ApiPath(user_id): ApiPath<i64>) -> ApiResult<Response> {
    intake.user().require_self(user_id)?;
    intake
        .accept(&(), async |intake| {
            let lines: Vec<(i64, i32)> = sqlx::query_as(
                "SELECT product_stock_id, quantity FROM user_carts WHERE user_id = $1 ORDER BY id",
            )
            .bind(user_id)
            .fetch_all(&intake.state().pool)
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
            Ok(Request::PlaceOrder(order))
        })
        .await
}
