//! Our server's published signing keys (spec: server-server API, "Publishing Keys").

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{HttpResponse, web};
use serde_json::{Map, Value, json};

use crate::crypto::sign_json;
use crate::error::Error;
use crate::state::AppState;

/// How long other servers may cache our key response before asking again. Short enough that
/// a key rotation spreads within a day, as Synapse's default does.
const KEY_VALIDITY: Duration = Duration::from_secs(24 * 60 * 60);

/// # GET /_matrix/key/v2/server
pub async fn get_server_keys(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(server_keys(&state, SystemTime::now())?))
}

/// The self-signed key response: `server_name`, `verify_keys`, `old_verify_keys`,
/// `valid_until_ts`, signed with the key it publishes.
pub fn server_keys(state: &AppState, now: SystemTime) -> Result<Value, Error> {
    let key = &state.signing_key;
    let valid_until_ts = (now + KEY_VALIDITY)
        .duration_since(UNIX_EPOCH)
        .map_err(Error::internal)?
        .as_millis() as u64;
    let server_name = state.config.server.server_name.as_str();
    let mut response = json!({
        "server_name": server_name,
        "verify_keys": { key.key_id().as_str(): { "key": key.public_key_base64() } },
        "old_verify_keys": {},
        "valid_until_ts": valid_until_ts,
    });
    let object: &mut Map<String, Value> = response.as_object_mut().expect("built as an object");
    sign_json(object, server_name, key).map_err(Error::internal)?;
    Ok(response)
}
