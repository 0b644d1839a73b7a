//! The client API against hostile or odd input (issue 10, item 5): what a member may not
//! read (relations and threads of history they could not see, member lists from before they
//! could see the room), login that strangers cannot use to lock the owner out or to learn
//! that an account is deactivated, user-interactive auth that authorizes one request only,
//! and the spec's answers to odd bodies and paths.

mod common;

use common::http::{Client, Response};
use common::{Server, errcode, ok, test_config};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

fn server() -> Server {
    Server::start_with_users(
        &test_config("[limits]\nauth_attempts_per_minute = 100000\n"),
        &[("alice", PASSWORD), ("bob", PASSWORD)],
    )
}

fn login(server: &Server, user: &str) -> String {
    common::login_token(server, user, PASSWORD)
}

fn create_room(client: &mut Client, token: &str, body: Value) -> String {
    ok(client.json("POST", "/_matrix/client/v3/createRoom", Some(token), &body))["room_id"]
        .as_str()
        .expect("room_id")
        .to_owned()
}

fn send(client: &mut Client, token: &str, room: &str, txn: &str, content: &Value) -> String {
    ok(client.json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
        Some(token),
        content,
    ))["event_id"]
        .as_str()
        .expect("event_id")
        .to_owned()
}

fn raw(client: &mut Client, method: &str, path: &str, token: &str, body: &[u8]) -> Response {
    let bearer = format!("Bearer {token}");
    client
        .request(method, path, &[("Authorization", &bearer)], Some(body))
        .unwrap_or_else(|err| panic!("{method} {path}: {err}"))
}

#[test]
fn odd_bodies_get_the_spec_answers() {
    let server = server();
    let alice = login(&server, "alice");
    let mut client = server.client();
    let room = create_room(&mut client, &alice, json!({ "preset": "private_chat" }));
    let send_path =
        |txn: &str| format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");

    // An empty body is no event: not stored as `{}`.
    let empty = raw(&mut client, "PUT", &send_path("empty"), &alice, b"");
    assert_eq!((empty.status, errcode(&empty)), (400, "M_NOT_JSON".into()));
    let blank = raw(&mut client, "PUT", &send_path("blank"), &alice, b"  \r\n");
    assert_eq!((blank.status, errcode(&blank)), (400, "M_NOT_JSON".into()));

    // `-0` is an integer to canonical JSON (it encodes as `0`): accepted, stored as 0.
    let zero = raw(
        &mut client,
        "PUT",
        &send_path("zero"),
        &alice,
        br#"{"msgtype":"m.text","body":"zero","n":-0}"#,
    );
    assert_eq!(zero.status, 200, "{}", String::from_utf8_lossy(&zero.body));
    let event_id = zero.json()["event_id"].as_str().expect("id").to_owned();
    let event = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/event/{event_id}"),
        &alice,
    ));
    assert_eq!(event["content"]["n"], json!(0), "{event}");

    // Malformed power levels are bad JSON, not a refusal.
    for content in [
        json!({ "users": { "@alice:localhost": "lots" } }),
        json!({ "users": { "@alice:localhost": 100 }, "ban": "fifty" }),
        json!({ "users": { "@alice:localhost": 100 }, "events": [] }),
        json!({ "users": { "@alice:localhost": 100 }, "kick": 1.5 }),
        json!({ "users": { "not a user": 100 } }),
    ] {
        let answer = client.json(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            Some(&alice),
            &content,
        );
        assert_eq!(
            (answer.status, errcode(&answer)),
            (400, "M_BAD_JSON".into()),
            "{content}"
        );
    }

    // A per-room display name: the spec's own example of a member event sent as state.
    let renamed = client.json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/@alice:localhost"),
        Some(&alice),
        &json!({ "membership": "join", "displayname": "Alice here" }),
    );
    assert_eq!(
        renamed.status,
        200,
        "{}",
        String::from_utf8_lossy(&renamed.body)
    );
    let member = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/@alice:localhost"),
        &alice,
    ));
    assert_eq!(member["displayname"], "Alice here");
    assert_eq!(member["membership"], "join");
    // Memberships still change only through their endpoints.
    let leave = client.json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/@alice:localhost"),
        Some(&alice),
        &json!({ "membership": "leave" }),
    );
    assert_eq!(leave.status, 400);
    let other = client.json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/@bob:localhost"),
        Some(&alice),
        &json!({ "membership": "join", "displayname": "Bob" }),
    );
    assert_eq!((other.status, errcode(&other)), (403, "M_FORBIDDEN".into()));
    let number = client.json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/@alice:localhost"),
        Some(&alice),
        &json!({ "membership": 5 }),
    );
    assert_eq!(
        (number.status, errcode(&number)),
        (400, "M_BAD_JSON".into())
    );
}

#[test]
fn malformed_paths_get_the_spec_answers() {
    let server = server();
    let alice = login(&server, "alice");
    let mut client = server.client();
    for room in [
        "!",
        "%21",
        "!:",
        "!:localhost",
        "!abc",
        "!abc:bad%20server!",
    ] {
        let answer = client.get_with(&format!("/_matrix/client/v3/rooms/{room}/state"), &alice);
        assert_eq!(
            (answer.status, errcode(&answer)),
            (400, "M_INVALID_PARAM".into()),
            "{room}"
        );
    }
    let bad_utf8 = raw(
        &mut client,
        "PUT",
        "/_matrix/client/v3/rooms/%21%ff%fe%3Alocalhost/send/m.room.message/bad-utf8",
        &alice,
        br#"{"msgtype":"m.text","body":"x"}"#,
    );
    assert_eq!(
        (bad_utf8.status, errcode(&bad_utf8)),
        (400, "M_INVALID_PARAM".into()),
        "percent-encoded invalid UTF-8"
    );
    // A 60 KiB room ID: a short JSON error with an errcode, not the ID echoed back.
    let long = format!("!{}:localhost", "a".repeat(60 * 1024));
    let answer = client.get_with(&format!("/_matrix/client/v3/rooms/{long}/state"), &alice);
    assert_eq!(
        (answer.status, errcode(&answer)),
        (400, "M_INVALID_PARAM".into())
    );
    assert!(answer.body.len() < 1024, "{} bytes", answer.body.len());
    // Past 64 KiB the URI cannot be parsed at all: actix answers a bare 400 before any of
    // our code runs (no errcode can be added there), and must not log an ERROR line for it
    // (one per request: a stranger could fill the log).
    let longer = format!("!{}:localhost", "a".repeat(64 * 1024));
    let mut fresh = server.client();
    let answer = fresh.get_with(&format!("/_matrix/client/v3/rooms/{longer}/state"), &alice);
    assert_eq!(answer.status, 400);
    assert_eq!(server.client().get("/_matrix/client/versions").status, 200);
    assert!(
        !server.log_text().contains("ERROR"),
        "{}",
        server.log_text()
    );
}

/// A room whose history is for those joined when it was sent, where Bob was in, left, and
/// came back: `(room, root he saw, thread root sent while he was away, alice's token from
/// then)`. Alice replied in his thread and started another while he was away.
fn room_bob_left_and_rejoined(client: &mut Client, alice: &str, bob: &str) -> [String; 4] {
    let room = create_room(
        client,
        alice,
        json!({ "preset": "public_chat", "initial_state": [{
            "type": "m.room.history_visibility", "state_key": "",
            "content": { "history_visibility": "joined" } }] }),
    );
    let join = format!("/_matrix/client/v3/rooms/{room}/join");
    ok(client.json("POST", &join, Some(bob), &json!({})));
    let text = |body: &str| json!({ "msgtype": "m.text", "body": body });
    let reply = |root: &str, body: &str| {
        json!({ "msgtype": "m.text", "body": body,
                "m.relates_to": { "rel_type": "m.thread", "event_id": root } })
    };
    let root = send(client, alice, &room, "r1", &text("while bob is here"));
    send(client, bob, &room, "b1", &reply(&root, "bob's reply"));
    let leave = format!("/_matrix/client/v3/rooms/{room}/leave");
    ok(client.json("POST", &leave, Some(bob), &json!({})));
    send(client, alice, &room, "r2", &reply(&root, "secret reply"));
    let away_root = send(client, alice, &room, "r3", &text("secret thread"));
    send(
        client,
        alice,
        &room,
        "r4",
        &reply(&away_root, "secret in it"),
    );
    let token = ok(client.get_with("/_matrix/client/v3/sync", alice))["next_batch"]
        .as_str()
        .expect("token")
        .to_owned();
    ok(client.json("POST", &join, Some(bob), &json!({})));
    [room, root, away_root, token]
}

fn bodies(chunk: &Value) -> Vec<String> {
    chunk
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|event| event["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn relations_and_threads_show_only_what_the_reader_could_see() {
    let server = server();
    let (alice, bob) = (login(&server, "alice"), login(&server, "bob"));
    let mut client = server.client();
    let [room, root, away_root, _] = room_bob_left_and_rejoined(&mut client, &alice, &bob);

    let relations = ok(client.get_with(
        &format!("/_matrix/client/v1/rooms/{room}/relations/{root}"),
        &bob,
    ));
    assert_eq!(bodies(&relations["chunk"]), ["bob's reply"], "{relations}");
    let recursed = ok(client.get_with(
        &format!("/_matrix/client/v1/rooms/{room}/relations/{root}?recurse=true&dir=f"),
        &bob,
    ));
    assert_eq!(bodies(&recursed["chunk"]), ["bob's reply"], "{recursed}");
    // Alice, there all along, sees both.
    let hers = ok(client.get_with(
        &format!("/_matrix/client/v1/rooms/{room}/relations/{root}"),
        &alice,
    ));
    assert_eq!(bodies(&hers["chunk"]).len(), 2, "{hers}");

    // The thread started while he was away is not his to list or to read the replies of.
    let threads = ok(client.get_with(&format!("/_matrix/client/v1/rooms/{room}/threads"), &bob));
    let roots: Vec<&Value> = threads["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .map(|event| &event["event_id"])
        .collect();
    assert_eq!(roots, [&json!(root)], "{threads}");
    let summary = &threads["chunk"][0]["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(summary["count"], 1, "{threads}");
    assert_eq!(summary["latest_event"]["content"]["body"], "bob's reply");
    let hidden = client.get_with(
        &format!("/_matrix/client/v1/rooms/{room}/relations/{away_root}"),
        &bob,
    );
    assert_eq!(
        (hidden.status, errcode(&hidden)),
        (404, "M_NOT_FOUND".into())
    );
    let all = ok(client.get_with(&format!("/_matrix/client/v1/rooms/{room}/threads"), &alice));
    assert_eq!(all["chunk"].as_array().map(Vec::len), Some(2), "{all}");
}

#[test]
fn members_at_a_point_the_reader_could_not_see_are_refused() {
    let server = server();
    let (alice, bob) = (login(&server, "alice"), login(&server, "bob"));
    let mut client = server.client();
    let [room, _, _, token] = room_bob_left_and_rejoined(&mut client, &alice, &bob);
    let path = format!("/_matrix/client/v3/rooms/{room}/members?at={token}");
    let refused = client.get_with(&path, &bob);
    assert_eq!(
        (refused.status, errcode(&refused)),
        (403, "M_FORBIDDEN".into())
    );
    let members = ok(client.get_with(&path, &alice));
    assert!(!members["chunk"].as_array().expect("chunk").is_empty());
    // Now is visible to him.
    let now = ok(client.get_with("/_matrix/client/v3/sync", &bob))["next_batch"]
        .as_str()
        .expect("token")
        .to_owned();
    ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/members?at={now}"),
        &bob,
    ));
}

/// `POST /login` for `user` with `password`, as if from `address` (the server trusts
/// `X-Forwarded-For` from a proxy on loopback, as the tests' clients are).
fn login_from(server: &Server, address: &str, user: &str, password: &str) -> Response {
    let body = serde_json::to_vec(&json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": password,
    }))
    .expect("body");
    server
        .client()
        .request(
            "POST",
            "/_matrix/client/v3/login",
            &[("X-Forwarded-For", address)],
            Some(&body),
        )
        .expect("answer")
}

#[test]
fn strangers_guessing_do_not_lock_the_owner_out() {
    // The default limits: 10 attempts a minute per address.
    let server = Server::start_with_users(&test_config(""), &[("alice", PASSWORD)]);
    // Twelve guesses from twelve places, then twelve from one: the one place is slowed...
    for n in 0..12 {
        let guess = login_from(&server, &format!("203.0.113.{n}"), "alice", "guess");
        assert_eq!((guess.status, errcode(&guess)), (403, "M_FORBIDDEN".into()));
    }
    let statuses: Vec<u16> = (0..12)
        .map(|_| login_from(&server, "198.51.100.9", "alice", "guess").status)
        .collect();
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // ...and the owner, elsewhere, logs in.
    let owner = login_from(&server, "192.0.2.1", "alice", PASSWORD);
    assert_eq!(
        owner.status,
        200,
        "{}",
        String::from_utf8_lossy(&owner.body)
    );
}

#[test]
fn a_deactivated_account_is_told_only_to_its_password() {
    let server = server();
    let alice = login(&server, "alice");
    let mut client = server.client();
    let path = "/_matrix/client/v3/account/deactivate";
    let challenge = client.json("POST", path, Some(&alice), &json!({})).json();
    let auth = json!({ "auth": { "type": "m.login.password", "session": challenge["session"],
        "identifier": { "type": "m.id.user", "user": "alice" }, "password": PASSWORD } });
    ok(client.json("POST", path, Some(&alice), &auth));

    let wrong = login_from(&server, "192.0.2.1", "alice", "not the password");
    let unknown = login_from(&server, "192.0.2.1", "nobody", "not the password");
    assert_eq!((wrong.status, errcode(&wrong)), (403, "M_FORBIDDEN".into()));
    assert_eq!(wrong.json(), unknown.json());
    let right = login_from(&server, "192.0.2.1", "alice", PASSWORD);
    assert_eq!(
        (right.status, errcode(&right)),
        (403, "M_USER_DEACTIVATED".into())
    );
}

#[test]
fn a_completed_auth_session_authorizes_its_own_request_only() {
    let server = server();
    let alice = login(&server, "alice");
    let phone = ok(server.client().json(
        "POST",
        "/_matrix/client/v3/login",
        None,
        &json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" },
                 "password": PASSWORD, "device_id": "PHONE" }),
    ));
    assert_eq!(phone["device_id"], "PHONE");
    let mut client = server.client();
    let path = "/_matrix/client/v3/delete_devices";
    let challenge = client
        .json("POST", path, Some(&alice), &json!({ "devices": ["GONE"] }))
        .json();
    let session = &challenge["session"];
    let done = client.json(
        "POST",
        path,
        Some(&alice),
        &json!({ "devices": ["GONE"], "auth": { "type": "m.login.password", "session": session,
            "identifier": { "type": "m.id.user", "user": "alice" }, "password": PASSWORD } }),
    );
    assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));
    // The same request again (a lost answer) gets its result...
    let retry = client.json(
        "POST",
        path,
        Some(&alice),
        &json!({ "devices": ["GONE"], "auth": { "session": session } }),
    );
    assert_eq!(retry.status, 200);
    // ...another body does not ride on the session.
    let replay = client.json(
        "POST",
        path,
        Some(&alice),
        &json!({ "devices": ["PHONE"], "auth": { "session": session } }),
    );
    assert_eq!(
        (replay.status, errcode(&replay)),
        (403, "M_FORBIDDEN".into())
    );
    let devices = ok(client.get_with("/_matrix/client/v3/devices", &alice));
    assert!(
        devices["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .any(|device| device["device_id"] == "PHONE"),
        "{devices}"
    );
}
