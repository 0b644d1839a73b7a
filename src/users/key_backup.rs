//! Server-side key backup (spec: client-server API, "End-to-End Encryption", "Server-side
//! key backups"): a user's megolm session keys, encrypted by their client to a key the
//! server never sees, kept so a new device can read old encrypted messages.
//!
//! A user has numbered backup versions (`userversion_backup`); keys are written only to
//! the newest one not deleted (the current one) and read from any that exists. Each
//! version carries a `count` of its keys and an `etag` bumped on every change, both
//! written in the same batch as the keys, so they never disagree with them. A deleted
//! version stays as a tombstone: its number is not reused and deleting it again succeeds.
//!
//! This module is the only writer of `userversion_backup` and `backupsession_key`; writes
//! are serialized by [`KeyBackups::writes`] because each one reads the version (its count)
//! and the keys it may replace before writing them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use ruma::UserId;
use serde_json::{Map, Value, json};

use crate::error::{Error, ErrorKind};
pub(crate) use crate::storage::records::BackedUpKey;
use crate::storage::records::BackupVersionRecord;
use crate::storage::{Batch, Storage, pair_prefix};

/// The most keys one backup may hold: a very active account collects some tens of
/// thousands over years. This bounds the disk an account takes and the answer to reading
/// a whole backup (about 500 bytes a key, so some 100 MB at the bound).
pub(crate) const MAX_KEYS_PER_BACKUP: u64 = 200_000;

/// The most backup versions a user may hold at once (deleted ones aside). Clients keep
/// one, and make a new one before deleting the old when they reset it; the bound keeps a
/// hostile account from filling the disk with versions of large `auth_data`.
pub(crate) const MAX_LIVE_VERSIONS: usize = 100;

/// The longest session ID accepted (megolm session IDs are 43 characters).
pub(crate) const MAX_SESSION_ID_BYTES: usize = 255;

/// The longest algorithm name accepted.
const MAX_ALGORITHM_BYTES: usize = 255;

/// How many keys one batch removes when a whole backup or room is deleted: a large
/// backup is removed in steps, each moving `count` with the keys it removes.
const REMOVE_CHUNK: usize = 1000;

/// Keys by room ID, then by session ID: the shape of `PUT /room_keys/keys` and its
/// answer to `GET`.
pub(crate) type RoomsKeys = BTreeMap<String, BTreeMap<String, BackedUpKey>>;

/// A backup version's `count` and `etag`, as the key endpoints answer them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BackupState {
    pub(crate) count: u64,
    pub(crate) etag: u64,
}

impl BackupState {
    pub(crate) fn to_json(self) -> Value {
        json!({ "count": self.count, "etag": self.etag.to_string() })
    }
}

/// Which keys of a backup a request is about.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope<'a> {
    All,
    Room(&'a str),
    Session(&'a str, &'a str),
}

/// The key backups of every user (see the module's doc).
pub(crate) struct KeyBackups {
    storage: Arc<Storage>,
    /// Held around each read-then-write (never across an `await`).
    writes: Mutex<()>,
}

/// Whether `new` should replace `old`, by the spec's rules: a verified key beats an
/// unverified one; then the lower `first_message_index` (it decrypts more); then the lower
/// `forwarded_count` (fewer hands it passed through). On a tie the stored key stays.
pub(crate) fn better(new: &BackedUpKey, old: &BackedUpKey) -> bool {
    if new.is_verified != old.is_verified {
        return new.is_verified;
    }
    if new.first_message_index != old.first_message_index {
        return new.first_message_index < old.first_message_index;
    }
    new.forwarded_count < old.forwarded_count
}

fn unknown_version() -> Error {
    Error::not_found("Unknown backup version")
}

/// A version as clients spell it: the decimal number we handed out, nothing else (`01`
/// and `+1` name no backup).
fn parse_version(version: &str) -> Option<u64> {
    version
        .parse::<u64>()
        .ok()
        .filter(|number| number.to_string() == version)
}

fn version_info(version: u64, record: &BackupVersionRecord) -> Value {
    json!({
        "algorithm": record.algorithm,
        "auth_data": record.auth_data,
        "count": record.count,
        "etag": record.etag.to_string(),
        "version": version.to_string(),
    })
}

/// Checks a new or updated backup's `algorithm`.
fn check_algorithm(algorithm: &str) -> Result<(), Error> {
    if algorithm.is_empty() || algorithm.len() > MAX_ALGORITHM_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "The backup algorithm must be a name of 1 to 255 bytes",
        ));
    }
    Ok(())
}

impl KeyBackups {
    pub(crate) fn new(storage: Arc<Storage>) -> KeyBackups {
        KeyBackups {
            storage,
            writes: Mutex::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The guard protects no data of its own: a panic elsewhere leaves nothing torn.
        self.writes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The user's current backup: the newest version not deleted.
    fn current(&self, user_id: &UserId) -> Result<Option<(u64, BackupVersionRecord)>, Error> {
        let (from, to) = ((user_id.to_string(), 0), (user_id.to_string(), u64::MAX));
        for entry in self.storage.userversion_backup.range(&from, &to).rev() {
            let ((_, version), record) = entry?;
            if !record.deleted {
                return Ok(Some((version, record)));
            }
        }
        Ok(None)
    }

    /// The version named `version`, if it exists and is not deleted.
    fn existing(
        &self,
        user_id: &UserId,
        version: &str,
    ) -> Result<(u64, BackupVersionRecord), Error> {
        let number = parse_version(version).ok_or_else(unknown_version)?;
        match self
            .storage
            .userversion_backup
            .get(&(user_id.to_string(), number))?
        {
            Some(record) if !record.deleted => Ok((number, record)),
            _ => Err(unknown_version()),
        }
    }

    /// Creates a new backup version, which becomes the current one; answers its version.
    pub(crate) async fn create(
        &self,
        user_id: &UserId,
        algorithm: String,
        auth_data: Map<String, Value>,
    ) -> Result<String, Error> {
        check_algorithm(&algorithm)?;
        let version = {
            let _guard = self.lock();
            let (from, to) = ((user_id.to_string(), 0), (user_id.to_string(), u64::MAX));
            let mut newest = 0;
            let mut live = 0;
            for entry in self.storage.userversion_backup.range(&from, &to) {
                let ((_, version), record) = entry?;
                newest = version;
                live += usize::from(!record.deleted);
            }
            if live >= MAX_LIVE_VERSIONS {
                return Err(Error::new(
                    ErrorKind::Forbidden,
                    format!(
                        "At most {MAX_LIVE_VERSIONS} backup versions may exist at once; delete an old one first"
                    ),
                ));
            }
            let version = newest
                .checked_add(1)
                .ok_or_else(|| Error::new(ErrorKind::Forbidden, "No backup versions are left"))?;
            let record = BackupVersionRecord {
                algorithm,
                auth_data,
                etag: 0,
                count: 0,
                deleted: false,
            };
            self.storage
                .userversion_backup
                .insert(&(user_id.to_string(), version), &record)?;
            version
        };
        self.storage.flush().await?;
        Ok(version.to_string())
    }

    /// The current backup's information (`GET /room_keys/version`).
    pub(crate) fn current_info(&self, user_id: &UserId) -> Result<Value, Error> {
        let (version, record) = self
            .current(user_id)?
            .ok_or_else(|| Error::not_found("No current backup version"))?;
        Ok(version_info(version, &record))
    }

    /// A backup's information (`GET /room_keys/version/{version}`).
    pub(crate) fn info(&self, user_id: &UserId, version: &str) -> Result<Value, Error> {
        let (number, record) = self.existing(user_id, version)?;
        Ok(version_info(number, &record))
    }

    /// Replaces a backup's `auth_data`; its algorithm may not change.
    pub(crate) async fn update(
        &self,
        user_id: &UserId,
        version: &str,
        algorithm: &str,
        auth_data: Map<String, Value>,
    ) -> Result<(), Error> {
        {
            let _guard = self.lock();
            let (number, mut record) = self.existing(user_id, version)?;
            if record.algorithm != algorithm {
                return Err(Error::new(
                    ErrorKind::InvalidParam,
                    "Algorithm does not match",
                ));
            }
            record.auth_data = auth_data;
            self.storage
                .userversion_backup
                .insert(&(user_id.to_string(), number), &record)?;
        }
        self.storage.flush().await?;
        Ok(())
    }

    /// Deletes a backup and its keys. A version deleted before succeeds again; one never
    /// created is not found.
    pub(crate) async fn delete(&self, user_id: &UserId, version: &str) -> Result<(), Error> {
        let number = parse_version(version).ok_or_else(unknown_version)?;
        let key = (user_id.to_string(), number);
        {
            let _guard = self.lock();
            let mut record = self
                .storage
                .userversion_backup
                .get(&key)?
                .ok_or_else(unknown_version)?;
            if !record.deleted {
                // The tombstone first: from here on the version is gone for every reader,
                // whatever happens to the removal of its keys below.
                record.deleted = true;
                record.etag += 1;
                // A tombstone keeps only what a second delete needs.
                record.auth_data = Map::new();
                self.storage.userversion_backup.insert(&key, &record)?;
            }
            self.remove_keys(user_id, number, Scope::All)?;
        }
        self.storage.flush().await?;
        Ok(())
    }

    /// Deletes every backup of the user and their keys (the account is deactivated: no one
    /// can read them any more, and they are the user's data).
    pub(crate) fn delete_all(&self, user_id: &UserId) -> Result<(), Error> {
        let _guard = self.lock();
        let (from, to) = ((user_id.to_string(), 0), (user_id.to_string(), u64::MAX));
        let versions: Vec<u64> = self
            .storage
            .userversion_backup
            .range(&from, &to)
            .map(|entry| entry.map(|((_, version), _)| version))
            .collect::<Result<_, _>>()?;
        for version in versions {
            let key = (user_id.to_string(), version);
            if let Some(mut record) = self.storage.userversion_backup.get(&key)?
                && !record.deleted
            {
                record.deleted = true;
                record.etag += 1;
                record.auth_data = Map::new();
                self.storage.userversion_backup.insert(&key, &record)?;
            }
            self.remove_keys(user_id, version, Scope::All)?;
        }
        Ok(())
    }

    /// Stores keys in the current backup, each kept only if better than the one stored
    /// (see [`better`]). Nothing is written unless every key can be.
    pub(crate) async fn put_keys(
        &self,
        user_id: &UserId,
        version: &str,
        keys: RoomsKeys,
    ) -> Result<BackupState, Error> {
        let state = {
            let _guard = self.lock();
            let (number, mut record) = self.writable(user_id, version)?;
            let user = user_id.to_string();
            let version_key = number.to_string();
            let mut batch = Batch::new();
            let mut changed = false;
            for (room_id, sessions) in keys {
                for (session_id, key) in sessions {
                    let row = (
                        user.clone(),
                        version_key.clone(),
                        room_id.clone(),
                        session_id,
                    );
                    match self.storage.backupsession_key.get(&row)? {
                        Some(old) if !better(&key, &old) => continue,
                        Some(_) => {}
                        None => record.count += 1,
                    }
                    self.storage
                        .backupsession_key
                        .batch_insert(&mut batch, &row, &key)?;
                    changed = true;
                }
            }
            if record.count > MAX_KEYS_PER_BACKUP {
                return Err(Error::new(
                    ErrorKind::TooLarge,
                    format!("A backup holds at most {MAX_KEYS_PER_BACKUP} keys"),
                ));
            }
            if changed {
                record.etag += 1;
                self.storage.userversion_backup.batch_insert(
                    &mut batch,
                    &(user, number),
                    &record,
                )?;
                self.storage.apply(batch)?;
            }
            BackupState {
                count: record.count,
                etag: record.etag,
            }
        };
        self.storage.flush().await?;
        Ok(state)
    }

    /// The version keys may be written to: it exists and is the current one.
    fn writable(
        &self,
        user_id: &UserId,
        version: &str,
    ) -> Result<(u64, BackupVersionRecord), Error> {
        let (number, record) = self.existing(user_id, version)?;
        match self.current(user_id)? {
            Some((current, _)) if current == number => Ok((number, record)),
            current => {
                let mut fields = Map::new();
                if let Some((current, _)) = current {
                    fields.insert("current_version".into(), current.to_string().into());
                }
                Err(Error::new(
                    ErrorKind::WrongRoomKeysVersion,
                    "Keys may only be written to the current backup version",
                )
                .with_fields(fields))
            }
        }
    }

    /// The encoded prefix of a backup version's keys, `user 0xFF version 0xFF`, or of one
    /// room's, then `room 0xFF` (so a room's scan stops before a room whose ID begins with
    /// its own). A single session is read by its whole key, never by prefix: a session ID
    /// can begin another.
    fn prefix(user_id: &UserId, version: u64, room: Option<&str>) -> Vec<u8> {
        let mut prefix = pair_prefix(user_id.as_str());
        prefix.extend_from_slice(&pair_prefix(&version.to_string()));
        if let Some(room) = room {
            prefix.extend_from_slice(&pair_prefix(room));
        }
        prefix
    }

    /// One session's key in an existing backup, if it was backed up.
    pub(crate) fn get_key(
        &self,
        user_id: &UserId,
        version: &str,
        room_id: &str,
        session_id: &str,
    ) -> Result<BackedUpKey, Error> {
        let (number, _) = self.existing(user_id, version)?;
        let row = (
            user_id.to_string(),
            number.to_string(),
            room_id.to_owned(),
            session_id.to_owned(),
        );
        self.storage
            .backupsession_key
            .get(&row)?
            .ok_or_else(|| Error::not_found("No key for this session in the backup"))
    }

    /// Calls `visit` with each key in `scope` of an existing backup, a room's keys one after another: an answer can be written as the
    /// keys are read, without holding them all (a large backup is tens of megabytes).
    pub(crate) fn visit_keys(
        &self,
        user_id: &UserId,
        version: &str,
        scope: Scope<'_>,
        mut visit: impl FnMut(&str, &str, BackedUpKey),
    ) -> Result<(), Error> {
        let room = match scope {
            Scope::All => None,
            Scope::Room(room) => Some(room),
            Scope::Session(room, session) => {
                let key = self.get_key(user_id, version, room, session)?;
                visit(room, session, key);
                return Ok(());
            }
        };
        let (number, _) = self.existing(user_id, version)?;
        for entry in self
            .storage
            .backupsession_key
            .scan_prefix(&Self::prefix(user_id, number, room))
        {
            let ((_, _, room, session), key) = entry?;
            visit(&room, &session, key);
        }
        Ok(())
    }

    /// Deletes the keys in `scope` of an existing backup (current or not).
    pub(crate) async fn delete_keys(
        &self,
        user_id: &UserId,
        version: &str,
        scope: Scope<'_>,
    ) -> Result<BackupState, Error> {
        let state = {
            let _guard = self.lock();
            let (number, _) = self.existing(user_id, version)?;
            self.remove_keys(user_id, number, scope)?
        };
        self.storage.flush().await?;
        Ok(state)
    }

    /// Removes the keys in `scope`, in chunks, each applied with the version's new count
    /// and etag. Called with the write lock held.
    fn remove_keys(
        &self,
        user_id: &UserId,
        version: u64,
        scope: Scope<'_>,
    ) -> Result<BackupState, Error> {
        let user = user_id.to_string();
        let record_key = (user.clone(), version);
        let mut record = self
            .storage
            .userversion_backup
            .get(&record_key)?
            .ok_or_else(unknown_version)?;
        let room = match scope {
            Scope::All => None,
            Scope::Room(room) => Some(room),
            Scope::Session(room, session) => {
                let row = (
                    user,
                    version.to_string(),
                    room.to_owned(),
                    session.to_owned(),
                );
                if self.storage.backupsession_key.contains_key(&row)? {
                    self.remove_rows(&record_key, &mut record, &[row])?;
                }
                return Ok(BackupState {
                    count: record.count,
                    etag: record.etag,
                });
            }
        };
        // A chunk at a time, read afresh each round: a backup of many keys never sits
        // in memory whole.
        let prefix = Self::prefix(user_id, version, room);
        loop {
            let rows: Vec<_> = self
                .storage
                .backupsession_key
                .scan_prefix(&prefix)
                .take(REMOVE_CHUNK)
                .map(|entry| entry.map(|(row, _)| row))
                .collect::<Result<_, _>>()?;
            if rows.is_empty() {
                break;
            }
            self.remove_rows(&record_key, &mut record, &rows)?;
        }
        Ok(BackupState {
            count: record.count,
            etag: record.etag,
        })
    }

    /// Removes `rows` in one batch with the version's lowered count and a new etag.
    fn remove_rows(
        &self,
        record_key: &(String, u64),
        record: &mut BackupVersionRecord,
        rows: &[(String, String, String, String)],
    ) -> Result<(), Error> {
        let mut batch = Batch::new();
        for row in rows {
            self.storage.backupsession_key.batch_remove(&mut batch, row);
        }
        record.count = record.count.saturating_sub(rows.len() as u64);
        record.etag += 1;
        self.storage
            .userversion_backup
            .batch_insert(&mut batch, record_key, record)?;
        self.storage.apply(batch)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(verified: bool, index: u64, forwarded: u64) -> BackedUpKey {
        BackedUpKey {
            first_message_index: index,
            forwarded_count: forwarded,
            is_verified: verified,
            session_data: Map::new(),
        }
    }

    #[test]
    fn verified_beats_a_lower_index() {
        assert!(better(&key(true, 10, 5), &key(false, 0, 0)));
        assert!(!better(&key(false, 0, 0), &key(true, 10, 5)));
    }

    #[test]
    fn lower_index_then_fewer_forwards_win_and_ties_keep_the_stored_key() {
        assert!(better(&key(false, 1, 9), &key(false, 2, 0)));
        assert!(!better(&key(false, 3, 0), &key(false, 2, 9)));
        assert!(better(&key(false, 2, 0), &key(false, 2, 1)));
        assert!(!better(&key(false, 2, 1), &key(false, 2, 1)));
    }

    #[test]
    fn versions_are_plain_decimals() {
        assert_eq!(parse_version("12"), Some(12));
        assert_eq!(parse_version("012"), None);
        assert_eq!(parse_version("+1"), None);
        assert_eq!(parse_version(""), None);
    }

    #[tokio::test]
    async fn deactivation_deletes_every_backup_and_key() {
        let (_dir, storage) = crate::storage::testing::temporary();
        let storage = Arc::new(storage);
        let backups = KeyBackups::new(storage.clone());
        let alice = <&UserId>::try_from("@alice:localhost").expect("user");
        let bob = <&UserId>::try_from("@bob:localhost").expect("user");
        for user in [alice, bob] {
            for _ in 0..2 {
                let version = backups
                    .create(
                        user,
                        "m.megolm_backup.v1.curve25519-aes-sha2".into(),
                        Map::new(),
                    )
                    .await
                    .expect("create");
                let keys = RoomsKeys::from([(
                    "!room:localhost".to_owned(),
                    BTreeMap::from([("s".to_owned(), key(false, 0, 0))]),
                )]);
                backups.put_keys(user, &version, keys).await.expect("put");
            }
        }
        backups.delete_all(alice).expect("delete all");
        assert!(backups.current(alice).expect("current").is_none());
        let rows = |user: &UserId| {
            storage
                .backupsession_key
                .scan_prefix(&pair_prefix(user.as_str()))
                .count()
        };
        assert_eq!(rows(alice), 0);
        assert_eq!(rows(bob), 2);
        assert_eq!(
            backups.current(bob).expect("current").map(|(v, _)| v),
            Some(2)
        );
    }

    /// IDs that begin other IDs (a session `abc` and `abcd`, a room `!a:x` and `!a:x.y`)
    /// are still told apart when reading and deleting.
    #[tokio::test]
    async fn ids_that_begin_others_stay_apart() {
        let (_dir, storage) = crate::storage::testing::temporary();
        let backups = KeyBackups::new(Arc::new(storage));
        let alice = <&UserId>::try_from("@alice:localhost").expect("user");
        let version = backups
            .create(
                alice,
                "m.megolm_backup.v1.curve25519-aes-sha2".into(),
                Map::new(),
            )
            .await
            .expect("create");
        let sessions = || {
            BTreeMap::from([
                ("abc".to_owned(), key(false, 0, 0)),
                ("abcd".to_owned(), key(false, 0, 0)),
            ])
        };
        let keys = RoomsKeys::from([
            ("!a:x".to_owned(), sessions()),
            ("!a:x.y".to_owned(), sessions()),
        ]);
        assert_eq!(
            backups
                .put_keys(alice, &version, keys)
                .await
                .expect("put")
                .count,
            4
        );
        let visited = |scope| {
            let mut seen = Vec::new();
            backups
                .visit_keys(alice, &version, scope, |room, session, _| {
                    seen.push(format!("{room}/{session}"));
                })
                .map(|()| seen)
        };
        assert_eq!(
            visited(Scope::Room("!a:x")).expect("room"),
            ["!a:x/abc", "!a:x/abcd"]
        );
        assert_eq!(
            visited(Scope::Session("!a:x", "abc")).expect("session"),
            ["!a:x/abc"]
        );
        let state = backups
            .delete_keys(alice, &version, Scope::Session("!a:x", "abc"))
            .await
            .expect("delete session");
        assert_eq!(state.count, 3);
        let state = backups
            .delete_keys(alice, &version, Scope::Room("!a:x"))
            .await
            .expect("delete room");
        assert_eq!(state.count, 2);
        assert_eq!(
            visited(Scope::All).expect("all"),
            ["!a:x.y/abc", "!a:x.y/abcd"]
        );
    }
}
