//! One module per resource; [`router`] merges them.

use axum::Router;

use crate::state::AppState;

pub mod balance;
pub mod cart;
pub mod concerts;
pub mod health;
pub mod orders;
pub mod payments;
pub mod products;
pub mod queue;
pub mod requests;
pub mod reservations;
pub mod users;

/// Every route of the gateway.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(users::router())
        .merge(queue::router())
        .merge(concerts::router())
        .merge(reservations::router())
        .merge(payments::router())
        .merge(balance::router())
        .merge(products::router())
        .merge(cart::router())
        .merge(orders::router())
        .merge(requests::router())
        .merge(health::router())
}

/// Paging parameters of list endpoints.
#[derive(Debug, serde::Deserialize)]
pub struct Page {
    /// Rows to return (1..=200, default 50).
    pub limit: Option<i64>,
    /// Rows to skip.
    pub offset: Option<i64>,
}

impl Page {
    /// `(limit, offset)` clamped to sane bounds.
    pub fn bounds(&self) -> (i64, i64) {
        (
            self.limit.unwrap_or(50).clamp(1, 200),
            self.offset.unwrap_or(0).max(0),
        )
    }
}
