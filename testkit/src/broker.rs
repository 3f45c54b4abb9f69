//! A Kafka node of one test's own: the launcher's single KRaft node on
//! free ports, for faults that would disturb the suite's shared broker (a
//! frozen broker, a killed one). Killed, and its log removed, when dropped.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A running Kafka node.
pub struct OwnBroker {
    child: Child,
    dir: PathBuf,
    /// Its bootstrap address (`KAFKA_BROKERS`).
    pub brokers: String,
}

/// A port whose next one is free too (the node's controller listens there).
fn free_port_pair() -> anyhow::Result<u16> {
    for _ in 0..50 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no two free ports in a row")
}

impl OwnBroker {
    /// Starts a node and waits until it takes clients.
    pub async fn start() -> anyhow::Result<Self> {
        let port = free_port_pair()?;
        let dir = std::env::temp_dir().join(format!(
            "booking-test-kafka-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let cluster = stack::kafka::Cluster::single(&dir, port);
        let prepared = cluster.clone();
        tokio::task::spawn_blocking(move || prepared.prepare()).await??;
        let log = std::fs::File::create(cluster.log(0))?;
        let child = cluster
            .node(0)?
            .command()
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()?;
        let mut broker = Self {
            child,
            dir,
            brokers: cluster.bootstrap(),
        };
        let log = cluster.log(0).display().to_string();
        crate::eventually(
            "the test's own Kafka node to take clients",
            Duration::from_secs(120),
            || {
                let exited = broker.child.try_wait();
                let log = log.clone();
                async move {
                    if let Some(status) = exited? {
                        anyhow::bail!("the test's Kafka node exited ({status}); see {log}");
                    }
                    Ok(tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .is_ok()
                        .then_some(()))
                }
            },
        )
        .await?;
        Ok(broker)
    }

    fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        kill(Pid::from_raw(i32::try_from(self.child.id())?), signal)?;
        Ok(())
    }

    /// Freezes the node (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// Thaws a frozen node (SIGCONT): it handles what waited meanwhile.
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGCONT)
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
