//! Group membership and dispatch: one consumer per lane, one task per
//! assigned partition, offsets taken from Postgres on assignment.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use platform::CommonConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::batch::PartitionWorker;
use super::{store, Lane};

/// Batching and delivery settings of a lane.
#[derive(Debug, Clone, Copy)]
pub struct LaneSettings {
    /// Most records in one transaction.
    pub batch_max: usize,
    /// Longest wait to fill a batch once it has a record.
    pub batch_wait: Duration,
    /// How long a dead-letter produce may wait for the broker.
    pub produce_timeout: Duration,
}

/// Partition changes the rebalance callback reports to the dispatcher.
enum Rebalanced {
    Revoked(Vec<i32>),
}

/// Consumer context: sets each assigned partition's start offset from
/// Postgres before fetching begins, and logs rebalances.
pub(crate) struct LaneContext {
    pool: PgPool,
    group: String,
    events: mpsc::UnboundedSender<Rebalanced>,
    runtime: tokio::runtime::Handle,
}

impl ClientContext for LaneContext {}

impl LaneContext {
    /// Runs `future` to completion from the rebalance callback, which runs
    /// inside `recv()` on a runtime thread: blocks that thread without
    /// stalling the runtime's other tasks.
    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => tokio::task::block_in_place(|| handle.block_on(future)),
            Err(_) => self.runtime.block_on(future),
        }
    }

    fn stored_offsets(&self, topic: &str, partitions: &[i32]) -> Option<HashMap<i32, i64>> {
        let load = tokio::time::timeout(
            Duration::from_secs(10),
            store::load_offsets(&self.pool, &self.group, topic, partitions),
        );
        match self.block_on(load) {
            Ok(Ok(offsets)) => Some(offsets),
            Ok(Err(error)) => {
                tracing::warn!(%error, group = %self.group, "cannot read stored offsets; batches will reconcile");
                None
            }
            Err(_) => {
                tracing::warn!(group = %self.group, "reading stored offsets timed out; batches will reconcile");
                None
            }
        }
    }

    /// When the stored next offset lies beyond the end of the partition's
    /// log, the log was recreated (topic deleted, broker storage wiped):
    /// offsets restarted, and every new record would look applied already.
    /// Moves the stored offset to the log's start and returns it; request
    /// ids (and the stats lane's counted orders) keep records that were
    /// applied before from applying twice.
    fn log_reset(
        &self,
        consumer: &BaseConsumer<Self>,
        topic: &str,
        partition: i32,
        next: i64,
    ) -> Option<i64> {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .map_err(|error| tracing::warn!(%error, topic, partition, "cannot read watermarks"))
            .ok()?;
        if next <= high {
            return None;
        }
        let start = low.max(0);
        tracing::error!(
            group = %self.group, topic, partition, stored = next, high_watermark = high,
            "stored offset is beyond the end of the log (topic recreated?); resuming from its start"
        );
        metrics::counter!("lane_log_resets_total").increment(1);
        let reset = store::reset_offset(&self.pool, &self.group, topic, partition, start);
        match self.block_on(reset) {
            Ok(()) => Some(start),
            Err(error) => {
                tracing::error!(%error, "cannot move the stored offset; the partition stays where it was");
                None
            }
        }
    }
}

impl ConsumerContext for LaneContext {
    fn rebalance(
        &self,
        base_consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut by_topic: HashMap<&str, Vec<i32>> = HashMap::new();
                for (topic, partition) in &partitions {
                    by_topic.entry(topic).or_default().push(*partition);
                }
                for (topic, ids) in by_topic {
                    let mut stored = self.stored_offsets(topic, &ids).unwrap_or_default();
                    for partition in ids {
                        if let Some(next) = stored.get(&partition).copied() {
                            if let Some(start) =
                                self.log_reset(base_consumer, topic, partition, next)
                            {
                                stored.insert(partition, start);
                            }
                        }
                        // Never consumed: start at the beginning. Otherwise
                        // resume exactly where the last commit left off.
                        let offset = stored
                            .get(&partition)
                            .map_or(Offset::Beginning, |n| Offset::Offset(*n));
                        if let Err(error) = tpl.set_partition_offset(topic, partition, offset) {
                            tracing::error!(%error, topic, partition, "cannot set start offset");
                        }
                    }
                }
                tracing::info!(group = %self.group, ?partitions, "partitions assigned");
                if let Err(error) = base_consumer.assign(tpl) {
                    tracing::error!(%error, group = %self.group, "assign failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(group = %self.group, ?partitions, "partitions revoked");
                let _ = self.events.send(Rebalanced::Revoked(
                    partitions.iter().map(|(_, p)| *p).collect(),
                ));
                if let Err(error) = base_consumer.unassign() {
                    tracing::error!(%error, group = %self.group, "unassign failed");
                }
            }
            other => {
                tracing::error!(error = ?other, group = %self.group, "rebalance error");
                let _ = base_consumer.unassign();
            }
        }
    }
}

struct PartitionHandle {
    tx: mpsc::Sender<OwnedMessage>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// Runs `lane` until `cancel` fires: joins the lane's consumer group, applies
/// records partition by partition, then drains and leaves the group.
pub async fn run_lane<L: Lane>(
    lane: Arc<L>,
    common: &CommonConfig,
    settings: LaneSettings,
    pool: PgPool,
    producer: FutureProducer,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let names = common.topics();
    let topic = names.name(lane.topic());
    let dlq_topic = names.dlq(lane.topic());
    let group = format!("{}booking-{}", names.prefix(), lane.name());
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let context = LaneContext {
        pool: pool.clone(),
        group: group.clone(),
        events: events_tx,
        runtime: tokio::runtime::Handle::current(),
    };
    let consumer: Arc<StreamConsumer<LaneContext>> =
        Arc::new(platform::kafka::consumer_config(common, &group).create_with_context(context)?);
    consumer.subscribe(&[&topic])?;
    tracing::info!(lane = lane.name(), %topic, %group, "lane started");

    let mut partitions: HashMap<i32, PartitionHandle> = HashMap::new();
    let mut retired: Vec<JoinHandle<()>> = Vec::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(event) = events_rx.recv() => match event {
                Rebalanced::Revoked(revoked) => {
                    for partition in revoked {
                        if let Some(handle) = partitions.remove(&partition) {
                            handle.cancel.cancel();
                            retired.push(handle.task);
                        }
                    }
                }
            },
            message = consumer.recv() => match message {
                Ok(message) => {
                    let message = message.detach();
                    let partition = message.partition();
                    let handle = partitions.entry(partition).or_insert_with(|| {
                        let (tx, rx) = mpsc::channel(settings.batch_max * 2);
                        let task_cancel = cancel.child_token();
                        let worker = PartitionWorker {
                            lane: lane.clone(),
                            pool: pool.clone(),
                            producer: producer.clone(),
                            consumer: consumer.clone(),
                            group: group.clone(),
                            topic: topic.clone(),
                            dlq_topic: dlq_topic.clone(),
                            partition,
                            settings,
                        };
                        let task = tokio::spawn(worker.run(rx, task_cancel.clone()));
                        PartitionHandle { tx, cancel: task_cancel, task }
                    });
                    if handle.tx.send(message).await.is_err() {
                        // The task stopped (seek failure); start afresh from
                        // the stored offset on the next rebalance.
                        if let Some(handle) = partitions.remove(&partition) {
                            retired.push(handle.task);
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, lane = lane.name(), "consume error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
        }
        retired.retain(|task| !task.is_finished());
    }

    tracing::info!(lane = lane.name(), "lane draining");
    for handle in partitions.values() {
        handle.cancel.cancel();
    }
    let tasks: Vec<JoinHandle<()>> = partitions
        .into_values()
        .map(|h| h.task)
        .chain(retired)
        .collect();
    if tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(tasks))
        .await
        .is_err()
    {
        tracing::warn!(lane = lane.name(), "partition tasks did not finish in time");
    }
    consumer.unsubscribe();
    tokio::task::block_in_place(|| drop(consumer));
    tracing::info!(lane = lane.name(), "lane stopped");
    Ok(())
}
