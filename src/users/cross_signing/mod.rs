//! Cross-signing keys (spec: client-server API, "End-to-End Encryption", "Cross-signing";
//! server-server API, "End-to-End Encryption", `m.signing_key_update`): each user's master
//! key, the self-signing key that signs their devices and the user-signing key that signs
//! other users' master keys, and the signatures made with them ([`signatures`]).
//!
//! This module alone writes `usercrosssigning_key`, `keysignature_signature` and
//! `stream_keyschanged`. Every key is checked before anything is stored: its owner, its
//! usage, exactly one ed25519 key, and (for the self-signing and user-signing keys) a valid
//! signature by the master key. An upload that fails any check stores nothing.
//!
//! Each change of our users' keys takes a stream position in `stream_keyschanged`
//! ([`stage_keys_changed`]): the outbound follower turns it into an `m.signing_key_update`
//! EDU for the servers sharing a room with the user, and device lists can read the same
//! rows to tell our own users.

pub(crate) mod signatures;

use ruma::UserId;
use serde_json::{Map, Value, json};

use crate::error::{Error, ErrorKind};
use crate::matrix::crypto::decode_base64;
use crate::matrix::crypto::signing::verify_json;
use crate::storage::records::KeysChangedRecord;
use crate::storage::stream::Stream;
use crate::storage::{Batch, Storage, StorageError};

pub(crate) const MASTER: &str = "master";
pub(crate) const SELF_SIGNING: &str = "self_signing";
pub(crate) const USER_SIGNING: &str = "user_signing";

/// The largest key object accepted (serialized): a key with a few signatures is well
/// under 1 KiB.
const MAX_KEY_BYTES: usize = 16 * 1024;

/// The most signatures (signers × keys) a key object may carry.
const MAX_SIGNATURES: usize = 64;

/// The cross-signing keys of one `/keys/device_signing/upload`, each optional.
#[derive(Debug, Default, Clone)]
pub(crate) struct KeySet {
    pub(crate) master: Option<Map<String, Value>>,
    pub(crate) self_signing: Option<Map<String, Value>>,
    pub(crate) user_signing: Option<Map<String, Value>>,
}

impl KeySet {
    fn by_usage(&self) -> [(&'static str, Option<&Map<String, Value>>); 3] {
        [
            (MASTER, self.master.as_ref()),
            (SELF_SIGNING, self.self_signing.as_ref()),
            (USER_SIGNING, self.user_signing.as_ref()),
        ]
    }
}

fn invalid(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(ErrorKind::InvalidParam, message)
}

fn row(user_id: &str, usage: &str) -> (String, String) {
    (user_id.to_owned(), usage.to_owned())
}

/// The stored key of `usage` for the user, if any.
pub(crate) fn stored(
    storage: &Storage,
    user_id: &str,
    usage: &str,
) -> Result<Option<Map<String, Value>>, StorageError> {
    Ok(storage
        .usercrosssigning_key
        .get(&row(user_id, usage))?
        .and_then(|key| match key {
            Value::Object(object) => Some(object),
            _ => None,
        }))
}

/// The one public key of a (checked) cross-signing key, unpadded base64: how the spec
/// names the key in signatures (`ed25519:<public key>`) and in `/keys/signatures/upload`.
pub(crate) fn public_key_of(key: &Map<String, Value>) -> Option<&str> {
    key.get("keys")?.as_object()?.values().next()?.as_str()
}

/// Checks one cross-signing key's shape: the user's, for `usage`, with exactly one
/// ed25519 key whose ID names it. Returns its public key (unpadded base64).
pub(crate) fn check_shape<'a>(
    user_id: &str,
    usage: &str,
    key: &'a Map<String, Value>,
) -> Result<&'a str, Error> {
    if key.get("user_id").and_then(Value::as_str) != Some(user_id) {
        return Err(invalid(format!(
            "The {usage} key's user_id is not {user_id}"
        )));
    }
    let usages = key.get("usage").and_then(Value::as_array);
    if !usages.is_some_and(|usages| usages.iter().any(|u| u.as_str() == Some(usage))) {
        return Err(invalid(format!(
            "The {usage} key's usage must list {usage}"
        )));
    }
    let keys = key.get("keys").and_then(Value::as_object);
    let Some((key_id, public)) = keys
        .filter(|keys| keys.len() == 1)
        .and_then(|keys| keys.iter().next())
    else {
        return Err(invalid(format!(
            "The {usage} key must hold exactly one key"
        )));
    };
    let public = public.as_str().unwrap_or_default();
    let decoded = decode_base64(public);
    if key_id.strip_prefix("ed25519:") != Some(public) || decoded.is_none_or(|k| k.len() != 32) {
        return Err(invalid(format!(
            "The {usage} key must be one ed25519 key, `ed25519:<public key>`"
        )));
    }
    let signatures = key.get("signatures");
    let signature_count: usize = match signatures {
        None => 0,
        Some(Value::Object(by_signer)) => by_signer
            .values()
            .map(|keys| keys.as_object().map_or(usize::MAX, Map::len))
            .fold(0usize, usize::saturating_add),
        Some(_) => usize::MAX,
    };
    if signature_count > MAX_SIGNATURES {
        return Err(invalid(format!(
            "The {usage} key's signatures must be an object of at most {MAX_SIGNATURES}"
        )));
    }
    if serde_json::to_vec(key).map_or(usize::MAX, |bytes| bytes.len()) > MAX_KEY_BYTES {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!("The {usage} key is larger than {MAX_KEY_BYTES} bytes"),
        ));
    }
    Ok(public)
}

/// Checks that `key` carries a valid signature by the user's master key `master`.
fn check_signed_by_master(
    user_id: &str,
    usage: &str,
    key: &Map<String, Value>,
    master: &Map<String, Value>,
) -> Result<(), Error> {
    let master_public = public_key_of(master).unwrap_or_default();
    let bytes = decode_base64(master_public).unwrap_or_default();
    verify_json(key, user_id, &format!("ed25519:{master_public}"), &bytes).map_err(|err| {
        Error::new(
            ErrorKind::InvalidSignature,
            format!("The {usage} key is not signed by the master key: {err}"),
        )
    })
}

/// Checks a set of keys for `user_id` against each other and what is stored: each key's
/// shape, a master key to sign with (uploaded now or before), the self-signing and
/// user-signing keys signed by it.
fn check_set(storage: &Storage, user_id: &str, keys: &KeySet) -> Result<(), Error> {
    for (usage, key) in keys.by_usage() {
        if let Some(key) = key {
            check_shape(user_id, usage, key)?;
        }
    }
    let stored_master;
    let master = match &keys.master {
        Some(master) => master,
        None if keys.self_signing.is_none() && keys.user_signing.is_none() => return Ok(()),
        None => {
            stored_master = stored(storage, user_id, MASTER)?.ok_or_else(|| {
                Error::new(
                    ErrorKind::MissingParam,
                    "No master signing key is available",
                )
            })?;
            &stored_master
        }
    };
    for (usage, key) in [
        (SELF_SIGNING, keys.self_signing.as_ref()),
        (USER_SIGNING, keys.user_signing.as_ref()),
    ] {
        if let Some(key) = key {
            check_signed_by_master(user_id, usage, key, master)?;
        }
    }
    Ok(())
}

/// Whether uploading `keys` needs user-interactive auth (spec v1.11 on): not when the user
/// has no master key yet, nor when every key uploaded is the one already stored.
pub(crate) fn upload_needs_auth(
    storage: &Storage,
    user_id: &UserId,
    keys: &KeySet,
) -> Result<bool, StorageError> {
    if stored(storage, user_id.as_str(), MASTER)?.is_none() {
        return Ok(false);
    }
    for (usage, key) in keys.by_usage() {
        if let Some(key) = key
            && stored(storage, user_id.as_str(), usage)?.as_ref() != Some(key)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// # `/keys/device_signing/upload`: checks and stores the user's cross-signing keys, all
/// or none, at a new stream position when anything changed. `authenticated` says whether
/// the request passed user-interactive auth: without it, a set that needs it (another
/// request stored a master key meanwhile) is refused. Returns whether anything changed.
pub(crate) async fn upload(
    storage: &Storage,
    stream: &Stream,
    user_id: &UserId,
    keys: &KeySet,
    authenticated: bool,
) -> Result<bool, Error> {
    let user = user_id.as_str();
    check_set(storage, user, keys)?;
    for (usage, key) in keys.by_usage() {
        let public = key.and_then(public_key_of).unwrap_or_default();
        if key.is_some()
            && storage
                .userdevice_device
                .contains_key(&(user.to_owned(), public.to_owned()))?
        {
            return Err(Error::new(
                ErrorKind::Forbidden,
                format!("The {usage} key's public key is one of your device IDs"),
            ));
        }
    }
    let mut changed = false;
    stream
        .commit_at_next_position::<Error>(storage, |batch, position| {
            // Checked again in order with every other upload: two first uploads at once
            // cannot both skip user-interactive auth.
            if !authenticated && upload_needs_auth(storage, user_id, keys)? {
                return Err(Error::new(
                    ErrorKind::Forbidden,
                    "Cross-signing keys were set meanwhile: authenticate to replace them",
                ));
            }
            check_set(storage, user, keys)?;
            for (usage, key) in keys.by_usage() {
                let Some(key) = key else { continue };
                if stored(storage, user, usage)?.as_ref() == Some(key) {
                    continue;
                }
                storage.usercrosssigning_key.batch_insert(
                    batch,
                    &row(user, usage),
                    &Value::Object(key.clone()),
                )?;
                changed = true;
            }
            if changed {
                stage_keys_changed(storage, batch, position, user_id, true)?;
            }
            Ok(())
        })
        .await?;
    Ok(changed)
}

/// Marks, at `position`, that `user_id`'s keys changed (`cross_signing_keys`: the master
/// or self-signing key itself, not only signatures): the hook the outbound follower sends
/// `m.signing_key_update` from, and that device lists can read to tell other users. Staged
/// in the caller's batch, which holds `position`.
pub(crate) fn stage_keys_changed(
    storage: &Storage,
    batch: &mut Batch,
    position: u64,
    user_id: &UserId,
    cross_signing_keys: bool,
) -> Result<(), StorageError> {
    let record = KeysChangedRecord {
        user_id: user_id.to_string(),
        cross_signing_keys,
    };
    storage
        .stream_keyschanged
        .batch_insert(batch, &position, &record)
}

/// The cross-signing keys `/keys/query` answers for `user_id`, with the signatures
/// `viewer` may see merged in (see [`signatures::merge`]): `(master, self_signing,
/// user_signing)`, the user-signing key only when the viewer is the owner.
pub(crate) fn keys_for_query(
    storage: &Storage,
    user_id: &UserId,
    viewer: Option<&UserId>,
) -> Result<[Option<Value>; 3], StorageError> {
    let user = user_id.as_str();
    let mut master = stored(storage, user, MASTER)?;
    if let Some(master) = &mut master
        && let Some(public) = public_key_of(master).map(str::to_owned)
    {
        signatures::merge(storage, user, &public, master, viewer)?;
    }
    let self_signing = stored(storage, user, SELF_SIGNING)?;
    let user_signing = match viewer {
        Some(viewer) if viewer == user_id => stored(storage, user, USER_SIGNING)?,
        _ => None,
    };
    Ok([master, self_signing, user_signing].map(|key| key.map(Value::Object)))
}

/// The content of an `m.signing_key_update` EDU for our user, or `None` without keys.
pub(crate) fn signing_key_update(
    storage: &Storage,
    user_id: &UserId,
) -> Result<Option<Value>, StorageError> {
    let [master, self_signing, _] = keys_for_query(storage, user_id, None)?;
    if master.is_none() && self_signing.is_none() {
        return Ok(None);
    }
    let mut content = json!({ "user_id": user_id });
    if let Some(master) = master {
        content["master_key"] = master;
    }
    if let Some(self_signing) = self_signing {
        content["self_signing_key"] = self_signing;
    }
    Ok(Some(content))
}

/// Stores what another server says of its user's master and self-signing keys (from an
/// `m.signing_key_update` or a `/user/keys/query` answer), once checked like an upload;
/// the caller checked that the server speaks for the user. Unchanged keys write nothing;
/// returns whether any changed.
pub(crate) fn store_remote(
    storage: &Storage,
    user_id: &UserId,
    master: Option<&Map<String, Value>>,
    self_signing: Option<&Map<String, Value>>,
) -> Result<bool, Error> {
    let keys = KeySet {
        master: master.cloned(),
        self_signing: self_signing.cloned(),
        user_signing: None,
    };
    let _exclusive = storage.exclusive();
    check_set(storage, user_id.as_str(), &keys)?;
    let mut batch = Batch::new();
    let mut changed = false;
    for (usage, key) in keys.by_usage() {
        let Some(key) = key else { continue };
        if stored(storage, user_id.as_str(), usage)?.as_ref() != Some(key) {
            storage.usercrosssigning_key.batch_insert(
                &mut batch,
                &row(user_id.as_str(), usage),
                &Value::Object(key.clone()),
            )?;
            changed = true;
        }
    }
    if changed {
        storage.apply(batch)?;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use ed25519_compact::{KeyPair, Seed};
    use ruma::user_id;

    use super::*;
    use crate::matrix::canonical_json::to_canonical_string;
    use crate::matrix::crypto::encode_base64;

    fn key_pair(seed: u8) -> KeyPair {
        KeyPair::from_seed(Seed::new([seed; 32]))
    }

    fn cross_signing_key(user: &str, usage: &str, key: &KeyPair) -> Map<String, Value> {
        let public = encode_base64(key.pk.as_ref());
        let key = json!({
            "user_id": user,
            "usage": [usage],
            "keys": { format!("ed25519:{public}"): public },
        });
        key.as_object().cloned().unwrap_or_default()
    }

    fn signed_by(user: &str, object: &Map<String, Value>, key: &KeyPair) -> Map<String, Value> {
        let canonical = to_canonical_string(object).expect("canonical");
        let signature = encode_base64(key.sk.sign(canonical.as_bytes(), None).as_ref());
        let mut signed = object.clone();
        let key_id = format!("ed25519:{}", encode_base64(key.pk.as_ref()));
        signed.insert(
            "signatures".to_owned(),
            json!({ user: { key_id: signature } }),
        );
        signed
    }

    #[test]
    fn another_servers_keys_are_kept_only_when_they_check_out() {
        let (_dir, storage) = crate::storage::testing::temporary();
        let carol = user_id!("@carol:elsewhere");
        let (master, self_signing) = (key_pair(1), key_pair(2));
        let master_key = cross_signing_key(carol.as_str(), MASTER, &master);
        let unsigned = cross_signing_key(carol.as_str(), SELF_SIGNING, &self_signing);
        // A self-signing key not signed by the master key: nothing kept, master included.
        assert!(store_remote(&storage, carol, Some(&master_key), Some(&unsigned)).is_err());
        assert!(
            stored(&storage, carol.as_str(), MASTER)
                .expect("read")
                .is_none()
        );
        // Signed by another key: refused too.
        let forged = signed_by(carol.as_str(), &unsigned, &key_pair(3));
        assert!(store_remote(&storage, carol, Some(&master_key), Some(&forged)).is_err());
        // Keys that name another user: refused.
        let bobs = cross_signing_key("@bob:elsewhere", MASTER, &master);
        assert!(store_remote(&storage, carol, Some(&bobs), None).is_err());
        // The real thing is kept, once.
        let signed = signed_by(carol.as_str(), &unsigned, &master);
        assert!(store_remote(&storage, carol, Some(&master_key), Some(&signed)).expect("kept"));
        assert!(!store_remote(&storage, carol, Some(&master_key), Some(&signed)).expect("same"));
        let [master_seen, self_signing_seen, user_signing_seen] =
            keys_for_query(&storage, carol, None).expect("query");
        assert_eq!(master_seen, Some(Value::Object(master_key)));
        assert_eq!(self_signing_seen, Some(Value::Object(signed)));
        assert_eq!(user_signing_seen, None);
    }

    #[tokio::test]
    async fn an_upload_marks_the_users_keys_changed_and_the_user_signing_key_stays_private() {
        let (_dir, storage) = crate::storage::testing::temporary();
        let stream = Stream::new(0);
        let alice = user_id!("@alice:localhost");
        let (master, user_signing) = (key_pair(4), key_pair(5));
        let keys = KeySet {
            master: Some(cross_signing_key(alice.as_str(), MASTER, &master)),
            self_signing: None,
            user_signing: Some(signed_by(
                alice.as_str(),
                &cross_signing_key(alice.as_str(), USER_SIGNING, &user_signing),
                &master,
            )),
        };
        assert!(!upload_needs_auth(&storage, alice, &keys).expect("auth"));
        assert!(
            upload(&storage, &stream, alice, &keys, false)
                .await
                .expect("upload")
        );
        // The same keys again change nothing and need no auth; a new master key does.
        assert!(!upload_needs_auth(&storage, alice, &keys).expect("auth"));
        assert!(
            !upload(&storage, &stream, alice, &keys, false)
                .await
                .expect("again")
        );
        let other = KeySet {
            master: Some(cross_signing_key(alice.as_str(), MASTER, &key_pair(6))),
            ..KeySet::default()
        };
        assert!(upload_needs_auth(&storage, alice, &other).expect("auth"));
        assert!(
            upload(&storage, &stream, alice, &other, false)
                .await
                .is_err()
        );
        let changes: Vec<_> = storage
            .stream_keyschanged
            .iter()
            .map(|entry| entry.expect("row").1)
            .collect();
        assert_eq!(
            changes,
            vec![KeysChangedRecord {
                user_id: alice.to_string(),
                cross_signing_keys: true,
            }]
        );
        let bob = user_id!("@bob:localhost");
        assert!(keys_for_query(&storage, alice, Some(bob)).expect("q")[2].is_none());
        assert!(keys_for_query(&storage, alice, Some(alice)).expect("q")[2].is_some());
    }
}
