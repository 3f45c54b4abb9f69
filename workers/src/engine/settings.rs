//! Batching and delivery settings of a lane.

use std::time::Duration;

/// Batching and delivery settings of a lane.
#[derive(Debug, Clone, Copy)]
pub struct LaneSettings {
    /// Most records in one transaction.
    pub batch_max: usize,
    /// Longest wait to fill a batch once it has a record.
    pub batch_wait: Duration,
    /// How long a dead-letter produce may wait for the broker.
    pub produce_timeout: Duration,
    /// How long request rows and counted orders are kept; older records
    /// are never applied (see `REQUEST_RETENTION_DAYS`).
    pub retention: chrono::TimeDelta,
}
