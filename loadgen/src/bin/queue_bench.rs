//! The `queue-bench` command; see [`loadgen::queue`].

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    loadgen::queue::run(loadgen::queue::QueueCli::parse()).await?;
    Ok(())
}
