//! User credentials: JSON Web Tokens (HS256) with subject, issue time,
//! expiry and a key id, checked without a database round trip.
//!
//! One key signs; further keys (`AUTH_PREVIOUS_SECRETS`) are only checked,
//! so the signing key can rotate without logging anyone out: a credential
//! names its key in the header (`kid`), and a key's id is derived from the
//! key itself, so there is no id to configure or to get wrong.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a credential says: whose it is, when it was issued, until when it
/// holds.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The user id, as a string (the JWT `sub`).
    sub: String,
    /// Issued at, seconds since the epoch.
    iat: u64,
    /// Expires at, seconds since the epoch.
    exp: u64,
}

/// A credential as issued: the token and when it stops being accepted.
#[derive(Debug, Clone)]
pub struct Issued {
    /// `Authorization: Bearer <token>`.
    pub token: String,
    /// When the gateway stops accepting it.
    pub expires_at: DateTime<Utc>,
}

/// Signs user credentials with one key and verifies them against every
/// configured key.
#[derive(Clone)]
pub struct Signer {
    kid: String,
    signing: EncodingKey,
    verifying: HashMap<String, DecodingKey>,
    validation: Validation,
    ttl: Duration,
}

/// The id of a key: 12 URL-safe characters of its SHA-256 (72 bits; the
/// hash of a secret of 32 bytes or more gives nothing of it away).
pub fn key_id(secret: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"booking-gateway key id\0")
        .chain_update(secret.as_bytes())
        .finalize();
    URL_SAFE_NO_PAD.encode(&digest[..9])
}

impl Signer {
    /// Signs with `secret`; also accepts credentials signed with any of
    /// `previous`; credentials it issues hold for `ttl`.
    pub fn new<'a>(
        secret: &'a str,
        previous: impl IntoIterator<Item = &'a str>,
        ttl: Duration,
    ) -> Self {
        let kid = key_id(secret);
        let mut verifying = HashMap::new();
        for key in std::iter::once(secret).chain(previous) {
            verifying.insert(key_id(key), DecodingKey::from_secret(key.as_bytes()));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // Expiry to the second until `with_leeway` says otherwise.
        validation.leeway = 0;
        Self {
            kid,
            signing: EncodingKey::from_secret(secret.as_bytes()),
            verifying,
            validation,
            ttl,
        }
    }

    /// Accepts a credential up to `leeway` past its expiry: the gateway
    /// that checks it may run a little behind or ahead of the one that
    /// issued it (`AUTH_CLOCK_LEEWAY_SECS`).
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.validation.leeway = leeway.as_secs();
        self
    }

    /// A credential of `user_id` issued now.
    pub fn issue(&self, user_id: i64) -> Issued {
        self.issue_at(user_id, SystemTime::now())
    }

    /// A credential of `user_id` as if issued at `at` (tests issue
    /// credentials that have expired).
    pub fn issue_at(&self, user_id: i64, at: SystemTime) -> Issued {
        let iat = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let exp = iat + self.ttl.as_secs().max(1);
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        let claims = Claims {
            sub: user_id.to_string(),
            iat,
            exp,
        };
        // Signing with an HMAC key over serialisable claims cannot fail.
        let token = match jsonwebtoken::encode(&header, &claims, &self.signing) {
            Ok(token) => token,
            Err(e) => unreachable!("HS256 signing failed: {e}"),
        };
        Issued {
            token,
            expires_at: DateTime::from_timestamp(exp as i64, 0).unwrap_or(DateTime::<Utc>::MAX_UTC),
        }
    }

    /// The user a credential stands for, if it is genuine (signed with a
    /// configured key, the one its `kid` names) and has not expired.
    pub fn verify(&self, credential: &str) -> Option<i64> {
        let header = jsonwebtoken::decode_header(credential).ok()?;
        let key = self.verifying.get(header.kid.as_deref()?)?;
        let data = jsonwebtoken::decode::<Claims>(credential, key, &self.validation).ok()?;
        data.claims.sub.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "old-secret-0123456789abcdef0123456789";
    const NEW: &str = "new-secret-0123456789abcdef0123456789";
    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn issued_credentials_verify_and_forgeries_do_not() {
        let signer = Signer::new(NEW, [], HOUR);
        let issued = signer.issue(42);
        assert_eq!(signer.verify(&issued.token), Some(42));
        assert!(issued.expires_at > Utc::now() + chrono::Duration::minutes(59));
        assert_eq!(Signer::new(OLD, [], HOUR).verify(&issued.token), None);
        let mut parts: Vec<&str> = issued.token.split('.').collect();
        let other = Signer::new(NEW, [], HOUR).issue(43).token;
        let other_claims = other.split('.').nth(1).unwrap_or_default().to_owned();
        parts[1] = &other_claims;
        assert_eq!(
            signer.verify(&parts.join(".")),
            None,
            "claims of 43, MAC of 42"
        );
        assert_eq!(signer.verify("garbage"), None);
        assert_eq!(signer.verify(""), None);
    }

    #[test]
    fn expired_credentials_are_refused() {
        let signer = Signer::new(NEW, [], HOUR);
        let two_hours_ago = SystemTime::now() - 2 * HOUR;
        assert_eq!(
            signer.verify(&signer.issue_at(7, two_hours_ago).token),
            None
        );
        let half_an_hour_ago = SystemTime::now() - HOUR / 2;
        assert_eq!(
            signer.verify(&signer.issue_at(7, half_an_hour_ago).token),
            Some(7)
        );
    }

    #[test]
    fn a_credential_just_past_its_expiry_is_accepted_within_the_leeway() {
        let strict = Signer::new(NEW, [], HOUR);
        let lenient = Signer::new(NEW, [], HOUR).with_leeway(Duration::from_secs(30));
        // Expired ten seconds ago by this clock.
        let issued = SystemTime::now() - HOUR - Duration::from_secs(10);
        let token = strict.issue_at(7, issued).token;
        assert_eq!(strict.verify(&token), None);
        assert_eq!(lenient.verify(&token), Some(7));
        let long_gone = strict
            .issue_at(7, SystemTime::now() - HOUR - Duration::from_secs(60))
            .token;
        assert_eq!(lenient.verify(&long_gone), None);
    }

    #[test]
    fn the_previous_key_verifies_while_configured() {
        let before = Signer::new(OLD, [], HOUR).issue(5).token;
        let rotated = Signer::new(NEW, [OLD], HOUR);
        assert_eq!(rotated.verify(&before), Some(5));
        assert_eq!(rotated.verify(&rotated.issue(6).token), Some(6));
        let retired = Signer::new(NEW, [], HOUR);
        assert_eq!(retired.verify(&before), None);
    }

    #[test]
    fn a_credential_without_a_known_key_id_is_refused() {
        let mut header = Header::new(Algorithm::HS256);
        let claims = Claims {
            sub: "1".into(),
            iat: 0,
            exp: u64::MAX / 2,
        };
        let key = EncodingKey::from_secret(NEW.as_bytes());
        let signer = Signer::new(NEW, [], HOUR);
        let no_kid = jsonwebtoken::encode(&header, &claims, &key).unwrap_or_default();
        assert_eq!(signer.verify(&no_kid), None);
        header.kid = Some("someone-else".into());
        let unknown = jsonwebtoken::encode(&header, &claims, &key).unwrap_or_default();
        assert_eq!(signer.verify(&unknown), None);
        header.kid = Some(key_id(NEW));
        header.alg = Algorithm::HS512;
        let other_alg =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(NEW.as_bytes()))
                .unwrap_or_default();
        assert_eq!(signer.verify(&other_alg), None, "HS256 only");
    }
}
