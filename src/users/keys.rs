//! Devices' end-to-end encryption keys (spec: client-server API, "End-to-End Encryption",
//! "Key management API"): each device's signed identity keys, its one-time keys and its
//! fallback keys. This module alone writes `userdevice_keys`, `userdevice_onetimekey` and
//! `userdevice_fallbackkey`; the client handlers and the federation endpoints both read and
//! claim through it.
//!
//! The server never holds a secret: it stores what devices upload, checks that identity keys
//! are signed by the device they name (so nobody can plant keys for another device), and
//! hands out each one-time key at most once, even to concurrent claims.

use std::collections::BTreeMap;

use ruma::UserId;
use serde_json::{Map, Value, json};

use crate::error::{Error, ErrorKind};
use crate::matrix::crypto::decode_base64;
use crate::matrix::crypto::signing::verify_json;
use crate::storage::records::FallbackKeyRecord;
use crate::storage::{Batch, Storage, StorageError, pair_prefix};

/// The most unclaimed one-time keys a device may hold: clients keep about half of their
/// own maximum (libolm and vodozemac: 100) on the server, so this is generous and still
/// bounds the disk a device can fill.
pub(crate) const MAX_ONE_TIME_KEYS: u64 = 1000;

/// The most keys of any kind one upload may carry.
const MAX_KEYS_PER_UPLOAD: usize = 1000;

/// The most devices one claim or query may name: a bound on the work and the answer.
pub(crate) const MAX_DEVICES_PER_REQUEST: usize = 1000;

/// The most characters of a key ID (`algorithm:key_id`).
const MAX_KEY_ID_LEN: usize = 255;

/// The one-time key algorithm every client uses: its count is always reported, even at 0,
/// because some clients only upload keys when they see it.
const SIGNED_CURVE25519: &str = "signed_curve25519";

/// What a `/keys/upload` body carries, parsed by the handler.
#[derive(Debug, Default)]
pub(crate) struct Upload {
    pub(crate) device_keys: Option<Map<String, Value>>,
    pub(crate) one_time_keys: Map<String, Value>,
    pub(crate) fallback_keys: Map<String, Value>,
}

fn invalid(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(ErrorKind::InvalidParam, message)
}

fn device_key(user_id: &UserId, device_id: &str) -> (String, String) {
    (user_id.as_str().to_owned(), device_id.to_owned())
}

/// The encoded prefix of every triple key under (`user`, `device`).
fn device_prefix(user_id: &str, device_id: &str) -> Vec<u8> {
    let mut prefix = pair_prefix(user_id);
    prefix.extend_from_slice(device_id.as_bytes());
    prefix.push(0xFF);
    prefix
}

/// Splits `algorithm:key_id`, refusing empty parts and overlong IDs.
fn split_key_id(key_id: &str) -> Result<(&str, &str), Error> {
    match key_id.split_once(':') {
        Some((algorithm, id))
            if !algorithm.is_empty() && !id.is_empty() && key_id.len() <= MAX_KEY_ID_LEN =>
        {
            Ok((algorithm, id))
        }
        _ => Err(invalid(format!(
            "`{key_id}` is not a key ID of the form algorithm:key_id"
        ))),
    }
}

/// The device's ed25519 public key from its identity keys, decoded.
fn ed25519_of(device_keys: &Map<String, Value>, device_id: &str) -> Option<Vec<u8>> {
    device_keys
        .get("keys")?
        .get(format!("ed25519:{device_id}"))?
        .as_str()
        .and_then(decode_base64)
}

/// Checks uploaded identity keys: for this user and device, with the fields the spec
/// requires, and signed by the device's own ed25519 key.
fn check_device_keys(
    user_id: &UserId,
    device_id: &str,
    keys: &Map<String, Value>,
) -> Result<(), Error> {
    if keys.get("user_id").and_then(Value::as_str) != Some(user_id.as_str()) {
        return Err(invalid(
            "device_keys.user_id is not the user uploading them",
        ));
    }
    if keys.get("device_id").and_then(Value::as_str) != Some(device_id) {
        return Err(invalid(
            "device_keys.device_id is not the device uploading them",
        ));
    }
    if !keys
        .get("algorithms")
        .and_then(Value::as_array)
        .is_some_and(|algorithms| algorithms.iter().all(Value::is_string))
    {
        return Err(invalid("device_keys.algorithms must be a list of strings"));
    }
    let Some(listed) = keys.get("keys").and_then(Value::as_object) else {
        return Err(invalid("device_keys.keys must be an object"));
    };
    if listed.len() > 64 || !listed.values().all(Value::is_string) {
        return Err(invalid("device_keys.keys must map key IDs to keys"));
    }
    let public = ed25519_of(keys, device_id).ok_or_else(|| {
        invalid(format!(
            "device_keys.keys needs the device's ed25519:{device_id} key"
        ))
    })?;
    verify_json(
        keys,
        user_id.as_str(),
        &format!("ed25519:{device_id}"),
        &public,
    )
    .map_err(|err| invalid(format!("The device keys' own signature: {err}")))
}

/// Checks a one-time or fallback key: a `signed_` key must be an object signed by the
/// device (when its identity key is known), others a string or an object.
fn check_key(
    user_id: &UserId,
    device_id: &str,
    key_id: &str,
    key: &Value,
    ed25519: Option<&[u8]>,
) -> Result<(), Error> {
    let (algorithm, _) = split_key_id(key_id)?;
    match key {
        Value::String(_) if !algorithm.starts_with("signed_") => Ok(()),
        Value::Object(object) => {
            if !object.get("key").is_some_and(Value::is_string) {
                return Err(invalid(format!("The key {key_id} has no `key`")));
            }
            match ed25519 {
                Some(public) if algorithm.starts_with("signed_") => verify_json(
                    object,
                    user_id.as_str(),
                    &format!("ed25519:{device_id}"),
                    public,
                )
                .map_err(|err| invalid(format!("The key {key_id}'s signature: {err}"))),
                _ => Ok(()),
            }
        }
        _ => Err(invalid(format!("The key {key_id} is not a key object"))),
    }
}

/// Checks everything of an upload for a device that has no keys stored yet (a dehydrated
/// device about to be made) without storing anything: identity keys signed by the device,
/// each one-time and fallback key signed by it, within the bounds.
pub(crate) fn check_new_device_upload(
    user_id: &UserId,
    device_id: &str,
    upload: &Upload,
) -> Result<(), Error> {
    if upload.one_time_keys.len() + upload.fallback_keys.len() > MAX_KEYS_PER_UPLOAD {
        return Err(invalid(format!(
            "At most {MAX_KEYS_PER_UPLOAD} keys may be uploaded at once"
        )));
    }
    let Some(keys) = &upload.device_keys else {
        return Err(Error::new(
            ErrorKind::MissingParam,
            "device_keys are needed",
        ));
    };
    check_device_keys(user_id, device_id, keys)?;
    let ed25519 = ed25519_of(keys, device_id);
    for (key_id, key) in upload.one_time_keys.iter().chain(&upload.fallback_keys) {
        check_key(user_id, device_id, key_id, key, ed25519.as_deref())?;
    }
    Ok(())
}

/// # `/keys/upload`: stores what the device sent, all of it or nothing, and returns its
/// one-time key counts. Re-uploading a key ID with the same content is a no-op; with other
/// content it is refused, as the spec asks.
pub(crate) fn upload(
    storage: &Storage,
    user_id: &UserId,
    device_id: &str,
    upload: &Upload,
) -> Result<BTreeMap<String, u64>, Error> {
    let total = upload.one_time_keys.len() + upload.fallback_keys.len();
    if total > MAX_KEYS_PER_UPLOAD {
        return Err(invalid(format!(
            "At most {MAX_KEYS_PER_UPLOAD} keys may be uploaded at once"
        )));
    }
    if let Some(keys) = &upload.device_keys {
        check_device_keys(user_id, device_id, keys)?;
    }
    let device = device_key(user_id, device_id);
    // Reads and writes of this device's keys happen under the lock, so two uploads (or an
    // upload and a claim counting) never interleave.
    let _exclusive = storage.exclusive();
    let stored_identity = match &upload.device_keys {
        Some(_) => None,
        None => storage.userdevice_keys.get(&device)?,
    };
    let identity = upload
        .device_keys
        .as_ref()
        .or(stored_identity.as_ref().and_then(Value::as_object));
    let ed25519 = identity.and_then(|keys| ed25519_of(keys, device_id));
    let mut batch = Batch::new();
    if let Some(keys) = &upload.device_keys {
        storage
            .userdevice_keys
            .batch_insert(&mut batch, &device, &Value::Object(keys.clone()))?;
    }
    let mut counts = counts_of(storage, user_id, device_id)?;
    let mut stored: u64 = counts.values().sum();
    for (key_id, key) in &upload.one_time_keys {
        check_key(user_id, device_id, key_id, key, ed25519.as_deref())?;
        let row = (device.0.clone(), device.1.clone(), key_id.clone());
        match storage.userdevice_onetimekey.get(&row)? {
            Some(existing) if &existing == key => continue,
            Some(_) => {
                return Err(invalid(format!(
                    "One-time key {key_id} already exists with other content"
                )));
            }
            None => {}
        }
        stored += 1;
        if stored > MAX_ONE_TIME_KEYS {
            return Err(invalid(format!(
                "A device may hold at most {MAX_ONE_TIME_KEYS} unclaimed one-time keys"
            )));
        }
        storage
            .userdevice_onetimekey
            .batch_insert(&mut batch, &row, key)?;
        let (algorithm, _) = split_key_id(key_id)?;
        *counts.entry(algorithm.to_owned()).or_default() += 1;
    }
    let mut fallback_algorithms = Vec::new();
    for (key_id, key) in &upload.fallback_keys {
        check_key(user_id, device_id, key_id, key, ed25519.as_deref())?;
        let (algorithm, _) = split_key_id(key_id)?;
        if fallback_algorithms.contains(&algorithm) {
            return Err(invalid(format!(
                "Two fallback keys for {algorithm} in one upload"
            )));
        }
        fallback_algorithms.push(algorithm);
        let row = (device.0.clone(), device.1.clone(), algorithm.to_owned());
        // The same key again keeps its `used` mark; a new one starts unused.
        if storage
            .userdevice_fallbackkey
            .get(&row)?
            .is_some_and(|old| &old.key_id == key_id && &old.key == key)
        {
            continue;
        }
        let record = FallbackKeyRecord {
            key_id: key_id.clone(),
            key: key.clone(),
            used: false,
        };
        storage
            .userdevice_fallbackkey
            .batch_insert(&mut batch, &row, &record)?;
    }
    storage.apply(batch)?;
    counts.entry(SIGNED_CURVE25519.to_owned()).or_default();
    Ok(counts)
}

/// The device's unclaimed one-time keys, counted per algorithm.
fn counts_of(
    storage: &Storage,
    user_id: &UserId,
    device_id: &str,
) -> Result<BTreeMap<String, u64>, StorageError> {
    let mut counts = BTreeMap::new();
    // Keys only: this runs on every `/sync` of the device.
    for entry in storage
        .userdevice_onetimekey
        .scan_prefix_keys(&device_prefix(user_id.as_str(), device_id))
    {
        let (_, _, key_id) = entry?;
        if let Some((algorithm, _)) = key_id.split_once(':') {
            *counts.entry(algorithm.to_owned()).or_default() += 1;
        }
    }
    Ok(counts)
}

/// `device_one_time_keys_count` for `/sync` (`signed_curve25519` always present).
pub(crate) fn one_time_key_counts(
    storage: &Storage,
    user_id: &UserId,
    device_id: &str,
) -> Result<BTreeMap<String, u64>, StorageError> {
    let mut counts = counts_of(storage, user_id, device_id)?;
    counts.entry(SIGNED_CURVE25519.to_owned()).or_default();
    Ok(counts)
}

/// `device_unused_fallback_key_types` for `/sync`: the algorithms whose fallback key no
/// claim has handed out yet.
pub(crate) fn unused_fallback_types(
    storage: &Storage,
    user_id: &UserId,
    device_id: &str,
) -> Result<Vec<String>, StorageError> {
    storage
        .userdevice_fallbackkey
        .scan_prefix(&device_prefix(user_id.as_str(), device_id))
        .filter_map(|entry| match entry {
            Ok(((_, _, algorithm), record)) => (!record.used).then_some(Ok(algorithm)),
            Err(err) => Some(Err(err)),
        })
        .collect()
}

/// The identity keys of the devices asked for (all of a user's when the list is empty),
/// keyed by device. `display_names` adds each device's name under `unsigned`, as the spec
/// says for our own clients (other servers are not told device names).
pub(crate) fn device_keys(
    storage: &Storage,
    user_id: &UserId,
    devices: &[String],
    display_names: bool,
) -> Result<Map<String, Value>, StorageError> {
    let mut found = Map::new();
    let mut add = |device_id: String, keys: Value| -> Result<(), StorageError> {
        let mut keys = keys;
        if display_names
            && let Some(name) = storage
                .userdevice_device
                .get(&device_key(user_id, &device_id))?
                .and_then(|device| device.display_name)
            && let Some(object) = keys.as_object_mut()
        {
            object.insert(
                "unsigned".to_owned(),
                json!({ "device_display_name": name }),
            );
        }
        found.insert(device_id, keys);
        Ok(())
    };
    if devices.is_empty() {
        for entry in storage
            .userdevice_keys
            .scan_prefix(&pair_prefix(user_id.as_str()))
        {
            let ((_, device_id), keys) = entry?;
            add(device_id, keys)?;
        }
    } else {
        for device_id in devices.iter().take(MAX_DEVICES_PER_REQUEST) {
            if let Some(keys) = storage
                .userdevice_keys
                .get(&device_key(user_id, device_id))?
            {
                add(device_id.clone(), keys)?;
            }
        }
    }
    Ok(found)
}

/// Takes one key of `algorithm` for the device: an unclaimed one-time key, removed as it is
/// taken, or else the fallback key, marked used. `None` when the device has neither.
pub(crate) fn claim_one(
    storage: &Storage,
    user_id: &UserId,
    device_id: &str,
    algorithm: &str,
) -> Result<Option<(String, Value)>, StorageError> {
    let mut prefix = device_prefix(user_id.as_str(), device_id);
    prefix.extend_from_slice(algorithm.as_bytes());
    prefix.push(b':');
    // Another claim may take the first key between our read and our removal: the removal
    // says whether the key was still there, and we move on to the next one if not. The
    // walk is bounded by the keys a device may hold ([`MAX_ONE_TIME_KEYS`]), and the
    // fallback is handed out only once no one-time key is left.
    for entry in storage.userdevice_onetimekey.scan_prefix(&prefix) {
        let (row, _) = entry?;
        let mut taken = None;
        storage.userdevice_onetimekey.update(&row, |current| {
            taken = current;
            None
        })?;
        if let Some(key) = taken {
            return Ok(Some((row.2, key)));
        }
    }
    let row = (
        user_id.as_str().to_owned(),
        device_id.to_owned(),
        algorithm.to_owned(),
    );
    let marked = storage.userdevice_fallbackkey.update(&row, |current| {
        current.map(|mut record| {
            record.used = true;
            record
        })
    })?;
    Ok(marked.map(|record| (record.key_id, record.key)))
}

/// Claims for our users: user → device → algorithm in, user → device → {key ID: key} out.
/// Devices without keys are left out, as the spec says.
pub(crate) fn claim(
    storage: &Storage,
    wanted: &BTreeMap<ruma::OwnedUserId, BTreeMap<String, String>>,
) -> Result<Map<String, Value>, Error> {
    let mut answer = Map::new();
    let mut devices = 0;
    for (user_id, by_device) in wanted {
        let mut keys = Map::new();
        for (device_id, algorithm) in by_device {
            devices += 1;
            if devices > MAX_DEVICES_PER_REQUEST {
                break;
            }
            if let Some((key_id, key)) = claim_one(storage, user_id, device_id, algorithm)? {
                keys.insert(device_id.clone(), json!({ key_id: key }));
            }
        }
        if !keys.is_empty() {
            answer.insert(user_id.to_string(), Value::Object(keys));
        }
    }
    Ok(answer)
}

/// Removes every key of a device (when it is deleted), staged in `batch`.
pub(crate) fn stage_removal(
    storage: &Storage,
    batch: &mut Batch,
    user_id: &UserId,
    device_id: &str,
) -> Result<(), StorageError> {
    let device = device_key(user_id, device_id);
    storage.userdevice_keys.batch_remove(batch, &device);
    let prefix = device_prefix(user_id.as_str(), device_id);
    for entry in storage.userdevice_onetimekey.scan_prefix(&prefix) {
        let (row, _) = entry?;
        storage.userdevice_onetimekey.batch_remove(batch, &row);
    }
    for entry in storage.userdevice_fallbackkey.scan_prefix(&prefix) {
        let (row, _) = entry?;
        storage.userdevice_fallbackkey.batch_remove(batch, &row);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ruma::{OwnedUserId, user_id};
    use serde_json::json;

    use super::*;

    /// Stores `count` one-time keys for a device, unsigned (the checks are the handlers'
    /// business here: this is about claiming).
    fn store_keys(storage: &Storage, user: &UserId, device: &str, count: usize) {
        for n in 0..count {
            storage
                .userdevice_onetimekey
                .insert(
                    &(
                        user.as_str().to_owned(),
                        device.to_owned(),
                        format!("signed_curve25519:K{n:04}"),
                    ),
                    &json!({ "key": format!("k{n}") }),
                )
                .expect("insert");
        }
    }

    #[test]
    fn parallel_claims_take_each_key_once_then_the_fallback() {
        let (_dir, storage) = crate::storage::testing::temporary();
        let storage = Arc::new(storage);
        let user: OwnedUserId = user_id!("@alice:localhost").to_owned();
        store_keys(&storage, &user, "DEV", 200);
        // Another device's keys, and another algorithm, are never taken.
        store_keys(&storage, &user, "DEV2", 5);
        storage
            .userdevice_fallbackkey
            .insert(
                &(
                    user.to_string(),
                    "DEV".to_owned(),
                    SIGNED_CURVE25519.to_owned(),
                ),
                &FallbackKeyRecord {
                    key_id: "signed_curve25519:FB".to_owned(),
                    key: json!({ "key": "fb" }),
                    used: false,
                },
            )
            .expect("fallback");
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (storage, user) = (Arc::clone(&storage), user.clone());
                std::thread::spawn(move || {
                    (0..30)
                        .map(|_| {
                            claim_one(&storage, &user, "DEV", SIGNED_CURVE25519)
                                .expect("claim")
                                .expect("a key")
                                .0
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut taken: Vec<String> = threads
            .into_iter()
            .flat_map(|thread| thread.join().expect("thread"))
            .collect();
        let fallbacks = taken
            .iter()
            .filter(|id| *id == "signed_curve25519:FB")
            .count();
        assert_eq!(fallbacks, 40, "240 claims of 200 keys: 40 fallbacks");
        taken.retain(|id| id != "signed_curve25519:FB");
        taken.sort();
        taken.dedup();
        assert_eq!(taken.len(), 200, "every key handed out exactly once");
        assert_eq!(
            one_time_key_counts(&storage, &user, "DEV").expect("counts")[SIGNED_CURVE25519],
            0
        );
        assert!(
            unused_fallback_types(&storage, &user, "DEV")
                .expect("types")
                .is_empty()
        );
        assert_eq!(
            one_time_key_counts(&storage, &user, "DEV2").expect("counts")[SIGNED_CURVE25519],
            5
        );
        assert_eq!(
            claim_one(&storage, &user, "DEV", "other_algorithm").expect("claim"),
            None
        );
    }

    #[test]
    fn removing_a_device_removes_all_its_keys() {
        let (_dir, storage) = crate::storage::testing::temporary();
        let user = user_id!("@alice:localhost");
        store_keys(&storage, user, "DEV", 3);
        store_keys(&storage, user, "DEVX", 2);
        storage
            .userdevice_keys
            .insert(&device_key(user, "DEV"), &json!({ "keys": {} }))
            .expect("keys");
        let mut batch = Batch::new();
        stage_removal(&storage, &mut batch, user, "DEV").expect("stage");
        storage.apply(batch).expect("apply");
        assert_eq!(
            one_time_key_counts(&storage, user, "DEV").expect("c")[SIGNED_CURVE25519],
            0
        );
        // "DEV" is a prefix of "DEVX": its keys stay.
        assert_eq!(
            one_time_key_counts(&storage, user, "DEVX").expect("c")[SIGNED_CURVE25519],
            2
        );
        assert!(
            device_keys(&storage, user, &[], false)
                .expect("keys")
                .is_empty()
        );
    }
}
