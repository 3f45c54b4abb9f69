//! Kafka clients: the idempotent producer, consumer settings, topic creation,
//! a produce call that waits for the broker's acknowledgement, and a reader
//! of a whole topic (dead letters for operators, event topics for checks).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use schemas::{RequestEnvelope, TopicNames};

use crate::CommonConfig;

/// Why a record could not be delivered.
#[derive(Debug, thiserror::Error)]
#[error("kafka did not acknowledge the record on {topic}: {source}")]
pub struct ProduceError {
    /// Topic of the record.
    pub topic: String,
    /// The broker or client error.
    #[source]
    pub source: KafkaError,
}

impl ProduceError {
    /// Whether producing the same record again can never succeed: the
    /// record is too large or malformed for the broker or the producer, or
    /// the topic is invalid or forbidden. Timeouts, an unreachable broker,
    /// full queues and a producer that failed for good (the next send goes
    /// through a new one) are transient.
    pub fn is_permanent(&self) -> bool {
        match &self.source {
            KafkaError::MessageProduction(code) => matches!(
                code,
                RDKafkaErrorCode::MessageSizeTooLarge
                    | RDKafkaErrorCode::InvalidMessageSize
                    | RDKafkaErrorCode::InvalidMessage
                    | RDKafkaErrorCode::InvalidRecord
                    | RDKafkaErrorCode::InvalidTopic
                    | RDKafkaErrorCode::TopicAuthorizationFailed
            ),
            _ => false,
        }
    }
}

impl ProduceError {
    /// Whether the record certainly never reached a broker: the client
    /// refused it before sending (its local queue full, larger than the
    /// producer takes, an unknown topic or partition). Any other failure,
    /// a timeout above all, is ambiguous: the broker may have written the
    /// record and only its acknowledgement been lost.
    pub fn never_sent(&self) -> bool {
        match &self.source {
            KafkaError::MessageProduction(code) => matches!(
                code,
                RDKafkaErrorCode::QueueFull
                    | RDKafkaErrorCode::MessageSizeTooLarge
                    | RDKafkaErrorCode::UnknownTopic
                    | RDKafkaErrorCode::UnknownPartition
                    | RDKafkaErrorCode::InvalidArgument
            ),
            _ => false,
        }
    }
}

/// Why `producer` failed for good, if it has: after a fatal error (for
/// example the idempotent producer's sequence refused after its topic was
/// recreated, or a broker that lost track of it) every later send of that
/// producer fails.
fn fatal_reason(producer: &FutureProducer) -> Option<String> {
    producer
        .client()
        .fatal_error()
        .map(|(code, reason)| format!("{code:?}: {reason}"))
}

/// The process's idempotent producer (acks=all), renewed when it fails for
/// good: the send that met the fatal error fails (the caller answers or
/// retries as for any failed send), and the next one goes through a new
/// producer, with a new producer id and sequence numbers the broker takes
/// from the start. Clones share one producer.
#[derive(Clone)]
pub struct Producer {
    settings: ClientConfig,
    current: Arc<RwLock<FutureProducer>>,
}

impl Producer {
    /// A producer with `settings`.
    fn create(settings: ClientConfig) -> Result<Self, KafkaError> {
        let current: FutureProducer = settings.create()?;
        Ok(Self {
            settings,
            current: Arc::new(RwLock::new(current)),
        })
    }

    /// The producer in use now.
    pub fn current(&self) -> FutureProducer {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Why the producer in use failed for good, if it has (until the next
    /// send renews it).
    pub fn fatal_error(&self) -> Option<String> {
        fatal_reason(&self.current())
    }

    /// Replaces `failed` if it is still the producer in use and has failed
    /// for good. A producer that cannot be built (an invalid setting, which
    /// the first build would have refused) leaves the failed one in place.
    pub(crate) fn renew(&self, failed: &FutureProducer) {
        let Some(reason) = fatal_reason(failed) else {
            return;
        };
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.client().native_ptr() != failed.client().native_ptr() {
            return; // Another send renewed it already.
        }
        match self.settings.create::<FutureProducer>() {
            Ok(renewed) => {
                *current = renewed;
                metrics::counter!("kafka_producer_renewals_total").increment(1);
                tracing::warn!(%reason, "the producer failed for good; publishing through a new one");
            }
            Err(error) => {
                tracing::error!(%reason, %error, "the producer failed for good and cannot be renewed");
            }
        }
    }
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Partition of the record.
    pub partition: i32,
    /// Offset of the record.
    pub offset: i64,
}

/// A record to produce: topic, key, JSON payload and headers.
#[derive(Debug, Clone)]
pub struct OutgoingRecord {
    /// Full topic name.
    pub topic: String,
    /// Partition key.
    pub key: String,
    /// Serialized payload.
    pub payload: Vec<u8>,
    /// Header name/value pairs.
    pub headers: Vec<(&'static str, String)>,
}

impl OutgoingRecord {
    /// The record of a request: its topic and key, the envelope as JSON, and
    /// the request id as `request-id` and W3C `traceparent` headers.
    pub fn request(
        topics: &TopicNames,
        envelope: &RequestEnvelope,
    ) -> Result<Self, serde_json::Error> {
        let id = envelope.request_id;
        Ok(Self {
            topic: topics.name(envelope.request.topic()),
            key: envelope.request.key(),
            payload: serde_json::to_vec(envelope)?,
            headers: vec![
                (schemas::HEADER_REQUEST_ID, id.to_string()),
                (schemas::HEADER_TRACEPARENT, schemas::traceparent_for(id)),
            ],
        })
    }
}

/// Base client settings.
pub fn client_config(config: &CommonConfig) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &config.kafka_brokers)
        .set("client.id", "booking")
        .set("broker.address.family", "v4")
        .set("socket.keepalive.enable", "true")
        // Small requests must not wait for Nagle's algorithm (tens of ms
        // against delayed ACKs on loopback).
        .set("socket.nagle.disable", "true");
    cc
}

/// The idempotent producer (acks=all), renewed after a fatal error
/// ([`Producer`]). Delivery fails after `kafka_produce_timeout_ms`, so no
/// caller waits forever.
pub fn producer(config: &CommonConfig) -> Result<Producer, KafkaError> {
    let mut settings = client_config(config);
    settings
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", config.kafka_linger_ms.to_string())
        .set(
            "message.timeout.ms",
            config.kafka_produce_timeout_ms.to_string(),
        )
        .set("compression.type", "none")
        .set(
            "message.max.bytes",
            config.kafka_message_max_bytes.to_string(),
        );
    Producer::create(settings)
}

/// Consumer settings for a lane's group: offsets live in Postgres, so Kafka
/// commits are off.
pub fn consumer_config(config: &CommonConfig, group: &str) -> ClientConfig {
    let mut cc = client_config(config);
    cc.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "session.timeout.ms",
            config.kafka_session_timeout_ms.to_string(),
        )
        // A third of the shortest session or less, as Kafka advises.
        .set("heartbeat.interval.ms", "1000")
        .set("fetch.wait.max.ms", config.kafka_fetch_wait_ms.to_string())
        .set("fetch.min.bytes", "1")
        .set("enable.partition.eof", "false");
    cc
}

/// Produces one record and waits for the acknowledgement; a producer that
/// failed for good on it is renewed for the next record.
pub async fn produce(
    producer: &Producer,
    record: &OutgoingRecord,
    timeout: Duration,
) -> Result<Delivered, ProduceError> {
    let current = producer.current();
    let produced = produce_with(&current, record, timeout).await;
    if produced.is_err() {
        producer.renew(&current);
    }
    produced
}

/// Produces one record through `producer` and waits for the
/// acknowledgement.
async fn produce_with(
    producer: &FutureProducer,
    record: &OutgoingRecord,
    timeout: Duration,
) -> Result<Delivered, ProduceError> {
    let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
    for (name, value) in &record.headers {
        headers = headers.insert(Header {
            key: name,
            value: Some(value.as_bytes()),
        });
    }
    let future_record = FutureRecord::to(&record.topic)
        .key(record.key.as_bytes())
        .payload(&record.payload)
        .headers(headers);
    match producer.send(future_record, Timeout::After(timeout)).await {
        Ok(delivery) => Ok(Delivered {
            partition: delivery.partition,
            offset: delivery.offset,
        }),
        Err((source, _)) => Err(ProduceError {
            topic: record.topic.clone(),
            source,
        }),
    }
}

/// Whether the broker answers a metadata request within `timeout`.
pub fn broker_reachable(producer: &Producer, timeout: Duration) -> bool {
    producer
        .current()
        .client()
        .fetch_metadata(None, Timeout::After(timeout))
        .is_ok()
}

/// Creates every topic of the deployment that does not exist yet, with
/// the configured replication and `min.insync.replicas`, and a retention of
/// [`CommonConfig::retention`]: a request record is kept as long as its
/// request row may be (an older one would be skipped), and an event as
/// long as the request that caused it can be looked up.
pub async fn create_topics(config: &CommonConfig, names: &TopicNames) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client_config(config).create()?;
    let wanted = names.all_with_partitions();
    let retention_ms = config.retention().as_millis().to_string();
    let min_insync = config.kafka_min_insync_replicas.to_string();
    let new_topics: Vec<NewTopic<'_>> = wanted
        .iter()
        .map(|(name, partitions)| {
            NewTopic::new(
                name,
                *partitions,
                TopicReplication::Fixed(config.kafka_replication_factor),
            )
            .set("retention.ms", &retention_ms)
            .set("min.insync.replicas", &min_insync)
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics(new_topics.iter(), &options).await?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                tracing::error!(%topic, ?code, "topic creation failed");
                return Err(KafkaError::AdminOp(code));
            }
        }
    }
    // Kafka acknowledges a creation once the controller has it; a broker
    // learns the new partitions' leaders a moment later, and answers
    // NotLeaderForPartition meanwhile. Return once every partition has a
    // leader that answers for its offsets, so what comes next (producers,
    // consumers, watermarks) finds the topics ready.
    let names: Vec<String> = wanted.iter().map(|(name, _)| name.clone()).collect();
    let probe: BaseConsumer = client_config(config).create()?;
    tokio::task::spawn_blocking(move || wait_for_leaders(&probe, &names, Duration::from_secs(30)))
        .await
        .unwrap_or(Ok(()))
}

/// Waits until every partition of `topics` has a leader in the broker's
/// metadata and answers for its offsets, or `limit` passed.
fn wait_for_leaders(
    client: &BaseConsumer,
    topics: &[String],
    limit: Duration,
) -> Result<(), KafkaError> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let metadata = client.fetch_metadata(None, Duration::from_secs(10))?;
        let ready = topics.iter().all(|name| {
            metadata.topics().iter().any(|t| {
                t.name() == name
                    && t.error().is_none()
                    && !t.partitions().is_empty()
                    && t.partitions()
                        .iter()
                        .all(|p| p.leader() >= 0 && p.error().is_none())
            })
        });
        // The metadata can name a leader before that broker serves the
        // partition: its offsets must answer too.
        let serving = ready
            && metadata
                .topics()
                .iter()
                .filter(|t| topics.iter().any(|name| name == t.name()))
                .all(|t| {
                    t.partitions().iter().all(|p| {
                        !matches!(
                            client.fetch_watermarks(t.name(), p.id(), Duration::from_secs(5)),
                            Err(error) if error.rdkafka_error_code().is_some_and(is_transient)
                        )
                    })
                });
        if serving || std::time::Instant::now() >= deadline {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct StoredRecord {
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

impl StoredRecord {
    /// The payload as JSON, if it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.payload).ok()
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Why a topic could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The broker or client failed.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The records up to the high watermarks did not all arrive in time.
    #[error("reading {topic} timed out with {read} of {expected} records")]
    TimedOut {
        /// Topic.
        topic: String,
        /// Records read.
        read: usize,
        /// Records the watermarks promised.
        expected: i64,
    },
}

/// Whether a consumer error is one the client recovers from by itself (a
/// broker unreachable for a while, a partition's leader moving).
fn is_transient(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::NotLeaderForPartition
            | RDKafkaErrorCode::LeaderNotAvailable
            | RDKafkaErrorCode::NetworkException
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::OperationTimedOut
    )
}

/// Partitions of `topic` and their (low, high) watermarks, in partition order.
pub fn watermarks(config: &CommonConfig, topic: &str) -> Result<Vec<(i32, i64, i64)>, KafkaError> {
    let consumer: BaseConsumer = client_config(config).create()?;
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

/// Every record `topic` holds now, read from the start of each partition up
/// to its high watermark with a fresh client (no consumer group state), in
/// offset order per partition. Blocks; fails after a minute.
pub fn read_all(config: &CommonConfig, topic: &str) -> Result<Vec<StoredRecord>, ReadError> {
    let marks = watermarks(config, topic)?;
    let consumer: BaseConsumer = client_config(config)
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
        if std::time::Instant::now() >= deadline {
            return Err(ReadError::TimedOut {
                topic: topic.to_owned(),
                read: records.len(),
                expected: marks.iter().map(|(_, low, high)| high - low).sum(),
            });
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = match message {
            Ok(message) => message,
            // One broker of a cluster down (a bootstrap address refusing,
            // a leader moving) is reported here, and the client carries on
            // with the others: keep reading until the deadline.
            Err(KafkaError::MessageConsumption(code)) if is_transient(code) => continue,
            Err(error) => return Err(error.into()),
        };
        let mut headers = HashMap::new();
        if let Some(hs) = message.headers() {
            for h in hs.iter() {
                if let Some(v) = h.value {
                    headers.insert(h.key.to_owned(), String::from_utf8_lossy(v).into_owned());
                }
            }
        }
        next.insert(message.partition(), message.offset() + 1);
        records.push(StoredRecord {
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
