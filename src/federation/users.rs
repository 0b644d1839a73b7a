//! What other servers may ask about our users (spec: server-server API, "OpenID",
//! "Device Management", "End-to-End Encryption"): who holds an OpenID token, and users'
//! devices and keys.
//!
//! Hearth has no end-to-end encryption keys yet: no device has uploaded identity keys, and
//! a device without keys is not listed (the spec requires `keys` for each). So device lists
//! are empty, at their first version (`stream_id` 0, the position no
//! `m.device_list_update` has moved yet), and key queries and claims find nothing. Each
//! answer still has the spec's shape, so other servers handle it as an ordinary "no keys".

use std::collections::BTreeMap;

use ruma::UserId;
use serde_json::{Map, Value, json};

use crate::error::{Error, ErrorKind};
use crate::federation::Federation;

/// The most users one key query or claim may name: a bound on the answer's size.
const MAX_USERS_PER_QUERY: usize = 1000;

/// # `/openid/userinfo`: the user an unexpired OpenID token was made for.
pub(crate) fn openid_user(
    fed: &Federation,
    access_token: &str,
    now_ms: u64,
) -> Result<String, Error> {
    let unknown = || Error::new(ErrorKind::UnknownToken, "Access token unknown or expired");
    let record = fed
        .storage
        .openid_user
        .get(&access_token.to_owned())?
        .ok_or_else(unknown)?;
    if record["expires_at"].as_u64().is_none_or(|at| at <= now_ms) {
        return Err(unknown());
    }
    record["user_id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::internal("OpenID record without a user"))
}

/// A user of this server named in a request: `400 M_INVALID_PARAM` for another server's,
/// `404 M_NOT_FOUND` for one without an account.
fn local_user(fed: &Federation, user_id: &str) -> Result<ruma::OwnedUserId, Error> {
    let user = UserId::parse(user_id)
        .map_err(|_| Error::new(ErrorKind::InvalidParam, "Invalid user ID"))?;
    if user.server_name() != fed.config.server.server_name {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "The user is not on this server",
        ));
    }
    let exists = crate::users::accounts::get(&fed.storage, &user)
        .map_err(|err| Error::internal(err.to_string()))?
        .is_some();
    if !exists {
        return Err(Error::not_found("No such user"));
    }
    Ok(user)
}

/// # `/user/devices/{userId}`: the user's devices that have identity keys (none yet).
pub(crate) fn devices(fed: &Federation, user_id: &str) -> Result<Value, Error> {
    let user = local_user(fed, user_id)?;
    Ok(json!({ "user_id": user, "stream_id": 0, "devices": [] }))
}

/// Whether a user named in a key request is one of ours (others are left out of answers,
/// as the spec asks servers to query only the users of the server they ask).
fn is_local(fed: &Federation, user_id: &str) -> bool {
    UserId::parse(user_id).is_ok_and(|user| user.server_name() == fed.config.server.server_name)
}

/// # `POST /user/keys/query`: the device keys of each of our users asked for (none yet),
/// and no cross-signing keys.
pub(crate) fn query_keys(fed: &Federation, device_keys: &BTreeMap<String, Value>) -> Value {
    let found: Map<String, Value> = device_keys
        .keys()
        .filter(|user| is_local(fed, user))
        .take(MAX_USERS_PER_QUERY)
        .map(|user| (user.clone(), json!({})))
        .collect();
    json!({ "device_keys": found, "master_keys": {}, "self_signing_keys": {} })
}

/// # `POST /user/keys/claim`: one-time keys for the devices asked for (none yet).
pub(crate) fn claim_keys(fed: &Federation, one_time_keys: &BTreeMap<String, Value>) -> Value {
    let found: Map<String, Value> = one_time_keys
        .keys()
        .filter(|user| is_local(fed, user))
        .take(MAX_USERS_PER_QUERY)
        .map(|user| (user.clone(), json!({})))
        .collect();
    json!({ "one_time_keys": found })
}
