//! Reading a room: its record, current state, state events and their content, memberships,
//! power levels, and the room version's rules; building events in a room.

use super::on_current::CurrentAuth;
use super::*;
use crate::error::{Error, ErrorKind};
use crate::matrix::crypto::SigningKey;
use crate::matrix::events::Pdu;
use crate::matrix::events::builder::{BuildError, NewEvent, RoomContext, build_event};
use crate::storage::snapshots;
use crate::storage::{Storage, StorageError, pair_prefix};
use ruma::events::StateEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedRoomId, RoomId,
    RoomVersionId, UserId,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub(super) fn load_room(storage: &Storage, room_id: &RoomId) -> Result<RoomRecord, Error> {
    storage
        .roomid_room
        .get(&room_id.to_string())?
        .ok_or_else(|| Error::not_found("No such room"))
}

/// The rules of a stored room's version.
/// Whether one of our users is joined to `room_id`: only then do the other servers in the
/// room send us its events, so that our copy of it is current. Read from the joined
/// members' summary (kept in memory): no scan of the room's memberships.
pub(crate) fn is_resident(
    storage: &Storage,
    our_server: &ruma::ServerName,
    room_id: &RoomId,
) -> Result<bool, StorageError> {
    Ok(storage
        .joined_summary(room_id.as_str())?
        .has_server(our_server.as_str()))
}

pub(crate) fn rules_of(room: &RoomRecord) -> Result<RoomVersionRules, Error> {
    RoomVersionId::try_from(room.version.as_str())
        .ok()
        .and_then(|version| version.rules())
        .ok_or_else(|| Error::internal(format!("unknown stored room version {}", room.version)))
}

/// Builds an event against the stored current state of `room_id`.
///
/// With `current` (the caller holds the room's lock, so `room` is its current record), the
/// auth events come from the room's decoded auth events of the current state, kept between
/// sends: a message in a busy room reads and hashes none of its auth events again.
pub(crate) fn build_in_room(
    storage: &Storage,
    current: Option<&CurrentAuth>,
    key: &SigningKey,
    rules: &RoomVersionRules,
    (room_id, room): (&RoomId, &RoomRecord),
    sender: &UserId,
    new: &NewEvent,
) -> Result<(Pdu, CanonicalJsonObject), Error> {
    // A lookup that fails must not look like "no such event": a ban that cannot be read
    // would vanish from the checks. The first failure is kept and fails the build.
    let failure: RefCell<Option<StorageError>> = RefCell::new(None);
    let keep = |result: Result<Option<Arc<Pdu>>, StorageError>| match result {
        Ok(found) => found,
        Err(err) => {
            failure.borrow_mut().get_or_insert(err);
            None
        }
    };
    let cached = current.zip(room.state);
    let state = |kind: &StateEventType, state_key: &str| -> Option<Arc<Pdu>> {
        let kind = kind.to_string();
        keep(match cached {
            Some((cache, snapshot)) => {
                cache.state_event(storage, rules, (room_id, snapshot), (&kind, state_key))
            }
            None => state_event(storage, room_id, &kind, state_key).and_then(|id| match id {
                Some(id) => Ok(load_pdu(storage, &id, rules)?.map(Arc::new)),
                None => Ok(None),
            }),
        })
    };
    let event = |id: &EventId| -> Option<Arc<Pdu>> {
        if let Some((cache, snapshot)) = cached
            && let Some(event) = cache.by_id(room_id, snapshot, id)
        {
            return Some(event);
        }
        keep(load_pdu(storage, id.as_str(), rules).map(|found| found.map(Arc::new)))
    };
    let context = RoomContext {
        rules,
        room_id: Some(room_id),
        prev_events: &room.extremities,
        state: &state,
        event: &event,
    };
    let built = build_event(new, sender, &context, key, crate::matrix::time::now_ms());
    if let Some(err) = failure.into_inner() {
        return Err(Error::internal(format!("reading room state: {err}")));
    }
    built.map_err(build_error)
}

/// Maps the builder's refusals to the client API's errors.
pub(crate) fn build_error(err: BuildError) -> Error {
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
pub(crate) fn load_pdu(
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
pub(crate) fn load_json(
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
pub(crate) fn membership_of(pdu: &Pdu) -> String {
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
pub(crate) fn membership(
    storage: &Storage,
    user_id: &UserId,
    room_id: &RoomId,
) -> Result<Option<MembershipRecord>, StorageError> {
    storage
        .userroom_membership
        .get(&(user_id.to_string(), room_id.to_string()))
}

/// Every room a user has a membership in, with it.
pub(crate) fn memberships(
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

/// The current state of a room.
pub(crate) fn current_state(
    storage: &Storage,
    room_id: &RoomId,
) -> Result<Vec<StateEntry>, StorageError> {
    storage
        .roomstate_eventid
        .scan_prefix(&pair_prefix(room_id.as_str()))
        .map(|entry| entry.map(|((_, kind, key), id)| ((kind, key), id)))
        .collect()
}

/// [`current_state`] as a map of short IDs (see [`snapshots`]).
pub(super) fn table_state(
    storage: &Storage,
    room_id: &RoomId,
) -> Result<snapshots::StateMap, StorageError> {
    let mut state = snapshots::StateMap::new();
    for ((kind, state_key), event_id) in current_state(storage, room_id)? {
        let key = snapshots::short_state_key(storage, &kind, &state_key)?;
        state.insert(key, snapshots::short_event_id(storage, &event_id)?);
    }
    Ok(state)
}

/// The lock of `room_id` in `locks`; locks no one holds are dropped, so the map stays as
/// small as the active rooms.
pub(super) fn lock_in(
    locks: &Mutex<HashMap<OwnedRoomId, Arc<tokio::sync::Mutex<()>>>>,
    room_id: &RoomId,
) -> Arc<tokio::sync::Mutex<()>> {
    let mut locks = locks.lock().unwrap_or_else(|poison| poison.into_inner());
    locks.retain(|_, lock| Arc::strong_count(lock) > 1);
    locks.entry(room_id.to_owned()).or_default().clone()
}

/// The event of the current state with this type and key.
pub(crate) fn state_event(
    storage: &Storage,
    room_id: &RoomId,
    kind: &str,
    state_key: &str,
) -> Result<Option<String>, StorageError> {
    storage
        .roomstate_eventid
        .get(&(room_id.to_string(), kind.to_owned(), state_key.to_owned()))
}

/// A power level named in the room's current `m.room.power_levels` content, by `pick`
/// (levels written as strings already read as integers, see [`power_levels`]).
pub(crate) fn power_level_for(
    storage: &Storage,
    room_id: &RoomId,
    pick: impl Fn(&serde_json::Value) -> i64,
) -> Result<i64, StorageError> {
    let content = power_levels(storage, room_id)?.unwrap_or_default();
    Ok(pick(&content))
}

/// The room's current `m.room.power_levels` content, with its levels as integers. Before
/// room version 10 the auth rules also read a level written as a string of an integer
/// (`"50"`, `" +50 "`), so such strings are turned into the integers they name here, where
/// the rules look for levels: the top-level fields and the `users`, `events` and
/// `notifications` maps. From version 10 on only integers count (the event could not have
/// passed the auth rules otherwise), and strings are left as they are, read by no one.
pub(crate) fn power_levels(
    storage: &Storage,
    room_id: &RoomId,
) -> Result<Option<serde_json::Value>, StorageError> {
    let Some(mut content) = state_content(storage, room_id, "m.room.power_levels", "")? else {
        return Ok(None);
    };
    let integer_only =
        room_rules(storage, room_id)?.is_none_or(|rules| rules.authorization.integer_power_levels);
    if !integer_only && let Some(fields) = content.as_object_mut() {
        for (name, value) in fields.iter_mut() {
            match (name.as_str(), value) {
                ("users" | "events" | "notifications", serde_json::Value::Object(levels)) => {
                    levels.values_mut().for_each(level_from_string);
                }
                (_, value) => level_from_string(value),
            }
        }
    }
    Ok(Some(content))
}

/// Turns a string naming an integer (as the pre-version-10 rules read it: spaces around, an
/// optional sign) into that integer; anything else stays as it is.
pub(super) fn level_from_string(value: &mut serde_json::Value) {
    let Some(text) = value.as_str() else {
        return;
    };
    let text = text.trim();
    let level = match text.strip_prefix('+') {
        Some(unsigned) if unsigned.starts_with(['+', '-']) => None,
        Some(unsigned) => unsigned.parse::<i64>().ok(),
        None => text.parse::<i64>().ok(),
    };
    if let Some(level) = level {
        *value = serde_json::Value::from(level);
    }
}

/// The rules of the room's version, as its create event names it (version 1 when it names
/// none); `None` for a version we do not know or a room without a create event.
pub(super) fn room_rules(
    storage: &Storage,
    room_id: &RoomId,
) -> Result<Option<RoomVersionRules>, StorageError> {
    let Some(create) = state_content(storage, room_id, "m.room.create", "")? else {
        return Ok(None);
    };
    let version = create
        .get("room_version")
        .and_then(|v| v.as_str())
        .unwrap_or("1");
    Ok(RoomVersionId::try_from(version)
        .ok()
        .and_then(|version| version.rules()))
}

/// Whether `user_id` has the power to send state events of type `kind` in the room: the
/// level named for the type in `events`, else `state_default`.
pub(crate) fn may_send_state(
    storage: &Storage,
    room_id: &RoomId,
    user_id: &UserId,
    kind: &str,
) -> Result<bool, StorageError> {
    let needed = power_level_for(storage, room_id, |levels| {
        levels["events"][kind]
            .as_i64()
            .or_else(|| levels["state_default"].as_i64())
            .unwrap_or(50)
    })?;
    Ok(user_power_level(storage, room_id, user_id)? >= needed)
}

/// A user's power level: room creators are above everyone in room version 12, otherwise
/// `users`, `users_default`, or (without power levels) 100 for the creator and 0 for others.
pub(crate) fn user_power_level(
    storage: &Storage,
    room_id: &RoomId,
    user_id: &UserId,
) -> Result<i64, StorageError> {
    let create = state_content(storage, room_id, "m.room.create", "")?.unwrap_or_default();
    let creator = match create.get("creator").and_then(|c| c.as_str()) {
        Some(creator) => Some(creator.to_owned()),
        None => state_sender(storage, room_id, "m.room.create", "")?,
    };
    let privileged_creators = room_rules(storage, room_id)?
        .is_some_and(|rules| rules.authorization.explicitly_privilege_room_creators);
    let additional = create
        .get("additional_creators")
        .and_then(|list| list.as_array())
        .is_some_and(|list| {
            list.iter()
                .any(|user| user.as_str() == Some(user_id.as_str()))
        });
    if privileged_creators && (creator.as_deref() == Some(user_id.as_str()) || additional) {
        return Ok(i64::MAX);
    }
    match power_levels(storage, room_id)? {
        Some(levels) => Ok(levels
            .get("users")
            .and_then(|users| users.get(user_id.as_str()))
            .and_then(|level| level.as_i64())
            .or_else(|| levels.get("users_default").and_then(|level| level.as_i64()))
            .unwrap_or(0)),
        None => Ok(if creator.as_deref() == Some(user_id.as_str()) {
            100
        } else {
            0
        }),
    }
}

/// The content of a current state event, as JSON.
pub(crate) fn state_content(
    storage: &Storage,
    room_id: &RoomId,
    kind: &str,
    state_key: &str,
) -> Result<Option<serde_json::Value>, StorageError> {
    let Some(event_id) = state_event(storage, room_id, kind, state_key)? else {
        return Ok(None);
    };
    Ok(load_json(storage, &event_id)?.and_then(|json| {
        json.get("content")
            .map(|content| serde_json::to_value(content).unwrap_or_default())
    }))
}

pub(crate) fn state_sender(
    storage: &Storage,
    room_id: &RoomId,
    kind: &str,
    state_key: &str,
) -> Result<Option<String>, StorageError> {
    let Some(event_id) = state_event(storage, room_id, kind, state_key)? else {
        return Ok(None);
    };
    Ok(load_json(storage, &event_id)?.and_then(|json| {
        json.get("sender")
            .and_then(|sender| sender.as_str())
            .map(str::to_owned)
    }))
}

/// A state named in full: `(type, state_key)` → event.
pub(crate) type NamedState = std::collections::BTreeMap<(String, String), OwnedEventId>;
