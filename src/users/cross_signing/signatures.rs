//! `/keys/signatures/upload` (spec: client-server API, "Cross-signing"): signatures a user
//! makes with their cross-signing keys and devices, kept in `keysignature_signature` and
//! merged into `/keys/query` answers.
//!
//! Three kinds are accepted, each checked against the canonical JSON of the key it signs,
//! which must be the key we hold (apart from `signatures` and `unsigned`):
//! - one of the user's own devices, signed by the user's self-signing key;
//! - the user's own master key, signed by one of the user's devices;
//! - another user's master key, signed by the user's user-signing key.
//!
//! Each key stands alone: one that fails is reported in `failures` under its user and key
//! ID and stores nothing; the others are stored, together, at one stream position.

use ruma::UserId;
use serde_json::{Map, Value, json};

use super::{MASTER, SELF_SIGNING, USER_SIGNING, public_key_of, stage_keys_changed, stored};
use crate::error::{Error, ErrorKind};
use crate::matrix::crypto::decode_base64;
use crate::matrix::crypto::signing::verify_json;
use crate::storage::stream::Stream;
use crate::storage::{Storage, StorageError, pair_prefix};

/// The most signed objects one upload may carry.
pub(crate) const MAX_SIGNED_OBJECTS: usize = 1000;

/// One signature to store: signed user, signed key, signer, signer's key ID → signature.
type SignatureRow = ((String, String, String, String), String);

fn failure(kind: ErrorKind, message: impl Into<String>) -> Error {
    Error::new(kind, message.into())
}

/// `object` without `signatures` and `unsigned`: what a signature covers.
fn signed_part(object: &Map<String, Value>) -> Map<String, Value> {
    object
        .iter()
        .filter(|(key, _)| *key != "signatures" && *key != "unsigned")
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// Refuses an uploaded object that is not the key we hold.
fn check_same_key(uploaded: &Map<String, Value>, held: &Map<String, Value>) -> Result<(), Error> {
    if signed_part(uploaded) == signed_part(held) {
        Ok(())
    } else {
        Err(failure(
            ErrorKind::InvalidParam,
            "The signed object is not the key this server holds",
        ))
    }
}

/// Checks `signer`'s signature with the ed25519 key `ed25519:<name>` whose public key is
/// `public` (unpadded base64) on `object`, and returns the row that keeps it. A
/// cross-signing key's name is its public key; a device's, its ID.
fn checked_row(
    signed_user: &str,
    signed_key: &str,
    object: &Map<String, Value>,
    signer: &str,
    (name, public): (&str, &str),
) -> Result<SignatureRow, Error> {
    let key_id = format!("ed25519:{name}");
    let bytes = decode_base64(public).unwrap_or_default();
    verify_json(object, signer, &key_id, &bytes).map_err(|err| {
        failure(
            ErrorKind::InvalidSignature,
            format!("Invalid signature: {err}"),
        )
    })?;
    let signature = object["signatures"][signer][&key_id]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok((
        (
            signed_user.to_owned(),
            signed_key.to_owned(),
            signer.to_owned(),
            key_id,
        ),
        signature,
    ))
}

/// The public key of one of `signer`'s cross-signing keys, `M_NOT_FOUND` without it.
fn own_key(storage: &Storage, signer: &str, usage: &str) -> Result<Map<String, Value>, Error> {
    stored(storage, signer, usage)?.ok_or_else(|| {
        failure(
            ErrorKind::NotFound,
            format!("You have no {usage} key to sign with"),
        )
    })
}

/// One of the signer's own devices, signed by their self-signing key.
fn device_signature(
    storage: &Storage,
    signer: &str,
    device_id: &str,
    device_keys: &Map<String, Value>,
    object: &Map<String, Value>,
) -> Result<Vec<SignatureRow>, Error> {
    check_same_key(object, device_keys)?;
    let self_signing = own_key(storage, signer, SELF_SIGNING)?;
    let public = public_key_of(&self_signing).unwrap_or_default();
    Ok(vec![checked_row(
        signer,
        device_id,
        object,
        signer,
        (public, public),
    )?])
}

/// The signer's own master key, signed by one or more of their devices: each device
/// signature must verify.
fn master_signature_by_devices(
    storage: &Storage,
    signer: &UserId,
    master: &Map<String, Value>,
    object: &Map<String, Value>,
) -> Result<Vec<SignatureRow>, Error> {
    check_same_key(object, master)?;
    let master_public = public_key_of(master).unwrap_or_default();
    let by_signer = object["signatures"][signer.as_str()]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut rows = Vec::new();
    for key_id in by_signer.keys() {
        let Some(device_id) = key_id.strip_prefix("ed25519:") else {
            continue;
        };
        if device_id == master_public {
            continue;
        }
        let devices =
            crate::users::keys::device_keys(storage, signer, &[device_id.to_owned()], false)?;
        let Some(public) = devices
            .get(device_id)
            .and_then(|keys| keys["keys"][key_id].as_str())
        else {
            return Err(failure(
                ErrorKind::NotFound,
                format!("No device {device_id} with keys signed the master key"),
            ));
        };
        rows.push(checked_row(
            signer.as_str(),
            master_public,
            object,
            signer.as_str(),
            (device_id, public),
        )?);
    }
    if rows.is_empty() {
        return Err(failure(
            ErrorKind::InvalidSignature,
            "No signature by one of your devices",
        ));
    }
    Ok(rows)
}

/// The rows one signed object of the signer's own keys stores.
fn own_key_signature(
    storage: &Storage,
    signer: &UserId,
    key_id: &str,
    object: &Map<String, Value>,
) -> Result<Vec<SignatureRow>, Error> {
    if let Some(master) = stored(storage, signer.as_str(), MASTER)?
        && public_key_of(&master) == Some(key_id)
    {
        return master_signature_by_devices(storage, signer, &master, object);
    }
    let devices = crate::users::keys::device_keys(storage, signer, &[key_id.to_owned()], false)?;
    match devices.get(key_id).and_then(Value::as_object) {
        Some(device_keys) => {
            device_signature(storage, signer.as_str(), key_id, device_keys, object)
        }
        None => Err(failure(
            ErrorKind::NotFound,
            format!("No device or master key {key_id}"),
        )),
    }
}

/// Another user's master key, signed by the signer's user-signing key.
fn other_user_signature(
    storage: &Storage,
    signer: &UserId,
    user: &str,
    key_id: &str,
    object: &Map<String, Value>,
) -> Result<Vec<SignatureRow>, Error> {
    let master = stored(storage, user, MASTER)?
        .filter(|master| public_key_of(master) == Some(key_id))
        .ok_or_else(|| {
            failure(
                ErrorKind::NotFound,
                format!("{key_id} is not {user}'s master key (query their keys first)"),
            )
        })?;
    check_same_key(object, &master)?;
    let user_signing = own_key(storage, signer.as_str(), USER_SIGNING)?;
    let public = public_key_of(&user_signing).unwrap_or_default();
    Ok(vec![checked_row(
        user,
        key_id,
        object,
        signer.as_str(),
        (public, public),
    )?])
}

/// The rows of one signed object, or why it fails.
fn rows_of(
    storage: &Storage,
    signer: &UserId,
    user: &str,
    key_id: &str,
    object: &Value,
) -> Result<Vec<SignatureRow>, Error> {
    let Some(object) = object.as_object() else {
        return Err(failure(
            ErrorKind::BadJson,
            "The signed key must be an object",
        ));
    };
    if UserId::parse(user).is_err() {
        return Err(failure(ErrorKind::InvalidParam, "Not a user ID"));
    }
    if user == signer.as_str() {
        own_key_signature(storage, signer, key_id, object)
    } else {
        other_user_signature(storage, signer, user, key_id, object)
    }
}

/// # `/keys/signatures/upload`: checks and stores the signer's signatures; the answer's
/// `failures` (user → key ID → error).
pub(crate) async fn upload(
    storage: &Storage,
    stream: &Stream,
    signer: &UserId,
    body: &Map<String, Value>,
) -> Result<Map<String, Value>, Error> {
    let objects: usize = body
        .values()
        .map(|keys| keys.as_object().map_or(1, Map::len))
        .sum();
    if objects > MAX_SIGNED_OBJECTS {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            format!("At most {MAX_SIGNED_OBJECTS} signed keys at once"),
        ));
    }
    let mut failures = Map::new();
    let mut rows = Vec::new();
    for (user, keys) in body {
        let Some(keys) = keys.as_object() else {
            failures.insert(user.clone(), json!({}));
            continue;
        };
        for (key_id, object) in keys {
            match rows_of(storage, signer, user, key_id, object) {
                Ok(found) => rows.extend(found),
                Err(err) => {
                    failures.entry(user.clone()).or_insert_with(|| json!({}))[key_id] = json!({
                        "errcode": err.kind.errcode(),
                        "error": err.message.to_string(),
                    });
                }
            }
        }
    }
    let mut new_rows = Vec::new();
    for (key, signature) in rows {
        if storage.keysignature_signature.get(&key)?.as_ref() != Some(&signature) {
            new_rows.push((key, signature));
        }
    }
    if !new_rows.is_empty() {
        stream
            .commit_at_next_position::<Error>(storage, |batch, position| {
                for (key, signature) in &new_rows {
                    storage
                        .keysignature_signature
                        .batch_insert(batch, key, signature)?;
                }
                Ok(stage_keys_changed(storage, batch, position, signer, false)?)
            })
            .await?;
    }
    Ok(failures)
}

/// Adds to `object` (a key of `user` named `key` in the tree: a device ID or a master
/// key's public key) the stored signatures `viewer` may see: the owner's own, and the
/// viewer's (a user-signing key's signature of someone else is for its signer only, as
/// the spec has it). `None` as viewer: another server, which sees the owner's only.
pub(crate) fn merge(
    storage: &Storage,
    user: &str,
    key: &str,
    object: &mut Map<String, Value>,
    viewer: Option<&UserId>,
) -> Result<(), StorageError> {
    let mut prefix = pair_prefix(user);
    prefix.extend_from_slice(&pair_prefix(key));
    for entry in storage.keysignature_signature.scan_prefix(&prefix) {
        let ((_, _, signer, key_id), signature) = entry?;
        if signer != user && viewer.is_none_or(|viewer| viewer.as_str() != signer) {
            continue;
        }
        let signatures = object.entry("signatures").or_insert_with(|| json!({}));
        if !signatures.is_object() {
            *signatures = json!({});
        }
        let by_signer = signatures
            .as_object_mut()
            .into_iter()
            .next()
            .map(|signatures| signatures.entry(signer).or_insert_with(|| json!({})));
        if let Some(Value::Object(by_signer)) = by_signer {
            by_signer.insert(key_id, Value::String(signature));
        }
    }
    Ok(())
}

/// Merges [`merge`]'s signatures into each device of a `/keys/query` answer for `user`.
pub(crate) fn merge_into_devices(
    storage: &Storage,
    user: &str,
    devices: &mut Map<String, Value>,
    viewer: Option<&UserId>,
) -> Result<(), StorageError> {
    for (device_id, keys) in devices.iter_mut() {
        if let Some(keys) = keys.as_object_mut() {
            merge(storage, user, device_id, keys, viewer)?;
        }
    }
    Ok(())
}
