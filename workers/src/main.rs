use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use workers::WorkersConfig;

/// jemalloc, not glibc's malloc: in three alternating charge runs on fresh
/// stacks the workers' CPU per 1,000 requests fell by a quarter with it, the
/// gateway's by 30 % (bench/NOTES.md). `_RJEM_MALLOC_CONF` tunes it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Command-line entry of the workers.
#[derive(Debug, Parser)]
#[command(
    name = "workers",
    about = "Lanes, schedulers and outbox relay of the booking and shop backend"
)]
struct Cli {
    #[command(flatten)]
    config: WorkersConfig,

    /// Run migrations and create missing topics, then exit.
    #[arg(long)]
    setup_only: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Dead letters: list, show, re-drive.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
}

/// Which dead letter.
#[derive(Debug, clap::Args)]
struct Position {
    /// The topic whose dead letters to read (e.g. `charge-requests`).
    #[arg(long)]
    topic: String,
    /// Partition of the dead letter.
    #[arg(long, default_value_t = 0)]
    partition: i32,
    /// Offset of the dead letter.
    #[arg(long)]
    offset: i64,
}

#[derive(Debug, Subcommand)]
enum DlqAction {
    /// Lists the dead letters of a topic with their reasons.
    List {
        /// The topic whose dead letters to read (e.g. `charge-requests`).
        #[arg(long)]
        topic: String,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Shows one dead letter: headers and payload.
    Show {
        #[command(flatten)]
        at: Position,
    },
    /// Re-publishes a dead letter to its topic under its original request
    /// id; the request is decided once.
    Replay {
        #[command(flatten)]
        at: Position,
        /// A corrected payload (JSON file) to publish instead; it must keep
        /// the request id.
        #[arg(long)]
        payload: Option<PathBuf>,
        /// Publish even if the lane would refuse the record again.
        #[arg(long)]
        force: bool,
    },
    /// Lists the dead letters no dead-letter topic could take (larger
    /// than the producer's limit, a producer that failed for good), kept
    /// in Postgres with their reason.
    Parked {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.config;
    if let Some(Command::Dlq { action }) = cli.command {
        platform::observability::init_tracing_with_default("pretty", "warn");
        return dlq(&config, action).await;
    }
    platform::observability::init_tracing(&config.common.log_format);
    let pool = platform::db::pool(&config.common.database_url, 2)?;
    platform::db::migrate(&pool).await?;
    sqlx::query!("SELECT now() AT TIME ZONE $1 AS local", config.business_tz)
        .fetch_one(&pool)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "BUSINESS_TZ={} is not a time zone Postgres knows: {e}",
                config.business_tz
            )
        })?;
    platform::kafka::create_topics(&config.common, &config.common.topics()).await?;
    if cli.setup_only {
        tracing::info!("migrations applied and topics created");
        return Ok(());
    }
    let _ = platform::observability::metrics_handle();
    let cancel = CancellationToken::new();
    platform::lifecycle::cancel_on_signal(cancel.clone());
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    let health = workers::health_router(pool, platform::kafka::producer(&config.common)?);
    let health_cancel = cancel.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, health)
            .with_graceful_shutdown(health_cancel.cancelled_owned())
            .await;
    });
    workers::run(config, cancel).await
}

async fn dlq(config: &WorkersConfig, action: DlqAction) -> anyhow::Result<()> {
    use workers::dlq;
    let common = &config.common;
    match action {
        DlqAction::List { topic, json } => {
            let letters =
                tokio::task::block_in_place(|| dlq::list(common, dlq::topic_named(&topic)?))?;
            if json {
                for letter in &letters {
                    println!("{}", serde_json::to_string(letter)?);
                }
            } else {
                println!(
                    "{:<9} {:<8} {:<36}  {:<28}  reason",
                    "partition", "offset", "request id", "origin"
                );
                for l in &letters {
                    println!(
                        "{:<9} {:<8} {:<36}  {:<28}  {}",
                        l.partition,
                        l.offset,
                        l.request_id
                            .map(|id| id.to_string())
                            .unwrap_or_else(|| "-".into()),
                        l.origin.as_deref().unwrap_or("-"),
                        l.reason.as_deref().unwrap_or("-")
                    );
                }
                eprintln!(
                    "{} dead letter(s) on {}",
                    letters.len(),
                    common.topics().dlq(dlq::topic_named(&topic)?)
                );
            }
        }
        DlqAction::Show { at } => {
            let letter = tokio::task::block_in_place(|| {
                dlq::find(
                    common,
                    dlq::topic_named(&at.topic)?,
                    at.partition,
                    at.offset,
                )
            })?;
            println!("{}", serde_json::to_string_pretty(&letter)?);
        }
        DlqAction::Replay { at, payload, force } => {
            let topic = dlq::topic_named(&at.topic)?;
            let letter =
                tokio::task::block_in_place(|| dlq::find(common, topic, at.partition, at.offset))?;
            let corrected = payload.map(std::fs::read_to_string).transpose()?;
            let pool = platform::db::pool(&common.database_url, 2)?;
            let producer = platform::kafka::producer(common)?;
            let replayed = dlq::replay(
                common,
                &pool,
                &producer,
                topic,
                &letter,
                corrected.as_deref(),
                force,
            )
            .await?;
            println!("{}", serde_json::to_string_pretty(&replayed)?);
            if let Some(id) = replayed.request_id {
                eprintln!("follow it with GET /v1/requests/{id}");
            }
        }
        DlqAction::Parked { json } => {
            let pool = platform::db::pool(&common.database_url, 1)?;
            let parked = dlq::parked(&pool).await?;
            if json {
                for letter in &parked {
                    println!("{}", serde_json::to_string(letter)?);
                }
            } else {
                println!(
                    "{:<36}  {:<20}  {:<25}  reason; error",
                    "origin", "parked at", "key"
                );
                for p in &parked {
                    println!(
                        "{:<36}  {:<20}  {:<25}  {}; {}",
                        p.origin,
                        p.parked_at.format("%Y-%m-%d %H:%M:%S"),
                        p.key.as_deref().unwrap_or("-"),
                        p.reason,
                        p.error
                    );
                }
                eprintln!("{} parked dead letter(s)", parked.len());
            }
        }
    }
    Ok(())
}
