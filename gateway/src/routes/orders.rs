//! Orders: place one (202), read one with items and payment, list a user's.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use schemas::requests::{OrderLine, PlaceOrder};
use schemas::Request;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{AuthUser, Caller};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::publish::{replay, request_id, submit};
use crate::routes::Page;
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/orders", post(place))
        .route("/v1/orders/{id}", get(show))
        .route("/v1/users/{id}/orders", get(list_for_user))
}

/// Body of `POST /v1/orders`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderBody {
    items: Vec<OrderLine>,
}

async fn place(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    headers: HeaderMap,
    ApiJson(body): ApiJson<OrderBody>,
) -> ApiResult<Response> {
    let order = PlaceOrder {
        user_id,
        items: body.items,
        from_cart: false,
    };
    order
        .validate()
        .map_err(|message| ApiError::invalid("items", message))?;
    let id = request_id(&headers, user_id, "POST /v1/orders", &order.items)?;
    if let Some(response) = replay(&state, &id).await? {
        return Ok(response);
    }
    let ids: Vec<i64> = order.items.iter().map(|l| l.product_stock_id).collect();
    let known: i64 = sqlx::query_scalar("SELECT count(*) FROM product_stocks WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_one(&state.pool)
        .await?;
    if known != ids.len() as i64 {
        return Err(ApiError::NotFound("product stock"));
    }
    submit(&state, id, Request::PlaceOrder(order)).await
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: i64,
    user_id: i64,
    status: String,
    total_amount: i64,
    order_date: Option<DateTime<Utc>>,
    items: Value,
    payment: Option<Value>,
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

impl OrderRow {
    fn to_json(&self) -> Value {
        json!({"id": self.id, "user_id": self.user_id, "status": self.status,
               "total_amount": self.total_amount, "order_date": self.order_date,
               "items": self.items, "payment": self.payment})
    }
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    let row: OrderRow = sqlx::query_as(&format!("{ORDER_SELECT} WHERE o.id = $1"))
        .bind(id)
        .fetch_optional(&state.pool)
        .await?
        .ok_or(ApiError::NotFound("order"))?;
    caller.require_access(row.user_id)?;
    Ok(Json(row.to_json()))
}

async fn list_for_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<i64>,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult<Json<Value>> {
    caller.require_access(user_id)?;
    let (limit, offset) = page.bounds();
    let rows: Vec<OrderRow> = sqlx::query_as(&format!(
        "{ORDER_SELECT} WHERE o.user_id = $1 ORDER BY o.id DESC LIMIT $2 OFFSET $3"
    ))
    .bind(user_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(
        json!({"items": rows.iter().map(OrderRow::to_json).collect::<Vec<_>>()}),
    ))
}
