//! Integration-test harness.
//!
//! Services come from `DATABASE_URL` and `KAFKA_BROKERS` (CI, `./dev test`),
//! defaulting to the local stack's addresses. Every test gets its own
//! database and its own topic prefix ([`TestEnv`]), so tests run in parallel
//! against one Postgres server and one broker. With the `stack` feature,
//! `stack::Stack` runs the gateway and the workers on them.

pub mod api;
pub mod broker;
pub mod proxy;
pub mod skewed;
#[cfg(feature = "stack")]
pub mod stack;
pub mod topics;

use std::collections::HashMap;
use std::time::Duration;

use platform::CommonConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::util::Timeout;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};
use uuid::Uuid;

pub use api::Api;

/// The password of every user the testkit signs up.
pub const TEST_PASSWORD: &str = "correct horse battery staple";

/// `AUTH_SECRET` of test gateways (32 bytes, as the gateway requires).
pub const TEST_AUTH_SECRET: &str = "test-auth-secret-0123456789abcdef";

/// A fresh database and topic namespace for one test.
pub struct TestEnv {
    /// Connection settings pointing at the fresh database and prefix.
    pub common: CommonConfig,
    /// Pool on the fresh database.
    pub pool: PgPool,
    /// Name of the fresh database.
    pub database: String,
    /// Containers started for this test (none when the services come from
    /// the environment); dropping them stops them.
    _containers: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

/// Whether a Docker engine answers on its socket (or `DOCKER_HOST` names one).
#[cfg(feature = "containers")]
fn docker_reachable() -> bool {
    if std::env::var_os("DOCKER_HOST").is_some() {
        return true;
    }
    #[cfg(unix)]
    {
        std::os::unix::net::UnixStream::connect("/var/run/docker.sock").is_ok()
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// The services of a test run: from `DATABASE_URL` / `KAFKA_BROKERS` when
/// either is set (CI, `./dev test`); otherwise from Postgres and Apache Kafka
/// containers when a Docker engine is reachable; otherwise the local stack's
/// default addresses.
async fn services() -> anyhow::Result<(CommonConfig, Vec<Box<dyn std::any::Any + Send + Sync>>)> {
    let mut common = CommonConfig::local();
    common.log_format = "pretty".into();
    // Several tests run at once against one server (100 connections by
    // default): keep each stack's pools small.
    common.database_max_connections = 8;
    let database_url = std::env::var("DATABASE_URL").ok();
    let brokers = std::env::var("KAFKA_BROKERS").ok();
    #[cfg(feature = "containers")]
    if database_url.is_none() && brokers.is_none() && docker_reachable() {
        use testcontainers_modules::kafka::apache::{Kafka, KAFKA_PORT};
        use testcontainers_modules::postgres::Postgres;
        use testcontainers_modules::testcontainers::runners::AsyncRunner;
        let postgres = Postgres::default().start().await?;
        let kafka = Kafka::default().start().await?;
        common.database_url = format!(
            "postgres://postgres:postgres@127.0.0.1:{}/postgres",
            postgres.get_host_port_ipv4(5432).await?
        );
        common.kafka_brokers = format!("127.0.0.1:{}", kafka.get_host_port_ipv4(KAFKA_PORT).await?);
        return Ok((common, vec![Box::new(postgres), Box::new(kafka)]));
    }
    if let Some(url) = database_url {
        common.database_url = url;
    }
    if let Some(brokers) = brokers {
        common.kafka_brokers = brokers;
    }
    Ok((common, Vec::new()))
}

impl TestEnv {
    /// Creates a database named after a fresh id, migrates it, and creates
    /// the topics behind a fresh prefix.
    pub async fn new() -> anyhow::Result<Self> {
        Self::on_server(None).await
    }

    /// Like [`TestEnv::new`], on the Postgres server at `database_server`
    /// when given (any database on it).
    pub async fn on_server(database_server: Option<&str>) -> anyhow::Result<Self> {
        Self::on_servers(database_server, None).await
    }

    /// Like [`TestEnv::on_server`], with the topics on `brokers` when given
    /// (a test's own broker, [`broker::OwnBroker`]).
    pub async fn on_servers(
        database_server: Option<&str>,
        brokers: Option<&str>,
    ) -> anyhow::Result<Self> {
        init_test_tracing();
        let (mut common, containers) = services().await?;
        if let Some(url) = database_server {
            common.database_url = url.to_owned();
        }
        if let Some(brokers) = brokers {
            common.kafka_brokers = brokers.to_owned();
        }
        let id = Uuid::new_v4().simple().to_string();
        let database = format!("booking_test_{}", &id[..12]);
        let server: PgConnectOptions = common.database_url.parse()?;
        let mut admin = server.clone().database("postgres").connect().await?;
        // Dynamic SQL: a database name cannot be a bind parameter.
        sqlx::query(&format!("CREATE DATABASE {database}"))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        common.database_url = server.database(&database).to_url_lossy().to_string();
        common.topic_prefix = format!("t{}-", &id[..12]);
        let pool = platform::db::pool(&common.database_url, 3)?;
        platform::db::migrate(&pool).await?;
        platform::kafka::create_topics(&common, &common.topics()).await?;
        Ok(Self {
            common,
            pool,
            database,
            _containers: containers,
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

/// Polls `value` every 50 ms until `reached` holds for what it returns (a
/// count that has grown, a queue that has drained), or fails after
/// `timeout` with `what` in the message; returns that value.
pub async fn wait_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut value: F,
    reached: impl Fn(&T) -> bool,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    eventually(what, timeout, || {
        let next = value();
        let reached = &reached;
        async move {
            let value = next.await?;
            Ok(reached(&value).then_some(value))
        }
    })
    .await
}
