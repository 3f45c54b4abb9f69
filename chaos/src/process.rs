//! The stack's processes: started with their environment and a log file,
//! signalled, killed, restarted. Every child dies with the chaos run.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// One process of the stack.
pub struct Service {
    /// Short name for logs and the report.
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Service {
    /// A service that runs `program args` in `cwd` with `env`, appending
    /// its output to `log`.
    pub fn new(
        name: impl Into<String>,
        program: impl Into<PathBuf>,
        args: &[&str],
        env: Vec<(String, String)>,
        cwd: impl Into<PathBuf>,
        log: impl Into<PathBuf>,
    ) -> Self {
        Self {
            name: name.into(),
            program: program.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env,
            cwd: cwd.into(),
            log: log.into(),
            child: None,
        }
    }

    /// The process `spec` describes (a Kafka node), appending to `log`.
    pub fn from_spec(spec: stack::process::Spec, log: impl Into<PathBuf>) -> Self {
        Self {
            name: spec.name,
            program: spec.program,
            args: spec.args,
            env: spec.env,
            cwd: spec.cwd,
            log: log.into(),
            child: None,
        }
    }

    /// Starts the process (again).
    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .env_clear()
            .envs(stack::process::inherited())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("starting {} ({}): {e}", self.name, self.program.display())
            })?;
        self.child = Some(child);
        Ok(())
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Sends `signal` to the running process.
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow::anyhow!("{} is not running", self.name))?;
        let pid = i32::try_from(pid)?;
        kill(Pid::from_raw(pid), signal)?;
        Ok(())
    }

    /// SIGKILL, and reap.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// SIGTERM, then waits up to `grace` for a clean exit (SIGKILL after
    /// that). Returns whether it exited cleanly in time: status 0, or 143,
    /// which a JVM (a Kafka node) exits with once its shutdown hooks ran
    /// on SIGTERM.
    pub async fn terminate(&mut self, grace: Duration) -> anyhow::Result<bool> {
        let Some(mut child) = self.child.take() else {
            return Ok(true);
        };
        if let Some(pid) = child.id() {
            let _ = kill(Pid::from_raw(i32::try_from(pid)?), Signal::SIGTERM);
        }
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(status) => {
                let status = status?;
                Ok(status.success() || status.code() == Some(143))
            }
            Err(_) => {
                child.kill().await?;
                Ok(false)
            }
        }
    }

    /// Whether it has exited by itself (it crashed).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }
}

/// Whether something accepts connections on local `port`.
pub async fn port_open(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

/// Waits until `check` holds, up to `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
