//! One module per resource, their handlers listed in one table
//! ([`router`]), a router that carries its OpenAPI description. What their
//! handlers share is here: a user's row or 404/403 (`accessible`) and
//! keyset paging ([`page`]).

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
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

/// Every route of the gateway, with its OpenAPI description: the API's
/// table of contents, in the order the document lists it.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(users::create_user))
        .routes(routes!(users::login))
        .routes(routes!(queue::join))
        .routes(routes!(queue::status))
        .routes(routes!(concerts::list_concerts))
        .routes(routes!(concerts::list_schedules))
        .routes(routes!(concerts::list_seats))
        .routes(routes!(concerts::create_concert))
        .routes(routes!(reservations::hold))
        .routes(routes!(reservations::show))
        .routes(routes!(reservations::cancel))
        .routes(routes!(reservations::list_for_user))
        .routes(routes!(payments::pay))
        .routes(routes!(payments::list_for_user))
        .routes(routes!(balance::show))
        .routes(routes!(balance::charge))
        .routes(routes!(balance::history))
        .routes(routes!(products::list))
        .routes(routes!(products::top))
        .routes(routes!(products::show))
        .routes(routes!(products::daily))
        .routes(routes!(products::create))
        .routes(routes!(cart::show, cart::clear))
        .routes(routes!(cart::set_item, cart::remove_item))
        .routes(routes!(cart::checkout))
        .routes(routes!(orders::place))
        .routes(routes!(orders::show))
        .routes(routes!(orders::list_for_user))
        .routes(routes!(requests::show))
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(health::metrics))
}

/// A row that belongs to one user: a reservation, an order.
pub(crate) trait Owned {
    /// What a 404 calls it.
    const NAME: &'static str;
    /// The user it belongs to.
    fn owner(&self) -> i64;
}

/// The row a look-up found, if `caller` may see it: 404 when there is
/// none, 403 when it is another user's (the admin sees every row).
pub(crate) fn accessible<R: Owned>(caller: impl Into<Caller>, row: Option<R>) -> ApiResult<R> {
    let row = row.ok_or(ApiError::NotFound(R::NAME))?;
    caller.into().require_access(row.owner())?;
    Ok(row)
}

/// Keyset paging: a page is the rows past the cursor's id, one more than
/// the limit fetched to learn whether a next page exists
/// ([`api::Paged::from_rows`]).
pub mod page {
    use std::future::Future;

    use api::limits::{MAX_CURSOR_CHARS, PAGE_DEFAULT, PAGE_MAX};
    use api::{Cursor, Paged};
    use axum::extract::FromRequestParts;
    use axum::http::request::Parts;
    use axum::Json;
    use utoipa::openapi::path::{Parameter, ParameterIn};
    use utoipa::IntoParams;

    use crate::error::{ApiError, ApiResult};
    use crate::extract::ApiQuery;

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

    /// The page a [`Cursor`] asks for.
    #[derive(Debug, Clone, Copy)]
    pub struct Page {
        /// Rows the page holds at most.
        limit: i64,
        /// The id the page starts past, not included: the rows after it
        /// in the list's order (a greater id ascending, a smaller one
        /// descending).
        pub past: i64,
    }

    /// The page of a list in ascending id order.
    pub fn ascending(cursor: &Cursor) -> ApiResult<Page> {
        Ok(Page {
            limit: limit(cursor.limit)?,
            past: position(cursor.cursor.as_deref())?.unwrap_or(0),
        })
    }

    /// The page a [`Cursor`] query asks for of a list in descending id
    /// order (newest first).
    pub struct NewestFirst(pub Page);

    impl<S: Send + Sync> FromRequestParts<S> for NewestFirst {
        type Rejection = ApiError;

        async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
            let ApiQuery(cursor) = ApiQuery::<Cursor>::from_request_parts(parts, state).await?;
            Ok(Self(Page {
                limit: limit(cursor.limit)?,
                past: position(cursor.cursor.as_deref())?.unwrap_or(i64::MAX),
            }))
        }
    }

    impl IntoParams for NewestFirst {
        fn into_params(in_provider: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
            Cursor::into_params(in_provider)
        }
    }

    impl Page {
        /// Rows to fetch: one more than the page holds, whose presence
        /// says a next page exists.
        pub fn fetch(&self) -> i64 {
            self.limit + 1
        }

        /// The page of `rows` (fetched with [`Page::fetch`]), each made a
        /// `T`; `id` is what the list is ordered by, the next cursor.
        pub fn of<R, T: From<R>>(&self, rows: Vec<R>, id: impl Fn(&R) -> i64) -> Paged<T> {
            let Paged { items, next } = Paged::from_rows(rows, self.limit, id);
            Paged {
                items: items.into_iter().map(T::from).collect(),
                next,
            }
        }

        /// A list handler's answer: the page ([`Page::of`]) of the rows
        /// `fetched` yields, a query bound with [`Page::past`] and
        /// [`Page::fetch`].
        pub async fn answer<R, T: From<R>>(
            &self,
            fetched: impl Future<Output = Result<Vec<R>, sqlx::Error>>,
            id: impl Fn(&R) -> i64,
        ) -> ApiResult<Json<Paged<T>>> {
            Ok(Json(self.of(fetched.await?, id)))
        }
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
