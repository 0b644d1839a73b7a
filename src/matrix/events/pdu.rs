//! [`Pdu`]: an event of a room's graph, parsed once from its canonical JSON, with what
//! authorization and state resolution need at hand. ruma's `state_res::Event` is implemented
//! for it, so its auth rules and state resolution run on our events directly.

use ruma::events::TimelineEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId,
    OwnedUserId, RoomId, UInt, UserId,
};
use serde_json::value::RawValue;

use super::signing::event_id_for;

#[derive(Debug, Clone)]
pub(crate) struct Pdu {
    pub(crate) event_id: OwnedEventId,
    /// Absent only for the create event of room version 12, whose ID names the room.
    pub(crate) room_id: Option<OwnedRoomId>,
    pub(crate) sender: OwnedUserId,
    pub(crate) kind: TimelineEventType,
    pub(crate) state_key: Option<String>,
    pub content: Box<RawValue>,
    pub(crate) prev_events: Vec<OwnedEventId>,
    pub(crate) auth_events: Vec<OwnedEventId>,
    pub(crate) redacts: Option<OwnedEventId>,
    pub(crate) depth: u64,
    pub(crate) origin_server_ts: MilliSecondsSinceUnixEpoch,
    /// The content hash, which events of room versions 1 and 2 repeat when they refer to
    /// this one.
    pub(crate) sha256: Option<String>,
    pub(crate) rejected: bool,
}

/// Why JSON is not a PDU of the room version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid PDU: {0}")]
pub(crate) struct PduError(pub String);

fn invalid(message: impl Into<String>) -> PduError {
    PduError(message.into())
}

impl Pdu {
    /// Parses a PDU of a room with `rules`. The event ID comes from the JSON in room versions
    /// 1 and 2, and is computed (the reference hash) in later ones.
    pub(crate) fn from_json(
        event: &CanonicalJsonObject,
        rules: &RoomVersionRules,
    ) -> Result<Pdu, PduError> {
        let event_id = match event_id_for(event, rules).map_err(|err| invalid(err.to_string()))? {
            Some(id) => id,
            None => parse(string(event, "event_id")?)?,
        };
        let room_id = match event.get("room_id") {
            Some(_) => Some(parse(string(event, "room_id")?)?),
            None => None,
        };
        let content = event
            .get("content")
            .ok_or_else(|| invalid("missing content"))?;
        if !matches!(content, CanonicalJsonValue::Object(_)) {
            return Err(invalid("content is not an object"));
        }
        let content =
            serde_json::value::to_raw_value(content).map_err(|err| invalid(err.to_string()))?;
        let state_key = match event.get("state_key") {
            Some(CanonicalJsonValue::String(key)) => Some(key.clone()),
            Some(_) => return Err(invalid("state_key is not a string")),
            None => None,
        };
        // `redacts` sits at the top level before room version 11 and in the content from it.
        let redacts = if rules.redaction.content_field_redacts {
            content_redacts(event)?
        } else {
            match event.get("redacts") {
                Some(_) => Some(parse(string(event, "redacts")?)?),
                None => None,
            }
        };
        Ok(Pdu {
            event_id,
            room_id,
            sender: parse(string(event, "sender")?)?,
            kind: TimelineEventType::from(string(event, "type")?),
            state_key,
            content,
            prev_events: event_references(event, "prev_events")?,
            auth_events: event_references(event, "auth_events")?,
            redacts,
            depth: integer(event, "depth")?,
            origin_server_ts: MilliSecondsSinceUnixEpoch(
                UInt::new(integer(event, "origin_server_ts")?)
                    .ok_or_else(|| invalid("origin_server_ts"))?,
            ),
            sha256: event
                .get("hashes")
                .and_then(CanonicalJsonValue::as_object)
                .and_then(|hashes| hashes.get("sha256"))
                .and_then(CanonicalJsonValue::as_str)
                .map(str::to_owned),
            rejected: false,
        })
    }
}

fn string<'a>(event: &'a CanonicalJsonObject, field: &str) -> Result<&'a str, PduError> {
    event
        .get(field)
        .and_then(CanonicalJsonValue::as_str)
        .ok_or_else(|| invalid(format!("{field} is missing or not a string")))
}

fn integer(event: &CanonicalJsonObject, field: &str) -> Result<u64, PduError> {
    event
        .get(field)
        .and_then(CanonicalJsonValue::as_integer)
        .and_then(|value| u64::try_from(i64::from(value)).ok())
        .ok_or_else(|| invalid(format!("{field} is missing or not a non-negative integer")))
}

fn parse<T: TryFrom<String>>(text: &str) -> Result<T, PduError> {
    T::try_from(text.to_owned()).map_err(|_| invalid(format!("`{text}` is not a valid identifier")))
}

fn content_redacts(event: &CanonicalJsonObject) -> Result<Option<OwnedEventId>, PduError> {
    match event
        .get("content")
        .and_then(CanonicalJsonValue::as_object)
        .and_then(|c| c.get("redacts"))
    {
        Some(CanonicalJsonValue::String(id)) => Ok(Some(parse(id)?)),
        _ => Ok(None),
    }
}

/// `prev_events` or `auth_events`: a list of IDs from room version 3, and of
/// `[id, {hashes}]` pairs in versions 1 and 2.
fn event_references(
    event: &CanonicalJsonObject,
    field: &str,
) -> Result<Vec<OwnedEventId>, PduError> {
    let Some(CanonicalJsonValue::Array(items)) = event.get(field) else {
        return Err(invalid(format!("{field} is missing or not a list")));
    };
    items
        .iter()
        .map(|item| match item {
            CanonicalJsonValue::String(id) => parse(id),
            CanonicalJsonValue::Array(pair) => match pair.first() {
                Some(CanonicalJsonValue::String(id)) => parse(id),
                _ => Err(invalid(format!("an entry of {field} has no event ID"))),
            },
            _ => Err(invalid(format!("an entry of {field} is not an event ID"))),
        })
        .collect()
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &OwnedEventId {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }

    fn sender(&self) -> &UserId {
        &self.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }

    fn content(&self) -> &RawValue {
        &self.content
    }

    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &OwnedEventId> + '_> {
        Box::new(self.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &OwnedEventId> + '_> {
        Box::new(self.auth_events.iter())
    }

    fn redacts(&self) -> Option<&OwnedEventId> {
        self.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        self.rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: serde_json::Value) -> CanonicalJsonObject {
        match CanonicalJsonValue::try_from(value).expect("canonical") {
            CanonicalJsonValue::Object(object) => object,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn parses_a_version_1_event_with_its_own_id_and_hash_pairs() {
        let event = object(json!({
            "event_id": "$abc:example.org", "room_id": "!r:example.org", "sender": "@a:example.org",
            "type": "m.room.member", "state_key": "@a:example.org", "content": { "membership": "join" },
            "prev_events": [["$p:example.org", { "sha256": "x" }]], "auth_events": [],
            "depth": 2, "origin_server_ts": 5, "hashes": { "sha256": "y" }
        }));
        let pdu = Pdu::from_json(&event, &RoomVersionRules::V1).expect("valid");
        assert_eq!(pdu.event_id.as_str(), "$abc:example.org");
        assert_eq!(pdu.prev_events[0].as_str(), "$p:example.org");
        assert!(pdu.state_key.is_some());
        assert_eq!(pdu.kind, TimelineEventType::RoomMember);
    }

    #[test]
    fn computes_ids_and_reads_redacts_from_content_in_version_11() {
        let event = object(json!({
            "room_id": "!r:example.org", "sender": "@a:example.org", "type": "m.room.redaction",
            "content": { "redacts": "$target" }, "prev_events": ["$p"], "auth_events": [],
            "depth": 3, "origin_server_ts": 5, "hashes": { "sha256": "y" }
        }));
        let pdu = Pdu::from_json(&event, &RoomVersionRules::V11).expect("valid");
        assert!(pdu.event_id.as_str().starts_with('$'));
        assert_eq!(pdu.redacts.as_ref().map(|id| id.as_str()), Some("$target"));
    }

    #[test]
    fn refuses_malformed_events() {
        let base = json!({
            "room_id": "!r:example.org", "sender": "@a:example.org", "type": "m.room.message",
            "content": {}, "prev_events": [], "auth_events": [], "depth": 1, "origin_server_ts": 5
        });
        for (field, bad) in [
            ("sender", json!("not a user")),
            ("content", json!("text")),
            ("depth", json!(-1)),
            ("prev_events", json!("$x")),
            ("state_key", json!(5)),
        ] {
            let mut event = base.clone();
            event[field] = bad;
            assert!(
                Pdu::from_json(&object(event), &RoomVersionRules::V10).is_err(),
                "{field}"
            );
        }
        let mut event = base;
        event.as_object_mut().expect("object").remove("type");
        assert!(Pdu::from_json(&object(event), &RoomVersionRules::V10).is_err());
    }
}

#[cfg(test)]
#[path = "pdu_props.rs"]
mod props;
