//! A stack of the chaos run's own: a replicated Apache Kafka cluster
//! (three KRaft nodes on loopback, every partition on all three,
//! `min.insync.replicas` 2, producers with `acks=all`), a PostgreSQL
//! cluster of its own (which it may restart), three worker processes and a
//! gateway, all started by the `stack` launcher's parts. It refuses to
//! start when any of its ports is taken, so it never measures or breaks a
//! process it did not start.

use std::time::Duration;

use gateway::auth::password::Cost;
use platform::CommonConfig;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use testkit::Api;

use crate::process::{port_open, wait_until, Service};

use crate::Settings;

/// The file that marks a directory as the chaos run's own.
const OWNED: &str = ".chaos-run";

/// Workers the stack runs all the time (a fourth joins and leaves).
pub const WORKERS: usize = 3;

/// The running stack.
pub struct Stack {
    /// The Kafka cluster's layout (ports, directories, the quorum).
    pub kafka: stack::kafka::Cluster,
    /// The Kafka nodes, node `i` at index `i`.
    pub brokers: Vec<Service>,
    /// The run's own Postgres cluster.
    pub postgres: stack::postgres::Cluster,
    /// The gateway.
    pub gateway: Service,
    /// The worker processes.
    pub workers: Vec<Service>,
    /// The workers' configuration, read from the environment the stack's
    /// processes get: what the checks use (`BUSINESS_TZ`, `TOPIC_PREFIX`).
    pub config: workers::config::WorkersConfig,
    /// Connection settings of the stack (`config.common`).
    pub common: CommonConfig,
    /// Pool on the stack's database (checks, faults).
    pub pool: PgPool,
    /// A patient client of the gateway.
    pub api: Api,
    /// Gateway base URL.
    pub gateway_url: String,
    /// The stack's database name.
    pub database: String,
    /// What the report says about the broker.
    pub broker_description: String,
    settings: Settings,
    env: Vec<(String, String)>,
}

fn random_hex(bytes: usize) -> String {
    uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .chars()
        .chain(uuid::Uuid::new_v4().simple().to_string().chars())
        .take(bytes * 2)
        .collect()
}

impl Stack {
    /// Creates the database, starts broker, workers and gateway, and waits
    /// until all are ready.
    pub async fn start(settings: &Settings) -> anyhow::Result<Self> {
        check_ports(settings).await?;
        let logs = settings.log_dir.clone();

        // Postgres and Kafka start from empty directories: nothing of an
        // earlier run is read or measured. Only a directory an earlier run
        // made (it holds OWNED) is removed: never a database or broker log
        // the run did not create.
        let postgres_dir = logs.join("postgres");
        let kafka_dir = logs.join("kafka");
        for dir in [&postgres_dir, &kafka_dir] {
            fresh_dir(dir)?;
        }
        let postgres = stack::postgres::Cluster::new(&postgres_dir, settings.postgres_port);
        let started = postgres.clone();
        tokio::task::spawn_blocking(move || started.start()).await??;
        let server: PgConnectOptions = postgres.url("postgres").parse()?;
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(server.clone())
            .await?;
        // Dynamic SQL: a database name cannot be a bind parameter (the
        // cluster is the run's own and new, so nothing is dropped).
        sqlx::query(&format!("CREATE DATABASE {}", settings.database))
            .execute(&admin)
            .await?;
        admin.close().await;
        let database_url = postgres.url(&settings.database);

        let kafka = stack::kafka::Cluster::replicated(
            &kafka_dir,
            settings.brokers,
            settings.broker_port,
            settings.controller_port,
        );
        let prepared = kafka.clone();
        tokio::task::spawn_blocking(move || prepared.prepare()).await??;
        let mut brokers = Vec::new();
        for i in 0..kafka.nodes() {
            let mut node = Service::from_spec(kafka.node(i)?, kafka.log(i));
            node.start()?;
            brokers.push(node);
        }
        for (i, node) in brokers.iter_mut().enumerate() {
            wait_broker(&kafka, node, i).await?;
        }
        let broker_description = format!(
            "Apache Kafka {} started by this run: {} KRaft nodes (broker and controller each) on {}, \
             replication factor {}, min.insync.replicas {}, producers with acks=all",
            stack::kafka::version(),
            kafka.nodes(),
            kafka.bootstrap(),
            kafka.replication_factor(),
            kafka.min_insync_replicas(),
        );
        let brokers_address = kafka.bootstrap();

        let admin_token = format!("admin-{}", random_hex(16));
        let env: Vec<(String, String)> = [
            ("DATABASE_URL", database_url.clone()),
            ("KAFKA_BROKERS", brokers_address.clone()),
            (
                "KAFKA_REPLICATION_FACTOR",
                kafka.replication_factor().to_string(),
            ),
            (
                "KAFKA_MIN_INSYNC_REPLICAS",
                kafka.min_insync_replicas().to_string(),
            ),
            ("ADMIN_TOKEN", admin_token.clone()),
            ("AUTH_SECRET", random_hex(32)),
            // Seeding and probes sign up hundreds of users from one address:
            // no sign-up limit, and hashes at Argon2's lowest cost (at the
            // deployed cost a debug build took a minute to seed `booking`).
            ("SIGNUPS_PER_ADDRESS", "0".into()),
            (
                "PASSWORD_HASH_MEMORY_KIB",
                Cost::SET_UP.memory_kib.to_string(),
            ),
            (
                "PASSWORD_HASH_ITERATIONS",
                Cost::SET_UP.iterations.to_string(),
            ),
            (
                "GATEWAY_ADDR",
                format!("127.0.0.1:{}", settings.gateway_port),
            ),
            ("QUEUE_ACTIVE_LIMIT", "1000000".into()),
            // Seeded queue tokens must outlive the run (at the default ten
            // minutes a full run's booking clients met 403s).
            ("QUEUE_ACTIVE_TTL_SECS", "86400".into()),
            // Not the defaults, so a check that ignored the stack's own
            // configuration would look in the wrong topics and days.
            ("TOPIC_PREFIX", "chaos.".into()),
            ("BUSINESS_TZ", "America/Los_Angeles".into()),
            ("RESERVATION_HOLD_SECS", settings.hold_secs.to_string()),
            ("DATABASE_MAX_CONNECTIONS", "10".into()),
            ("LOG_FORMAT", "json".into()),
            ("RUST_LOG", "info,rdkafka=warn,sqlx=warn".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();

        let workers_bin = settings.bin_dir.join("workers");
        let setup_log = std::fs::File::create(logs.join("setup.log"))?;
        let status = tokio::process::Command::new(&workers_bin)
            .arg("--setup-only")
            .env_clear()
            .envs(stack::process::inherited())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(setup_log.try_clone()?)
            .stderr(setup_log)
            .status()
            .await?;
        anyhow::ensure!(
            status.success(),
            "workers --setup-only failed; see {}",
            logs.join("setup.log").display()
        );

        let config: workers::config::WorkersConfig = platform::config::from_vars(&env)
            .map_err(|e| anyhow::anyhow!("the stack's configuration: {e}"))?;
        let common = config.common.clone();
        let pool = platform::db::pool(&database_url, 4)?;
        let gateway_url = format!("http://127.0.0.1:{}", settings.gateway_port);
        let mut stack = Self {
            kafka,
            brokers,
            postgres,
            gateway: Service::new(
                "gateway",
                settings.bin_dir.join("gateway"),
                &[],
                env.clone(),
                &logs,
                logs.join("gateway.log"),
            ),
            workers: Vec::new(),
            config,
            common,
            pool,
            api: Api::new(gateway_url.clone(), admin_token)
                .patient(Duration::from_secs(settings.patience_secs)),
            gateway_url,
            database: settings.database.clone(),
            broker_description,
            settings: settings.clone(),
            env,
        };
        for i in 0..WORKERS {
            let mut worker = stack.worker(i);
            worker.start()?;
            stack.workers.push(worker);
        }
        stack.gateway.start()?;
        for i in 0..WORKERS {
            stack.wait_worker_ready(i).await?;
        }
        stack.wait_gateway_ready().await?;
        Ok(stack)
    }

    /// Worker number `i` (0-based; `WORKERS` is the one that joins and
    /// leaves), not started.
    pub fn worker(&self, i: usize) -> Service {
        let port = self.settings.workers_port + i as u16;
        Service::new(
            format!("worker-{}", i + 1),
            self.settings.bin_dir.join("workers"),
            &[],
            with(&self.env, "WORKERS_ADDR", format!("127.0.0.1:{port}")),
            &self.settings.log_dir,
            self.settings.log_dir.join(format!("worker-{}.log", i + 1)),
        )
    }

    /// The URL of `path` on worker `i`'s health and metrics endpoint.
    pub fn worker_url(&self, i: usize, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}{path}",
            self.settings.workers_port + i as u16
        )
    }

    /// Waits for worker `i`'s `/readyz`.
    pub async fn wait_worker_ready(&self, i: usize) -> anyhow::Result<()> {
        let url = format!(
            "http://127.0.0.1:{}/readyz",
            self.settings.workers_port + i as u16
        );
        wait_until(
            &format!("worker {} ready", i + 1),
            Duration::from_secs(120),
            || ready(&self.api.http, &url),
        )
        .await
    }

    /// Waits for the gateway's `/readyz`.
    pub async fn wait_gateway_ready(&self) -> anyhow::Result<()> {
        let url = format!("{}/readyz", self.gateway_url);
        wait_until("gateway ready", Duration::from_secs(120), || {
            ready(&self.api.http, &url)
        })
        .await
    }

    /// A pool on the server's `postgres` database, for terminating the
    /// stack's connections.
    pub async fn admin_pool(&self) -> anyhow::Result<PgPool> {
        let server: PgConnectOptions = self.postgres.url("postgres").parse()?;
        Ok(PgPoolOptions::new()
            .max_connections(1)
            .connect_with(server)
            .await?)
    }

    /// Starts Kafka node `i` again (on its log as it was) and waits until
    /// it takes clients.
    pub async fn restart_broker(&mut self, i: usize) -> anyhow::Result<()> {
        self.brokers[i].start()?;
        wait_broker(&self.kafka, &mut self.brokers[i], i).await
    }

    /// Stops every process (workers politely first, so they leave their
    /// groups), then the brokers and Postgres.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.gateway.terminate(Duration::from_secs(30)).await;
        futures::future::join_all(
            self.workers
                .iter_mut()
                .map(|worker| worker.terminate(Duration::from_secs(40))),
        )
        .await;
        futures::future::join_all(
            self.brokers
                .iter_mut()
                .map(|broker| broker.terminate(Duration::from_secs(30))),
        )
        .await;
        self.pool.close().await;
        let postgres = self.postgres.clone();
        tokio::task::spawn_blocking(move || postgres.stop()).await??;
        Ok(())
    }
}

impl Drop for Stack {
    /// An interrupted run still stops its Postgres (the other processes
    /// are its children, killed with it).
    fn drop(&mut self) {
        let _ = self.postgres.stop_immediately();
    }
}

/// Empties `dir` for the run, marked as the run's own. A directory that
/// exists without the mark (a database or broker log the run did not
/// create) is refused, never removed.
pub fn fresh_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    if dir.exists() {
        anyhow::ensure!(
            dir.join(OWNED).exists(),
            "{} exists and was not made by a chaos run (no {OWNED} in it): \
             move it away or choose another --log-dir",
            dir.display()
        );
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(OWNED),
        "made by the chaos run, removed by the next\n",
    )?;
    Ok(())
}

/// Waits until Kafka node `i` takes clients; fails when it exited.
async fn wait_broker(
    kafka: &stack::kafka::Cluster,
    node: &mut Service,
    i: usize,
) -> anyhow::Result<()> {
    let port = kafka.port(i);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !port_open(port).await {
        anyhow::ensure!(
            !node.exited(),
            "Kafka node {} exited; see {}",
            i + 1,
            kafka.log(i).display()
        );
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "Kafka node {} did not open 127.0.0.1:{port} within 120 s; see {}",
            i + 1,
            kafka.log(i).display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Refuses to go on when a port of the stack is taken: the run would talk to
/// (and measure) a process it did not start.
pub async fn check_ports(settings: &Settings) -> anyhow::Result<()> {
    let mut ports = vec![settings.postgres_port, settings.gateway_port];
    ports.extend((0..settings.brokers).map(|i| settings.broker_port + i as u16));
    ports.extend((0..settings.brokers).map(|i| settings.controller_port + i as u16));
    ports.extend((0..=WORKERS).map(|i| settings.workers_port + i as u16));
    let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
    anyhow::ensure!(
        distinct.len() == ports.len(),
        "the run's port ranges overlap ({ports:?}): choose ports that leave room for every node and worker"
    );
    for port in ports {
        anyhow::ensure!(
            !port_open(port).await,
            "127.0.0.1:{port} is taken by a process this run did not start; \
             stop it (the chaos run uses a broker and services of its own)"
        );
    }
    Ok(())
}

fn with(env: &[(String, String)], key: &str, value: String) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.push((key.to_owned(), value));
    env
}

async fn ready(http: &reqwest::Client, url: &str) -> bool {
    matches!(
        http.get(url).timeout(Duration::from_secs(3)).send().await,
        Ok(response) if response.status().is_success()
    )
}

#[cfg(test)]
mod tests {
    use super::fresh_dir;

    #[test]
    fn only_a_directory_the_run_made_is_emptied() -> anyhow::Result<()> {
        let root = std::env::temp_dir().join(format!("chaos-dir-{}", uuid::Uuid::new_v4()));
        let dir = root.join("postgres");
        fresh_dir(&dir)?;
        std::fs::write(dir.join("PG_VERSION"), "15")?;
        fresh_dir(&dir)?;
        assert!(
            !dir.join("PG_VERSION").exists(),
            "an earlier run's files go"
        );

        let foreign = root.join("kafka");
        std::fs::create_dir_all(&foreign)?;
        std::fs::write(foreign.join("meta.properties"), "node.id=1")?;
        let refused = fresh_dir(&foreign).expect_err("not the run's own");
        assert!(refused.to_string().contains("not made by a chaos run"));
        assert!(foreign.join("meta.properties").exists(), "left as it was");
        std::fs::remove_dir_all(&root)?;
        Ok(())
    }
}
