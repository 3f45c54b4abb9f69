//! The `chaos` command; see [`chaos::run`].

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The run's own Kafka clients (poison, readers) meet every broker fault
    // on purpose; their complaints are not news.
    platform::observability::init_tracing_with_default(
        "pretty",
        "warn,rdkafka=off,librdkafka=off,sqlx=error",
    );
    let report = chaos::run(chaos::Settings::parse()).await?;
    if !report.ok {
        for problem in &report.problems {
            eprintln!("problem: {problem}");
        }
        anyhow::bail!("the chaos run found broken guarantees");
    }
    Ok(())
}
