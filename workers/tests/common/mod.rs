//! Starts a whole stack for one test: a fresh database and topic prefix, the
//! gateway on a free port and (optionally) the workers, in-process.

#![allow(dead_code)]

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use api::status::RequestStatus;
use api::RequestOutcome;
use futures::stream::{self, StreamExt, TryStreamExt};
use uuid::Uuid;

use gateway::{Gateway, GatewayConfig};
use testkit::{Api, TestEnv};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use workers::WorkersConfig;

/// Knobs a test may turn.
#[derive(Debug, Clone)]
pub struct Options {
    /// Hold duration in seconds.
    pub hold_secs: u64,
    /// ACTIVE tokens per schedule.
    pub active_limit: i64,
    /// Run the workers inside the test process.
    pub in_process_workers: bool,
    /// A Postgres server of the test's own (default: the suite's).
    pub database_server: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            hold_secs: 300,
            active_limit: 1000,
            in_process_workers: true,
            database_server: None,
        }
    }
}

/// A running stack.
pub struct Stack {
    pub env: TestEnv,
    pub api: Api,
    pub workers_config: WorkersConfig,
    cancel: CancellationToken,
    gateway: JoinHandle<anyhow::Result<()>>,
    workers: Option<(CancellationToken, JoinHandle<anyhow::Result<()>>)>,
    extra_workers: Vec<(CancellationToken, JoinHandle<anyhow::Result<()>>)>,
}

impl Stack {
    pub async fn start(options: Options) -> anyhow::Result<Self> {
        let env = TestEnv::on_server(options.database_server.as_deref()).await?;
        let admin_token = format!("admin-{}", uuid::Uuid::new_v4().simple());
        let mut gateway_config = GatewayConfig::local(&admin_token, testkit::TEST_AUTH_SECRET);
        gateway_config.common = env.common.clone();
        gateway_config.common.database_max_connections = 6;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let cancel = CancellationToken::new();
        let gateway =
            tokio::spawn(Gateway::build(&gateway_config)?.serve(listener, cancel.clone()));

        let mut workers_config = WorkersConfig::local();
        workers_config.common = env.common.clone();
        workers_config.reservation_hold_secs = options.hold_secs;
        workers_config.queue_active_limit = options.active_limit;
        workers_config.scheduler_interval_ms = 100;
        let mut stack = Self {
            env,
            api: Api::new(base, admin_token),
            workers_config,
            cancel,
            gateway,
            workers: None,
            extra_workers: Vec::new(),
        };
        if options.in_process_workers {
            stack.start_workers();
        }
        Ok(stack)
    }

    /// Starts the workers in-process.
    pub fn start_workers(&mut self) {
        let cancel = self.cancel.child_token();
        let task = tokio::spawn(workers::run(self.workers_config.clone(), cancel.clone()));
        self.workers = Some((cancel, task));
    }

    /// Starts one more workers instance in-process, as a second worker
    /// process would: it joins the same consumer groups.
    pub fn start_extra_workers(&mut self) {
        let cancel = self.cancel.child_token();
        let task = tokio::spawn(workers::run(self.workers_config.clone(), cancel.clone()));
        self.extra_workers.push((cancel, task));
    }

    /// Stops the in-process workers gracefully.
    pub async fn stop_workers(&mut self) -> anyhow::Result<()> {
        for (cancel, task) in self
            .workers
            .take()
            .into_iter()
            .chain(self.extra_workers.drain(..))
        {
            cancel.cancel();
            tokio::time::timeout(Duration::from_secs(60), task).await???;
        }
        Ok(())
    }

    /// Environment for a workers process of this stack.
    pub fn workers_env(&self) -> Vec<(&'static str, String)> {
        let c = &self.workers_config;
        vec![
            ("DATABASE_URL", c.common.database_url.clone()),
            ("KAFKA_BROKERS", c.common.kafka_brokers.clone()),
            (
                "DATABASE_MAX_CONNECTIONS",
                c.common.database_max_connections.to_string(),
            ),
            ("TOPIC_PREFIX", c.common.topic_prefix.clone()),
            ("RESERVATION_HOLD_SECS", c.reservation_hold_secs.to_string()),
            ("QUEUE_ACTIVE_LIMIT", c.queue_active_limit.to_string()),
            ("SCHEDULER_INTERVAL_MS", c.scheduler_interval_ms.to_string()),
            ("OUTBOX_LEASE_MS", c.outbox_lease_ms.to_string()),
            ("LANE_BATCH_MAX", c.batch_max.to_string()),
            ("WORKERS_ADDR", "127.0.0.1:0".to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
        ]
    }

    /// Stops everything.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop_workers().await?;
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.gateway).await???;
        Ok(())
    }
}

/// Scalar query on the test database.
pub async fn scalar(stack: &Stack, sql: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(&stack.env.pool)
        .await?)
}

/// A workers process that is killed when the test ends, even when it fails.
pub struct WorkerProcess(Child);

impl WorkerProcess {
    /// SIGKILL, and reap.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.0.kill()?;
        self.0.wait()?;
        Ok(())
    }

    /// Process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.wait()
    }

    /// Sends `signal` (e.g. `-STOP`, `-CONT`, `-TERM`).
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.0.id().to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill {signal} failed");
        Ok(())
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the workers binary for `stack`, logging to a file under the
/// target's temporary directory.
pub fn spawn_workers_process(stack: &Stack) -> anyhow::Result<WorkerProcess> {
    spawn_workers_process_with(stack, &[])
}

/// Like [`spawn_workers_process`], with extra environment variables.
pub fn spawn_workers_process_with(
    stack: &Stack,
    extra: &[(&str, &str)],
) -> anyhow::Result<WorkerProcess> {
    let log_path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{}workers.log", stack.env.common.topic_prefix));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_workers"));
    command
        .envs(stack.workers_env())
        .envs(extra.iter().copied())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    Ok(WorkerProcess(command.spawn()?))
}

/// Final outcomes of `(bearer, request id)` pairs, in order.
pub async fn outcomes(
    stack: &Stack,
    requests: &[(String, Uuid)],
) -> anyhow::Result<Vec<RequestOutcome>> {
    let api = &stack.api;
    stream::iter(requests.iter().cloned())
        .map(|(bearer, id)| async move { api.outcome(&bearer, id).await })
        .buffered(64)
        .try_collect()
        .await
}

/// Outcomes counted by `SUCCEEDED` or their error code.
pub fn codes(outcomes: &[RequestOutcome]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for outcome in outcomes {
        let key = match outcome.status {
            RequestStatus::Succeeded => "SUCCEEDED".to_owned(),
            _ => outcome.error_code().unwrap_or("?").to_owned(),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}
