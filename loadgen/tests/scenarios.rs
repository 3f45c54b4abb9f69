//! Runs the `loadgen` binary, small, against a whole stack (gateway and
//! workers in-process, real broker and Postgres) in every scenario and
//! follow mode, and checks its JSON report: every request decided, the
//! expected outcome codes, the correctness checks passed.

use std::path::Path;
use std::time::Duration;

use gateway::{Gateway, GatewayConfig};
use serde_json::Value;
use testkit::TestEnv;
use tokio_util::sync::CancellationToken;
use workers::WorkersConfig;

struct Stack {
    env: TestEnv,
    base: String,
    admin_token: String,
    cancel: CancellationToken,
}

impl Stack {
    async fn start() -> anyhow::Result<Self> {
        let env = TestEnv::new().await?;
        let admin_token = format!("admin-{}", uuid::Uuid::new_v4().simple());
        let mut gateway_config = GatewayConfig::local(&admin_token, "test-secret");
        gateway_config.common = env.common.clone();
        gateway_config.common.database_max_connections = 6;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let cancel = CancellationToken::new();
        tokio::spawn(Gateway::build(&gateway_config)?.serve(listener, cancel.clone()));
        let mut workers_config = WorkersConfig::local();
        workers_config.common = env.common.clone();
        // Room for every rush user in the queue at once.
        workers_config.queue_active_limit = 100_000;
        workers_config.scheduler_interval_ms = 100;
        tokio::spawn(workers::run(workers_config, cancel.clone()));
        Ok(Self {
            env,
            base,
            admin_token,
            cancel,
        })
    }

    /// Runs loadgen with `args` and returns its JSON report.
    async fn loadgen(&self, dir: &Path, name: &str, args: &[&str]) -> anyhow::Result<Value> {
        let json = dir.join(format!("{name}.json"));
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"));
        command
            .args(args)
            .args([
                "--concurrency",
                "8",
                "--no-progress",
                "--gateway",
                &self.base,
            ])
            .arg("--json")
            .arg(&json)
            .env("ADMIN_TOKEN", &self.admin_token)
            .env("DATABASE_URL", &self.env.common.database_url);
        let output = tokio::time::timeout(
            Duration::from_secs(120),
            tokio::task::spawn_blocking(move || command.output()),
        )
        .await???;
        anyhow::ensure!(
            output.status.success(),
            "loadgen {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(serde_json::from_str(&std::fs::read_to_string(&json)?)?)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn count(report: &Value, code: &str) -> u64 {
    report["outcomes"][code].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn loadgen_runs_every_scenario_and_reports_what_happened() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let dir = std::env::temp_dir().join(format!("loadgen-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;

    // Detached clients at full speed, a closed loop, an open loop at a rate.
    for (name, extra, follow) in [
        ("charge", &[][..], "detached"),
        ("charge-inline", &["--follow", "inline"][..], "inline"),
        ("charge-rate", &["--rate", "100"][..], "detached"),
    ] {
        let mut args = vec!["--scenario", "charge", "--requests", "40", "--users", "4"];
        args.extend_from_slice(extra);
        let report = stack.loadgen(&dir, name, &args).await?;
        assert_eq!(report["requests"], 40, "{name}: {report}");
        assert_eq!(report["completed"], 40, "{name}: {report}");
        assert_eq!(count(&report, "SUCCEEDED"), 40, "{name}: {report}");
        assert_eq!(report["correct"], true, "{name}: {report}");
        assert_eq!(report["follow"], follow, "{name}: {report}");
        assert!(report["completed_per_sec"].as_f64().unwrap_or(0.0) > 0.0);
        assert!(report["outcome_ms"]["p99"].as_f64().unwrap_or(0.0) > 0.0);
    }
    // More users than seats: exactly one winner per seat.
    let rush = stack
        .loadgen(
            &dir,
            "rush",
            &["--scenario", "rush", "--requests", "30", "--seats", "5"],
        )
        .await?;
    assert_eq!(count(&rush, "SUCCEEDED"), 5, "{rush}");
    assert_eq!(count(&rush, "SEAT_TAKEN"), 25, "{rush}");
    assert_eq!(rush["checks"]["rush_every_seat_sold_once"], true, "{rush}");
    assert_eq!(rush["correct"], true, "{rush}");

    // Hold then pay: a pair is one sample, decided by its payment.
    let booking = stack
        .loadgen(
            &dir,
            "booking",
            &["--scenario", "booking", "--requests", "10"],
        )
        .await?;
    assert_eq!(count(&booking, "SUCCEEDED"), 10, "{booking}");
    assert_eq!(booking["correct"], true, "{booking}");
    let paid: i64 = sqlx::query_scalar("SELECT count(*) FROM payments WHERE status = 'SUCCESS'")
        .fetch_one(&stack.env.pool)
        .await?;
    assert_eq!(paid, 10, "one payment per pair");

    // Orders on hot items: stock is ample, so every order succeeds, and
    // the stats lane catches up with the orders.
    let shop = stack
        .loadgen(
            &dir,
            "shop",
            &["--scenario", "shop", "--requests", "30", "--users", "5"],
        )
        .await?;
    assert_eq!(count(&shop, "SUCCEEDED"), 30, "{shop}");
    assert_eq!(shop["checks"]["stats_equal_orders"], true, "{shop}");
    assert_eq!(shop["correct"], true, "{shop}");

    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
