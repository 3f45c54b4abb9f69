//! `loadgen`: drives the gateway over HTTP with many concurrent clients and
//! follows every request to its outcome. See `loadgen --help`; [`run`] is
//! the whole run, for the binary and for tests.

#![warn(missing_docs)]

mod checks;
pub mod queue;
pub mod report;
pub mod scenario;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use testkit::Api;
use tokio::sync::Semaphore;

pub use report::{Report, Sample};
pub use scenario::Scenario;

/// Which workload to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScenarioName {
    /// Users (more than seats) race for the seats of one schedule.
    Rush,
    /// Balance charges spread over many users.
    Charge,
    /// Hold then pay, spread over many seats.
    Booking,
    /// Multi-item orders on a catalogue with a few hot items.
    Shop,
    /// Three in five requests a charge, one an order, one a seat held and
    /// then cancelled (a pair): a load that can run for hours on one seeded
    /// catalogue (the soak's).
    Mixed,
}

/// How a client follows its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Follow {
    /// A client holds its slot for the POST only and follows the outcome
    /// with a long-poll on the side, as a browser does after a 202: the
    /// concurrency bounds requests being submitted, `--outstanding` bounds
    /// those submitted and not yet decided.
    Detached,
    /// Closed loop: a client holds its slot from the POST until the
    /// outcome, one request at a time (what a pgbench client does).
    Inline,
}

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Load generator for the booking and shop gateway"
)]
pub struct Cli {
    /// The scenario to run.
    #[arg(long, value_enum)]
    pub scenario: ScenarioName,
    /// Gateway base URL.
    #[arg(long, env = "LOADGEN_GATEWAY", default_value = "http://127.0.0.1:8080")]
    pub gateway: String,
    /// Admin credential of the gateway (catalogue set-up).
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: secrecy::SecretString,
    /// Postgres of the stack, for the correctness checks after the run.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/booking"
    )]
    pub database_url: String,
    /// Requests to send (for `rush`: users racing).
    #[arg(long, default_value_t = 2_000)]
    pub requests: u64,
    /// Run for this many seconds instead of a fixed count.
    #[arg(long)]
    pub duration_secs: Option<u64>,
    /// Open-loop target rate in requests per second; 0 sends as fast as the
    /// concurrency allows.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Clients: most POSTs in flight (with `--follow inline`, most requests
    /// between POST and outcome).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// How clients follow their requests to the outcome.
    #[arg(long, value_enum, default_value_t = Follow::Detached)]
    pub follow: Follow,
    /// With `--follow detached`: most requests accepted and not yet decided;
    /// a client waits for a slot here before its next POST.
    #[arg(long, default_value_t = 2_000)]
    pub outstanding: usize,
    /// Users to create (`charge`, `shop`; `booking` uses one per request,
    /// because a payment expires the user's queue token).
    #[arg(long, default_value_t = 200)]
    pub users: usize,
    /// Seats of the rush schedule.
    #[arg(long, default_value_t = 50)]
    pub seats: i32,
    /// `booking`: every Nth pair, once paid, is cancelled, which refunds
    /// the payment (0: none).
    #[arg(long, default_value_t = 0)]
    pub cancel_every: u64,
    /// `shop`: every Nth order goes through the cart: the user's cart is
    /// emptied, filled with the order's lines and checked out (0: none).
    #[arg(long, default_value_t = 0)]
    pub cart_every: u64,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress bar (for logs).
    #[arg(long)]
    pub no_progress: bool,
    /// How long a client keeps retrying one call that is refused with 503
    /// (waiting its `Retry-After`), told its `Idempotency-Key` is in
    /// progress, or cut off, seeding included; a patient client's calls
    /// carry a key of their own, so a retry is never a second request.
    /// 0 sends no key and gives up at once.
    #[arg(long, default_value_t = 60)]
    pub patience_secs: u64,
    /// The stack's `BUSINESS_TZ`, for the daily-stats check.
    #[arg(long, env = "BUSINESS_TZ", default_value = "Asia/Seoul")]
    pub business_tz: String,
}

/// The gateway client of a run, retrying for `--patience-secs`.
pub fn client(cli: &Cli) -> Api {
    Api::new(
        cli.gateway.clone(),
        secrecy::ExposeSecret::expose_secret(&cli.admin_token),
    )
    .patient(Duration::from_secs(cli.patience_secs))
}

/// Seeds the scenario, runs it, checks the database, prints the summary
/// (and writes `--json`), and returns the report; fails when a correctness
/// check fails.
pub async fn run(cli: Cli) -> anyhow::Result<Report> {
    let api = client(&cli);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&cli.database_url)
        .await?;

    let scenario = seed(&cli, &api).await?;
    // Markers for tools that measure the load alone (`bench/cpu.py`).
    eprintln!("load: start");
    let samples = drive(&cli, &api, scenario.clone()).await?;
    eprintln!("load: end");
    let checks = checks::run(&pool, &cli, &scenario).await?;
    let report = Report::build(&cli, &samples, checks);
    println!("{}", report.human());
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    if !report.correct {
        anyhow::bail!("correctness checks failed");
    }
    Ok(report)
}

/// Creates what the scenario needs (catalogue, users, queue tokens).
pub async fn seed(cli: &Cli, api: &Api) -> anyhow::Result<Arc<Scenario>> {
    eprintln!("seeding {:?} ...", cli.scenario);
    let seeding = Instant::now();
    let scenario = Arc::new(Scenario::seed(cli, api).await?);
    eprintln!("seeded in {:.1} s", seeding.elapsed().as_secs_f64());
    Ok(scenario)
}

/// Sends the scenario's requests (a count, or for `--duration-secs`, at
/// `--rate` or as fast as the clients go) and follows each to its outcome;
/// one sample per request (per hold-then-pay pair).
pub async fn drive(cli: &Cli, api: &Api, scenario: Arc<Scenario>) -> anyhow::Result<Vec<Sample>> {
    let (_keep, stop) = tokio::sync::watch::channel(false);
    drive_until(cli, api, scenario, stop).await
}

/// Like [`drive`], and stops sending early once `stop` turns true (the
/// requests sent so far are still followed to their outcomes).
pub async fn drive_until(
    cli: &Cli,
    api: &Api,
    scenario: Arc<Scenario>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<Sample>> {
    let total = scenario.request_count(cli);
    let progress = if cli.no_progress {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} outcomes  {per_sec}  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );

    let started = Instant::now();
    let deadline = cli.duration_secs.map(|s| started + Duration::from_secs(s));
    // `undecided` bounds requests between POST and outcome, `posting` the
    // POSTs in flight.
    let undecided = Arc::new(Semaphore::new(match cli.follow {
        Follow::Inline => cli.concurrency.max(1),
        Follow::Detached => cli.outstanding.max(cli.concurrency).max(1),
    }));
    let posting = Arc::new(Semaphore::new(cli.concurrency.max(1)));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Sample>();
    let sender = {
        let (api, scenario, undecided, progress) = (
            api.clone(),
            scenario.clone(),
            undecided.clone(),
            progress.clone(),
        );
        let posting = posting.clone();
        let rate = cli.rate;
        tokio::spawn(async move {
            let mut i = 0u64;
            loop {
                if deadline.map_or(i >= total, |d| Instant::now() >= d) || *stop.borrow() {
                    break;
                }
                // Open loop: latency counts from when the request was due,
                // so a stalled system cannot hide its queue (no coordinated
                // omission).
                let due = if rate > 0.0 {
                    let due = started + Duration::from_secs_f64(i as f64 / rate);
                    tokio::select! {
                        _ = tokio::time::sleep_until(due.into()) => {}
                        Ok(()) = stop.changed() => continue,
                    }
                    Some(due)
                } else {
                    None
                };
                let Ok(permit) = undecided.clone().acquire_owned().await else {
                    break;
                };
                let (api, scenario, tx, progress, posting) = (
                    api.clone(),
                    scenario.clone(),
                    tx.clone(),
                    progress.clone(),
                    posting.clone(),
                );
                tokio::spawn(async move {
                    let sample = scenario.run_one(&api, &posting, i, started, due).await;
                    progress.inc(1);
                    let _ = tx.send(sample);
                    drop(permit);
                });
                i += 1;
            }
            i
        })
    };
    let sent = sender.await?;
    let mut samples = Vec::with_capacity(sent as usize);
    while samples.len() < sent as usize {
        match rx.recv().await {
            Some(sample) => samples.push(sample),
            None => break,
        }
    }
    progress.finish_and_clear();
    Ok(samples)
}
