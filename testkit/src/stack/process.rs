//! The workers as a process of their binary: what a test kills, stops,
//! freezes and starts again.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::Stack;

/// A workers process, killed when the test ends, even when it fails.
pub struct WorkerProcess {
    child: Child,
    log: PathBuf,
    /// Its health and metrics address.
    pub addr: std::net::SocketAddr,
}

impl Stack {
    /// Environment of a workers process (or command) of this stack: its
    /// database, topics and [`Stack::workers_config`].
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
            ("LOG_FORMAT", "json".to_owned()),
        ]
    }

    /// Starts the workers binary at `binary` (in the workers' tests,
    /// `env!("CARGO_BIN_EXE_workers")`) for this stack and waits until it
    /// is ready (its `/readyz` answers 200); it logs to a file under the
    /// system's temporary directory, which a failure names.
    pub async fn start_worker_process(
        &self,
        binary: impl AsRef<Path>,
    ) -> anyhow::Result<WorkerProcess> {
        // A free port for its health endpoint: bound, read and let go.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let log = std::env::temp_dir().join(format!(
            "{}workers-{}.log",
            self.env.common.topic_prefix,
            addr.port()
        ));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(binary.as_ref())
            .envs(self.workers_env())
            .env("WORKERS_ADDR", addr.to_string())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .spawn()?;
        let mut process = WorkerProcess { child, log, addr };
        let ready = format!("http://{addr}/readyz");
        let http = self.api.http.clone();
        crate::eventually(
            "the worker process to be ready",
            Duration::from_secs(60),
            || {
                let exited = process.child.try_wait();
                let probe = http.get(&ready).send();
                let log = process.log.display().to_string();
                async move {
                    if let Some(status) = exited? {
                        anyhow::bail!("the worker process exited ({status}); see {log}");
                    }
                    Ok(probe
                        .await
                        .is_ok_and(|r| r.status().is_success())
                        .then_some(()))
                }
            },
        )
        .await?;
        Ok(process)
    }
}

impl WorkerProcess {
    /// The value of the counter `name` (summed over its labels) in the
    /// process's `/metrics`; 0 when it was never counted.
    pub async fn counter(&self, name: &str) -> anyhow::Result<f64> {
        let text = reqwest::get(format!("http://{}/metrics", self.addr))
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Sends `signal` (`-STOP`, `-CONT`, `-TERM`).
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.child.id().to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill {signal} failed");
        Ok(())
    }

    /// Asks the process to stop (SIGTERM) and waits until it has exited.
    pub async fn terminate(mut self) -> anyhow::Result<ExitStatus> {
        self.signal("-TERM")?;
        Ok(tokio::task::spawn_blocking(move || self.child.wait()).await??)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
