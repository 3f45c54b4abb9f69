//! Orders: place one (202), read one with items and payment, list a user's.

use api::shop::{Order, OrderItem, OrderPayment};
use api::status::OrderStatus;
use api::Paged;
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use schemas::requests::{OrderLine, PlaceOrder, MAX_ITEM_QUANTITY};
use schemas::Request;
use sqlx::types::Json as Jsonb;

use crate::auth::Caller;
use crate::auth::ReadableUser;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::publish::{Accepted, Intake};
use crate::routes::page::NewestFirst;
use crate::routes::{accessible, Owned};
use crate::state::AppState;

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
    responses(Accepted))]
pub(crate) async fn place(
    intake: Intake,
    ApiJson(body): ApiJson<api::shop::PlaceOrder>,
) -> ApiResult<Accepted> {
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
            let known = sqlx::query_scalar!(
                r#"SELECT count(*) AS "known!" FROM product_stocks WHERE id = ANY($1)"#,
                &ids,
            )
            .fetch_one(&intake.state().pool)
            .await?;
            if known != ids.len() as i64 {
                return Err(ApiError::NotFound("product stock"));
            }
            Ok(Request::PlaceOrder(order))
        })
        .await
}

struct OrderRow {
    id: i64,
    user_id: i64,
    status: OrderStatus,
    total_amount: i64,
    order_date: Option<DateTime<Utc>>,
    items: Jsonb<Vec<OrderItem>>,
    payment: Option<Jsonb<OrderPayment>>,
}

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

/// `query_as!` of [`OrderRow`]s: an order's columns with its lines and
/// payment, then `$tail` (the rest of the `WHERE`, the order), in one
/// statement the compiler checks.
macro_rules! select_orders {
    ($tail:literal, $($arg:expr),+ $(,)?) => {
        sqlx::query_as!(
            OrderRow,
            r#"SELECT o.id, o.user_id, o.status AS "status: OrderStatus", o.total_amount, o.order_date,
                coalesce((SELECT jsonb_agg(jsonb_build_object('product_stock_id', i.product_stock_id,
                             'product_id', i.product_id, 'size', i.size, 'quantity', i.quantity,
                             'unit_price', i.unit_price) ORDER BY i.id)
                          FROM order_items i WHERE i.order_id = o.id), '[]'::jsonb)
                    AS "items!: Jsonb<Vec<OrderItem>>",
                (SELECT jsonb_build_object('id', p.id, 'amount', p.amount, 'method', p.method,
                                           'status', p.status, 'paid_at', p.paid_at)
                 FROM payments p WHERE p.order_id = o.id) AS "payment?: Jsonb<OrderPayment>"
         FROM orders o WHERE "# + $tail,
            $($arg),+
        )
    };
}

impl Owned for OrderRow {
    const NAME: &'static str = "order";

    fn owner(&self) -> i64 {
        self.user_id
    }
}

/// One order with its lines and payment (its buyer's, or any for the admin).
#[utoipa::path(get, path = "/v1/orders/{id}", operation_id = "get_order", tag = "orders",
    params(("id" = i64, Path, description = "The order")),
    security(("user" = []), ("admin" = [])),
    responses((status = 200, description = "The order", body = Order)))]
pub(crate) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Order>> {
    let row = select_orders!("o.id = $1", id)
        .fetch_optional(&state.pool)
        .await?;
    Ok(Json(accessible(caller, row)?.into()))
}

/// A user's orders, newest first.
#[utoipa::path(get, path = "/v1/users/{id}/orders", operation_id = "list_orders", tag = "orders",
    params(ReadableUser, NewestFirst),
    security(("user" = []), ("admin" = [])),
    responses((status = 200, description = "A page of orders", body = Paged<Order>)))]
pub(crate) async fn list_for_user(
    State(state): State<AppState>,
    user: ReadableUser,
    NewestFirst(page): NewestFirst,
) -> ApiResult<Json<Paged<Order>>> {
    let rows = select_orders!(
        "o.user_id = $1 AND o.id < $2 ORDER BY o.id DESC LIMIT $3",
        user.id,
        page.past,
        page.fetch(),
    )
    .fetch_all(&state.pool);
    page.answer(rows, |o| o.id).await
}
