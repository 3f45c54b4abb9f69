//! Group membership and dispatch: one consumer per lane, one task per
//! assigned partition, offsets taken from Postgres on assignment.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use platform::CommonConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::log::KafkaPartition;
use super::partition::{PartitionId, PartitionWorker};
use super::settings::LaneSettings;
use super::{store, Lane, LaneInput};

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
    /// The lane's stop: ends a wait for the stored offsets.
    cancel: CancellationToken,
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

    /// The stored next offsets of `partitions`, read again (backing off
    /// up to 5 s) until the read succeeds: a partition started anywhere
    /// else would rewind to the start of its log, or skip records. While
    /// it waits the consumer takes no records, and past
    /// `max.poll.interval.ms` it leaves the group, so the other workers
    /// take the partitions over. None when the lane stops meanwhile.
    fn stored_offsets(&self, topic: &str, partitions: &[i32]) -> Option<HashMap<i32, i64>> {
        let mut delay = Duration::from_millis(100);
        loop {
            let load = tokio::time::timeout(
                Duration::from_secs(10),
                store::load_offsets(&self.pool, &self.group, topic, partitions),
            );
            match self.block_on(load) {
                Ok(Ok(offsets)) => return Some(offsets),
                Ok(Err(error)) => {
                    tracing::warn!(%error, group = %self.group, ?delay, "cannot read stored offsets; reading them again")
                }
                Err(_) => {
                    tracing::warn!(group = %self.group, ?delay, "reading stored offsets timed out; reading them again")
                }
            }
            metrics::counter!("lane_offset_read_retries_total").increment(1);
            let stopped = self.block_on(async {
                tokio::select! {
                    () = self.cancel.cancelled() => true,
                    () = tokio::time::sleep(delay) => false,
                }
            });
            if stopped {
                return None;
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Where a partition whose stored next offset is `next` resumes.
    ///
    /// - Beyond the end of the log: the log was recreated (topic deleted,
    ///   broker storage wiped) and offsets restarted, so every new record
    ///   would look applied already. Moves the stored offset to the log's
    ///   start and resumes there; request ids (and the stats lane's counted
    ///   orders) keep records applied before from applying twice.
    /// - Inside the log: one record early, at the last applied record, which
    ///   the first batch checks against the stored digest (a recreated log
    ///   that has grown past the stored offset holds another record there)
    ///   and then skips.
    /// - Before the log's start (retention deleted records not yet applied):
    ///   at the log's start; the first batch finds the gap, counts it and
    ///   records the lost requests.
    fn start_offset(
        &self,
        consumer: &BaseConsumer<Self>,
        topic: &str,
        partition: i32,
        next: i64,
    ) -> i64 {
        let Ok((low, high)) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .map_err(|error| tracing::warn!(%error, topic, partition, "cannot read watermarks"))
        else {
            return next;
        };
        let low = low.max(0);
        if next > high {
            tracing::error!(
                group = %self.group, topic, partition, stored = next, high_watermark = high,
                "stored offset is beyond the end of the log (topic recreated?); resuming from its start"
            );
            metrics::counter!("lane_log_resets_total").increment(1);
            let at = PartitionId {
                group: self.group.clone(),
                topic: topic.to_owned(),
                partition,
            };
            let reset = store::move_offset(&self.pool, &at, next, low);
            return match self.block_on(reset) {
                Ok(_) => low,
                Err(error) => {
                    tracing::error!(%error, "cannot move the stored offset; the partition stays where it was");
                    next
                }
            };
        }
        if next > low {
            next - 1
        } else {
            low
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
                    let Some(stored) = self.stored_offsets(topic, &ids) else {
                        // Stopping: take nothing on.
                        tracing::info!(group = %self.group, "stopped while reading stored offsets");
                        let _ = base_consumer.unassign();
                        return;
                    };
                    for partition in ids {
                        // Never consumed: start at the beginning. Otherwise
                        // resume where the last commit left off.
                        let offset = match stored.get(&partition) {
                            Some(next) => Offset::Offset(self.start_offset(
                                base_consumer,
                                topic,
                                partition,
                                *next,
                            )),
                            None => Offset::Beginning,
                        };
                        if let Err(error) = tpl.set_partition_offset(topic, partition, offset) {
                            tracing::error!(%error, topic, partition, "cannot set start offset");
                        }
                    }
                }
                tracing::info!(group = %self.group, ?partitions, "partitions assigned");
                if let Err(error) = base_consumer.assign(tpl) {
                    tracing::error!(%error, group = %self.group, "assign failed");
                }
                // A partition paused under an earlier assignment (its task
                // was behind) starts afresh.
                let _ = base_consumer.resume(tpl);
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

/// A partition's task and what the dispatcher holds for it.
struct PartitionHandle {
    tx: mpsc::Sender<OwnedMessage>,
    /// Records the task had no room for yet, in order. While any wait here
    /// the partition is paused in the consumer, so the backlog is bounded
    /// by what was fetched before the pause.
    backlog: VecDeque<OwnedMessage>,
    paused: bool,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// Whether a partition's task still takes records.
enum Offered {
    Taken,
    Stopped,
}

impl PartitionHandle {
    /// Hands `message` to the task, or queues it and pauses the partition
    /// when the task is behind. Never waits: one slow partition must not
    /// hold up the others.
    fn offer(&mut self, message: OwnedMessage, pause: impl FnOnce()) -> Offered {
        if self.backlog.is_empty() {
            match self.tx.try_send(message) {
                Ok(()) => return Offered::Taken,
                Err(mpsc::error::TrySendError::Closed(_)) => return Offered::Stopped,
                Err(mpsc::error::TrySendError::Full(message)) => self.backlog.push_back(message),
            }
        } else {
            self.backlog.push_back(message);
        }
        if !self.paused {
            pause();
            self.paused = true;
        }
        Offered::Taken
    }

    /// Moves backlog records to the task while it has room; true when the
    /// backlog is empty (the partition can resume).
    fn drain(&mut self) -> Result<bool, ()> {
        while let Some(message) = self.backlog.pop_front() {
            match self.tx.try_send(message) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(message)) => {
                    self.backlog.push_front(message);
                    return Ok(false);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(()),
            }
        }
        Ok(true)
    }
}

/// Retires the task of `partition`, which stopped (its seek to the stored
/// offset failed), so the partition's next record starts a new one, which
/// finds the gap to its stored offset and seeks again. A partition paused
/// for the old task's backlog is resumed: otherwise no record would come to
/// start the new task, and the partition would stay paused for good.
fn restart<C: Consumer<LaneContext>>(
    partitions: &mut HashMap<i32, PartitionHandle>,
    partition: i32,
    retired: &mut Vec<JoinHandle<()>>,
    consumer: &C,
    topic: &str,
) {
    let Some(handle) = partitions.remove(&partition) else {
        return;
    };
    metrics::counter!("lane_partition_restarts_total").increment(1);
    tracing::warn!(
        topic,
        partition,
        "the partition's task stopped; a new one takes the next record"
    );
    retired.push(handle.task);
    if handle.paused {
        if let Err(error) = consumer.resume(&one_partition(topic, partition)) {
            tracing::error!(%error, topic, partition, "cannot resume the partition");
        }
    }
}

fn one_partition(topic: &str, partition: i32) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    tpl
}

/// Runs `lane` until `cancel` fires: joins the lane's consumer group, applies
/// records partition by partition, then drains and leaves the group.
pub async fn run_lane<L: Lane>(
    lane: L,
    common: &CommonConfig,
    settings: LaneSettings,
    pool: PgPool,
    producer: platform::kafka::Producer,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let names = common.topics();
    let topic = names.name(L::Input::TOPIC);
    let dlq_topic = names.dlq(L::Input::TOPIC);
    let group = format!("{}booking-{}", names.prefix(), L::NAME);
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let context = LaneContext {
        pool: pool.clone(),
        group: group.clone(),
        events: events_tx,
        runtime: tokio::runtime::Handle::current(),
        cancel: cancel.clone(),
    };
    let consumer: Arc<StreamConsumer<LaneContext>> =
        Arc::new(platform::kafka::consumer_config(common, &group).create_with_context(context)?);
    consumer.subscribe(&[&topic])?;
    tracing::info!(lane = L::NAME, %topic, %group, "lane started");

    let mut partitions: HashMap<i32, PartitionHandle> = HashMap::new();
    let mut retired: Vec<JoinHandle<()>> = Vec::new();
    let mut backlog_tick = tokio::time::interval(Duration::from_millis(20));
    backlog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let any_paused = partitions.values().any(|h| h.paused);
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
            _ = backlog_tick.tick(), if any_paused => {
                let mut stopped = Vec::new();
                for (partition, handle) in partitions.iter_mut().filter(|(_, h)| h.paused) {
                    match handle.drain() {
                        Ok(true) => {
                            handle.paused = false;
                            if let Err(error) = consumer.resume(&one_partition(&topic, *partition)) {
                                tracing::warn!(%error, partition, "cannot resume the partition");
                            }
                        }
                        Ok(false) => {}
                        Err(()) => stopped.push(*partition),
                    }
                }
                for partition in stopped {
                    restart(&mut partitions, partition, &mut retired, &*consumer, &topic);
                }
            }
            message = consumer.recv() => match message {
                Ok(message) => {
                    let message = message.detach();
                    let partition = message.partition();
                    let handle = partitions.entry(partition).or_insert_with(|| {
                        let (tx, rx) = mpsc::channel(settings.batch_max * 2);
                        let task_cancel = cancel.child_token();
                        let log = KafkaPartition {
                            consumer: consumer.clone(),
                            producer: producer.clone(),
                            lane: L::NAME,
                            topic: topic.clone(),
                            dlq_topic: dlq_topic.clone(),
                            partition,
                            produce_timeout: settings.produce_timeout,
                            pool: pool.clone(),
                        };
                        let id = PartitionId {
                            group: group.clone(),
                            topic: topic.clone(),
                            partition,
                        };
                        let worker = PartitionWorker::new(lane.clone(), pool.clone(), log, id, settings);
                        let task = tokio::spawn(worker.run(rx, task_cancel.clone()));
                        PartitionHandle {
                            tx,
                            backlog: VecDeque::new(),
                            paused: false,
                            cancel: task_cancel,
                            task,
                        }
                    });
                    let pause = || {
                        metrics::counter!("lane_partition_pauses_total", "lane" => L::NAME).increment(1);
                        if let Err(error) = consumer.pause(&one_partition(&topic, partition)) {
                            tracing::warn!(%error, partition, "cannot pause the partition");
                        }
                    };
                    if let Offered::Stopped = handle.offer(message, pause) {
                        restart(&mut partitions, partition, &mut retired, &*consumer, &topic);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, lane = L::NAME, "consume error");
                    if !platform::lifecycle::pause(&cancel, Duration::from_millis(200)).await {
                        break;
                    }
                }
            },
        }
        retired.retain(|task| !task.is_finished());
    }

    tracing::info!(lane = L::NAME, "lane draining");
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
        tracing::warn!(lane = L::NAME, "partition tasks did not finish in time");
    }
    consumer.unsubscribe();
    tokio::task::block_in_place(|| drop(consumer));
    tracing::info!(lane = L::NAME, "lane stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use testkit::TestEnv;

    /// Retiring a stopped task resumes its partition when the partition
    /// was paused for the task's backlog: the partition's next record must
    /// reach the consumer, or no new task would ever start for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_tasks_paused_partition_is_resumed() -> anyhow::Result<()> {
        let env = TestEnv::new().await?;
        let topic = env.topic(schemas::Topic::ChargeRequests);
        let group = format!("{}restart-test", env.common.topic_prefix);
        let (events, _events) = mpsc::unbounded_channel();
        let context = LaneContext {
            pool: env.pool.clone(),
            group: group.clone(),
            events,
            runtime: tokio::runtime::Handle::current(),
            cancel: CancellationToken::new(),
        };
        let consumer: BaseConsumer<LaneContext> =
            platform::kafka::consumer_config(&env.common, &group).create_with_context(context)?;
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&topic, 0, Offset::Beginning)?;
        consumer.assign(&assignment)?;
        consumer.pause(&one_partition(&topic, 0))?;
        let (tx, _rx) = mpsc::channel(1);
        let mut partitions = HashMap::from([(
            0,
            PartitionHandle {
                tx,
                backlog: VecDeque::new(),
                paused: true,
                cancel: CancellationToken::new(),
                task: tokio::spawn(async {}),
            },
        )]);
        restart(&mut partitions, 0, &mut Vec::new(), &consumer, &topic);
        assert!(partitions.is_empty(), "the stopped task is retired");

        env.produce(schemas::Topic::ChargeRequests, Some(0), "k", b"next")
            .await?;
        let reached = tokio::task::block_in_place(|| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
                    return message.payload() == Some(&b"next"[..]);
                }
            }
            false
        });
        assert!(reached, "the partition stayed paused");
        Ok(())
    }
}
