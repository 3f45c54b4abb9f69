//! The faults, how each is injected and ended, and the probe that measures
//! how long outcomes take to flow again after it.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;
use testkit::api::User;

use crate::stack::{Stack, WORKERS};

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[clap(rename_all = "snake_case")]
pub enum FaultKind {
    /// The leader of a busy partition (the first of `charge-requests`) is
    /// SIGKILLed and started again on its log as it was: its partitions
    /// move to the other replicas, and it catches up when back.
    BrokerKill,
    /// The leader of a busy partition is SIGSTOPped for longer than its
    /// session with the controller (and the consumers' session), then
    /// SIGCONTed: the controller fences it and moves its leaderships.
    BrokerPause,
    /// The active controller (the leader of the metadata quorum) is
    /// SIGKILLed and started again: the quorum elects another.
    ControllerKill,
    /// Every broker in turn is stopped with SIGTERM (a controlled shutdown
    /// that hands its leaderships over) and started again, the next one
    /// once every partition has all its replicas in sync again.
    RollingRestart,
    /// Every Postgres connection of the stack is terminated.
    DbConnectionsTerminated,
    /// The run's Postgres server restarts (fast shutdown: every connection
    /// cut).
    PostgresRestart,
    /// A worker process is SIGKILLed mid-batch and started again.
    WorkerKill,
    /// A fourth worker process joins (rebalance in the middle of batches)
    /// and later leaves with SIGTERM.
    WorkerJoinLeave,
    /// The outbox relay's database connections are terminated.
    RelayConnectionTerminated,
    /// The gateway is restarted with SIGTERM while requests and long-polls
    /// are in flight.
    GatewayRestart,
}

impl FaultKind {
    /// Every kind, in the order a quick run injects them.
    pub const ALL: [FaultKind; 10] = [
        FaultKind::BrokerKill,
        FaultKind::DbConnectionsTerminated,
        FaultKind::WorkerKill,
        FaultKind::ControllerKill,
        FaultKind::RelayConnectionTerminated,
        FaultKind::BrokerPause,
        FaultKind::WorkerJoinLeave,
        FaultKind::PostgresRestart,
        FaultKind::RollingRestart,
        FaultKind::GatewayRestart,
    ];

    /// Snake-case name, as in the report.
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// One injected fault, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    /// What.
    pub kind: FaultKind,
    /// When it began, since the load started.
    pub at_ms: u64,
    /// How long it lasted (0 for an instant one, such as terminated
    /// connections).
    pub duration_ms: u64,
    /// From its end until outcomes flow steadily again: a charge on every
    /// partition decided within a second, three rounds in a row (this is
    /// the end of the first of them); None if that never happened.
    pub recovered_ms: Option<u64>,
    /// Set when the fault could not be injected (the run fails).
    pub skipped: Option<String>,
    /// Set when injecting or ending the fault failed (the run fails).
    pub error: Option<String>,
    /// Events the relays had sent and not confirmed when the fault struck
    /// (their `outbox_in_flight_events`): what the fault can make them
    /// publish twice.
    pub relay_in_flight: u64,
}

/// How the run injects faults.
pub struct Injector {
    /// How long a broker stays stopped (past the session timeout).
    pub pause: Duration,
    worker_turn: usize,
}

impl Injector {
    /// An injector that freezes a broker for `pause`.
    pub fn new(pause: Duration) -> Self {
        Self {
            pause,
            worker_turn: 0,
        }
    }

    /// Injects `kind` and returns when the fault is over: how long it
    /// lasted, or why it was skipped.
    pub async fn inject(
        &mut self,
        stack: &mut Stack,
        kind: FaultKind,
    ) -> anyhow::Result<Result<Duration, String>> {
        let started = Instant::now();
        match kind {
            FaultKind::BrokerKill => {
                let i = busy_leader(stack).await?;
                stack.brokers[i].kill().await?;
                tokio::time::sleep(Duration::from_secs(2)).await;
                stack.restart_broker(i).await?;
            }
            FaultKind::BrokerPause => {
                let i = busy_leader(stack).await?;
                stack.brokers[i].signal(Signal::SIGSTOP)?;
                tokio::time::sleep(self.pause).await;
                stack.brokers[i].signal(Signal::SIGCONT)?;
            }
            FaultKind::ControllerKill => {
                let i = (0..stack.kafka.nodes())
                    .find_map(|n| stack.kafka.controller_leader(n))
                    .map(|id| id - 1)
                    .ok_or_else(|| anyhow::anyhow!("no node records a quorum leader"))?;
                stack.brokers[i].kill().await?;
                tokio::time::sleep(Duration::from_secs(2)).await;
                stack.restart_broker(i).await?;
            }
            FaultKind::RollingRestart => {
                for i in 0..stack.brokers.len() {
                    wait_fully_replicated(stack, Duration::from_secs(120)).await?;
                    let clean = stack.brokers[i].terminate(Duration::from_secs(60)).await?;
                    anyhow::ensure!(
                        clean,
                        "Kafka node {} did not shut down cleanly on SIGTERM",
                        i + 1
                    );
                    stack.restart_broker(i).await?;
                }
                wait_fully_replicated(stack, Duration::from_secs(120)).await?;
            }
            FaultKind::DbConnectionsTerminated => {
                let admin = stack.admin_pool().await?;
                sqlx::query!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE datname = $1 AND pid <> pg_backend_pid()",
                    stack.database
                )
                .fetch_all(&admin)
                .await?;
                admin.close().await;
            }
            FaultKind::RelayConnectionTerminated => {
                // The leading relay holds a connection while it publishes or
                // waits for notifications; give it a moment to have one.
                let admin = stack.admin_pool().await?;
                let mut terminated = 0;
                for _ in 0..50 {
                    terminated = sqlx::query_scalar!(
                        r#"SELECT count(pg_terminate_backend(pid)) AS "terminated!" FROM pg_stat_activity
                           WHERE datname = $1 AND application_name = $2"#,
                        stack.database,
                        workers::outbox::APPLICATION_NAME
                    )
                    .fetch_one(&admin)
                    .await?;
                    if terminated > 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                admin.close().await;
                if terminated == 0 {
                    return Ok(Err("no relay connection was open within 10 s".into()));
                }
            }
            FaultKind::PostgresRestart => {
                let postgres = stack.postgres.clone();
                tokio::task::spawn_blocking(move || postgres.restart()).await??;
            }
            FaultKind::WorkerKill => {
                let i = self.worker_turn % WORKERS;
                self.worker_turn += 1;
                stack.workers[i].kill().await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                stack.workers[i].start()?;
            }
            FaultKind::WorkerJoinLeave => {
                let mut extra = stack.worker(WORKERS);
                extra.start()?;
                stack.wait_worker_ready(WORKERS).await?;
                // Long enough for the groups to hand it partitions and for
                // it to apply batches of them.
                tokio::time::sleep(Duration::from_secs(8)).await;
                let clean = extra.terminate(Duration::from_secs(45)).await?;
                anyhow::ensure!(clean, "the joining worker did not leave cleanly on SIGTERM");
            }
            FaultKind::GatewayRestart => {
                let clean = stack.gateway.terminate(Duration::from_secs(30)).await?;
                anyhow::ensure!(clean, "the gateway did not drain and exit on SIGTERM");
                stack.gateway.start()?;
                stack.wait_gateway_ready().await?;
            }
        }
        Ok(Ok(started.elapsed()))
    }
}

/// The index of the node that leads the first partition of
/// `charge-requests`, the busiest topic of the mix.
async fn busy_leader(stack: &Stack) -> anyhow::Result<usize> {
    let common = stack.common.clone();
    let topic = common.topics().name(schemas::Topic::ChargeRequests);
    let leader = tokio::task::spawn_blocking(move || -> anyhow::Result<i32> {
        let client: BaseConsumer = platform::kafka::client_config(&common).create()?;
        let metadata = client.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        metadata
            .topics()
            .first()
            .and_then(|t| t.partitions().iter().find(|p| p.id() == 0))
            .map(|p| p.leader())
            .ok_or_else(|| anyhow::anyhow!("no leader for {topic} partition 0"))
    })
    .await??;
    let index = usize::try_from(leader - 1)?;
    anyhow::ensure!(
        index < stack.brokers.len(),
        "leader {leader} is not a node of the run"
    );
    Ok(index)
}

/// Waits until every partition of the cluster has all its replicas in
/// sync (a broker that came back has caught up).
pub async fn wait_fully_replicated(stack: &Stack, limit: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let common = stack.common.clone();
        let lagging = tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
            let client: BaseConsumer = platform::kafka::client_config(&common).create()?;
            let metadata = client.fetch_metadata(None, Duration::from_secs(10))?;
            Ok(metadata
                .topics()
                .iter()
                .flat_map(|t| t.partitions())
                .filter(|p| p.isr().len() < p.replicas().len() || p.leader() < 0)
                .count())
        })
        .await?;
        match lagging {
            Ok(0) => return Ok(()),
            Ok(n) if started.elapsed() >= limit => {
                anyhow::bail!("{n} partitions still under-replicated after {limit:?}")
            }
            Err(error) if started.elapsed() >= limit => return Err(error),
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Users whose charges cover every partition of `charge-requests`, so a
/// probe sees a partition that is still stalled (say, waiting out a killed
/// worker's session) as well as the others.
pub async fn probe_users(stack: &Stack) -> anyhow::Result<Vec<User>> {
    let partitions = stack.common.kafka_request_partitions.max(1) as usize;
    let mut by_partition: std::collections::BTreeMap<i32, User> = Default::default();
    for attempt in 0..64 {
        if by_partition.len() >= partitions {
            break;
        }
        let user = stack.api.create_user(&format!("probe{attempt}")).await?;
        let id = stack.api.charge(&user, 1).await?;
        stack.api.outcome(&user.token, id).await?;
        let partition =
            sqlx::query_scalar!("SELECT kafka_partition FROM requests WHERE id = $1", id)
                .fetch_one(&stack.pool)
                .await?;
        if let Some(partition) = partition {
            by_partition.entry(partition).or_insert(user);
        }
    }
    Ok(by_partition.into_values().collect())
}

/// Sends a charge as each of `probes` (one per partition) and waits for
/// every outcome; how long that took, or None after `limit`.
async fn probe_once(stack: &Stack, probes: &[User], limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let attempts = probes.iter().map(|user| async move {
        let id = stack.api.charge(user, 1).await?;
        stack.api.outcome(&user.token, id).await
    });
    match tokio::time::timeout(limit, futures::future::try_join_all(attempts)).await {
        Ok(Ok(_)) => Some(started.elapsed()),
        _ => None,
    }
}

/// Probes until outcomes flow steadily on every partition: three rounds in
/// a row, each decided within a second. Returns the time from now to the
/// end of the first of those rounds, or None after `limit`. A single fast
/// round is not enough: a worker restarted after a kill is answered at once,
/// then the rebalance it starts waits out the dead member's session and
/// stalls its partitions for seconds.
pub async fn probe(stack: &Stack, probes: &[User], limit: Duration) -> Option<Duration> {
    const STEADY_ROUNDS: usize = 3;
    const FAST: Duration = Duration::from_secs(1);
    let started = Instant::now();
    let mut steady_since: Option<Duration> = None;
    let mut steady = 0;
    while started.elapsed() < limit {
        let took = probe_once(stack, probes, limit.saturating_sub(started.elapsed())).await?;
        if took <= FAST {
            steady_since.get_or_insert(started.elapsed());
            steady += 1;
            if steady == STEADY_ROUNDS {
                return steady_since;
            }
        } else {
            steady_since = None;
            steady = 0;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}
