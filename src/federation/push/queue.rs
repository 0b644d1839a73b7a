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
