//! The workers: partition-ordered lanes that apply requests to Postgres,
//! the schedulers (queue admission, hold expiry) and the outbox relay.
//! Workers never answer client HTTP; they serve only health and metrics.

pub mod config;
pub mod dlq;
pub mod engine;
pub mod error;
pub mod lanes;
pub mod outbox;
pub mod schedulers;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::WorkersConfig;
use engine::{run_lane, LaneSettings};

/// Runs every lane, scheduler and the relay until `cancel` fires, then
/// drains them. Expects migrations and topics to exist.
pub async fn run(config: WorkersConfig, cancel: CancellationToken) -> anyhow::Result<()> {
    let _ = platform::observability::metrics_handle();
    let common = &config.common;
    let pool = platform::db::pool(&common.database_url, common.database_max_connections)?;
    let producer = platform::kafka::producer(common)?;
    let produce_timeout = Duration::from_millis(common.kafka_produce_timeout_ms);
    let settings = LaneSettings {
        batch_max: config.batch_max.max(1),
        batch_wait: Duration::from_millis(config.batch_wait_ms),
        produce_timeout,
        retention: config.retention(),
    };
    let topics = common.topics();
    let interval = Duration::from_millis(config.scheduler_interval_ms.max(10));

    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
    let lane_env = LaneEnv {
        common: common.clone(),
        settings,
        pool: pool.clone(),
        producer: producer.clone(),
        cancel: cancel.clone(),
    };
    lane_env.spawn(
        &mut tasks,
        lanes::ReservationLane {
            hold: config.hold(),
        },
    );
    lane_env.spawn(&mut tasks, lanes::PaymentLane);
    lane_env.spawn(&mut tasks, lanes::ChargeLane);
    lane_env.spawn(&mut tasks, lanes::OrderLane);
    lane_env.spawn(
        &mut tasks,
        lanes::StatsLane {
            business_tz: config.business_tz.clone(),
        },
    );
    {
        // The relay's own small pool: its connections carry their own
        // application_name.
        let relay_pool =
            platform::db::named_pool(&common.database_url, 3, outbox::APPLICATION_NAME)?;
        let settings = outbox::RelaySettings {
            lease: Duration::from_millis(config.outbox_lease_ms.max(100)),
            produce_timeout,
        };
        let (producer, topics, cancel) = (producer.clone(), topics.clone(), cancel.clone());
        tasks.spawn(async move {
            outbox::run(relay_pool, producer, topics, settings, cancel).await;
            Ok(())
        });
    }
    {
        let (pool, cancel) = (pool.clone(), cancel.clone());
        let (limit, ttl) = (
            config.queue_active_limit,
            Duration::from_secs(config.queue_active_ttl_secs),
        );
        tasks.spawn(async move {
            schedulers::every("queue_admission", interval, cancel, || async {
                schedulers::queue_admission::admit(&pool, limit, ttl).await?;
                Ok(())
            })
            .await;
            Ok(())
        });
    }
    {
        let (pool, producer, topics, cancel) = (
            pool.clone(),
            producer.clone(),
            topics.clone(),
            cancel.clone(),
        );
        tasks.spawn(async move {
            schedulers::every("hold_expiry", interval, cancel, || async {
                schedulers::hold_expiry::publish_due(&pool, &producer, &topics, produce_timeout)
                    .await?;
                Ok(())
            })
            .await;
            Ok(())
        });
    }

    {
        let (pool, cancel, retention) = (pool.clone(), cancel.clone(), config.retention());
        let every = Duration::from_secs(config.prune_interval_secs.max(1));
        tasks.spawn(async move {
            schedulers::every("prune", every, cancel, || async {
                schedulers::prune::prune(&pool, retention).await?;
                Ok(())
            })
            .await;
            Ok(())
        });
    }

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
        use rdkafka::producer::Producer;
        let _ = producer.flush(Duration::from_secs(5));
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// What every lane task is started with.
struct LaneEnv {
    common: platform::CommonConfig,
    settings: LaneSettings,
    pool: PgPool,
    producer: rdkafka::producer::FutureProducer,
    cancel: CancellationToken,
}

impl LaneEnv {
    fn spawn<L: engine::Lane>(&self, tasks: &mut JoinSet<anyhow::Result<()>>, lane: L) {
        let lane = Arc::new(lane);
        let (common, settings) = (self.common.clone(), self.settings);
        let (pool, producer, cancel) = (
            self.pool.clone(),
            self.producer.clone(),
            self.cancel.clone(),
        );
        tasks.spawn(async move { run_lane(lane, &common, settings, pool, producer, cancel).await });
    }
}

/// Health and metrics endpoints of a worker process. Ready when Postgres
/// answers and the Kafka broker answers a metadata request through `kafka`
/// (a client of the process's own settings).
pub fn health_router(pool: PgPool, kafka: rdkafka::producer::FutureProducer) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/readyz",
            get(move || {
                let (pool, kafka) = (pool.clone(), kafka.clone());
                async move {
                    let database = sqlx::query_scalar::<_, i32>("SELECT 1")
                        .fetch_one(&pool)
                        .await
                        .is_ok();
                    let kafka = tokio::task::spawn_blocking(move || {
                        platform::kafka::broker_reachable(&kafka, Duration::from_secs(2))
                    })
                    .await
                    .unwrap_or(false);
                    let ready = database && kafka;
                    let status = if ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (
                        status,
                        Json(json!({"database": database, "kafka": kafka, "ready": ready})),
                    )
                }
            }),
        )
        .route(
            "/metrics",
            get(|| async { platform::observability::metrics_handle().render() }),
        )
}
