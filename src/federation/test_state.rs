//! A [`Federation`] service for unit tests: a real database in a temporary directory, a fresh
//! signing key, the default configuration plus `extra` TOML.

use std::sync::Arc;

use crate::config::Config;
use crate::federation::{Federation, Transport};
use crate::matrix::crypto::SigningKey;
use crate::rooms::Rooms;

/// The test server's name.
pub(crate) const SERVER_NAME: &str = "here.test";

/// A service whose database lives in `dir`; open it again on the same `dir` after dropping
/// it to see what survived.
pub(crate) fn test_state(dir: &std::path::Path, extra: &str) -> Arc<Federation> {
    let text = format!("[server]\nserver_name = \"{SERVER_NAME}\"\n{extra}");
    let config = Config::parse(&text, dir).expect("config");
    let storage = crate::storage::testing::open(&dir.join("data"));
    let signing_key = SigningKey::generate();
    let transport = Transport::new(
        config.server.server_name.clone(),
        signing_key.clone(),
        &config.federation,
    )
    .expect("transport");
    let position = storage.current_stream_position().unwrap_or(0);
    let storage = Arc::new(storage);
    Arc::new(Federation {
        rooms: Arc::new(Rooms::new(storage.clone(), signing_key.clone(), position)),
        storage,
        transport,
        signing_key,
        config: Arc::new(config),
        ephemeral: Default::default(),
        stopping: Arc::new(tokio::sync::watch::channel(false).0),
        inbound: Default::default(),
        device_lists: Default::default(),
        inbound_counts: Default::default(),
    })
}
