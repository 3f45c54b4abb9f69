//! The cart: set or remove lines, read it, and check it out as an order.

use api::limits::MAX_ORDER_ITEMS;
use api::shop::{Cart, CartLine, SetQuantity};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::Json;
use schemas::requests::{OrderLine, PlaceOrder};
use schemas::Request;
use utoipa::IntoParams;

use crate::auth::{OwnUser, ReadableUser};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::publish::{Accepted, Intake};
use crate::state::AppState;

/// The `{id}` and `{stock_id}` of `/v1/users/{id}/cart/items/{stock_id}`:
/// a line of the caller's own cart (403 for anyone else's).
#[derive(Debug, Clone, Copy, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct CartItem {
    /// The caller's own user id
    id: i64,
    /// The product stock
    stock_id: i64,
}

impl FromRequestParts<AppState> for CartItem {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let OwnUser { id } = OwnUser::from_request_parts(parts, state).await?;
        let ApiPath((_, stock_id)) =
            ApiPath::<(i64, i64)>::from_request_parts(parts, state).await?;
        Ok(Self { id, stock_id })
    }
}

async fn read_cart(state: &AppState, user_id: i64) -> ApiResult<Cart> {
    let items = sqlx::query_as!(
        CartLine,
        "SELECT c.product_stock_id, c.product_id, p.name, s.size, c.quantity,
                p.price AS unit_price, s.quantity AS in_stock
         FROM user_carts c JOIN product_stocks s ON s.id = c.product_stock_id
              JOIN products p ON p.id = c.product_id
         WHERE c.user_id = $1 ORDER BY c.id",
        user_id,
    )
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
    params(ReadableUser),
    security(("user" = []), ("admin" = [])),
    responses((status = 200, description = "The cart", body = Cart)))]
pub(crate) async fn show(
    State(state): State<AppState>,
    user: ReadableUser,
) -> ApiResult<Json<Cart>> {
    Ok(Json(read_cart(&state, user.id).await?))
}

/// Sets the quantity of one product stock in the caller's cart (adds the
/// line if new; a cart holds at most 50 lines).
#[utoipa::path(put, path = "/v1/users/{id}/cart/items/{stock_id}", operation_id = "set_cart_item", tag = "cart", request_body = SetQuantity,
    params(CartItem),
    security(("user" = [])),
    responses((status = 200, description = "The cart afterwards", body = Cart)))]
pub(crate) async fn set_item(
    State(state): State<AppState>,
    CartItem { id, stock_id }: CartItem,
    ApiJson(body): ApiJson<SetQuantity>,
) -> ApiResult<Json<Cart>> {
    let lines = sqlx::query_scalar!(
        r#"SELECT count(*) AS "lines!" FROM user_carts WHERE user_id = $1 AND product_stock_id <> $2"#,
        id,
        stock_id,
    )
    .fetch_one(&state.pool)
    .await?;
    if lines >= MAX_ORDER_ITEMS as i64 {
        return Err(ApiError::invalid(
            "stock_id",
            format!("a cart holds at most {MAX_ORDER_ITEMS} lines"),
        ));
    }
    let written = sqlx::query!(
        "INSERT INTO user_carts (user_id, product_id, product_stock_id, quantity)
         SELECT $1::int8, s.product_id, s.id, $3::int4 FROM product_stocks s WHERE s.id = $2
         ON CONFLICT (user_id, product_stock_id)
         DO UPDATE SET quantity = EXCLUDED.quantity, updated_at = now()",
        id,
        stock_id,
        body.quantity,
    )
    .execute(&state.pool)
    .await?;
    if written.rows_affected() == 0 {
        return Err(ApiError::NotFound("product stock"));
    }
    Ok(Json(read_cart(&state, id).await?))
}

/// Removes one product stock from the caller's cart.
#[utoipa::path(delete, path = "/v1/users/{id}/cart/items/{stock_id}", operation_id = "remove_cart_item", tag = "cart",
    params(CartItem),
    security(("user" = [])),
    responses((status = 200, description = "The cart afterwards", body = Cart)))]
pub(crate) async fn remove_item(
    State(state): State<AppState>,
    item: CartItem,
) -> ApiResult<Json<Cart>> {
    sqlx::query!(
        "DELETE FROM user_carts WHERE user_id = $1 AND product_stock_id = $2",
        item.id,
        item.stock_id,
    )
    .execute(&state.pool)
    .await?;
    Ok(Json(read_cart(&state, item.id).await?))
}

/// Empties the caller's cart.
#[utoipa::path(delete, path = "/v1/users/{id}/cart", operation_id = "clear_cart", tag = "cart",
    params(OwnUser),
    security(("user" = [])),
    responses((status = 200, description = "The empty cart", body = Cart)))]
pub(crate) async fn clear(State(state): State<AppState>, user: OwnUser) -> ApiResult<Json<Cart>> {
    sqlx::query!("DELETE FROM user_carts WHERE user_id = $1", user.id)
        .execute(&state.pool)
        .await?;
    Ok(Json(read_cart(&state, user.id).await?))
}

/// Orders the cart's lines as they are now; the order lane removes them
/// from the cart only if the order succeeds.
#[utoipa::path(post, path = "/v1/users/{id}/cart/checkout", operation_id = "check_out_cart", tag = "cart",
    params(OwnUser, crate::openapi::IdempotencyKey),
    security(("user" = [])),
    responses(Accepted))]
pub(crate) async fn checkout(intake: Intake, user: OwnUser) -> ApiResult<Accepted> {
    intake
        .accept(&(), async |intake| {
            let items = sqlx::query_as!(
                OrderLine,
                "SELECT product_stock_id, quantity FROM user_carts WHERE user_id = $1 ORDER BY id",
                user.id,
            )
            .fetch_all(&intake.state().pool)
            .await?;
            if items.is_empty() {
                return Err(ApiError::invalid("cart", "the cart is empty"));
            }
            let order = PlaceOrder {
                user_id: user.id,
                items,
                from_cart: true,
            };
            order
                .validate()
                .map_err(|message| ApiError::invalid("cart", message))?;
            Ok(Request::PlaceOrder(order))
        })
        .await
}
