//! The processes the launcher starts, and the checks around them: what a
//! process is ([`Spec`]), a daemon left running with a pid file
//! ([`PidFile`], for `./dev up`), ports and who holds them, and waiting
//! for a condition with progress.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Prints one line of progress to stderr, as `[stack] …`.
pub fn say(text: impl AsRef<str>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "[stack] {}", text.as_ref());
}

/// How to run one process: what the chaos run wraps in a child it owns and
/// `./dev up` leaves running behind a [`PidFile`].
#[derive(Debug, Clone)]
pub struct Spec {
    /// Short name (`kafka-1`, `postgres`).
    pub name: String,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables set on top of a clean environment ([`Spec::command`]).
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: PathBuf,
}

/// Variables a child keeps from the launcher's environment: what finds
/// programs and libraries and names the user, nothing that configures the
/// project (a child must not pick up a `DATABASE_URL` or `TOPIC_PREFIX`
/// meant for something else).
const INHERITED: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "TZ",
    "JAVA_HOME",
    "TMPDIR",
];

/// The variables of [`INHERITED`] that the launcher's environment sets:
/// what a child started with a clean environment keeps.
pub fn inherited() -> impl Iterator<Item = (&'static str, String)> {
    INHERITED
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (*k, v)))
}

impl Spec {
    /// The command, with a clean environment plus [`Spec::env`], stdin
    /// closed.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .env_clear()
            .envs(inherited())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&self.cwd)
            .stdin(Stdio::null());
        command
    }
}

/// A process left running after the launcher exits, known by the pid in a
/// file: what `./dev up` starts and `./dev down` stops.
#[derive(Debug, Clone)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// The pid file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The pid, while that process runs.
    pub fn pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(&self.path)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        alive(pid).then_some(pid)
    }

    /// Starts `spec` in a process group of its own (an interrupt of the
    /// terminal that ran `./dev up` does not reach it), appending its
    /// output to `log`, and records its pid.
    pub fn spawn(&self, spec: &Spec, log: &Path) -> anyhow::Result<i32> {
        use std::os::unix::process::CommandExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let child = spec
            .command()
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {} ({})", spec.name, spec.program.display()))?;
        let pid = i32::try_from(child.id())?;
        std::fs::write(&self.path, format!("{pid}\n"))?;
        Ok(pid)
    }

    /// Stops the process: SIGTERM, then SIGKILL after `grace`. Whether
    /// one ran.
    pub fn stop(&self, grace: Duration) -> anyhow::Result<bool> {
        let Some(pid) = self.pid() else {
            let _ = std::fs::remove_file(&self.path);
            return Ok(false);
        };
        terminate(pid, grace);
        let _ = std::fs::remove_file(&self.path);
        Ok(true)
    }
}

/// Whether process `pid` exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    // A zombie (exited, not reaped) still answers signal 0.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// SIGTERM to `pid`, then SIGKILL if it still runs after `grace`.
pub fn terminate(pid: i32, grace: Duration) {
    let pid_ = Pid::from_raw(pid);
    let _ = kill(pid_, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if alive(pid) {
        let _ = kill(pid_, Signal::SIGKILL);
        while alive(pid) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether something accepts connections on `127.0.0.1:port`.
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// The process listening on local TCP port `port`, as `pid (command)`, if
/// one does.
pub fn port_holder(port: u16) -> Option<String> {
    let wanted = format!(":{port:04X}");
    let mut inode = None;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 9 && fields[1].ends_with(&wanted) && fields[3] == "0A" {
                inode = Some(fields[9].to_owned());
            }
        }
    }
    let inode = inode?;
    let socket = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path())
                .is_ok_and(|target| target.as_os_str() == socket.as_str())
            {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmdline: String = String::from_utf8_lossy(&cmdline)
                    .replace('\0', " ")
                    .chars()
                    .take(80)
                    .collect();
                return Some(format!("{pid} ({})", cmdline.trim()));
            }
        }
    }
    Some("a process of another user".to_owned())
}

/// Fails with one line naming the holder when `port` is taken.
pub fn ensure_port_free(port: u16, what: &str) -> anyhow::Result<()> {
    if port_open(port) {
        anyhow::bail!(
            "127.0.0.1:{port} ({what}) is held by a process this launcher did not start: {}; stop it or pick another port",
            port_holder(port).unwrap_or_else(|| "unknown".into())
        );
    }
    Ok(())
}

/// Waits until `check` holds, up to `timeout`, saying every 10 s that it
/// still waits; `check` may fail the wait at once (the process died).
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut told = Duration::ZERO;
    while !check()? {
        let waited = started.elapsed();
        anyhow::ensure!(
            waited < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        if waited >= told + Duration::from_secs(10) {
            told = waited;
            say(format!("still waiting for {what} ({} s)", waited.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(started.elapsed())
}

/// Runs `command` to the end; fails with its output's tail when it fails.
pub fn run(command: &mut Command, what: &str) -> anyhow::Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: could not run {:?}", command.get_program()))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stdout.lines().chain(stderr.lines()).collect();
        let tail = tail[tail.len().saturating_sub(15)..].join("\n");
        anyhow::bail!("{what} failed ({}):\n{tail}", output.status);
    }
    Ok(stdout)
}

/// Whether `program` is on the PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}
