//! The `chaos` command; see [`chaos::run`].

use clap::Parser;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The run's own Kafka clients (poison, readers) meet every broker fault
    // on purpose; their complaints are not news.
    platform::observability::init_tracing_with_default(
        "pretty",
        "warn,rdkafka=off,librdkafka=off,sqlx=error",
    );
    let interrupted = CancellationToken::new();
    platform::lifecycle::cancel_on_signal(interrupted.clone());
    // Interrupted, the run is dropped, and with it the stack: every process
    // it started is killed (they are spawned kill-on-drop).
    let report = tokio::select! {
        report = chaos::run(chaos::Settings::parse()) => report?,
        _ = interrupted.cancelled() => anyhow::bail!("interrupted; the stack was stopped"),
    };
    if !report.ok {
        for problem in &report.problems {
            eprintln!("problem: {problem}");
        }
        anyhow::bail!("the chaos run found broken guarantees");
    }
    Ok(())
}
