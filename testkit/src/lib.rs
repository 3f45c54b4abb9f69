//! Integration-test harness.
//!
//! Services come from `DATABASE_URL` and `KAFKA_BROKERS` (CI, `./dev test`),
//! defaulting to the local stack's addresses. Every test gets its own
//! database and its own topic prefix, so tests run in parallel against one
//! Postgres server and one broker.

pub mod api;
pub mod proxy;

use std::collections::HashMap;
use std::time::Duration;

use platform::CommonConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::util::Timeout;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};
use uuid::Uuid;

pub use api::Api;

/// A fresh database and topic namespace for one test.
pub struct TestEnv {
    /// Connection settings pointing at the fresh database and prefix.
    pub common: CommonConfig,
    /// Pool on the fresh database.
    pub pool: PgPool,
    /// Name of the fresh database.
    pub database: String,
}

/// Base connection settings from the environment.
pub fn services() -> CommonConfig {
    let mut common = CommonConfig::local();
    if let Ok(url) = std::env::var("DATABASE_URL") {
        common.database_url = url;
    }
    if let Ok(brokers) = std::env::var("KAFKA_BROKERS") {
        common.kafka_brokers = brokers;
    }
    common.log_format = "pretty".into();
    common.database_max_connections = 12;
    common
}

impl TestEnv {
    /// Creates a database named after a fresh id, migrates it, and creates
    /// the topics behind a fresh prefix.
    pub async fn new() -> anyhow::Result<Self> {
        init_test_tracing();
        let mut common = services();
        let id = Uuid::new_v4().simple().to_string();
        let database = format!("booking_test_{}", &id[..12]);
        let server: PgConnectOptions = common.database_url.parse()?;
        let mut admin = server.clone().database("postgres").connect().await?;
        sqlx::query(&format!("CREATE DATABASE {database}"))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        common.database_url = server.database(&database).to_url_lossy().to_string();
        common.topic_prefix = format!("t{}-", &id[..12]);
        let pool = platform::db::pool(&common.database_url, 8)?;
        platform::db::migrate(&pool).await?;
        platform::kafka::create_topics(&common, &common.topics()).await?;
        Ok(Self {
            common,
            pool,
            database,
        })
    }

    /// Sum of high watermarks per topic: how many records each topic holds.
    pub fn record_counts(&self) -> anyhow::Result<HashMap<String, i64>> {
        let consumer: BaseConsumer = platform::kafka::client_config(&self.common).create()?;
        let mut counts = HashMap::new();
        for (topic, partitions) in self.common.topics().all_with_partitions() {
            let mut total = 0;
            for partition in 0..partitions {
                let (low, high) = consumer.fetch_watermarks(
                    &topic,
                    partition,
                    Timeout::After(Duration::from_secs(10)),
                )?;
                total += high - low.max(0);
            }
            counts.insert(topic, total);
        }
        Ok(counts)
    }

    /// Total records over every topic of this test.
    pub fn total_records(&self) -> anyhow::Result<i64> {
        Ok(self.record_counts()?.values().sum())
    }
}

fn init_test_tracing() {
    platform::observability::init_tracing_with_default(
        &std::env::var("TEST_LOG_FORMAT").unwrap_or_else(|_| "pretty".into()),
        "warn",
    );
}

/// Polls `check` every 50 ms until it returns `Some`, or fails after
/// `timeout` with `what` in the message.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
