//! Stable error and rejection codes shared by the gateway and the lanes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A stable upper-case code. Clients branch on these; never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The seat already has a live (held or confirmed) reservation.
    SeatTaken,
    /// The balance cannot cover the amount.
    InsufficientBalance,
    /// A product stock cannot cover the quantity.
    OutOfStock,
    /// The hold expired before it was paid.
    HoldExpired,
    /// The referenced entity does not exist.
    NotFound,
    /// The entity is in a state that does not allow the operation
    /// (for example paying a reservation that is already confirmed).
    InvalidState,
    /// The caller may not act on the referenced entity.
    Forbidden,
    /// The queue token is missing, not ACTIVE, or not the caller's.
    QueueTokenInvalid,
    /// The request could not be decoded or validated.
    InvalidRequest,
    /// The balance would exceed its upper bound.
    BalanceLimitExceeded,
    /// An unexpected failure while applying the request; it had no effect
    /// and was set aside (dead-lettered) for operators.
    Internal,
    /// The request's record was deleted from the log (retention) before a
    /// lane applied it; it had no effect.
    RecordLost,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::SeatTaken => "SEAT_TAKEN",
            ErrorCode::InsufficientBalance => "INSUFFICIENT_BALANCE",
            ErrorCode::OutOfStock => "OUT_OF_STOCK",
            ErrorCode::HoldExpired => "HOLD_EXPIRED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::InvalidState => "INVALID_STATE",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::QueueTokenInvalid => "QUEUE_TOKEN_INVALID",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::BalanceLimitExceeded => "BALANCE_LIMIT_EXCEEDED",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::RecordLost => "RECORD_LOST",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_matches_as_str() {
        for code in [
            ErrorCode::SeatTaken,
            ErrorCode::InsufficientBalance,
            ErrorCode::HoldExpired,
            ErrorCode::QueueTokenInvalid,
            ErrorCode::RecordLost,
        ] {
            let wire = serde_json::to_value(code).expect("serialize");
            assert_eq!(wire, serde_json::Value::String(code.as_str().to_owned()));
        }
    }
}
