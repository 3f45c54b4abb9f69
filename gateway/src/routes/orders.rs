//! Orders: place one (202), read one with items and payment, list a user's.

use api::shop::{Order, OrderItem, OrderPayment};
use api::status::OrderStatus;
use api::{Accepted, Cursor, Paged};
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use schemas::requests::{OrderLine, PlaceOrder, MAX_ITEM_QUANTITY};
use schemas::Request;
use sqlx::types::Json as Jsonb;
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
        .routes(routes!(place))
        .routes(routes!(show))
        .routes(routes!(list_for_user))
}

/// The lines of an order with lines naming the same stock merged (their
/// quantities added), in the order each stock first appears.
fn merged(lines: &[api::shop::OrderLine]) -> ApiResult<Vec<OrderLine>> {
    let mut merged: Vec<OrderLine> = Vec::with_capacity(lines.len());
    for line in lines {
        match merged
            .iter_mut()
            .find(|m| m.product_stock_id == line.product_stock_id)
        {
            Some(m) => m.quantity = m.quantity.saturating_add(line.quantity),
            None => merged.push(OrderLine {
                product_stock_id: line.product_stock_id,
                quantity: line.quantity,
            }),
        }
    }
    if let Some(line) = merged.iter().find(|m| m.quantity > MAX_ITEM_QUANTITY) {
        return Err(ApiError::invalid(
            "items",
            format!(
                "stock {} adds up to more than {MAX_ITEM_QUANTITY}",
                line.product_stock_id
            ),
        ));
    }
    Ok(merged)
}

/// Orders products, paid from the caller's balance at once.
#[utoipa::path(post, path = "/v1/orders", operation_id = "place_order", tag = "orders", request_body = api::shop::PlaceOrder,
    params(crate::openapi::IdempotencyKey),
    security(("user" = [])),
    responses((status = 202, description = "Accepted: poll Location for the outcome",
               body = Accepted, headers(("Location" = String, description = "/v1/requests/{request_id}")))))]
async fn place(
    intake: Intake,
    ApiJson(body): ApiJson<api::shop::PlaceOrder>,
) -> ApiResult<Response> {
    let order = PlaceOrder {
        user_id: intake.user_id(),
        items: merged(&body.items)?,
        from_cart: false,
    };
    order
        .validate()
        .map_err(|message| ApiError::invalid("items", message))?;
    intake
        .accept(&body, async |intake| {
            let ids: Vec<i64> = order.items.iter().map(|l| l.product_stock_id).collect();
            let known: i64 =
                sqlx::query_scalar("SELECT count(*) FROM product_stocks WHERE id = ANY($1)")
                    .bind(&ids)
                    .fetch_one(&intake.state().pool)
                    .await?;
            if known != ids.len() as i64 {
                return Err(ApiError::NotFound("product stock"));
            }
            Ok(Request::PlaceOrder(order))
        })
        .await
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: i64,
    user_id: i64,
    status: OrderStatus,
    total_amount: i64,
    order_date: Option<DateTime<Utc>>,
    items: Jsonb<Vec<OrderItem>>,
    payment: Option<Jsonb<OrderPayment>>,
}

const ORDER_SELECT: &str = "SELECT o.id, o.user_id, o.status, o.total_amount, o.order_date,
        coalesce((SELECT jsonb_agg(jsonb_build_object('product_stock_id', i.product_stock_id,
                     'product_id', i.product_id, 'size', i.size, 'quantity', i.quantity,
                     'unit_price', i.unit_price) ORDER BY i.id)
                  FROM order_items i WHERE i.order_id = o.id), '[]'::jsonb) AS items,
        (SELECT jsonb_build_object('id', p.id, 'amount', p.amount, 'method', p.method,
                                   'status', p.status, 'paid_at', p.paid_at)
         FROM payments p WHERE p.order_id = o.id) AS payment
     FROM orders o";

impl From<OrderRow> for Order {
    fn from(row: OrderRow) -> Self {
        Order {
            id: row.id,
            user_id: row.user_id,
            status: row.status,
            total_amount: row.total_amount,
            order_date: row.order_date,
            items: row.items.0,
            payment: row.payment.map(|p| p.0),
        }
    }
}

/// One order with its lines and payment (its buyer's, or any for the admin).
#[utoipa::path(get, path = "/v1/orders/{id}", operation_id = "get_order", tag = "orders",
    params(("id" = i64, Path, description = "The order")),
    security(("user" = []), ("admin" = [])),
    responses((status = 200, description = "The order", body = Order)))]
async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Order>> {
    let row: OrderRow = sqlx::query_as(&format!("{ORDER_SELECT} WHERE o.id = $1"))
        .bind(id)
        .fetch_optional(&state.pool)
        .await?
        .ok_or(ApiError::NotFound("order"))?;
    caller.require_access(row.user_id)?;
    Ok(Json(row.into()))
}

/// A user's orders, newest first.
#[utoipa::path(get, path = "/v1/users/{id}/orders", operation_id = "list_orders", tag = "orders",
    params(("id" = i64, Path, description = "The user"), Cursor),
    security(("user" = []), ("admin" = [])),
    responses((status = 200, description = "A page of orders", body = Paged<Order>)))]
async fn list_for_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<i64>,
    ApiQuery(cursor): ApiQuery<Cursor>,
) -> ApiResult<Json<Paged<Order>>> {
    caller.require_access(user_id)?;
    let (limit, before) = page::backward(&cursor)?;
    let rows: Vec<OrderRow> = sqlx::query_as(&format!(
        "{ORDER_SELECT} WHERE o.user_id = $1 AND o.id < $2 ORDER BY o.id DESC LIMIT $3"
    ))
    .bind(user_id)
    .bind(before)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let rows: Vec<Order> = rows.into_iter().map(Order::from).collect();
    Ok(Json(Paged::from_rows(rows, limit, |o| o.id)))
}
