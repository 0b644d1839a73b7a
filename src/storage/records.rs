//! The records stored in the trees, as plain data: what each row holds. They live here, not in
//! the services that write them, so that storage depends on nothing of ours; each service
//! re-exports the records it owns and gives them behaviour in its own `impl` blocks.

use std::collections::BTreeMap;

use ruma::OwnedEventId;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

// ---- account data

/// What is stored per user, scope (`""` for global, else a room ID) and type.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AccountDataRecord {
    /// The stream position of the last change, for `/sync`.
    pub(crate) stream: u64,
    pub content: Map<String, Value>,
}

// ---- accounts

/// What is stored per account in `userid_account`. Its `Debug` leaves the hash out.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct AccountRecord {
    /// Argon2id PHC string; empty once deactivated, so no password ever matches.
    pub(crate) password_hash: String,
    #[serde(default)]
    pub(crate) admin: bool,
    #[serde(default)]
    pub(crate) deactivated: bool,
    /// Locked by an administrator: every request but logout is refused until unlocked
    /// (`users::accounts::moderation`).
    #[serde(default)]
    pub(crate) locked: bool,
    /// Suspended by an administrator: the account may read and leave, not act
    /// (`users::accounts::moderation`).
    #[serde(default)]
    pub(crate) suspended: bool,
    /// Milliseconds since the Unix epoch.
    pub(crate) created_at_ms: u64,
}

/// A token in `token_registration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RegistrationTokenRecord {
    /// How many accounts it may make; `None` for no limit.
    pub(crate) uses_allowed: Option<u64>,
    /// How many it has made.
    pub(crate) completed: u64,
    /// Milliseconds since the epoch after which it is void; `None` for never.
    pub(crate) expiry_time: Option<u64>,
}

/// Who an access token belongs to (`tokenhash_session`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionRecord {
    pub(crate) user_id: String,
    pub(crate) device_id: String,
}

/// A device of a user (`userdevice_device`). Its `Debug` leaves the token hash out.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct DeviceRecord {
    #[serde(default)]
    pub(crate) display_name: Option<String>,
    /// SHA-256 of the device's current access token, hex.
    pub(crate) token_hash: String,
    pub(crate) created_at_ms: u64,
    #[serde(default)]
    pub(crate) last_seen_ts: Option<u64>,
    #[serde(default)]
    pub(crate) last_seen_ip: Option<String>,
}

// ---- directory

/// What an alias points at (`alias_room`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AliasRecord {
    pub(crate) room_id: String,
    /// Who made it: they may remove it again.
    pub(crate) creator: String,
}

// ---- federation

/// What we know of one server's keys, stored in `servername_keys`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ServerKeys {
    /// The latest answer reduced to the fields the server signed (`server_name`,
    /// `verify_keys`, `old_verify_keys`, `valid_until_ts`, its own signatures; at most
    /// 16 KiB): what we hand out as a notary. `null` when the reduced answer no longer
    /// verifies (the server signed other fields too).
    pub(crate) response: Value,
    /// Until when the keys of `response` may sign requests (capped at 7 days after fetching).
    pub(crate) valid_until_ts: u64,
    /// Every key seen, current and old.
    pub(crate) keys: BTreeMap<String, KnownKey>,
}

/// One public key of a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KnownKey {
    /// Unpadded base64 of the 32-byte ed25519 key.
    pub(crate) key: String,
    /// Set for keys the server no longer uses: they verify only what was signed before.
    pub(crate) expired_ts: Option<u64>,
}

/// One queued thing for one server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum QueueItem {
    /// An event, sent as its stored canonical JSON (the federation format).
    Pdu { event_id: String },
    /// An EDU (`{edu_type, content}`); typing and presence are news only for a while and
    /// are dropped unsent once `expires_ms` has passed.
    Edu {
        edu: Value,
        #[serde(default)]
        expires_ms: Option<u64>,
    },
}

/// The transaction in flight to a server: its ID, time and the queue entries it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PendingTxn {
    pub(crate) txn_id: String,
    pub(crate) origin_server_ts: u64,
    pub(crate) seqs: Vec<u64>,
    /// For a catch-up transaction (made of `destination_catchup` rows, which are
    /// overwritten as newer events come): the rows it holds, with their items as they were
    /// when it was made, so a retry sends the same content.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) catch_up: Vec<CatchUpEntry>,
}

/// One `destination_catchup` row taken into a catch-up transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CatchUpEntry {
    pub(crate) room_id: String,
    /// Empty for the room's newest event; a user ID for that user's newest read receipt.
    pub(crate) user_id: String,
    pub(crate) item: QueueItem,
}

/// A server that failed to take our transactions (`destination_state`): how long it is
/// left alone, kept across restarts so a server down for days is not retried at each
/// start, and whether its backlog collapsed into catch-up rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DestinationState {
    /// Failures in a row.
    pub(crate) failures: u32,
    /// The last wait, in milliseconds.
    pub(crate) delay_ms: u64,
    /// When it may be tried again (ms since the epoch: wall clock, to survive restarts).
    pub(crate) retry_at_ms: u64,
    /// Items queued for it since it started failing, about (to decide on catch-up).
    pub(crate) queued: u64,
    /// Its backlog is kept as the newest event (and receipts) per room, not per event.
    pub(crate) catching_up: bool,
}

// ---- notifications

/// A notification as stored (`usernotify_record`, in [`super::compact`]'s binary form):
/// only what the event cannot give back. Its room and event are those at the row's stream
/// position (`stream_room`, `roomstream_eventid`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredNotification {
    /// The actions of the push rule that matched, as the spec writes them.
    pub(crate) actions: Value,
    pub(crate) highlight: bool,
    /// The thread the event belongs to (its root), if any.
    pub(crate) thread: Option<String>,
    /// When it was recorded (ms since the epoch).
    pub(crate) ts: u64,
}

/// What waits for one pusher (`pusherstream_push`): a notification of an event, or (no
/// event) a badge update after the user read on another device.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PushItem {
    pub(crate) user_id: String,
    pub(crate) app_id: String,
    pub(crate) pushkey: String,
    #[serde(default)]
    pub(crate) room_id: Option<String>,
    #[serde(default)]
    pub(crate) event_id: Option<String>,
    /// The matching push rule's actions (their `set_tweak`s become the device's tweaks).
    #[serde(default)]
    pub(crate) actions: Value,
    /// When it was queued: an item nobody could deliver for a day is dropped.
    pub(crate) queued_ms: u64,
}

/// An unread notification's `(highlight, thread root)`, as counts need it.
pub(crate) type UnreadFlags = (bool, Option<String>);

// ---- receipts

/// One receipt (`roomreceipt_record`, keyed by room, type, and user with thread).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReceiptRecord {
    pub(crate) user_id: String,
    pub(crate) event_id: String,
    pub(crate) ts: u64,
    #[serde(default)]
    pub(crate) thread_id: Option<String>,
    pub(crate) stream: u64,
}

// ---- rooms

/// One stored snapshot (`snapshot_data`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SnapshotRecord {
    /// The snapshot this one changes (none: this is a full copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) parent: Option<u64>,
    /// Its step since its full copy (0: a full copy); the parent of step `k` is the step
    /// with `k`'s lowest set bit cleared (see `snapshots::derive`).
    #[serde(default)]
    pub(crate) depth: u32,
    /// Entries set (or replaced) relative to the parent, as `(state key, event)`.
    #[serde(default)]
    pub(crate) set: Vec<(u64, u64)>,
    /// Entries removed relative to the parent (state resolution can drop entries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) removed: Vec<u64>,
}

/// What is kept per room (`roomid_room`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomRecord {
    pub(crate) version: String,
    /// The forward extremities and their depths: the `prev_events` of the next event.
    pub(crate) extremities: Vec<(OwnedEventId, u64)>,
    /// The state snapshot of the room's current state (after its extremities).
    #[serde(default)]
    pub(crate) state: Option<u64>,
    /// For a room joined over federation: the history not fetched yet. Older events are
    /// fetched (`/backfill`) into a block of stream positions kept free below the join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) backfill: Option<Backfill>,
}

/// Where a room's history fetched from other servers goes, and where it continues.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Backfill {
    /// The lowest position of the block kept for history.
    pub(crate) floor: u64,
    /// The next (lower) position a fetched event takes.
    pub(crate) next: u64,
    /// The events whose predecessors are not here yet: where fetching goes on from.
    pub(crate) frontier: Vec<OwnedEventId>,
}

/// Where an event sits (`eventid_meta`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventMeta {
    pub(crate) room_id: String,
    pub(crate) stream: u64,
    /// The sending device and its transaction ID, for the sender's own echo.
    #[serde(default)]
    pub(crate) txn: Option<(String, String)>,
    /// The redaction that removed this event's content, if any: clients are shown the
    /// redacted form from then on.
    #[serde(default)]
    pub(crate) redacted_by: Option<String>,
    /// A remote user's join, leave or knock that came to us through `send_join`,
    /// `send_leave` or `send_knock`: the spec asks us (the resident server) to send it on to
    /// the room's other servers, as if it were ours.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) relay: bool,
}

/// A user's membership of a room (`userroom_membership`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MembershipRecord {
    pub(crate) membership: String,
    /// The stream position of the membership event.
    pub(crate) stream: u64,
    pub(crate) event_id: String,
    /// Where the user last joined, if ever: history is theirs to read only from a join.
    #[serde(default)]
    pub(crate) joined_stream: Option<u64>,
    /// Where the user was last invited, if ever.
    #[serde(default)]
    pub(crate) invited_stream: Option<u64>,
}

/// A device's fallback key for one algorithm (`userdevice_fallbackkey`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FallbackKeyRecord {
    /// `algorithm:key_id`, as uploaded.
    pub(crate) key_id: String,
    /// The key object (or string) as uploaded.
    pub(crate) key: Value,
    /// Whether a claim has handed it out since it was uploaded: `/sync` lists only unused
    /// ones, so the client knows when to upload a new one.
    pub(crate) used: bool,
}

// ---- end-to-end encryption: server-side key backup

/// One version of a user's key backup (`userversion_backup`). A deleted version stays as a
/// tombstone (`deleted`, its keys gone) so its number is never handed out again and deleting
/// it twice still succeeds, as the spec asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BackupVersionRecord {
    pub(crate) algorithm: String,
    pub(crate) auth_data: Map<String, Value>,
    /// Bumped on every change to the backup's keys, so clients see when to re-read them.
    pub(crate) etag: u64,
    /// How many keys the backup holds, kept in step with the keys in the same batch.
    pub(crate) count: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) deleted: bool,
}

/// One backed-up megolm session key (`backupsession_key`): the spec's `KeyBackupData`,
/// `session_data` left as the client encrypted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct BackedUpKey {
    pub(crate) first_message_index: u64,
    pub(crate) forwarded_count: u64,
    pub(crate) is_verified: bool,
    pub(crate) session_data: Map<String, Value>,
}

// ---- end-to-end encryption: cross-signing and dehydrated devices

/// What changed in one of our users' keys at a stream position (`stream_keyschanged`): the
/// outbound follower sends an `m.signing_key_update` for cross-signing keys, and the
/// device-list work reads the same rows to tell other users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeysChangedRecord {
    pub(crate) user_id: String,
    /// The master or self-signing key itself changed (not only signatures on keys).
    pub(crate) cross_signing_keys: bool,
}

/// A user's dehydrated device (MSC3814, `userid_dehydrated`): its ID and the opaque
/// `device_data` the client encrypted, handed back to a client that rehydrates it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DehydratedRecord {
    pub(crate) device_id: String,
    pub(crate) device_data: Map<String, Value>,
}

// ---- device lists

/// One change of a user's device list (`stream_devicechange`): the devices that changed
/// (new, keys uploaded, renamed or deleted) and the user's previous change, which remote
/// servers receive as `prev_id` to notice an update they missed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeviceChangeRecord {
    pub(crate) user_id: String,
    #[serde(default)]
    pub(crate) devices: Vec<String>,
    #[serde(default)]
    pub(crate) prev_id: Option<u64>,
}

/// What we know of another server's user's devices (`userid_remotedevices`), kept current
/// by that server's `m.device_list_update` EDUs and re-fetched whole from its
/// `/user/devices` when one was missed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct RemoteDeviceList {
    /// The `stream_id` of the newest update applied.
    pub(crate) stream_id: u64,
    /// When the list was last fetched whole (ms since the epoch).
    pub(crate) fetched_ms: u64,
    /// Device ID → the device's signed identity keys, as its server gave them.
    pub(crate) devices: BTreeMap<String, Value>,
    /// The user's cross-signing keys, as `/user/devices` gave them.
    #[serde(default)]
    pub(crate) master_key: Option<Value>,
    #[serde(default)]
    pub(crate) self_signing_key: Option<Value>,
}

// ---- media

/// One piece of media, ours or another server's (its file is under the data directory's
/// `media/`, named by `sha256`; see `media::files`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MediaRecord {
    /// SHA-256 of the content, lower-case hex; empty while an upload ID waits for content.
    pub(crate) sha256: String,
    pub(crate) size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) filename: Option<String>,
    /// The local user who uploaded (or reserved) it; none for another server's media.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) uploader: Option<String>,
    pub(crate) created_ms: u64,
    /// An upload ID not used yet: when it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pending_until_ms: Option<u64>,
    /// Another server's media: when one of our users last read it (the cache's LRU order).
    #[serde(default)]
    pub(crate) last_access_ms: u64,
}
