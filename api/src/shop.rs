//! The shop domain: products, cart, orders and sales statistics.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::status::{OrderStatus, PaymentMethod, PaymentStatus};

/// A product with its stock per size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Product {
    /// The product.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its category.
    pub category: String,
    /// Price of one, in won.
    pub price: i64,
    /// When it was set up.
    pub created_at: DateTime<Utc>,
    /// Stock per size, in the order they were set up.
    pub stocks: Vec<Stock>,
}

/// One size of a product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Stock {
    /// The product stock (what orders and carts name).
    pub id: i64,
    /// The size label.
    pub size: String,
    /// Units left.
    pub quantity: i32,
}

/// `?category=&limit=&cursor=` of `GET /v1/products`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProductFilter {
    /// Only this category (exact match).
    #[param(max_length = 100)]
    pub category: Option<String>,
    /// Rows per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// The `next` of the previous page.
    #[param(max_length = 64)]
    pub cursor: Option<String>,
}

/// `POST /v1/admin/products`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    /// 1 to 255 characters, no control characters (trimmed).
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001F\u007F]+$"
    )]
    pub name: String,
    /// 1 to 100 characters, no control characters (trimmed).
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F]+$"
    )]
    pub category: String,
    /// Price of one in won, 0 to 100,000,000.
    #[serde(deserialize_with = "crate::numbers::whole")]
    #[schema(minimum = 0, maximum = 100_000_000)]
    pub price: i64,
    /// 1 to 50 sizes with distinct labels (after trimming).
    #[schema(min_items = 1, max_items = 50)]
    pub stocks: Vec<NewStock>,
}

/// One size of a new product.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewStock {
    /// 1 to 20 characters, no control characters (trimmed).
    #[schema(
        min_length = 1,
        max_length = 20,
        pattern = r"^[^\u0000-\u001F\u007F]+$"
    )]
    pub size: String,
    /// Units, 0 to 1,000,000.
    #[serde(deserialize_with = "crate::numbers::whole")]
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub quantity: i32,
}

/// `?days=&limit=` of `GET /v1/products/top`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TopQuery {
    /// Business days to count back, today included: 1 to 90 (default 3).
    #[param(minimum = 1, maximum = 90)]
    pub days: Option<i32>,
    /// How many: 1 to 100 (default 5).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// `GET /v1/products/top`: best sellers by units, then sales, then id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TopProducts {
    /// First business day counted.
    pub from: NaiveDate,
    /// Last business day counted (today).
    pub to: NaiveDate,
    /// The business time zone days are counted in.
    pub time_zone: String,
    /// Best first.
    pub items: Vec<TopProduct>,
}

/// One best seller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TopProduct {
    /// 1 for the best.
    pub rank: i64,
    /// The product.
    pub product_id: i64,
    /// Its name.
    pub name: String,
    /// Its category.
    pub category: String,
    /// Paid orders that held it.
    pub total_orders: i64,
    /// Units sold.
    pub total_quantity: i64,
    /// Won taken.
    pub total_sales_amount: i64,
}

/// `?date=&limit=&cursor=` of `GET /v1/stats/products/daily`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DailyQuery {
    /// The business day (default: today in the business time zone).
    pub date: Option<NaiveDate>,
    /// Rows per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// The `next` of the previous page.
    #[param(max_length = 64)]
    pub cursor: Option<String>,
}

/// `GET /v1/stats/products/daily`: one day's totals per product (by
/// product id, paged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DailyStats {
    /// The business day.
    pub date: NaiveDate,
    /// The business time zone.
    pub time_zone: String,
    /// This page's products.
    pub items: Vec<ProductDay>,
    /// The cursor of the next page, or null on the last page.
    pub next: Option<String>,
}

/// One product's totals for one day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct ProductDay {
    /// The product.
    pub product_id: i64,
    /// Its name.
    pub name: String,
    /// The day.
    pub date: NaiveDate,
    /// Paid orders that held it.
    pub total_orders: i32,
    /// Units sold.
    pub total_quantity: i64,
    /// Won taken.
    pub total_sales_amount: i64,
}

/// `PUT /v1/users/{id}/cart/items/{stock_id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetQuantity {
    /// Units, 1 to 1,000.
    #[serde(deserialize_with = "crate::numbers::whole")]
    #[schema(minimum = 1, maximum = 1_000)]
    pub quantity: i32,
}

/// A user's cart (at most 50 lines).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Cart {
    /// Whose.
    pub user_id: i64,
    /// Lines, oldest first.
    pub items: Vec<CartLine>,
    /// Sum of quantity times unit price, in won.
    pub total_amount: i64,
}

/// One line of a cart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct CartLine {
    /// The product stock.
    pub product_stock_id: i64,
    /// Its product.
    pub product_id: i64,
    /// The product's name.
    pub name: String,
    /// The size.
    pub size: String,
    /// Units wanted.
    pub quantity: i32,
    /// Current price of one.
    pub unit_price: i64,
    /// Units left in stock now.
    pub in_stock: i32,
}

/// `POST /v1/orders`: the lines to buy, paid from the balance.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    /// 1 to 50 lines. Lines naming the same stock are merged (their
    /// quantities added); a merged quantity must still be at most 1,000.
    #[schema(min_items = 1, max_items = 50)]
    pub items: Vec<OrderLine>,
}

/// One line of a new order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderLine {
    /// The product stock (product and size).
    #[serde(deserialize_with = "crate::numbers::whole")]
    #[schema(minimum = 1)]
    pub product_stock_id: i64,
    /// Units, 1 to 1,000.
    #[serde(deserialize_with = "crate::numbers::whole")]
    #[schema(minimum = 1, maximum = 1_000)]
    pub quantity: i32,
}

/// An order with its lines and payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Order {
    /// The order.
    pub id: i64,
    /// The buyer.
    pub user_id: i64,
    /// Where it stands.
    pub status: OrderStatus,
    /// Won.
    pub total_amount: i64,
    /// When it was paid.
    pub order_date: Option<DateTime<Utc>>,
    /// Its lines.
    pub items: Vec<OrderItem>,
    /// Its payment, once paid.
    pub payment: Option<OrderPayment>,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OrderItem {
    /// The product stock.
    pub product_stock_id: i64,
    /// Its product.
    pub product_id: i64,
    /// The size.
    pub size: String,
    /// Units.
    pub quantity: i32,
    /// Price of one when ordered.
    pub unit_price: i64,
}

/// The payment of an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OrderPayment {
    /// The payment.
    pub id: i64,
    /// Won.
    pub amount: i64,
    /// How.
    pub method: PaymentMethod,
    /// Where it stands.
    pub status: PaymentStatus,
    /// When it was paid.
    pub paid_at: Option<DateTime<Utc>>,
}
