//! Kafka access for tests and tools: produce a raw record (to a chosen
//! partition), read a whole topic from its start, delete a log's records,
//! recreate a topic; and the same on a test's own topics ([`TestEnv`]).

use std::time::Duration;

use platform::CommonConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use schemas::requests::ChargeBalance;
use schemas::{Request, RequestEnvelope, Topic};
use uuid::Uuid;

use crate::TestEnv;

/// A record read back from a topic; the reader itself is the platform's
/// (the workers' dead-letter commands use it too).
pub use platform::kafka::{read_all, watermarks, StoredRecord as Record};

/// Produces one record to `topic` (full name), to `partition` if given
/// (else by key), and waits for the acknowledgement.
pub async fn produce(
    producer: &platform::kafka::Producer,
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
        .current()
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

/// A charge of `amount` to `user_id` as request `id`, as the gateway
/// publishes it (with a fresh timestamp, which a test may change).
pub fn charge_envelope(id: Uuid, user_id: i64, amount: i64) -> RequestEnvelope {
    RequestEnvelope::new(
        id,
        Request::ChargeBalance(ChargeBalance { user_id, amount }),
    )
}

/// How long a test waits for dead letters.
const DEAD_LETTER_WAIT: Duration = Duration::from_secs(30);

/// The topics of one test, by their names in its namespace.
impl TestEnv {
    /// Full name of `topic`.
    pub fn topic(&self, topic: Topic) -> String {
        self.common.topics().name(topic)
    }

    /// Full name of `topic`'s dead-letter topic.
    pub fn dlq(&self, topic: Topic) -> String {
        self.common.topics().dlq(topic)
    }

    /// Produces one record to `topic` under `key` (to `partition` if given,
    /// else by key) with a producer of its own, and waits for the
    /// acknowledgement; returns its partition and offset.
    pub async fn produce(
        &self,
        topic: Topic,
        partition: Option<i32>,
        key: &str,
        payload: &[u8],
    ) -> anyhow::Result<(i32, i64)> {
        let producer = platform::kafka::producer(&self.common)?;
        produce(&producer, &self.topic(topic), partition, key, payload, &[]).await
    }

    /// Deletes `topic` and creates it again, empty (see [`recreate`]).
    pub async fn recreate_topic(&self, topic: Topic) -> anyhow::Result<()> {
        recreate(&self.common, &self.topic(topic)).await
    }

    /// The dead letters of `topic` so far.
    pub fn dead_letters(&self, topic: Topic) -> anyhow::Result<Vec<Record>> {
        Ok(read_all(&self.common, &self.dlq(topic))?)
    }

    /// Waits (30 s at most) until `topic` has at least `count` dead
    /// letters; returns them all.
    pub async fn wait_dead_letters(
        &self,
        topic: Topic,
        count: usize,
    ) -> anyhow::Result<Vec<Record>> {
        crate::eventually("the dead letters", DEAD_LETTER_WAIT, || async {
            let letters = self.dead_letters(topic)?;
            Ok((letters.len() >= count).then_some(letters))
        })
        .await
    }
}
