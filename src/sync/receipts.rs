//! Read receipts (spec: client-server API, "Receipts", "Read Markers"): durable, ordered in
//! the global stream like events, shown to room members through `/sync`. Private receipts
//! (`m.read.private`) go only to their owner.

use ruma::{RoomId, UserId};
use serde_json::{Map, Value, json};

use crate::error::{Error, ErrorKind};
use crate::storage::stream::Stream;
use crate::storage::{Storage, StorageError, pair_prefix};

pub(crate) const PUBLIC: &str = "m.read";
pub(crate) const PRIVATE: &str = "m.read.private";

pub(crate) use crate::storage::records::ReceiptRecord;

/// Records `user`'s receipt of `kind` at `event_id` (a thread's, with `thread_id`).
pub(crate) async fn set(
    storage: &Storage,
    stream: &Stream,
    room_id: &RoomId,
    user_id: &UserId,
    kind: &str,
    event_id: &str,
    thread_id: Option<String>,
) -> Result<(), Error> {
    let ts = crate::matrix::time::now_ms();
    set_at(
        storage,
        stream,
        room_id,
        user_id,
        (kind, event_id),
        thread_id,
        ts,
    )
    .await
}

/// Like [`set`], with the time the receipt was made: another server's receipts keep theirs.
pub(crate) async fn set_at(
    storage: &Storage,
    stream: &Stream,
    room_id: &RoomId,
    user_id: &UserId,
    (kind, event_id): (&str, &str),
    thread_id: Option<String>,
    ts: u64,
) -> Result<(), Error> {
    let key = (
        room_id.to_string(),
        kind.to_owned(),
        format!("{user_id}\u{0}{}", thread_id.as_deref().unwrap_or("")),
    );
    // Both public and private read receipts mark notifications read, the further one wins.
    let read_upto = storage
        .eventid_meta
        .get(&event_id.to_owned())?
        .filter(|meta| meta.room_id == room_id.as_str())
        .map(|meta| meta.stream);
    let read_thread = thread_id.clone().unwrap_or_default();
    stream
        .commit_at_next_position::<Error>(storage, |batch, stream| {
            let record = ReceiptRecord {
                user_id: user_id.to_string(),
                event_id: event_id.to_owned(),
                ts,
                thread_id,
                stream,
            };
            if let Some(position) = read_upto {
                crate::rooms::notifications::mark_read(
                    storage,
                    batch,
                    (user_id.as_str(), room_id.as_str(), &read_thread),
                    position,
                )?;
            }
            Stream::stage_room_change(storage, batch, stream, room_id.as_str())?;
            Ok(storage
                .roomreceipt_record
                .batch_insert(batch, &key, &record)?)
        })
        .await?;
    Ok(())
}

/// Whether `user_id` set a read receipt (public or private) in the room at a position in
/// `(since, upto]`: their unread counts there may have changed.
pub(crate) fn own_changed(
    storage: &Storage,
    room_id: &RoomId,
    user_id: &UserId,
    since: Option<u64>,
    upto: u64,
) -> Result<bool, StorageError> {
    let Some(since) = since else {
        return Ok(false);
    };
    for kind in [PUBLIC, PRIVATE] {
        let mut prefix = pair_prefix(room_id.as_str());
        prefix.extend_from_slice(&pair_prefix(kind));
        prefix.extend_from_slice(user_id.as_str().as_bytes());
        prefix.push(0);
        for entry in storage.roomreceipt_record.scan_prefix(&prefix) {
            let (_, record) = entry?;
            if record.stream > since && record.stream <= upto {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// The `m.receipt` event for `viewer` with the receipts of `room` changed after `since`
/// (all of them without it) up to `upto`, if any.
pub(crate) fn changes(
    storage: &Storage,
    room_id: &RoomId,
    viewer: &UserId,
    since: Option<u64>,
    upto: u64,
) -> Result<Option<Value>, StorageError> {
    let mut content: Map<String, Value> = Map::new();
    for entry in storage
        .roomreceipt_record
        .scan_prefix(&pair_prefix(room_id.as_str()))
    {
        let ((_, kind, _), record) = entry?;
        if since.is_some_and(|since| record.stream <= since) || record.stream > upto {
            continue;
        }
        if kind == PRIVATE && record.user_id != viewer.as_str() {
            continue;
        }
        let mut receipt = json!({ "ts": record.ts });
        if let Some(thread_id) = &record.thread_id {
            receipt["thread_id"] = json!(thread_id);
        }
        let by_event = content
            .entry(record.event_id.clone())
            .or_insert_with(|| json!({}));
        by_event[&kind][&record.user_id] = receipt;
    }
    Ok((!content.is_empty()).then(|| json!({ "type": "m.receipt", "content": content })))
}

/// What the client-server endpoints ask of receipts, over the sync service's database and
/// the room service's stream (receipts reach `/sync` in the same order as events).
impl super::SyncService {
    /// The checks of `POST /receipt` before anything is stored, in the order the errors
    /// are given: `user_id` is joined (`403`), the event is the room's (`404`), a threaded
    /// receipt's event is in that thread and the thread is `main` or one of the room's
    /// events (`400`; `m.fully_read` takes no thread), and `kind` is a receipt type
    /// (`400`). `m.fully_read` is account data: the caller stores it through the users
    /// service.
    pub(crate) fn check_receipt(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        kind: &str,
        event_id: &str,
        thread_id: Option<&str>,
    ) -> Result<(), Error> {
        self.rooms.require_joined(user_id, room_id)?;
        self.require_room_event(room_id, event_id)?;
        // A threaded receipt's event must be in that thread (`main`: in no thread).
        if let Some(thread) = thread_id
            && kind != "m.fully_read"
            && thread.len() <= 255
        {
            let belongs = match self.rooms.thread_of(room_id, event_id)? {
                Some(root) => root == thread,
                // The root of a thread is in the main timeline; so are unthreaded events.
                None => thread == crate::rooms::notifications::MAIN || thread == event_id,
            };
            if !belongs {
                return Err(Error::new(
                    ErrorKind::InvalidParam,
                    "The event is not in the thread thread_id names",
                ));
            }
        }
        // A receipt's thread is `main` or the root event of a thread in this room.
        if let Some(thread) = thread_id
            && thread != "main"
        {
            if kind == "m.fully_read" {
                return Err(Error::new(
                    ErrorKind::InvalidParam,
                    "m.fully_read takes no thread_id",
                ));
            }
            if thread.len() > 255 || self.require_room_event(room_id, thread).is_err() {
                return Err(Error::new(
                    ErrorKind::InvalidParam,
                    "thread_id must be main or an event of this room",
                ));
            }
        }
        match kind {
            PUBLIC | PRIVATE | "m.fully_read" => Ok(()),
            _ => Err(Error::new(
                ErrorKind::InvalidParam,
                format!("Unknown receipt type {kind}"),
            )),
        }
    }

    /// Records `user_id`'s receipt of `kind` (`m.read` or `m.read.private`) at `event_id`,
    /// now (see [`set`]).
    pub(crate) async fn set_receipt(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        kind: &str,
        event_id: &str,
        thread_id: Option<String>,
    ) -> Result<(), Error> {
        set(
            &self.storage,
            &self.rooms.stream,
            room_id,
            user_id,
            kind,
            event_id,
            thread_id,
        )
        .await
    }

    /// `404` unless `event_id` is one of the room's events: a receipt points at one.
    fn require_room_event(&self, room_id: &RoomId, event_id: &str) -> Result<(), Error> {
        if self.rooms.is_room_event(room_id, event_id)? {
            Ok(())
        } else {
            Err(Error::not_found("No such event in this room"))
        }
    }
}
