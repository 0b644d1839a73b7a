//! Other servers at their worst against a real Hearth: a fake server (a small HTTPS server
//! of the test, signing its events with its own key) holds rooms and answers Hearth's
//! federation requests, truthfully or with lies, and Hearth must tell the difference: a
//! resident lying about a room's state when Hearth joins it, and a gap in a room's history
//! too long for `get_missing_events`, bridged by the state at it (true, or forged).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::fake::{FakeRequest, FakeRoom, FakeServer, bind, event_id_of, new_key};
use common::federation::{start, write_certificates};
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
    /// The true state, in an answer larger than the joining server takes (2 MiB).
    Oversized,
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
            hearth::matrix::events::signing::event_id_for(&object, &rules)
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
        Lie::Oversized => {}
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
    let mut answer = json!({ "origin": room.server, "members_omitted": false, "state": state, "auth_chain": auth_chain });
    if lie == Lie::Oversized {
        answer["servers_in_room"] = json!(["x".repeat(2 * 1024 * 1024)]);
    }
    answer
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
    // Answers over 1 MiB are refused (as the 1 GiB default bounds a real server's).
    let mut b = common::federation::start_with(
        certificates.path(),
        "localhost",
        &[],
        &["bob"],
        "max_join_answer_bytes = 1048576",
    );
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

    // An answer larger than the bound is not read to the end.
    resident
        .lock()
        .expect("lock")
        .rooms
        .get_mut(&hostile.room_id)
        .expect("room")
        .1 = Some(Lie::Oversized);
    let refused = join(&b, &bob, &hostile.room_id, &name_f);
    let body = String::from_utf8_lossy(&refused.body).into_owned();
    assert_ne!(refused.status, 200, "{body}");
    assert!(body.contains("larger than 1048576 bytes"), "{body}");
    assert!(!joined_rooms(&b, &bob).contains(&hostile.room_id));
    // No answer file is left in the data directory.
    let answers = b.dir.join("data").join("join-answers");
    let left = std::fs::read_dir(&answers).map_or(0, |dir| dir.count());
    assert_eq!(left, 0, "answer files left in {}", answers.display());

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

/// The fake server of the gap test: one room, answered truthfully.
fn gap_handler(room: Arc<Mutex<FakeRoom>>) -> common::fake::Handler {
    Arc::new(move |request: &FakeRequest| {
        let mut room = room.lock().expect("lock");
        let parts: Vec<&str> = request.path.split('/').collect();
        let not_found = (
            404,
            json!({ "errcode": "M_NOT_FOUND", "error": "not here" }),
        );
        let found =
            |answer: Option<Value>| answer.map_or(not_found.clone(), |answer| (200, answer));
        let strings = |value: &Value| -> Vec<String> {
            value
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|id| id.as_str().map(str::to_owned))
                .collect()
        };
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
            Some("get_missing_events") => {
                let limit = request.body["limit"].as_u64().unwrap_or(10).min(20) as usize;
                let earliest = strings(&request.body["earliest_events"]);
                let latest = strings(&request.body["latest_events"]);
                (
                    200,
                    json!({ "events": room.missing_events(&earliest, &latest, limit) }),
                )
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

/// `count` messages by `sender` after the latest event of `room`.
fn messages(room: &mut FakeRoom, sender: &str, count: usize) {
    for n in 0..count {
        room.push(
            "m.room.message",
            None,
            sender,
            json!({ "msgtype": "m.text", "body": format!("in the gap {n}") }),
        );
    }
}

#[test]
fn a_gap_too_long_for_get_missing_events_is_bridged_by_the_state_at_it() {
    use common::federation::Signer;
    let certificates = tempfile::tempdir().expect("tempdir");
    write_certificates(certificates.path());
    let a = start(certificates.path(), "localhost", &[], &["alice"]);
    let name_a = a.name.clone();
    let alice = common::login_token(&a, "alice", PASSWORD);

    let (listener, name_f) = bind();
    let key_f = new_key();
    let room = Arc::new(Mutex::new(FakeRoom::create(&name_f, &key_f, "gap")));
    let room_id = room.lock().expect("lock").room_id.clone();
    let fake = FakeServer::start(
        certificates.path(),
        (listener, name_f.clone()),
        key_f.clone(),
        gap_handler(room.clone()),
    );
    let joined = join(&a, &alice, &room_id, &name_f);
    assert_eq!(
        joined.status,
        200,
        "{}",
        String::from_utf8_lossy(&joined.body)
    );

    // While Alice's server hears nothing, Eve joins and talks: 26 events, more than one
    // get_missing_events brings. Then her message after all that reaches Alice's server.
    let eve = format!("@eve:{name_f}");
    let (latest, latest_id) = {
        let mut room = room.lock().expect("lock");
        room.push(
            "m.room.member",
            Some(&eve),
            &eve,
            json!({ "membership": "join" }),
        );
        messages(&mut room, &eve, 25);
        let id = room.push(
            "m.room.message",
            None,
            &eve,
            json!({ "msgtype": "m.text", "body": "across the gap" }),
        );
        (room.json(&id).expect("latest"), id)
    };
    let signer = Signer {
        origin: &name_f,
        key: &key_f,
        destination: &name_a,
    };
    let send = |txn: &str, pdu: &Value| {
        let transaction = json!({
            "origin": name_f, "origin_server_ts": 1_800_000_000_000u64, "pdus": [pdu],
        });
        ok(signer.send(
            &a,
            "PUT",
            &format!("/_matrix/federation/v1/send/{txn}"),
            Some(&transaction),
        ))
    };
    let answer = send("gap1", &latest);
    assert_eq!(answer["pdus"][&latest_id], json!({}), "{answer}");
    let paths = fake.paths();
    for endpoint in ["get_missing_events", "state_ids", "/event/"] {
        assert!(
            paths.iter().any(|path| path.contains(endpoint)),
            "{endpoint} asked: {paths:?}"
        );
    }
    assert!(
        !paths.iter().any(|path| path.contains("/state/")),
        "a few missing events come one by one: {paths:?}"
    );
    // The state fetched at the gap judged that one event: it is not kept as the state at
    // the prev event (one server's word about the room's past), so A does not serve it.
    let prev = latest["prev_events"][0].as_str().expect("prev");
    let asked = signer.get(
        &a,
        &format!(
            "/_matrix/federation/v1/state_ids/{}?event_id={}",
            common::query_encode(&room_id),
            common::query_encode(prev)
        ),
    );
    assert_eq!(
        asked.status,
        404,
        "{}",
        String::from_utf8_lossy(&asked.body)
    );
    let bodies = |token: &str| -> Vec<String> {
        ok(a.client().get_with(
            &format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=50"),
            token,
        ))["chunk"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|event| event["content"]["body"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(bodies(&alice).contains(&"across the gap".to_owned()));
    let members = ok(a.client().get_with(
        &format!("/_matrix/client/v3/rooms/{room_id}/joined_members"),
        &alice,
    ));
    assert!(members["joined"].get(&eve).is_some(), "{members}");

    // A gap with many new members: the state at it comes whole, with one `/state`.
    let crowd: Vec<String> = (0..60).map(|n| format!("@guest{n}:{name_f}")).collect();
    let (last, last_id) = {
        let mut room = room.lock().expect("lock");
        for guest in &crowd {
            room.push(
                "m.room.member",
                Some(guest),
                guest,
                json!({ "membership": "join" }),
            );
        }
        let id = room.push(
            "m.room.message",
            None,
            &crowd[59],
            json!({ "msgtype": "m.text", "body": "a crowd came" }),
        );
        (room.json(&id).expect("last"), id)
    };
    let answer = send("gap3", &last);
    assert_eq!(answer["pdus"][&last_id], json!({}), "{answer}");
    assert!(fake.paths().iter().any(|path| path.contains("/state/")));
    assert!(bodies(&alice).contains(&"a crowd came".to_owned()));
    let members = ok(a.client().get_with(
        &format!("/_matrix/client/v3/rooms/{room_id}/joined_members"),
        &alice,
    ));
    assert_eq!(
        members["joined"].as_object().map(|joined| joined.len()),
        Some(63),
        "the creator, Alice, Eve and 60 guests: {members}"
    );

    // A last gap whose state is forged: Mallory "joined" by a join the creator sent for
    // him. His message after the gap is refused, and he is no member.
    let mallory = format!("@mallory:{name_f}");
    let (forged, forged_id) = {
        let mut room = room.lock().expect("lock");
        let creator = room.creator.clone();
        let mut join = room.template(
            "m.room.member",
            Some(&mallory),
            &creator,
            json!({ "membership": "join" }),
        );
        join["auth_events"] = json!(room.auth_for("m.room.member", Some(&mallory), &creator));
        let signed = room.sign(join);
        room.add_signed(signed);
        messages(&mut room, &eve, 25);
        let id = room.push(
            "m.room.message",
            None,
            &mallory,
            json!({ "msgtype": "m.text", "body": "let me in" }),
        );
        (room.json(&id).expect("forged"), id)
    };
    let answer = send("gap2", &forged);
    assert!(answer["pdus"][&forged_id]["error"].is_string(), "{answer}");
    assert!(!bodies(&alice).contains(&"let me in".to_owned()));
    let members = ok(a.client().get_with(
        &format!("/_matrix/client/v3/rooms/{room_id}/joined_members"),
        &alice,
    ));
    assert!(members["joined"].get(&mallory).is_none(), "{members}");
}

#[test]
fn a_banned_users_event_on_a_branch_from_before_the_ban_is_soft_failed() {
    use common::federation::Signer;
    let certificates = tempfile::tempdir().expect("tempdir");
    write_certificates(certificates.path());
    let a = start(certificates.path(), "localhost", &[], &["alice"]);
    let name_a = a.name.clone();
    let alice = common::login_token(&a, "alice", PASSWORD);
    let (listener, name_f) = bind();
    let key_f = new_key();
    let room = Arc::new(Mutex::new(FakeRoom::create(&name_f, &key_f, "ban")));
    let room_id = room.lock().expect("lock").room_id.clone();
    let _fake = FakeServer::start(
        certificates.path(),
        (listener, name_f.clone()),
        key_f.clone(),
        gap_handler(room.clone()),
    );
    let joined = join(&a, &alice, &room_id, &name_f);
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
    let send = |txn: &str, pdu: Value| {
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
        assert_eq!(answer["pdus"][&id], json!({}), "{answer}");
    };
    // Eve joins and talks; then the creator bans her. Alice's server hears each in turn.
    let eve = format!("@eve:{name_f}");
    let mut room = room.lock().expect("lock");
    let creator = room.creator.clone();
    let eve_join = room.push(
        "m.room.member",
        Some(&eve),
        &eve,
        json!({ "membership": "join" }),
    );
    send("b1", room.json(&eve_join).expect("join"));
    let hello = room.push(
        "m.room.message",
        None,
        &eve,
        json!({ "msgtype": "m.text", "body": "hello" }),
    );
    let before_ban = room.clone();
    send("b2", room.json(&hello).expect("hello"));
    let ban = room.push(
        "m.room.member",
        Some(&eve),
        &creator,
        json!({ "membership": "ban" }),
    );
    send("b3", room.json(&ban).expect("ban"));
    // Her server then sends a message that follows her own, from before the ban.
    let evading = before_ban.template(
        "m.room.message",
        None,
        &eve,
        json!({ "msgtype": "m.text", "body": "still here" }),
    );
    let (evading_id, evading) = before_ban.sign(evading);
    send("b4", evading);
    // The fake answers Alice's server (history) only once the room is free again.
    drop(room);
    let bodies: Vec<String> = ok(a.client().get_with(
        &format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=50"),
        &alice,
    ))["chunk"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|event| event["content"]["body"].as_str().map(str::to_owned))
        .collect();
    assert!(bodies.contains(&"hello".to_owned()), "{bodies:?}");
    assert!(!bodies.contains(&"still here".to_owned()), "{bodies:?}");
    // Stored without a stream position, it is no event of the room to clients: neither
    // fetched by ID nor jumped to (position 0 once made `/context` subtract below zero).
    for path in [
        format!("/_matrix/client/v3/rooms/{room_id}/event/{evading_id}"),
        format!("/_matrix/client/v3/rooms/{room_id}/context/{evading_id}"),
        format!("/_matrix/client/v1/rooms/{room_id}/relations/{evading_id}"),
    ] {
        let answer = a.client().get_with(&path, &alice);
        assert_eq!(
            (answer.status, common::errcode(&answer)),
            (404, "M_NOT_FOUND".to_owned()),
            "{path}"
        );
    }
}
