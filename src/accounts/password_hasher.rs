//! Password hashing for the server: Argon2 runs on the blocking thread pool, never on an HTTP
//! worker, and at most [`CONCURRENT_HASHES`] at a time, so a burst of logins costs bounded
//! memory (one Argon2 block each) instead of one block per request.

use tokio::sync::Semaphore;

use crate::crypto::password;
use crate::error::Error;

pub const CONCURRENT_HASHES: usize = 2;

pub struct PasswordHasher {
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
    pub async fn hash(&self, password: String) -> Result<String, Error> {
        let _permit = self.permits.acquire().await.map_err(Error::internal)?;
        actix_web::web::block(move || password::hash(&password))
            .await
            .map_err(Error::internal)?
            .map_err(Error::internal)
    }

    /// Whether `password` matches `stored`; a malformed or empty hash never matches.
    pub async fn verify(&self, password: String, stored: String) -> Result<bool, Error> {
        if stored.is_empty() {
            return Ok(false);
        }
        let _permit = self.permits.acquire().await.map_err(Error::internal)?;
        actix_web::web::block(move || password::verify(&password, &stored))
            .await
            .map_err(Error::internal)
    }
}
