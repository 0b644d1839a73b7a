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

pub(crate) struct Services {
    pub(crate) config: Arc<Config>,
    pub(crate) signing_key: SigningKey,
    /// Keys this server signed with before rotating them, published as `old_verify_keys`.
    pub(crate) old_verify_keys: BTreeMap<String, OldKey>,
    /// Accounts, sessions and devices, moderation, profiles, account data, filters, push
    /// rules.
    pub(crate) users: Users,
    /// Room aliases, the public room list, room summaries and spaces.
    pub(crate) directory: Directory,
    /// Login, registration and user-name checks, per client address.
    pub(crate) auth_rate_limit: RateLimiter,
    /// Password checks per account (login and re-authentication), whatever the address.
    pub(crate) account_rate_limit: RateLimiter<String>,
    /// What unauthenticated requests may hold: body bytes, requests per address and origin.
    pub(crate) strangers: crate::api::strangers::Strangers,
    pub(crate) rooms: Arc<Rooms>,
    pub(crate) ephemeral: Arc<Ephemeral>,
    /// Becomes `true` when the server starts stopping: long polls answer at once instead
    /// of holding the stop up.
    pub(crate) stopping: Arc<tokio::sync::watch::Sender<bool>>,
    /// Talking to other servers: joins, invites, backfill, the outbound queue, EDUs.
    pub(crate) federation: Arc<Federation>,
    /// `/sync`: what is new for a user, long-polled.
    pub(crate) sync: SyncService,
    /// `/search` over the rooms' timelines.
    pub(crate) search: crate::rooms::search::Search,
    /// Room deletions asked for through the administration API, and their statuses.
    pub(crate) room_deletions: crate::api::admin::rooms::RoomDeletions,
    /// The content repository: uploads, downloads, thumbnails, other servers' media.
    pub(crate) media: Arc<crate::media::Media>,
    /// URL previews (off unless configured).
    pub(crate) previews: crate::media::preview::Previews,
    /// Requests by endpoint group and status, with latencies, for the metrics listener.
    pub(crate) http_metrics: crate::api::metrics::HttpMetrics,
}
