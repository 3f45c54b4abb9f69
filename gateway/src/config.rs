//! Gateway configuration (docs/design.md §8).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use platform::CommonConfig;
use secrecy::{ExposeSecret, SecretString};

/// HTTP gateway of the booking and shop backend.
#[derive(Debug, Clone, Parser)]
pub struct GatewayConfig {
    /// Shared connection settings.
    #[command(flatten)]
    pub common: CommonConfig,

    /// Address the HTTP server listens on.
    #[arg(long, env = "GATEWAY_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// Bearer credential of the admin endpoints (never printed: `Debug`
    /// shows it redacted).
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: SecretString,

    /// Key that signs user credentials (never printed).
    #[arg(long, env = "AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: SecretString,

    /// Further keys whose credentials are still accepted (comma-separated;
    /// never used to sign): the previous `AUTH_SECRET` while its
    /// credentials run out, or the next one before gateways sign with it.
    #[arg(
        long,
        env = "AUTH_PREVIOUS_SECRETS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub auth_previous_secrets: Vec<SecretString>,

    /// How long a credential from sign-up or login is accepted, in seconds.
    #[arg(long, env = "AUTH_TOKEN_TTL_SECS", default_value_t = 4 * 3600)]
    pub auth_token_ttl_secs: u64,

    /// How long past its expiry a credential is still accepted, in
    /// seconds: room for the clocks of the gateways to differ.
    #[arg(long, env = "AUTH_CLOCK_LEEWAY_SECS", default_value_t = 30)]
    pub auth_clock_leeway_secs: u64,

    /// Argon2id memory per password hash, in KiB (OWASP's 19 MiB).
    #[arg(long, env = "PASSWORD_HASH_MEMORY_KIB", default_value_t = 19_456)]
    pub password_hash_memory_kib: u32,

    /// Argon2id passes per password hash.
    #[arg(long, env = "PASSWORD_HASH_ITERATIONS", default_value_t = 2)]
    pub password_hash_iterations: u32,

    /// The window the rate limits below count in, in seconds.
    #[arg(long, env = "RATE_LIMIT_WINDOW_SECS", default_value_t = 60)]
    pub rate_limit_window_secs: u64,

    /// Sign-ups (`POST /v1/users`) per client address per window; 0: no
    /// limit.
    #[arg(long, env = "SIGNUPS_PER_ADDRESS", default_value_t = 10)]
    pub signups_per_address: u32,

    /// Logins (`POST /v1/sessions`) per client address per window; 0: no
    /// limit.
    #[arg(long, env = "LOGINS_PER_ADDRESS", default_value_t = 30)]
    pub logins_per_address: u32,

    /// Logins per account (the email asked for) from one client address
    /// per window; 0: no limit. Counted per address, so nobody can use up
    /// another person's tries.
    #[arg(long, env = "LOGINS_PER_ACCOUNT", default_value_t = 5)]
    pub logins_per_account: u32,

    /// Logins per account from all client addresses together per window;
    /// 0: no limit. The ceiling on guessing spread over many addresses.
    #[arg(long, env = "LOGINS_PER_ACCOUNT_ALL_ADDRESSES", default_value_t = 100)]
    pub logins_per_account_all_addresses: u32,

    /// Count a client by the last `X-Forwarded-For` address instead of the
    /// peer: set it when a proxy that appends the header fronts the gateway.
    #[arg(long, env = "TRUST_FORWARDED_FOR", default_value_t = false)]
    pub trust_forwarded_for: bool,

    /// Longest `wait_ms` a client may ask of `GET /v1/requests/{id}`.
    #[arg(long, env = "REQUEST_WAIT_MAX_MS", default_value_t = 30_000)]
    pub request_wait_max_ms: u64,

    /// IANA time zone whose midnight separates the days of product stats.
    #[arg(long, env = "BUSINESS_TZ", default_value = "Asia/Seoul")]
    pub business_tz: String,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 16 * 1024)]
    pub max_body_bytes: usize,

    /// Long-polls (`GET /v1/requests/{id}?wait_ms=`) that may wait at once;
    /// past it a long-poll is answered at once with the current status.
    #[arg(long, env = "LONG_POLL_MAX", default_value_t = 10_000)]
    pub long_poll_max: usize,

    /// Requests (accepted here, or decided and notified) a long-poll can
    /// answer from memory without reading the database; 0 turns the cache
    /// off.
    #[arg(long, env = "OUTCOME_CACHE_ENTRIES", default_value_t = 50_000)]
    pub outcome_cache_entries: usize,

    /// How long after its 202 an accepted request without an
    /// `Idempotency-Key` gets its PENDING row if it is still undecided, in
    /// milliseconds. Until then a poll answers PENDING from the signed
    /// request id alone; the row is what lets a lane answer `RECORD_LOST`
    /// when retention deleted the record, and shows operators what waits.
    /// A request decided sooner (the usual case) costs no row write at
    /// the gateway; 0 writes every row at once.
    #[arg(long, env = "PENDING_ROW_AFTER_MS", default_value_t = 5_000)]
    pub pending_row_after_ms: u64,

    /// Shortest polling interval a waiting queue token is given (the front
    /// of the line), in milliseconds.
    #[arg(long, env = "QUEUE_POLL_MIN_MS", default_value_t = 1_000)]
    pub queue_poll_min_ms: u64,

    /// Longest polling interval a waiting queue token is given (the back of
    /// a long line), in milliseconds.
    #[arg(long, env = "QUEUE_POLL_MAX_MS", default_value_t = 1_200_000)]
    pub queue_poll_max_ms: u64,

    /// Polling interval added per place between a token and the front, in
    /// milliseconds (never more than half the wait the line's pace
    /// predicts).
    #[arg(long, env = "QUEUE_POLL_MS_PER_PLACE", default_value_t = 10)]
    pub queue_poll_ms_per_place: u64,

    /// Places at the front of a line whose long-polls are held whatever the
    /// line's pace.
    #[arg(long, env = "QUEUE_LONG_POLL_PLACES", default_value_t = 100)]
    pub queue_long_poll_places: i64,

    /// How long past its polling interval a waiting place is kept without a
    /// poll before it is given up, in seconds.
    #[arg(long, env = "QUEUE_ABANDON_SECS", default_value_t = 120)]
    pub queue_abandon_secs: u64,

    /// Queue tokens whose polling pace this gateway tracks (a poll sooner
    /// than its interval allows answers 429); past it the oldest are
    /// forgotten.
    #[arg(long, env = "QUEUE_PACE_ENTRIES", default_value_t = 1_000_000)]
    pub queue_pace_entries: usize,
}

/// Shortest `AUTH_SECRET` accepted, in bytes: an HMAC-SHA256 key shorter
/// than its output weakens every credential.
pub const MIN_AUTH_SECRET_BYTES: usize = 32;

/// Example values from `docker-compose.yml`, `.env.example` and the docs:
/// a gateway that finds one of them as a secret refuses to start.
const PLACEHOLDERS: &[&str] = &[
    "change-me",
    "change-me-admin",
    "change-me-secret",
    "changeme",
    "replace-me",
    "secret",
    "admin",
];

/// Why the gateway refuses its secrets.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Empty.
    #[error("{0} must be set")]
    Missing(&'static str),
    /// One of the published example values.
    #[error(
        "{0} is a placeholder from the examples; generate your own (e.g. `openssl rand -hex 32`)"
    )]
    Placeholder(&'static str),
    /// Too short to be a signing key or to resist guessing.
    #[error("{0} must be at least {MIN_AUTH_SECRET_BYTES} bytes (each, for AUTH_PREVIOUS_SECRETS), leading and trailing spaces left out; generate one with `openssl rand -hex 32`")]
    TooShort(&'static str),
}

impl GatewayConfig {
    /// Signs credentials with `AUTH_SECRET`, accepts those of
    /// `AUTH_PREVIOUS_SECRETS` too.
    pub fn signer(&self) -> crate::auth::Signer {
        crate::auth::Signer::new(
            self.auth_secret(),
            self.previous_secrets(),
            Duration::from_secs(self.auth_token_ttl_secs),
        )
        .with_leeway(Duration::from_secs(self.auth_clock_leeway_secs))
    }

    /// Issues request ids with `AUTH_SECRET`, verifies those of
    /// `AUTH_PREVIOUS_SECRETS` too.
    pub fn request_ids(&self) -> crate::auth::request_ids::RequestIds {
        crate::auth::request_ids::RequestIds::new(self.auth_secret(), self.previous_secrets())
    }

    /// `AUTH_SECRET` as it is used and checked: without leading and
    /// trailing spaces (a line read from a file often ends in one).
    fn auth_secret(&self) -> &str {
        self.auth_secret.expose_secret().trim()
    }

    /// `ADMIN_TOKEN` as the gateway compares it with a bearer credential
    /// and checks it: without leading and trailing spaces.
    pub fn admin_token(&self) -> &str {
        self.admin_token.expose_secret().trim()
    }

    /// The keys of `AUTH_PREVIOUS_SECRETS`, blank entries left out.
    fn previous_secrets(&self) -> impl Iterator<Item = &str> {
        self.auth_previous_secrets
            .iter()
            .map(|s| s.expose_secret().trim())
            .filter(|s| !s.is_empty())
    }

    /// The cost of a password hash.
    pub fn password_cost(&self) -> crate::auth::password::Cost {
        crate::auth::password::Cost {
            memory_kib: self.password_hash_memory_kib,
            iterations: self.password_hash_iterations,
        }
    }

    /// The rate limits of sign-ups and logins.
    pub fn limit_settings(&self) -> crate::auth::limits::LimitSettings {
        crate::auth::limits::LimitSettings {
            window: Duration::from_secs(self.rate_limit_window_secs),
            signups_per_address: self.signups_per_address,
            logins_per_address: self.logins_per_address,
            logins_per_account: self.logins_per_account,
            logins_per_account_all_addresses: self.logins_per_account_all_addresses,
            trust_forwarded_for: self.trust_forwarded_for,
        }
    }

    /// The polling policy of queue tokens.
    pub fn poll_policy(&self) -> crate::queue::PollPolicy {
        crate::queue::PollPolicy {
            min: Duration::from_millis(self.queue_poll_min_ms.max(1)),
            max: Duration::from_millis(self.queue_poll_max_ms.max(self.queue_poll_min_ms)),
            per_place: Duration::from_millis(self.queue_poll_ms_per_place),
            front_places: self.queue_long_poll_places,
            abandon_after: Duration::from_secs(self.queue_abandon_secs),
        }
    }

    /// Refuses empty, placeholder and short secrets: `AUTH_SECRET`,
    /// `ADMIN_TOKEN` and each of `AUTH_PREVIOUS_SECRETS` by the same rules,
    /// on the value as it is used (trimmed).
    pub fn check_secrets(&self) -> Result<(), SecretError> {
        let secrets = [
            ("AUTH_SECRET", self.auth_secret()),
            ("ADMIN_TOKEN", self.admin_token()),
        ]
        .into_iter()
        .chain(
            self.previous_secrets()
                .map(|s| ("AUTH_PREVIOUS_SECRETS", s)),
        );
        for (name, value) in secrets {
            if value.is_empty() {
                return Err(SecretError::Missing(name));
            }
            let lower = value.to_ascii_lowercase();
            if PLACEHOLDERS.contains(&lower.as_str()) || lower.starts_with("change-me") {
                return Err(SecretError::Placeholder(name));
            }
            if value.len() < MIN_AUTH_SECRET_BYTES {
                return Err(SecretError::TooShort(name));
            }
        }
        Ok(())
    }

    /// A configuration for tests and tools: local defaults with the given
    /// secrets.
    pub fn local(admin_token: &str, auth_secret: &str) -> Self {
        platform::config::from_defaults(&[
            "--admin-token",
            admin_token,
            "--auth-secret",
            auth_secret,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn secrets_never_show_in_debug_output() {
        let config = GatewayConfig::local("admin-do-not-print-me", GOOD);
        let printed = format!("{config:?}");
        assert!(!printed.contains("do-not-print-me"), "{printed}");
        assert!(!printed.contains(GOOD), "{printed}");
        assert!(printed.contains("REDACTED"), "{printed}");
    }

    const ADMIN: &str = "admin-0123456789abcdef0123456789abcdef";

    #[test]
    fn placeholder_short_and_empty_secrets_are_refused() {
        let check = |admin: &str, secret: &str| GatewayConfig::local(admin, secret).check_secrets();
        assert!(check(ADMIN, GOOD).is_ok());
        assert!(matches!(
            check(ADMIN, "change-me-secret"),
            Err(SecretError::Placeholder("AUTH_SECRET"))
        ));
        assert!(matches!(
            check("change-me-admin", GOOD),
            Err(SecretError::Placeholder("ADMIN_TOKEN"))
        ));
        assert!(matches!(
            check(ADMIN, "short-secret"),
            Err(SecretError::TooShort("AUTH_SECRET"))
        ));
        assert!(matches!(
            check("admin-3f9a1c", GOOD),
            Err(SecretError::TooShort("ADMIN_TOKEN"))
        ));
        assert!(matches!(
            check(" ", GOOD),
            Err(SecretError::Missing("ADMIN_TOKEN"))
        ));
    }

    #[test]
    fn secrets_are_checked_and_used_trimmed() {
        // 31 bytes and a space: short once trimmed, as it is compared.
        let short = format!("{} ", &ADMIN[..31]);
        assert!(matches!(
            check_with(&short, GOOD),
            Err(SecretError::TooShort("ADMIN_TOKEN"))
        ));
        let padded = GatewayConfig::local(&format!(" {ADMIN}\n"), &format!("{GOOD} "));
        assert!(padded.check_secrets().is_ok());
        assert_eq!(padded.admin_token(), ADMIN);
        assert_eq!(padded.auth_secret(), GOOD);
    }

    fn check_with(admin: &str, secret: &str) -> Result<(), SecretError> {
        GatewayConfig::local(admin, secret).check_secrets()
    }

    #[test]
    fn a_short_previous_secret_is_refused_and_a_blank_entry_ignored() {
        let with_previous = |previous: &str| {
            let mut config = GatewayConfig::local(ADMIN, GOOD);
            config.auth_previous_secrets = previous.split(',').map(SecretString::from).collect();
            config.check_secrets()
        };
        assert!(with_previous(&format!("{GOOD}, ")).is_ok());
        assert!(matches!(
            with_previous(&format!("{GOOD},short-secret")),
            Err(SecretError::TooShort("AUTH_PREVIOUS_SECRETS"))
        ));
    }
}
