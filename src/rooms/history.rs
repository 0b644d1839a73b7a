//! The state of a room as of any stream position.
//!
//! Clients see a room's history as one line (the stream), so "the state at this point of
//! the timeline" is the current state as it was when that position was written. Every state
//! change is kept twice: under its state key (`roomstate_history`, to read one entry back
//! at a position) and under its position (`roomstream_state`, to list what changed between
//! two positions without reading the events between them).

use std::collections::BTreeMap;

use ruma::RoomId;

use super::StateEntry;
use crate::storage::{Batch, Storage, StorageError};

/// Records, in `batch`, that `(type, state_key)` of `room` became `event_id` at `position`.
pub(crate) fn stage_state_change(
    storage: &Storage,
    batch: &mut Batch,
    room: &str,
    (kind, state_key): (&str, &str),
    event_id: &str,
    position: u64,
) -> Result<(), StorageError> {
    stage_state_changes(
        storage,
        batch,
        room,
        &[((kind.to_owned(), state_key.to_owned()), event_id.to_owned())],
        position,
    )
}

/// Records, in `batch`, every change of `room`'s state at `position` (one for a local
/// event; several when state resolution moves more than one entry at once).
pub(crate) fn stage_state_changes(
    storage: &Storage,
    batch: &mut Batch,
    room: &str,
    changes: &[StateEntry],
    position: u64,
) -> Result<(), StorageError> {
    if changes.is_empty() {
        return Ok(());
    }
    for ((kind, state_key), event_id) in changes {
        stage_history_row(storage, batch, room, (kind, state_key), event_id, position)?;
    }
    let keys: Vec<(String, String)> = changes.iter().map(|(key, _)| key.clone()).collect();
    stage_changed_keys(storage, batch, room, keys, position)
}

/// The half of [`stage_state_changes`] kept by state key: `(type, state_key)` of `room`
/// became `event_id` at `position`.
pub(crate) fn stage_history_row(
    storage: &Storage,
    batch: &mut Batch,
    room: &str,
    (kind, state_key): (&str, &str),
    event_id: &str,
    position: u64,
) -> Result<(), StorageError> {
    storage.roomstate_history.batch_insert(
        batch,
        &(
            room.to_owned(),
            kind.to_owned(),
            state_key.to_owned(),
            position,
        ),
        &event_id.to_owned(),
    )
}

/// The half of [`stage_state_changes`] kept by position: which keys changed at `position`.
/// Takes the list whole: the tree's codec encodes a `Vec`, and callers build one for it.
#[allow(clippy::needless_pass_by_value)]
pub(crate) fn stage_changed_keys(
    storage: &Storage,
    batch: &mut Batch,
    room: &str,
    keys: Vec<(String, String)>,
    position: u64,
) -> Result<(), StorageError> {
    storage
        .roomstream_state
        .batch_insert(batch, &(room.to_owned(), position), &keys)
}

/// The state entries that changed at positions in `(after, upto]`, each with its value at
/// `upto`, in `(type, state key)` order.
pub(crate) fn changes_between(
    storage: &Storage,
    room_id: &RoomId,
    after: u64,
    upto: u64,
) -> Result<Vec<StateEntry>, StorageError> {
    let mut changed: BTreeMap<(String, String), String> = BTreeMap::new();
    if after >= upto {
        return Ok(Vec::new());
    }
    let room = room_id.to_string();
    for entry in storage
        .roomstream_state
        .range(&(room.clone(), after + 1), &(room.clone(), upto))
    {
        let ((_, position), keys) = entry?;
        for (kind, state_key) in keys {
            let key = (room.clone(), kind.clone(), state_key.clone(), position);
            if let Some(event_id) = storage.roomstate_history.get(&key)? {
                // Positions come in order: a later change of a key replaces an earlier.
                changed.insert((kind, state_key), event_id);
            }
        }
    }
    Ok(changed.into_iter().collect())
}

/// The value of one state entry as of `position`, if it had one then.
pub(crate) fn entry_at(
    storage: &Storage,
    room_id: &RoomId,
    (kind, state_key): (&str, &str),
    position: u64,
) -> Result<Option<String>, StorageError> {
    let room = room_id.to_string();
    let from = (room.clone(), kind.to_owned(), state_key.to_owned(), 0);
    let to = (room, kind.to_owned(), state_key.to_owned(), position);
    match storage.roomstate_history.range(&from, &to).next_back() {
        Some(entry) => Ok(Some(entry?.1)),
        None => Ok(None),
    }
}

/// The whole state of a room as of `position`: the current state with every entry changed
/// since taken back to its value then (or dropped, if it did not exist yet). Costs the
/// current state plus the changes after `position`.
pub(crate) fn state_at(
    storage: &Storage,
    room_id: &RoomId,
    position: u64,
) -> Result<Vec<StateEntry>, StorageError> {
    let mut state: BTreeMap<(String, String), String> = super::current_state(storage, room_id)?
        .into_iter()
        .collect();
    let room = room_id.to_string();
    let mut seen = std::collections::HashSet::new();
    for entry in storage.roomstream_state.range(
        &(room.clone(), position.saturating_add(1)),
        &(room, u64::MAX),
    ) {
        let (_, keys) = entry?;
        for key in keys {
            if !seen.insert(key.clone()) {
                continue;
            }
            match entry_at(storage, room_id, (&key.0, &key.1), position)? {
                Some(event_id) => state.insert(key, event_id),
                None => state.remove(&key),
            };
        }
    }
    Ok(state.into_iter().collect())
}

/// Every value one state entry has had, as `(position, content[field])` in stream order
/// (`""` where the field is missing): a user's memberships, a room's visibility settings.
pub(crate) fn entries_over_time(
    storage: &Storage,
    room_id: &RoomId,
    (kind, state_key): (&str, &str),
    field: &str,
) -> Result<Vec<(u64, String)>, StorageError> {
    let room = room_id.to_string();
    let from = (room.clone(), kind.to_owned(), state_key.to_owned(), 0);
    let to = (room, kind.to_owned(), state_key.to_owned(), u64::MAX);
    let mut values = Vec::new();
    for entry in storage.roomstate_history.range(&from, &to) {
        let ((_, _, _, position), event_id) = entry?;
        let value = super::load_json(storage, &event_id)?
            .and_then(|json| {
                json.get("content")?
                    .as_object()?
                    .get(field)?
                    .as_str()
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        values.push((position, value));
    }
    Ok(values)
}
