//! Rate limits on the public calls: sign-ups per client address; logins
//! per client address, per account (the email asked for, whether or not it
//! exists) from one address, and per account from all addresses together.
//! The strict per-account count is per address, so a stranger who guesses
//! at someone's password from their own address uses up only their own
//! tries, never the owner's; the looser ceiling over all addresses still
//! stops guessing spread over many. Each is a count per window (`RATE_LIMIT_WINDOW_SECS`), refilled
//! evenly through the window (a token bucket: `governor`); 0 turns one off.
//! The counts live in this gateway's memory: behind N gateways a client
//! gets up to N times the count.

use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::state::AppState;

/// Counts per window of each limit (0: no limit).
#[derive(Debug, Clone, Copy)]
pub struct LimitSettings {
    /// The window the counts are per.
    pub window: Duration,
    /// Sign-ups per client address.
    pub signups_per_address: u32,
    /// Login attempts per client address.
    pub logins_per_address: u32,
    /// Login attempts per account (email) from one client address.
    pub logins_per_account: u32,
    /// Login attempts per account from all addresses together.
    pub logins_per_account_all_addresses: u32,
    /// Whether the client address is the last `X-Forwarded-For` entry (the
    /// gateway runs behind a proxy that appends it) rather than the peer.
    pub trust_forwarded_for: bool,
}

/// One keyed limit; `None` when turned off.
struct Limit<K: Hash + Eq + Clone>(Option<DefaultKeyedRateLimiter<K>>);

impl<K: Hash + Eq + Clone> Limit<K> {
    fn new(count: u32, window: Duration) -> Self {
        let quota = NonZeroU32::new(count).and_then(|burst| {
            Quota::with_period(window / burst.get()).map(|quota| quota.allow_burst(burst))
        });
        Self(quota.map(RateLimiter::keyed))
    }

    /// Takes one from `key`'s count, or says how long until one is back.
    fn check(&self, key: &K) -> Result<(), ApiError> {
        let Some(limiter) = &self.0 else {
            return Ok(());
        };
        limiter.check_key(key).map_err(|not_until| {
            ApiError::RateLimited(not_until.wait_time_from(DefaultClock::default().now()))
        })
    }

    fn forget_idle(&self) {
        if let Some(limiter) = &self.0 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// The gateway's rate limits.
#[derive(Clone)]
pub struct RateLimits {
    inner: Arc<Inner>,
}

struct Inner {
    signups: Limit<IpAddr>,
    logins: Limit<IpAddr>,
    accounts: Limit<(String, IpAddr)>,
    account_ceiling: Limit<String>,
    trust_forwarded_for: bool,
}

impl RateLimits {
    /// Limits as `settings` say.
    pub fn new(settings: LimitSettings) -> Self {
        let window = settings.window.max(Duration::from_millis(1));
        Self {
            inner: Arc::new(Inner {
                signups: Limit::new(settings.signups_per_address, window),
                logins: Limit::new(settings.logins_per_address, window),
                accounts: Limit::new(settings.logins_per_account, window),
                account_ceiling: Limit::new(settings.logins_per_account_all_addresses, window),
                trust_forwarded_for: settings.trust_forwarded_for,
            }),
        }
    }

    /// A sign-up from `client`.
    pub fn signup(&self, client: ClientAddr) -> Result<(), ApiError> {
        self.inner.signups.check(&client.0)
    }

    /// A login attempt from `client` for `email` (in its stored form).
    pub fn login(&self, client: ClientAddr, email: &str) -> Result<(), ApiError> {
        self.inner.logins.check(&client.0)?;
        self.inner.accounts.check(&(email.to_owned(), client.0))?;
        self.inner.account_ceiling.check(&email.to_owned())
    }

    /// The client address of a call.
    pub fn client(&self, parts: &Parts) -> ClientAddr {
        let forwarded = self
            .inner
            .trust_forwarded_for
            .then(|| last_forwarded_for(parts))
            .flatten();
        let peer = || {
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip())
        };
        ClientAddr(
            forwarded
                .or_else(peer)
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        )
    }

    /// Drops the counts of clients quiet for a window, every minute, until
    /// `cancel` fires: memory follows the clients of the last window, not
    /// every client ever seen.
    pub async fn run(self, cancel: CancellationToken) {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = every.tick() => {
                    self.inner.signups.forget_idle();
                    self.inner.logins.forget_idle();
                    self.inner.accounts.forget_idle();
                    self.inner.account_ceiling.forget_idle();
                }
            }
        }
    }
}

/// Where a call comes from, as far as rate limits go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(state.limits.client(parts))
    }
}

/// The last address of `X-Forwarded-For`: the one the nearest proxy saw
/// (entries before it are whatever the client wrote).
fn last_forwarded_for(parts: &Parts) -> Option<IpAddr> {
    parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .next_back()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(count: u32) -> LimitSettings {
        LimitSettings {
            window: Duration::from_secs(3600),
            signups_per_address: count,
            logins_per_address: count,
            logins_per_account: count,
            logins_per_account_all_addresses: count * 3,
            trust_forwarded_for: false,
        }
    }

    const HOME: ClientAddr = ClientAddr(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
    const AWAY: ClientAddr = ClientAddr(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));

    #[test]
    fn a_count_is_per_key_and_the_refusal_says_when() {
        let limits = RateLimits::new(settings(2));
        assert!(limits.signup(HOME).is_ok());
        assert!(limits.signup(HOME).is_ok());
        match limits.signup(HOME) {
            Err(ApiError::RateLimited(wait)) => {
                assert!(wait > Duration::from_secs(1700) && wait <= Duration::from_secs(1800));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(
            limits.signup(AWAY).is_ok(),
            "another address has its own count"
        );
    }

    #[test]
    fn a_stranger_cannot_lock_the_owner_out_of_an_account() {
        let limits = RateLimits::new(settings(2));
        // The stranger uses up the account's count from their address...
        assert!(limits.login(AWAY, "a@example.com").is_ok());
        assert!(limits.login(AWAY, "a@example.com").is_ok());
        assert!(limits.login(AWAY, "a@example.com").is_err());
        // ...and the owner, from theirs, still logs in.
        assert!(limits.login(HOME, "a@example.com").is_ok());
        assert!(limits.login(HOME, "b@example.com").is_ok());
    }

    #[test]
    fn guesses_spread_over_many_addresses_meet_the_account_ceiling() {
        // Two per account and address, six per account in all.
        let limits = RateLimits::new(settings(2));
        for last in 1..=6u8 {
            let from = ClientAddr(IpAddr::V4(Ipv4Addr::new(10, 0, 1, last)));
            assert!(limits.login(from, "a@example.com").is_ok(), "{last}");
        }
        let seventh = ClientAddr(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 7)));
        assert!(limits.login(seventh, "a@example.com").is_err());
        assert!(limits.login(seventh, "b@example.com").is_ok());
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let limits = RateLimits::new(settings(0));
        for _ in 0..1000 {
            assert!(limits.signup(HOME).is_ok());
        }
    }

    #[test]
    fn the_client_is_the_peer_or_the_last_forwarded_address_when_trusted() {
        let request = axum::http::Request::builder()
            .header("x-forwarded-for", "1.2.3.4, 10.9.8.7")
            .body(())
            .map(|r| r.into_parts().0);
        let Ok(mut parts) = request else {
            panic!("a request");
        };
        parts
            .extensions
            .insert(ConnectInfo(SocketAddr::from(([192, 168, 1, 1], 4000))));
        let peer = RateLimits::new(settings(1)).client(&parts);
        assert_eq!(peer.0, IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1)));
        let trusted = RateLimits::new(LimitSettings {
            trust_forwarded_for: true,
            ..settings(1)
        });
        assert_eq!(
            trusted.client(&parts).0,
            IpAddr::V4(Ipv4Addr::new(10, 9, 8, 7))
        );
    }
}
