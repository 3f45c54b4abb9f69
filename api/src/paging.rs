//! Paging: lists answer a page and the cursor of the next one.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// `?limit=&cursor=`: which page of a list.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Cursor {
    /// Rows per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// Where to go on: the `next` of the previous page; absent for the
    /// first. Opaque: pass it back as it came.
    #[param(max_length = 64)]
    pub cursor: Option<String>,
}

/// A page of a list. Lists are in a stable order (stated per endpoint);
/// rows written after a page was read appear on later pages only if they
/// sort after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Paged<T> {
    /// This page's rows.
    pub items: Vec<T>,
    /// The cursor of the next page, or null on the last page.
    pub next: Option<String>,
}

impl<T> Paged<T> {
    /// The page of `rows`, fetched with one row more than `limit` asked for:
    /// that extra row's presence says a next page exists, and `key` of the
    /// last row kept is its cursor.
    pub fn from_rows(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> i64) -> Self {
        let limit = usize::try_from(limit).unwrap_or(0);
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|row| key(row).to_string())
        } else {
            None
        };
        Self { items: rows, next }
    }
}

/// A list that is not paged: the domain bounds it (stated per endpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Items<T> {
    /// Every row.
    pub items: Vec<T>,
}
