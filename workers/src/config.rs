//! Workers configuration (docs/design.md §8).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use platform::CommonConfig;

/// Lanes, schedulers and outbox relay of the booking and shop backend.
#[derive(Debug, Clone, Parser)]
pub struct WorkersConfig {
    /// Shared connection settings.
    #[command(flatten)]
    pub common: CommonConfig,

    /// How long a seat hold lasts before it expires, in seconds.
    #[arg(long, env = "RESERVATION_HOLD_SECS", default_value_t = 300)]
    pub reservation_hold_secs: u64,

    /// How many queue tokens per schedule may be ACTIVE at once.
    #[arg(long, env = "QUEUE_ACTIVE_LIMIT", default_value_t = 1000)]
    pub queue_active_limit: i64,

    /// How long a queue token stays ACTIVE, in seconds.
    #[arg(long, env = "QUEUE_ACTIVE_TTL_SECS", default_value_t = 600)]
    pub queue_active_ttl_secs: u64,

    /// Most records a lane applies in one transaction.
    #[arg(long, env = "LANE_BATCH_MAX", default_value_t = 256)]
    pub batch_max: usize,

    /// Longest a lane waits to fill a batch once it has a record, in
    /// milliseconds.
    #[arg(long, env = "LANE_BATCH_WAIT_MS", default_value_t = 5)]
    pub batch_wait_ms: u64,

    /// How often the schedulers (queue admission, hold expiry) run, in
    /// milliseconds.
    #[arg(long, env = "SCHEDULER_INTERVAL_MS", default_value_t = 500)]
    pub scheduler_interval_ms: u64,

    /// How often pruning runs, in seconds.
    #[arg(long, env = "PRUNE_INTERVAL_SECS", default_value_t = 60)]
    pub prune_interval_secs: u64,

    /// How long the outbox relay's lease lasts without renewal, in
    /// milliseconds: a stand-by relay takes over this long after the leader
    /// stopped (killed, frozen, cut off from the database). Keep it above
    /// `KAFKA_PRODUCE_TIMEOUT_MS`, the longest a round may wait for the broker.
    #[arg(long, env = "OUTBOX_LEASE_MS", default_value_t = 10_000)]
    pub outbox_lease_ms: u64,

    /// How often the lag, outbox and dead-letter gauges of `/metrics` are
    /// sampled, in milliseconds.
    #[arg(long, env = "GAUGE_INTERVAL_MS", default_value_t = 5_000)]
    pub gauge_interval_ms: u64,

    /// IANA time zone whose midnight separates the days of product stats.
    #[arg(long, env = "BUSINESS_TZ", default_value = "Asia/Seoul")]
    pub business_tz: String,

    /// Address of the workers' health and metrics endpoints.
    #[arg(long, env = "WORKERS_ADDR", default_value = "127.0.0.1:9091")]
    pub addr: SocketAddr,
}

impl WorkersConfig {
    /// Local defaults, ignoring the environment. Tests start from this.
    pub fn local() -> Self {
        platform::config::from_defaults(&[])
    }

    /// Hold duration.
    pub fn hold(&self) -> Duration {
        Duration::from_secs(self.reservation_hold_secs)
    }

    /// Retention horizon of request rows and counted orders.
    pub fn retention(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::from_std(self.common.retention()).unwrap_or(chrono::TimeDelta::MAX)
    }
}
