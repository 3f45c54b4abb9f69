//! Apache Kafka in KRaft mode: one node that is both broker and controller
//! (`./dev up`, `./dev test`, the benchmark), or several on loopback that
//! replicate every partition (the chaos run).
//!
//! The broker is the `org.apache.kafka:kafka_2.13` artifact of Maven
//! Central at the version `tools/kafka/pom.xml` pins. Maven resolves it
//! once into the local Maven repository; the launcher keeps the resulting
//! classpath in the cluster's directory and starts `kafka.Kafka` on it.
//!
//! What a node promises: a produce with `acks=all` is acknowledged once
//! every in-sync replica has it in its log (the page cache; Kafka leaves
//! fsync to the operating system), so a killed broker process loses
//! nothing it acknowledged, while a machine that loses power may lose the
//! last seconds of a single node. A replicated cluster with
//! `min.insync.replicas` = 2 keeps every acknowledged record while one
//! broker is lost, whatever the cause.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::install::{ensure_java, ensure_maven};
use crate::process::{run, say, Spec};

/// The Maven project that names the broker's artifacts.
const POM: &str = include_str!("../../tools/kafka/pom.xml");
/// The broker's logging configuration.
const LOG4J: &str = include_str!("../../tools/kafka/log4j2.properties");

/// The Kafka version `tools/kafka/pom.xml` pins.
pub fn version() -> &'static str {
    POM.split("<kafka.version>")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap_or("unknown")
}

/// A cluster of `nodes` KRaft nodes on loopback.
#[derive(Debug, Clone)]
pub struct Cluster {
    dir: PathBuf,
    nodes: usize,
    base_port: u16,
    controller_base_port: u16,
    heap_mb: u32,
    rebalance_delay_ms: u32,
}

impl Cluster {
    /// One node, listening for clients on `port` and for its controller on
    /// `port + 1`, keeping its log under `dir`.
    pub fn single(dir: impl Into<PathBuf>, port: u16) -> Self {
        Self {
            dir: dir.into(),
            nodes: 1,
            base_port: port,
            controller_base_port: port + 1,
            heap_mb: 1024,
            rebalance_delay_ms: 0,
        }
    }

    /// `nodes` nodes, node `i` (0-based) listening for clients on
    /// `base_port + i` and for the controllers on `controller_base_port + i`.
    pub fn replicated(
        dir: impl Into<PathBuf>,
        nodes: usize,
        base_port: u16,
        controller_base_port: u16,
    ) -> Self {
        Self {
            dir: dir.into(),
            nodes,
            base_port,
            controller_base_port,
            heap_mb: 512,
            rebalance_delay_ms: 0,
        }
    }

    /// How many nodes.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Node `i`'s client port.
    pub fn port(&self, i: usize) -> u16 {
        self.base_port + i as u16
    }

    /// Node `i`'s controller port.
    pub fn controller_port(&self, i: usize) -> u16 {
        self.controller_base_port + i as u16
    }

    /// Every node's client port, then every controller port.
    pub fn ports(&self) -> Vec<u16> {
        (0..self.nodes)
            .map(|i| self.port(i))
            .chain((0..self.nodes).map(|i| self.controller_port(i)))
            .collect()
    }

    /// The bootstrap servers (`KAFKA_BROKERS`).
    pub fn bootstrap(&self) -> String {
        (0..self.nodes)
            .map(|i| format!("127.0.0.1:{}", self.port(i)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Replicas of every partition (internal topics included): three, or
    /// as many nodes as there are.
    pub fn replication_factor(&self) -> usize {
        self.nodes.min(3)
    }

    /// Replicas that must have a record before a produce with `acks=all`
    /// is acknowledged: all but one of them, at least one.
    pub fn min_insync_replicas(&self) -> usize {
        self.replication_factor().saturating_sub(1).max(1)
    }

    /// Node `i`'s directory (its configuration and, under `data`, its log).
    pub fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node-{}", i + 1))
    }

    /// Node `i`'s output.
    pub fn log(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("server.log")
    }

    /// Node `i`'s id in the cluster (1-based).
    pub fn node_id(i: usize) -> usize {
        i + 1
    }

    fn properties(&self, i: usize) -> String {
        let voters = (0..self.nodes)
            .map(|n| format!("{}@127.0.0.1:{}", Self::node_id(n), self.controller_port(n)))
            .collect::<Vec<_>>()
            .join(",");
        let rf = self.replication_factor();
        let min_isr = self.min_insync_replicas();
        let data = self.node_dir(i).join("data");
        format!(
            "# Written by the launcher (stack/src/kafka.rs) on every start.\n\
             process.roles=broker,controller\n\
             node.id={id}\n\
             controller.quorum.voters={voters}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
             controller.listener.names=CONTROLLER\n\
             inter.broker.listener.name=PLAINTEXT\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
             log.dirs={data}\n\
             # The project creates its topics with their settings (workers --setup-only).\n\
             auto.create.topics.enable=false\n\
             default.replication.factor={rf}\n\
             min.insync.replicas={min_isr}\n\
             unclean.leader.election.enable=false\n\
             offsets.topic.replication.factor={rf}\n\
             offsets.topic.num.partitions=10\n\
             transaction.state.log.replication.factor={rf}\n\
             transaction.state.log.min.isr={min_isr}\n\
             share.coordinator.state.topic.replication.factor={rf}\n\
             share.coordinator.state.topic.min.isr={min_isr}\n\
             # A group's first members are assigned at once instead of after 3 s.\n\
             group.initial.rebalance.delay.ms={delay}\n",
            id = Self::node_id(i),
            port = self.port(i),
            cport = self.controller_port(i),
            data = data.display(),
            delay = self.rebalance_delay_ms,
        )
    }

    /// Resolves the broker (Maven, once), writes each node's configuration
    /// and formats the storage of nodes that have none. Keeps an existing
    /// log: a restarted cluster has every record it had.
    pub fn prepare(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        self.classpath()?;
        std::fs::write(self.dir.join("log4j2.properties"), LOG4J)?;
        let id_file = self.dir.join("cluster-id");
        let cluster_id = match std::fs::read_to_string(&id_file) {
            Ok(id) => id.trim().to_owned(),
            Err(_) => {
                // A Kafka cluster id: 16 random bytes in URL-safe base64.
                let id = URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
                std::fs::write(&id_file, &id)?;
                id
            }
        };
        for i in 0..self.nodes {
            let dir = self.node_dir(i);
            std::fs::create_dir_all(&dir)?;
            let config = dir.join("server.properties");
            std::fs::write(&config, self.properties(i))?;
            if !dir.join("data").join("meta.properties").exists() {
                let mut format = self.java(i)?;
                format.args([
                    "kafka.tools.StorageTool",
                    "format",
                    "--ignore-formatted",
                    "-t",
                    &cluster_id,
                    "-c",
                ]);
                format.arg(&config);
                run(
                    &mut format,
                    &format!("formatting Kafka node {}'s storage", Self::node_id(i)),
                )?;
            }
        }
        Ok(())
    }

    /// A `java` command on the broker's classpath with node `i`'s logging.
    fn java(&self, i: usize) -> anyhow::Result<Command> {
        let mut command = Command::new("java");
        command
            .arg("-cp")
            .arg(self.classpath()?)
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.dir.join("log4j2.properties").display()
            ))
            .current_dir(self.node_dir(i));
        Ok(command)
    }

    /// Node `i`'s broker process ([`Cluster::prepare`] first).
    pub fn node(&self, i: usize) -> anyhow::Result<Spec> {
        let heap = format!("{}m", self.heap_mb);
        let mut args: Vec<String> = vec![
            format!("-Xms{heap}"),
            format!("-Xmx{heap}"),
            // The JVM settings of Kafka's own start script.
            "-XX:+UseG1GC".into(),
            "-XX:MaxGCPauseMillis=20".into(),
            "-XX:InitiatingHeapOccupancyPercent=35".into(),
            "-XX:+ExplicitGCInvokesConcurrent".into(),
            "-XX:MaxInlineLevel=15".into(),
            "-XX:+ExitOnOutOfMemoryError".into(),
            "-Djava.awt.headless=true".into(),
            format!("-Dbooking.kafka.node={}", Self::node_id(i)),
            format!(
                "-Dlog4j2.configurationFile={}",
                self.dir.join("log4j2.properties").display()
            ),
            "-cp".into(),
            self.classpath()?,
            "kafka.Kafka".into(),
        ];
        args.push(
            self.node_dir(i)
                .join("server.properties")
                .display()
                .to_string(),
        );
        Ok(Spec {
            name: format!("kafka-{}", Self::node_id(i)),
            program: "java".into(),
            args,
            env: Vec::new(),
            cwd: self.node_dir(i),
        })
    }

    /// The classpath of the pinned broker: read from the cluster's
    /// directory or from the machine's cache of it (in the temporary
    /// directory, named after the version, so the chaos run's and the
    /// tests' fresh clusters share it), or resolved by Maven (downloading
    /// from Maven Central into ~/.m2 the first time) when the pin changed
    /// or a jar is gone.
    pub fn classpath(&self) -> anyhow::Result<String> {
        let cached = self.dir.join("classpath.txt");
        let pom = self.dir.join("pom.xml");
        let shared = std::env::temp_dir().join(format!("booking-kafka-{}.classpath", version()));
        let usable = |path: &Path| {
            std::fs::read_to_string(path)
                .ok()
                .filter(|c| !c.is_empty() && c.split(':').all(|jar| Path::new(jar).is_file()))
        };
        if std::fs::read_to_string(&pom).is_ok_and(|p| p == POM) {
            if let Some(classpath) = usable(&cached) {
                return Ok(classpath);
            }
        }
        if let Some(classpath) = usable(&shared) {
            std::fs::create_dir_all(&self.dir)?;
            std::fs::write(&pom, POM)?;
            std::fs::write(&cached, &classpath)?;
            return Ok(classpath);
        }
        ensure_java()?;
        ensure_maven()?;
        std::fs::create_dir_all(&self.dir)?;
        std::fs::write(&pom, POM)?;
        say(format!(
            "resolving Apache Kafka {} with Maven (about 45 MB from Maven Central into ~/.m2, unless they are there already)",
            version()
        ));
        let started = std::time::Instant::now();
        let maven_log = self.dir.join("maven.log");
        let status = Command::new("mvn")
            .args(["-B", "-ntp", "-Dstyle.color=never", "-f"])
            .arg(&pom)
            .args([
                "dependency:build-classpath",
                "-Dmdep.includeScope=runtime",
                "-Dmdep.outputFile=classpath.txt",
            ])
            .current_dir(&self.dir)
            .stdout(std::fs::File::create(&maven_log)?)
            .stderr(std::fs::File::options().append(true).open(&maven_log)?)
            .status()
            .context("running mvn")?;
        anyhow::ensure!(
            status.success(),
            "Maven could not resolve Apache Kafka {}; see {}",
            version(),
            maven_log.display()
        );
        say(format!(
            "Apache Kafka {} resolved in {:.0} s",
            version(),
            started.elapsed().as_secs_f64()
        ));
        let classpath = std::fs::read_to_string(&cached)?.trim().to_owned();
        std::fs::write(&cached, &classpath)?;
        // Another process may write it at the same time: write aside, then
        // rename.
        let aside = shared.with_extension(format!("{}.tmp", std::process::id()));
        if std::fs::write(&aside, &classpath).is_ok() {
            let _ = std::fs::rename(&aside, &shared);
        }
        Ok(classpath)
    }

    /// The id (1-based) of the node that leads the metadata quorum (the
    /// active controller), as node `from`'s quorum state records it.
    pub fn controller_leader(&self, from: usize) -> Option<usize> {
        let state = std::fs::read_to_string(
            self.node_dir(from)
                .join("data")
                .join("__cluster_metadata-0")
                .join("quorum-state"),
        )
        .ok()?;
        let rest = state.split("\"leaderId\":").nth(1)?;
        let id: i64 = rest
            .trim_start()
            .split(|c: char| !(c.is_ascii_digit() || c == '-'))
            .next()?
            .parse()
            .ok()?;
        usize::try_from(id)
            .ok()
            .filter(|id| (1..=self.nodes).contains(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_read_from_the_pom() {
        assert!(version().starts_with("4."), "{}", version());
    }

    #[test]
    fn a_replicated_cluster_needs_two_of_three_replicas() {
        let cluster = Cluster::replicated("/tmp/x", 3, 19092, 19192);
        assert_eq!(cluster.replication_factor(), 3);
        assert_eq!(cluster.min_insync_replicas(), 2);
        assert_eq!(
            cluster.bootstrap(),
            "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
        );
        let props = cluster.properties(1);
        assert!(props.contains("node.id=2\n"));
        assert!(props.contains(
            "controller.quorum.voters=1@127.0.0.1:19192,2@127.0.0.1:19193,3@127.0.0.1:19194\n"
        ));
        let single = Cluster::single("/tmp/y", 9092);
        assert_eq!(single.min_insync_replicas(), 1);
    }
}
