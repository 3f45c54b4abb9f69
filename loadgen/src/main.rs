//! The `loadgen` command; see [`loadgen::run`].

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    loadgen::run(loadgen::Cli::parse()).await?;
    Ok(())
}
