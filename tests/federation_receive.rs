//! Receiving events that build on a room's current state (issue 15, item 4): each is
//! checked against the few auth events it needs, read from the current state and kept
//! decoded while the state does not change. A fake server holds a room Hearth joins, and
//! sends it events on the room's single forward extremity: what a state change allows or
//! forbids holds for the very next event, whatever the events kept from before it.

mod common;

use std::sync::{Arc, Mutex};

use common::fake::{FakeRequest, FakeRoom, FakeServer, bind, event_id_of, new_key};
use common::federation::{Signer, start, write_certificates};
use common::{Server, ok};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// The fake server: one room, answered truthfully.
fn handler(room: Arc<Mutex<FakeRoom>>) -> common::fake::Handler {
    Arc::new(move |request: &FakeRequest| {
        let mut room = room.lock().expect("lock");
        let parts: Vec<&str> = request.path.split('/').collect();
        let not_found = (
            404,
            json!({ "errcode": "M_NOT_FOUND", "error": "not here" }),
        );
        let found =
            |answer: Option<Value>| answer.map_or(not_found.clone(), |answer| (200, answer));
        match parts.get(4).copied() {
            Some("make_join") => (
                200,
                room.make_join(parts.get(6).copied().unwrap_or_default()),
            ),
            Some("send_join") => {
                let answer = json!({
                    "origin": room.server, "members_omitted": false,
                    "state": room.state_events(), "auth_chain": room.auth_chain(),
                });
                let join = request.body.clone();
                room.add_signed((event_id_of(&join), join));
                (200, answer)
            }
            Some("state_ids") => found(
                request
                    .param("event_id")
                    .and_then(|id| room.state_ids_at(&id)),
            ),
            Some("state") => found(request.param("event_id").and_then(|id| room.state_at(&id))),
            Some("event") => found(parts.get(5).and_then(|id| room.event_answer(id))),
            _ => not_found,
        }
    })
}

/// The bodies of the room's latest messages, as Alice reads them.
fn bodies(server: &Server, token: &str, room_id: &str) -> Vec<String> {
    ok(server.client().get_with(
        &format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=50"),
        token,
    ))["chunk"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|event| event["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

fn text(body: &str) -> Value {
    json!({ "msgtype": "m.text", "body": body })
}

#[test]
fn a_state_change_on_the_extremity_judges_the_very_next_event() {
    let certificates = tempfile::tempdir().expect("tempdir");
    write_certificates(certificates.path());
    let a = start(certificates.path(), "localhost", &[], &["alice"]);
    let name_a = a.name.clone();
    let alice = common::login_token(&a, "alice", PASSWORD);
    let (listener, name_f) = bind();
    let key_f = new_key();
    let shared = Arc::new(Mutex::new(FakeRoom::create(&name_f, &key_f, "receive")));
    let room_id = shared.lock().expect("lock").room_id.clone();
    let _fake = FakeServer::start(
        certificates.path(),
        (listener, name_f.clone()),
        key_f.clone(),
        handler(shared.clone()),
    );
    let joined = a.client().json(
        "POST",
        &format!(
            "/_matrix/client/v3/join/{}?via={}",
            common::query_encode(&room_id),
            common::query_encode(&name_f)
        ),
        Some(&alice),
        &json!({}),
    );
    assert_eq!(
        joined.status,
        200,
        "{}",
        String::from_utf8_lossy(&joined.body)
    );
    let signer = Signer {
        origin: &name_f,
        key: &key_f,
        destination: &name_a,
    };
    // Sends one PDU in its own transaction; returns what Hearth answered for it.
    let send = |txn: &str, pdu: Value| -> Value {
        let id = event_id_of(&pdu);
        let transaction = json!({
            "origin": name_f, "origin_server_ts": 1_800_000_000_000u64, "pdus": [pdu],
        });
        let answer = ok(signer.send(
            &a,
            "PUT",
            &format!("/_matrix/federation/v1/send/{txn}"),
            Some(&transaction),
        ));
        answer["pdus"][&id].clone()
    };
    let mut room = shared.lock().expect("lock");
    let creator = room.creator.clone();
    let eve = format!("@eve:{name_f}");
    let eve_join = room.push(
        "m.room.member",
        Some(&eve),
        &eve,
        json!({ "membership": "join" }),
    );
    assert_eq!(send("r1", room.json(&eve_join).expect("join")), json!({}));
    let hello = room.push("m.room.message", None, &eve, text("hello"));
    assert_eq!(send("r2", room.json(&hello).expect("hello")), json!({}));

    // The creator raises the level to talk; Eve's server sends a message on it that names
    // the old power levels as its auth events (they allow it): the room's current state,
    // which is the state before it, does not.
    let before_levels = room.clone();
    let levels = room.push(
        "m.room.power_levels",
        Some(""),
        &creator,
        json!({ "users": { &creator: 100 }, "events_default": 50 }),
    );
    assert_eq!(send("r3", room.json(&levels).expect("levels")), json!({}));
    let mut muted = before_levels.template("m.room.message", None, &eve, text("muted"));
    muted["prev_events"] = json!([levels]);
    muted["depth"] = json!(room.events.len() + 1);
    let (_, muted) = room.sign(muted);
    let answer = send("r4", muted);
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.contains("state before it"), "{answer}");

    // A message from someone who never joined is refused by its own auth events.
    let stranger = format!("@stranger:{name_f}");
    let mut intruding = room.template("m.room.message", None, &stranger, text("intruding"));
    intruding["auth_events"] = json!(room.auth_for("m.room.message", None, &creator));
    let (_, intruding) = room.sign(intruding);
    let answer = send("r5", intruding);
    assert!(answer["error"].is_string(), "{answer}");

    // Levels back down: Eve's next message, on them, is accepted again.
    let levels = room.push(
        "m.room.power_levels",
        Some(""),
        &creator,
        json!({ "users": { &creator: 100 }, "events_default": 0 }),
    );
    assert_eq!(send("r6", room.json(&levels).expect("levels")), json!({}));
    let back = room.push("m.room.message", None, &eve, text("back"));
    assert_eq!(send("r7", room.json(&back).expect("back")), json!({}));
    drop(room);

    let seen = bodies(&a, &alice, &room_id);
    assert!(seen.contains(&"hello".to_owned()), "{seen:?}");
    assert!(seen.contains(&"back".to_owned()), "{seen:?}");
    assert!(!seen.contains(&"muted".to_owned()), "{seen:?}");
    assert!(!seen.contains(&"intruding".to_owned()), "{seen:?}");
}
