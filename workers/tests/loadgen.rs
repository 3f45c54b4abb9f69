//! Runs the load generator, small, against a whole stack in every scenario
//! and follow mode, from its command line to its JSON report: every request
//! decided, the expected outcome codes, the correctness checks passed.

use std::path::Path;

use clap::Parser;
use serde_json::Value;
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
    assert_eq!(count(&booking, "SUCCEEDED"), 10, "{booking}");
    assert_eq!(booking["correct"], true, "{booking}");
    let paid = scalar!(
        stack,
        "SELECT count(*) FROM payments WHERE status = 'SUCCESS'"
    )
    .await?;
    assert_eq!(paid, 10, "one payment per pair");

    // Orders on hot items: stock is ample, so every order succeeds, and
    // the stats lane catches up with the orders.
    let shop = run("shop", "--scenario shop --requests 30 --users 5".into()).await?;
    assert_eq!(count(&shop, "SUCCEEDED"), 30, "{shop}");
    assert_eq!(shop["checks"]["stats_equal_paid_orders"], true, "{shop}");
    assert_eq!(shop["correct"], true, "{shop}");

    // The bench's report reads what loadgen wrote: feed it these reports
    // with pgbench outputs of known TPS and check the ratios it computes.
    std::fs::copy(
        dir.join("charge-rate.json"),
        dir.join("charge-half-rate.json"),
    )?;
    let charge: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("charge.json"))?)?;
    for (scenario, tps) in [
        ("charge", 20.0),
        ("booking", 4.0),
        ("rush", 8.0),
        ("shop", 5.0),
    ] {
        std::fs::write(
            dir.join(format!("pgbench-{scenario}.txt")),
            format!("tps = {tps:.6} (without initial connection time)\n"),
        )?;
    }
    std::fs::write(dir.join("commands.txt"), "loadgen --scenario charge\n")?;
    std::fs::write(dir.join("broker.txt"), "memory://nisshi/\n")?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/report.py");
    let status = std::process::Command::new("python3")
        .arg(&script)
        .arg(&dir)
        .arg("quick")
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .status()?;
    assert!(status.success(), "report.py failed: {status}");
    let bench: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("report.json"))?)?;
    assert_eq!(bench["mode"], "quick");
    assert_eq!(bench["broker"], "memory://nisshi/");
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
    assert_eq!(bench["charge_variants"]["charge-half-rate"]["rate"], 100.0);
    let markdown = std::fs::read_to_string(dir.join("REPORT.md"))?;
    assert!(
        markdown.contains("| charge-half-rate | detached | 100/s |"),
        "{markdown}"
    );

    let _ = std::fs::remove_dir_all(&dir);
    stack.stop().await
}
