//! Shop catalogue: products with stock per size, admin set-up, best sellers
//! and daily stats.

use api::shop::{
    DailyQuery, DailyStats, NewProduct, Product, ProductDay, ProductFilter, Stock, TopProduct,
    TopProducts, TopQuery,
};
use api::{Cursor, Paged};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use sqlx::types::Json as Jsonb;

use crate::auth::Admin;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::routes::page;
use crate::state::AppState;
use crate::validate;

struct ProductRow {
    id: i64,
    name: String,
    category: String,
    price: i64,
    created_at: DateTime<Utc>,
    stocks: Jsonb<Vec<Stock>>,
}

/// `query_as!` of [`ProductRow`]s: a product's columns with its stock per
/// size, then `$tail` (from the `WHERE` on), in one statement the compiler
/// checks.
macro_rules! select_products {
    ($tail:literal, $($arg:expr),+ $(,)?) => {
        sqlx::query_as!(
            ProductRow,
            r#"SELECT p.id, p.name, p.category, p.price, p.created_at,
                coalesce((SELECT jsonb_agg(jsonb_build_object('id', s.id, 'size', s.size,
                                                              'quantity', s.quantity) ORDER BY s.id)
                          FROM product_stocks s WHERE s.product_id = p.id), '[]'::jsonb)
                    AS "stocks!: Jsonb<Vec<Stock>>"
         FROM products p"# + $tail,
            $($arg),+
        )
    };
}

/// Product `id` with its stock per size.
async fn find<'e>(
    db: impl sqlx::PgExecutor<'e>,
    id: i64,
) -> Result<Option<ProductRow>, sqlx::Error> {
    select_products!(" WHERE p.id = $1", id)
        .fetch_optional(db)
        .await
}

impl From<ProductRow> for Product {
    fn from(row: ProductRow) -> Self {
        Product {
            id: row.id,
            name: row.name,
            category: row.category,
            price: row.price,
            created_at: row.created_at,
            stocks: row.stocks.0,
        }
    }
}

/// Products, by id, optionally of one category.
#[utoipa::path(get, path = "/v1/products", operation_id = "list_products", tag = "products", params(ProductFilter),
    responses((status = 200, description = "A page of products", body = Paged<Product>)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(filter): ApiQuery<ProductFilter>,
) -> ApiResult<Json<Paged<Product>>> {
    let page = page::ascending(&Cursor {
        limit: filter.limit,
        cursor: filter.cursor,
    })?;
    if let Some(category) = &filter.category {
        validate::text("category", category, api::limits::MAX_CATEGORY_CHARS)?;
    }
    let rows = select_products!(
        "
         WHERE ($1::text IS NULL OR p.category = $1) AND p.id > $2
         ORDER BY p.id LIMIT $3",
        filter.category,
        page.past,
        page.fetch(),
    )
    .fetch_all(&state.pool);
    page.answer(rows, |p| p.id).await
}

/// One product with its stock per size.
#[utoipa::path(get, path = "/v1/products/{id}", operation_id = "get_product", tag = "products",
    params(("id" = i64, Path, description = "The product")),
    responses((status = 200, description = "The product", body = Product)))]
pub(crate) async fn show(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Product>> {
    let row = find(&state.pool, id)
        .await?
        .ok_or(ApiError::NotFound("product"))?;
    Ok(Json(row.into()))
}

/// Sets up a product with its sizes and stock (admin).
#[utoipa::path(post, path = "/v1/admin/products", operation_id = "create_product", tag = "admin", request_body = NewProduct,
    security(("admin" = [])),
    responses((status = 201, description = "Created", body = Product)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(body): ApiJson<NewProduct>,
) -> ApiResult<(StatusCode, Json<Product>)> {
    let mut tx = state.pool.begin().await?;
    let id = sqlx::query_scalar!(
        "INSERT INTO products (name, category, price) VALUES ($1, $2, $3) RETURNING id",
        body.name.trim(),
        body.category.trim(),
        body.price,
    )
    .fetch_one(&mut *tx)
    .await?;
    let sizes: Vec<&str> = body.stocks.iter().map(|s| s.size.trim()).collect();
    let quantities: Vec<i32> = body.stocks.iter().map(|s| s.quantity).collect();
    sqlx::query!(
        "INSERT INTO product_stocks (product_id, size, quantity)
         SELECT $1::int8, size, quantity
         FROM UNNEST($2::text[], $3::int4[]) WITH ORDINALITY AS t(size, quantity, n)
         ORDER BY n",
        id,
        // `as`: borrowed sizes encode as the text[] the macro types as owned.
        &sizes as &[&str],
        &quantities,
    )
    .execute(&mut *tx)
    .await?;
    let row = find(&mut *tx, id).await?.ok_or(sqlx::Error::RowNotFound)?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// Best sellers over the last `days` business days (today included), by
/// units sold, then sales amount, then product id (so ties are stable).
#[utoipa::path(get, path = "/v1/products/top", operation_id = "top_products", tag = "products", params(TopQuery),
    responses((status = 200, description = "The best sellers", body = TopProducts)))]
pub(crate) async fn top(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<TopQuery>,
) -> ApiResult<Json<TopProducts>> {
    let days = query.days.unwrap_or(3);
    validate::within("days", days, 1..=90)?;
    let limit = query.limit.unwrap_or(5);
    validate::within("limit", limit, 1..=100)?;
    let window = sqlx::query!(
        r#"SELECT (now() AT TIME ZONE $1)::date - ($2::int4 - 1) AS "from!",
                (now() AT TIME ZONE $1)::date AS "to!""#,
        &*state.business_tz,
        days,
    )
    .fetch_one(&state.pool)
    .await?;
    let (from, to) = (window.from, window.to);
    let rows = sqlx::query!(
        r#"SELECT p.id, p.name, p.category, sum(s.total_orders)::int8 AS "orders!",
                sum(s.total_quantity)::int8 AS "quantity!",
                sum(s.total_sales_amount)::int8 AS "amount!"
         FROM product_order_stats s JOIN products p ON p.id = s.product_id
         WHERE s.order_date BETWEEN $1 AND $2
         GROUP BY p.id, p.name, p.category
         ORDER BY sum(s.total_quantity) DESC, sum(s.total_sales_amount) DESC, p.id
         LIMIT $3"#,
        from,
        to,
        limit,
    )
    .fetch_all(&state.pool)
    .await?;
    let items = rows
        .into_iter()
        .zip(1..)
        .map(|(row, rank)| TopProduct {
            rank,
            product_id: row.id,
            name: row.name,
            category: row.category,
            total_orders: row.orders,
            total_quantity: row.quantity,
            total_sales_amount: row.amount,
        })
        .collect();
    Ok(Json(TopProducts {
        from,
        to,
        time_zone: state.business_tz.to_string(),
        items,
    }))
}

/// One business day's totals per product, by product id.
#[utoipa::path(get, path = "/v1/stats/products/daily", operation_id = "daily_product_stats", tag = "products", params(DailyQuery),
    responses((status = 200, description = "A page of the day's totals", body = DailyStats)))]
pub(crate) async fn daily(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<DailyQuery>,
) -> ApiResult<Json<DailyStats>> {
    let page = page::ascending(&Cursor {
        limit: query.limit,
        cursor: query.cursor,
    })?;
    let date = match query.date {
        Some(date) => date,
        None => {
            sqlx::query_scalar!(
                r#"SELECT (now() AT TIME ZONE $1)::date AS "today!""#,
                &*state.business_tz,
            )
            .fetch_one(&state.pool)
            .await?
        }
    };
    let rows = sqlx::query_as!(
        ProductDay,
        "SELECT s.product_id, p.name, s.order_date AS date, s.total_orders, s.total_quantity,
                s.total_sales_amount
         FROM product_order_stats s JOIN products p ON p.id = s.product_id
         WHERE s.order_date = $1 AND s.product_id > $2 ORDER BY s.product_id LIMIT $3",
        date,
        page.past,
        page.fetch(),
    )
    .fetch_all(&state.pool)
    .await?;
    let Paged { items, next } = page.of(rows, |d| d.product_id);
    Ok(Json(DailyStats {
        date,
        time_zone: state.business_tz.to_string(),
        items,
        next,
    }))
}
