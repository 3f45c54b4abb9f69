//! The one error body every failed call answers with.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `{"error": {"code", "message", "field"?}}`: every 4xx and 5xx answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// One error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable upper-case code (`VALIDATION_FAILED`, `SEAT_TAKEN`, ...);
    /// clients branch on it, it is never renamed.
    #[schema(example = "VALIDATION_FAILED")]
    pub code: String,
    /// For people; may change.
    pub message: String,
    /// The offending input, when one field is to blame: a body field
    /// (`items[1].quantity`), a path or query parameter, or a header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}
