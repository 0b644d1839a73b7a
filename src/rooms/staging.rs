//! Staging an event's writes into a batch: its row and indexes, the state snapshot after it,
//! its relation to another event, and state entries.

use super::*;
use crate::error::Error;
use crate::storage::snapshots;
use crate::storage::{Batch, Storage, StorageError};
use ruma::CanonicalJsonValue;
use std::collections::HashMap;

/// The snapshot of `target`: `base`'s snapshot itself when equal, a delta on it when
/// `target` only adds or changes a few entries, else a whole copy.
pub(super) fn snapshot_near(
    storage: &Storage,
    batch: &mut Batch,
    pending: &mut std::collections::BTreeMap<u64, snapshots::SnapshotRecord>,
    base: Option<(u64, snapshots::StateMap)>,
    target: &snapshots::StateMap,
) -> Result<u64, StorageError> {
    const MAX_DELTA: usize = 64;
    if let Some((id, state)) = base {
        let (set, removed) = remote::diff(&state, target);
        if set.is_empty() && removed.is_empty() {
            return Ok(id);
        }
        if removed.is_empty() && set.len() <= MAX_DELTA {
            return snapshots::derive(storage, batch, Some(id), &set, pending);
        }
    }
    snapshots::store_full(storage, batch, target, pending)
}

/// Records, in `batch`, the state snapshot before each event and derives the snapshot
/// after each state event; returns the room's state after the last one. Events are applied
/// in order onto the room's current state (`current`; none for a new room).
pub(super) fn stage_snapshots(
    storage: &Storage,
    batch: &mut Batch,
    events: &[StagedEvent],
    mut current: Option<u64>,
) -> Result<Option<u64>, Error> {
    let mut pending = std::collections::BTreeMap::new();
    for staged in events {
        let before = match current {
            Some(snapshot) => snapshot,
            None => snapshots::store_full(storage, batch, &Default::default(), &mut pending)?,
        };
        let event_id = staged.pdu.event_id.to_string();
        storage
            .eventid_statebefore
            .batch_insert(batch, &event_id, &before)?;
        current = Some(before);
        if let Some(state_key) = &staged.pdu.state_key {
            let key = snapshots::short_state_key(storage, &staged.pdu.kind.to_string(), state_key)?;
            let event = snapshots::short_event_id(storage, &event_id)?;
            current = Some(snapshots::derive(
                storage,
                batch,
                Some(before),
                &[(key, event)],
                &mut pending,
            )?);
        }
    }
    Ok(current)
}

/// Adds one event and its indexes to `batch` at `position` (with its own state change when
/// `own_state`). `memberships` holds the
/// membership records staged earlier in the same batch.
pub(super) fn stage_event(
    storage: &Storage,
    batch: &mut Batch,
    room: &str,
    staged: &StagedEvent,
    position: u64,
    memberships: &mut HashMap<String, MembershipRecord>,
    own_state: bool,
) -> Result<(), Error> {
    let pdu = &staged.pdu;
    let event_id = pdu.event_id.to_string();
    let text = CanonicalJsonValue::Object(staged.json.clone()).to_string();
    storage.eventid_pdu.batch_insert(batch, &event_id, &text)?;
    let meta = EventMeta {
        room_id: room.to_owned(),
        stream: position,
        txn: staged
            .txn
            .as_ref()
            .map(|((_, device, _), txn_id)| (device.clone(), txn_id.clone())),
        redacted_by: None,
        relay: staged.relay,
    };
    storage.eventid_meta.batch_insert(batch, &event_id, &meta)?;
    storage
        .roomstream_eventid
        .batch_insert(batch, &(room.to_owned(), position), &event_id)?;
    crate::storage::stream::Stream::stage_room_change(storage, batch, position, room)?;
    if let Some((txn, _)) = &staged.txn {
        storage.txn_eventid.batch_insert(batch, txn, &event_id)?;
    }
    if pdu.kind == ruma::events::TimelineEventType::RoomRedaction
        && pdu.state_key.is_none()
        && let Some(target) = &pdu.redacts
        && let Some(mut target_meta) = storage.eventid_meta.get(&target.to_string())?
        && target_meta.room_id == room
        && target_meta.redacted_by.is_none()
    {
        target_meta.redacted_by = Some(event_id.clone());
        storage
            .eventid_meta
            .batch_insert(batch, &target.to_string(), &target_meta)?;
    }
    stage_relation(storage, batch, room, staged, position)?;
    // A remote event's effect on the current state comes from state resolution instead.
    let Some(state_key) = pdu.state_key.as_ref().filter(|_| own_state) else {
        return Ok(());
    };
    let membership =
        (pdu.kind == ruma::events::TimelineEventType::RoomMember).then(|| membership_of(pdu));
    let kind = pdu.kind.to_string();
    history::stage_state_change(
        storage,
        batch,
        room,
        (&kind, state_key),
        &event_id,
        position,
    )?;
    stage_state_entry(
        storage,
        batch,
        room,
        (&pdu.kind.to_string(), state_key),
        (&event_id, membership),
        position,
        memberships,
    )
}

/// Makes `event_id` the room's current state for `(kind, state_key)` from `position` on:
/// the current state and (for member events, whose `membership` is given) the membership
/// indexes. The caller records the change in the state history. `memberships` holds the records staged earlier in the batch.
pub(crate) fn stage_state_entry(
    storage: &Storage,
    batch: &mut Batch,
    room: &str,
    (kind, state_key): (&str, &str),
    (event_id, membership): (&str, Option<String>),
    position: u64,
    memberships: &mut HashMap<String, MembershipRecord>,
) -> Result<(), Error> {
    let key = (room.to_owned(), kind.to_owned(), state_key.to_owned());
    storage
        .roomstate_eventid
        .batch_insert(batch, &key, &event_id.to_owned())?;
    let Some(membership) = membership else {
        return Ok(());
    };
    let state_key = state_key.to_owned();
    let event_id = event_id.to_owned();
    let previous = match memberships.get(&state_key) {
        Some(record) => Some(record.clone()),
        None => storage
            .userroom_membership
            .get(&(state_key.clone(), room.to_owned()))?,
    };
    let record = MembershipRecord {
        // A join after a join (a profile change) is not a new join.
        joined_stream: if membership == "join" {
            match &previous {
                Some(previous) if previous.membership == "join" => {
                    previous.joined_stream.or(Some(position))
                }
                _ => Some(position),
            }
        } else {
            previous.as_ref().and_then(|p| p.joined_stream)
        },
        invited_stream: if membership == "invite" {
            Some(position)
        } else {
            previous.as_ref().and_then(|p| p.invited_stream)
        },
        membership,
        stream: position,
        event_id,
    };
    storage.userroom_membership.batch_insert(
        batch,
        &(state_key.clone(), room.to_owned()),
        &record,
    )?;
    storage.roomuser_membership.batch_insert(
        batch,
        &(room.to_owned(), state_key.clone()),
        &record.membership,
    )?;
    memberships.insert(state_key, record);
    Ok(())
}

/// Indexes `m.relates_to`: the child under its parent, and a thread's latest activity.
pub(super) fn stage_relation(
    storage: &Storage,
    batch: &mut Batch,
    room: &str,
    staged: &StagedEvent,
    position: u64,
) -> Result<(), Error> {
    let relates_to = staged
        .json
        .get("content")
        .and_then(|content| content.as_object())
        .and_then(|content| content.get("m.relates_to"))
        .and_then(|relation| relation.as_object());
    let Some(relates_to) = relates_to else {
        return Ok(());
    };
    let Some(parent) = relates_to.get("event_id").and_then(|id| id.as_str()) else {
        return Ok(());
    };
    // Only relations to events of the same room count.
    if storage
        .eventid_meta
        .get(&parent.to_owned())?
        .is_none_or(|meta| meta.room_id != room)
    {
        return Ok(());
    }
    let event_id = staged.pdu.event_id.to_string();
    storage
        .parent_child
        .batch_insert(batch, &(parent.to_owned(), position), &event_id)?;
    if let Some(rel_type) = relates_to.get("rel_type").and_then(|kind| kind.as_str()) {
        storage.parentrel_child.batch_insert(
            batch,
            &(parent.to_owned(), rel_type.to_owned(), position),
            &(event_id.clone(), staged.pdu.sender.to_string()),
        )?;
    }
    if relates_to.get("rel_type").and_then(|kind| kind.as_str()) == Some("m.thread") {
        storage.roomthread_latest.batch_insert(
            batch,
            &(room.to_owned(), parent.to_owned()),
            &position,
        )?;
    }
    Ok(())
}
