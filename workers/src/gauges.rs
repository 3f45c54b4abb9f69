//! What operators watch, sampled every few seconds into Prometheus gauges:
//! each lane's consumer lag per partition (the log's high watermark minus
//! the offset the lane stored in Postgres), the outbox backlog and the age
//! of its oldest row, and how many records each dead-letter topic holds.

use std::time::Duration;

use platform::kafka;
use rdkafka::producer::{FutureProducer, Producer};
use schemas::{Topic, TopicNames};
use sqlx::PgPool;

/// How long one watermark or metadata request may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(5);

/// A lane the sampler reports on: its name (the `lane` label) and the
/// topic it consumes.
#[derive(Debug, Clone, Copy)]
pub struct Watched {
    /// The lane's name.
    pub lane: &'static str,
    /// Its request topic.
    pub topic: Topic,
}

/// Samples every gauge once.
pub async fn sample(
    pool: &PgPool,
    producer: &kafka::Producer,
    topics: &TopicNames,
    lanes: &[Watched],
) -> anyhow::Result<()> {
    sample_outbox(pool).await?;
    for watched in lanes {
        sample_lane(pool, producer, topics, *watched).await?;
    }
    let dead_letter_topics: Vec<String> = lanes.iter().map(|w| topics.dlq(w.topic)).collect();
    let producer = producer.current();
    let held = tokio::task::spawn_blocking(move || {
        dead_letter_topics
            .into_iter()
            .map(|topic| {
                let held = partitions(&producer, &topic)
                    .map(|all| all.iter().map(|(_, low, high)| high - low).sum::<i64>());
                (topic, held)
            })
            .collect::<Vec<_>>()
    })
    .await?;
    for (topic, count) in held {
        metrics::gauge!("dlq_records", "topic" => topic).set(count? as f64);
    }
    Ok(())
}

async fn sample_outbox(pool: &PgPool) -> Result<(), sqlx::Error> {
    let backlog = sqlx::query!(
        r#"SELECT count(*) AS "rows!",
                  COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS "age!"
           FROM outbox"#
    )
    .fetch_one(pool)
    .await?;
    metrics::gauge!("outbox_backlog_rows").set(backlog.rows as f64);
    metrics::gauge!("outbox_oldest_age_seconds").set(backlog.age);
    Ok(())
}

async fn sample_lane(
    pool: &PgPool,
    producer: &kafka::Producer,
    topics: &TopicNames,
    watched: Watched,
) -> anyhow::Result<()> {
    let topic = topics.name(watched.topic);
    let group = format!("{}booking-{}", topics.prefix(), watched.lane);
    let stored = sqlx::query!(
        "SELECT kafka_partition, next_offset FROM consumer_offsets
         WHERE consumer_group = $1 AND topic = $2",
        group,
        topic
    )
    .fetch_all(pool)
    .await?;
    let (producer, name) = (producer.current(), topic.clone());
    let marks = tokio::task::spawn_blocking(move || partitions(&producer, &name)).await??;
    for (partition, low, high) in marks {
        // A partition never consumed has nothing stored: all it holds is lag.
        let next = stored
            .iter()
            .find(|row| row.kafka_partition == partition)
            .map_or(low, |row| row.next_offset);
        let lag = (high - next.max(low)).max(0);
        metrics::gauge!("lane_consumer_lag", "lane" => watched.lane, "topic" => topic.clone(),
            "partition" => partition.to_string())
        .set(lag as f64);
    }
    Ok(())
}

/// Every partition of `topic` with its low and high watermarks.
fn partitions(
    producer: &FutureProducer,
    topic: &str,
) -> Result<Vec<(i32, i64, i64)>, rdkafka::error::KafkaError> {
    let client = producer.client();
    let metadata = client.fetch_metadata(Some(topic), KAFKA_TIMEOUT)?;
    let ids: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    ids.into_iter()
        .map(|id| {
            let (low, high) = client.fetch_watermarks(topic, id, KAFKA_TIMEOUT)?;
            Ok((id, low, high))
        })
        .collect()
}
