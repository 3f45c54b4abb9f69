//! The chaos run (`./dev chaos`): a stack of its own under a mixed load,
//! a schedule of faults (broker killed and frozen, database connections
//! cut and the server restarted, workers killed, joining and leaving, the
//! relay's connections cut, the gateway restarted), then every guarantee
//! of docs/design.md §4 checked by the `verify` library.

#![warn(missing_docs)]

pub mod faults;
pub mod judge;
pub mod load;
pub mod process;
pub mod relay;
pub mod report;
pub mod stack;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use faults::{FaultKind, FaultRecord, Injector};
use report::{
    AmbiguousSummary, ChaosReport, EventSummary, OutboxDrain, PoisonSummary, ScenarioSummary,
};
use stack::Stack;
use uuid::Uuid;

/// Load under a fault schedule, then every guarantee checked.
#[derive(Debug, Clone, Parser)]
pub struct Settings {
    /// Every fault kind once (under 5 minutes); without it each kind runs
    /// `--rounds` times.
    #[arg(long)]
    pub quick: bool,
    /// Rounds of the fault schedule (default 1 with --quick, else 3).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Leaves a fault kind out (repeatable), say one this machine cannot
    /// inject; the report names it. Every other fault that cannot be
    /// injected fails the run.
    #[arg(long, value_enum)]
    pub without: Vec<FaultKind>,
    /// Where the `gateway` and `workers` binaries are.
    #[arg(long, default_value = "target/debug")]
    pub bin_dir: PathBuf,
    /// Port of the run's own Postgres cluster (created afresh under the
    /// log directory).
    #[arg(long, default_value_t = 15432)]
    pub postgres_port: u16,
    /// The database the run creates in it.
    #[arg(long, default_value = "booking_chaos")]
    pub database: String,
    /// Kafka nodes of the run's own cluster (each broker and controller).
    #[arg(long, default_value_t = 3)]
    pub brokers: usize,
    /// Client port of the first Kafka node (node `i` listens on this + i).
    #[arg(long, default_value_t = 19092)]
    pub broker_port: u16,
    /// Controller port of the first Kafka node.
    #[arg(long, default_value_t = 19292)]
    pub controller_port: u16,
    /// Port of the run's gateway.
    #[arg(long, default_value_t = 18080)]
    pub gateway_port: u16,
    /// First port of the workers' health endpoints (one per worker).
    #[arg(long, default_value_t = 19191)]
    pub workers_port: u16,
    /// Target load over the four scenarios, requests per second: well below
    /// what a debug build of the stack sustains on a 2-core machine next to
    /// its three Kafka nodes, so faults, not saturation, decide the run.
    #[arg(long, default_value_t = 130.0)]
    pub rate: f64,
    /// Hold duration of the stack: rush holds are never paid and expire
    /// during the run.
    #[arg(long, default_value_t = 20)]
    pub hold_secs: u64,
    /// How long a client retries one call (503, cut off, key in progress).
    #[arg(long, default_value_t = 90)]
    pub patience_secs: u64,
    /// How long a broker stays frozen (past its 9 s session with the
    /// controller and the consumers' 6 s session).
    #[arg(long, default_value_t = 13)]
    pub pause_secs: u64,
    /// Where the report goes (`chaos.json`, `CHAOS.md`; a quick run writes
    /// `chaos-quick.json` and `CHAOS-quick.md`).
    #[arg(long, default_value = "bench")]
    pub out: PathBuf,
    /// Logs of the run's processes.
    #[arg(long, default_value = ".dev/chaos")]
    pub log_dir: PathBuf,
    /// Expected length of the load, seconds (sizes the booking seats).
    #[arg(skip = 110u64)]
    pub expected_secs: u64,
}

fn say(started: Instant, text: impl AsRef<str>) {
    eprintln!(
        "[chaos {:>6.1}s] {}",
        started.elapsed().as_secs_f64(),
        text.as_ref()
    );
}

/// Runs the whole thing and writes the report; the report says whether
/// everything held.
pub async fn run(mut settings: Settings) -> anyhow::Result<ChaosReport> {
    let started = Instant::now();
    let rounds = settings
        .rounds
        .unwrap_or(if settings.quick { 1 } else { 3 });
    // A quick run's load lasts about 220 s (the rolling restart alone up
    // to 80 s), a full one three times that; a booking pair takes a seat
    // and a user's queue token for good, so the seats must outlast the
    // load, or clients meet 403s (which fail the run).
    settings.expected_secs = 330 * if settings.quick { 1 } else { rounds as u64 };
    stack::check_ports(&settings).await?;
    std::fs::create_dir_all(&settings.log_dir)?;
    // The processes run from their log directory: absolute paths only.
    let absolute = |path: &std::path::Path| {
        std::fs::canonicalize(path).with_context(|| format!("{}", path.display()))
    };
    settings.log_dir = absolute(&settings.log_dir)?;
    settings.bin_dir = absolute(&settings.bin_dir)?;
    say(started, format!(
        "starting a stack of its own: {} Kafka nodes from 127.0.0.1:{}, Postgres on 127.0.0.1:{}, {} workers, gateway on 127.0.0.1:{}",
        settings.brokers, settings.broker_port, settings.postgres_port, stack::WORKERS, settings.gateway_port
    ));
    let mut stack = Stack::start(&settings).await?;
    say(
        started,
        format!("stack ready ({})", stack.broker_description),
    );
    let outcome = exercise(&mut stack, &settings, rounds, started).await;
    say(started, "stopping the stack");
    let broker = stack.broker_description.clone();
    let database = format!("{} (created by this run)", stack.database);
    stack.stop().await?;
    let mut report = outcome?;
    report.broker = broker;
    report.database = database;
    report.duration_s = started.elapsed().as_secs_f64();
    let (json, md) = if settings.quick {
        ("chaos-quick.json", "CHAOS-quick.md")
    } else {
        ("chaos.json", "CHAOS.md")
    };
    report.write(&settings.out, json, md)?;
    say(
        started,
        format!(
            "report written to {} and {}",
            settings.out.join(json).display(),
            settings.out.join(md).display()
        ),
    );
    Ok(report)
}

async fn exercise(
    stack: &mut Stack,
    settings: &Settings,
    rounds: usize,
    started: Instant,
) -> anyhow::Result<ChaosReport> {
    say(started, "seeding the four scenarios");
    let seeded = load::seed(stack, settings).await?;
    let probes = faults::probe_users(stack).await?;
    say(
        started,
        format!("load starts: {} requests/s", settings.rate),
    );
    let load_started = Instant::now();
    let running = load::Load::start(stack, seeded)?;
    let progress = spawn_progress(stack.pool.clone(), started);

    let settle = Duration::from_secs(if settings.quick { 3 } else { 8 });
    tokio::time::sleep(Duration::from_secs(if settings.quick { 8 } else { 15 })).await;
    let mut injector = Injector::new(Duration::from_secs(settings.pause_secs));
    let mut relays = relay::Relays::default();
    let mut faults: Vec<FaultRecord> = Vec::new();
    let mut exited: Vec<String> = Vec::new();
    for round in 0..rounds {
        for kind in FaultKind::ALL {
            if settings.without.contains(&kind) {
                continue;
            }
            let at = load_started.elapsed();
            say(
                started,
                format!(
                    "fault {}: {} (round {})",
                    faults.len() + 1,
                    kind.name(),
                    round + 1
                ),
            );
            let relay_in_flight = relays.sample(stack).await;
            let mut record = FaultRecord {
                kind,
                at_ms: at.as_millis() as u64,
                duration_ms: 0,
                recovered_ms: None,
                skipped: None,
                error: None,
                relay_in_flight,
            };
            match injector.inject(stack, kind).await {
                Ok(Ok(lasted)) => {
                    record.duration_ms = lasted.as_millis() as u64;
                    let recovered = faults::probe(stack, &probes, Duration::from_secs(120)).await;
                    record.recovered_ms = recovered.map(|d| d.as_millis() as u64);
                    match recovered {
                        Some(d) => say(
                            started,
                            format!(
                                "  over after {} ms; outcomes flow again {} ms later",
                                record.duration_ms,
                                d.as_millis()
                            ),
                        ),
                        None => say(started, "  outcomes did not flow again within 120 s"),
                    }
                }
                Ok(Err(reason)) => {
                    say(started, format!("  could not be injected: {reason}"));
                    record.skipped = Some(reason);
                }
                Err(error) => {
                    say(started, format!("  failed: {error:#}"));
                    record.error = Some(format!("{error:#}"));
                }
            }
            faults.push(record);
            for worker in &mut stack.workers {
                if worker.exited() {
                    exited.push(worker.name.clone());
                    worker.start()?;
                }
            }
            for i in 0..stack.brokers.len() {
                if stack.brokers[i].exited() || stack.brokers[i].pid().is_none() {
                    exited.push(stack.brokers[i].name.clone());
                    stack.restart_broker(i).await?;
                }
            }
            tokio::time::sleep(settle).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    say(
        started,
        "load stops; following every accepted request to its outcome",
    );
    let result = running.finish().await?;
    progress.abort();

    // Accepted request ids and what clients saw.
    let codes: BTreeMap<&str, &[&str]> = load::mix(settings)
        .into_iter()
        .map(|part| (part.scenario, part.business_codes))
        .collect();
    let mut ids: HashSet<Uuid> = HashSet::new();
    let mut scenarios = BTreeMap::new();
    let mut refused_503 = 0u64;
    let mut ambiguous_calls = Vec::new();
    for (name, samples) in &result.samples {
        let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
        let mut accepted = 0;
        for sample in samples {
            *outcomes.entry(sample.code.clone()).or_default() += 1;
            accepted += sample.ids.len();
            ids.extend(sample.ids.iter().copied());
            refused_503 += u64::from(sample.refused_503);
            ambiguous_calls.extend(sample.ambiguous.iter().cloned());
        }
        scenarios.insert(
            name.clone(),
            ScenarioSummary {
                requests: samples.len(),
                accepted,
                outcomes,
                business_codes: codes
                    .get(name.as_str())
                    .map(|codes| codes.iter().map(|c| (*c).to_owned()).collect())
                    .unwrap_or_default(),
            },
        );
    }
    let ids: Vec<Uuid> = ids.into_iter().collect();
    say(
        started,
        format!("checking: {} accepted requests", ids.len()),
    );
    let outcomes =
        verify::outcomes::wait_decided(&stack.pool, &ids, Duration::from_secs(120)).await?;
    // The invariants give lapsed holds their time to expire.
    let invariants = verify::invariants::check(
        &stack.pool,
        &stack.config.business_tz,
        Duration::from_secs(60),
    )
    .await?;
    // Holds keep expiring while the run checks: the effects are read
    // first, then the outbox drained (which publishes every event of those
    // effects), then the topics read.
    let effects = verify::events::Effects::load(&stack.pool).await?;
    let outbox = wait_outbox_empty(stack, Duration::from_secs(120)).await;
    let events = verify::events::check(&stack.common, &stack.pool, &effects).await?;
    let duplicate_bound = usize::try_from(
        faults.iter().map(|f| f.relay_in_flight).sum::<u64>() + relays.unconfirmed(stack).await,
    )?;
    let poison = check_poison(stack, result.poison).await?;
    let ambiguous = verify::ambiguous::resolve(&stack.pool, &ambiguous_calls).await?;
    let mut report = ChaosReport {
        ok: false,
        mode: if settings.quick { "quick" } else { "full" }.into(),
        rate: settings.rate,
        duration_s: 0.0,
        broker: String::new(),
        database: String::new(),
        business_tz: stack.config.business_tz.clone(),
        topic_prefix: stack.common.topic_prefix.clone(),
        excluded: settings.without.clone(),
        faults,
        exited,
        refused_503,
        outcomes,
        outbox,
        invariants,
        events: EventSummary {
            records: events.records,
            duplicates: events.duplicates,
            duplicate_bound,
            conflicting_repeats: events.conflicting_repeats,
            out_of_order: events.out_of_order,
            missing: events.missing,
            undecodable: events.undecodable,
            problems: events.problems,
        },
        poison,
        ambiguous: AmbiguousSummary {
            calls: ambiguous.calls,
            answers: ambiguous.answers,
            resolved: ambiguous.resolved,
            problems: ambiguous.problems,
        },
        scenarios,
        problems: Vec::new(),
    };
    report.problems = judge::judge(&report);
    report.ok = report.problems.is_empty();
    say(
        started,
        if report.ok {
            "every guarantee held".to_owned()
        } else {
            format!("{} problem(s)", report.problems.len())
        },
    );
    Ok(report)
}

/// Every few seconds: requests accepted and decided so far.
fn spawn_progress(pool: sqlx::PgPool, started: Instant) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let counts = sqlx::query!(
                r#"SELECT count(*) AS "all!", count(*) FILTER (WHERE status <> 'PENDING') AS "decided!"
                   FROM requests"#
            )
            .fetch_one(&pool)
            .await;
            if let Ok(counts) = counts {
                let (all, decided) = (counts.all, counts.decided);
                say(
                    started,
                    format!("  requests: {all} recorded, {decided} decided"),
                );
            }
        }
    })
}

/// Waits up to `limit` for the outbox to drain. A query that fails ends
/// the wait with its error: the run fails, it does not pass unchecked.
async fn wait_outbox_empty(stack: &Stack, limit: Duration) -> OutboxDrain {
    let started = Instant::now();
    loop {
        let left = sqlx::query_scalar!(r#"SELECT count(*) AS "left!" FROM outbox"#)
            .fetch_one(&stack.pool)
            .await;
        let waited_s = started.elapsed().as_secs();
        match left {
            Ok(left) if left == 0 || started.elapsed() >= limit => {
                return OutboxDrain {
                    left,
                    waited_s,
                    error: None,
                }
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            Err(error) => {
                return OutboxDrain {
                    left: -1,
                    waited_s,
                    error: Some(error.to_string()),
                }
            }
        }
    }
}

/// Every poison record must sit in its topic's dead-letter topic with a
/// reason, and those with a request id must be recorded FAILED.
async fn check_poison(stack: &Stack, poison: Vec<load::Poison>) -> anyhow::Result<PoisonSummary> {
    let mut dead = Vec::new();
    for topic in schemas::Topic::ALL
        .into_iter()
        .filter(|t| t.is_request_topic())
    {
        let common = stack.common.clone();
        dead.extend(
            tokio::task::spawn_blocking(move || workers::dlq::list(&common, topic)).await??,
        );
    }
    let mut summary = PoisonSummary {
        sent: poison.len(),
        with_request_id: poison.iter().filter(|p| p.request_id.is_some()).count(),
        ..PoisonSummary::default()
    };
    for p in &poison {
        let marker = p.marker.to_string();
        let found = dead.iter().any(|letter| {
            letter.payload.contains(&marker)
                && letter
                    .reason
                    .as_deref()
                    .is_some_and(|reason| !reason.is_empty())
        });
        if found {
            summary.dead_lettered += 1;
        }
        if let Some(id) = p.request_id {
            let code = sqlx::query_scalar!(
                "SELECT error_code FROM requests WHERE id = $1 AND status = 'FAILED'",
                id
            )
            .fetch_optional(&stack.pool)
            .await?
            .flatten();
            if code.as_deref() == Some("INVALID_REQUEST") {
                summary.failed_outcomes += 1;
            }
        }
    }
    // Anything else dead-lettered or parked is a request a client sent,
    // dropped.
    let markers: Vec<String> = poison.iter().map(|p| p.marker.to_string()).collect();
    for letter in &dead {
        if !markers.iter().any(|m| letter.payload.contains(m.as_str())) {
            summary.foreign_dead_letters += 1;
            if summary.foreign_examples.len() < 5 {
                summary.foreign_examples.push(format!(
                    "{} at {}/{}: {}",
                    letter.origin.as_deref().unwrap_or("?"),
                    letter.topic,
                    letter.offset,
                    letter.reason.as_deref().unwrap_or("no reason")
                ));
            }
        }
    }
    let parked = sqlx::query!(
        "SELECT origin_topic, origin_offset, reason FROM parked_dead_letters ORDER BY id"
    )
    .fetch_all(&stack.pool)
    .await?;
    for row in parked {
        summary.foreign_dead_letters += 1;
        if summary.foreign_examples.len() < 5 {
            summary.foreign_examples.push(format!(
                "parked {}/{}: {}",
                row.origin_topic, row.origin_offset, row.reason
            ));
        }
    }
    summary.records = poison;
    Ok(summary)
}
