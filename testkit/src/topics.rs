//! Kafka access for tests and tools: produce a raw record (to a chosen
//! partition), read a whole topic from its start, delete a log's records.

use std::collections::HashMap;
use std::time::Duration;

use platform::CommonConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key, as text.
    pub key: Option<String>,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// Headers, as text.
    pub headers: HashMap<String, String>,
}

impl Record {
    /// The payload as JSON, if it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.payload).ok()
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

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

/// Partitions of `topic` and their (low, high) watermarks.
pub fn watermarks(common: &CommonConfig, topic: &str) -> anyhow::Result<Vec<(i32, i64, i64)>> {
    let consumer: BaseConsumer = platform::kafka::client_config(common).create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut out = Vec::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
            out.push((p.id(), low.max(0), high));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Every record `topic` holds now, read from the start of each partition
/// up to its high watermark with a fresh client (no consumer group state),
/// in offset order per partition.
pub fn read_all(common: &CommonConfig, topic: &str) -> anyhow::Result<Vec<Record>> {
    let marks = watermarks(common, topic)?;
    let consumer: BaseConsumer = platform::kafka::client_config(common)
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "50")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    let mut wanted: HashMap<i32, i64> = HashMap::new();
    for (partition, low, high) in &marks {
        if high > low {
            assignment.add_partition_offset(topic, *partition, Offset::Offset(*low))?;
            wanted.insert(*partition, *high);
        }
    }
    let mut records = Vec::new();
    if wanted.is_empty() {
        return Ok(records);
    }
    consumer.assign(&assignment)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut next: HashMap<i32, i64> = HashMap::new();
    while wanted
        .iter()
        .any(|(p, high)| next.get(p).copied().unwrap_or(0) < *high)
    {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "reading {topic} timed out"
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message?;
        let mut headers = HashMap::new();
        if let Some(hs) = message.headers() {
            for h in hs.iter() {
                if let Some(v) = h.value {
                    headers.insert(h.key.to_owned(), String::from_utf8_lossy(v).into_owned());
                }
            }
        }
        next.insert(message.partition(), message.offset() + 1);
        records.push(Record {
            partition: message.partition(),
            offset: message.offset(),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    Ok(records)
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
