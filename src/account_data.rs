//! Account data (spec: client-server API, "Client Config"): JSON a user's clients store on
//! the server, global or per room (`m.direct`, `m.push_rules` later, tags, read markers…),
//! delivered to every device through `/sync`.

use ruma::{RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, ErrorKind};
use crate::state::AppState;
use crate::storage::{Storage, StorageError, pair_prefix};

/// What is stored per user, scope (`""` for global, else a room ID) and type.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountDataRecord {
    /// The stream position of the last change, for `/sync`.
    pub stream: u64,
    pub content: Map<String, Value>,
}

/// Types the server manages itself: clients may not set them here.
const SERVER_MANAGED: [&str; 2] = ["m.fully_read", "m.push_rules"];

fn key(user_id: &UserId, room_id: Option<&RoomId>, kind: &str) -> (String, String, String) {
    (
        user_id.to_string(),
        room_id.map(ToString::to_string).unwrap_or_default(),
        kind.to_owned(),
    )
}

/// Stores `content` as the user's `kind` account data (for a room, or global).
pub async fn set(
    state: &AppState,
    user_id: &UserId,
    room_id: Option<&RoomId>,
    kind: &str,
    content: Map<String, Value>,
) -> Result<(), Error> {
    if kind.is_empty() || kind.len() > 255 {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "The type must be 1 to 255 bytes",
        ));
    }
    if SERVER_MANAGED.contains(&kind) {
        return Err(Error::new(
            ErrorKind::BadJson,
            format!("{kind} is managed by the server and cannot be set here"),
        ));
    }
    let key = key(user_id, room_id, kind);
    if !state.storage.useraccountdata_data.contains_key(&key)? {
        let stored = state
            .storage
            .useraccountdata_data
            .scan_prefix(&crate::storage::pair_prefix(user_id.as_str()))
            .count();
        if stored >= MAX_TYPES_PER_USER {
            return Err(Error::new(
                ErrorKind::LimitExceeded { retry_after_ms: 0 },
                format!("At most {MAX_TYPES_PER_USER} kinds of account data per user"),
            ));
        }
    }
    set_managed(state, user_id, room_id, kind, content).await
}

/// How many kinds of account data (global and per room) one user may keep.
pub const MAX_TYPES_PER_USER: usize = 2000;

/// Stores account data the server manages itself (`m.fully_read` from read markers).
pub async fn set_managed(
    state: &AppState,
    user_id: &UserId,
    room_id: Option<&RoomId>,
    kind: &str,
    content: Map<String, Value>,
) -> Result<(), Error> {
    let key = key(user_id, room_id, kind);
    state
        .rooms
        .commit_at_next_position(&state.storage, |batch, stream| {
            let record = AccountDataRecord { stream, content };
            Ok(state
                .storage
                .useraccountdata_data
                .batch_insert(batch, &key, &record)?)
        })
        .await?;
    Ok(())
}

pub fn get(
    state: &AppState,
    user_id: &UserId,
    room_id: Option<&RoomId>,
    kind: &str,
) -> Result<Option<Map<String, Value>>, StorageError> {
    get_stored(&state.storage, user_id, room_id, kind)
}

/// [`get`] for code that holds the storage only.
pub fn get_stored(
    storage: &Storage,
    user_id: &UserId,
    room_id: Option<&RoomId>,
    kind: &str,
) -> Result<Option<Map<String, Value>>, StorageError> {
    Ok(storage
        .useraccountdata_data
        .get(&key(user_id, room_id, kind))?
        .map(|record| record.content))
}

/// One change: `(scope, type, content)`, scope `""` for global.
pub type Change = (String, String, Map<String, Value>);

/// The user's account data changed after `since` (everything without it), up to `upto`.
pub fn changes(
    state: &AppState,
    user_id: &UserId,
    since: Option<u64>,
    upto: u64,
) -> Result<Vec<Change>, StorageError> {
    let mut changed = Vec::new();
    for entry in state
        .storage
        .useraccountdata_data
        .scan_prefix(&pair_prefix(user_id.as_str()))
    {
        let ((_, scope, kind), record) = entry?;
        if since.is_none_or(|since| record.stream > since) && record.stream <= upto {
            changed.push((scope, kind, record.content));
        }
    }
    Ok(changed)
}
