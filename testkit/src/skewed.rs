//! A throwaway Postgres server whose clock is off: for tests of decisions
//! that must use one clock (the database's) when the processes' own clocks
//! disagree with it.
//!
//! The server runs under libfaketime (Debian package `faketime`, which
//! `./dev test` installs). The workers cannot be the ones skewed: librdkafka
//! computes its timed waits from the wall clock, and a faked one stalls them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// libfaketime, as the Debian package installs it.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// A running Postgres server with a skewed clock; stopped and removed on
/// drop.
pub struct SkewedPostgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

fn postgres_bin() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no Postgres server binaries under /usr/lib/postgresql"))
}

fn run(
    as_postgres: bool,
    program: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<()> {
    let mut command = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "env"]);
        for (k, v) in env {
            c.arg(format!("{k}={v}"));
        }
        c.arg(program);
        c
    } else {
        let mut c = Command::new(program);
        c.envs(env.iter().copied());
        c
    };
    let output = command.args(args).output()?;
    anyhow::ensure!(
        output.status.success(),
        "{} failed: {}",
        program.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl SkewedPostgres {
    /// Starts a fresh server whose clock is `offset` from the real one
    /// (libfaketime syntax: `+1h`, `-30m`).
    pub fn start(offset: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(
            Path::new(LIBFAKETIME).exists(),
            "{LIBFAKETIME} is missing: install the Debian package faketime (./dev test does)"
        );
        let bin = postgres_bin()?;
        let dir = std::env::temp_dir().join(format!("skewed-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let root = is_root();
        if root {
            let status = Command::new("chown").arg("postgres").arg(&dir).status()?;
            anyhow::ensure!(status.success(), "chown postgres {}", dir.display());
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let data = dir.join("data");
        let data_arg = data.to_string_lossy().into_owned();
        run(
            root,
            &bin.join("initdb"),
            &[
                "-D",
                &data_arg,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
            &[],
        )?;
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60",
            dir.display()
        );
        let log = dir.join("log").to_string_lossy().into_owned();
        run(
            root,
            &bin.join("pg_ctl"),
            &["-D", &data_arg, "-o", &options, "-l", &log, "-w", "start"],
            &[
                ("LD_PRELOAD", LIBFAKETIME),
                ("FAKETIME", offset),
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ],
        )?;
        Ok(Self { dir, bin, port })
    }

    /// A URL of the server (database `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for SkewedPostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data").to_string_lossy().into_owned();
        let _ = run(
            is_root(),
            &self.bin.join("pg_ctl"),
            &["-D", &data, "-m", "immediate", "stop"],
            &[],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
