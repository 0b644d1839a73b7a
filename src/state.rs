//! [`AppState`]: everything a request handler may reach, built once at start-up and shared by
//! every worker through `web::Data` (an `Arc`). No globals.

use crate::config::Config;
use crate::crypto::SigningKey;
use crate::storage::Storage;

pub struct AppState {
    pub config: Config,
    pub storage: Storage,
    pub signing_key: SigningKey,
}
