//! Building a local event: the same PDU a remote server would send us, made by the rules of
//! the room's version. `auth_events` are chosen from the current state as the spec's "Auth
//! events selection" says, `prev_events` are the room's forward extremities, then the event
//! is hashed, signed and named, and it must pass the room version's authorization rules,
//! the very checks a remote event passes.

use ruma::events::{StateEventType, TimelineEventType};
use ruma::room_version_rules::{EventsReferenceFormatVersion, RoomVersionRules};
use ruma::state_res::{check_state_dependent_auth_rules, check_state_independent_auth_rules};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedRoomId, UserId};
use serde_json::{Value, json};
use std::sync::Arc;

use super::{MAX_PDU_BYTES, Pdu};
use crate::matrix::crypto::{SigningKey, random_bytes};
use crate::matrix::events::signing::hash_and_sign;

/// What the sender asks for.
#[derive(Debug, Clone)]
pub(crate) struct NewEvent {
    pub(crate) kind: String,
    pub(crate) state_key: Option<String>,
    pub content: Value,
    pub(crate) redacts: Option<OwnedEventId>,
}

impl NewEvent {
    pub(crate) fn state(kind: &str, state_key: &str, content: Value) -> NewEvent {
        NewEvent {
            kind: kind.to_owned(),
            state_key: Some(state_key.to_owned()),
            content,
            redacts: None,
        }
    }

    pub(crate) fn message(kind: &str, content: Value) -> NewEvent {
        NewEvent {
            kind: kind.to_owned(),
            state_key: None,
            content,
            redacts: None,
        }
    }
}

/// Why an event could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    /// The room's rules forbid it (the client is told `M_FORBIDDEN`).
    #[error("{0}")]
    Forbidden(String),
    /// The event is larger than 65,536 bytes.
    #[error("the event is larger than {MAX_PDU_BYTES} bytes")]
    TooLarge,
    /// The content cannot be an event (not an object, floats, …).
    #[error("{0}")]
    Invalid(String),
}

/// The room an event is built in: its rules, its ID (`None` only while creating a version 12
/// room, whose ID is the create event's), its forward extremities, and its current state.
pub(crate) struct RoomContext<'a> {
    pub(crate) rules: &'a RoomVersionRules,
    pub(crate) room_id: Option<&'a ruma::RoomId>,
    /// The forward extremities, with their depths.
    pub(crate) prev_events: &'a [(OwnedEventId, u64)],
    /// The room's current state event at a key. Shared (`Arc`): a room's auth events are
    /// kept decoded between sends, not parsed and hashed again for each.
    pub(crate) state: &'a dyn Fn(&StateEventType, &str) -> Option<Arc<Pdu>>,
    pub(crate) event: &'a dyn Fn(&EventId) -> Option<Arc<Pdu>>,
}

/// Builds, signs and authorizes an event sent by `sender` (one of our users).
pub(crate) fn build_event(
    new: &NewEvent,
    sender: &UserId,
    room: &RoomContext<'_>,
    key: &SigningKey,
    now_ms: u64,
) -> Result<(Pdu, CanonicalJsonObject), BuildError> {
    let kind = TimelineEventType::from(new.kind.as_str());
    if !new.content.is_object() {
        return Err(BuildError::Invalid(
            "the content must be a JSON object".to_owned(),
        ));
    }
    // The spec's size limits: 255 bytes for the type and the state key.
    if new.kind.is_empty()
        || new.kind.len() > 255
        || new.state_key.as_ref().is_some_and(|key| key.len() > 255)
    {
        return Err(BuildError::Invalid(
            "the event type (1 to 255 bytes) or state key (up to 255 bytes) is too long".to_owned(),
        ));
    }
    // Deeper than this, JSON parsers (ours and other servers') refuse to read it back.
    if nesting_depth(&new.content) > MAX_CONTENT_DEPTH {
        return Err(BuildError::Invalid(format!(
            "the content is nested deeper than {MAX_CONTENT_DEPTH} levels"
        )));
    }
    let content_raw = serde_json::value::to_raw_value(&new.content)
        .map_err(|e| BuildError::Invalid(e.to_string()))?;
    let auth_types = ruma::state_res::auth_types_for_event(
        &kind,
        sender,
        new.state_key.as_deref(),
        &content_raw,
        &room.rules.authorization,
    )
    .map_err(BuildError::Invalid)?;
    let mut auth_events: Vec<OwnedEventId> = Vec::new();
    for (event_type, state_key) in &auth_types {
        if let Some(event) = (room.state)(event_type, state_key)
            && !auth_events.contains(&event.event_id)
        {
            auth_events.push(event.event_id.clone());
        }
    }
    let depth = room
        .prev_events
        .iter()
        .map(|(_, depth)| *depth)
        .max()
        .unwrap_or(0)
        + 1;
    let server_name = sender.server_name().as_str();
    let mut event = json!({
        "sender": sender,
        "type": new.kind,
        "content": new.content,
        "depth": depth,
        "origin_server_ts": now_ms,
        "prev_events": references(room, room.prev_events.iter().map(|(id, _)| id)),
        "auth_events": references(room, auth_events.iter()),
    });
    if let Some(room_id) = room.room_id {
        event["room_id"] = json!(room_id);
    }
    if let Some(state_key) = &new.state_key {
        event["state_key"] = json!(state_key);
    }
    if let Some(redacts) = &new.redacts {
        // From room version 11 `redacts` lives in the content (the client put it there);
        // before, at the top level.
        if !room.rules.redaction.content_field_redacts {
            event["redacts"] = json!(redacts);
        }
    }
    if room.rules.event_id_format == ruma::room_version_rules::EventIdFormatVersion::V1 {
        event["event_id"] = json!(format!("${}:{server_name}", random_id()));
    }
    let mut event = match CanonicalJsonValue::try_from(event) {
        Ok(CanonicalJsonValue::Object(object)) => object,
        Ok(_) => unreachable!("built as an object"),
        Err(err) => return Err(BuildError::Invalid(err.to_string())),
    };
    if CanonicalJsonValue::Object(event.clone()).to_string().len() > MAX_PDU_BYTES {
        return Err(BuildError::TooLarge);
    }
    hash_and_sign(&mut event, room.rules, server_name, key).map_err(|err| match err {
        super::signing::SigningError::TooLarge => BuildError::TooLarge,
        other => BuildError::Invalid(other.to_string()),
    })?;
    if CanonicalJsonValue::Object(event.clone()).to_string().len() > MAX_PDU_BYTES {
        return Err(BuildError::TooLarge);
    }
    let pdu =
        Pdu::from_json(&event, room.rules).map_err(|err| BuildError::Invalid(err.to_string()))?;
    authorize(&pdu, room)?;
    Ok((pdu, event))
}

/// The room version's authorization rules, state-independent then state-dependent.
pub(crate) fn authorize(pdu: &Pdu, room: &RoomContext<'_>) -> Result<(), BuildError> {
    check_state_independent_auth_rules(&room.rules.authorization, pdu, |id: &EventId| {
        (room.event)(id)
    })
    .map_err(BuildError::Forbidden)?;
    check_state_dependent_auth_rules(
        &room.rules.authorization,
        pdu,
        |kind: &StateEventType, key: &str| (room.state)(kind, key),
    )
    .map_err(BuildError::Forbidden)
}

/// Content nested deeper than this is refused.
pub(crate) const MAX_CONTENT_DEPTH: usize = 64;

fn nesting_depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(nesting_depth).max().unwrap_or(0),
        Value::Object(members) => 1 + members.values().map(nesting_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// `prev_events` or `auth_events` in the room version's format: event IDs, or (versions 1
/// and 2) `[id, {"sha256": hash}]` pairs with the referenced event's content hash.
fn references<'a>(room: &RoomContext<'_>, ids: impl Iterator<Item = &'a OwnedEventId>) -> Value {
    match room.rules.events_reference_format {
        EventsReferenceFormatVersion::V1 => ids
            .map(|id| {
                let hash = (room.event)(id)
                    .and_then(|event| event.sha256.clone())
                    .unwrap_or_default();
                json!([id, { "sha256": hash }])
            })
            .collect(),
        _ => ids.map(|id| json!(id)).collect(),
    }
}

fn random_id() -> String {
    random_bytes::<12>()
        .iter()
        .map(|b| {
            char::from(
                b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"[usize::from(*b) % 52],
            )
        })
        .collect()
}

/// The ID of a new room: derived from its create event in room version 12, random before.
pub(crate) fn room_id_for(
    rules: &RoomVersionRules,
    create_event: Option<&Pdu>,
    server_name: &str,
) -> Option<OwnedRoomId> {
    if rules.authorization.room_create_event_id_as_room_id {
        let create = create_event?;
        OwnedRoomId::try_from(format!("!{}", &create.event_id.as_str()[1..])).ok()
    } else {
        OwnedRoomId::try_from(format!("!{}:{server_name}", random_id())).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::state_res::Event as _;
    use std::collections::HashMap;

    /// A room held in memory, enough to build events one after the other.
    struct TestRoom {
        rules: RoomVersionRules,
        room_id: Option<OwnedRoomId>,
        events: HashMap<OwnedEventId, Pdu>,
        state: HashMap<(StateEventType, String), OwnedEventId>,
        extremities: Vec<(OwnedEventId, u64)>,
    }

    impl TestRoom {
        fn new(rules: RoomVersionRules) -> TestRoom {
            TestRoom {
                rules,
                room_id: None,
                events: HashMap::new(),
                state: HashMap::new(),
                extremities: Vec::new(),
            }
        }

        fn send(&mut self, sender: &str, new: &NewEvent) -> Result<Pdu, BuildError> {
            let key = SigningKey::generate();
            let sender = UserId::parse(sender).expect("user");
            let events = &self.events;
            let state = &self.state;
            let lookup = |kind: &StateEventType, key: &str| {
                state
                    .get(&(kind.clone(), key.to_owned()))
                    .and_then(|id| events.get(id))
                    .cloned()
                    .map(Arc::new)
            };
            let fetch = |id: &EventId| events.get(id).cloned().map(Arc::new);
            let context = RoomContext {
                rules: &self.rules,
                room_id: self.room_id.as_deref(),
                prev_events: &self.extremities,
                state: &lookup,
                event: &fetch,
            };
            let (pdu, _) = build_event(new, &sender, &context, &key, 1_000)?;
            if self.room_id.is_none() {
                self.room_id = room_id_for(&self.rules, Some(&pdu), "example.org");
            }
            if let Some(state_key) = &pdu.state_key {
                self.state.insert(
                    (pdu.kind.to_string().into(), state_key.clone()),
                    pdu.event_id.clone(),
                );
            }
            self.extremities = vec![(pdu.event_id.clone(), pdu.depth)];
            self.events.insert(pdu.event_id.clone(), pdu.clone());
            Ok(pdu)
        }

        fn create_as(&mut self, creator: &str, version: &str) {
            self.room_id = room_id_for(&self.rules, None, "example.org");
            let mut content = json!({ "room_version": version });
            if !self.rules.authorization.use_room_create_sender {
                content["creator"] = json!(creator);
            }
            self.send(creator, &NewEvent::state("m.room.create", "", content))
                .expect("create");
            self.send(
                creator,
                &NewEvent::state("m.room.member", creator, json!({ "membership": "join" })),
            )
            .expect("creator joins");
            let mut users = json!({});
            if !self.rules.authorization.explicitly_privilege_room_creators {
                users[creator] = json!(100);
            }
            self.send(
                creator,
                &NewEvent::state("m.room.power_levels", "", json!({ "users": users })),
            )
            .expect("power levels");
            self.send(
                creator,
                &NewEvent::state("m.room.join_rules", "", json!({ "join_rule": "invite" })),
            )
            .expect("join rules");
        }
    }

    #[test]
    fn a_version_12_room_is_named_by_its_create_event() {
        let mut room = TestRoom::new(RoomVersionRules::V12);
        room.create_as("@alice:example.org", "12");
        let room_id = room.room_id.clone().expect("room id");
        let create_id = room.state[&(StateEventType::RoomCreate, String::new())].clone();
        assert_eq!(&room_id.as_str()[1..], &create_id.as_str()[1..]);
        let message = room
            .send(
                "@alice:example.org",
                &NewEvent::message(
                    "m.room.message",
                    json!({ "body": "hi", "msgtype": "m.text" }),
                ),
            )
            .expect("the creator may talk");
        assert_eq!(message.depth, 5);
        // Version 12 leaves the create event out of auth_events.
        assert!(!message.auth_events.contains(&create_id));
        assert_eq!(message.room_id(), Some(room_id.as_ref()));
    }

    #[test]
    fn strangers_may_not_send_and_invites_work_in_every_version() {
        for (version, rules) in [
            ("1", RoomVersionRules::V1),
            ("10", RoomVersionRules::V10),
            ("11", RoomVersionRules::V11),
            ("12", RoomVersionRules::V12),
        ] {
            let mut room = TestRoom::new(rules);
            room.create_as("@alice:example.org", version);
            let stranger = room.send(
                "@mallory:example.org",
                &NewEvent::message("m.room.message", json!({ "body": "x" })),
            );
            assert!(
                matches!(stranger, Err(BuildError::Forbidden(_))),
                "version {version}"
            );
            let self_join = room.send(
                "@bob:example.org",
                &NewEvent::state(
                    "m.room.member",
                    "@bob:example.org",
                    json!({ "membership": "join" }),
                ),
            );
            assert!(
                matches!(self_join, Err(BuildError::Forbidden(_))),
                "invite-only, version {version}"
            );
            room.send(
                "@alice:example.org",
                &NewEvent::state(
                    "m.room.member",
                    "@bob:example.org",
                    json!({ "membership": "invite" }),
                ),
            )
            .expect("invite");
            room.send(
                "@bob:example.org",
                &NewEvent::state(
                    "m.room.member",
                    "@bob:example.org",
                    json!({ "membership": "join" }),
                ),
            )
            .expect("the invited user joins");
            room.send(
                "@bob:example.org",
                &NewEvent::message("m.room.message", json!({ "body": "hello" })),
            )
            .expect("a member talks");
        }
    }

    #[test]
    fn version_1_events_carry_their_id_and_reference_pairs() {
        let mut room = TestRoom::new(RoomVersionRules::V1);
        room.create_as("@alice:example.org", "1");
        let message = room
            .send(
                "@alice:example.org",
                &NewEvent::message("m.room.message", json!({ "body": "hi" })),
            )
            .expect("send");
        assert!(message.event_id.as_str().ends_with(":example.org"));
        // References carry the referenced event's content hash.
        let previous = &room.events[&message.prev_events[0]];
        assert!(
            previous
                .sha256
                .as_deref()
                .is_some_and(|hash| !hash.is_empty())
        );
        assert!(
            room.room_id
                .expect("room")
                .as_str()
                .ends_with(":example.org")
        );
    }

    #[test]
    fn oversized_and_malformed_contents_are_refused() {
        let mut room = TestRoom::new(RoomVersionRules::V12);
        room.create_as("@alice:example.org", "12");
        let huge = NewEvent::message("m.room.message", json!({ "body": "x".repeat(70_000) }));
        assert!(matches!(
            room.send("@alice:example.org", &huge),
            Err(BuildError::TooLarge)
        ));
        let mut deep = json!("bottom");
        for _ in 0..100 {
            deep = json!({ "a": deep });
        }
        let deep = NewEvent::message("m.room.message", deep);
        assert!(matches!(
            room.send("@alice:example.org", &deep),
            Err(BuildError::Invalid(_))
        ));
        let long_type = NewEvent::state(&"t".repeat(300), "", json!({}));
        let result = room.send("@alice:example.org", &long_type);
        assert!(matches!(result, Err(BuildError::Invalid(_))), "{result:?}");
        let float = NewEvent::message("m.room.message", json!({ "n": 1.5 }));
        assert!(matches!(
            room.send("@alice:example.org", &float),
            Err(BuildError::Invalid(_))
        ));
        let not_object = NewEvent::message("m.room.message", json!("text"));
        assert!(matches!(
            room.send("@alice:example.org", &not_object),
            Err(BuildError::Invalid(_))
        ));
    }
}
