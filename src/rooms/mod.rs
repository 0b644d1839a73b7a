//! Rooms: the event graph of each room, its current state, its timeline, and who is in it.
//!
//! Every event, local or (later) remote, goes through [`Rooms::append`]'s path: it is a PDU
//! that passed the room version's authorization rules against the room's current state, and
//! is then stored with its indexes in one batch, flushed before anyone is told it exists.
//! Appends to one room are serialized (one lock per room); rooms proceed in parallel.

pub mod create;
pub mod format;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ruma::events::StateEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedRoomId, RoomId,
    RoomVersionId, UserId,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::crypto::SigningKey;
use crate::error::{Error, ErrorKind};
use crate::events::Pdu;
use crate::events::builder::{BuildError, NewEvent, RoomContext, build_event};
use crate::storage::{Batch, Storage, StorageError, pair_prefix};

/// What is kept per room (`roomid_room`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomRecord {
    pub version: String,
    /// The forward extremities and their depths: the `prev_events` of the next event.
    pub extremities: Vec<(OwnedEventId, u64)>,
}

/// Where an event sits (`eventid_meta`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventMeta {
    pub room_id: String,
    pub stream: u64,
}

/// A user's membership of a room (`userroom_membership`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipRecord {
    pub membership: String,
    /// The stream position of the membership event.
    pub stream: u64,
    pub event_id: String,
}

/// The room service: storage access plus the per-room locks and the stream notifier.
pub struct Rooms {
    locks: Mutex<HashMap<OwnedRoomId, Arc<tokio::sync::Mutex<()>>>>,
    /// Held while a stream position is taken and its batch applied (see [`Rooms::store`]).
    ordered: Mutex<()>,
    /// The newest stream position; `/sync` long-polls wait for it to change.
    stream: watch::Sender<u64>,
}

impl Rooms {
    pub fn new(current_position: u64) -> Rooms {
        Rooms {
            locks: Mutex::new(HashMap::new()),
            ordered: Mutex::new(()),
            stream: watch::channel(current_position).0,
        }
    }

    /// A receiver that changes whenever anything is appended.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.stream.subscribe()
    }

    fn lock_for(&self, room_id: &RoomId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        // Locks no one holds are dropped, so the map stays as small as the active rooms.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(room_id.to_owned()).or_default().clone()
    }

    /// Builds, authorizes and stores an event by `sender` in an existing room.
    pub async fn append(
        &self,
        storage: &Storage,
        key: &SigningKey,
        room_id: &RoomId,
        sender: &UserId,
        new: NewEvent,
    ) -> Result<Pdu, Error> {
        self.append_with_txn(storage, key, room_id, sender, new, None)
            .await
    }

    /// Like [`Rooms::append`], and records the client's transaction ID in the same batch,
    /// so a retry after a crash finds the event instead of sending it twice.
    pub async fn append_with_txn(
        &self,
        storage: &Storage,
        key: &SigningKey,
        room_id: &RoomId,
        sender: &UserId,
        new: NewEvent,
        txn: Option<&TxnKey>,
    ) -> Result<Pdu, Error> {
        let lock = self.lock_for(room_id);
        let _serialized = lock.lock().await;
        let room = storage
            .roomid_room
            .get(&room_id.to_string())?
            .ok_or_else(|| Error::not_found("No such room"))?;
        let rules = rules_of(&room)?;
        let (pdu, json) = build_in_room(
            storage,
            key,
            &rules,
            Some(room_id),
            &room.extremities,
            sender,
            new,
        )?;
        let mut batch = Batch::new();
        if let Some(txn) = txn {
            storage
                .txn_eventid
                .batch_insert(&mut batch, txn, &pdu.event_id.to_string())?;
        }
        self.store(storage, room_id, &room.version, &pdu, &json, batch)
            .await?;
        Ok(pdu)
    }

    /// Stores an authorized event with its indexes (and `batch`'s writes) in one batch,
    /// wakes `/sync`, and flushes before returning.
    ///
    /// Stream positions become visible in order: a position is taken and its batch applied
    /// under one short lock, and only then published. A reader that sees position N has
    /// every event up to N, so no `/sync` can step over an event still being written.
    /// Readers may see an event a few milliseconds before it is flushed; the sender's `200`
    /// waits for the flush.
    pub async fn store(
        &self,
        storage: &Storage,
        room_id: &RoomId,
        version: &str,
        pdu: &Pdu,
        json: &CanonicalJsonObject,
        mut batch: Batch,
    ) -> Result<u64, Error> {
        let room = room_id.to_string();
        let event_id = pdu.event_id.to_string();
        let text = CanonicalJsonValue::Object(json.clone()).to_string();
        storage
            .eventid_pdu
            .batch_insert(&mut batch, &event_id, &text)?;
        let record = RoomRecord {
            version: version.to_owned(),
            extremities: vec![(pdu.event_id.clone(), pdu.depth)],
        };
        storage
            .roomid_room
            .batch_insert(&mut batch, &room, &record)?;
        let position = {
            let _ordered = self
                .ordered
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            let position = storage.next_stream_position()?;
            let meta = EventMeta {
                room_id: room.clone(),
                stream: position,
            };
            storage
                .eventid_meta
                .batch_insert(&mut batch, &event_id, &meta)?;
            storage.roomstream_eventid.batch_insert(
                &mut batch,
                &(room.clone(), position),
                &event_id,
            )?;
            if let Some(state_key) = &pdu.state_key {
                let key = (room.clone(), pdu.kind.to_string(), state_key.clone());
                storage
                    .roomstate_eventid
                    .batch_insert(&mut batch, &key, &event_id)?;
                if pdu.kind == ruma::events::TimelineEventType::RoomMember {
                    let record = MembershipRecord {
                        membership: membership_of(pdu),
                        stream: position,
                        event_id: event_id.clone(),
                    };
                    storage.userroom_membership.batch_insert(
                        &mut batch,
                        &(state_key.clone(), room.clone()),
                        &record,
                    )?;
                }
            }
            storage.apply(batch)?;
            self.stream.send_replace(position);
            position
        };
        storage.flush().await?;
        Ok(position)
    }

    /// The newest stream position whose event (and every earlier one) is stored.
    pub fn visible_position(&self) -> u64 {
        *self.stream.borrow()
    }
}

/// A client's transaction: user, device, and room with transaction ID.
pub type TxnKey = (String, String, String);

/// The rules of a stored room's version.
pub fn rules_of(room: &RoomRecord) -> Result<RoomVersionRules, Error> {
    RoomVersionId::try_from(room.version.as_str())
        .ok()
        .and_then(|version| version.rules())
        .ok_or_else(|| Error::internal(format!("unknown stored room version {}", room.version)))
}

/// Builds an event against the stored current state of `room_id` (or, for the create event
/// of a version 12 room, no room yet).
pub fn build_in_room(
    storage: &Storage,
    key: &SigningKey,
    rules: &RoomVersionRules,
    room_id: Option<&RoomId>,
    extremities: &[(OwnedEventId, u64)],
    sender: &UserId,
    new: NewEvent,
) -> Result<(Pdu, CanonicalJsonObject), Error> {
    let room = room_id.map(ToString::to_string).unwrap_or_default();
    let state = |kind: &StateEventType, state_key: &str| -> Option<Pdu> {
        let id = storage
            .roomstate_eventid
            .get(&(room.clone(), kind.to_string(), state_key.to_owned()))
            .map_err(log_storage_error)
            .ok()??;
        load_pdu(storage, &id, rules)
            .map_err(log_storage_error)
            .ok()?
    };
    let event = |id: &EventId| -> Option<Pdu> {
        load_pdu(storage, id.as_str(), rules)
            .map_err(log_storage_error)
            .ok()?
    };
    let context = RoomContext {
        rules,
        room_id,
        prev_events: extremities,
        state: &state,
        event: &event,
    };
    build_event(new, sender, &context, key, crate::accounts::now_ms()).map_err(build_error)
}

fn log_storage_error(err: StorageError) -> StorageError {
    tracing::error!("reading room state: {err}");
    err
}

/// Maps the builder's refusals to the client API's errors.
pub fn build_error(err: BuildError) -> Error {
    match err {
        BuildError::Forbidden(reason) => {
            Error::new(ErrorKind::Forbidden, format!("Not allowed: {reason}"))
        }
        BuildError::TooLarge => {
            Error::new(ErrorKind::TooLarge, "The event is larger than 65536 bytes")
        }
        BuildError::Invalid(reason) => Error::new(ErrorKind::BadJson, reason),
    }
}

/// The stored event `event_id`, parsed.
pub fn load_pdu(
    storage: &Storage,
    event_id: &str,
    rules: &RoomVersionRules,
) -> Result<Option<Pdu>, StorageError> {
    let Some(json) = load_json(storage, event_id)? else {
        return Ok(None);
    };
    Pdu::from_json(&json, rules)
        .map(Some)
        .map_err(|err| StorageError::Corrupt(format!("stored event {event_id}: {err}")))
}

/// The stored canonical JSON of `event_id`.
pub fn load_json(
    storage: &Storage,
    event_id: &str,
) -> Result<Option<CanonicalJsonObject>, StorageError> {
    let Some(text) = storage.eventid_pdu.get(&event_id.to_owned())? else {
        return Ok(None);
    };
    match serde_json::from_str::<serde_json::Value>(&text).map(CanonicalJsonValue::try_from) {
        Ok(Ok(CanonicalJsonValue::Object(object))) => Ok(Some(object)),
        _ => Err(StorageError::Corrupt(format!(
            "stored event {event_id} is not a JSON object"
        ))),
    }
}

/// `content.membership` of a member event (`leave` if unreadable).
pub fn membership_of(pdu: &Pdu) -> String {
    serde_json::from_str::<serde_json::Value>(pdu.content.get())
        .ok()
        .and_then(|content| {
            content
                .get("membership")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "leave".to_owned())
}

/// A user's membership of a room, if any.
pub fn membership(
    storage: &Storage,
    user_id: &UserId,
    room_id: &RoomId,
) -> Result<Option<MembershipRecord>, StorageError> {
    storage
        .userroom_membership
        .get(&(user_id.to_string(), room_id.to_string()))
}

/// Every room a user has a membership in, with it.
pub fn memberships(
    storage: &Storage,
    user_id: &UserId,
) -> Result<Vec<(OwnedRoomId, MembershipRecord)>, StorageError> {
    storage
        .userroom_membership
        .scan_prefix(&pair_prefix(user_id.as_str()))
        .map(|entry| {
            let ((_, room), record) = entry?;
            let room = OwnedRoomId::try_from(room)
                .map_err(|err| StorageError::Corrupt(err.to_string()))?;
            Ok((room, record))
        })
        .collect()
}

/// One entry of a room's state: `((type, state_key), event ID)`.
pub type StateEntry = ((String, String), String);

/// The current state of a room.
pub fn current_state(storage: &Storage, room_id: &RoomId) -> Result<Vec<StateEntry>, StorageError> {
    storage
        .roomstate_eventid
        .scan_prefix(&pair_prefix(room_id.as_str()))
        .map(|entry| entry.map(|((_, kind, key), id)| ((kind, key), id)))
        .collect()
}

/// The event of the current state with this type and key.
pub fn state_event(
    storage: &Storage,
    room_id: &RoomId,
    kind: &str,
    state_key: &str,
) -> Result<Option<String>, StorageError> {
    storage
        .roomstate_eventid
        .get(&(room_id.to_string(), kind.to_owned(), state_key.to_owned()))
}
