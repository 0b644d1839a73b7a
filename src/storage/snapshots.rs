//! State snapshots (DESIGN.md, "The room model"): a room's state at an event of its graph,
//! as a map of short state key → short event ID, stored as a delta on a parent snapshot
//! with a full copy every [`FULL_COPY_EVERY`] steps so that reading one back is bounded.
//!
//! Every event records the snapshot of the state *before* it (what it was authorized
//! against, what `/state_ids` answers for it). Where the graph forks, the state after the
//! fork is the resolution (ruma's state resolution) of the branches' states; the snapshot
//! stores the result like any other.

use std::collections::BTreeMap;

use super::{Batch, StateEntry, Storage, StorageError};

/// State keys and events by short ID: the state of a room at one point.
pub(crate) type StateMap = BTreeMap<u64, u64>;

/// How many deltas may be stacked before a snapshot is stored whole.
const FULL_COPY_EVERY: u32 = 32;

pub(crate) use super::records::SnapshotRecord;

/// The short ID of `(kind, state_key)`, given one now if it had none. Written at once,
/// outside any batch: a mapping nobody uses yet is harmless, and two writers agree on one.
pub(crate) fn short_state_key(
    storage: &Storage,
    kind: &str,
    state_key: &str,
) -> Result<u64, StorageError> {
    let key = (kind.to_owned(), state_key.to_owned());
    if let Some(short) = storage.statekey_short.get(&key)? {
        return Ok(short);
    }
    let short = storage.next_id("statekey")?;
    if storage.statekey_short.insert_new(&key, &short)? {
        storage.short_statekey.insert(&short, &key)?;
        return Ok(short);
    }
    // Someone else named it first: theirs stands.
    storage
        .statekey_short
        .get(&key)?
        .ok_or_else(|| StorageError::Corrupt(format!("state key {kind}/{state_key} vanished")))
}

/// The short ID of an event, given one now if it had none (as [`short_state_key`]).
pub(crate) fn short_event_id(storage: &Storage, event_id: &str) -> Result<u64, StorageError> {
    let key = event_id.to_owned();
    if let Some(short) = storage.eventid_short.get(&key)? {
        return Ok(short);
    }
    let short = storage.next_id("event")?;
    if storage.eventid_short.insert_new(&key, &short)? {
        storage.short_eventid.insert(&short, &key)?;
        return Ok(short);
    }
    storage
        .eventid_short
        .get(&key)?
        .ok_or_else(|| StorageError::Corrupt(format!("event {event_id} vanished")))
}

/// Reads a snapshot back whole: the chain of deltas down to its full copy, applied in order.
pub(crate) fn load(storage: &Storage, snapshot: u64) -> Result<StateMap, StorageError> {
    load_pending(storage, snapshot, &BTreeMap::new())
}

/// Adds to `batch` a snapshot that is `parent` (none: the empty state) with `changes`
/// applied, and returns its ID. Stored whole when the chain would grow too long.
pub(crate) fn derive(
    storage: &Storage,
    batch: &mut Batch,
    parent: Option<u64>,
    changes: &[(u64, u64)],
    pending: &mut BTreeMap<u64, SnapshotRecord>,
) -> Result<u64, StorageError> {
    let parent_depth = match parent {
        Some(id) => Some(match pending.get(&id) {
            Some(record) => record.depth,
            None => storage
                .snapshot_data
                .get(&id)?
                .map_or(0, |record| record.depth),
        }),
        None => None,
    };
    let record = match (parent, parent_depth) {
        (Some(parent), Some(depth)) if depth + 1 < FULL_COPY_EVERY => SnapshotRecord {
            parent: Some(parent),
            depth: depth + 1,
            set: changes.to_vec(),
            removed: Vec::new(),
        },
        _ => {
            let mut state = match parent {
                Some(parent) => load_pending(storage, parent, pending)?,
                None => StateMap::new(),
            };
            state.extend(changes.iter().copied());
            SnapshotRecord {
                parent: None,
                depth: 0,
                set: state.into_iter().collect(),
                removed: Vec::new(),
            }
        }
    };
    let id = storage.next_id("snapshot")?;
    storage.snapshot_data.batch_insert(batch, &id, &record)?;
    pending.insert(id, record);
    Ok(id)
}

/// Stores a whole state as a new snapshot (after a join over federation, or a resolution).
pub(crate) fn store_full(
    storage: &Storage,
    batch: &mut Batch,
    state: &StateMap,
    pending: &mut BTreeMap<u64, SnapshotRecord>,
) -> Result<u64, StorageError> {
    let record = SnapshotRecord {
        parent: None,
        depth: 0,
        set: state.iter().map(|(k, v)| (*k, *v)).collect(),
        removed: Vec::new(),
    };
    let id = storage.next_id("snapshot")?;
    storage.snapshot_data.batch_insert(batch, &id, &record)?;
    pending.insert(id, record);
    Ok(id)
}

/// [`load`], also seeing snapshots staged in a batch not yet applied.
fn load_pending(
    storage: &Storage,
    snapshot: u64,
    pending: &BTreeMap<u64, SnapshotRecord>,
) -> Result<StateMap, StorageError> {
    let mut chain = Vec::new();
    let mut next = Some(snapshot);
    while let Some(id) = next {
        let record = match pending.get(&id) {
            Some(record) => record.clone(),
            None => storage
                .snapshot_data
                .get(&id)?
                .ok_or_else(|| StorageError::Corrupt(format!("missing state snapshot {id}")))?,
        };
        if chain.len() > FULL_COPY_EVERY as usize {
            return Err(StorageError::Corrupt(format!(
                "state snapshot {snapshot} has a chain longer than {FULL_COPY_EVERY}"
            )));
        }
        next = record.parent;
        chain.push(record);
    }
    let mut state = StateMap::new();
    for record in chain.into_iter().rev() {
        for key in record.removed {
            state.remove(&key);
        }
        state.extend(record.set);
    }
    Ok(state)
}

/// The state before `event_id`, with full names: `((type, state key), event ID)`.
pub(crate) fn state_before(
    storage: &Storage,
    event_id: &str,
) -> Result<Option<Vec<StateEntry>>, StorageError> {
    let Some(snapshot) = storage.eventid_statebefore.get(&event_id.to_owned())? else {
        return Ok(None);
    };
    named(storage, &load(storage, snapshot)?).map(Some)
}

/// A state map with its short IDs turned back into names.
pub(crate) fn named(storage: &Storage, state: &StateMap) -> Result<Vec<StateEntry>, StorageError> {
    state
        .iter()
        .map(|(key, event)| {
            let name = storage
                .short_statekey
                .get(key)?
                .ok_or_else(|| StorageError::Corrupt(format!("unknown short state key {key}")))?;
            let event_id = storage
                .short_eventid
                .get(event)?
                .ok_or_else(|| StorageError::Corrupt(format!("unknown short event {event}")))?;
            Ok((name, event_id))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_stack_and_full_copies_bound_the_chain() {
        let (_dir, storage) = crate::storage::testing::temporary();
        let mut pending = BTreeMap::new();
        let mut batch = Batch::new();
        let empty =
            store_full(&storage, &mut batch, &StateMap::new(), &mut pending).expect("empty");
        let mut current = empty;
        let mut expected = StateMap::new();
        let mut ids = Vec::new();
        for step in 0..100u64 {
            // Ten state keys, each set again and again.
            let change = (step % 10, 1000 + step);
            current = derive(&storage, &mut batch, Some(current), &[change], &mut pending)
                .expect("derive");
            expected.insert(change.0, change.1);
            ids.push((current, expected.clone()));
        }
        storage.apply(batch).expect("apply");
        for (id, state) in &ids {
            assert_eq!(&load(&storage, *id).expect("load"), state);
        }
        assert!(load(&storage, empty).expect("empty").is_empty());
        let deepest = ids
            .iter()
            .map(|(id, _)| {
                storage
                    .snapshot_data
                    .get(id)
                    .expect("get")
                    .expect("some")
                    .depth
            })
            .max();
        assert_eq!(deepest, Some(FULL_COPY_EVERY - 1));
        assert!(
            load(&storage, 999_999).is_err(),
            "a missing snapshot is an error"
        );
    }

    #[test]
    fn short_ids_are_stable_and_named_back() {
        let (_dir, storage) = crate::storage::testing::temporary();
        let topic = short_state_key(&storage, "m.room.topic", "").expect("short");
        assert_eq!(
            short_state_key(&storage, "m.room.topic", "").expect("again"),
            topic
        );
        let member = short_state_key(&storage, "m.room.member", "@a:x").expect("short");
        assert_ne!(member, topic);
        let event = short_event_id(&storage, "$e").expect("event");
        let state = StateMap::from([(topic, event)]);
        assert_eq!(
            named(&storage, &state).expect("named"),
            vec![(("m.room.topic".to_owned(), String::new()), "$e".to_owned())]
        );
    }
}
