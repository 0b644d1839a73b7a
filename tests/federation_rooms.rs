//! Rooms across two real Hearth servers over TLS on loopback: a user of one joins rooms of
//! the other (`make_join`, `send_join` v2), in room versions 10, 11 and 12.

mod common;

use common::federation::{self, PASSWORD, Signer, signing_key};
use common::{Server, ok};
use serde_json::{Value, json};

struct Pair {
    a: Server,
    b: Server,
    name_a: String,
    name_b: String,
    alice: String,
    bob: String,
    _certificates: tempfile::TempDir,
}

fn pair() -> Pair {
    let federation::Pair {
        a,
        b,
        name_a,
        name_b,
        certificates,
    } = federation::Pair::start(&["alice"], &["bob"]);
    let alice = common::login_token(&a, "alice", PASSWORD);
    let bob = common::login_token(&b, "bob", PASSWORD);
    Pair {
        a,
        b,
        name_a,
        name_b,
        alice,
        bob,
        _certificates: certificates,
    }
}

fn call(server: &Server, method: &str, path: &str, token: &str, body: Value) -> Value {
    ok(server.client().json(method, path, Some(token), &body))
}

fn joined_room<'a>(sync: &'a Value, room: &str) -> &'a Value {
    &sync["rooms"]["join"][room]
}

fn state_keys(events: &Value, kind: &str) -> Vec<String> {
    let mut keys: Vec<String> = events
        .as_array()
        .into_iter()
        .flatten()
        .filter(|event| event["type"] == kind)
        .filter_map(|event| event["state_key"].as_str().map(str::to_owned))
        .collect();
    keys.sort();
    keys
}

#[test]
fn a_user_of_one_server_joins_rooms_of_the_other_in_versions_10_to_12() {
    let pair = pair();
    let bob_id = format!("@bob:{}", pair.name_b);
    for version in ["10", "11", "12"] {
        let room = call(
            &pair.a,
            "POST",
            "/_matrix/client/v3/createRoom",
            &pair.alice,
            json!({ "preset": "public_chat", "name": format!("Kitchen {version}"),
                    "room_version": version }),
        )["room_id"]
            .as_str()
            .expect("room")
            .to_owned();
        let joined = call(
            &pair.b,
            "POST",
            &format!(
                "/_matrix/client/v3/join/{}?via={}",
                common::query_encode(&room),
                common::query_encode(&pair.name_a)
            ),
            &pair.bob,
            json!({}),
        );
        assert_eq!(joined["room_id"], room.as_str(), "version {version}");

        // Bob's server holds the room: its state, with both members.
        let synced = ok(pair
            .b
            .client()
            .get_with("/_matrix/client/v3/sync", &pair.bob));
        let there = joined_room(&synced, &room);
        let state: Vec<Value> = there["state"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(there["timeline"]["events"].as_array().into_iter().flatten())
            .cloned()
            .collect();
        let state = Value::Array(state);
        assert_eq!(
            state_keys(&state, "m.room.member"),
            vec![format!("@alice:{}", pair.name_a), bob_id.clone()],
            "version {version}: {there}"
        );
        assert_eq!(state_keys(&state, "m.room.create"), [""]);
        let name = call(
            &pair.b,
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            &pair.bob,
            json!(null),
        );
        assert_eq!(name["name"], format!("Kitchen {version}"));

        // Alice's server accepted the join: Alice sees Bob in the room.
        let members = call(
            &pair.a,
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
            &pair.alice,
            json!(null),
        );
        assert!(
            members["joined"].get(&bob_id).is_some(),
            "version {version}: {members}"
        );
    }
}

#[test]
fn invites_cross_servers_and_the_invited_user_joins_through_the_inviter() {
    let pair = pair();
    let bob_id = format!("@bob:{}", pair.name_b);
    let room = call(
        &pair.a,
        "POST",
        "/_matrix/client/v3/createRoom",
        &pair.alice,
        json!({ "preset": "private_chat", "name": "Family" }),
    )["room_id"]
        .as_str()
        .expect("room")
        .to_owned();
    call(
        &pair.a,
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/invite"),
        &pair.alice,
        json!({ "user_id": bob_id }),
    );

    // Bob's server shows the invite, with the room's name and who invited.
    let synced = ok(pair
        .b
        .client()
        .get_with("/_matrix/client/v3/sync", &pair.bob));
    let invite = &synced["rooms"]["invite"][&room]["invite_state"]["events"];
    let events = invite.as_array().expect("invite state");
    assert!(
        events
            .iter()
            .any(|event| event["type"] == "m.room.name" && event["content"]["name"] == "Family"),
        "{invite}"
    );
    assert!(events.iter().any(|event| event["type"] == "m.room.member"
        && event["state_key"] == bob_id.as_str()
        && event["content"]["membership"] == "invite"));

    // Alice's room holds the co-signed invite.
    let member = call(
        &pair.a,
        "GET",
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{bob_id}"),
        &pair.alice,
        json!(null),
    );
    assert_eq!(member["membership"], "invite");

    // Bob joins with no server named: his server asks the inviter's.
    call(
        &pair.b,
        "POST",
        &format!("/_matrix/client/v3/join/{}", common::query_encode(&room)),
        &pair.bob,
        json!({}),
    );
    let members = call(
        &pair.a,
        "GET",
        &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
        &pair.alice,
        json!(null),
    );
    assert!(members["joined"].get(&bob_id).is_some(), "{members}");
    let synced = ok(pair
        .b
        .client()
        .get_with("/_matrix/client/v3/sync", &pair.bob));
    assert!(synced["rooms"]["join"].get(&room).is_some());
    assert!(synced["rooms"]["invite"].get(&room).is_none());

    // Inviting someone who does not exist over there fails cleanly: the invitee's server
    // refuses to co-sign (server-server API, `PUT /invite`: 403 `M_FORBIDDEN`), and the
    // client is told 403 `M_FORBIDDEN`, the client API's code for an invite not allowed.
    let nobody = format!("@nobody:{}", pair.name_b);
    let missing = pair.a.client().json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/invite"),
        Some(&pair.alice),
        &json!({ "user_id": nobody }),
    );
    assert_eq!(
        (missing.status, common::errcode(&missing).as_str()),
        (403, "M_FORBIDDEN"),
        "{}",
        String::from_utf8_lossy(&missing.body)
    );
    // Nothing of it was kept: nobody is invited.
    let state = call(
        &pair.a,
        "GET",
        &format!("/_matrix/client/v3/rooms/{room}/state"),
        &pair.alice,
        json!(null),
    );
    assert!(!state.to_string().contains(&nobody), "{state}");
}

#[test]
fn an_invite_from_another_server_can_be_declined() {
    let pair = pair();
    let bob_id = format!("@bob:{}", pair.name_b);
    let room = call(
        &pair.a,
        "POST",
        "/_matrix/client/v3/createRoom",
        &pair.alice,
        json!({ "preset": "private_chat", "room_version": "11" }),
    )["room_id"]
        .as_str()
        .expect("room")
        .to_owned();
    call(
        &pair.a,
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/invite"),
        &pair.alice,
        json!({ "user_id": bob_id }),
    );
    let first = ok(pair
        .b
        .client()
        .get_with("/_matrix/client/v3/sync", &pair.bob));
    assert!(first["rooms"]["invite"].get(&room).is_some());
    let since = first["next_batch"].as_str().expect("token").to_owned();
    call(
        &pair.b,
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/leave"),
        &pair.bob,
        json!({}),
    );
    let member = call(
        &pair.a,
        "GET",
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{bob_id}"),
        &pair.alice,
        json!(null),
    );
    assert_eq!(
        member["membership"], "leave",
        "the inviting server learned of it"
    );
    let next = ok(pair
        .b
        .client()
        .get_with(&format!("/_matrix/client/v3/sync?since={since}"), &pair.bob));
    assert!(next["rooms"]["leave"].get(&room).is_some(), "{next}");
}

#[test]
fn profiles_of_remote_users_are_asked_of_their_server() {
    let pair = pair();
    let bob_id = format!("@bob:{}", pair.name_b);
    call(
        &pair.b,
        "PUT",
        &format!("/_matrix/client/v3/profile/{bob_id}/displayname"),
        &pair.bob,
        json!({ "displayname": "Bob the Builder" }),
    );
    let profile = call(
        &pair.a,
        "GET",
        &format!("/_matrix/client/v3/profile/{bob_id}"),
        &pair.alice,
        json!(null),
    );
    assert_eq!(profile["displayname"], "Bob the Builder");
    let field = call(
        &pair.a,
        "GET",
        &format!("/_matrix/client/v3/profile/{bob_id}/displayname"),
        &pair.alice,
        json!(null),
    );
    assert_eq!(field, json!({ "displayname": "Bob the Builder" }));
    let missing = pair.a.client().get_with(
        &format!("/_matrix/client/v3/profile/@nobody:{}", pair.name_b),
        &pair.alice,
    );
    assert_eq!(
        (missing.status, common::errcode(&missing).as_str()),
        (404, "M_NOT_FOUND")
    );
}

#[test]
fn a_user_of_another_server_knocks_and_is_let_in() {
    let pair = pair();
    let bob_id = format!("@bob:{}", pair.name_b);
    let room = call(
        &pair.a,
        "POST",
        "/_matrix/client/v3/createRoom",
        &pair.alice,
        json!({ "preset": "private_chat", "name": "Knock here",
                "initial_state": [{ "type": "m.room.join_rules", "state_key": "",
                                    "content": { "join_rule": "knock" } }] }),
    )["room_id"]
        .as_str()
        .expect("room")
        .to_owned();
    call(
        &pair.b,
        "POST",
        &format!(
            "/_matrix/client/v3/knock/{}?via={}",
            common::query_encode(&room),
            common::query_encode(&pair.name_a)
        ),
        &pair.bob,
        json!({ "reason": "it's me" }),
    );
    let member = call(
        &pair.a,
        "GET",
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{bob_id}"),
        &pair.alice,
        json!(null),
    );
    assert_eq!(member["membership"], "knock");
    let synced = ok(pair
        .b
        .client()
        .get_with("/_matrix/client/v3/sync", &pair.bob));
    let knock_state = &synced["rooms"]["knock"][&room]["knock_state"]["events"];
    assert!(
        knock_state
            .as_array()
            .into_iter()
            .flatten()
            .any(|event| event["type"] == "m.room.name" && event["content"]["name"] == "Knock here"),
        "{synced}"
    );
    // Alice lets Bob in: an invite, which Bob accepts.
    call(
        &pair.a,
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/invite"),
        &pair.alice,
        json!({ "user_id": bob_id }),
    );
    call(
        &pair.b,
        "POST",
        &format!("/_matrix/client/v3/join/{}", common::query_encode(&room)),
        &pair.bob,
        json!({}),
    );
    let members = call(
        &pair.a,
        "GET",
        &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
        &pair.alice,
        json!(null),
    );
    assert!(members["joined"].get(&bob_id).is_some(), "{members}");
}

/// A message PDU by `sender` on server B, built and signed as B would, after `prev`.
fn message_pdu(
    room: &str,
    sender: &str,
    body: &str,
    (prev, depth): (&str, u64),
    auth_events: &[String],
    (origin, key): (&str, &hearth::matrix::crypto::SigningKey),
) -> ruma::CanonicalJsonObject {
    let rules = ruma::RoomVersionId::V11.rules().expect("rules");
    let event = json!({
        "room_id": room, "sender": sender, "type": "m.room.message",
        "content": { "msgtype": "m.text", "body": body },
        "depth": depth + 1, "origin_server_ts": 1_800_000_000_000u64,
        "prev_events": [prev], "auth_events": auth_events,
    });
    let Ok(ruma::CanonicalJsonValue::Object(mut object)) =
        ruma::CanonicalJsonValue::try_from(event)
    else {
        panic!("object");
    };
    hearth::matrix::events::signing::hash_and_sign(&mut object, &rules, origin, key).expect("sign");
    object
}

fn event_id_of(object: &ruma::CanonicalJsonObject) -> String {
    let rules = ruma::RoomVersionId::V11.rules().expect("rules");
    hearth::matrix::events::signing::event_id_for(object, &rules)
        .expect("id")
        .expect("v11 ids are hashes")
        .to_string()
}

#[test]
fn hostile_pdus_are_refused_one_by_one_and_replays_change_nothing() {
    use common::federation::{Signer, signing_key};
    let pair = pair();
    let bob_id = format!("@bob:{}", pair.name_b);
    let room = call(
        &pair.a,
        "POST",
        "/_matrix/client/v3/createRoom",
        &pair.alice,
        json!({ "preset": "public_chat", "room_version": "11" }),
    )["room_id"]
        .as_str()
        .expect("room")
        .to_owned();
    call(
        &pair.b,
        "POST",
        &format!(
            "/_matrix/client/v3/join/{}?via={}",
            common::query_encode(&room),
            common::query_encode(&pair.name_a)
        ),
        &pair.bob,
        json!({}),
    );
    let key_b = signing_key(&pair.b);
    let signer = Signer {
        origin: &pair.name_b,
        key: &key_b,
        destination: &pair.name_a,
    };
    // Where the room stands on A: its latest event and the auth events of Bob's messages.
    let latest = call(
        &pair.a,
        "GET",
        &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1"),
        &pair.alice,
        json!(null),
    )["chunk"][0]["event_id"]
        .as_str()
        .expect("latest")
        .to_owned();
    let latest_pdu = ok(signer.get(&pair.a, &format!("/_matrix/federation/v1/event/{latest}")));
    let depth = latest_pdu["pdus"][0]["depth"].as_u64().expect("depth");
    let room_state = call(
        &pair.a,
        "GET",
        &format!("/_matrix/client/v3/rooms/{room}/state"),
        &pair.alice,
        json!(null),
    );
    let state_id = |kind: &str, key: &str| -> String {
        room_state
            .as_array()
            .expect("state")
            .iter()
            .find(|event| event["type"] == kind && event["state_key"] == key)
            .and_then(|event| event["event_id"].as_str())
            .expect("state event")
            .to_owned()
    };
    let auth = vec![
        state_id("m.room.create", ""),
        state_id("m.room.power_levels", ""),
        state_id("m.room.member", &bob_id),
    ];
    let b = (pair.name_b.as_str(), &key_b);
    let at = (latest.as_str(), depth);
    let good = message_pdu(&room, &bob_id, "a fine message", at, &auth, b);
    let mut forged = message_pdu(&room, &bob_id, "forged", at, &auth, b);
    if let Some(ruma::CanonicalJsonValue::Object(signatures)) = forged.get_mut("signatures")
        && let Some(ruma::CanonicalJsonValue::Object(by_key)) = signatures.values_mut().next()
        && let Some(signature) = by_key.values_mut().next()
    {
        *signature = ruma::CanonicalJsonValue::String("A".repeat(86));
    }
    let mut tampered = message_pdu(&room, &bob_id, "as signed", at, &auth, b);
    if let Some(ruma::CanonicalJsonValue::Object(content)) = tampered.get_mut("content") {
        content.insert(
            "body".to_owned(),
            ruma::CanonicalJsonValue::String("changed on the way".to_owned()),
        );
    }
    let stranger = format!("@mallory:{}", pair.name_b);
    let unauthorized = message_pdu(&room, &stranger, "let me in", at, &auth[..2], b);
    // A message whose prev event is an event of another room A holds (one Bob is not in):
    // that room's state must not become this one's.
    let elsewhere = call(
        &pair.a,
        "POST",
        "/_matrix/client/v3/createRoom",
        &pair.alice,
        json!({ "preset": "private_chat", "room_version": "11" }),
    )["room_id"]
        .as_str()
        .expect("room")
        .to_owned();
    let elsewhere_latest = call(
        &pair.a,
        "GET",
        &format!("/_matrix/client/v3/rooms/{elsewhere}/messages?dir=b&limit=1"),
        &pair.alice,
        json!(null),
    )["chunk"][0]["event_id"]
        .as_str()
        .expect("latest")
        .to_owned();
    let crossed = message_pdu(
        &room,
        &bob_id,
        "from another room's graph",
        (elsewhere_latest.as_str(), depth),
        &auth,
        b,
    );
    let ids: Vec<String> = [&good, &forged, &tampered, &unauthorized, &crossed]
        .iter()
        .map(|pdu| event_id_of(pdu))
        .collect();
    let transaction = json!({
        "origin": pair.name_b, "origin_server_ts": 1_800_000_000_000u64,
        "pdus": [good, forged, tampered, unauthorized, crossed],
    });
    let answer = ok(signer.send(
        &pair.a,
        "PUT",
        "/_matrix/federation/v1/send/hostile1",
        Some(&transaction),
    ));
    let results = &answer["pdus"];
    assert_eq!(results[&ids[0]], json!({}), "{answer}");
    assert!(results[&ids[1]]["error"].is_string(), "forged: {answer}");
    assert_eq!(
        results[&ids[2]],
        json!({}),
        "a wrong hash is kept, redacted: {answer}"
    );
    assert!(
        results[&ids[3]]["error"].is_string(),
        "not a member: {answer}"
    );
    assert!(
        results[&ids[4]]["error"]
            .as_str()
            .is_some_and(|error| error.contains("another room")),
        "a prev event of another room: {answer}"
    );

    let bodies = |token: &str| -> Vec<Value> {
        call(
            &pair.a,
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"),
            token,
            json!(null),
        )["chunk"]
            .as_array()
            .expect("chunk")
            .iter()
            .filter(|event| event["type"] == "m.room.message")
            .cloned()
            .collect()
    };
    let shown = bodies(&pair.alice);
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert!(
        shown
            .iter()
            .any(|event| event["content"]["body"] == "a fine message")
    );
    let redacted = shown
        .iter()
        .find(|event| event["event_id"] == ids[2].as_str())
        .expect("the tampered event, redacted");
    assert!(redacted["content"].get("body").is_none(), "{redacted}");

    // The same transaction again: every PDU known, nothing new shown.
    ok(signer.send(
        &pair.a,
        "PUT",
        "/_matrix/federation/v1/send/hostile1",
        Some(&transaction),
    ));
    assert_eq!(bodies(&pair.alice).len(), 2);
    // A transaction claiming another origin than its signer is refused whole.
    let spoofed = json!({ "origin": "elsewhere.example", "origin_server_ts": 0, "pdus": [] });
    let refused = signer.send(
        &pair.a,
        "PUT",
        "/_matrix/federation/v1/send/hostile2",
        Some(&spoofed),
    );
    assert_eq!(refused.status, 403);
}

#[test]
fn a_server_denied_by_the_rooms_acl_cannot_join() {
    let pair = pair();
    let room = call(
        &pair.a,
        "POST",
        "/_matrix/client/v3/createRoom",
        &pair.alice,
        json!({ "preset": "public_chat" }),
    )["room_id"]
        .as_str()
        .expect("room")
        .to_owned();
    call(
        &pair.a,
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.server_acl/"),
        &pair.alice,
        json!({ "allow": ["*"], "deny": ["localhost"], "allow_ip_literals": true }),
    );
    let refused = pair.b.client().json(
        "POST",
        &format!(
            "/_matrix/client/v3/join/{}?via={}",
            common::query_encode(&room),
            common::query_encode(&pair.name_a)
        ),
        Some(&pair.bob),
        &json!({}),
    );
    assert_eq!(
        refused.status,
        403,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    let members = call(
        &pair.a,
        "GET",
        &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
        &pair.alice,
        json!(null),
    );
    assert_eq!(members["joined"].as_object().map(|m| m.len()), Some(1));
}

/// Polls `members` of `room` on `server` until `check` holds, or fails after 20 s.
fn wait_for_members(server: &Server, token: &str, room: &str, check: impl Fn(&Value) -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let members = call(
            server,
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
            token,
            json!(null),
        );
        if check(&members) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "members never matched: {members}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A join for `user` made from `make_join`'s answer, hashed and signed by B as B would;
/// returns the event and its ID.
fn hand_made_join(
    answer: &Value,
    user: &str,
    (origin, key): (&str, &hearth::matrix::crypto::SigningKey),
) -> (Value, String) {
    let rules = ruma::RoomVersionId::try_from(answer["room_version"].as_str().expect("version"))
        .expect("version")
        .rules()
        .expect("rules");
    let mut event = answer["event"].clone();
    event["sender"] = json!(user);
    event["state_key"] = json!(user);
    let Ok(ruma::CanonicalJsonValue::Object(mut object)) =
        ruma::CanonicalJsonValue::try_from(event)
    else {
        panic!("object");
    };
    hearth::matrix::events::signing::hash_and_sign(&mut object, &rules, origin, key).expect("sign");
    let id = hearth::matrix::events::signing::event_id_for(&object, &rules)
        .expect("id")
        .expect("hashed IDs");
    let event = serde_json::to_value(ruma::CanonicalJsonValue::Object(object)).expect("json");
    (event, id.to_string())
}

#[test]
fn a_join_through_a_resident_server_reaches_the_rooms_other_servers() {
    let pair = pair();
    // A third server (same test CA), in the room before Bob joins it through Alice's.
    let c = federation::start(pair._certificates.path(), "127.0.0.1", &[], &["carol"]);
    let carol = common::login_token(&c, "carol", PASSWORD);
    let room = call(
        &pair.a,
        "POST",
        "/_matrix/client/v3/createRoom",
        &pair.alice,
        json!({ "preset": "public_chat", "room_version": "11" }),
    )["room_id"]
        .as_str()
        .expect("room")
        .to_owned();
    call(
        &c,
        "POST",
        &format!(
            "/_matrix/client/v3/join/{}?via={}",
            common::query_encode(&room),
            common::query_encode(&pair.name_a)
        ),
        &carol,
        json!({}),
    );

    // A join made by hand as B (B's own server never stores it, so never sends it): only
    // Alice's server gets it, through send_join, and must send it on to Carol's.
    let key_b = signing_key(&pair.b);
    let signer = Signer {
        origin: &pair.name_b,
        key: &key_b,
        destination: &pair.name_a,
    };
    let dan_id = format!("@dan:{}", pair.name_b);
    let template = ok(signer.get(
        &pair.a,
        &format!(
            "/_matrix/federation/v1/make_join/{}/{}?ver=11",
            common::query_encode(&room),
            common::query_encode(&dan_id)
        ),
    ));
    let (join, join_id) = hand_made_join(&template, &dan_id, (&pair.name_b, &key_b));
    ok(signer.send(
        &pair.a,
        "PUT",
        &format!(
            "/_matrix/federation/v2/send_join/{}/{}",
            common::query_encode(&room),
            common::query_encode(&join_id)
        ),
        Some(&join),
    ));
    wait_for_members(&c, &carol, &room, |members| {
        members["joined"].get(&dan_id).is_some()
    });
}

#[test]
fn a_version_1_invite_through_the_deprecated_v1_endpoint_is_signed_and_shown() {
    let pair = pair();
    let key_b = signing_key(&pair.b);
    let signer = Signer {
        origin: &pair.name_b,
        key: &key_b,
        destination: &pair.name_a,
    };
    let alice_id = format!("@alice:{}", pair.name_a);
    let bob_id = format!("@bob:{}", pair.name_b);
    let room = format!("!old{}:{}", std::process::id(), pair.name_b);
    let event_id = format!("$invite:{}", pair.name_b);
    let hashes = json!({ "sha256": "aGFzaA" });
    let event = json!({
        "event_id": event_id, "room_id": room, "sender": bob_id, "origin": pair.name_b,
        "type": "m.room.member", "state_key": alice_id,
        "content": { "membership": "invite" },
        "depth": 4, "origin_server_ts": 1_800_000_000_000u64,
        "prev_events": [[format!("$prev:{}", pair.name_b), hashes]],
        "auth_events": [[format!("$create:{}", pair.name_b), hashes]],
    });
    let Ok(ruma::CanonicalJsonValue::Object(mut object)) =
        ruma::CanonicalJsonValue::try_from(event)
    else {
        panic!("object");
    };
    let rules = ruma::RoomVersionId::V1.rules().expect("rules");
    hearth::matrix::events::signing::hash_and_sign(&mut object, &rules, &pair.name_b, &key_b)
        .expect("sign");
    let mut event = serde_json::to_value(ruma::CanonicalJsonValue::Object(object)).expect("json");
    event["unsigned"] = json!({ "invite_room_state": [
        { "type": "m.room.name", "state_key": "", "sender": bob_id,
          "content": { "name": "An old room" } },
    ] });
    let path = format!(
        "/_matrix/federation/v1/invite/{}/{}",
        common::query_encode(&room),
        common::query_encode(&event_id)
    );
    let answer = ok(signer.send(&pair.a, "PUT", &path, Some(&event)));
    assert_eq!(answer[0], 200, "{answer}");
    let signed = &answer[1]["event"];
    assert_eq!(signed["event_id"], event_id.as_str());
    assert!(
        signed["signatures"][&pair.name_a].is_object(),
        "not signed by the invited server: {answer}"
    );
    assert!(signed["signatures"][&pair.name_b].is_object());

    let synced = ok(pair
        .a
        .client()
        .get_with("/_matrix/client/v3/sync", &pair.alice));
    let invite = &synced["rooms"]["invite"][&room]["invite_state"]["events"];
    assert!(
        invite
            .as_array()
            .into_iter()
            .flatten()
            .any(|event| event["content"]["name"] == "An old room"),
        "{synced}"
    );

    // Not an invite (a join): refused, nothing signed.
    let mut join = answer[1]["event"].clone();
    join["content"]["membership"] = json!("join");
    let refused = signer.send(&pair.a, "PUT", &path, Some(&join));
    assert_eq!(
        refused.status,
        400,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    let refused: Value = serde_json::from_slice(&refused.body).expect("json");
    assert_eq!(refused["errcode"], "M_INVALID_PARAM", "{refused}");
}

/// The message bodies Bob's server shows him in `room`, newest first.
fn bodies_on(server: &Server, token: &str, room: &str) -> Vec<String> {
    call(
        server,
        "GET",
        &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"),
        token,
        json!(null),
    )["chunk"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|event| event["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

/// Waits up to `seconds` for `done`.
fn wait_for(seconds: u64, done: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    done()
}

#[test]
fn a_server_denied_by_the_rooms_acl_is_sent_nothing_more_of_the_room() {
    let pair = pair();
    let room = call(
        &pair.a,
        "POST",
        "/_matrix/client/v3/createRoom",
        &pair.alice,
        json!({ "preset": "public_chat", "room_version": "11" }),
    )["room_id"]
        .as_str()
        .expect("room")
        .to_owned();
    call(
        &pair.b,
        "POST",
        &format!(
            "/_matrix/client/v3/join/{}?via={}",
            common::query_encode(&room),
            common::query_encode(&pair.name_a)
        ),
        &pair.bob,
        json!({}),
    );
    let send = |body: &str, txn: &str| {
        call(
            &pair.a,
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
            &pair.alice,
            json!({ "msgtype": "m.text", "body": body }),
        );
    };
    send("before the ACL", "t1");
    assert!(
        wait_for(20, || bodies_on(&pair.b, &pair.bob, &room)
            .contains(&"before the ACL".to_owned())),
        "B hears the room while allowed"
    );
    // B is `localhost:port`: the ACL denies it, and allows A (an IP literal).
    call(
        &pair.a,
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.server_acl/"),
        &pair.alice,
        json!({ "allow": ["*"], "deny": ["localhost"], "allow_ip_literals": true }),
    );
    send("after the ACL", "t2");
    assert!(
        !wait_for(5, || bodies_on(&pair.b, &pair.bob, &room)
            .contains(&"after the ACL".to_owned())),
        "a denied server must not be sent the room's events"
    );
    let state = call(
        &pair.b,
        "GET",
        &format!("/_matrix/client/v3/rooms/{room}/state"),
        &pair.bob,
        json!(null),
    );
    assert_eq!(
        state_keys(&state, "m.room.server_acl"),
        Vec::<String>::new()
    );
}

#[test]
fn a_server_whose_users_all_left_a_room_does_not_answer_joins_for_it() {
    let pair = pair();
    let room = call(
        &pair.a,
        "POST",
        "/_matrix/client/v3/createRoom",
        &pair.alice,
        json!({ "preset": "public_chat" }),
    )["room_id"]
        .as_str()
        .expect("room")
        .to_owned();
    let key_b = signing_key(&pair.b);
    let signer = Signer {
        origin: &pair.name_b,
        key: &key_b,
        destination: &pair.name_a,
    };
    let make_join = format!(
        "/_matrix/federation/v1/make_join/{}/{}?ver=10&ver=11&ver=12",
        common::query_encode(&room),
        common::query_encode(&format!("@bob:{}", pair.name_b))
    );
    assert_eq!(signer.get(&pair.a, &make_join).status, 200);
    call(
        &pair.a,
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/leave"),
        &pair.alice,
        json!({}),
    );
    // Its copy of the room is stale now: it is not a resident server any more.
    let refused = signer.get(&pair.a, &make_join);
    assert_eq!(
        refused.status,
        404,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    let refused: Value = serde_json::from_slice(&refused.body).expect("json");
    assert_eq!(refused["errcode"], "M_NOT_FOUND");
}
