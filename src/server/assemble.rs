//! Assembling the services: one database, one signing key, one room service, and each
//! service given the handles it uses (and nothing more). The wiring's job: services never
//! build each other, and only this function sees them all at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::api::app::Services;
use crate::api::ratelimit::RateLimiter;
use crate::config::Config;
use crate::directory::Directory;
use crate::federation::{Federation, Transport};
use crate::matrix::crypto::SigningKey;
use crate::matrix::crypto::rotation::OldKey;
use crate::media::Media;
use crate::media::preview::Previews;
use crate::rooms::Rooms;
use crate::rooms::search::Search;
use crate::storage::Storage;
use crate::sync::SyncService;
use crate::sync::ephemeral::Ephemeral;
use crate::users::Users;

/// Assembles the services around one database and one signing key. `transport` (the
/// outbound client), `old_verify_keys` and `previews` (its own outbound client) are made by
/// the caller, which reports their failures as start-up errors.
pub(crate) fn services(
    config: Config,
    storage: Arc<Storage>,
    signing_key: SigningKey,
    transport: Transport,
    old_verify_keys: BTreeMap<String, OldKey>,
    previews: Previews,
) -> Services {
    let per_minute = config.limits.auth_attempts_per_minute;
    let http_metrics = crate::api::metrics::HttpMetrics::new(config.metrics.address.is_some());
    let position = storage.current_stream_position().unwrap_or(0);
    let config = Arc::new(config);
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
        inbound: Default::default(),
        device_lists: Default::default(),
        inbound_counts: Default::default(),
    });
    let sync = SyncService {
        storage: storage.clone(),
        rooms: rooms.clone(),
        ephemeral: ephemeral.clone(),
        stopping: stopping.clone(),
        our_server: config.server.server_name.clone(),
        sliding: Default::default(),
        long_polls: Default::default(),
    };
    let search = Search {
        storage: storage.clone(),
        rooms: rooms.clone(),
    };
    let media = Arc::new(Media::new(
        storage.clone(),
        &config.database.path,
        config.media.clone(),
        config.server.server_name.clone(),
        federation.clone(),
    ));
    let users = Users::new(storage.clone(), config.server.server_name.clone());
    let directory = Directory::new(storage, config.server.server_name.clone());
    Services {
        media,
        search,
        previews,
        old_verify_keys,
        federation,
        sync,
        rooms,
        ephemeral,
        auth_rate_limit: RateLimiter::new(per_minute, per_minute.clamp(1, 10)),
        account_rate_limit: RateLimiter::new(per_minute, per_minute.clamp(1, 10)),
        strangers: crate::api::strangers::Strangers::new(&config.limits),
        config,
        signing_key,
        users,
        directory,
        stopping,
        room_deletions: Default::default(),
        http_metrics,
    }
}
