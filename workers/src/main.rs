use clap::Parser;
use tokio_util::sync::CancellationToken;
use workers::WorkersConfig;

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.config;
    platform::observability::init_tracing(&config.common.log_format);
    let pool = platform::db::pool(&config.common.database_url, 2)?;
    platform::db::migrate(&pool).await?;
    sqlx::query("SELECT now() AT TIME ZONE $1")
        .bind(&config.business_tz)
        .execute(&pool)
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
    let health = workers::health_router(pool);
    let health_cancel = cancel.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, health)
            .with_graceful_shutdown(health_cancel.cancelled_owned())
            .await;
    });
    workers::run(config, cancel).await
}
