//! The waiting-queue benchmark (`queue-bench`): for each line length, a
//! schedule whose line is seeded straight into the database (users and
//! waiting places, one statement), then, through the gateway's HTTP API,
//! position lookups at the front, middle and back of the line, the polling
//! load the served intervals add up to, and joins per second at the back;
//! admission rounds are timed in-process on the same database.
//!
//! What it measures is the gateway and Postgres it is pointed at: run it on
//! a stack of its own with no workers running (their admission scheduler
//! would move the line under the measurement); `./dev bench` does.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use api::concert::{JoinQueue, NewConcert, NewSchedule, QueueToken};
use api::status::QueueStatus;
use clap::Parser;
use client::Client;
use futures::{stream, StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;
use workers::concert::queue_admission::{self, Admission};

/// Command line of `queue-bench`.
#[derive(Debug, Parser)]
#[command(
    name = "queue-bench",
    about = "Benchmark of the waiting queue: positions, admission, joins and polling at a line's length"
)]
pub struct QueueCli {
    /// Gateway base URL.
    #[arg(long, env = "LOADGEN_GATEWAY", default_value = "http://127.0.0.1:8080")]
    pub gateway: String,
    /// Admin credential of the gateway (the schedules).
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: SecretString,
    /// The gateway's `AUTH_SECRET`: credentials of the seeded users are
    /// signed with it.
    #[arg(long, env = "AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: SecretString,
    /// Postgres of the stack (seeding, admission rounds).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/booking"
    )]
    pub database_url: String,
    /// Line lengths to measure, each on a schedule of its own.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    pub sizes: Vec<i64>,
    /// Position lookups per part of the line (front, middle, back).
    #[arg(long, default_value_t = 1_000)]
    pub samples: usize,
    /// Users joining the back of each line, for joins per second.
    #[arg(long, default_value_t = 10_000)]
    pub joins: usize,
    /// Clients joining at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Clients asking for their positions at once: the lookups measure the
    /// latency of a call, not of a queue of calls.
    #[arg(long, default_value_t = 4)]
    pub lookup_clients: usize,
    /// Admission rounds timed per line, one a second.
    #[arg(long, default_value_t = 10)]
    pub rounds: u32,
    /// Places each round admits: the line moves this many a second, the
    /// pace the polling intervals are then served at.
    #[arg(long, default_value_t = 20)]
    pub admit_per_round: i64,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// Latency figures, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Worst.
    pub max: f64,
}

/// What one line length measured.
#[derive(Debug, Clone, Serialize)]
pub struct SizeReport {
    /// 99th percentile of every position lookup (front, middle, back).
    pub position_p99_ms: f64,
    /// Per part of the line.
    pub position_ms: BTreeMap<&'static str, Latency>,
    /// Median admission round (expire, drop abandoned places, admit one
    /// round's places).
    pub admission_round_ms: f64,
    /// Slowest admission round.
    pub admission_round_max_ms: f64,
    /// Joins per second at the back of the line.
    pub joins_per_sec: f64,
    /// Requests a second the polling intervals served to every waiting
    /// place add up to, at the line's pace.
    pub poll_requests_per_sec: f64,
    /// The line's pace then (admitted a second, smoothed).
    pub admit_rate: f64,
    /// Places waiting when the polling load was measured.
    pub waiting: i64,
}

/// The whole report (`bench/queue.json`).
#[derive(Debug, Clone, Serialize)]
pub struct QueueReport {
    /// Per line length.
    pub sizes: BTreeMap<String, SizeReport>,
    /// What the figures depend on.
    pub settings: BTreeMap<&'static str, serde_json::Value>,
}

/// Runs every line length and writes `--json`.
pub async fn run(cli: QueueCli) -> anyhow::Result<QueueReport> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&cli.database_url)
        .await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(60))
        .build()?;
    let admin =
        Client::with_http(http.clone(), &cli.gateway).with_token(cli.admin_token.expose_secret());
    // Credentials of the seeded users, as the gateway would issue them at
    // login (an hour is longer than a run).
    let signer = gateway::auth::Signer::new(
        cli.auth_secret.expose_secret(),
        [],
        std::time::Duration::from_secs(3600),
    );
    let bench = Bench {
        cli: &cli,
        pool,
        http,
        admin,
        signer,
    };
    let mut sizes = BTreeMap::new();
    for &size in &cli.sizes {
        let report = bench.size(size).await?;
        eprintln!(
            "{size:>9} waiting: position p99 {:.2} ms, admission round {:.1} ms, {:.0} joins/s, {:.0} poll requests/s",
            report.position_p99_ms, report.admission_round_ms, report.joins_per_sec, report.poll_requests_per_sec
        );
        sizes.insert(size.to_string(), report);
    }
    let settings = BTreeMap::from([
        ("samples_per_part", cli.samples.into()),
        ("joins", cli.joins.into()),
        ("join_clients", cli.concurrency.into()),
        ("lookup_clients", cli.lookup_clients.into()),
        ("rounds", cli.rounds.into()),
        ("admit_per_round", cli.admit_per_round.into()),
    ]);
    let report = QueueReport { sizes, settings };
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    Ok(report)
}

struct Bench<'a> {
    cli: &'a QueueCli,
    pool: PgPool,
    http: reqwest::Client,
    admin: Client,
    signer: gateway::auth::Signer,
}

/// A seeded waiting place.
#[derive(Debug, Clone)]
struct Place {
    user_id: i64,
    token: Uuid,
    line_no: i64,
}

impl Bench<'_> {
    async fn size(&self, size: i64) -> anyhow::Result<SizeReport> {
        let schedule_id = self.schedule(size).await?;
        eprintln!("{size}: seeding the line ...");
        let seeding = Instant::now();
        self.seed(schedule_id, size).await?;
        eprintln!("{size}: seeded in {:.1} s", seeding.elapsed().as_secs_f64());

        let samples = self.cli.samples.min(size as usize / 3).max(1) as i64;
        let parts = [
            ("front", 1),
            ("middle", size / 2 - samples / 2),
            ("back", size - samples + 1),
        ];
        let mut polled = HashSet::new();
        let mut all = new_histogram();
        let mut position_ms = BTreeMap::new();
        for (part, from) in parts {
            let places = self
                .places(schedule_id, (from..from + samples).collect())
                .await?;
            polled.extend(places.iter().map(|p| p.token));
            let histogram = self.lookups(part, &places).await?;
            all.add(&histogram)?;
            position_ms.insert(part, latency(&histogram));
        }

        let (rounds, admit_rate) = self.admission(schedule_id).await?;
        let (poll_requests_per_sec, waiting) =
            self.polling_load(schedule_id, size, &polled).await?;
        let joins_per_sec = self.joins(schedule_id).await?;
        Ok(SizeReport {
            position_p99_ms: ms(all.value_at_quantile(0.99)),
            position_ms,
            admission_round_ms: ms(rounds.value_at_quantile(0.5)),
            admission_round_max_ms: ms(rounds.max()),
            joins_per_sec,
            poll_requests_per_sec,
            admit_rate,
            waiting,
        })
    }

    /// A concert with one schedule for this line.
    async fn schedule(&self, size: i64) -> anyhow::Result<i64> {
        let concert = self
            .admin
            .create_concert(&NewConcert {
                title: format!("Queue bench {size}"),
                schedules: vec![NewSchedule {
                    starts_at: chrono::Utc::now() + chrono::TimeDelta::days(30),
                    seat_count: 10,
                    price: 10_000,
                }],
            })
            .await?;
        Ok(concert.schedules[0].id)
    }

    /// `size` users waiting in `schedule_id`'s line, in one statement: what
    /// a rush leaves behind, without a million HTTP joins first.
    async fn seed(&self, schedule_id: i64, size: i64) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query!(
            "WITH u AS (
                 INSERT INTO users (email, name)
                 SELECT format('queue-%s-%s@bench.example', $1::int8, n), 'queue bench'
                 FROM generate_series(1, $2::int8) AS n
                 RETURNING id
             )
             INSERT INTO reservation_queue
                 (user_id, concert_schedule_id, token, line_no, poll_deadline)
             SELECT id, $1, gen_random_uuid(), row_number() OVER (ORDER BY id),
                    now() + interval '1 day'
             FROM u",
            schedule_id,
            size
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query_scalar!(
            r#"SELECT setval(queue_line_sequence($1), $2) AS "number!""#,
            schedule_id,
            size
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        sqlx::query!("ANALYZE reservation_queue")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The waiting places of `schedule_id` numbered `line_nos`.
    async fn places(&self, schedule_id: i64, line_nos: Vec<i64>) -> anyhow::Result<Vec<Place>> {
        Ok(sqlx::query_as!(
            Place,
            "SELECT user_id, token, line_no FROM reservation_queue
             WHERE concert_schedule_id = $1 AND line_no = ANY($2) AND status = 'WAITING'
             ORDER BY line_no",
            schedule_id,
            &line_nos
        )
        .fetch_all(&self.pool)
        .await?)
    }

    fn client_of(&self, user_id: i64) -> Client {
        Client::with_http(self.http.clone(), &self.cli.gateway)
            .with_token(&self.signer.issue(user_id).token)
    }

    /// Each place's holder asks for it once; the latencies.
    async fn lookups(&self, part: &str, places: &[Place]) -> anyhow::Result<Histogram<u64>> {
        let progress = progress(places.len() as u64, format!("positions ({part})"));
        let latencies: Vec<u64> = stream::iter(places)
            .map(|place| {
                let progress = progress.clone();
                async move {
                    let client = self.client_of(place.user_id);
                    let started = Instant::now();
                    let state = client.queue_token(place.token).await?;
                    let took = started.elapsed();
                    anyhow::ensure!(state.status == QueueStatus::Waiting, "{state:?}");
                    progress.inc(1);
                    anyhow::Ok(took.as_micros() as u64)
                }
            })
            .buffer_unordered(self.cli.lookup_clients.max(1))
            .try_collect()
            .await?;
        progress.finish_and_clear();
        let mut histogram = new_histogram();
        for micros in latencies {
            histogram.record(micros.max(1))?;
        }
        Ok(histogram)
    }

    /// Admission rounds one a second, each admitting the next
    /// `--admit-per-round` places; their durations (µs) and the line's
    /// pace after them.
    async fn admission(&self, schedule_id: i64) -> anyhow::Result<(Histogram<u64>, f64)> {
        let mut rounds = new_histogram();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        for round in 1..=i64::from(self.cli.rounds) {
            tick.tick().await;
            let settings = Admission {
                active_limit: round * self.cli.admit_per_round,
                active_ttl: Duration::from_secs(3_600),
            };
            let started = Instant::now();
            let done = queue_admission::admit(&self.pool, settings).await?;
            rounds.record((started.elapsed().as_micros() as u64).max(1))?;
            anyhow::ensure!(
                done.admitted == self.cli.admit_per_round as u64,
                "round {round} admitted {done:?}; is another admission scheduler running on this database?"
            );
        }
        let rate = sqlx::query_scalar!(
            "SELECT admit_rate FROM queue_lines WHERE concert_schedule_id = $1",
            schedule_id
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((rounds, rate))
    }

    /// The polling load of the whole line: the interval served to places at
    /// log-spaced positions (each asked once over HTTP), each taken for the
    /// places up to the next sample (intervals grow with the position, so
    /// this overestimates); requests a second, and the places waiting.
    async fn polling_load(
        &self,
        schedule_id: i64,
        size: i64,
        polled: &HashSet<Uuid>,
    ) -> anyhow::Result<(f64, i64)> {
        let through = sqlx::query_scalar!(
            "SELECT admitted_through FROM queue_lines WHERE concert_schedule_id = $1",
            schedule_id
        )
        .fetch_one(&self.pool)
        .await?;
        let waiting = size - through;
        let mut line_nos: Vec<i64> = (0..=60)
            .map(|k| through + (waiting as f64).powf(f64::from(k) / 60.0).round() as i64)
            .collect();
        line_nos.dedup();
        // A place asked for already would be refused (its pace); its
        // neighbour stands in.
        let candidates = self
            .places(
                schedule_id,
                line_nos.iter().flat_map(|&n| [n, n + 1, n + 2]).collect(),
            )
            .await?;
        let mut served: Vec<(i64, f64)> = Vec::new();
        let mut asked: HashSet<Uuid> = polled.clone();
        for line_no in line_nos {
            let Some(place) = candidates
                .iter()
                .find(|p| p.line_no >= line_no && !asked.contains(&p.token))
            else {
                continue;
            };
            asked.insert(place.token);
            let state: QueueToken = self
                .client_of(place.user_id)
                .queue_token(place.token)
                .await?;
            let (Some(position), Some(after)) = (state.position, state.poll_after_ms) else {
                anyhow::bail!("no position for a waiting place: {state:?}");
            };
            served.push((position, after as f64));
        }
        served.sort_by_key(|(position, _)| *position);
        served.dedup_by_key(|(position, _)| *position);
        let mut per_sec = 0.0;
        for (i, (position, after)) in served.iter().enumerate() {
            let next = served.get(i + 1).map_or(waiting + 1, |(p, _)| *p);
            let first = if i == 0 { 1 } else { *position };
            per_sec += (next - first) as f64 * 1_000.0 / after.max(1.0);
        }
        Ok((per_sec, waiting))
    }

    /// `--joins` new users join the back of the line at once; joins per
    /// second. Every join gets a place of its own, after every seeded one.
    async fn joins(&self, schedule_id: i64) -> anyhow::Result<f64> {
        let users: Vec<i64> = sqlx::query_scalar!(
            "INSERT INTO users (email, name)
             SELECT format('join-%s-%s@bench.example', $1::int8, n), 'queue bench'
             FROM generate_series(1, $2::int8) AS n RETURNING id",
            schedule_id,
            self.cli.joins as i64
        )
        .fetch_all(&self.pool)
        .await?;
        let clients: Vec<Client> = users.iter().map(|&id| self.client_of(id)).collect();
        let progress = progress(clients.len() as u64, "joins".to_owned());
        let started = Instant::now();
        let tokens: Vec<Uuid> = stream::iter(&clients)
            .map(|client| {
                let progress = progress.clone();
                async move {
                    let joined = client.join_queue(&JoinQueue { schedule_id }).await?;
                    progress.inc(1);
                    anyhow::Ok(joined.token)
                }
            })
            .buffer_unordered(self.cli.concurrency)
            .try_collect()
            .await?;
        let elapsed = started.elapsed();
        progress.finish_and_clear();
        let distinct: HashSet<Uuid> = tokens.iter().copied().collect();
        anyhow::ensure!(distinct.len() == users.len(), "one place per joining user");
        Ok(users.len() as f64 / elapsed.as_secs_f64())
    }
}

/// Microseconds, 3 significant figures, growing as needed.
fn new_histogram() -> Histogram<u64> {
    Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures is valid"))
}

fn ms(micros: u64) -> f64 {
    (micros as f64 / 1_000.0 * 100.0).round() / 100.0
}

fn latency(histogram: &Histogram<u64>) -> Latency {
    Latency {
        p50: ms(histogram.value_at_quantile(0.5)),
        p99: ms(histogram.value_at_quantile(0.99)),
        max: ms(histogram.max()),
    }
}

fn progress(len: u64, what: String) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what);
    bar
}
