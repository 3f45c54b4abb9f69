//! Configuration every process shares. Each field reads an environment
//! variable (docs/design.md §8) and has a default that works for the local stack.

use clap::{Args, Parser};
use schemas::TopicNames;

/// A configuration from its defaults alone: every argument's
/// `default_value`, no environment variable read; `args` give what has no
/// default (`["--admin-token", "…"]`). Tests and tools start from this, so
/// each default is written once, in its argument's attribute.
///
/// # Panics
/// When `args` leave a required argument out or name an unknown one (a
/// programming error of the caller).
pub fn from_defaults<P: Parser>(args: &[&str]) -> P {
    let command = P::command().mut_args(|arg| arg.env(None::<&'static str>));
    let matches = command
        .try_get_matches_from(std::iter::once("defaults").chain(args.iter().copied()))
        .unwrap_or_else(|error| panic!("the defaults do not parse: {error}"));
    P::from_arg_matches(&matches)
        .unwrap_or_else(|error| panic!("the defaults do not parse: {error}"))
}

/// A configuration from `vars` (name and value) as if they were the whole
/// environment: each argument reads its variable from them, the others
/// take their defaults. A tool that starts a process with an environment
/// of its own reads that process's configuration this way, with every
/// default and validation the process itself applies.
///
/// # Errors
/// When a value does not parse, or a required argument has no variable.
pub fn from_vars<P: Parser>(vars: &[(String, String)]) -> Result<P, clap::Error> {
    let mut args = vec!["vars".to_owned()];
    for arg in P::command().get_arguments() {
        let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        if let Some((_, value)) = vars.iter().rev().find(|(name, _)| env == name.as_str()) {
            args.push(format!("--{long}={value}"));
        }
    }
    let command = P::command().mut_args(|arg| arg.env(None::<&'static str>));
    let matches = command.try_get_matches_from(args)?;
    P::from_arg_matches(&matches)
}

/// The environment variables of processes' configurations, as the table of
/// `docs/configuration.md`: one row per variable, the processes that read
/// it, its meaning (the argument's doc comment) and its default, all read
/// from the `clap` definitions, so the page cannot drift from the code.
/// `processes` pairs each process's name with its command.
pub fn variables_table(processes: &[(&str, clap::Command)]) -> String {
    // Variable -> (readers, meaning, default), in first-seen order.
    let mut rows: Vec<(String, Vec<&str>, String, String)> = Vec::new();
    for (process, command) in processes {
        for arg in command.get_arguments() {
            let Some(env) = arg.get_env() else { continue };
            let name = env.to_string_lossy().into_owned();
            if let Some(row) = rows.iter_mut().find(|row| row.0 == name) {
                row.1.push(process);
                continue;
            }
            let help = arg
                .get_long_help()
                .or(arg.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            let meaning = help
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .replace('|', "\\|");
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let default = match defaults.as_slice() {
                [] if arg.is_required_set() => "required".to_owned(),
                [] => "none".to_owned(),
                [one] if one.is_empty() => "empty".to_owned(),
                values => format!("`{}`", values.join(",")),
            };
            rows.push((name, vec![process], meaning, default));
        }
    }
    let mut out = String::from("| variable | read by | meaning | default |\n|---|---|---|---|\n");
    for (name, readers, meaning, default) in rows {
        out.push_str(&format!(
            "| `{name}` | {} | {meaning} | {default} |\n",
            readers.join(", ")
        ));
    }
    out
}

/// [`CommonConfig`] as a command of its own, for [`from_defaults`].
#[derive(Parser)]
struct Common {
    #[command(flatten)]
    common: CommonConfig,
}

/// Connection settings shared by every process.
#[derive(Debug, Clone, Args)]
pub struct CommonConfig {
    /// Postgres connection string.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/booking"
    )]
    pub database_url: String,

    /// Largest number of pooled Postgres connections of this process.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// Prefix put before every topic name, so several stacks can share a
    /// broker. Empty in a normal deployment.
    #[arg(long, env = "TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,

    /// How long a produce may wait for the broker's acknowledgement before
    /// the caller is told Kafka is unavailable, in milliseconds.
    #[arg(long, env = "KAFKA_PRODUCE_TIMEOUT_MS", default_value_t = 5_000)]
    pub kafka_produce_timeout_ms: u64,

    /// Producer linger: how long the producer waits to fill a batch, in
    /// milliseconds. Small values favour latency at low load; at 1 ms
    /// librdkafka's broker thread wakes so often that it costs the gateway
    /// twice the CPU of 5 ms (see bench/REPORT.md).
    #[arg(long, env = "KAFKA_LINGER_MS", default_value_t = 5)]
    pub kafka_linger_ms: u64,

    /// Longest a consumer fetch waits at the broker for new records, in
    /// milliseconds. Lower favours latency, higher saves broker work.
    #[arg(long, env = "KAFKA_FETCH_WAIT_MS", default_value_t = 50)]
    pub kafka_fetch_wait_ms: u64,

    /// How long a lane consumer may go without a heartbeat before the
    /// group coordinator gives its partitions to the others, in
    /// milliseconds: how long a killed worker's partitions wait. Kafka's
    /// brokers accept 6,000 at the least (`group.min.session.timeout.ms`).
    #[arg(long, env = "KAFKA_SESSION_TIMEOUT_MS", default_value_t = 6_000)]
    pub kafka_session_timeout_ms: u64,

    /// Largest record the producers send, in bytes (librdkafka's
    /// `message.max.bytes`): a larger one fails at once, for good. Keep it
    /// at or below the broker's limit.
    #[arg(long, env = "KAFKA_MESSAGE_MAX_BYTES", default_value_t = 1_000_000)]
    pub kafka_message_max_bytes: u32,

    /// Partitions of each request topic, used when the topics are created
    /// (an existing topic keeps its count). One partition is one lane task.
    #[arg(long, env = "KAFKA_REQUEST_PARTITIONS", default_value_t = schemas::topics::DEFAULT_REQUEST_PARTITIONS)]
    pub kafka_request_partitions: i32,

    /// Replicas of each topic the project creates (existing topics keep
    /// theirs). 1 for a single broker; 3 for a production cluster.
    #[arg(long, env = "KAFKA_REPLICATION_FACTOR", default_value_t = 1)]
    pub kafka_replication_factor: i32,

    /// `min.insync.replicas` of each topic the project creates: how many
    /// replicas must have a record before a produce (acks=all) is
    /// acknowledged. 1 for a single broker; 2 with three replicas, so one
    /// broker may be lost without losing an acknowledged record.
    #[arg(long, env = "KAFKA_MIN_INSYNC_REPLICAS", default_value_t = 1)]
    pub kafka_min_insync_replicas: i32,

    /// Log format: `json` for machines, `pretty` for people.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    pub log_format: String,

    /// How long decided request rows and the stats lane's counted orders are
    /// kept, in days. A pruned request answers 404; a record older than
    /// this is never applied (its dedup row may be gone), so keep the
    /// broker's retention of request topics and `order-events` at or below
    /// it, or accept that such records are skipped. The gateway reads it
    /// too: a request id older than this with no row was pruned.
    #[arg(long, env = "REQUEST_RETENTION_DAYS", default_value_t = 7)]
    pub request_retention_days: u32,
}

impl CommonConfig {
    /// Settings for a local stack: the defaults above, ignoring the
    /// environment. Tests start from this and override what they need.
    pub fn local() -> Self {
        from_defaults::<Common>(&[]).common
    }

    /// Topic names of this deployment.
    pub fn topics(&self) -> TopicNames {
        TopicNames::new(self.topic_prefix.clone())
            .with_request_partitions(self.kafka_request_partitions)
    }

    /// Retention horizon of request rows and counted orders (a day at least).
    pub fn retention(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.request_retention_days.max(1)) * 86_400)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_settings_are_the_defaults_whatever_the_environment() {
        // The environment may name another server (CI, ./dev test): the
        // defaults must not read it. No other test of this crate reads
        // TOPIC_PREFIX.
        std::env::set_var("TOPIC_PREFIX", "from-the-environment-");
        let local = CommonConfig::local();
        assert_eq!(
            local.database_url,
            "postgres://postgres@127.0.0.1:5432/booking"
        );
        assert_eq!(local.kafka_brokers, "127.0.0.1:9092");
        assert_eq!(local.topic_prefix, "");
        assert_eq!(local.kafka_produce_timeout_ms, 5_000);
        assert_eq!(local.database_max_connections, 16);
    }

    #[test]
    fn a_configuration_reads_the_variables_it_is_given_and_only_those() {
        let vars = [
            ("TOPIC_PREFIX", "chaos."),
            ("KAFKA_BROKERS", "127.0.0.1:19092,127.0.0.1:19093"),
            ("UNRELATED", "x"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let common = from_vars::<Common>(&vars).expect("parses").common;
        assert_eq!(common.topic_prefix, "chaos.");
        assert_eq!(common.kafka_brokers, "127.0.0.1:19092,127.0.0.1:19093");
        assert_eq!(common.kafka_produce_timeout_ms, 5_000);
        let wrong = [("KAFKA_PRODUCE_TIMEOUT_MS".to_owned(), "soon".to_owned())];
        assert!(from_vars::<Common>(&wrong).is_err());
    }
}
