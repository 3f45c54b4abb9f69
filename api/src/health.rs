//! Health answers.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /healthz`: the process is up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Live {
    /// Always `ok`.
    pub status: String,
}

/// `GET /readyz`: whether the gateway can accept requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Ready {
    /// Postgres answers.
    pub database: bool,
    /// Kafka answers and the producer has not failed for good.
    pub kafka: bool,
    /// Why the producer failed for good, if it did and no new one could be
    /// built yet (the next publish or readiness check tries again).
    pub producer_error: Option<String>,
    /// Both.
    pub ready: bool,
}
