//! What other servers may ask about our users (spec: server-server API, "OpenID",
//! "Device Management", "End-to-End Encryption"): who holds an OpenID token, and users'
//! devices and keys.
//!
//! Keys are those our users' devices uploaded (`users::keys`); claims take one-time keys
//! there, so each goes out once whoever asks. Device lists carry no `m.device_list_update`
//! stream yet: `/user/devices` answers at `stream_id` 0 with every device that has keys.

use std::collections::BTreeMap;

use ruma::{OwnedUserId, UserId};
use serde_json::{Map, Value, json};

use crate::error::{Error, ErrorKind};
use crate::federation::Federation;
use crate::users::cross_signing::{self, signatures};
use crate::users::keys;

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

/// # `/user/devices/{userId}`: the user's devices that have identity keys, and their
/// master and self-signing keys. Device names are not shared with other servers (as
/// Synapse's default), only the keys.
pub(crate) fn devices(fed: &Federation, user_id: &str) -> Result<Value, Error> {
    let user = local_user(fed, user_id)?;
    let devices: Vec<Value> = owned_device_keys(fed, &user, &[])?
        .into_iter()
        .map(|(device_id, keys)| json!({ "device_id": device_id, "keys": keys }))
        .collect();
    let [master, self_signing, _] = cross_signing::keys_for_query(&fed.storage, &user, None)?;
    let mut answer = json!({ "user_id": user, "stream_id": 0, "devices": devices });
    if let Some(master) = master {
        answer["master_key"] = master;
    }
    if let Some(self_signing) = self_signing {
        answer["self_signing_key"] = self_signing;
    }
    Ok(answer)
}

/// Our user's device keys for another server: without names, with the signatures the
/// user made of them (their self-signing key's), none of anyone else's.
fn owned_device_keys(
    fed: &Federation,
    user: &UserId,
    devices: &[String],
) -> Result<Map<String, Value>, Error> {
    let mut found = keys::device_keys(&fed.storage, user, devices, false)?;
    signatures::merge_into_devices(&fed.storage, user.as_str(), &mut found, None)?;
    Ok(found)
}

/// Whether a user named in a key request is one of ours (others are left out of answers,
/// as the spec asks servers to query only the users of the server they ask).
fn local(fed: &Federation, user_id: &str) -> Option<OwnedUserId> {
    UserId::parse(user_id)
        .ok()
        .filter(|user| user.server_name() == fed.config.server.server_name)
}

/// The device IDs of a query's list (anything else in it is skipped).
fn device_ids(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .take(keys::MAX_DEVICES_PER_REQUEST)
        .map(str::to_owned)
        .collect()
}

/// # `POST /user/keys/query`: the device keys of each of our users asked for (all their
/// devices for an empty list), without device names, with their master and self-signing
/// keys (never the user-signing key, which is for its owner).
pub(crate) fn query_keys(
    fed: &Federation,
    device_keys: &BTreeMap<String, Value>,
) -> Result<Value, Error> {
    let mut found = Map::new();
    let mut master_keys = Map::new();
    let mut self_signing_keys = Map::new();
    for (user, list) in device_keys.iter().take(MAX_USERS_PER_QUERY) {
        let Some(user_id) = local(fed, user) else {
            continue;
        };
        let keys = owned_device_keys(fed, &user_id, &device_ids(list))?;
        found.insert(user.clone(), Value::Object(keys));
        let [master, self_signing, _] =
            cross_signing::keys_for_query(&fed.storage, &user_id, None)?;
        if let Some(master) = master {
            master_keys.insert(user.clone(), master);
        }
        if let Some(self_signing) = self_signing {
            self_signing_keys.insert(user.clone(), self_signing);
        }
    }
    Ok(json!({
        "device_keys": found,
        "master_keys": master_keys,
        "self_signing_keys": self_signing_keys,
    }))
}

/// # `POST /user/keys/claim`: one key per device asked for (a one-time key, else the
/// fallback key), each one-time key handed out once.
pub(crate) fn claim_keys(
    fed: &Federation,
    one_time_keys: &BTreeMap<String, Value>,
) -> Result<Value, Error> {
    let mut wanted = BTreeMap::new();
    for (user, by_device) in one_time_keys.iter().take(MAX_USERS_PER_QUERY) {
        let Some(user_id) = local(fed, user) else {
            continue;
        };
        let devices: BTreeMap<String, String> = by_device
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(device, algorithm)| {
                algorithm
                    .as_str()
                    .map(|algorithm| (device.clone(), algorithm.to_owned()))
            })
            .collect();
        wanted.insert(user_id, devices);
    }
    Ok(json!({ "one_time_keys": keys::claim(&fed.storage, &wanted)? }))
}
