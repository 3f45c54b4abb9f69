//! Shop catalogue: products with stock per size, admin set-up, best sellers
//! and daily stats.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Admin;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/products", get(list))
        .route("/v1/products/top", get(top))
        .route("/v1/products/{id}", get(show))
        .route("/v1/stats/products/daily", get(daily))
        .route("/v1/admin/products", post(create))
}

#[derive(sqlx::FromRow)]
struct ProductRow {
    id: i64,
    name: String,
    category: String,
    price: i64,
    created_at: DateTime<Utc>,
    stocks: Value,
}

const PRODUCT_SELECT: &str = "SELECT p.id, p.name, p.category, p.price, p.created_at,
        coalesce((SELECT jsonb_agg(jsonb_build_object('id', s.id, 'size', s.size, 'quantity', s.quantity)
                                   ORDER BY s.id)
                  FROM product_stocks s WHERE s.product_id = p.id), '[]'::jsonb) AS stocks
     FROM products p";

impl ProductRow {
    fn to_json(&self) -> Value {
        json!({"id": self.id, "name": self.name, "category": self.category, "price": self.price,
               "created_at": self.created_at, "stocks": self.stocks})
    }
}

/// `?category=&limit=&offset=`.
#[derive(Debug, Deserialize)]
pub struct ProductFilter {
    category: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    ApiQuery(filter): ApiQuery<ProductFilter>,
) -> ApiResult<Json<Value>> {
    let limit = filter.limit.unwrap_or(50).clamp(1, 200);
    let offset = filter.offset.unwrap_or(0).max(0);
    let rows: Vec<ProductRow> = sqlx::query_as(&format!(
        "{PRODUCT_SELECT} WHERE ($1::text IS NULL OR p.category = $1) ORDER BY p.id LIMIT $2 OFFSET $3"
    ))
    .bind(filter.category)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(
        json!({"items": rows.iter().map(ProductRow::to_json).collect::<Vec<_>>(),
                   "limit": limit, "offset": offset}),
    ))
}

async fn show(State(state): State<AppState>, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<Value>> {
    let row: ProductRow = sqlx::query_as(&format!("{PRODUCT_SELECT} WHERE p.id = $1"))
        .bind(id)
        .fetch_optional(&state.pool)
        .await?
        .ok_or(ApiError::NotFound("product"))?;
    Ok(Json(row.to_json()))
}

/// Body of `POST /v1/admin/products`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    name: String,
    category: String,
    price: i64,
    stocks: Vec<NewStock>,
}

/// One size of a new product.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewStock {
    size: String,
    quantity: i32,
}

async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(body): ApiJson<NewProduct>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 255 {
        return Err(ApiError::invalid("name", "must be 1 to 255 characters"));
    }
    let category = body.category.trim();
    if category.is_empty() || category.chars().count() > 100 {
        return Err(ApiError::invalid("category", "must be 1 to 100 characters"));
    }
    if !(0..=100_000_000).contains(&body.price) {
        return Err(ApiError::invalid("price", "must be 0 to 100000000"));
    }
    if body.stocks.is_empty() || body.stocks.len() > 50 {
        return Err(ApiError::invalid("stocks", "must hold 1 to 50 sizes"));
    }
    let mut sizes = std::collections::HashSet::new();
    for stock in &body.stocks {
        let size = stock.size.trim();
        if size.is_empty() || size.chars().count() > 20 || !sizes.insert(size) {
            return Err(ApiError::invalid(
                "stocks.size",
                "must be 1 to 20 characters and distinct",
            ));
        }
        if !(0..=1_000_000).contains(&stock.quantity) {
            return Err(ApiError::invalid("stocks.quantity", "must be 0 to 1000000"));
        }
    }
    let mut tx = state.pool.begin().await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO products (name, category, price) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(name)
    .bind(category)
    .bind(body.price)
    .fetch_one(&mut *tx)
    .await?;
    let sizes: Vec<&str> = body.stocks.iter().map(|s| s.size.trim()).collect();
    let quantities: Vec<i32> = body.stocks.iter().map(|s| s.quantity).collect();
    sqlx::query(
        "INSERT INTO product_stocks (product_id, size, quantity)
         SELECT $1, size, quantity FROM UNNEST($2::text[], $3::int4[]) WITH ORDINALITY AS t(size, quantity, n)
         ORDER BY n",
    )
    .bind(id)
    .bind(&sizes)
    .bind(&quantities)
    .execute(&mut *tx)
    .await?;
    let row: ProductRow = sqlx::query_as(&format!("{PRODUCT_SELECT} WHERE p.id = $1"))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(row.to_json())))
}

/// `?days=3&limit=5`.
#[derive(Debug, Deserialize)]
pub struct TopQuery {
    days: Option<i32>,
    limit: Option<i64>,
}

/// Best sellers over the last `days` business days (today included), by
/// units sold, then sales amount, then product id (so ties are stable).
async fn top(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<TopQuery>,
) -> ApiResult<Json<Value>> {
    let days = query.days.unwrap_or(3);
    if !(1..=90).contains(&days) {
        return Err(ApiError::invalid("days", "must be 1 to 90"));
    }
    let limit = query.limit.unwrap_or(5);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be 1 to 100"));
    }
    let (from, to): (NaiveDate, NaiveDate) = sqlx::query_as(
        "SELECT (now() AT TIME ZONE $1)::date - ($2 - 1), (now() AT TIME ZONE $1)::date",
    )
    .bind(&*state.business_tz)
    .bind(days)
    .fetch_one(&state.pool)
    .await?;
    let rows: Vec<(i64, String, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT p.id, p.name, p.category, sum(s.total_orders)::int8, sum(s.total_quantity)::int8,
                sum(s.total_sales_amount)::int8
         FROM product_order_stats s JOIN products p ON p.id = s.product_id
         WHERE s.order_date BETWEEN $1 AND $2
         GROUP BY p.id, p.name, p.category
         ORDER BY sum(s.total_quantity) DESC, sum(s.total_sales_amount) DESC, p.id
         LIMIT $3",
    )
    .bind(from)
    .bind(to)
    .bind(limit)
    .fetch_all(&state.pool)
    .await?;
    let items: Vec<Value> = rows
        .into_iter()
        .enumerate()
        .map(|(i, (id, name, category, orders, quantity, amount))| {
            json!({"rank": i + 1, "product_id": id, "name": name, "category": category,
                   "total_orders": orders, "total_quantity": quantity, "total_sales_amount": amount})
        })
        .collect();
    Ok(Json(
        json!({"from": from, "to": to, "time_zone": &*state.business_tz, "items": items}),
    ))
}

/// `?date=YYYY-MM-DD` (default: today in the business time zone).
#[derive(Debug, Deserialize)]
pub struct DailyQuery {
    date: Option<NaiveDate>,
}

async fn daily(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<DailyQuery>,
) -> ApiResult<Json<Value>> {
    let date: NaiveDate = match query.date {
        Some(date) => date,
        None => {
            sqlx::query_scalar("SELECT (now() AT TIME ZONE $1)::date")
                .bind(&*state.business_tz)
                .fetch_one(&state.pool)
                .await?
        }
    };
    let rows: Vec<(i64, String, i32, i64, i64)> = sqlx::query_as(
        "SELECT s.product_id, p.name, s.total_orders, s.total_quantity, s.total_sales_amount
         FROM product_order_stats s JOIN products p ON p.id = s.product_id
         WHERE s.order_date = $1 ORDER BY s.product_id",
    )
    .bind(date)
    .fetch_all(&state.pool)
    .await?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(|(product_id, name, orders, quantity, amount)| {
            json!({"product_id": product_id, "name": name, "date": date, "total_orders": orders,
                   "total_quantity": quantity, "total_sales_amount": amount})
        })
        .collect();
    Ok(Json(
        json!({"date": date, "time_zone": &*state.business_tz, "items": items}),
    ))
}
