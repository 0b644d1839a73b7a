//! Coherence of a room state given whole: the keys, the create event, the auth of each
//! event by its own auth events, and what rests on an event that fails.

use serde_json::{Value, json};

use super::*;
use crate::matrix::crypto::SigningKey;

const SERVER: &str = "there.test";
const CREATOR: &str = "@creator:there.test";

/// A small version 11 room built by hand, its events signed by [`SERVER`].
struct Room {
    room_id: String,
    key: SigningKey,
    events: HashMap<OwnedEventId, Pdu>,
    rules: RoomVersionRules,
    latest: Option<OwnedEventId>,
}

impl Room {
    fn new() -> Room {
        Room {
            room_id: format!("!room:{SERVER}"),
            key: SigningKey::generate(),
            events: HashMap::new(),
            rules: ruma::RoomVersionId::V11.rules().expect("rules"),
            latest: None,
        }
    }

    fn add(
        &mut self,
        (kind, state_key): (&str, Option<&str>),
        sender: &str,
        content: &Value,
        auth: &[&OwnedEventId],
    ) -> OwnedEventId {
        let mut event = json!({
            "room_id": self.room_id, "sender": sender, "type": kind, "content": content,
            "depth": self.events.len() + 1, "origin_server_ts": 1_800_000_000_000u64,
            "prev_events": self.latest.iter().collect::<Vec<_>>(), "auth_events": auth,
        });
        if let Some(state_key) = state_key {
            event["state_key"] = json!(state_key);
        }
        let Ok(ruma::CanonicalJsonValue::Object(mut object)) =
            ruma::CanonicalJsonValue::try_from(event)
        else {
            panic!("object");
        };
        crate::matrix::events::signing::hash_and_sign(&mut object, &self.rules, SERVER, &self.key)
            .expect("sign");
        let pdu = Pdu::from_json(&object, &self.rules).expect("pdu");
        let id = pdu.event_id.clone();
        self.events.insert(id.clone(), pdu);
        self.latest = Some(id.clone());
        id
    }

    fn room_id(&self) -> &RoomId {
        <&RoomId>::try_from(self.room_id.as_str()).expect("room id")
    }
}

/// Create, the creator's join, power levels, public join rules.
fn basic_room() -> (Room, Vec<OwnedEventId>) {
    let mut room = Room::new();
    let create = room.add(
        ("m.room.create", Some("")),
        CREATOR,
        &json!({ "room_version": "11" }),
        &[],
    );
    let member = room.add(
        ("m.room.member", Some(CREATOR)),
        CREATOR,
        &json!({ "membership": "join" }),
        &[&create],
    );
    let power = room.add(
        ("m.room.power_levels", Some("")),
        CREATOR,
        &json!({ "users": { CREATOR: 100 } }),
        &[&create, &member],
    );
    let rules = room.add(
        ("m.room.join_rules", Some("")),
        CREATOR,
        &json!({ "join_rule": "public" }),
        &[&create, &member, &power],
    );
    (room, vec![create, member, power, rules])
}

#[test]
fn a_coherent_state_is_named_by_type_and_state_key() {
    let (room, ids) = basic_room();
    let named = named_state(room.room_id(), "11", &room.rules, &room.events, &ids).expect("ok");
    assert_eq!(named.len(), 4);
    assert_eq!(named[&("m.room.create".to_owned(), String::new())], ids[0]);
    assert!(failing_auth(&room.rules, &room.events, |_| None).is_empty());
}

#[test]
fn two_events_for_one_key_no_create_or_another_version_are_refused() {
    let (mut room, mut ids) = basic_room();
    let why =
        named_state(room.room_id(), "10", &room.rules, &room.events, &ids).expect_err("refused");
    assert!(why.contains("room version 11, not 10"), "{why}");
    let why = named_state(room.room_id(), "11", &room.rules, &room.events, &ids[1..])
        .expect_err("refused");
    assert!(why.contains("no create event"), "{why}");
    let (create, member, power) = (ids[0].clone(), ids[1].clone(), ids[2].clone());
    let fork = room.add(
        ("m.room.join_rules", Some("")),
        CREATOR,
        &json!({ "join_rule": "invite" }),
        &[&create, &member, &power],
    );
    ids.push(fork);
    let why =
        named_state(room.room_id(), "11", &room.rules, &room.events, &ids).expect_err("refused");
    assert!(why.contains("two events for (m.room.join_rules"), "{why}");
}

#[test]
fn an_event_failing_its_own_auth_fails_with_what_rests_on_it() {
    let (mut room, ids) = basic_room();
    let (create, member, power, join_rules) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    // A join the creator sent for someone else: no valid membership transition.
    let mallory = "@mallory:there.test";
    let forged = room.add(
        ("m.room.member", Some(mallory)),
        CREATOR,
        &json!({ "membership": "join" }),
        &[create, power, member, join_rules],
    );
    let (create, power) = (create.clone(), power.clone());
    // Allowed by its own auth events (they say Mallory joined): failing only through them.
    let message = room.add(
        ("m.room.message", None),
        mallory,
        &json!({ "body": "hello" }),
        &[&create, &power, &forged],
    );
    let failing = failing_auth(&room.rules, &room.events, |_| None);
    assert_eq!(failing.len(), 2, "{failing:?}");
    assert!(failing.contains_key(&forged));
    assert!(failing[&message].contains(forged.as_str()), "{failing:?}");
}

#[test]
fn an_auth_event_not_given_fails_the_event() {
    let (mut room, ids) = basic_room();
    room.events.remove(&ids[1]);
    let failing = failing_auth(&room.rules, &room.events, |_| None);
    // The power levels and the join rules rest on the creator's membership.
    assert!(failing[&ids[2]].contains("is not given"), "{failing:?}");
    assert!(failing.contains_key(&ids[3]));
    assert!(!failing.contains_key(&ids[0]));
}

#[test]
fn a_version_12_create_event_is_of_the_room_its_id_names() {
    let rules = ruma::RoomVersionId::V12.rules().expect("rules");
    let key = SigningKey::generate();
    let event = json!({
        "sender": CREATOR, "type": "m.room.create", "state_key": "",
        "content": { "room_version": "12" }, "depth": 1,
        "origin_server_ts": 1_800_000_000_000u64, "prev_events": [], "auth_events": [],
    });
    let Ok(ruma::CanonicalJsonValue::Object(mut object)) =
        ruma::CanonicalJsonValue::try_from(event)
    else {
        panic!("object");
    };
    crate::matrix::events::signing::hash_and_sign(&mut object, &rules, SERVER, &key).expect("sign");
    let create = Pdu::from_json(&object, &rules).expect("pdu");
    let own = ruma::OwnedRoomId::try_from(format!("!{}", &create.event_id.as_str()[1..]))
        .expect("room id");
    assert!(is_of_room(&create, &own, &rules));
    let other = ruma::OwnedRoomId::try_from("!other:there.test").expect("room id");
    assert!(!is_of_room(&create, &other, &rules));
}
