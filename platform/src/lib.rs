//! Infrastructure shared by the gateway, the workers and the tools:
//! configuration, telemetry, Kafka clients, the database pool, shutdown and
//! the health/metrics endpoints.

#![warn(missing_docs)]

pub mod config;
pub mod db;
pub mod health;
pub mod kafka;
pub mod lifecycle;
pub mod observability;

pub use config::CommonConfig;
