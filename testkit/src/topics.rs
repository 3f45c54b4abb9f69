//! Kafka access for tests and tools: produce a raw record (to a chosen
//! partition), read a whole topic from its start, delete a log's records,
//! recreate a topic.

use std::time::Duration;

use platform::CommonConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// A record read back from a topic; the reader itself is the platform's
/// (the workers' dead-letter commands use it too).
pub use platform::kafka::{read_all, watermarks, StoredRecord as Record};

/// Produces one record to `topic` (full name), to `partition` if given
/// (else by key), and waits for the acknowledgement.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    key: &str,
    payload: &[u8],
    headers: &[(&str, &str)],
) -> anyhow::Result<(i32, i64)> {
    let mut owned = OwnedHeaders::new();
    for (name, value) in headers {
        owned = owned.insert(Header {
            key: name,
            value: Some(value.as_bytes()),
        });
    }
    let mut record = FutureRecord::to(topic)
        .key(key.as_bytes())
        .payload(payload)
        .headers(owned);
    if let Some(partition) = partition {
        record = record.partition(partition);
    }
    let delivery = producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| anyhow::anyhow!("produce to {topic}: {e}"))?;
    Ok((delivery.partition, delivery.offset))
}

/// Deletes every record of every partition of `topic` below its high
/// watermark (what retention does to old segments).
pub async fn delete_all_records(common: &CommonConfig, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        platform::kafka::client_config(common).create()?;
    let mut offsets = TopicPartitionList::new();
    for (partition, _, high) in watermarks(common, topic)? {
        offsets.add_partition_offset(topic, partition, Offset::Offset(high))?;
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let result = admin.delete_records(&offsets, &options).await?;
    for element in result.elements() {
        if let Err(error) = element.error() {
            anyhow::bail!(
                "delete records of {topic} [{}]: {error}",
                element.partition()
            );
        }
    }
    Ok(())
}

/// Deletes `topic` and creates every missing topic of `common`'s deployment
/// again, waiting until the new `topic` exists and is empty (the broker may
/// need a moment to forget the old one): a topic recreated under a stack.
pub async fn recreate(common: &CommonConfig, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        platform::kafka::client_config(common).create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.delete_topics(&[topic], &options).await? {
        result.map_err(|(t, e)| anyhow::anyhow!("deleting {t}: {e}"))?;
    }
    crate::eventually(
        "the topic to be recreated",
        Duration::from_secs(30),
        || async {
            platform::kafka::create_topics(common, &common.topics()).await?;
            let marks = watermarks(common, topic)?;
            Ok((!marks.is_empty() && marks.iter().all(|(_, _, high)| *high == 0)).then_some(()))
        },
    )
    .await
}
