//! [`Services`]: the services assembled once at start-up for the HTTP layer, shared by every
//! worker through `web::Data` (an `Arc`). Only the handlers, the server's wiring and the CLI
//! name it; each service holds the handles it needs itself (no service takes the whole app,
//! which would let everything reach everything). No globals.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::api::ratelimit::RateLimiter;
use crate::config::Config;
use crate::directory::Directory;
use crate::federation::{Federation, Transport};
use crate::matrix::crypto::SigningKey;
use crate::matrix::crypto::rotation::OldKey;
use crate::rooms::Rooms;
use crate::storage::Storage;
use crate::sync::SyncService;
use crate::sync::ephemeral::Ephemeral;
use crate::users::Users;

pub struct Services {
    pub config: Arc<Config>,
    pub storage: Arc<Storage>,
    pub signing_key: SigningKey,
    /// Keys this server signed with before rotating them, published as `old_verify_keys`.
    pub old_verify_keys: BTreeMap<String, OldKey>,
    /// Accounts, sessions and devices, moderation, profiles, account data, filters, push
    /// rules.
    pub users: Users,
    /// Room aliases, the public room list, room summaries and spaces.
    pub directory: Directory,
    /// Login, registration and user-name checks, per client address.
    pub auth_rate_limit: RateLimiter,
    /// Password checks per account (login and re-authentication), whatever the address.
    pub account_rate_limit: RateLimiter<String>,
    pub rooms: Arc<Rooms>,
    pub ephemeral: Arc<Ephemeral>,
    /// Becomes `true` when the server starts stopping: long polls answer at once instead
    /// of holding the stop up.
    pub stopping: Arc<tokio::sync::watch::Sender<bool>>,
    /// Talking to other servers: joins, invites, backfill, the outbound queue, EDUs.
    pub federation: Arc<Federation>,
    /// `/sync`: what is new for a user, long-polled.
    pub sync: SyncService,
    /// `/search` over the rooms' timelines.
    pub search: crate::search::Search,
}

impl Services {
    /// Assembles the services around one database and one signing key. `transport` (the
    /// outbound client) and `old_verify_keys` are read by the caller, which reports their
    /// failures as start-up errors.
    pub fn new(
        config: Config,
        storage: Storage,
        signing_key: SigningKey,
        transport: Transport,
        old_verify_keys: BTreeMap<String, OldKey>,
    ) -> Services {
        let per_minute = config.limits.auth_attempts_per_minute;
        let position = storage.current_stream_position().unwrap_or(0);
        let config = Arc::new(config);
        let storage = Arc::new(storage);
        let rooms = Arc::new(Rooms::new(storage.clone(), signing_key.clone(), position));
        let ephemeral = Arc::new(Ephemeral::default());
        let stopping = Arc::new(tokio::sync::watch::channel(false).0);
        let federation = Arc::new(Federation {
            storage: storage.clone(),
            rooms: rooms.clone(),
            transport,
            signing_key: signing_key.clone(),
            config: config.clone(),
            ephemeral: ephemeral.clone(),
            stopping: stopping.clone(),
        });
        let sync = SyncService {
            storage: storage.clone(),
            rooms: rooms.clone(),
            ephemeral: ephemeral.clone(),
            stopping: stopping.clone(),
            our_server: config.server.server_name.clone(),
        };
        let search = crate::search::Search {
            storage: storage.clone(),
            rooms: rooms.clone(),
        };
        let users = Users::new(storage.clone(), config.server.server_name.clone());
        let directory = Directory::new(storage.clone(), config.server.server_name.clone());
        Services {
            search,
            old_verify_keys,
            federation,
            sync,
            rooms,
            ephemeral,
            auth_rate_limit: RateLimiter::new(per_minute, per_minute.clamp(1, 10)),
            account_rate_limit: RateLimiter::new(per_minute, per_minute.clamp(1, 10)),
            config,
            storage,
            signing_key,
            users,
            directory,
            stopping,
        }
    }
}
