//! Password hashing for the server: Argon2 runs on the blocking thread pool, never on an HTTP
//! worker, and at most [`CONCURRENT_HASHES`] at a time, so a burst of logins costs bounded
//! memory (one Argon2 block each) instead of one block per request.

use tokio::sync::Semaphore;

use crate::error::Error;
use crate::matrix::crypto::password;

pub(crate) const CONCURRENT_HASHES: usize = 2;

pub(crate) struct PasswordHasher {
    permits: Semaphore,
}

impl Default for PasswordHasher {
    fn default() -> Self {
        PasswordHasher {
            permits: Semaphore::new(CONCURRENT_HASHES),
        }
    }
}

impl PasswordHasher {
    pub(crate) async fn hash(&self, password: String) -> Result<String, Error> {
        let _permit = self.permits.acquire().await.map_err(Error::internal)?;
        actix_web::web::block(move || password::hash(&password))
            .await
            .map_err(Error::internal)?
            .map_err(Error::internal)
    }

    /// Whether `password` matches `stored`. Without a stored hash (no such user, or a
    /// deactivated one) it hashes anyway and answers `false`: the answer takes as long, so
    /// timing does not tell which accounts exist.
    pub(crate) async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, Error> {
        let _permit = self.permits.acquire().await.map_err(Error::internal)?;
        actix_web::web::block(move || match stored.filter(|hash| !hash.is_empty()) {
            Some(stored) => password::verify(&password, &stored),
            None => {
                password::verify(&password, dummy_hash());
                false
            }
        })
        .await
        .map_err(Error::internal)
    }
}

/// A hash to verify against when there is none, made once (on the blocking pool, under a
/// permit, like every other hash).
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| password::hash("no such user, no such password").unwrap_or_default())
}
