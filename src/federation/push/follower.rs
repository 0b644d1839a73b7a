//! The push follower: reads the global stream from the last position it handled (the
//! `push_position` counter) and queues, for each HTTP pusher of the user concerned, every
//! notification the push rules stored there (`usernotify_record`: only events whose rule
//! said `notify`, never the user's own) and a badge update after each of the user's read
//! receipts (read on another device: the phone's badge goes down). The items and the new
//! position are one batch, so a crash neither loses nor repeats them.

use std::collections::{BTreeMap, BTreeSet};

use ruma::{RoomId, UserId};
use serde_json::Value;

use super::queue;
use crate::storage::records::PushItem;
use crate::storage::{Batch, Storage, StorageError};

/// The counter holding the last stream position handled.
pub(crate) const POSITION_COUNTER: &str = "push_position";

/// Stream positions handled in one batch.
const POSITIONS_PER_BATCH: u64 = 200;

/// Where the follower stands. The very first start begins at the present: old
/// notifications are not pushed.
pub(crate) fn start(storage: &Storage, now: u64) -> Result<u64, StorageError> {
    if let Some(handled) = storage.counter(POSITION_COUNTER)? {
        return Ok(handled);
    }
    let mut batch = Batch::new();
    storage.batch_set_counter(&mut batch, POSITION_COUNTER, now);
    storage.apply(batch)?;
    Ok(now)
}

/// Queues what positions `(handled, upto]` hold for pushers; returns the new position and
/// whether anything was queued.
///
/// A span that queued items is flushed before they can be delivered: were the items lost
/// in a crash after a delivery, they would be queued and pushed again. A span that queued
/// nothing (every message of a server without pushers) is not flushed: losing its new
/// position in a crash only means reading those positions again, which queues nothing
/// twice (the items and the position are one batch), so an fdatasync per received
/// transaction or sent message would buy nothing.
pub(crate) async fn catch_up(
    storage: &Storage,
    mut handled: u64,
    upto: u64,
) -> Result<(u64, bool), StorageError> {
    let mut queued = false;
    while handled < upto {
        let pushers = http_pushers(storage)?;
        // Without pushers no position is read: the rest is one span, one small write (a
        // join sets aside a million positions at once).
        let to = if pushers.is_empty() {
            upto
        } else {
            upto.min(handled.saturating_add(POSITIONS_PER_BATCH))
        };
        if handle_span(storage, &pushers, handled, to)? {
            storage.flush().await?;
            queued = true;
        }
        handled = to;
    }
    Ok((handled, queued))
}

/// One batch: the span's items for `pushers` and the counter.
fn handle_span(
    storage: &Storage,
    pushers: &[(String, Vec<Value>)],
    from: u64,
    to: u64,
) -> Result<bool, StorageError> {
    let mut new: BTreeMap<String, Vec<(u64, PushItem)>> = BTreeMap::new();
    let now_ms = crate::matrix::time::now_ms();
    // Without pushers nothing is read but the span's end (no scan of its positions).
    let receipts = if pushers.is_empty() {
        Vec::new()
    } else {
        receipt_rooms(storage, from, to)?
    };
    for (user, user_pushers) in pushers {
        let mut queue_for_user =
            |position: u64, room: Option<String>, event: Option<(String, Value)>| {
                for pusher in user_pushers {
                    let since = pusher[crate::users::push_rules::SINCE]
                        .as_u64()
                        .unwrap_or(0);
                    if position <= since {
                        continue;
                    }
                    let (event_id, actions) = event.clone().unzip();
                    let item = PushItem {
                        user_id: user.clone(),
                        app_id: text(pusher, "app_id"),
                        pushkey: text(pusher, "pushkey"),
                        room_id: room.clone(),
                        event_id,
                        actions: actions.unwrap_or(Value::Null),
                        queued_ms: now_ms,
                    };
                    let key = queue::pusher_key(user, &item.app_id, &item.pushkey);
                    new.entry(key).or_default().push((position, item));
                }
            };
        for entry in storage
            .usernotify_record
            .range(&(user.clone(), from + 1), &(user.clone(), to))
        {
            let ((_, position), stored) = entry?;
            let Some(record) = crate::rooms::notifications::resolve(storage, position, stored)?
            else {
                continue;
            };
            queue_for_user(
                position,
                Some(record.room_id),
                Some((record.event_id, record.actions)),
            );
        }
        let Ok(user_id) = UserId::parse(user.as_str()) else {
            continue;
        };
        for (position, room_id) in &receipts {
            let read_here = crate::sync::receipts::own_changed(
                storage,
                room_id,
                &user_id,
                Some(position - 1),
                *position,
            )?;
            if read_here {
                queue_for_user(*position, None, None);
            }
        }
    }
    let queued = !new.is_empty();
    let mut batch = Batch::new();
    queue::stage(storage, &mut batch, new)?;
    storage.batch_set_counter(&mut batch, POSITION_COUNTER, to);
    storage.apply(batch)?;
    Ok(queued)
}

/// The positions of `(from, to]` that hold a receipt (a room change with no event), with
/// their room.
fn receipt_rooms(
    storage: &Storage,
    from: u64,
    to: u64,
) -> Result<Vec<(u64, ruma::OwnedRoomId)>, StorageError> {
    let mut receipts = Vec::new();
    let mut seen = BTreeSet::new();
    for entry in storage.stream_room.range(&(from + 1), &to) {
        let (position, room) = entry?;
        if storage
            .roomstream_eventid
            .contains_key(&(room.clone(), position))?
        {
            continue;
        }
        if let Ok(room_id) = RoomId::parse(room.as_str())
            && seen.insert(position)
        {
            receipts.push((position, room_id));
        }
    }
    Ok(receipts)
}

/// Every user's HTTP pushers (a family server has a handful).
fn http_pushers(storage: &Storage) -> Result<Vec<(String, Vec<Value>)>, StorageError> {
    let mut all = Vec::new();
    for entry in storage.userid_pushers.iter() {
        let (user, pushers) = entry?;
        let http: Vec<Value> = pushers
            .into_iter()
            .filter(|pusher| pusher["kind"] == "http")
            .collect();
        if !http.is_empty() {
            all.push((user, http));
        }
    }
    Ok(all)
}

fn text(pusher: &Value, field: &str) -> String {
    pusher[field].as_str().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::records::StoredNotification;

    const USER: &str = "@alice:here.test";
    const ROOM: &str = "!room:here.test";

    /// A notification for `USER` at `position`, as storing an event writes it.
    fn notification(storage: &Storage, position: u64) {
        let mut batch = Batch::new();
        storage
            .stream_room
            .batch_insert(&mut batch, &position, &ROOM.to_owned())
            .expect("stream");
        storage
            .roomstream_eventid
            .batch_insert(
                &mut batch,
                &(ROOM.to_owned(), position),
                &format!("$e{position}"),
            )
            .expect("event");
        let record = StoredNotification {
            actions: serde_json::json!(["notify"]),
            highlight: false,
            thread: None,
            ts: 1,
        };
        storage
            .usernotify_record
            .batch_insert(&mut batch, &(USER.to_owned(), position), &record)
            .expect("notification");
        storage.apply(batch).expect("apply");
    }

    #[actix_web::test]
    async fn spans_that_queue_nothing_are_not_flushed_and_those_that_queue_are() {
        let (_dir, storage) = crate::storage::testing::temporary();
        let handled = start(&storage, 0).expect("start");
        for position in 1..=3 {
            notification(&storage, position);
        }
        // No pushers: the position moves on, nothing is queued, nothing flushed.
        let flushes = storage.flushes_begun();
        let (handled, queued) = catch_up(&storage, handled, 3).await.expect("catch up");
        assert_eq!((handled, queued), (3, false));
        assert_eq!(storage.counter(POSITION_COUNTER).expect("counter"), Some(3));
        assert_eq!(storage.flushes_begun(), flushes);

        // A pusher: what it is sent is flushed before it can be delivered.
        let pusher = serde_json::json!({
            "kind": "http", "app_id": "org.example.phone", "pushkey": "key",
            "data": { "url": "https://push.example/_matrix/push/v1/notify" },
        });
        storage
            .userid_pushers
            .insert(&USER.to_owned(), &vec![pusher])
            .expect("pusher");
        for position in 4..=5 {
            notification(&storage, position);
        }
        let (handled, queued) = catch_up(&storage, handled, 5).await.expect("catch up");
        assert_eq!((handled, queued), (5, true));
        assert!(storage.flushes_begun() > flushes);
        let key = queue::pusher_key(USER, "org.example.phone", "key");
        let (first, item) = queue::first(&storage, &key).expect("read").expect("queued");
        assert_eq!(first, 4, "only positions after the last handled");
        assert_eq!(item.event_id.as_deref(), Some("$e4"));
    }
}
