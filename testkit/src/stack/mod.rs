//! A whole stack for one test: a fresh database and topic prefix
//! ([`TestEnv`]), the gateway in-process on a free port, and the workers in
//! the test process, as processes of their binary, or not at all (a
//! gateway alone).
//!
//! Behind the `stack` feature: it links the gateway and the workers, which
//! the API client's users (loadgen, chaos) do not need.

mod process;
mod rows;

use std::time::Duration;

use gateway::{Gateway, GatewayConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use workers::WorkersConfig;

use crate::{Api, TestEnv};

pub use process::WorkerProcess;
pub use rows::RequestRow;

/// Changes a stack's gateway configuration before the gateway starts.
type ConfigureGateway = Box<dyn FnOnce(&mut GatewayConfig) + Send>;

/// What a test may choose about its stack. `Options::default()` is a
/// gateway with in-process workers, holds of 300 s and 1,000 ACTIVE tokens
/// per schedule.
pub struct Options {
    hold_secs: u64,
    active_limit: i64,
    workers: bool,
    database_server: Option<String>,
    brokers: Option<String>,
    configure_gateway: Option<ConfigureGateway>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            hold_secs: 300,
            active_limit: 1000,
            workers: true,
            database_server: None,
            brokers: None,
            configure_gateway: None,
        }
    }
}

impl Options {
    /// A gateway alone: no workers until the test starts them
    /// ([`Stack::start_workers`], [`Stack::start_worker_process`]), perhaps
    /// after changing [`Stack::workers_config`]. Accepted requests stay
    /// PENDING meanwhile.
    pub fn without_workers() -> Self {
        Self {
            workers: false,
            ..Self::default()
        }
    }

    /// Seat holds last `seconds`.
    pub fn hold_secs(mut self, seconds: u64) -> Self {
        self.hold_secs = seconds;
        self
    }

    /// At most `limit` queue tokens per schedule are ACTIVE at once.
    pub fn active_limit(mut self, limit: i64) -> Self {
        self.active_limit = limit;
        self
    }

    /// The test's database lives on the Postgres server at `url` (any
    /// database on it) instead of the suite's.
    pub fn database_server(mut self, url: impl Into<String>) -> Self {
        self.database_server = Some(url.into());
        self
    }

    /// The test's topics live on `brokers` (a test's own broker,
    /// [`crate::broker::OwnBroker`]) instead of the suite's.
    pub fn brokers(mut self, brokers: impl Into<String>) -> Self {
        self.brokers = Some(brokers.into());
        self
    }

    /// `configure` changes the gateway's configuration (the local defaults
    /// on the test's database and topics) before the gateway starts.
    pub fn gateway(mut self, configure: impl FnOnce(&mut GatewayConfig) + Send + 'static) -> Self {
        self.configure_gateway = Some(Box::new(configure));
        self
    }
}

/// A running stack. [`Stack::stop`] stops it and reports a worker that
/// failed; dropping it stops the gateway and the workers without waiting.
pub struct Stack {
    /// The test's database and topics.
    pub env: TestEnv,
    /// A client of the gateway (impatient, with the stack's admin
    /// credential).
    pub api: Api,
    /// Configuration of the workers the test starts from now on.
    pub workers_config: WorkersConfig,
    cancel: CancellationToken,
    gateway: Option<JoinHandle<anyhow::Result<()>>>,
    workers: Vec<(CancellationToken, JoinHandle<anyhow::Result<()>>)>,
}

impl Stack {
    /// Creates the test's database and topics, starts the gateway on a free
    /// port and, unless told otherwise, the workers in-process.
    pub async fn start(options: Options) -> anyhow::Result<Self> {
        let env = TestEnv::on_servers(
            options.database_server.as_deref(),
            options.brokers.as_deref(),
        )
        .await?;
        let admin_token = format!("admin-{}", uuid::Uuid::new_v4().simple());
        let mut gateway_config = GatewayConfig::local(&admin_token, crate::TEST_AUTH_SECRET);
        gateway_config.common = env.common.clone();
        gateway_config.common.database_max_connections = 6;
        // Suites sign up hundreds of users from one address, each with a
        // password: no sign-up or login limits, and hashes at Argon2's
        // lowest cost (a test that needs either configures its own).
        gateway_config.signups_per_address = 0;
        gateway_config.logins_per_address = 0;
        gateway_config.logins_per_account = 0;
        gateway_config.logins_per_account_all_addresses = 0;
        let cost = gateway::auth::password::Cost::SET_UP;
        gateway_config.password_hash_memory_kib = cost.memory_kib;
        gateway_config.password_hash_iterations = cost.iterations;
        if let Some(configure) = options.configure_gateway {
            configure(&mut gateway_config);
        }
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
            gateway: Some(gateway),
            workers: Vec::new(),
        };
        if options.workers {
            stack.start_workers();
        }
        Ok(stack)
    }

    /// Starts one more instance of the workers in-process with
    /// [`Stack::workers_config`]; a second one joins the same consumer
    /// groups, as a second worker process would.
    pub fn start_workers(&mut self) {
        let cancel = self.cancel.child_token();
        let task = tokio::spawn(workers::run(self.workers_config.clone(), cancel.clone()));
        self.workers.push((cancel, task));
    }

    /// Stops the in-process workers gracefully; fails when one of them
    /// failed or does not stop within a minute.
    pub async fn stop_workers(&mut self) -> anyhow::Result<()> {
        for (cancel, task) in self.workers.drain(..) {
            cancel.cancel();
            tokio::time::timeout(Duration::from_secs(60), task).await???;
        }
        Ok(())
    }

    /// Stops everything; fails when a worker or the gateway failed.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop_workers().await?;
        self.cancel.cancel();
        if let Some(gateway) = self.gateway.take() {
            tokio::time::timeout(Duration::from_secs(30), gateway).await???;
        }
        Ok(())
    }

    /// Runs queue admission for schedule `schedule_id` once, as the
    /// admission scheduler does (a stack without workers has none), with
    /// room for `active_limit` ACTIVE tokens; how many it admitted.
    pub async fn admit(&self, schedule_id: i64, active_limit: i64) -> anyhow::Result<u64> {
        let settings = workers::concert::queue_admission::Admission {
            active_limit,
            active_ttl: Duration::from_secs(600),
        };
        let mut tx = self.env.pool.begin().await?;
        let admitted =
            workers::concert::queue_admission::admit_schedule(&mut tx, schedule_id, settings)
                .await?;
        tx.commit().await?;
        Ok(admitted)
    }

    /// Runs one whole admission round, as the admission scheduler does,
    /// with room for `active_limit` ACTIVE tokens per schedule (it also
    /// expires ACTIVE tokens past their time and gives up abandoned places).
    pub async fn admission_round(&self, active_limit: i64) -> anyhow::Result<()> {
        let settings = workers::concert::queue_admission::Admission {
            active_limit,
            active_ttl: Duration::from_secs(600),
        };
        workers::concert::queue_admission::admit(&self.env.pool, settings).await?;
        Ok(())
    }

    /// Makes queue token `token` ACTIVE the way the admission scheduler
    /// would (a stack without workers has none).
    pub async fn activate(&self, token: &str) -> anyhow::Result<()> {
        rows::activate(&self.env.pool, token.parse()?).await
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A checked query of one `int8` value (a count, a sum) on the test
/// database of `$stack` (a [`Stack`]), with its arguments: a future of
/// `anyhow::Result<i64>`. The statement is `SELECT ($sql)::int8`, checked
/// against the schema at compile time like every `sqlx::query!`.
#[macro_export]
macro_rules! scalar {
    ($stack:expr, $sql:literal $(, $arg:expr)* $(,)?) => {
        async {
            ::anyhow::Ok(
                ::sqlx::query_scalar!("SELECT (" + $sql + r#")::int8 AS "value!""# $(, $arg)*)
                    .fetch_one(&$stack.env.pool)
                    .await?,
            )
        }
    };
}
