//! Account data (spec: client-server API, "Client Config"): JSON a user's clients store on
//! the server, global or per room (`m.direct`, `m.push_rules` later, tags, read markers…),
//! delivered to every device through `/sync`.

use ruma::{RoomId, UserId};
use serde_json::{Map, Value};

use crate::error::{Error, ErrorKind};
use crate::storage::stream::Stream;
use crate::storage::{Storage, StorageError};

pub(crate) use crate::storage::records::AccountDataRecord;

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
pub(crate) async fn set(
    storage: &Storage,
    stream: &Stream,
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
            ErrorKind::ManagedByServer,
            format!("{kind} is managed by the server and cannot be set here"),
        ));
    }
    let key = key(user_id, room_id, kind);
    if !storage.useraccountdata_data.contains_key(&key)? {
        let stored = storage
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
    set_managed(storage, stream, user_id, room_id, kind, content).await
}

/// How many kinds of account data (global and per room) one user may keep.
pub(crate) const MAX_TYPES_PER_USER: usize = 2000;

/// Stores account data the server manages itself (`m.fully_read` from read markers).
pub(crate) async fn set_managed(
    storage: &Storage,
    stream: &Stream,
    user_id: &UserId,
    room_id: Option<&RoomId>,
    kind: &str,
    content: Map<String, Value>,
) -> Result<(), Error> {
    let key = key(user_id, room_id, kind);
    stream
        .commit_at_next_position::<Error>(storage, |batch, stream| {
            stage_write(storage, batch, &key, stream, content)
        })
        .await?;
    Ok(())
}

/// Reads, changes and stores one kind of account data in one step, so that two devices
/// of the same user changing it at once (two tags added together) are applied one after
/// the other and neither is lost. `change` sees the current content and returns the new.
pub(crate) async fn modify(
    storage: &Storage,
    stream: &Stream,
    user_id: &UserId,
    room_id: Option<&RoomId>,
    kind: &str,
    change: impl FnOnce(Option<Map<String, Value>>) -> Result<Map<String, Value>, Error>,
) -> Result<(), Error> {
    let key = key(user_id, room_id, kind);
    stream
        .commit_at_next_position::<Error>(storage, |batch, stream| {
            // The room service's ordering lock is held here: no other write of this
            // account data can come between this read and the batch.
            let current = storage.useraccountdata_data.get(&key)?;
            let content = change(current.map(|record| record.content))?;
            stage_write(storage, batch, &key, stream, content)
        })
        .await?;
    Ok(())
}

/// Adds one account data write to `batch`, with its entry in the user's change stream
/// (the previous entry of the same key removed: only the latest change is worth syncing).
fn stage_write(
    storage: &Storage,
    batch: &mut crate::storage::Batch,
    key: &(String, String, String),
    stream: u64,
    content: Map<String, Value>,
) -> Result<(), Error> {
    let (user, scope, kind) = key;
    if let Some(previous) = storage.useraccountdata_data.get(key)? {
        storage
            .userstream_accountdata
            .batch_remove(batch, &(user.clone(), previous.stream));
    }
    storage.userstream_accountdata.batch_insert(
        batch,
        &(user.clone(), stream),
        &(scope.clone(), kind.clone()),
    )?;
    let record = AccountDataRecord { stream, content };
    Ok(storage
        .useraccountdata_data
        .batch_insert(batch, key, &record)?)
}

pub(crate) fn get(
    storage: &Storage,
    user_id: &UserId,
    room_id: Option<&RoomId>,
    kind: &str,
) -> Result<Option<Map<String, Value>>, StorageError> {
    get_stored(storage, user_id, room_id, kind)
}

/// [`get`] for code that holds the storage only.
pub(crate) fn get_stored(
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

/// One room's account data entry: `(type, content)`.
pub(crate) type RoomEntry = (String, Map<String, Value>);

/// All of the user's account data for one room.
pub(crate) fn room_entries(
    storage: &Storage,
    user_id: &UserId,
    room_id: &RoomId,
) -> Result<Vec<RoomEntry>, StorageError> {
    let mut prefix = crate::storage::pair_prefix(user_id.as_str());
    prefix.extend_from_slice(&crate::storage::pair_prefix(room_id.as_str()));
    storage
        .useraccountdata_data
        .scan_prefix(&prefix)
        .map(|entry| entry.map(|((_, _, kind), record)| (kind, record.content)))
        .collect()
}

/// One change: `(scope, type, content)`, scope `""` for global.
pub(crate) type Change = (String, String, Map<String, Value>);

/// The user's account data changed after `since` (everything without it), up to `upto`.
pub(crate) fn changes(
    storage: &Storage,
    user_id: &UserId,
    since: Option<u64>,
    upto: u64,
) -> Result<Vec<Change>, StorageError> {
    let mut changed = Vec::new();
    let user = user_id.to_string();
    // The user's change stream: what changed after `since`, without reading the rest.
    let from = (
        user.clone(),
        since.map_or(0, |since| since.saturating_add(1)),
    );
    for entry in storage
        .userstream_accountdata
        .range(&from, &(user.clone(), upto))
    {
        let (_, (scope, kind)) = entry?;
        let key = (user.clone(), scope.clone(), kind.clone());
        if let Some(record) = storage.useraccountdata_data.get(&key)?
            && record.stream <= upto
        {
            changed.push((scope, kind, record.content));
        }
    }
    Ok(changed)
}
