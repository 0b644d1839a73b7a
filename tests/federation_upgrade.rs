//! A room upgrade followed over federation, between two real Hearth servers over TLS on
//! loopback (spec: client-server API, "Room Upgrades"): Alice of server A upgrades a room
//! that Bob and Carol of server B are in; B's users see the tombstone, follow its
//! `replacement_room` into the new room (whose `m.room.create` names the old one as its
//! `predecessor`), and both servers' users talk there. The old room's power levels are
//! raised so that ordinary members can no longer send or invite (`events_default` and
//! `invite` at the greater of 50 and `users_default + 1`).

mod common;

use std::time::{Duration, Instant};

use common::federation::{start, write_certificates};
use common::{Server, ok, query_encode};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

fn call(server: &Server, token: &str, method: &str, path: &str, body: Value) -> Value {
    ok(server.client().json(method, path, Some(token), &body))
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn send(server: &Server, token: &str, room: &str, txn: &str, body: &str) -> common::http::Response {
    server.client().json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
        Some(token),
        &json!({ "msgtype": "m.text", "body": body }),
    )
}

/// The message bodies of the room's latest events, as `user` sees them.
fn bodies(server: &Server, token: &str, room: &str) -> Vec<String> {
    let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50");
    call(server, token, "GET", &path, json!(null))["chunk"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|event| event["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

/// A state event's content (an empty state key unless `kind` ends with one), or null.
fn state_or_null(server: &Server, token: &str, room: &str, kind: &str) -> Value {
    let path = if kind.contains('/') {
        format!("/_matrix/client/v3/rooms/{room}/state/{kind}")
    } else {
        format!("/_matrix/client/v3/rooms/{room}/state/{kind}/")
    };
    let response = server.client().get_with(&path, token);
    if response.status == 200 {
        response.json()
    } else {
        Value::Null
    }
}

#[test]
fn a_remote_member_follows_an_upgraded_room_into_its_replacement() {
    let certificates = tempfile::tempdir().expect("tempdir");
    write_certificates(certificates.path());
    let a = start(certificates.path(), "127.0.0.1", &[], &["alice"]);
    let b = start(
        certificates.path(),
        "localhost",
        &[],
        &["bob", "carol", "dave"],
    );
    let (name_a, name_b) = (a.name.clone(), b.name.clone());
    let alice = common::login_token(&a, "alice", PASSWORD);
    let bob = common::login_token(&b, "bob", PASSWORD);
    let carol = common::login_token(&b, "carol", PASSWORD);
    let (bob_id, carol_id) = (format!("@bob:{name_b}"), format!("@carol:{name_b}"));
    let join = |token: &str, room: &str| {
        call(
            &b,
            token,
            "POST",
            &format!(
                "/_matrix/client/v3/join/{}?via={}",
                query_encode(room),
                query_encode(&name_a)
            ),
            json!({}),
        )
    };

    let old = call(
        &a,
        &alice,
        "POST",
        "/_matrix/client/v3/createRoom",
        json!({ "preset": "public_chat", "room_version": "10",
                "name": "Den", "topic": "all things den" }),
    )["room_id"]
        .as_str()
        .expect("room")
        .to_owned();
    join(&bob, &old);
    join(&carol, &old);
    eventually("A did not see Carol join", || {
        state_or_null(&a, &alice, &old, &format!("m.room.member/{carol_id}"))["membership"]
            == "join"
    });
    // Carol is a moderator (50); Bob an ordinary member.
    let mut levels = call(
        &a,
        &alice,
        "GET",
        &format!("/_matrix/client/v3/rooms/{old}/state/m.room.power_levels/"),
        json!(null),
    );
    levels["users"][&carol_id] = json!(50);
    call(
        &a,
        &alice,
        "PUT",
        &format!("/_matrix/client/v3/rooms/{old}/state/m.room.power_levels/"),
        levels,
    );
    eventually("B did not get Carol's power", || {
        state_or_null(&b, &bob, &old, "m.room.power_levels")["users"][&carol_id] == 50
    });
    let since = call(&b, &bob, "GET", "/_matrix/client/v3/sync", json!(null))["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();

    let new = call(
        &a,
        &alice,
        "POST",
        &format!("/_matrix/client/v3/rooms/{old}/upgrade"),
        json!({ "new_version": "12" }),
    )["replacement_room"]
        .as_str()
        .expect("replacement_room")
        .to_owned();

    // B's users see the tombstone, in /sync and in the old room's state.
    let mut tombstone = Value::Null;
    eventually("Bob's /sync did not show the tombstone", || {
        let synced = call(
            &b,
            &bob,
            "GET",
            &format!(
                "/_matrix/client/v3/sync?timeout=0&since={}",
                query_encode(&since)
            ),
            json!(null),
        );
        let room = &synced["rooms"]["join"][&old];
        tombstone = ["timeline", "state"]
            .iter()
            .flat_map(|section| {
                room[section]["events"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .find(|event| event["type"] == "m.room.tombstone")
            .unwrap_or(Value::Null);
        !tombstone.is_null()
    });
    assert_eq!(tombstone["state_key"], "");
    assert_eq!(tombstone["content"]["replacement_room"], new.as_str());
    assert_eq!(
        state_or_null(&b, &bob, &old, "m.room.tombstone")["replacement_room"],
        new.as_str()
    );

    // The old room is closed to ordinary members, as B sees it too.
    eventually(
        "B did not get the old room's restricted power levels",
        || state_or_null(&b, &bob, &old, "m.room.power_levels")["events_default"] == 50,
    );
    let restricted = state_or_null(&b, &bob, &old, "m.room.power_levels");
    assert_eq!(restricted["invite"], 50, "{restricted}");
    assert_eq!(restricted["users"][&carol_id], 50, "{restricted}");
    let refused = send(&b, &bob, &old, "late", "anyone here?");
    assert_eq!(
        refused.status,
        403,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    let invite = b.client().json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{old}/invite"),
        Some(&bob),
        &json!({ "user_id": format!("@dave:{name_b}") }),
    );
    assert_eq!(
        invite.status,
        403,
        "{}",
        String::from_utf8_lossy(&invite.body)
    );
    assert_eq!(
        send(&b, &carol, &old, "mod", "moving on").status,
        200,
        "a moderator still may"
    );

    // Bob and Carol follow the tombstone.
    join(&bob, &new);
    join(&carol, &new);
    let create = state_or_null(&b, &bob, &new, "m.room.create");
    assert_eq!(create["predecessor"]["room_id"], old.as_str(), "{create}");
    assert_eq!(create["room_version"], "12");
    assert_eq!(state_or_null(&b, &bob, &new, "m.room.name")["name"], "Den");
    assert_eq!(
        state_or_null(&b, &bob, &new, "m.room.topic")["topic"],
        "all things den"
    );
    let new_levels = state_or_null(&b, &bob, &new, "m.room.power_levels");
    assert_eq!(new_levels["users"][&carol_id], 50, "{new_levels}");
    assert!(
        new_levels["users"]
            .get(format!("@alice:{name_a}"))
            .is_none(),
        "a version 12 room's creator is not listed: {new_levels}"
    );
    // Carol's power came along: she may set the topic in the new room, and A agrees.
    call(
        &b,
        &carol,
        "PUT",
        &format!("/_matrix/client/v3/rooms/{new}/state/m.room.topic/"),
        json!({ "topic": "the new den" }),
    );

    assert_eq!(send(&b, &bob, &new, "hi", "hello from B").status, 200);
    assert_eq!(send(&a, &alice, &new, "welcome", "welcome, B").status, 200);
    eventually("A did not get Bob's message in the new room", || {
        bodies(&a, &alice, &new).contains(&"hello from B".to_owned())
    });
    eventually("B did not get Alice's message in the new room", || {
        bodies(&b, &bob, &new).contains(&"welcome, B".to_owned())
    });
    eventually("A did not take Carol's topic", || {
        state_or_null(&a, &alice, &new, "m.room.topic")["topic"] == "the new den"
    });
    let members = call(
        &a,
        &alice,
        "GET",
        &format!("/_matrix/client/v3/rooms/{new}/joined_members"),
        json!(null),
    );
    for user in [&bob_id, &carol_id] {
        assert!(members["joined"].get(user).is_some(), "{members}");
    }
    // The old room's last message on A is Carol's.
    eventually("A did not get Carol's last message in the old room", || {
        bodies(&a, &alice, &old).first().map(String::as_str) == Some("moving on")
    });
}
