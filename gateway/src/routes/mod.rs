//! One module per resource; [`router`] merges them into one router that
//! carries its OpenAPI description.

use utoipa_axum::router::OpenApiRouter;

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

/// Every route of the gateway, with its OpenAPI description.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
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

/// Keyset paging: a page is the rows past the cursor's id, one more than
/// the limit fetched to learn whether a next page exists
/// ([`api::Paged::from_rows`]).
pub mod page {
    use api::limits::{MAX_CURSOR_CHARS, PAGE_DEFAULT, PAGE_MAX};
    use api::Cursor;

    use crate::error::{ApiError, ApiResult};

    /// The limit asked for, within 1 to [`PAGE_MAX`].
    pub fn limit(limit: Option<i64>) -> ApiResult<i64> {
        let limit = limit.unwrap_or(PAGE_DEFAULT);
        if (1..=PAGE_MAX).contains(&limit) {
            Ok(limit)
        } else {
            Err(ApiError::invalid(
                "limit",
                format!("must be 1 to {PAGE_MAX}"),
            ))
        }
    }

    /// The id a cursor stands for. What the schema refuses (longer than
    /// [`MAX_CURSOR_CHARS`]) is refused here too, even when it would parse.
    pub fn position(cursor: Option<&str>) -> ApiResult<Option<i64>> {
        cursor
            .map(|c| {
                Some(c)
                    .filter(|c| c.chars().count() <= MAX_CURSOR_CHARS)
                    .and_then(|c| c.parse::<i64>().ok())
                    .filter(|id| *id >= 0)
                    .ok_or_else(|| ApiError::invalid("cursor", "not a cursor this list gave"))
            })
            .transpose()
    }

    /// `(limit, after id)` of a list in ascending id order.
    pub fn forward(cursor: &Cursor) -> ApiResult<(i64, i64)> {
        Ok((
            limit(cursor.limit)?,
            position(cursor.cursor.as_deref())?.unwrap_or(0),
        ))
    }

    /// `(limit, before id)` of a list in descending id order (newest first).
    pub fn backward(cursor: &Cursor) -> ApiResult<(i64, i64)> {
        Ok((
            limit(cursor.limit)?,
            position(cursor.cursor.as_deref())?.unwrap_or(i64::MAX),
        ))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn cursors_are_the_ids_lists_give_and_no_longer_than_documented() {
            assert_eq!(position(None).ok(), Some(None));
            assert_eq!(position(Some("42")).ok(), Some(Some(42)));
            assert!(position(Some("-1")).is_err());
            assert!(position(Some("x")).is_err());
            // Found by schemathesis: 65 zeros parse as 0 but break maxLength.
            assert!(position(Some(&"0".repeat(MAX_CURSOR_CHARS + 1))).is_err());
            assert_eq!(
                position(Some(&"0".repeat(MAX_CURSOR_CHARS))).ok(),
                Some(Some(0))
            );
        }
    }
}
