//! Storage: the only module that knows sled.
//!
//! The rest of Hearth sees typed trees ([`Tree`]) whose keys are encoded so that byte order is
//! the order that matters (big-endian integers), a schema version with numbered migrations,
//! and a lock that keeps a second process out of the data directory. Trees are named
//! `<key>_<value>`, with the key layout in a comment, so the on-disk shape reads off this file.
//!
//! It imports nothing else of Hearth's: what the rows hold is plain data in [`records`]
//! (each service re-exports its own and gives them behaviour); [`snapshots`] stores room
//! states as deltas on short IDs; [`stream`] hands out the global stream positions in order;
//! [`files`] writes files atomically; `convert` opens the database in its on-disk format
//! (zstd-compressed pages), converting one an older Hearth wrote; [`memory`] hands freed
//! memory back to the system after large batches; `export` writes the whole database to one
//! file and reads it back (backups), with every write held meanwhile at the `gate`;
//! `testing` opens temporary databases for unit tests.

mod batch;
mod codec;
mod compact;
mod convert;
mod export;
pub(crate) mod files;
mod flush;
mod gate;
mod lock;
mod members;
pub(crate) mod memory;
mod migrations;
pub(crate) mod records;
pub(crate) mod snapshots;
pub(crate) mod stream;
#[cfg(test)]
pub(crate) mod testing;
mod tree;

use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

pub(crate) use batch::Batch;
pub(crate) use codec::{Json, KeyCodec, pair_prefix};
pub(crate) use compact::{user_room_short, user_room_short_if_any};
pub(crate) use export::{Exported, import};
pub(crate) use members::JoinedSummary;
#[cfg(test)]
pub(crate) use migrations::SCHEMA_VERSION;
pub(crate) use tree::Tree;

use records::{
    AccountDataRecord, AccountRecord, AliasRecord, BackedUpKey, BackupVersionRecord,
    DehydratedRecord, DestinationState, DeviceRecord, EventMeta, FallbackKeyRecord,
    KeysChangedRecord, MediaRecord, MembershipRecord, PendingTxn, PushItem, QueueItem,
    ReceiptRecord, RegistrationTokenRecord, RoomRecord, ServerKeys, SessionRecord, SnapshotRecord,
};
use records::{DeviceChangeRecord, RemoteDeviceList};

/// A storage failure. Shown in full to the operator at start-up; a client only ever sees
/// `M_UNKNOWN` (see `error::Error::from`).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Sled(#[from] sled::Error),
    #[error("a stored value is corrupt: {0}")]
    Corrupt(String),
    #[error(
        "the data directory {path} is in use by another Hearth process{}; stop it first (for example `systemctl stop hearth`)",
        pid.as_ref().map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    InUse { path: PathBuf, pid: Option<String> },
    #[error(
        "the database has schema version {found}, but this Hearth knows only up to {supported}: it was written by a newer Hearth; run that version, or restore a backup"
    )]
    TooNew { found: u64, supported: u64 },
    #[error("migration {version} ({description}) failed: {reason}")]
    Migration {
        version: u64,
        description: &'static str,
        reason: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub(crate) type StorageResult<T> = Result<T, StorageError>;

/// A state entry's `(type, state key)`.
pub(crate) type StateKey = (String, String);

/// A state entry and the event that holds it: `((type, state key), event ID)`.
pub(crate) type StateEntry = (StateKey, String);

/// One tree's logical size (see [`Storage::footprint_by_tree`]).
#[derive(Debug, Default, Clone)]
pub struct TreeFootprint {
    pub name: String,
    pub entries: u64,
    pub key_bytes: u64,
    pub value_bytes: u64,
}

/// The open database and its typed trees.
pub struct Storage {
    db: sled::Db,
    /// `key name` → value: `schema_version` (u64).
    meta: sled::Tree,
    /// `@user:server` → [`AccountRecord`] (JSON).
    pub(crate) userid_account: Tree<String, Json<AccountRecord>>,
    /// SHA-256 of an access token (32 bytes) → [`SessionRecord`]: who the token is.
    pub(crate) tokenhash_session: Tree<[u8; 32], Json<SessionRecord>>,
    /// `@user:server` 0xFF `DEVICEID` → [`DeviceRecord`].
    pub(crate) userdevice_device: Tree<(String, String), Json<DeviceRecord>>,
    /// registration token → [`RegistrationTokenRecord`].
    pub(crate) token_registration: Tree<String, Json<RegistrationTokenRecord>>,
    /// event ID → the event's canonical JSON, as received or sent.
    pub eventid_pdu: Tree<String, String>,
    /// event ID → [`EventMeta`]: its room and stream position.
    pub eventid_meta: Tree<String, Json<EventMeta>>,
    /// room ID → [`RoomRecord`]: version and forward extremities.
    pub roomid_room: Tree<String, Json<RoomRecord>>,
    /// room 0xFF event type 0xFF state key → event ID: the room's current state.
    pub(crate) roomstate_eventid: Tree<(String, String, String), String>,
    /// room 0xFF stream position (u64) → event ID: the room's timeline, in order.
    pub(crate) roomstream_eventid: Tree<(String, u64), String>,
    /// user 0xFF room → [`MembershipRecord`]: the user's membership and its stream position.
    pub(crate) userroom_membership: Tree<(String, String), Json<MembershipRecord>>,
    /// user 0xFF device 0xFF transaction ID → event ID: a resent message is not sent twice.
    pub(crate) txn_eventid: Tree<(String, String, String), String>,
    /// user 0xFF scope (room ID, or empty for global) 0xFF type → [`AccountDataRecord`].
    pub(crate) useraccountdata_data: Tree<(String, String, String), Json<AccountDataRecord>>,
    /// user → profile fields (`displayname`, `avatar_url`).
    pub(crate) userid_profile: Tree<String, Json<serde_json::Map<String, serde_json::Value>>>,
    /// user 0xFF filter ID → the filter's JSON.
    pub(crate) userfilter_filter: Tree<(String, String), String>,
    /// room 0xFF receipt type 0xFF user NUL thread → [`ReceiptRecord`].
    pub(crate) roomreceipt_record: Tree<(String, String, String), Json<ReceiptRecord>>,
    /// room alias → [`AliasRecord`].
    pub(crate) alias_room: Tree<String, Json<AliasRecord>>,
    /// room ID → 1: the rooms listed in the public room directory.
    pub(crate) roomid_published: Tree<String, u64>,
    /// room ID → the administrator who blocked it: nobody of ours joins, knocks on or is
    /// invited to it, and no other server joins it through us.
    pub(crate) roomid_blocked: Tree<String, String>,
    /// OpenID token → `{user_id, expires_at}`, for third parties to check (federation).
    pub(crate) openid_user: Tree<String, Json<serde_json::Value>>,
    /// user → the user's pushers, as clients set them.
    pub(crate) userid_pushers: Tree<String, Json<Vec<serde_json::Value>>>,
    /// parent event 0xFF stream position → child event ID: events that relate to another
    /// (`m.relates_to`: threads, annotations, edits, references).
    pub(crate) parent_child: Tree<(String, u64), String>,
    /// room 0xFF thread root → stream position of the thread's latest event.
    pub(crate) roomthread_latest: Tree<(String, String), u64>,
    /// room 0xFF type 0xFF state key 0xFF stream position → event ID: every value a state
    /// entry has had, so the room's state as of any position can be read back.
    pub(crate) roomstate_history: Tree<(String, String, String, u64), String>,
    /// room 0xFF stream position → the `(type, state key)`s that changed there: the state
    /// changes between two positions without reading the events between them.
    pub(crate) roomstream_state: Tree<(String, u64), Json<Vec<StateKey>>>,
    /// user 0xFF stream position → a notification (push rules said `notify`), newest last:
    /// flags, time and actions in about 10 bytes ([`compact`]); the event is the one at
    /// that position (`stream_room`, then `roomstream_eventid`).
    pub(crate) usernotify_record: Tree<(String, u64), compact::NotificationCodec>,
    /// user-and-room short ID (u64, [`userroom_short`](Self::userroom_short)) and stream
    /// position (u64) → `(highlight, thread)` in one byte (and the thread root, if any): a
    /// user's unread notifications per room, for the counts. 17 bytes a row, where user and
    /// room IDs in the key took 70.
    pub(crate) pairstream_unread: Tree<(u64, u64), compact::UnreadCodec>,
    /// user 0xFF room → the pair's short ID (see [`user_room_short`]).
    pub(crate) userroom_short: Tree<(String, String), u64>,
    /// user 0xFF room 0xFF thread (`""` unthreaded, `main`, or a thread root) → the stream
    /// position the user has read up to there (receipts, or sending an event).
    pub(crate) userroom_read: Tree<(String, String, String), u64>,
    /// stream position → the room something happened in there (an event or a receipt):
    /// an incremental `/sync` visits only the rooms that changed.
    pub(crate) stream_room: Tree<u64, String>,
    /// user 0xFF stream position → `(scope, type)` of the account data changed there (only
    /// each key's latest change is kept).
    pub(crate) userstream_accountdata: Tree<(String, u64), Json<(String, String)>>,
    /// `(type, state key)` → its short ID, and back: snapshots hold numbers, not strings.
    pub(crate) statekey_short: Tree<(String, String), u64>,
    pub(crate) short_statekey: Tree<u64, Json<(String, String)>>,
    /// event ID → its short ID, and back.
    pub(crate) eventid_short: Tree<String, u64>,
    pub(crate) short_eventid: Tree<u64, String>,
    /// snapshot ID → a state snapshot (a delta on a parent, or a full copy).
    pub(crate) snapshot_data: Tree<u64, Json<SnapshotRecord>>,
    /// event ID → the snapshot of the room's state before it (what it was authorized
    /// against).
    pub(crate) eventid_statebefore: Tree<String, u64>,
    /// parent event 0xFF relation type 0xFF stream position → `(child, sender)`: what
    /// relates to an event by type, for bundled aggregations without reading reactions.
    pub(crate) parentrel_child: Tree<(String, String, u64), Json<(String, String)>>,
    /// room 0xFF user → their membership (`join`, `invite`, …): a room's members without
    /// reading their events. Written only in a [`Batch`] given to [`Storage::apply`], which
    /// keeps [`Storage::joined_summary`] in step.
    pub(crate) roomuser_membership: Tree<(String, String), String>,
    /// user 0xFF room → the stripped state another server sent with an invite to a room we
    /// do not hold.
    pub(crate) userroom_invitestate: Tree<(String, String), Json<Vec<serde_json::Value>>>,
    /// server name → [`ServerKeys`]: another server's signing keys, as last fetched and
    /// verified (directly or through a notary).
    pub(crate) servername_keys: Tree<String, Json<ServerKeys>>,
    /// destination server 0xFF sequence number → [`QueueItem`]: what waits to be sent to
    /// that server (an event ID or an EDU), in order.
    pub(crate) destination_queue: Tree<(String, u64), Json<QueueItem>>,
    /// pusher (user NUL app ID NUL pushkey) 0xFF stream position → [`PushItem`]: what waits
    /// to go to that pusher's push gateway (a notification, or a badge update), in order.
    /// Written by `federation::push` only.
    pub(crate) pusherstream_push: Tree<(String, u64), Json<PushItem>>,
    /// destination server → [`PendingTxn`]: the transaction being sent there, so a retry,
    /// even after a restart, sends the same ID with the same content.
    pub(crate) destination_txn: Tree<String, Json<PendingTxn>>,
    /// destination server → the first sequence number queued for it (written once; only
    /// the key is read): every server that may have something queued, read at start-up.
    pub(crate) destination_known: Tree<String, u64>,
    /// destination server 0xFF room 0xFF (empty, or a user ID) → [`QueueItem`]: the backlog
    /// of a server in catch-up, collapsed to the room's newest event (empty third part) and
    /// each of our users' newest read receipt there; overwritten as newer ones come, so a
    /// dead server costs disk per room, not per event.
    pub(crate) destination_catchup: Tree<(String, String, String), Json<QueueItem>>,
    /// destination server → [`DestinationState`]: servers failing to take transactions.
    pub(crate) destination_state: Tree<String, Json<DestinationState>>,
    /// user 0xFF device → the device's signed identity keys (`/keys/upload`), as uploaded
    /// (written by `users::keys`).
    pub(crate) userdevice_keys: Tree<(String, String), Json<serde_json::Value>>,
    /// user 0xFF device 0xFF `algorithm:key_id` → an unclaimed one-time key; a claim removes
    /// it, so each is handed out once.
    pub(crate) userdevice_onetimekey: Tree<(String, String, String), Json<serde_json::Value>>,
    /// user 0xFF device 0xFF algorithm → [`FallbackKeyRecord`]: the device's fallback key
    /// for that algorithm, handed out when its one-time keys run out.
    pub(crate) userdevice_fallbackkey: Tree<(String, String, String), Json<FallbackKeyRecord>>,
    /// user 0xFF device 0xFF stream position → a to-device event (`{sender, type,
    /// content}`) waiting in the device's inbox until a `/sync` acknowledges it.
    pub(crate) userdevice_todevice: Tree<(String, String, u64), Json<serde_json::Value>>,
    /// sender 0xFF device 0xFF transaction ID, or server 0xFF (empty) 0xFF sender NUL
    /// message ID → the stream position the to-device message was stored at: a resent
    /// request (or a retried transaction) is stored once. The newest 1000 of each prefix.
    pub(crate) todevice_txn: Tree<(String, String, String), u64>,
    /// stream position → `(server, m.direct_to_device EDU)`s for other servers' users,
    /// written with the messages and removed by the outbound follower once queued.
    pub(crate) stream_todeviceout: Tree<u64, Json<Vec<(String, serde_json::Value)>>>,
    /// user 0xFF backup version → [`BackupVersionRecord`]: the user's key backups
    /// (server-side key backup), deleted ones kept as tombstones.
    pub(crate) userversion_backup: Tree<(String, u64), Json<BackupVersionRecord>>,
    /// user 0xFF backup version (decimal) 0xFF room 0xFF session ID → [`BackedUpKey`]: the
    /// keys of each backup, a room's adjacent.
    pub(crate) backupsession_key: Tree<(String, String, String, String), Json<BackedUpKey>>,
    /// user 0xFF usage (`master`, `self_signing`, `user_signing`) → the user's cross-signing
    /// key of that usage with the signatures it was uploaded with: our users' from
    /// `/keys/device_signing/upload`, other servers' users' (never `user_signing`) as last
    /// heard from their server, checked. Written by `users::cross_signing`.
    pub(crate) usercrosssigning_key: Tree<(String, String), Json<serde_json::Value>>,
    /// signed user 0xFF signed key (a device ID, or a master key's unpadded-base64 public
    /// key) 0xFF signer 0xFF signer's key ID (`ed25519:…`) → a signature uploaded through
    /// `/keys/signatures/upload`, merged into `/keys/query` answers. Written by
    /// `users::cross_signing`.
    pub(crate) keysignature_signature: Tree<(String, String, String, String), String>,
    /// stream position → [`KeysChangedRecord`]: one of our users' cross-signing keys or
    /// signatures changed there. Written by `users::cross_signing`; read by the outbound
    /// follower (`m.signing_key_update`) and, later, device lists.
    pub(crate) stream_keyschanged: Tree<u64, Json<KeysChangedRecord>>,
    /// user → [`DehydratedRecord`]: the user's dehydrated device (MSC3814). Written by
    /// `users::dehydrated`.
    pub(crate) userid_dehydrated: Tree<String, Json<DehydratedRecord>>,
    /// stream position → [`DeviceChangeRecord`]: a user's device list changed there (one
    /// of ours, or another server's user we share a room with); only each user's newest
    /// change is kept (written by `users::device_lists`).
    pub(crate) stream_devicechange: Tree<u64, Json<DeviceChangeRecord>>,
    /// user → the stream position of the user's newest device-list change: the
    /// `stream_id` other servers see (written by `users::device_lists`).
    pub(crate) userid_devicestream: Tree<String, u64>,
    /// another server's user → [`RemoteDeviceList`]: their devices' keys as last learned,
    /// so `/keys/query` is answered here (written by `federation::device_lists`).
    pub(crate) userid_remotedevices: Tree<String, Json<RemoteDeviceList>>,
    /// server name 0xFF media ID → [`MediaRecord`]: our media and the cached media of other
    /// servers (written by `media`; the bytes are files, see `media::files`).
    pub(crate) mediaid_record: Tree<(String, String), Json<MediaRecord>>,
    /// local user 0xFF media ID → size in bytes (0 while an upload ID waits): each user's
    /// uploads, for quotas, usage and deleting them (written by `media`).
    pub(crate) usermedia_size: Tree<(String, String), u64>,
    /// SHA-256 (hex) → how many [`MediaRecord`]s hold that content: the file is removed when
    /// the last one goes (written by `media`).
    pub(crate) sha256_refs: Tree<String, u64>,
    /// Serializes read-then-write sequences that span trees (a login replacing a device's
    /// token while a logout removes it): take it around the read and the [`Batch`].
    write_lock: std::sync::Mutex<()>,
    /// Every write passes it shared; [`Storage::frozen`] closes it for a backup.
    gate: gate::Gate,
    /// Rooms' joined members summed up (see [`members`]).
    members: members::MembersCache,
    /// Serializes the batches that write memberships, from reading what they change to
    /// updating [`members`] (see [`Storage::apply`]).
    membership_writes: std::sync::Mutex<()>,
    /// Held for as long as the database is open; dropped last.
    _lock: lock::DataDirLock,
    /// sled's log file, opened again for [`Storage::flush`]'s `fdatasync` (see
    /// [`flush_to_disk`]).
    log_file: std::sync::Arc<std::fs::File>,
    /// Concurrent [`Storage::flush`] calls share one flush (group commit).
    flushes: flush::FlushGroup,
}

/// Rounds of [`Storage::collect_garbage`]: each frees up to a few hundred deferred pages.
const GARBAGE_ROUNDS: usize = 4096;

/// Creates `data_dir` if needed, private to the server's user (the database holds password
/// hashes), and takes its lock.
fn lock_data_dir(data_dir: &Path) -> StorageResult<lock::DataDirLock> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|source| StorageError::Io {
            path: data_dir.to_owned(),
            source,
        })?;
    lock::DataDirLock::acquire(data_dir)
}

impl Storage {
    /// Opens (or creates) the database in `data_dir`, taking the directory's lock and running
    /// any migrations the database needs.
    pub fn open(data_dir: &Path, cache_capacity_bytes: u64) -> StorageResult<Storage> {
        let lock = lock_data_dir(data_dir)?;
        let db = convert::open(&data_dir.join("db"), cache_capacity_bytes)?;
        // sled creates its directory and files (`db/`, `db/conf`, `db/db`, `db/blobs/`) but
        // never syncs a directory, nor the settings file it writes once: until they are
        // synced, a power cut can take the whole database away however often its log was
        // flushed, or leave a half-written `conf` that sled then refuses to open
        // (tests/power_cut.rs found both).
        let conf = data_dir.join("db").join("conf");
        std::fs::File::open(&conf)
            .and_then(|file| file.sync_all())
            .map_err(|source| StorageError::Io { path: conf, source })?;
        for dir in [
            data_dir.join("db").join("blobs"),
            data_dir.join("db"),
            data_dir.to_owned(),
        ] {
            files::sync_dir(&dir).map_err(|source| StorageError::Io { path: dir, source })?;
        }
        let log_path = data_dir.join("db").join("db");
        let log_file = std::fs::File::open(&log_path).map_err(|source| StorageError::Io {
            path: log_path,
            source,
        })?;
        let meta = db.open_tree("meta")?;
        let gate = gate::Gate::default();
        let storage = Storage {
            userid_account: Tree::open(&db, &gate, "userid_account")?,
            tokenhash_session: Tree::open(&db, &gate, "tokenhash_session")?,
            userdevice_device: Tree::open(&db, &gate, "userdevice_device")?,
            token_registration: Tree::open(&db, &gate, "token_registration")?,
            eventid_pdu: Tree::open(&db, &gate, "eventid_pdu")?,
            eventid_meta: Tree::open(&db, &gate, "eventid_meta")?,
            roomid_room: Tree::open(&db, &gate, "roomid_room")?,
            roomstate_eventid: Tree::open(&db, &gate, "roomstate_eventid")?,
            roomstream_eventid: Tree::open(&db, &gate, "roomstream_eventid")?,
            userroom_membership: Tree::open(&db, &gate, "userroom_membership")?,
            txn_eventid: Tree::open(&db, &gate, "txn_eventid")?,
            useraccountdata_data: Tree::open(&db, &gate, "useraccountdata_data")?,
            userid_profile: Tree::open(&db, &gate, "userid_profile")?,
            userfilter_filter: Tree::open(&db, &gate, "userfilter_filter")?,
            roomreceipt_record: Tree::open(&db, &gate, "roomreceipt_record")?,
            alias_room: Tree::open(&db, &gate, "alias_room")?,
            roomid_published: Tree::open(&db, &gate, "roomid_published")?,
            roomid_blocked: Tree::open(&db, &gate, "roomid_blocked")?,
            openid_user: Tree::open(&db, &gate, "openid_user")?,
            userid_pushers: Tree::open(&db, &gate, "userid_pushers")?,
            parent_child: Tree::open(&db, &gate, "parent_child")?,
            roomthread_latest: Tree::open(&db, &gate, "roomthread_latest")?,
            roomstate_history: Tree::open(&db, &gate, "roomstate_history")?,
            roomstream_state: Tree::open(&db, &gate, "roomstream_state")?,
            usernotify_record: Tree::open(&db, &gate, "usernotify_record")?,
            pairstream_unread: Tree::open(&db, &gate, "pairstream_unread")?,
            userroom_short: Tree::open(&db, &gate, "userroom_short")?,
            userroom_read: Tree::open(&db, &gate, "userroom_read")?,
            stream_room: Tree::open(&db, &gate, "stream_room")?,
            userstream_accountdata: Tree::open(&db, &gate, "userstream_accountdata")?,
            statekey_short: Tree::open(&db, &gate, "statekey_short")?,
            short_statekey: Tree::open(&db, &gate, "short_statekey")?,
            eventid_short: Tree::open(&db, &gate, "eventid_short")?,
            short_eventid: Tree::open(&db, &gate, "short_eventid")?,
            snapshot_data: Tree::open(&db, &gate, "snapshot_data")?,
            eventid_statebefore: Tree::open(&db, &gate, "eventid_statebefore")?,
            parentrel_child: Tree::open(&db, &gate, "parentrel_child")?,
            roomuser_membership: Tree::open(&db, &gate, "roomuser_membership")?,
            userroom_invitestate: Tree::open(&db, &gate, "userroom_invitestate")?,
            servername_keys: Tree::open(&db, &gate, "servername_keys")?,
            destination_queue: Tree::open(&db, &gate, "destination_queue")?,
            pusherstream_push: Tree::open(&db, &gate, "pusherstream_push")?,
            destination_txn: Tree::open(&db, &gate, "destination_txn")?,
            destination_known: Tree::open(&db, &gate, "destination_known")?,
            destination_catchup: Tree::open(&db, &gate, "destination_catchup")?,
            destination_state: Tree::open(&db, &gate, "destination_state")?,
            userdevice_keys: Tree::open(&db, &gate, "userdevice_keys")?,
            userdevice_onetimekey: Tree::open(&db, &gate, "userdevice_onetimekey")?,
            userdevice_fallbackkey: Tree::open(&db, &gate, "userdevice_fallbackkey")?,
            userdevice_todevice: Tree::open(&db, &gate, "userdevice_todevice")?,
            todevice_txn: Tree::open(&db, &gate, "todevice_txn")?,
            stream_todeviceout: Tree::open(&db, &gate, "stream_todeviceout")?,
            userversion_backup: Tree::open(&db, &gate, "userversion_backup")?,
            backupsession_key: Tree::open(&db, &gate, "backupsession_key")?,
            usercrosssigning_key: Tree::open(&db, &gate, "usercrosssigning_key")?,
            keysignature_signature: Tree::open(&db, &gate, "keysignature_signature")?,
            stream_keyschanged: Tree::open(&db, &gate, "stream_keyschanged")?,
            userid_dehydrated: Tree::open(&db, &gate, "userid_dehydrated")?,
            stream_devicechange: Tree::open(&db, &gate, "stream_devicechange")?,
            userid_devicestream: Tree::open(&db, &gate, "userid_devicestream")?,
            userid_remotedevices: Tree::open(&db, &gate, "userid_remotedevices")?,
            mediaid_record: Tree::open(&db, &gate, "mediaid_record")?,
            usermedia_size: Tree::open(&db, &gate, "usermedia_size")?,
            sha256_refs: Tree::open(&db, &gate, "sha256_refs")?,
            meta,
            db,
            gate,
            write_lock: std::sync::Mutex::new(()),
            members: members::MembersCache::default(),
            membership_writes: std::sync::Mutex::new(()),
            _lock: lock,
            log_file: std::sync::Arc::new(log_file),
            flushes: flush::FlushGroup::default(),
        };
        migrations::run(&storage, migrations::MIGRATIONS)?;
        Ok(storage)
    }

    /// The schema version recorded in the database (0 for a database never migrated).
    pub(crate) fn schema_version(&self) -> StorageResult<u64> {
        self.meta
            .get(b"schema_version")?
            .map(|bytes| <u64 as KeyCodec>::decode(&bytes))
            .transpose()
            .map(|version| version.unwrap_or(0))
    }

    /// A new number from the counter `name` (short IDs, snapshot IDs): never handed out twice,
    /// though a crash may skip some.
    pub(crate) fn next_id(&self, name: &str) -> StorageResult<u64> {
        let key = format!("counter.{name}");
        let _writing = self.gate.pass();
        let next = self.meta.update_and_fetch(key.as_bytes(), |current| {
            let current = current
                .and_then(|bytes| <u64 as KeyCodec>::decode(bytes).ok())
                .unwrap_or(0);
            Some((current + 1).encode())
        })?;
        next.map(|bytes| <u64 as KeyCodec>::decode(&bytes))
            .transpose()
            .map(|id| id.unwrap_or(0))
    }

    /// The value of the counter `name` (see [`Storage::next_id`]), or `None` if it was never
    /// set: a task that remembers how far it got tells a first start from position 0.
    pub(crate) fn counter(&self, name: &str) -> StorageResult<Option<u64>> {
        let key = format!("counter.{name}");
        self.meta
            .get(key.as_bytes())?
            .map(|bytes| <u64 as KeyCodec>::decode(&bytes))
            .transpose()
    }

    /// Sets the counter `name` in `batch`, so it moves together with the batch's other
    /// writes (a position handled and what handling it queued).
    pub(crate) fn batch_set_counter(&self, batch: &mut Batch, name: &str, value: u64) {
        let key = format!("counter.{name}");
        batch.push(&self.meta, key.into_bytes(), Some(value.encode()));
    }

    /// The next position of the global stream that orders everything a client can receive.
    pub(crate) fn next_stream_position(&self) -> StorageResult<u64> {
        let _writing = self.gate.pass();
        let next = self.meta.update_and_fetch(b"stream_position", |current| {
            let current = current
                .and_then(|bytes| <u64 as KeyCodec>::decode(bytes).ok())
                .unwrap_or(0);
            Some((current + 1).encode())
        })?;
        next.map(|bytes| <u64 as KeyCodec>::decode(&bytes))
            .transpose()
            .map(|position| position.unwrap_or(0))
    }

    /// The last position handed out (0 before anything happened).
    /// Skips `count` positions of the global stream and returns the first of them: a block
    /// no live event will take (a room joined over federation keeps one for its history).
    pub(crate) fn reserve_stream_positions(&self, count: u64) -> StorageResult<u64> {
        let _writing = self.gate.pass();
        let next = self.meta.update_and_fetch(b"stream_position", |current| {
            let current = current
                .and_then(|bytes| <u64 as KeyCodec>::decode(bytes).ok())
                .unwrap_or(0);
            Some(current.saturating_add(count).encode())
        })?;
        let last = next
            .map(|bytes| <u64 as KeyCodec>::decode(&bytes))
            .transpose()?
            .unwrap_or(0);
        Ok(last.saturating_sub(count) + 1)
    }

    pub(crate) fn current_stream_position(&self) -> StorageResult<u64> {
        self.meta
            .get(b"stream_position")?
            .map(|bytes| <u64 as KeyCodec>::decode(&bytes))
            .transpose()
            .map(|position| position.unwrap_or(0))
    }

    fn set_schema_version(&self, version: u64) -> StorageResult<()> {
        let _writing = self.gate.pass();
        self.meta.insert(b"schema_version", version.encode())?;
        Ok(())
    }

    /// Held while reading records and writing a batch that depends on what was read.
    pub(crate) fn exclusive(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write_lock
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Applies a [`Batch`]: all of its writes, or none.
    pub(crate) fn apply(&self, batch: Batch) -> StorageResult<()> {
        if batch.writes_of(&self.roomuser_membership.name()).is_empty() {
            let _writing = self.gate.pass();
            return batch.apply();
        }
        self.apply_with_memberships(batch)
    }

    /// A number that changes whenever a write touches `room`'s memberships: what was read
    /// from them, taken with the generation read before, holds while it is unchanged.
    pub(crate) fn membership_generation(&self, room: &str) -> u64 {
        self.members.get(room).1
    }

    /// How many users are joined to `room`, their servers, and which are ours: from memory
    /// once read (writes to the room's memberships update it, see [`members`]).
    pub(crate) fn joined_summary(
        &self,
        room: &str,
    ) -> StorageResult<std::sync::Arc<JoinedSummary>> {
        let (cached, generation) = self.members.get(room);
        if let Some(summary) = cached {
            return Ok(summary);
        }
        let mut summary = JoinedSummary::default();
        for entry in self.roomuser_membership.scan_prefix(&pair_prefix(room)) {
            let ((_, user), membership) = entry?;
            if membership != "join" {
                continue;
            }
            let local = self.userid_account.contains_key(&user)?;
            summary.add(&user, local);
        }
        let summary = std::sync::Arc::new(summary);
        self.members.keep(room, generation, summary.clone());
        Ok(summary)
    }

    /// Writes everything buffered to disk. Acknowledged writes call this (grouped) before
    /// answering; shutdown calls it last.
    pub(crate) async fn flush(&self) -> StorageResult<()> {
        // Not sled's `flush_async`: in sled 0.34, concurrent `flush_async` calls and batches
        // can deadlock every thread of the process (spacejam/sled#1308; seen here with a
        // dozen outbound senders). The blocking flush, on the blocking pool, does not.
        // Callers at the same time share one flush (see `flush`): the disk's slowest
        // operation, once per group of writers rather than once per writer.
        self.flushes
            .flush(async || {
                let (db, log_file) = (self.db.clone(), self.log_file.clone());
                let flushing = move || {
                    let flushed = flush_to_disk(&db, &log_file);
                    // This pool thread may now sit idle for long: see
                    // [`memory::hand_over_deferred`].
                    memory::hand_over_deferred();
                    flushed
                };
                match tokio::task::spawn_blocking(flushing).await {
                    Ok(flushed) => flushed,
                    Err(err) => Err(StorageError::Sled(sled::Error::Io(std::io::Error::other(
                        format!("the flush did not finish: {err}"),
                    )))),
                }
            })
            .await
    }

    /// How many grouped flushes ([`Storage::flush`]) have begun: for tests of which paths
    /// flush.
    #[cfg(test)]
    pub(crate) fn flushes_begun(&self) -> u64 {
        self.flushes.begun()
    }

    /// The blocking variant of [`Storage::flush`], for CLI commands.
    pub(crate) fn flush_blocking(&self) -> StorageResult<()> {
        flush_to_disk(&self.db, &self.log_file)
    }

    /// Frees the old versions of tree pages that writes replaced. The database defers
    /// freeing them until no reader can hold them, and then frees only a few at each later
    /// operation: after a large write (a room joined with 10,000 state events), tens of MB
    /// would stay allocated for a long time. Each pin-and-flush here advances that work.
    pub(crate) fn collect_garbage(&self) {
        let rounds = memory::collect_deferred(GARBAGE_ROUNDS);
        tracing::debug!(?rounds, "memory: deferred frees collected");
    }

    /// Bytes the database takes on disk.
    pub fn size_on_disk(&self) -> StorageResult<u64> {
        Ok(self.db.size_on_disk()?)
    }

    /// Every tree of the database by name, with its entries and the bytes of their keys and
    /// of their values: where the logical bytes go (the `workload` bench prints it; sled's
    /// own overhead is the difference from [`Storage::size_on_disk`]).
    pub fn footprint_by_tree(&self) -> StorageResult<Vec<TreeFootprint>> {
        let mut trees = Vec::new();
        for name in self.db.tree_names() {
            let tree = self.db.open_tree(&name)?;
            let mut footprint = TreeFootprint {
                name: String::from_utf8_lossy(&name).into_owned(),
                ..TreeFootprint::default()
            };
            for entry in tree.iter() {
                let (key, value) = entry?;
                footprint.entries += 1;
                footprint.key_bytes += key.len() as u64;
                footprint.value_bytes += value.len() as u64;
            }
            trees.push(footprint);
        }
        Ok(trees)
    }

    /// Entries and bytes (keys and values) of the outbound federation queues, all
    /// servers together: what a server that is down costs, for the `outbound_backlog`
    /// bench.
    pub fn outbound_footprint(&self) -> StorageResult<(u64, u64)> {
        let trees = [
            self.destination_queue.footprint()?,
            self.destination_txn.footprint()?,
            self.destination_known.footprint()?,
            self.destination_catchup.footprint()?,
            self.destination_state.footprint()?,
        ];
        Ok(trees
            .iter()
            .fold((0, 0), |(entries, bytes), (e, b)| (entries + e, bytes + b)))
    }
}

/// sled's flush, then an `fdatasync` of its log file, which makes the flush durable. On
/// Linux, sled 0.34 ends a flush with `sync_file_range`, which starts and waits for the
/// writes of the page cache but commits neither the file's new size (the log grows by
/// appending) nor the disk's write cache: a power cut a moment after a message was
/// acknowledged could lose it (tests/power_cut.rs showed 231 of 277 lost before this).
/// `fdatasync` through our own handle covers the same file, whichever descriptor wrote it.
fn flush_to_disk(db: &sled::Db, log_file: &std::fs::File) -> StorageResult<()> {
    db.flush()?;
    log_file
        .sync_data()
        .map_err(|err| StorageError::Sled(sled::Error::Io(err)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_database_is_at_the_current_schema() {
        let (_dir, storage) = crate::storage::testing::temporary();
        assert_eq!(storage.schema_version().expect("version"), SCHEMA_VERSION);
    }

    #[test]
    fn a_new_data_directory_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let _storage = Storage::open(&data, 1 << 20).expect("open");
        let mode = std::fs::metadata(&data)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn a_database_from_a_newer_hearth_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let storage = crate::storage::testing::open(dir.path());
            storage.set_schema_version(SCHEMA_VERSION + 1).expect("set");
            storage.flush_blocking().expect("flush");
        }
        let err = Storage::open(dir.path(), 1 << 20).err().expect("refused");
        assert!(matches!(err, StorageError::TooNew { found, .. } if found == SCHEMA_VERSION + 1));
        assert!(err.to_string().contains("newer Hearth"));
    }

    #[test]
    fn a_data_directory_written_uncompressed_by_an_older_hearth_opens_with_its_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            // As Hearth wrote it before issue 14: sled's defaults, no compression.
            let db = convert::open_as(&dir.path().join("db"), 1 << 20, convert::UNCOMPRESSED)
                .expect("old database");
            let meta = db.open_tree("meta").expect("meta");
            meta.insert(b"schema_version", SCHEMA_VERSION.encode())
                .expect("version");
            let pdus = db.open_tree("eventid_pdu").expect("tree");
            pdus.insert("$old:localhost", &b"{\"type\":\"m.room.message\"}"[..])
                .expect("insert");
            db.flush().expect("flush");
        }
        let storage = Storage::open(dir.path(), 1 << 20).expect("converted and opened");
        assert_eq!(storage.schema_version().expect("version"), SCHEMA_VERSION);
        assert_eq!(
            storage
                .eventid_pdu
                .get(&"$old:localhost".to_owned())
                .expect("get")
                .as_deref(),
            Some("{\"type\":\"m.room.message\"}")
        );
        let names: Vec<String> = storage
            .footprint_by_tree()
            .expect("footprint")
            .into_iter()
            .filter(|tree| tree.entries > 0)
            .map(|tree| tree.name)
            .collect();
        assert!(names.contains(&"eventid_pdu".to_owned()), "{names:?}");
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = crate::storage::testing::open(dir.path());
        let err = Storage::open(dir.path(), 1 << 20).err().expect("locked");
        assert!(matches!(err, StorageError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("in use by another Hearth process"));
    }

    #[test]
    fn the_lock_is_released_on_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(crate::storage::testing::open(dir.path()));
        Storage::open(dir.path(), 1 << 20).expect("open again");
    }
}
