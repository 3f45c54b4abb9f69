//! Readiness: whether the services a process needs answer, and the
//! `/readyz` answer of every process.

use std::time::Duration;

use api::health::Ready;
use axum::http::StatusCode;
use axum::Json;
use sqlx::PgPool;

use crate::kafka::Producer;

/// The `/readyz` answer: 200 when Postgres and the broker answer and the
/// producer has not failed for good (a fatal idempotence error, e.g. after
/// a topic was recreated under it; the next publish renews it), 503
/// otherwise; the body says which.
pub async fn answer(pool: &PgPool, producer: &Producer) -> (StatusCode, Json<Ready>) {
    // A producer that failed for good is renewed here too, so a process
    // taken out of rotation for it (no sends) still comes back by itself.
    producer.renew(&producer.current());
    let producer_error = producer.fatal_error();
    let probe = Probe::run(pool, producer).await;
    let kafka = probe.kafka && producer_error.is_none();
    let ready = probe.database && kafka;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Ready {
        database: probe.database,
        kafka,
        producer_error,
        ready,
    };
    (status, Json(body))
}

/// What a readiness probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Probe {
    /// Postgres answered a query.
    database: bool,
    /// The broker answered a metadata request through the process's own
    /// producer.
    kafka: bool,
}

impl Probe {
    /// Asks Postgres and the broker, at once, each for at most 2 s.
    async fn run(pool: &PgPool, producer: &Producer) -> Self {
        let database = async {
            let query = sqlx::query_scalar!(r#"SELECT 1 AS "one!""#).fetch_one(pool);
            matches!(
                tokio::time::timeout(Duration::from_secs(2), query).await,
                Ok(Ok(_))
            )
        };
        let producer = producer.clone();
        let kafka = async move {
            tokio::task::spawn_blocking(move || {
                crate::kafka::broker_reachable(&producer, Duration::from_secs(2))
            })
            .await
            .unwrap_or(false)
        };
        let (database, kafka) = tokio::join!(database, kafka);
        Self { database, kafka }
    }
}
