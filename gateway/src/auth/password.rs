//! Passwords: Argon2id hashes in PHC form (`$argon2id$v=19$m=…`), computed
//! off the async threads, a few at a time.
//!
//! A login for an email nobody has still checks a password, against a hash
//! made at start-up with the same cost, so wrong email and wrong password
//! take the same time.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

/// The cost of a hash: Argon2id memory and passes (one lane).
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    /// Memory, KiB (at least 8).
    pub memory_kib: u32,
    /// Passes over it (at least 1).
    pub iterations: u32,
}

impl Cost {
    /// The cost of stacks that sign up hundreds of users as set-up (the
    /// test suites, the chaos run, the bench, the fuzzer): Argon2's
    /// lowest, so set-up does not drown what a run is about. Never for a
    /// deployment. `./dev` spells it as `SET_UP_HASH_MEMORY_KIB` and
    /// `SET_UP_HASH_ITERATIONS`.
    pub const SET_UP: Cost = Cost {
        memory_kib: 64,
        iterations: 1,
    };
}

/// Hashes and checks passwords.
#[derive(Clone)]
pub struct Passwords {
    argon2: Argon2<'static>,
    /// What an unknown email's login is checked against.
    decoy: Arc<str>,
    /// Hashes computed at once: each holds `memory_kib` and a core.
    permits: Arc<Semaphore>,
}

/// Why a cost is refused.
#[derive(Debug, thiserror::Error)]
#[error("password hash cost: {0}")]
pub struct CostError(String);

impl Passwords {
    /// A hasher at `cost`, computing as many hashes at once as there are
    /// cores.
    pub fn new(cost: Cost) -> Result<Self, CostError> {
        let params = Params::new(cost.memory_kib, cost.iterations, 1, None)
            .map_err(|e| CostError(e.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut decoy_password = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut decoy_password);
        let decoy = hash_with(&argon2, &decoy_password).map_err(|e| CostError(e.to_string()))?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            argon2,
            decoy: Arc::from(decoy),
            permits: Arc::new(Semaphore::new(cores)),
        })
    }

    /// The PHC string of `password` with a fresh salt.
    pub async fn hash(&self, password: SecretString) -> anyhow::Result<String> {
        let argon2 = self.argon2.clone();
        self.blocking(move || {
            hash_with(&argon2, password.expose_secret().as_bytes()).map_err(anyhow::Error::msg)
        })
        .await?
    }

    /// Whether `password` matches `stored` (a PHC string); with no stored
    /// hash (no such user, or one without a password) the password is
    /// checked against the decoy, so the answer takes as long and is no.
    pub async fn verify(&self, password: SecretString, stored: Option<String>) -> bool {
        let argon2 = self.argon2.clone();
        let decoy = self.decoy.clone();
        self.blocking(move || {
            let known = stored.is_some();
            let hash = stored.as_deref().unwrap_or(&decoy);
            let Ok(parsed) = PasswordHash::new(hash) else {
                return false;
            };
            let matches = argon2
                .verify_password(password.expose_secret().as_bytes(), &parsed)
                .is_ok();
            known && matches
        })
        .await
        .unwrap_or(false)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let _permit = self.permits.acquire().await?;
        Ok(tokio::task::spawn_blocking(work).await?)
    }
}

fn hash_with(argon2: &Argon2<'_>, password: &[u8]) -> Result<String, argon2::password_hash::Error> {
    let mut salt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)?;
    Ok(argon2.hash_password(password, &salt)?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_checks_its_password_and_no_other() -> anyhow::Result<()> {
        let passwords = Passwords::new(Cost::SET_UP)?;
        let stored = passwords.hash("correct horse".into()).await?;
        assert!(
            stored.starts_with("$argon2id$v=19$m=64,t=1,p=1$"),
            "{stored}"
        );
        assert!(
            passwords
                .verify("correct horse".into(), Some(stored.clone()))
                .await
        );
        assert!(
            !passwords
                .verify("correct horsE".into(), Some(stored.clone()))
                .await
        );
        let again = passwords.hash("correct horse".into()).await?;
        assert_ne!(stored, again, "a fresh salt per hash");
        Ok(())
    }

    #[tokio::test]
    async fn no_stored_hash_is_a_no_even_for_the_decoy_password() -> anyhow::Result<()> {
        let passwords = Passwords::new(Cost::SET_UP)?;
        assert!(!passwords.verify("anything".into(), None).await);
        assert!(
            !passwords
                .verify("x".into(), Some("not a hash".into()))
                .await
        );
        Ok(())
    }

    #[test]
    fn a_cost_argon2_refuses_is_an_error() {
        let refused = Passwords::new(Cost {
            memory_kib: 1,
            iterations: 0,
        });
        assert!(refused.is_err());
    }
}
