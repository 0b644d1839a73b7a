//! An [`AppState`] for unit tests of federation services: a real database in a temporary
//! directory, a fresh signing key, the default configuration plus `extra` TOML.

use actix_web::web;

use crate::config::Config;
use crate::crypto::SigningKey;
use crate::state::AppState;
use crate::storage::Storage;

/// The test server's name.
pub const SERVER_NAME: &str = "here.test";

/// A state whose database lives in `dir`; open it again on the same `dir` after dropping
/// it to see what survived.
pub fn test_state(dir: &std::path::Path, extra: &str) -> web::Data<AppState> {
    let text = format!("[server]\nserver_name = \"{SERVER_NAME}\"\n{extra}");
    let config = Config::parse(&text, dir).expect("config");
    let storage = Storage::open(&dir.join("data"), 1 << 20).expect("storage");
    web::Data::new(AppState::new(config, storage, SigningKey::generate()).expect("state"))
}
