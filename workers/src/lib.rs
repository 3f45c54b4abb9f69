//! The workers: partition-ordered lanes that apply requests to Postgres,
//! the schedulers (queue admission, hold expiry) and the outbox relay.
//! Workers never answer client HTTP; they serve only health and metrics.

#![warn(missing_docs)]

pub mod concert;
pub mod config;
pub mod dlq;
pub mod engine;
pub mod error;
#[cfg(test)]
mod fixtures;
pub mod gauges;
pub mod ledger;
pub mod outbox;
pub mod schedulers;
mod sequence;
pub mod shop;

use std::time::Duration;

use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::WorkersConfig;
use engine::{run_lane, LaneSettings};
use schedulers::every;

/// Runs every lane, scheduler and the relay until `cancel` fires, then
/// drains them. Expects migrations and topics to exist.
pub async fn run(config: WorkersConfig, cancel: CancellationToken) -> anyhow::Result<()> {
    let _ = platform::observability::metrics_handle();
    let common = &config.common;
    let pool = platform::db::pool(&common.database_url, common.database_max_connections)?;
    let producer = platform::kafka::producer(common)?;
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
    let env = TaskEnv {
        common: common.clone(),
        pool,
        producer: producer.clone(),
        cancel: cancel.clone(),
    };
    let lanes = env.spawn_lanes(&mut tasks, &config);
    env.spawn_relay(&mut tasks, &config)?;
    env.spawn_jobs(&mut tasks, &config, lanes);

    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(error) = result {
            tracing::error!(error = %format!("{error:#}"), "worker task failed; shutting down");
            cancel.cancel();
            first_error.get_or_insert(error);
        }
    }
    {
        use rdkafka::producer::Producer as _;
        let _ = producer.current().flush(Duration::from_secs(5));
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// What every task of a worker process is started with.
#[derive(Clone)]
struct TaskEnv {
    common: platform::CommonConfig,
    pool: PgPool,
    producer: platform::kafka::Producer,
    cancel: CancellationToken,
}

impl TaskEnv {
    /// One task per lane; returns the lanes, for the gauges.
    fn spawn_lanes(
        &self,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        config: &WorkersConfig,
    ) -> Vec<gauges::Watched> {
        let settings = LaneSettings {
            batch_max: config.batch_max.max(1),
            batch_wait: Duration::from_millis(config.batch_wait_ms),
            produce_timeout: Duration::from_millis(self.common.kafka_produce_timeout_ms),
            retention: config.retention(),
        };
        let hold = config.hold();
        let business_tz = config.business_tz.clone();
        vec![
            self.spawn_lane(tasks, settings, concert::ReservationLane::new(hold)),
            self.spawn_lane(tasks, settings, concert::PaymentLane::default()),
            self.spawn_lane(tasks, settings, ledger::ChargeLane::default()),
            self.spawn_lane(tasks, settings, shop::OrderLane::default()),
            self.spawn_lane(tasks, settings, shop::StatsLane::new(business_tz)),
        ]
    }

    fn spawn_lane<L: engine::Lane>(
        &self,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        settings: LaneSettings,
        lane: L,
    ) -> gauges::Watched {
        let watched = gauges::Watched {
            lane: L::NAME,
            topic: <L::Input as engine::LaneInput>::TOPIC,
        };
        let common = self.common.clone();
        let (pool, producer, cancel) = (
            self.pool.clone(),
            self.producer.clone(),
            self.cancel.clone(),
        );
        tasks.spawn(async move { run_lane(lane, &common, settings, pool, producer, cancel).await });
        watched
    }

    /// The outbox relay, on a small pool of its own: its connections carry
    /// their own `application_name`.
    fn spawn_relay(
        &self,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        config: &WorkersConfig,
    ) -> anyhow::Result<()> {
        let relay_pool =
            platform::db::named_pool(&self.common.database_url, 3, outbox::APPLICATION_NAME)?;
        let settings = outbox::RelaySettings {
            lease: Duration::from_millis(config.outbox_lease_ms.max(100)),
            produce_timeout: Duration::from_millis(self.common.kafka_produce_timeout_ms),
        };
        let (producer, topics, cancel) = (
            self.producer.clone(),
            self.common.topics(),
            self.cancel.clone(),
        );
        tasks.spawn(async move {
            outbox::run(relay_pool, producer, topics, settings, cancel).await;
            Ok(())
        });
        Ok(())
    }

    /// The periodic jobs: queue admission, hold expiry, pruning, and the
    /// gauges of `lanes`.
    fn spawn_jobs(
        &self,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        config: &WorkersConfig,
        lanes: Vec<gauges::Watched>,
    ) {
        let interval = Duration::from_millis(config.scheduler_interval_ms.max(10));
        let admission = concert::queue_admission::Admission {
            active_limit: config.queue_active_limit,
            active_ttl: Duration::from_secs(config.queue_active_ttl_secs),
        };
        self.spawn_job(tasks, "queue_admission", interval, move |env| async move {
            concert::queue_admission::admit(&env.pool, admission).await?;
            Ok(())
        });
        let timeout = Duration::from_millis(self.common.kafka_produce_timeout_ms);
        self.spawn_job(tasks, "hold_expiry", interval, move |env| async move {
            let topics = env.common.topics();
            concert::hold_expiry::publish_due(&env.pool, &env.producer, &topics, timeout).await?;
            Ok(())
        });
        let retention = config.retention();
        let prune_every = Duration::from_secs(config.prune_interval_secs.max(1));
        self.spawn_job(tasks, "prune", prune_every, move |env| async move {
            schedulers::prune::prune(&env.pool, retention).await?;
            Ok(())
        });
        let sample_every = Duration::from_millis(config.gauge_interval_ms.max(100));
        self.spawn_job(tasks, "gauges", sample_every, move |env| {
            let lanes = lanes.clone();
            async move {
                let topics = env.common.topics();
                gauges::sample(&env.pool, &env.producer, &topics, &lanes).await
            }
        });
    }

    /// Runs `tick` with this environment every `interval` until shutdown.
    fn spawn_job<F, Fut>(
        &self,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        name: &'static str,
        interval: Duration,
        tick: F,
    ) where
        F: Fn(TaskEnv) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let env = self.clone();
        tasks.spawn(every(name, interval, self.cancel.clone(), move || {
            tick(env.clone())
        }));
    }
}

/// Health and metrics endpoints of a worker process. Ready when Postgres
/// answers, the Kafka broker answers a metadata request through `kafka`
/// (the process's own producer) and that producer has not failed for good.
pub fn health_router(pool: PgPool, kafka: platform::kafka::Producer) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/readyz",
            get(move || {
                let (pool, kafka) = (pool.clone(), kafka.clone());
                async move { platform::health::answer(&pool, &kafka).await }
            }),
        )
        .route(
            "/metrics",
            get(|| async { platform::observability::metrics_handle().render() }),
        )
}
