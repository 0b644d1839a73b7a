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
pub struct AccountDataRecord {
    /// The stream position of the last change, for `/sync`.
    pub stream: u64,
    pub content: Map<String, Value>,
}

// ---- accounts

/// What is stored per account in `userid_account`. Its `Debug` leaves the hash out.
#[derive(Clone, Serialize, Deserialize)]
pub struct AccountRecord {
    /// Argon2id PHC string; empty once deactivated, so no password ever matches.
    pub password_hash: String,
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub deactivated: bool,
    /// Locked by an administrator: every request but logout is refused until unlocked
    /// (`users::accounts::moderation`).
    #[serde(default)]
    pub locked: bool,
    /// Suspended by an administrator: the account may read and leave, not act
    /// (`users::accounts::moderation`).
    #[serde(default)]
    pub suspended: bool,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

/// A token in `token_registration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationTokenRecord {
    /// How many accounts it may make; `None` for no limit.
    pub uses_allowed: Option<u64>,
    /// How many it has made.
    pub completed: u64,
    /// Milliseconds since the epoch after which it is void; `None` for never.
    pub expiry_time: Option<u64>,
}

/// Who an access token belongs to (`tokenhash_session`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub user_id: String,
    pub device_id: String,
}

/// A device of a user (`userdevice_device`). Its `Debug` leaves the token hash out.
#[derive(Clone, Serialize, Deserialize)]
pub struct DeviceRecord {
    #[serde(default)]
    pub display_name: Option<String>,
    /// SHA-256 of the device's current access token, hex.
    pub token_hash: String,
    pub created_at_ms: u64,
    #[serde(default)]
    pub last_seen_ts: Option<u64>,
    #[serde(default)]
    pub last_seen_ip: Option<String>,
}

// ---- directory

/// What an alias points at (`alias_room`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AliasRecord {
    pub room_id: String,
    /// Who made it: they may remove it again.
    pub creator: String,
}

// ---- federation

/// An EDU kept for later (`seq_keptedu`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeptEdu {
    pub origin: String,
    pub received_ms: u64,
    pub edu: Value,
}

/// What we know of one server's keys, stored in `servername_keys`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerKeys {
    /// The latest answer, as the server signed it: what we hand out as a notary.
    pub response: Value,
    /// Until when the keys of `response` may sign requests (capped at 7 days after fetching).
    pub valid_until_ts: u64,
    /// Every key seen, current and old.
    pub keys: BTreeMap<String, KnownKey>,
}

/// One public key of a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownKey {
    /// Unpadded base64 of the 32-byte ed25519 key.
    pub key: String,
    /// Set for keys the server no longer uses: they verify only what was signed before.
    pub expired_ts: Option<u64>,
}

/// One queued thing for one server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QueueItem {
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTxn {
    pub txn_id: String,
    pub origin_server_ts: u64,
    pub seqs: Vec<u64>,
}

// ---- notifications

/// A notification (`usernotify_record`), for `/notifications`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotificationRecord {
    pub room_id: String,
    pub event_id: String,
    /// The actions of the push rule that matched, as the spec writes them.
    pub actions: Value,
    pub highlight: bool,
    /// The thread the event belongs to (its root), if any.
    #[serde(default)]
    pub thread: Option<String>,
    pub ts: u64,
}

/// An unread notification's `(highlight, thread root)`, as counts need it.
pub type UnreadFlags = (bool, Option<String>);

// ---- receipts

/// One receipt (`roomreceipt_record`, keyed by room, type, and user with thread).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiptRecord {
    pub user_id: String,
    pub event_id: String,
    pub ts: u64,
    #[serde(default)]
    pub thread_id: Option<String>,
    pub stream: u64,
}

// ---- rooms

/// One stored snapshot (`snapshot_data`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// The snapshot this one changes (none: this is a full copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u64>,
    /// How many deltas lie between this snapshot and its full copy.
    #[serde(default)]
    pub depth: u32,
    /// Entries set (or replaced) relative to the parent, as `(state key, event)`.
    #[serde(default)]
    pub set: Vec<(u64, u64)>,
    /// Entries removed relative to the parent (state resolution can drop entries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<u64>,
}

/// What is kept per room (`roomid_room`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomRecord {
    pub version: String,
    /// The forward extremities and their depths: the `prev_events` of the next event.
    pub extremities: Vec<(OwnedEventId, u64)>,
    /// The state snapshot of the room's current state (after its extremities).
    #[serde(default)]
    pub state: Option<u64>,
    /// For a room joined over federation: the history not fetched yet. Older events are
    /// fetched (`/backfill`) into a block of stream positions kept free below the join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<Backfill>,
}

/// Where a room's history fetched from other servers goes, and where it continues.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Backfill {
    /// The lowest position of the block kept for history.
    pub floor: u64,
    /// The next (lower) position a fetched event takes.
    pub next: u64,
    /// The events whose predecessors are not here yet: where fetching goes on from.
    pub frontier: Vec<OwnedEventId>,
}

/// Where an event sits (`eventid_meta`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventMeta {
    pub room_id: String,
    pub stream: u64,
    /// The sending device and its transaction ID, for the sender's own echo.
    #[serde(default)]
    pub txn: Option<(String, String)>,
    /// The redaction that removed this event's content, if any: clients are shown the
    /// redacted form from then on.
    #[serde(default)]
    pub redacted_by: Option<String>,
    /// A remote user's join, leave or knock that came to us through `send_join`,
    /// `send_leave` or `send_knock`: the spec asks us (the resident server) to send it on to
    /// the room's other servers, as if it were ours.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub relay: bool,
}

/// A user's membership of a room (`userroom_membership`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipRecord {
    pub membership: String,
    /// The stream position of the membership event.
    pub stream: u64,
    pub event_id: String,
    /// Where the user last joined, if ever: history is theirs to read only from a join.
    #[serde(default)]
    pub joined_stream: Option<u64>,
    /// Where the user was last invited, if ever.
    #[serde(default)]
    pub invited_stream: Option<u64>,
}
