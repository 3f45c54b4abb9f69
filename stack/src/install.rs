//! Installing what the stack runs on from Debian's packages, where it is
//! missing: PostgreSQL, a Java runtime and Maven for Kafka, kcat. A machine
//! without apt (or without the rights to use it) gets one line that says
//! what to install.

use std::process::Command;

use crate::process::{on_path, run, say};

/// Whether this process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Installs Debian `packages` for `why`, or fails with one line saying
/// what to install by hand.
pub fn apt(packages: &[&str], why: &str) -> anyhow::Result<()> {
    let list = packages.join(" ");
    let sudo = if is_root() {
        None
    } else if on_path("sudo")
        && Command::new("sudo")
            .args(["-n", "true"])
            .status()
            .is_ok_and(|s| s.success())
    {
        Some("sudo")
    } else {
        anyhow::bail!("{why} needs {list}: install it (Debian: sudo apt-get install {list}) and run this again");
    };
    anyhow::ensure!(
        on_path("apt-get"),
        "{why} needs {list}, and this machine has no apt-get: install it with your package manager and run this again"
    );
    let apt = |args: &[&str]| {
        let mut command = match sudo {
            Some(sudo) => {
                let mut c = Command::new(sudo);
                c.arg("apt-get");
                c
            }
            None => Command::new("apt-get"),
        };
        command
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-y", "-q", "-o", "Dpkg::Use-Pty=0"])
            .args(args);
        command
    };
    say(format!("installing {list} from Debian's packages ({why})"));
    // The package lists of a fresh machine may be missing or old: read them
    // once when the first try fails.
    if run(
        apt(&["install", "--no-install-recommends"]).args(packages),
        "apt-get install",
    )
    .is_err()
    {
        say("apt-get update (the package lists were missing or old)");
        run(&mut apt(&["update"]), "apt-get update")?;
        run(
            apt(&["install", "--no-install-recommends"]).args(packages),
            "apt-get install",
        )
        .map_err(|e| anyhow::anyhow!("{why}: installing {list} failed: {e}"))?;
    }
    say(format!("installed {list}"));
    Ok(())
}

/// The major version of the `java` on the PATH, if one runs.
fn java_major() -> Option<u32> {
    let output = Command::new("java").arg("-version").output().ok()?;
    // `openjdk version "17.0.15" 2025-04-15` on stderr.
    let text = String::from_utf8_lossy(&output.stderr);
    let version = text.split('"').nth(1)?;
    version.split('.').next()?.parse().ok()
}

/// A Java runtime of version 17 or later (Kafka 4's brokers need it).
pub fn ensure_java() -> anyhow::Result<()> {
    match java_major() {
        Some(major) if major >= 17 => Ok(()),
        Some(major) => anyhow::bail!(
            "Kafka needs Java 17 or later and `java` here is {major}: install openjdk-17-jre-headless (or set PATH to a newer java)"
        ),
        None => apt(&["openjdk-17-jre-headless"], "Apache Kafka's broker"),
    }
}

/// Maven, which fetches Kafka's jars from Maven Central.
pub fn ensure_maven() -> anyhow::Result<()> {
    if on_path("mvn") {
        return Ok(());
    }
    apt(&["maven"], "fetching Apache Kafka from Maven Central")
}
