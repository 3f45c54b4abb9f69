//! Gateway configuration (DESIGN §8).

use std::net::SocketAddr;

use clap::Parser;
use platform::CommonConfig;

/// Everything the gateway reads from its environment.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "gateway",
    about = "HTTP gateway of the booking and shop backend"
)]
pub struct GatewayConfig {
    /// Shared connection settings.
    #[command(flatten)]
    pub common: CommonConfig,

    /// Address the HTTP server listens on.
    #[arg(long, env = "GATEWAY_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// Bearer credential of the admin endpoints.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,

    /// Key that signs user credentials.
    #[arg(long, env = "AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: String,

    /// Longest `wait_ms` a client may ask of `GET /v1/requests/{id}`.
    #[arg(long, env = "REQUEST_WAIT_MAX_MS", default_value_t = 30_000)]
    pub request_wait_max_ms: u64,

    /// IANA time zone whose midnight separates the days of product stats.
    #[arg(long, env = "BUSINESS_TZ", default_value = "Asia/Seoul")]
    pub business_tz: String,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 16 * 1024)]
    pub max_body_bytes: usize,

    /// Requests (accepted here, or decided and notified) a long-poll can
    /// answer from memory without reading the database; 0 turns the cache
    /// off.
    #[arg(long, env = "OUTCOME_CACHE_ENTRIES", default_value_t = 50_000)]
    pub outcome_cache_entries: usize,
}

impl GatewayConfig {
    /// A configuration for tests and tools: local defaults with the given
    /// secrets.
    pub fn local(admin_token: &str, auth_secret: &str) -> Self {
        Self {
            common: CommonConfig::local(),
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_token: admin_token.to_owned(),
            auth_secret: auth_secret.to_owned(),
            request_wait_max_ms: 30_000,
            business_tz: "Asia/Seoul".into(),
            max_body_bytes: 16 * 1024,
            outcome_cache_entries: 50_000,
        }
    }
}
