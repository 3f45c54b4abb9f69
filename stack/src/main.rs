//! `stack`: starts, stops and shows the infrastructure of a checkout's
//! stack (`./dev up`, `./dev down`, `./dev test` call it): PostgreSQL and
//! Apache Kafka, each either a server of the checkout's own under the state
//! directory or, where `DATABASE_URL` or `KAFKA_BROKERS` names one elsewhere,
//! that one.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use stack::kafka;
use stack::postgres;
use stack::process::{ensure_port_free, port_holder, port_open, say, PidFile};

#[derive(Parser)]
#[command(about = "The checkout's PostgreSQL and Apache Kafka")]
struct Cli {
    /// The checkout's state directory (clusters, pid files, logs).
    #[arg(long, default_value = ".dev")]
    state: PathBuf,
    /// Where the checkout's Kafka keeps its log (default: `kafka` in the
    /// state directory); the benchmark uses one of its own.
    #[arg(long, env = "STACK_KAFKA_DIR")]
    kafka_dir: Option<PathBuf>,
    /// The database the stack uses (its server's address decides whether
    /// the checkout runs one).
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// The brokers the stack uses (the checkout runs one when this is a
    /// single loopback address).
    #[arg(long, env = "KAFKA_BROKERS")]
    kafka_brokers: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Starts what is not running (installing what is missing).
    Up {
        /// Only PostgreSQL.
        #[arg(long, conflicts_with = "kafka")]
        postgres: bool,
        /// Only Kafka.
        #[arg(long)]
        kafka: bool,
        /// Refuse a server on the address that this checkout did not start
        /// (tools that measure or break the stack need their own).
        #[arg(long)]
        owned: bool,
    },
    /// Stops what `up` started.
    Down {
        /// Only PostgreSQL.
        #[arg(long, conflicts_with = "kafka")]
        postgres: bool,
        /// Only Kafka.
        #[arg(long)]
        kafka: bool,
    },
    /// Says what runs.
    Status,
}

/// Host and port of a `postgres://user@host:port/db` URL.
fn pg_address(url: &str) -> (String, u16) {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    let host_port = rest.split(['/', '?']).next().unwrap_or(rest);
    match host_port.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), port.parse().unwrap_or(5432)),
        None => (host_port.to_owned(), 5432),
    }
}

fn loopback(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "localhost" | "::1" | "[::1]")
}

/// The loopback port of a single-broker `KAFKA_BROKERS`, if it is one.
fn local_broker_port(brokers: &str) -> Option<u16> {
    let (host, port) = brokers.trim().rsplit_once(':')?;
    (loopback(host) && !brokers.contains(',')).then(|| port.parse().ok())?
}

struct Checkout {
    state: PathBuf,
    postgres: Option<postgres::Cluster>,
    kafka: Option<kafka::Cluster>,
    kafka_pid: PidFile,
}

impl Checkout {
    fn new(cli: &Cli) -> anyhow::Result<Self> {
        std::fs::create_dir_all(cli.state.join("pids"))?;
        std::fs::create_dir_all(cli.state.join("logs"))?;
        let state = std::fs::canonicalize(&cli.state)?;
        let (host, port) = pg_address(&cli.database_url);
        let postgres =
            loopback(&host).then(|| postgres::Cluster::new(state.join("postgres"), port));
        // Kafka reads its files from its own working directory: absolute.
        let kafka_dir = match &cli.kafka_dir {
            Some(dir) => std::path::absolute(dir)?,
            None => state.join("kafka"),
        };
        let kafka = local_broker_port(&cli.kafka_brokers)
            .map(|port| kafka::Cluster::single(kafka_dir, port));
        Ok(Self {
            kafka_pid: PidFile::new(state.join("pids").join("kafka.pid")),
            state,
            postgres,
            kafka,
        })
    }

    fn postgres_up(&self, cli: &Cli, owned: bool) -> anyhow::Result<()> {
        let Some(cluster) = &self.postgres else {
            say(format!(
                "PostgreSQL: using the server of DATABASE_URL ({})",
                pg_address(&cli.database_url).0
            ));
            return Ok(());
        };
        if cluster.running() {
            say(format!(
                "PostgreSQL: running on 127.0.0.1:{} ({})",
                cluster.port(),
                cluster.data_dir().display()
            ));
            return Ok(());
        }
        if port_open(cluster.port()) {
            let holder = port_holder(cluster.port()).unwrap_or_default();
            if owned {
                ensure_port_free(cluster.port(), "PostgreSQL")?;
            }
            say(format!(
                "PostgreSQL: using the server another process runs on 127.0.0.1:{}: {holder}",
                cluster.port()
            ));
            return Ok(());
        }
        let started = Instant::now();
        cluster.start()?;
        say(format!(
            "PostgreSQL: started on 127.0.0.1:{} in {:.1} s (data: {}, log: {})",
            cluster.port(),
            started.elapsed().as_secs_f64(),
            cluster.data_dir().display(),
            cluster.log().display()
        ));
        Ok(())
    }

    fn kafka_up(&self, cli: &Cli, owned: bool) -> anyhow::Result<()> {
        let Some(cluster) = &self.kafka else {
            say(format!("Kafka: using KAFKA_BROKERS={}", cli.kafka_brokers));
            return Ok(());
        };
        let port = cluster.port(0);
        if let Some(pid) = self.kafka_pid.pid() {
            say(format!("Kafka: running on 127.0.0.1:{port} (pid {pid})"));
            return Ok(());
        }
        for p in cluster.ports() {
            if port_open(p) {
                let holder = port_holder(p).unwrap_or_default();
                if owned || p != port {
                    ensure_port_free(p, "Kafka")?;
                }
                say(format!(
                    "Kafka: using the broker another process runs on 127.0.0.1:{port}: {holder}"
                ));
                return Ok(());
            }
        }
        let started = Instant::now();
        cluster.prepare()?;
        let log = self.state.join("logs").join("kafka.log");
        let pid = self.kafka_pid.spawn(&cluster.node(0)?, &log)?;
        say(format!(
            "Kafka {}: starting (pid {pid}, log: {})",
            kafka::version(),
            log.display()
        ));
        stack::process::wait_until(
            &format!("Kafka on 127.0.0.1:{port}"),
            Duration::from_secs(120),
            || {
                anyhow::ensure!(
                    self.kafka_pid.pid().is_some(),
                    "Kafka exited; see {}",
                    log.display()
                );
                Ok(port_open(port))
            },
        )?;
        say(format!(
            "Kafka {}: ready on 127.0.0.1:{port} in {:.1} s (one KRaft node; log dir {})",
            kafka::version(),
            started.elapsed().as_secs_f64(),
            cluster.node_dir(0).join("data").display()
        ));
        Ok(())
    }

    fn down(&self, postgres: bool, kafka: bool) -> anyhow::Result<()> {
        if let (false, Some(pid)) = (postgres, self.kafka_pid.pid()) {
            // A clean shutdown closes the log, so the next start has nothing
            // to recover.
            self.kafka_pid.stop(Duration::from_secs(60))?;
            say(format!("Kafka stopped (pid {pid})"));
        }
        if kafka {
            return Ok(());
        }
        if let Some(cluster) = &self.postgres {
            if cluster.stop()? {
                say("PostgreSQL stopped");
            }
        }
        Ok(())
    }

    fn status(&self) {
        match &self.postgres {
            Some(cluster) if cluster.running() => {
                println!("postgres running (127.0.0.1:{})", cluster.port())
            }
            Some(_) => println!("postgres stopped"),
            None => println!("postgres external"),
        }
        match (&self.kafka, self.kafka_pid.pid()) {
            (Some(_), Some(pid)) => println!("kafka    running (pid {pid})"),
            (Some(_), None) => println!("kafka    stopped"),
            (None, _) => println!("kafka    external"),
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let result = Checkout::new(&cli).and_then(|checkout| match &cli.command {
        &Cmd::Up {
            postgres,
            kafka,
            owned,
        } => {
            if !kafka {
                checkout.postgres_up(&cli, owned)?;
            }
            if !postgres {
                checkout.kafka_up(&cli, owned)?;
            }
            Ok(())
        }
        &Cmd::Down { postgres, kafka } => checkout.down(postgres, kafka),
        Cmd::Status => {
            checkout.status();
            Ok(())
        }
    });
    if let Err(error) = result {
        eprintln!("[stack] {error:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_from_the_urls() {
        assert_eq!(
            pg_address("postgres://postgres@127.0.0.1:5432/booking"),
            ("127.0.0.1".into(), 5432)
        );
        assert_eq!(
            pg_address("postgres://u:p@db.example:6543/x?sslmode=require"),
            ("db.example".into(), 6543)
        );
        assert_eq!(
            pg_address("postgres://localhost/x"),
            ("localhost".into(), 5432)
        );
        assert_eq!(local_broker_port("127.0.0.1:9092"), Some(9092));
        assert_eq!(local_broker_port("127.0.0.1:9092,127.0.0.1:9093"), None);
        assert_eq!(local_broker_port("kafka:9092"), None);
    }
}
