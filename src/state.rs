//! [`AppState`]: everything a request handler may reach, built once at start-up and shared by
//! every worker through `web::Data` (an `Arc`). No globals.

use crate::accounts::password_hasher::PasswordHasher;
use crate::accounts::uia::UiaSessions;
use crate::config::Config;
use crate::crypto::SigningKey;
use crate::error::StartupError;
use crate::federation::Federation;
use crate::ratelimit::RateLimiter;
use crate::rooms::Rooms;
use crate::storage::Storage;

pub struct AppState {
    pub config: Config,
    pub storage: Storage,
    pub signing_key: SigningKey,
    /// Keys this server signed with before rotating them, published as `old_verify_keys`.
    pub old_verify_keys: std::collections::BTreeMap<String, crate::crypto::rotation::OldKey>,
    pub password_hasher: PasswordHasher,
    pub uia: UiaSessions,
    /// Login, registration and user-name checks, per client address.
    pub auth_rate_limit: RateLimiter,
    /// Password checks per account (login and re-authentication), whatever the address.
    pub account_rate_limit: RateLimiter<String>,
    pub rooms: Rooms,
    pub ephemeral: crate::ephemeral::Ephemeral,
    /// Becomes `true` when the server starts stopping: long polls answer at once instead
    /// of holding the stop up.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// Discovery, the outbound client and other servers' keys.
    pub federation: Federation,
}

impl AppState {
    /// Fails only if the federation client cannot be set up (an unreadable extra CA file).
    pub fn new(
        config: Config,
        storage: Storage,
        signing_key: SigningKey,
    ) -> Result<AppState, StartupError> {
        let per_minute = config.limits.auth_attempts_per_minute;
        let position = storage.current_stream_position().unwrap_or(0);
        let federation = Federation::new(
            config.server.server_name.clone(),
            signing_key.clone(),
            &config.federation,
        )?;
        let old_verify_keys = crate::crypto::rotation::load_old_keys(&config.server.signing_key)
            .map_err(|reason| StartupError::SigningKey {
                path: crate::crypto::rotation::old_keys_path(&config.server.signing_key),
                reason,
            })?;
        Ok(AppState {
            old_verify_keys,
            federation,
            rooms: Rooms::new(position),
            ephemeral: crate::ephemeral::Ephemeral::default(),
            auth_rate_limit: RateLimiter::new(per_minute, per_minute.clamp(1, 10)),
            account_rate_limit: RateLimiter::new(per_minute, per_minute.clamp(1, 10)),
            config,
            storage,
            signing_key,
            password_hasher: PasswordHasher::default(),
            uia: UiaSessions::default(),
            stopping: tokio::sync::watch::channel(false).0,
        })
    }
}
