//! Sessions and devices. Logging in makes (or reuses) a device and gives it an access token;
//! the token is stored only as its SHA-256 hash, so a copy of the database holds no usable
//! token. A device and its token are written together in one batch.

use ruma::{OwnedUserId, UserId};
use serde::Serialize;

use super::AccountError;
use crate::matrix::crypto::random_bytes;
use crate::storage::{Batch, Storage, StorageError, pair_prefix};
use crate::users::to_device;

pub(crate) use crate::storage::records::SessionRecord;

pub(crate) use crate::storage::records::DeviceRecord;

impl std::fmt::Debug for DeviceRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceRecord")
            .field("display_name", &self.display_name)
            .field("last_seen_ts", &self.last_seen_ts)
            .finish_non_exhaustive()
    }
}

/// A device as clients see it (`GET /devices`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Device {
    pub(crate) device_id: String,
    pub(crate) display_name: Option<String>,
    pub(crate) last_seen_ip: Option<String>,
    pub(crate) last_seen_ts: Option<u64>,
}

/// What a successful login hands to the client. Its `Debug` leaves the token out.
#[derive(Clone)]
pub(crate) struct NewSession {
    pub(crate) access_token: String,
    pub(crate) device_id: String,
}

impl std::fmt::Debug for NewSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSession")
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

/// The user and device behind a valid access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    pub(crate) user_id: OwnedUserId,
    pub(crate) device_id: String,
    /// The token's hash, so logout can revoke exactly this token.
    pub(crate) token_hash: [u8; 32],
    /// The account is locked ([`super::moderation`]): read with the account, which is
    /// read anyway, so that enforcing a lock costs no extra lookup.
    pub(crate) locked: bool,
    /// The account is suspended ([`super::moderation`]).
    pub(crate) suspended: bool,
}

/// The longest device ID or display name accepted from a client.
pub(crate) const MAX_DEVICE_FIELD_BYTES: usize = 255;

/// How often a device's "last seen" is written: not on every request (an SD card wears).
const LAST_SEEN_RESOLUTION_MS: u64 = 5 * 60 * 1000;

pub(crate) fn token_hash(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

/// A new access token: 256 random bits.
pub(crate) fn new_access_token() -> String {
    format!("hth_{}", base64url(&random_bytes::<32>()))
}

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A new device ID: ten capital letters, as most servers make them.
pub(crate) fn new_device_id() -> String {
    random_bytes::<10>()
        .iter()
        .map(|b| (b'A' + b % 26) as char)
        .collect()
}

fn device_key(user_id: &UserId, device_id: &str) -> (String, String) {
    (user_id.to_string(), device_id.to_owned())
}

/// Starts a session on `device_id` (a new device when `None` or unknown). Logging in again
/// on a known device replaces its token, so the old one stops working.
pub(crate) fn start_session(
    storage: &Storage,
    user_id: &UserId,
    device_id: Option<&str>,
    display_name: Option<String>,
    ip: Option<String>,
    now_ms: u64,
) -> Result<NewSession, AccountError> {
    let device_id = device_id.map_or_else(new_device_id, str::to_owned);
    let access_token = new_access_token();
    let hash = token_hash(&access_token);
    let key = device_key(user_id, &device_id);
    let _exclusive = storage.exclusive();
    let mut batch = Batch::new();
    let previous = storage.userdevice_device.get(&key)?;
    if let Some(old_hash) = previous
        .as_ref()
        .and_then(|device| unhex(&device.token_hash))
    {
        storage
            .tokenhash_session
            .batch_remove(&mut batch, &old_hash);
    }
    let device = DeviceRecord {
        // The spec: the initial display name is ignored for a device that already exists.
        display_name: match &previous {
            Some(device) => device.display_name.clone(),
            None => display_name,
        },
        token_hash: hex(&hash),
        created_at_ms: previous.as_ref().map_or(now_ms, |d| d.created_at_ms),
        last_seen_ts: Some(now_ms),
        last_seen_ip: ip.or_else(|| previous.and_then(|d| d.last_seen_ip)),
    };
    storage
        .userdevice_device
        .batch_insert(&mut batch, &key, &device)?;
    let session = SessionRecord {
        user_id: user_id.to_string(),
        device_id: device_id.clone(),
    };
    storage
        .tokenhash_session
        .batch_insert(&mut batch, &hash, &session)?;
    storage.apply(batch)?;
    Ok(NewSession {
        access_token,
        device_id,
    })
}

/// The session an access token belongs to, if it is valid: its session record exists, its
/// account is active, and its device still holds this very token (a token whose device was replaced or removed
/// never works again, whatever order concurrent requests ran in).
pub(crate) fn authenticate(
    storage: &Storage,
    access_token: &str,
) -> Result<Option<Session>, StorageError> {
    let hash = token_hash(access_token);
    let Some(record) = storage.tokenhash_session.get(&hash)? else {
        return Ok(None);
    };
    let user_id = UserId::parse(record.user_id.as_str())
        .map_err(|err| StorageError::Corrupt(format!("session user ID: {err}")))?;
    let device = storage
        .userdevice_device
        .get(&device_key(&user_id, &record.device_id))?;
    if device.is_none_or(|device| unhex(&device.token_hash) != Some(hash)) {
        return Ok(None);
    }
    // A login that raced a deactivation must not leave a working token behind.
    let Some(account) = storage
        .userid_account
        .get(&record.user_id)?
        .filter(|account| !account.deactivated)
    else {
        return Ok(None);
    };
    Ok(Some(Session {
        user_id,
        device_id: record.device_id,
        token_hash: hash,
        locked: account.locked,
        suspended: account.suspended,
    }))
}

/// Ends the session `session`: its token, and its device if the device still holds it.
pub(crate) fn end_session(storage: &Storage, session: &Session) -> Result<(), StorageError> {
    let _exclusive = storage.exclusive();
    let mut batch = Batch::new();
    storage
        .tokenhash_session
        .batch_remove(&mut batch, &session.token_hash);
    let key = device_key(&session.user_id, &session.device_id);
    if let Some(device) = storage.userdevice_device.get(&key)?
        && unhex(&device.token_hash) == Some(session.token_hash)
    {
        storage.userdevice_device.batch_remove(&mut batch, &key);
        crate::users::keys::stage_removal(storage, &mut batch, &session.user_id, &key.1)?;
        to_device::stage_forget_device(storage, &mut batch, &key.0, &key.1)?;
    }
    storage.apply(batch)
}

/// Notes that a device was used, at most every few minutes.
pub(crate) fn touch_device(
    storage: &Storage,
    user_id: &UserId,
    device_id: &str,
    ip: Option<&str>,
    now_ms: u64,
) -> Result<(), StorageError> {
    let key = device_key(user_id, device_id);
    let Some(device) = storage.userdevice_device.get(&key)? else {
        return Ok(());
    };
    let recent = device
        .last_seen_ts
        .is_some_and(|seen| now_ms.saturating_sub(seen) < LAST_SEEN_RESOLUTION_MS);
    if recent && device.last_seen_ip == ip.map(str::to_owned) {
        return Ok(());
    }
    storage.userdevice_device.update(&key, |current| {
        current.map(|mut device| {
            device.last_seen_ts = Some(now_ms);
            device.last_seen_ip = ip.map(str::to_owned);
            device
        })
    })?;
    Ok(())
}

/// Stages a device that has no access token and so never logs in: a dehydrated device
/// (MSC3814), which exists to hold keys and receive to-device messages.
pub(crate) fn stage_tokenless_device(
    storage: &Storage,
    batch: &mut Batch,
    user_id: &UserId,
    device_id: &str,
    display_name: Option<String>,
    now_ms: u64,
) -> Result<(), StorageError> {
    let device = DeviceRecord {
        display_name,
        token_hash: String::new(),
        created_at_ms: now_ms,
        last_seen_ts: None,
        last_seen_ip: None,
    };
    storage
        .userdevice_device
        .batch_insert(batch, &device_key(user_id, device_id), &device)
}

/// Removes devices and their tokens, in one batch; unknown devices are skipped.
pub(crate) fn remove_devices(
    storage: &Storage,
    user_id: &UserId,
    device_ids: &[String],
) -> Result<(), StorageError> {
    let _exclusive = storage.exclusive();
    let mut batch = Batch::new();
    for device_id in device_ids {
        let key = device_key(user_id, device_id);
        if let Some(device) = storage.userdevice_device.get(&key)? {
            if let Some(hash) = unhex(&device.token_hash) {
                storage.tokenhash_session.batch_remove(&mut batch, &hash);
            }
            storage.userdevice_device.batch_remove(&mut batch, &key);
            // A deleted device's keys must not be handed out to anyone again.
            crate::users::keys::stage_removal(storage, &mut batch, user_id, device_id)?;
            to_device::stage_forget_device(storage, &mut batch, &key.0, &key.1)?;
        }
    }
    storage.apply(batch)
}

/// Ends every session of a user except `keep` (the device asking, when it stays logged in).
/// Returns how many devices were removed.
pub(crate) fn remove_all_devices(
    storage: &Storage,
    user_id: &UserId,
    keep: Option<&str>,
) -> Result<usize, StorageError> {
    let _exclusive = storage.exclusive();
    let mut batch = Batch::new();
    let mut removed = 0;
    for entry in storage
        .userdevice_device
        .scan_prefix(&pair_prefix(user_id.as_str()))
    {
        let (key, device) = entry?;
        if Some(key.1.as_str()) == keep {
            continue;
        }
        if let Some(hash) = unhex(&device.token_hash) {
            storage.tokenhash_session.batch_remove(&mut batch, &hash);
        }
        storage.userdevice_device.batch_remove(&mut batch, &key);
        crate::users::keys::stage_removal(storage, &mut batch, user_id, &key.1)?;
        to_device::stage_forget_device(storage, &mut batch, &key.0, &key.1)?;
        removed += 1;
    }
    storage.apply(batch)?;
    Ok(removed)
}

pub(crate) fn list_devices(
    storage: &Storage,
    user_id: &UserId,
) -> Result<Vec<Device>, StorageError> {
    storage
        .userdevice_device
        .scan_prefix(&pair_prefix(user_id.as_str()))
        .map(|entry| entry.map(|(key, record)| device_view(key.1, record)))
        .collect()
}

pub(crate) fn get_device(
    storage: &Storage,
    user_id: &UserId,
    device_id: &str,
) -> Result<Option<Device>, StorageError> {
    let key = device_key(user_id, device_id);
    Ok(storage
        .userdevice_device
        .get(&key)?
        .map(|record| device_view(device_id.to_owned(), record)))
}

/// Renames a device; `false` when there is no such device.
pub(crate) fn rename_device(
    storage: &Storage,
    user_id: &UserId,
    device_id: &str,
    display_name: &str,
) -> Result<bool, StorageError> {
    let key = device_key(user_id, device_id);
    let updated = storage.userdevice_device.update(&key, |current| {
        current.map(|mut device| {
            device.display_name = Some(display_name.to_owned());
            device
        })
    })?;
    Ok(updated.is_some())
}

fn device_view(device_id: String, record: DeviceRecord) -> Device {
    Device {
        device_id,
        display_name: record.display_name,
        last_seen_ip: record.last_seen_ip,
        last_seen_ts: record.last_seen_ts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Storage, OwnedUserId) {
        let (dir, storage) = crate::storage::testing::temporary();
        let user = UserId::parse("@alice:example.org").expect("valid");
        super::super::add_user_with_hash(&storage, &user, "hash".into(), false).expect("account");
        (dir, storage, user)
    }

    #[test]
    fn tokens_authenticate_and_are_stored_only_as_hashes() {
        let (dir, storage, user) = setup();
        let session =
            start_session(&storage, &user, None, Some("phone".into()), None, 1).expect("login");
        assert!(session.access_token.starts_with("hth_"));
        assert_eq!(session.device_id.len(), 10);
        let found = authenticate(&storage, &session.access_token)
            .expect("lookup")
            .expect("valid");
        assert_eq!(
            (found.user_id, found.device_id),
            (user, session.device_id.clone())
        );
        assert_eq!(authenticate(&storage, "hth_wrong").expect("lookup"), None);
        storage.flush_blocking().expect("flush");
        let secret = session.access_token.trim_start_matches("hth_");
        for entry in walk(dir.path()) {
            let bytes = std::fs::read(&entry).expect("read");
            let found = bytes
                .windows(secret.len())
                .any(|window| window == secret.as_bytes());
            assert!(!found, "the plain token is on disk in {}", entry.display());
        }
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
        files
    }

    #[test]
    fn logging_in_again_on_a_device_replaces_its_token_and_keeps_its_name() {
        let (_dir, storage, user) = setup();
        let first = start_session(&storage, &user, Some("DEV"), Some("laptop".into()), None, 1)
            .expect("login");
        let second = start_session(&storage, &user, Some("DEV"), Some("other".into()), None, 2)
            .expect("login");
        assert_eq!(
            authenticate(&storage, &first.access_token).expect("lookup"),
            None
        );
        assert!(
            authenticate(&storage, &second.access_token)
                .expect("lookup")
                .is_some()
        );
        let devices = list_devices(&storage, &user).expect("list");
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0].display_name.as_deref(), Some("laptop"));
    }

    #[test]
    fn removing_devices_revokes_their_tokens() {
        let (_dir, storage, user) = setup();
        let a = start_session(&storage, &user, None, None, None, 1).expect("login");
        let b = start_session(&storage, &user, None, None, None, 1).expect("login");
        let c = start_session(&storage, &user, None, None, None, 1).expect("login");
        remove_devices(&storage, &user, &[a.device_id.clone(), "UNKNOWN".into()]).expect("remove");
        assert_eq!(
            authenticate(&storage, &a.access_token).expect("lookup"),
            None
        );
        let removed = remove_all_devices(&storage, &user, Some(&c.device_id)).expect("remove all");
        assert_eq!(removed, 1);
        assert_eq!(
            authenticate(&storage, &b.access_token).expect("lookup"),
            None
        );
        assert!(
            authenticate(&storage, &c.access_token)
                .expect("lookup")
                .is_some()
        );
        assert_eq!(list_devices(&storage, &user).expect("list").len(), 1);
    }

    /// A logout and a login on the same device that interleave can leave a session record
    /// without its device; such a token must not work.
    #[test]
    fn a_token_whose_device_no_longer_holds_it_is_refused() {
        let (_dir, storage, user) = setup();
        let old = start_session(&storage, &user, Some("DEV"), None, None, 1).expect("login");
        let dangling = SessionRecord {
            user_id: user.to_string(),
            device_id: "DEV".to_owned(),
        };
        let new = start_session(&storage, &user, Some("DEV"), None, None, 2).expect("login");
        storage
            .tokenhash_session
            .insert(&token_hash(&old.access_token), &dangling)
            .expect("simulate the race");
        assert_eq!(
            authenticate(&storage, &old.access_token).expect("lookup"),
            None
        );
        let session = authenticate(&storage, &new.access_token)
            .expect("lookup")
            .expect("valid");
        end_session(&storage, &session).expect("logout");
        assert_eq!(
            authenticate(&storage, &new.access_token).expect("lookup"),
            None
        );
        assert!(list_devices(&storage, &user).expect("list").is_empty());
    }

    #[test]
    fn tokens_of_deactivated_accounts_stop_working() {
        let (_dir, storage, user) = setup();
        let session = start_session(&storage, &user, None, None, None, 1).expect("login");
        storage
            .userid_account
            .update(&user.to_string(), |record| {
                record.map(|mut record| {
                    record.deactivated = true;
                    record
                })
            })
            .expect("deactivate only the record, as a crash midway would");
        assert_eq!(
            authenticate(&storage, &session.access_token).expect("lookup"),
            None
        );
    }

    #[test]
    fn other_users_devices_are_not_touched() {
        let (_dir, storage, alice) = setup();
        let alicia = UserId::parse("@alice:example.org.evil").expect("valid");
        super::super::add_user_with_hash(&storage, &alicia, "hash".into(), false).expect("account");
        let hers = start_session(&storage, &alicia, None, None, None, 1).expect("login");
        start_session(&storage, &alice, None, None, None, 1).expect("login");
        remove_all_devices(&storage, &alice, None).expect("remove");
        assert!(
            authenticate(&storage, &hers.access_token)
                .expect("lookup")
                .is_some()
        );
    }
}
