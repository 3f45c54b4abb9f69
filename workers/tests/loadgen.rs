//! Runs the load generator, small, against a whole stack in every scenario
//! and follow mode, from its command line to its JSON report: every request
//! decided, the expected outcome codes, the correctness checks passed.

use std::path::Path;

use clap::Parser;
use serde_json::{json, Value};
use testkit::scalar;
use testkit::stack::{Options, Stack};

/// Runs loadgen with `args` (separated by spaces) against `stack` and
/// returns its JSON report, which it writes to `dir/{name}.json`.
async fn loadgen(stack: &Stack, dir: &Path, name: &str, args: &str) -> anyhow::Result<Value> {
    let json = dir.join(format!("{name}.json"));
    let json_arg = json.to_string_lossy().into_owned();
    let mut argv = vec!["loadgen"];
    argv.extend(args.split_whitespace());
    argv.extend_from_slice(&[
        "--concurrency",
        "8",
        "--no-progress",
        "--gateway",
        &stack.api.base,
        "--admin-token",
        &stack.api.admin_token,
        "--database-url",
        &stack.env.common.database_url,
        "--json",
        &json_arg,
    ]);
    loadgen::run(loadgen::Cli::try_parse_from(argv)?)
        .await
        .map_err(|e| anyhow::anyhow!("loadgen {args:?} failed: {e:#}"))?;
    Ok(serde_json::from_str(&std::fs::read_to_string(&json)?)?)
}

/// Runs `bench/report.py` (quick mode) on the runs in `out`, writing into
/// `dest`; the `report.json` it wrote.
fn bench_report(out: &Path, dest: &Path) -> anyhow::Result<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/report.py");
    let status = std::process::Command::new("python3")
        .arg(&script)
        .arg(out)
        .arg("quick")
        .arg(dest)
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "report.py failed: {status}");
    Ok(serde_json::from_str(&std::fs::read_to_string(
        dest.join("report.json"),
    )?)?)
}

/// Baseline TPS of each scenario the report is fed.
const BASELINES: [(&str, f64); 4] = [
    ("charge", 20.0),
    ("booking", 4.0),
    ("rush", 8.0),
    ("shop", 5.0),
];

/// pgbench outputs of [`BASELINES`] times `factor` (1,000 transactions
/// each) in `dir`.
fn pgbench_outputs(dir: &Path, factor: f64) -> std::io::Result<()> {
    for (scenario, tps) in BASELINES {
        std::fs::write(
            dir.join(format!("pgbench-{scenario}.txt")),
            format!(
                "number of transactions actually processed: 1000\n\
                 tps = {:.6} (without initial connection time)\n",
                tps * factor
            ),
        )?;
    }
    Ok(())
}

/// Asserts that all `n` requests of `report` succeeded and its checks passed.
fn all_succeeded(report: &Value, n: u64) {
    assert_eq!(count(report, "SUCCEEDED"), n, "{report}");
    assert_eq!(report["correct"], true, "{report}");
}

fn count(report: &Value, code: &str) -> u64 {
    report["outcomes"][code].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn loadgen_runs_every_scenario_and_reports_what_happened() -> anyhow::Result<()> {
    // Room for every rush user in the queue at once.
    let stack = Stack::start(Options::default().active_limit(100_000)).await?;
    let dir = std::env::temp_dir().join(format!("loadgen-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let (stack_ref, dir_ref) = (&stack, dir.as_path());
    let run = move |name: &'static str, args: String| async move {
        loadgen(stack_ref, dir_ref, name, &args).await
    };

    // Detached clients at full speed, a closed loop, an open loop at a rate.
    for (name, extra, follow) in [
        ("charge", "", "detached"),
        ("charge-inline", "--follow inline", "inline"),
        ("charge-rate", "--rate 100", "detached"),
    ] {
        let args = format!("--scenario charge --requests 40 --users 4 {extra}");
        let report = run(name, args).await?;
        assert_eq!(report["requests"], 40, "{name}: {report}");
        assert_eq!(report["completed"], 40, "{name}: {report}");
        assert_eq!(count(&report, "SUCCEEDED"), 40, "{name}: {report}");
        assert_eq!(report["correct"], true, "{name}: {report}");
        assert_eq!(report["follow"], follow, "{name}: {report}");
        assert!(report["completed_per_sec"].as_f64().unwrap_or(0.0) > 0.0);
        assert!(report["outcome_ms"]["p99"].as_f64().unwrap_or(0.0) > 0.0);
    }
    // More users than seats: exactly one winner per seat.
    let rush = run("rush", "--scenario rush --requests 30 --seats 5".into()).await?;
    assert_eq!(count(&rush, "SUCCEEDED"), 5, "{rush}");
    assert_eq!(count(&rush, "SEAT_TAKEN"), 25, "{rush}");
    assert_eq!(rush["checks"]["rush_every_seat_sold_once"], true, "{rush}");
    assert_eq!(rush["correct"], true, "{rush}");

    // Hold then pay: a pair is one sample, decided by its payment.
    let booking = run("booking", "--scenario booking --requests 10".into()).await?;
    all_succeeded(&booking, 10);
    let paid = scalar!(
        stack,
        "SELECT count(*) FROM payments WHERE status = 'SUCCESS'"
    )
    .await?;
    assert_eq!(paid, 10, "one payment per pair");

    // Orders on hot items: stock is ample, so every order succeeds, and
    // the stats lane catches up with the orders.
    let shop = run("shop", "--scenario shop --requests 30 --users 5".into()).await?;
    all_succeeded(&shop, 30);
    assert_eq!(shop["checks"]["stats_equal_paid_orders"], true, "{shop}");

    // The soak's mix: charges, orders, holds given back (each user holds
    // its own seat: eight users, so no two holds meet); outcomes per second
    // and per minute.
    let mixed = run("mixed", "--scenario mixed --requests 40 --users 8".into()).await?;
    all_succeeded(&mixed, 40);
    let per_second: u64 = mixed["timeline"].as_array().map_or(0, |s| {
        s.iter().map(|b| b["completed"].as_u64().unwrap_or(0)).sum()
    });
    assert_eq!(per_second, 40, "every outcome in the timeline: {mixed}");
    let cancelled = scalar!(
        stack,
        "SELECT count(*) FROM reservations WHERE status = 'CANCELLED'"
    )
    .await?;
    assert_eq!(cancelled, 8, "one in five a hold given back");

    // Every second paid seat cancelled again (its payment refunded), every
    // second order through the cart; the invariants (refunds equal what was
    // paid, each order from its request) hold after both.
    let refunding = run(
        "booking-cancel",
        "--scenario booking --requests 6 --cancel-every 2".into(),
    )
    .await?;
    all_succeeded(&refunding, 6);
    let refunds = scalar!(
        stack,
        "SELECT count(*) FROM balance_histories WHERE type = 'REFUND'"
    )
    .await?;
    assert_eq!(refunds, 3, "every second pair refunded: {refunding}");
    let carted = run(
        "shop-cart",
        "--scenario shop --requests 10 --users 2 --cart-every 2".into(),
    )
    .await?;
    all_succeeded(&carted, 10);
    let lines_left = scalar!(stack, "SELECT count(*) FROM user_carts").await?;
    assert_eq!(lines_left, 0, "each checkout emptied its cart");

    // The bench's report reads what loadgen wrote: feed it these reports
    // with pgbench outputs of known TPS and check the ratios it computes.
    std::fs::copy(
        dir.join("charge-rate.json"),
        dir.join("charge-half-rate.json"),
    )?;
    let charge: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("charge.json"))?)?;
    pgbench_outputs(&dir, 1.0)?;
    std::fs::write(dir.join("commands.txt"), "loadgen --scenario charge\n")?;
    std::fs::write(dir.join("broker.txt"), "Apache Kafka, one KRaft node\n")?;
    let bench = bench_report(&dir, &dir)?;
    assert_eq!(bench["mode"], "quick");
    assert_eq!(bench["broker"], "Apache Kafka, one KRaft node");
    for (name, report, tps) in [
        ("charge", &charge, 20.0),
        ("booking", &booking, 4.0),
        ("rush", &rush, 8.0),
        ("shop", &shop, 5.0),
    ] {
        let row = &bench["scenarios"][name];
        let completed = report["completed_per_sec"].as_f64().unwrap_or(0.0);
        assert_eq!(row["baseline_tps"], tps, "{name}: {row}");
        let ratio = row["ratio"].as_f64().unwrap_or(-1.0);
        assert!(
            (ratio - completed / tps).abs() < 0.006,
            "{name}: ratio {ratio}, completed/s {completed}, baseline {tps}"
        );
        assert_eq!(row["correct"], true, "{name}: {row}");
        assert_eq!(
            row["accept_p99_ms"], report["accept_ms"]["p99"],
            "{name}: {row}"
        );
    }
    assert_eq!(bench["scenarios"]["charge-half-rate"]["rate"], 100.0);
    let markdown = std::fs::read_to_string(dir.join("REPORT.md"))?;
    assert!(
        markdown.contains("| charge-half-rate | detached | 100/s |"),
        "{markdown}"
    );

    // Rounds (`--repeat`): the same runs in r1 and r2, the second baseline
    // twice as fast, CPU recorded for charge: medians, every round kept.
    for round in ["r1", "r2"] {
        let at = dir.join(round);
        std::fs::create_dir_all(&at)?;
        for name in ["charge", "booking", "rush", "shop", "charge-half-rate"] {
            std::fs::copy(
                dir.join(format!("{name}.json")),
                at.join(format!("{name}.json")),
            )?;
        }
        pgbench_outputs(&at, if round == "r1" { 1.0 } else { 2.0 })?;
        let seconds =
            json!({"gateway": 2.0, "workers": 1.0, "kafka": 0.5, "postgres": 1.5, "load": 3.0});
        std::fs::write(at.join("charge.cpu.json"), seconds.to_string())?;
        std::fs::write(
            at.join("pgbench-charge.cpu.json"),
            json!({"postgres": 4.0, "load": 1.0}).to_string(),
        )?;
    }
    let rounds = dir.join("rounds");
    std::fs::create_dir_all(&rounds)?;
    let bench = bench_report(&dir, &rounds)?;
    assert_eq!(bench["rounds"], 2);
    let row = &bench["scenarios"]["charge"];
    assert_eq!(row["baseline_tps"], 30.0, "the median of 20 and 40: {row}");
    assert_eq!(row["runs"].as_array().map(Vec::len), Some(2), "{row}");
    let completed = charge["completed"].as_f64().unwrap_or(1.0);
    let gateway = row["cpu_s_per_1000"]["gateway"].as_f64().unwrap_or(0.0);
    assert!((gateway - 2000.0 / completed).abs() < 0.001, "{row}");
    assert_eq!(row["baseline_postgres_cpu_s_per_1000"], 4.0, "{row}");
    let markdown = std::fs::read_to_string(rounds.join("REPORT.md"))?;
    assert!(
        markdown.contains("| 30 (20–40) |"),
        "median and range: {markdown}"
    );

    // The soak's figures: whole minutes of the run, memory after warm-up.
    let soak = dir.join("soak-out");
    std::fs::create_dir_all(&soak)?;
    let mut run_minutes = mixed.clone();
    run_minutes["timeline"] = json!([{"start": 0, "completed": 10, "outcome_p99_ms": 5.0},
                                      {"start": 179, "completed": 10, "outcome_p99_ms": 5.0},
                                      {"start": 180, "completed": 1, "outcome_p99_ms": 9.0}]);
    run_minutes["minutes"] = json!([{"start": 0, "completed": 600, "outcome_p99_ms": 10.0},
                                     {"start": 60, "completed": 600, "outcome_p99_ms": 11.0},
                                     {"start": 120, "completed": 540, "outcome_p99_ms": 12.0},
                                     {"start": 180, "completed": 1, "outcome_p99_ms": 90.0}]);
    std::fs::write(soak.join("soak.json"), run_minutes.to_string())?;
    std::fs::write(
        soak.join("soak-memory.csv"),
        "second,kafka,gateway,workers,postgres,postgres_largest_backend\n\
         0,10,20,5,100,50\n120,12,40,6,110,55\n180,12,44,6,110,56\n",
    )?;
    let soak_script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/soak.py");
    let status = std::process::Command::new("python3")
        .arg(&soak_script)
        .args(["report"])
        .arg(&soak)
        .arg(&soak)
        .stderr(std::process::Stdio::null())
        .status()?;
    assert!(status.success(), "soak.py failed: {status}");
    let figures: Value = serde_json::from_str(&std::fs::read_to_string(soak.join("soak.json"))?)?;
    assert_eq!(
        figures["minutes"], 3,
        "the partial last minute left out: {figures}"
    );
    assert_eq!(figures["first_minute_per_sec"], 10.0, "{figures}");
    assert_eq!(figures["last_minute_per_sec"], 9.0, "{figures}");
    assert_eq!(figures["last_minute_p99_ms"], 12.0, "{figures}");
    assert_eq!(figures["max_rss_mb"]["gateway"], 44.0, "{figures}");
    assert_eq!(
        figures["memory"]["gateway"]["growth_after_warm_up"], 0.1,
        "{figures}"
    );

    let _ = std::fs::remove_dir_all(&dir);
    stack.stop().await
}
