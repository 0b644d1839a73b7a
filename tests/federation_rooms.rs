//! Rooms across two real Hearth servers over TLS on loopback: a user of one joins rooms of
//! the other (`make_join`, `send_join` v2), in room versions 10, 11 and 12.

mod common;

use common::federation::{free_port, start, write_certificates};
use common::{Server, ok};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

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
    let certificates = tempfile::tempdir().expect("tempdir");
    write_certificates(certificates.path());
    let (port_a, port_b) = (free_port(), free_port());
    let name_a = format!("127.0.0.1:{port_a}");
    let name_b = format!("localhost:{port_b}");
    let a = start(certificates.path(), &name_a, port_a, &[], &["alice"]);
    let b = start(certificates.path(), &name_b, port_b, &[], &["bob"]);
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

    // Inviting someone who does not exist over there fails cleanly.
    let missing = pair.a.client().json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/invite"),
        Some(&pair.alice),
        &json!({ "user_id": format!("@nobody:{}", pair.name_b) }),
    );
    assert_ne!(missing.status, 200);
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
