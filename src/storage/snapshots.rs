//! State snapshots (DESIGN.md, "The room model"): a room's state at an event of its graph,
//! as a map of short state key → short event ID, stored as a delta on an earlier snapshot
//! chained so that both reading one back and writing one cost little whatever the size of
//! the state (see [`derive`]).
//!
//! Every event records the snapshot of the state *before* it (what it was authorized
//! against, what `/state_ids` answers for it). Where the graph forks, the state after the
//! fork is the resolution (ruma's state resolution) of the branches' states; the snapshot
//! stores the result like any other.

use std::collections::BTreeMap;

use super::{Batch, StateEntry, Storage, StorageError};

/// State keys and events by short ID: the state of a room at one point.
pub(crate) type StateMap = BTreeMap<u64, u64>;

/// Steps after a full copy before the next one (see [`derive`]): a chain read back has at
/// most one record per bit of the step, 20 here.
const MAX_STEPS: u32 = 1 << 20;

/// The most records one snapshot's chain may have: beyond, the data is corrupt (the older
/// layout stacked up to 32).
const MAX_CHAIN: usize = 40;

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
/// applied, and returns its ID.
///
/// Snapshots descending from one full copy are numbered by their step `k` (the record's
/// `depth`), and step `k` is stored as a delta on the step with `k`'s lowest set bit
/// cleared (a Fenwick chain): the changes of the last `lowbit(k)` steps, merged. Reading
/// one back reads at most one record per set bit of `k`, and each state event writes
/// `O(log k)` entries on average, whatever the size of the room's state; a room with
/// 100,000 state keys never rewrites them all (a full copy every few steps did, a cost per
/// state event that grew with the room). Records of the older layout (each step a delta on
/// the one before) are read and built upon the same way.
pub(crate) fn derive(
    storage: &Storage,
    batch: &mut Batch,
    parent: Option<u64>,
    changes: &[(u64, u64)],
    pending: &mut BTreeMap<u64, SnapshotRecord>,
) -> Result<u64, StorageError> {
    let record = match parent {
        None => SnapshotRecord {
            parent: None,
            depth: 0,
            set: changes
                .iter()
                .copied()
                .collect::<StateMap>()
                .into_iter()
                .collect(),
            removed: Vec::new(),
        },
        Some(parent) => delta_record(storage, parent, changes, pending)?,
    };
    let id = storage.next_id("snapshot")?;
    storage.snapshot_data.batch_insert(batch, &id, &record)?;
    pending.insert(id, record);
    Ok(id)
}

/// The record of the step after `parent`: `changes` merged with the deltas between
/// `parent` and the step the new one builds on (see [`derive`]); a full copy once the
/// steps run out.
fn delta_record(
    storage: &Storage,
    parent: u64,
    changes: &[(u64, u64)],
    pending: &BTreeMap<u64, SnapshotRecord>,
) -> Result<SnapshotRecord, StorageError> {
    let parent_record = read_record(storage, parent, pending)?;
    let step = parent_record.depth.saturating_add(1);
    if step >= MAX_STEPS {
        let mut state = load_pending(storage, parent, pending)?;
        state.extend(changes.iter().copied());
        return Ok(SnapshotRecord {
            parent: None,
            depth: 0,
            set: state.into_iter().collect(),
            removed: Vec::new(),
        });
    }
    let base_step = step & (step - 1);
    // Newest first: a key keeps the first value met (`None`: removed).
    let mut merged: BTreeMap<u64, Option<u64>> = changes
        .iter()
        .map(|(key, event)| (*key, Some(*event)))
        .collect();
    let mut base = parent;
    let mut record = parent_record;
    let mut read = 1;
    while record.depth > base_step {
        for (key, event) in &record.set {
            merged.entry(*key).or_insert(Some(*event));
        }
        for key in &record.removed {
            merged.entry(*key).or_insert(None);
        }
        let Some(next) = record.parent else {
            return Err(StorageError::Corrupt(format!(
                "state snapshot {base} at step {} has no parent",
                record.depth
            )));
        };
        read += 1;
        if read > MAX_CHAIN {
            return Err(StorageError::Corrupt(format!(
                "state snapshot {parent} has a chain longer than {MAX_CHAIN}"
            )));
        }
        base = next;
        record = read_record(storage, next, pending)?;
    }
    let (mut set, mut removed) = (Vec::new(), Vec::new());
    for (key, event) in merged {
        match event {
            Some(event) => set.push((key, event)),
            None => removed.push(key),
        }
    }
    Ok(SnapshotRecord {
        parent: Some(base),
        depth: step,
        set,
        removed,
    })
}

/// One snapshot record, staged or stored.
fn read_record(
    storage: &Storage,
    id: u64,
    pending: &BTreeMap<u64, SnapshotRecord>,
) -> Result<SnapshotRecord, StorageError> {
    match pending.get(&id) {
        Some(record) => Ok(record.clone()),
        None => storage
            .snapshot_data
            .get(&id)?
            .ok_or_else(|| StorageError::Corrupt(format!("missing state snapshot {id}"))),
    }
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
        let record = read_record(storage, id, pending)?;
        if chain.len() >= MAX_CHAIN {
            return Err(StorageError::Corrupt(format!(
                "state snapshot {snapshot} has a chain longer than {MAX_CHAIN}"
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

/// A state map with its short IDs turned back into names.
pub(crate) fn named(storage: &Storage, state: &StateMap) -> Result<Vec<StateEntry>, StorageError> {
    state
        .iter()
        .map(|(key, event)| {
            let name = state_key_name(storage, *key)?;
            let event_id = storage
                .short_eventid
                .get(event)?
                .ok_or_else(|| StorageError::Corrupt(format!("unknown short event {event}")))?;
            Ok((name, event_id))
        })
        .collect()
}

/// The `(type, state key)` of each short state key in `keys`, in their order.
pub(crate) fn named_keys(
    storage: &Storage,
    keys: &[u64],
) -> Result<Vec<(String, String)>, StorageError> {
    keys.iter()
        .map(|key| state_key_name(storage, *key))
        .collect()
}

/// The `(type, state key)` a short state key stands for.
fn state_key_name(storage: &Storage, key: u64) -> Result<(String, String), StorageError> {
    storage
        .short_statekey
        .get(&key)?
        .ok_or_else(|| StorageError::Corrupt(format!("unknown short state key {key}")))
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
        let longest = ids.iter().map(|(id, _)| chain_length(&storage, *id)).max();
        // Step 100 at most: one record per set bit of a step below 128, and the full copy.
        assert!(longest.is_some_and(|length| length <= 8), "{longest:?}");
        assert!(
            load(&storage, 999_999).is_err(),
            "a missing snapshot is an error"
        );
    }

    /// How many records `load` reads for `snapshot`.
    fn chain_length(storage: &Storage, snapshot: u64) -> usize {
        let mut length = 0;
        let mut next = Some(snapshot);
        while let Some(id) = next {
            length += 1;
            next = storage
                .snapshot_data
                .get(&id)
                .expect("get")
                .expect("some")
                .parent;
        }
        length
    }

    /// A small deterministic generator: the same "random" changes every run.
    fn next_random(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn a_large_state_is_never_copied_again_and_reads_back_exactly() {
        let (_dir, storage) = crate::storage::testing::temporary();
        let mut pending = BTreeMap::new();
        let mut batch = Batch::new();
        let mut expected: StateMap = (0..5_000u64).map(|key| (key, key + 1_000_000)).collect();
        let full = store_full(&storage, &mut batch, &expected, &mut pending).expect("full");
        let mut current = full;
        let mut checks = Vec::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        let steps = 3_000u64;
        for step in 0..steps {
            // Mostly keys already set, some new ones, sometimes two at once.
            let key = next_random(&mut seed) % 6_000;
            let mut changes = vec![(key, 2_000_000 + step)];
            if step % 7 == 0 {
                changes.push((next_random(&mut seed) % 6_000, 3_000_000 + step));
            }
            current = derive(&storage, &mut batch, Some(current), &changes, &mut pending)
                .expect("derive");
            expected.extend(changes.iter().copied());
            if step % 101 == 0 || step + 1 == steps {
                checks.push((current, expected.clone()));
            }
            if batch.len() > 500 {
                storage.apply(std::mem::take(&mut batch)).expect("apply");
                pending.clear();
            }
        }
        storage.apply(batch).expect("apply");
        for (id, state) in &checks {
            assert_eq!(&load(&storage, *id).expect("load"), state);
            assert!(chain_length(&storage, *id) <= 13, "one record per bit");
        }
        // The entries written after the full copy: a few per step, not the state's size
        // again every few steps (the older layout wrote 5,000 every 32 steps: ~470,000).
        let written: usize = storage
            .snapshot_data
            .iter()
            .map(|entry| entry.expect("entry").1)
            .filter(|record| record.parent.is_some())
            .map(|record| record.set.len() + record.removed.len())
            .sum();
        assert!(
            written < 40_000,
            "{written} entries written for {steps} steps"
        );
        assert!(
            storage
                .snapshot_data
                .iter()
                .filter(|entry| entry.as_ref().expect("entry").1.parent.is_none())
                .count()
                == 1,
            "one full copy"
        );
    }

    #[test]
    fn forks_and_the_older_layout_read_back_and_are_built_upon() {
        let (_dir, storage) = crate::storage::testing::temporary();
        let mut pending = BTreeMap::new();
        let mut batch = Batch::new();
        // The older layout: a full copy, then deltas one step each, one removing a key.
        let full = store_full(
            &storage,
            &mut batch,
            &StateMap::from([(1, 10), (2, 20)]),
            &mut pending,
        )
        .expect("full");
        let mut expected = StateMap::from([(1, 10), (2, 20)]);
        let mut current = full;
        for depth in 1..=5u32 {
            let key = u64::from(depth) + 2;
            let record = SnapshotRecord {
                parent: Some(current),
                depth,
                set: vec![(key, 100 + key)],
                removed: if depth == 3 { vec![2] } else { Vec::new() },
            };
            expected.insert(key, 100 + key);
            if depth == 3 {
                expected.remove(&2);
            }
            current = 1_000 + u64::from(depth);
            storage
                .snapshot_data
                .batch_insert(&mut batch, &current, &record)
                .expect("insert");
        }
        storage.apply(std::mem::take(&mut batch)).expect("apply");
        assert_eq!(load(&storage, current).expect("older layout"), expected);
        // Two forks from it, each built on for a while.
        let fork_point = current;
        let mut forks = Vec::new();
        for fork in 0..2u64 {
            let mut state = expected.clone();
            let mut id = fork_point;
            for step in 0..40u64 {
                let change = (step % 9, 10_000 * (fork + 1) + step);
                id = derive(&storage, &mut batch, Some(id), &[change], &mut pending)
                    .expect("derive");
                state.insert(change.0, change.1);
            }
            forks.push((id, state));
        }
        storage.apply(batch).expect("apply");
        for (id, state) in &forks {
            assert_eq!(&load(&storage, *id).expect("fork"), state);
        }
        assert_ne!(forks[0].1, forks[1].1);
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
