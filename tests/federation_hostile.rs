//! Other servers at their worst against a real Hearth: a fake server (a small HTTPS server
//! of the test, signing its events with its own key) holds rooms and answers Hearth's
//! federation requests, truthfully or with lies, and Hearth must tell the difference: a
//! resident lying about a room's state when Hearth joins it, and a gap in a room's history
//! too long for `get_missing_events`, bridged by the state at it (true, or forged).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::fake::{FakeRequest, FakeRoom, FakeServer, bind, new_key};
use common::federation::{free_port, start, write_certificates};
use common::{Server, ok};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// How the fake answers `send_join` for a room.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Lie {
    None,
    /// An event of another room in the state.
    OtherRoomsEvent,
    /// Two join rules in the state.
    TwoEventsForOneKey,
    /// The create event left out of the state (still in the auth chain).
    NoCreateInState,
    /// The power levels (an auth event of our join) left out of everything.
    JoinsAuthEventMissing,
    /// The creator's membership (an auth event of the power levels) left out of everything.
    StateAuthEventMissing,
    /// A member said to have joined, by a join someone else sent for them.
    JoinWithoutValidTransition,
}

/// What the fake server holds: its rooms, and how it answers for each.
#[derive(Default)]
struct Resident {
    rooms: HashMap<String, (FakeRoom, Option<Lie>)>,
    other: Option<FakeRoom>,
}

fn resident_handler(resident: Arc<Mutex<Resident>>) -> common::fake::Handler {
    Arc::new(move |request: &FakeRequest| {
        let resident = resident.lock().expect("lock");
        let parts: Vec<&str> = request.path.split('/').collect();
        // ["", "_matrix", "federation", "v1", "make_join", room, user]
        let Some((room, lie)) = parts.get(5).and_then(|room| resident.rooms.get(*room)) else {
            return (
                404,
                json!({ "errcode": "M_NOT_FOUND", "error": "no such room" }),
            );
        };
        match parts.get(4).copied() {
            Some("make_join") => (
                200,
                room.make_join(parts.get(6).copied().unwrap_or_default()),
            ),
            Some("send_join") => (
                200,
                send_join_answer(room, lie.unwrap_or(Lie::None), resident.other.as_ref()),
            ),
            _ => (
                404,
                json!({ "errcode": "M_UNRECOGNIZED", "error": "not here" }),
            ),
        }
    })
}

/// The `send_join` answer for `room`, told with `lie`.
fn send_join_answer(room: &FakeRoom, lie: Lie, other: Option<&FakeRoom>) -> Value {
    let mut state = room.state_events();
    let mut auth_chain = room.auth_chain();
    let id_of = |kind: &str, key: &str| room.state[&(kind.to_owned(), key.to_owned())].clone();
    let without = |events: &mut Vec<Value>, id: &str| {
        events.retain(|event| {
            let rules = common::fake::rules();
            let Ok(ruma::CanonicalJsonValue::Object(object)) =
                ruma::CanonicalJsonValue::try_from(event.clone())
            else {
                return true;
            };
            hearth::events::signing::event_id_for(&object, &rules)
                .ok()
                .flatten()
                .is_none_or(|event_id| event_id.as_str() != id)
        });
    };
    match lie {
        Lie::None => {}
        Lie::OtherRoomsEvent => {
            let other = other.expect("another room");
            state.push(
                other
                    .json(&other.state[&("m.room.topic".to_owned(), String::new())].clone())
                    .expect("topic"),
            );
        }
        Lie::TwoEventsForOneKey => {
            let mut fork = room.clone();
            fork.push(
                "m.room.join_rules",
                Some(""),
                &room.creator,
                json!({ "join_rule": "public", "fork": true }),
            );
            let fork_id = fork.state[&("m.room.join_rules".to_owned(), String::new())].clone();
            state.push(fork.json(&fork_id).expect("fork"));
        }
        Lie::NoCreateInState => without(&mut state, &id_of("m.room.create", "")),
        Lie::JoinsAuthEventMissing => {
            let id = id_of("m.room.power_levels", "");
            without(&mut state, &id);
            without(&mut auth_chain, &id);
        }
        Lie::StateAuthEventMissing => {
            let id = id_of("m.room.member", &room.creator);
            without(&mut state, &id);
            without(&mut auth_chain, &id);
        }
        Lie::JoinWithoutValidTransition => {
            let mallory = format!("@mallory:{}", room.server);
            let mut forged = room.template(
                "m.room.member",
                Some(&mallory),
                &room.creator,
                json!({ "membership": "join" }),
            );
            forged["auth_events"] =
                json!(room.auth_for("m.room.member", Some(&mallory), &room.creator));
            state.push(room.sign(forged).1);
        }
    }
    json!({ "origin": room.server, "members_omitted": false, "state": state, "auth_chain": auth_chain })
}

fn join(server: &Server, token: &str, room: &str, via: &str) -> common::http::Response {
    server.client().json(
        "POST",
        &format!(
            "/_matrix/client/v3/join/{}?via={}",
            common::query_encode(room),
            common::query_encode(via)
        ),
        Some(token),
        &json!({}),
    )
}

fn joined_rooms(server: &Server, token: &str) -> Vec<String> {
    ok(server
        .client()
        .get_with("/_matrix/client/v3/joined_rooms", token))["joined_rooms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|room| room.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_resident_server_lying_about_the_rooms_state_is_refused_and_leaves_nothing_behind() {
    let certificates = tempfile::tempdir().expect("tempdir");
    write_certificates(certificates.path());
    let port_b = free_port();
    let name_b = format!("localhost:{port_b}");
    let mut b = start(certificates.path(), &name_b, port_b, &[], &["bob"]);
    let bob = common::login_token(&b, "bob", PASSWORD);

    let (listener, name_f) = bind();
    let key_f = new_key();
    let honest = FakeRoom::create(&name_f, &key_f, "honest");
    let hostile = FakeRoom::create(&name_f, &key_f, "hostile");
    let mut other = FakeRoom::create(&name_f, &key_f, "other");
    other.push(
        "m.room.topic",
        Some(""),
        &other.creator.clone(),
        json!({ "topic": "elsewhere" }),
    );
    let resident = Arc::new(Mutex::new(Resident::default()));
    {
        let mut held = resident.lock().expect("lock");
        held.rooms
            .insert(honest.room_id.clone(), (honest.clone(), None));
        held.rooms
            .insert(hostile.room_id.clone(), (hostile.clone(), None));
        held.other = Some(other);
    }
    let _fake = FakeServer::start(
        certificates.path(),
        (listener, name_f.clone()),
        key_f,
        resident_handler(resident.clone()),
    );

    // The truth is taken: the fake server is a sound resident.
    let joined = join(&b, &bob, &honest.room_id, &name_f);
    assert_eq!(
        joined.status,
        200,
        "{}",
        String::from_utf8_lossy(&joined.body)
    );
    assert!(joined_rooms(&b, &bob).contains(&honest.room_id));

    let lies = [
        (Lie::OtherRoomsEvent, "is not of this room"),
        (Lie::TwoEventsForOneKey, "two events for (m.room.join_rules"),
        (Lie::NoCreateInState, "no create event"),
        (Lie::JoinsAuthEventMissing, "our join's auth event"),
        (Lie::StateAuthEventMissing, "is not given"),
        (Lie::JoinWithoutValidTransition, "fails auth"),
    ];
    for (lie, why) in lies {
        resident
            .lock()
            .expect("lock")
            .rooms
            .get_mut(&hostile.room_id)
            .expect("room")
            .1 = Some(lie);
        let refused = join(&b, &bob, &hostile.room_id, &name_f);
        let body = String::from_utf8_lossy(&refused.body).into_owned();
        assert_eq!(refused.status, 403, "{lie:?}: {body}");
        assert_eq!(common::errcode(&refused), "M_FORBIDDEN", "{lie:?}: {body}");
        assert!(body.contains(why), "{lie:?}: {body}");
        assert!(
            !joined_rooms(&b, &bob).contains(&hostile.room_id),
            "{lie:?}"
        );
    }

    // Nothing of the refused room was kept: no event, no room.
    b.signal("TERM");
    assert!(
        b.wait_exit(Duration::from_secs(15)).is_some(),
        "hearth stops"
    );
    let storage = hearth::storage::Storage::open(&b.dir.join("data"), 1 << 20).expect("open");
    assert!(
        storage
            .roomid_room
            .get(&hostile.room_id)
            .expect("read")
            .is_none()
    );
    for (id, _) in &hostile.events {
        assert!(
            storage.eventid_pdu.get(id).expect("read").is_none(),
            "{id} kept"
        );
        assert!(
            storage.eventid_meta.get(id).expect("read").is_none(),
            "{id} kept"
        );
    }
    // The honest room's events are all there.
    for (id, _) in &honest.events {
        assert!(
            storage.eventid_pdu.get(id).expect("read").is_some(),
            "{id} lost"
        );
    }
}
