//! The durable queue of each pusher (`pusherstream_push`): what waits to go to its
//! gateway, keyed by the stream position it came from, so it survives a restart and goes
//! out in order. Each queue is bounded: at [`MAX_QUEUED`] the oldest item is dropped (and
//! logged), so a phone that stays unreachable costs a bounded amount of disk.

use std::collections::{BTreeMap, BTreeSet};

use crate::storage::records::PushItem;
use crate::storage::{Batch, Storage, StorageError, pair_prefix};

/// The most items one pusher's queue holds.
pub(crate) const MAX_QUEUED: usize = 100;

/// The queue key of a pusher: user, app ID and pushkey.
pub(crate) fn pusher_key(user_id: &str, app_id: &str, pushkey: &str) -> String {
    format!("{user_id}\u{0}{app_id}\u{0}{pushkey}")
}

/// Adds `new` items (per pusher key, in stream order) to the queues in `batch`, dropping
/// the oldest of a queue that would go over [`MAX_QUEUED`].
pub(crate) fn stage(
    storage: &Storage,
    batch: &mut Batch,
    new: BTreeMap<String, Vec<(u64, PushItem)>>,
) -> Result<(), StorageError> {
    for (key, items) in new {
        let mut positions: Vec<u64> = storage
            .pusherstream_push
            .scan_prefix_keys(&pair_prefix(&key))
            .map(|entry| entry.map(|(_, position)| position))
            .collect::<Result<_, _>>()?;
        positions.extend(items.iter().map(|(position, _)| *position));
        let excess = positions.len().saturating_sub(MAX_QUEUED);
        if excess > 0 {
            tracing::warn!(
                user = key.split('\u{0}').next().unwrap_or_default(),
                dropped = excess,
                "push: a pusher's queue is full; its oldest notifications are dropped"
            );
        }
        let dropped: BTreeSet<u64> = positions.iter().take(excess).copied().collect();
        for position in &dropped {
            storage
                .pusherstream_push
                .batch_remove(batch, &(key.clone(), *position));
        }
        for (position, item) in items {
            if !dropped.contains(&position) {
                storage
                    .pusherstream_push
                    .batch_insert(batch, &(key.clone(), position), &item)?;
            }
        }
    }
    Ok(())
}

/// The oldest item waiting for the pusher, with its position.
pub(crate) fn first(storage: &Storage, key: &str) -> Result<Option<(u64, PushItem)>, StorageError> {
    storage
        .pusherstream_push
        .scan_prefix(&pair_prefix(key))
        .next()
        .transpose()
        .map(|entry| entry.map(|((_, position), item)| (position, item)))
}

/// Removes one delivered (or given up) item.
pub(crate) fn remove(storage: &Storage, key: &str, position: u64) -> Result<(), StorageError> {
    storage
        .pusherstream_push
        .remove(&(key.to_owned(), position))
}

/// Empties a pusher's queue (the pusher is gone).
pub(crate) fn clear(storage: &Storage, key: &str) -> Result<(), StorageError> {
    let mut batch = Batch::new();
    for entry in storage
        .pusherstream_push
        .scan_prefix_keys(&pair_prefix(key))
    {
        storage.pusherstream_push.batch_remove(&mut batch, &entry?);
    }
    storage.apply(batch)
}

/// The pushers with something queued. Walks the keys of every queue, each at most
/// [`MAX_QUEUED`] long.
pub(crate) fn waiting(storage: &Storage) -> Result<BTreeSet<String>, StorageError> {
    let mut keys = BTreeSet::new();
    for entry in storage.pusherstream_push.scan_prefix_keys(&[]) {
        let (key, _) = entry?;
        keys.insert(key);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn item(n: u64) -> PushItem {
        PushItem {
            user_id: "@bob:here".to_owned(),
            app_id: "app".to_owned(),
            pushkey: "key".to_owned(),
            room_id: Some("!room:here".to_owned()),
            event_id: Some(format!("$event{n}")),
            actions: Value::Null,
            queued_ms: n,
        }
    }

    fn stage_items(storage: &Storage, positions: std::ops::Range<u64>) {
        let key = pusher_key("@bob:here", "app", "key");
        let new = BTreeMap::from([(key, positions.map(|n| (n, item(n))).collect())]);
        let mut batch = Batch::new();
        stage(storage, &mut batch, new).expect("stage");
        storage.apply(batch).expect("apply");
    }

    #[test]
    fn a_full_queue_drops_its_oldest_items() {
        let (_dir, storage) = crate::storage::testing::temporary();
        let key = pusher_key("@bob:here", "app", "key");
        stage_items(&storage, 1..61);
        stage_items(&storage, 61..131);
        let kept: Vec<u64> = storage
            .pusherstream_push
            .scan_prefix_keys(&pair_prefix(&key))
            .map(|entry| entry.expect("key").1)
            .collect();
        assert_eq!(kept.len(), MAX_QUEUED);
        assert_eq!(kept.first(), Some(&31), "the 30 oldest went");
        assert_eq!(kept.last(), Some(&130));
        // Even a single batch larger than the bound keeps only its newest.
        stage_items(&storage, 200..420);
        let first = first(&storage, &key).expect("read").expect("an item");
        assert_eq!(first.0, 320);
        assert_eq!(waiting(&storage).expect("waiting").len(), 1);
        clear(&storage, &key).expect("clear");
        assert!(waiting(&storage).expect("waiting").is_empty());
    }
}
