//! [`Services`]: the services the HTTP layer calls, assembled once at start-up by the server
//! wiring (`server::assemble`) and shared by every worker through `web::Data` (an `Arc`). Only the handlers, the server's wiring and the CLI
//! name it; each service holds the handles it needs itself (no service takes the whole app,
//! which would let everything reach everything). No globals.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::api::ratelimit::RateLimiter;
use crate::config::Config;
use crate::directory::Directory;
use crate::federation::Federation;
use crate::matrix::crypto::SigningKey;
use crate::matrix::crypto::rotation::OldKey;
use crate::rooms::Rooms;
use crate::sync::SyncService;
use crate::sync::ephemeral::Ephemeral;
use crate::users::Users;

pub struct Services {
    pub config: Arc<Config>,
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
