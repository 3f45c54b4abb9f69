//! A PostgreSQL cluster of the project's own: a data directory under the
//! state directory (`.dev/postgres`), listening on loopback only, with
//! `trust` authentication for the `postgres` role (a local development
//! server; never expose it). Debian's `postgresql` package provides the
//! server; the launcher installs it where it is missing.
//!
//! Postgres refuses to run as root, so a launcher running as root runs the
//! server's commands as the `postgres` user the package creates.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::install::{apt, is_root};
use crate::process::{ensure_port_free, run, say, wait_until};

/// A cluster: its directory and port.
#[derive(Debug, Clone)]
pub struct Cluster {
    dir: PathBuf,
    port: u16,
}

impl Cluster {
    /// The cluster kept in `dir` (created on first start), on
    /// `127.0.0.1:port`.
    /// When the launcher runs as root and the `postgres` user cannot
    /// reach `dir` (a checkout under a private directory), the cluster
    /// lives in the system's temporary directory instead, at a place
    /// named after `dir`.
    pub fn new(dir: impl Into<PathBuf>, port: u16) -> Self {
        let mut dir: PathBuf = dir.into();
        if is_root() {
            let parent = dir
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| dir.clone());
            let reachable = Command::new("runuser")
                .args(["-u", "postgres", "--", "test", "-x"])
                .arg(&parent)
                .status()
                .is_ok_and(|s| s.success());
            if !reachable {
                use std::hash::{Hash, Hasher};
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                dir.hash(&mut hasher);
                dir =
                    std::env::temp_dir().join(format!("booking-postgres-{:016x}", hasher.finish()));
            }
        }
        Self { dir, port }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server's log.
    pub fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// A connection URL for `database` as the `postgres` role.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Whether the server of this cluster runs.
    pub fn running(&self) -> bool {
        let Ok(pid) = std::fs::read_to_string(self.data_dir().join("postmaster.pid")) else {
            return false;
        };
        pid.lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .is_some_and(crate::process::alive)
    }

    /// Installs the server where missing, creates the cluster on first use
    /// and starts it; returns once it accepts connections. A cluster that
    /// runs already is left as it is.
    pub fn start(&self) -> anyhow::Result<()> {
        if self.running() {
            return Ok(());
        }
        ensure_port_free(self.port, "PostgreSQL")?;
        let bin = bin_dir()?;
        if !self.data_dir().join("PG_VERSION").exists() {
            self.init(&bin)?;
        }
        // Room for the test suites' pools (a database and a pool per test,
        // several tests at once) and the chaos run's processes.
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c max_connections=300",
            self.port
        );
        let data = self.data_dir();
        let log = self.log();
        run(
            as_postgres(&bin.join("pg_ctl")).args([
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                path(&data)?,
                "-l",
                path(&log)?,
                "-o",
                &options,
            ]),
            &format!("starting PostgreSQL (log: {})", log.display()),
        )?;
        Ok(())
    }

    fn init(&self, bin: &Path) -> anyhow::Result<()> {
        say(format!(
            "creating a PostgreSQL cluster in {}",
            self.data_dir().display()
        ));
        std::fs::create_dir_all(&self.dir)?;
        if is_root() {
            // The server runs as `postgres`: it owns the cluster's directory
            // and must be able to reach it.
            let user = nix::unistd::User::from_name("postgres")?
                .context("the postgres user is missing (Debian's postgresql package creates it)")?;
            std::os::unix::fs::chown(&self.dir, Some(user.uid.as_raw()), Some(user.gid.as_raw()))?;
            let probe = Command::new("runuser")
                .args(["-u", "postgres", "--", "test", "-w"])
                .arg(&self.dir)
                .status()?;
            anyhow::ensure!(
                probe.success(),
                "the postgres user cannot reach {}: give its parent directories o+x (chmod o+x on each), or set DATABASE_URL to a server of your own",
                self.dir.display()
            );
        }
        run(
            as_postgres(&bin.join("initdb")).args([
                "-D",
                path(&self.data_dir())?,
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-instructions",
            ]),
            "initdb",
        )?;
        Ok(())
    }

    /// Stops the server (fast shutdown: connections are closed, the data is
    /// written). Whether it ran.
    pub fn stop(&self) -> anyhow::Result<bool> {
        self.pg_ctl_stop("fast")
    }

    /// Stops the server at once, as a crash would (it recovers from its
    /// WAL on the next start).
    pub fn stop_immediately(&self) -> anyhow::Result<bool> {
        self.pg_ctl_stop("immediate")
    }

    fn pg_ctl_stop(&self, mode: &str) -> anyhow::Result<bool> {
        if !self.running() {
            return Ok(false);
        }
        let bin = bin_dir()?;
        run(
            as_postgres(&bin.join("pg_ctl")).args([
                "stop",
                "-w",
                "-m",
                mode,
                "-D",
                path(&self.data_dir())?,
            ]),
            "stopping PostgreSQL",
        )?;
        Ok(true)
    }

    /// Restarts the server: every connection is cut.
    pub fn restart(&self) -> anyhow::Result<()> {
        self.stop()?;
        wait_until(
            "PostgreSQL's port to close",
            Duration::from_secs(30),
            || Ok(!crate::process::port_open(self.port)),
        )?;
        self.start()
    }
}

fn path(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// A command that runs `program` as the `postgres` user when the launcher
/// runs as root (Postgres refuses root), as the launcher's user otherwise.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// The newest installed server's `bin` directory (`pg_ctl`, `initdb`),
/// installing Debian's `postgresql` package where none is.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = installed_bin_dir() {
        return Ok(dir);
    }
    apt(&["postgresql"], "the PostgreSQL server")?;
    installed_bin_dir()
        .context("PostgreSQL was installed but no pg_ctl is under /usr/lib/postgresql/*/bin")
}

fn installed_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("pg_ctl").is_file() && bin.join("initdb").is_file()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}
