//! Device-list changes (spec: client-server API, "Tracking the device list for a user";
//! server-server API, "Device Management"): a row on the global stream each time a user's
//! devices change (a new device, keys uploaded, a rename, a deletion), for one of our
//! users or another server's user we share a room with. `/sync`'s `device_lists.changed`
//! and `/keys/changes` read these rows; the outbound follower turns our users' rows into
//! `m.device_list_update` EDUs, whose `stream_id` is the row's position and `prev_id` the
//! user's change before it.
//!
//! This module alone writes `stream_devicechange` and `userid_devicestream`. Only each
//! user's newest row is kept, so the tree holds one row per user who ever changed a
//! device, however often they do. A row the outbound follower has not sent yet (a login
//! and its key upload a moment later) is folded into the new one, which takes over its
//! devices and its `prev_id`: other servers see one update, in order. (A row replaced
//! after it was sent is simply history.)
//!
//! The row is written at its own stream position right after the change it describes
//! (not in the same batch): a crash between the two loses the notification, not the
//! change; the next change of that user tells everyone again.

use ruma::UserId;

use crate::storage::records::DeviceChangeRecord;
use crate::storage::stream::Stream;
use crate::storage::{Storage, StorageError};

/// The counter of the last stream position the outbound federation follower handled
/// (`crate::federation::outbound`, which uses this name): rows after it are not sent yet.
pub(crate) const OUTBOUND_POSITION_COUNTER: &str = "outbound_position";

/// The most device IDs one row remembers (folded rows add up): past it, the oldest are
/// dropped, and remote servers that missed them resync.
const MAX_DEVICES_PER_ROW: usize = 100;

/// Notes that `devices` of `user_id` changed (empty: the user's keys as a whole, such as
/// cross-signing keys), at the next stream position, flushed and published so long-polling
/// `/sync`s wake. Returns the position. This is the "user's keys changed" hook: anything
/// that changes what `/keys/query` answers for a user calls it.
pub(crate) async fn note_change(
    storage: &Storage,
    stream: &Stream,
    user_id: &UserId,
    devices: &[String],
) -> Result<u64, StorageError> {
    let user = user_id.as_str().to_owned();
    stream
        .commit_at_next_position::<StorageError>(storage, |batch, position| {
            let prev_id = storage.userid_devicestream.get(&user)?;
            let mut record = DeviceChangeRecord {
                user_id: user.clone(),
                devices: Vec::new(),
                prev_id,
            };
            if let Some(previous) = prev_id {
                let sent = storage.counter(OUTBOUND_POSITION_COUNTER)?.unwrap_or(0);
                if previous > sent
                    && let Some(unsent) = storage.stream_devicechange.get(&previous)?
                {
                    record.devices = unsent.devices;
                    record.prev_id = unsent.prev_id;
                }
                storage.stream_devicechange.batch_remove(batch, &previous);
            }
            for device in devices {
                if !record.devices.contains(device) {
                    record.devices.push(device.clone());
                }
            }
            let excess = record.devices.len().saturating_sub(MAX_DEVICES_PER_ROW);
            record.devices.drain(..excess);
            storage
                .stream_devicechange
                .batch_insert(batch, &position, &record)?;
            storage
                .userid_devicestream
                .batch_insert(batch, &user, &position)
        })
        .await
}

/// The position of the user's newest device-list change (0 if none): the `stream_id` of
/// `/user/devices`.
pub(crate) fn latest_position(storage: &Storage, user_id: &UserId) -> Result<u64, StorageError> {
    Ok(storage
        .userid_devicestream
        .get(&user_id.as_str().to_owned())?
        .unwrap_or(0))
}

/// The changes at positions `(after, upto]`, oldest first, with their positions.
/// One row per user at most, so this is bounded by the users whose devices changed.
pub(crate) fn changes_between(
    storage: &Storage,
    after: u64,
    upto: u64,
) -> Result<Vec<(u64, DeviceChangeRecord)>, StorageError> {
    if after >= upto {
        return Ok(Vec::new());
    }
    storage
        .stream_devicechange
        .range(&(after + 1), &upto)
        .collect()
}

#[cfg(test)]
mod tests {
    use ruma::user_id;

    use super::*;

    #[tokio::test]
    async fn a_users_changes_fold_into_one_row_that_names_the_previous() {
        let (_dir, storage) = crate::storage::testing::temporary();
        let stream = Stream::new(storage.current_stream_position().expect("position"));
        let alice = user_id!("@alice:localhost");
        let bob = user_id!("@bob:localhost");
        let first = note_change(&storage, &stream, alice, &["A".into()])
            .await
            .expect("note");
        let other = note_change(&storage, &stream, bob, &["B".into()])
            .await
            .expect("note");
        let second = note_change(&storage, &stream, alice, &["A2".into()])
            .await
            .expect("note");
        let rows = changes_between(&storage, 0, second).expect("rows");
        assert_eq!(rows.len(), 2, "one row per user: {rows:?}");
        assert_eq!(rows[0].0, other);
        assert_eq!(rows[1].0, second);
        // Nothing was sent yet: the first row is folded in, `prev_id` and all.
        assert_eq!(rows[1].1.prev_id, None);
        assert_eq!(rows[1].1.devices, vec!["A".to_owned(), "A2".to_owned()]);
        // Once sent, a row is not folded: the next names it.
        let mut batch = crate::storage::Batch::new();
        storage.batch_set_counter(&mut batch, OUTBOUND_POSITION_COUNTER, second);
        storage.apply(batch).expect("counter");
        let third = note_change(&storage, &stream, alice, &["A3".into()])
            .await
            .expect("note");
        let rows = changes_between(&storage, second, third).expect("rows");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].1.prev_id, Some(second));
        assert_eq!(rows[0].1.devices, vec!["A3".to_owned()]);
        assert!(first < second);
        assert_eq!(latest_position(&storage, alice).expect("latest"), third);
        assert_eq!(stream.visible_position(), third);
        assert!(
            changes_between(&storage, third, third)
                .expect("rows")
                .is_empty()
        );
    }
}
