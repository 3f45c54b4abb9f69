//! The HTTP contract of the gateway as types: one request body and one
//! answer per endpoint, the error body, the status enums and the results
//! lanes record for decided requests. The gateway serves them (and derives
//! its OpenAPI document from them), the lanes write the results, the
//! `client` crate reads them. No I/O lives here.
//!
//! Limits that the OpenAPI document states (lengths, ranges) are the
//! constants of [`limits`]; the gateway checks them, the schemas say them.

pub mod concert;
pub mod error;
pub mod health;
pub mod limits;
pub mod numbers;
pub mod outcomes;
pub mod paging;
pub mod shop;
pub mod status;
pub mod users;

pub use error::{ErrorBody, ErrorDetail};
pub use outcomes::{Accepted, RequestOutcome, RequestResult};
pub use paging::{Cursor, Items, Paged};
