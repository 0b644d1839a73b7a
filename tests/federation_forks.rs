//! Forks between two real Hearth servers over TLS on loopback: events from the other server
//! that branch off the room's graph arrive over `/send`, and the room's state after them is
//! state resolution's answer (version 1 in room version 1), read through the client API.

mod common;

use common::federation::{Pair, Signer, signing_key};
use common::{Server, ok};
use hearth::matrix::crypto::SigningKey;
use ruma::RoomVersionId;
use serde_json::{Value, json};

/// Alice's public room on server A, in one room version, joined by Bob of server B, who
/// holds power 50 (enough to set the topic and to ban). Bob's server speaks for him with
/// hand-made PDUs sent straight to A.
struct Setup {
    a: Server,
    _b: Server,
    version: RoomVersionId,
    alice: String,
    room: String,
    name_a: String,
    name_b: String,
    bob_id: String,
    key_b: SigningKey,
}

fn setup(version: &str) -> Setup {
    let pair = Pair::start(&["alice"], &["bob"]);
    let (alice, bob) = (pair.login_a("alice"), pair.login_b("bob"));
    let room = pair.shared_room(
        &alice,
        &json!({ "preset": "public_chat", "room_version": version }),
        &[&bob],
    );
    let Pair {
        a,
        b,
        name_a,
        name_b,
        ..
    } = pair;
    let key_b = signing_key(&b);
    let setup = Setup {
        a,
        _b: b,
        version: RoomVersionId::try_from(version).expect("version"),
        alice,
        room,
        name_a,
        bob_id: format!("@bob:{name_b}"),
        name_b,
        key_b,
    };
    let mut levels = setup.state_content("m.room.power_levels", "");
    levels["users"][&setup.bob_id] = json!(50);
    setup.put_state("m.room.power_levels", levels);
    setup
}

fn call(server: &Server, method: &str, path: &str, token: &str, body: Value) -> Value {
    ok(server.client().json(method, path, Some(token), &body))
}

impl Setup {
    fn state_path(&self) -> String {
        format!("/_matrix/client/v3/rooms/{}/state", self.room)
    }

    /// Alice sets a state event through the client API; its event ID.
    fn put_state(&self, kind: &str, content: Value) -> String {
        let path = format!("{}/{kind}/", self.state_path());
        call(&self.a, "PUT", &path, &self.alice, content)["event_id"]
            .as_str()
            .expect("event ID")
            .to_owned()
    }

    fn state_content(&self, kind: &str, state_key: &str) -> Value {
        let path = format!("{}/{kind}/{state_key}", self.state_path());
        call(&self.a, "GET", &path, &self.alice, json!(null))
    }

    /// The event ID of a current state entry, as `/state` shows it.
    fn state_id(&self, kind: &str, state_key: &str) -> String {
        call(&self.a, "GET", &self.state_path(), &self.alice, json!(null))
            .as_array()
            .expect("state")
            .iter()
            .find(|event| event["type"] == kind && event["state_key"] == state_key)
            .and_then(|event| event["event_id"].as_str())
            .unwrap_or_else(|| panic!("no {kind} {state_key}"))
            .to_owned()
    }

    fn signer(&self) -> Signer<'_> {
        Signer {
            origin: &self.name_b,
            key: &self.key_b,
            destination: &self.name_a,
        }
    }

    fn names_events_in_json(&self) -> bool {
        self.version == RoomVersionId::V1 || self.version == RoomVersionId::V2
    }

    /// A PDU as server A serves it over federation, with its `event_id` (for building on
    /// it; from room version 3 the ID is not part of the PDU).
    fn pdu(&self, event_id: &str) -> Value {
        let path = format!("/_matrix/federation/v1/event/{event_id}");
        let mut pdu = ok(self.signer().get(&self.a, &path))["pdus"][0].clone();
        pdu["event_id"] = json!(event_id);
        pdu
    }

    /// Sends one PDU from B in its own transaction; A's answer for it.
    fn send(&self, txn: &str, pdu: &Value) -> Value {
        let mut pdu = pdu.clone();
        if !self.names_events_in_json()
            && let Some(fields) = pdu.as_object_mut()
        {
            fields.remove("event_id");
        }
        let body = json!({
            "origin": self.name_b, "origin_server_ts": 1_800_000_000_000u64, "pdus": [pdu],
        });
        let path = format!("/_matrix/federation/v1/send/{txn}");
        let answer = ok(self.signer().send(&self.a, "PUT", &path, Some(&body)));
        answer["pdus"].clone()
    }

    /// A state event by `sender` (a user of B) built and signed as B would, following
    /// `prev` (whole PDUs), one deeper than the deepest; with its event ID (also set in
    /// the JSON, as [`Setup::pdu`] does).
    fn pdu_from_b(&self, draft: Draft<'_>) -> (Value, String) {
        let rules = self.version.rules().expect("rules");
        let v1_format = self.names_events_in_json();
        let reference = |pdu: &&Value| {
            if v1_format {
                json!([pdu["event_id"], { "sha256": pdu["hashes"]["sha256"] }])
            } else {
                pdu["event_id"].clone()
            }
        };
        let depth = draft
            .prev
            .iter()
            .filter_map(|pdu| pdu["depth"].as_u64())
            .max()
            .unwrap_or(0)
            + 1;
        let mut event = json!({
            "room_id": self.room, "sender": draft.sender, "type": draft.kind,
            "state_key": draft.state_key, "content": draft.content, "depth": depth,
            "origin_server_ts": draft.origin_server_ts,
            "prev_events": draft.prev.iter().map(reference).collect::<Vec<_>>(),
            "auth_events": draft.auth.iter().map(reference).collect::<Vec<_>>(),
        });
        if v1_format {
            event["event_id"] = json!(format!("${}:{}", draft.name, self.name_b));
            event["origin"] = json!(self.name_b);
        }
        let Ok(ruma::CanonicalJsonValue::Object(mut object)) =
            ruma::CanonicalJsonValue::try_from(event)
        else {
            panic!("object");
        };
        hearth::matrix::events::signing::hash_and_sign(
            &mut object,
            &rules,
            &self.name_b,
            &self.key_b,
        )
        .expect("sign");
        let event_id =
            match hearth::matrix::events::signing::event_id_for(&object, &rules).expect("id") {
                Some(id) => id.to_string(),
                None => format!("${}:{}", draft.name, self.name_b),
            };
        let mut pdu = serde_json::to_value(&object).expect("json");
        pdu["event_id"] = json!(event_id);
        (pdu, event_id)
    }
}

/// What `Setup::pdu_from_b` builds.
struct Draft<'a> {
    /// The local part of the event ID (room versions 1 and 2, which name events so).
    name: &'a str,
    sender: &'a str,
    kind: &'a str,
    state_key: &'a str,
    content: Value,
    prev: &'a [&'a Value],
    auth: &'a [&'a Value],
    origin_server_ts: u64,
}

/// Of two event IDs, the one with the lower SHA-1 (state resolution v1's tie-break).
fn lower_sha1<'a>(a: &'a str, b: &'a str) -> &'a str {
    let sha1 = |id: &str| {
        ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, id.as_bytes())
            .as_ref()
            .to_vec()
    };
    if sha1(a) < sha1(b) { a } else { b }
}

/// Far enough ahead to sort after anything sent today (room version 2's tie-break).
const LATER: u64 = 4_000_000_000_000;

#[test]
fn forks_of_a_version_1_room_are_resolved_with_state_resolution_v1() {
    let s = setup("1");
    let carol_id = format!("@carol:{}", s.name_b);
    let create = s.pdu(&s.state_id("m.room.create", ""));
    let power = s.pdu(&s.state_id("m.room.power_levels", ""));
    let join_rules = s.pdu(&s.state_id("m.room.join_rules", ""));
    let bob_member = s.pdu(&s.state_id("m.room.member", &s.bob_id));

    // Fork 1, the topic: Alice sets one on her server while Bob's server sends another
    // after the same event. One depth: the lower SHA-1 of the event ID wins (a
    // later `origin_server_ts`, which decides in room version 2, plays no part).
    let alices_topic = s.put_state("m.room.topic", json!({ "topic": "Alice's topic" }));
    let (bobs_topic, bobs_topic_id) = s.pdu_from_b(Draft {
        name: "bobs-topic",
        sender: &s.bob_id,
        kind: "m.room.topic",
        state_key: "",
        content: json!({ "topic": "Bob's topic" }),
        prev: &[&power],
        auth: &[&create, &power, &bob_member],
        origin_server_ts: LATER,
    });
    let results = s.send("fork-topic", &bobs_topic);
    assert_eq!(results[&bobs_topic_id], json!({}), "accepted: {results}");
    assert_eq!(
        s.pdu(&alices_topic)["depth"],
        bobs_topic["depth"],
        "one depth on both sides"
    );
    let winner = lower_sha1(&alices_topic, &bobs_topic_id);
    assert_eq!(s.state_id("m.room.topic", ""), winner);
    let expected = if winner == alices_topic {
        "Alice's topic"
    } else {
        "Bob's topic"
    };
    assert_eq!(s.state_content("m.room.topic", "")["topic"], expected);

    // Fork 2, a membership: Carol joins after Bob's topic, and Bob bans her in a sibling
    // event that never saw her join. Her key is disputed; whichever goes first, the ban
    // stands (it passes after the join; the join fails after it).
    let (carol_joins, carol_joins_id) = s.pdu_from_b(Draft {
        name: "carol-joins",
        sender: &carol_id,
        kind: "m.room.member",
        state_key: &carol_id,
        content: json!({ "membership": "join" }),
        prev: &[&bobs_topic],
        auth: &[&create, &power, &join_rules],
        origin_server_ts: LATER,
    });
    let results = s.send("fork-join", &carol_joins);
    assert_eq!(results[&carol_joins_id], json!({}), "{results}");
    assert_eq!(
        s.state_content("m.room.member", &carol_id)["membership"],
        "join"
    );
    let (bob_bans_carol, ban_id) = s.pdu_from_b(Draft {
        name: "bob-bans-carol",
        sender: &s.bob_id,
        kind: "m.room.member",
        state_key: &carol_id,
        content: json!({ "membership": "ban" }),
        prev: &[&bobs_topic],
        auth: &[&create, &power, &bob_member],
        origin_server_ts: LATER,
    });
    let results = s.send("fork-ban", &bob_bans_carol);
    assert_eq!(results[&ban_id], json!({}), "{results}");
    assert_eq!(s.state_id("m.room.member", &carol_id), ban_id);
    assert_eq!(
        s.state_content("m.room.member", &carol_id)["membership"],
        "ban"
    );
    // The topic resolved before is still the room's.
    assert_eq!(s.state_id("m.room.topic", ""), winner);

    // Alice's next message merges the branches; the room goes on.
    call(
        &s.a,
        "PUT",
        &format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/after-forks",
            s.room
        ),
        &s.alice,
        json!({ "msgtype": "m.text", "body": "all settled" }),
    );
    let members = call(
        &s.a,
        "GET",
        &format!("/_matrix/client/v3/rooms/{}/joined_members", s.room),
        &s.alice,
        json!(null),
    );
    assert!(members["joined"].get(&s.bob_id).is_some(), "{members}");
    assert!(members["joined"].get(&carol_id).is_none(), "{members}");
}

#[test]
fn an_incoming_forked_event_takes_part_in_the_resolution_it_causes_in_version_10() {
    // State resolution v2 orders the two topics (same power levels) by `origin_server_ts`
    // and applies them in that order: Bob's later one is the room's topic. The incoming
    // event is not stored yet while it is checked; it must still be weighed.
    let s = setup("10");
    let create = s.pdu(&s.state_id("m.room.create", ""));
    let power = s.pdu(&s.state_id("m.room.power_levels", ""));
    let bob_member = s.pdu(&s.state_id("m.room.member", &s.bob_id));
    s.put_state("m.room.topic", json!({ "topic": "Alice's topic" }));
    let (bobs_topic, bobs_topic_id) = s.pdu_from_b(Draft {
        name: "",
        sender: &s.bob_id,
        kind: "m.room.topic",
        state_key: "",
        content: json!({ "topic": "Bob's topic" }),
        prev: &[&power],
        auth: &[&create, &power, &bob_member],
        origin_server_ts: LATER,
    });
    let results = s.send("fork-topic", &bobs_topic);
    assert_eq!(results[&bobs_topic_id], json!({}), "accepted: {results}");
    assert_eq!(s.state_id("m.room.topic", ""), bobs_topic_id);
    assert_eq!(s.state_content("m.room.topic", "")["topic"], "Bob's topic");
}
