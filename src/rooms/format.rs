//! Events as clients see them (spec: client-server API, "Room Event Format"): the PDU
//! without its federation fields (hashes, signatures, graph edges, depth).

use ruma::{CanonicalJsonObject, CanonicalJsonValue, RoomVersionId};
use serde_json::{Map, Value};

/// The state events an invited user is shown about a room (spec: "stripped state").
pub(crate) const INVITE_STATE_TYPES: [&str; 7] = [
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
];

use crate::storage::{Storage, StorageError};

/// The fields a client event keeps.
const CLIENT_FIELDS: [&str; 8] = [
    "content",
    "origin_server_ts",
    "sender",
    "state_key",
    "type",
    "unsigned",
    "redacts",
    "room_id",
];

/// The client form of a stored event. `room_id`: where the event is shown outside its room
/// (`/sync` leaves it out, the event sits under its room already). It is given rather than
/// read from the event because a version 12 create event has none.
pub(crate) fn client_event(
    json: &CanonicalJsonObject,
    event_id: &str,
    room_id: Option<&str>,
) -> Value {
    let mut event = Map::new();
    for field in CLIENT_FIELDS {
        if field == "room_id" {
            continue;
        }
        if let Some(value) = json.get(field) {
            event.insert(field.to_owned(), to_json(value));
        }
    }
    if let Some(room_id) = room_id {
        event.insert("room_id".to_owned(), Value::String(room_id.to_owned()));
    }
    event.insert("event_id".to_owned(), Value::String(event_id.to_owned()));
    Value::Object(event)
}

/// Adds `unsigned.transaction_id`: the sending device recognizes its own message.
pub(crate) fn with_transaction_id(mut event: Value, transaction_id: &str) -> Value {
    set_unsigned(
        &mut event,
        "transaction_id",
        Value::String(transaction_id.to_owned()),
    );
    event
}

/// Sets `unsigned.<key>`, replacing an `unsigned` that is not an object (an event from
/// elsewhere may carry anything there) rather than failing.
pub(crate) fn set_unsigned(event: &mut Value, key: &str, value: Value) {
    if let Some(object) = event.as_object_mut() {
        let unsigned = object
            .entry("unsigned")
            .or_insert_with(|| Value::Object(Map::new()));
        if !unsigned.is_object() {
            *unsigned = Value::Object(Map::new());
        }
        if let Some(unsigned) = unsigned.as_object_mut() {
            unsigned.insert(key.to_owned(), value);
        }
    }
}

/// The client form of a stored event as a user sees it now: redacted if a redaction removed
/// its content (with `unsigned.redacted_because`), and with its transaction ID when `device`
/// sent it.
pub(crate) fn stored_event_for_client(
    storage: &Storage,
    event_id: &str,
    room_id: Option<&str>,
    device: Option<&str>,
) -> Result<Option<Value>, StorageError> {
    let Some(mut json) = super::load_json(storage, event_id)? else {
        return Ok(None);
    };
    let meta = storage.eventid_meta.get(&event_id.to_owned())?;
    let mut redacted_because = None;
    if let Some(redaction_id) = meta.as_ref().and_then(|meta| meta.redacted_by.as_deref()) {
        let rules = meta
            .as_ref()
            .and_then(|meta| storage.roomid_room.get(&meta.room_id).ok().flatten())
            .and_then(|room| RoomVersionId::try_from(room.version.as_str()).ok())
            .and_then(|version| version.rules());
        if let Some(rules) = rules {
            json = ruma::canonical_json::redact(json, &rules.redaction, None)
                .map_err(|err| StorageError::Corrupt(format!("redacting {event_id}: {err}")))?;
        }
        redacted_because = super::load_json(storage, redaction_id)?
            .map(|redaction| client_event(&redaction, redaction_id, room_id));
    }
    let mut event = client_event(&json, event_id, room_id);
    if let Some(because) = redacted_because {
        set_unsigned(&mut event, "redacted_because", because);
    }
    let txn = device.and_then(|device| {
        meta.and_then(|meta| meta.txn)
            .filter(|(sender_device, _)| sender_device == device)
    });
    Ok(Some(match txn {
        Some((_, txn_id)) => with_transaction_id(event, &txn_id),
        None => event,
    }))
}

/// An invite's "stripped state" event: only type, state key, sender and content.
pub(crate) fn stripped_event(json: &CanonicalJsonObject) -> Value {
    let mut event = Map::new();
    for field in ["type", "state_key", "sender", "content"] {
        if let Some(value) = json.get(field) {
            event.insert(field.to_owned(), to_json(value));
        }
    }
    Value::Object(event)
}

fn to_json(value: &CanonicalJsonValue) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn federation_fields_are_left_out() {
        let stored = match CanonicalJsonValue::try_from(json!({
            "room_id": "!r:x", "sender": "@a:x", "type": "m.room.message", "content": { "body": "hi" },
            "origin_server_ts": 5, "depth": 3, "prev_events": [], "auth_events": [],
            "hashes": { "sha256": "h" }, "signatures": {}
        })) {
            Ok(CanonicalJsonValue::Object(object)) => object,
            _ => panic!("object"),
        };
        let event = client_event(&stored, "$e", None);
        assert_eq!(
            event,
            json!({ "event_id": "$e", "sender": "@a:x", "type": "m.room.message",
                    "content": { "body": "hi" }, "origin_server_ts": 5 })
        );
        assert_eq!(client_event(&stored, "$e", Some("!r:x"))["room_id"], "!r:x");
    }
}
