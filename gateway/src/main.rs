use clap::Parser;
use gateway::{Gateway, GatewayConfig};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = GatewayConfig::parse();
    platform::observability::init_tracing(&config.common.log_format);
    let cancel = CancellationToken::new();
    platform::lifecycle::cancel_on_signal(cancel.clone());
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    Gateway::build(&config)?.serve(listener, cancel).await
}
