//! The hostile-input catalogue of the client-server API (issue 10): one real server, and a
//! table of requests as a careless or hostile client would send them (broken JSON, invalid
//! UTF-8, deep nesting, numbers canonical JSON cannot hold, wrong types in each field of the
//! common bodies, bad identifiers in paths, huge bodies, bad tokens, rooms the user is not
//! in), each with the status and errcode the spec gives. `common::catalogue` runs them: the
//! answer, a JSON error body, no change to the room, the account or the directory, and a
//! healthy server after each.
//!
//! Cases actix-web answers before our code runs (without a JSON body) are marked
//! `.known("actix")` and run by their own `#[ignore]`d test.

mod common;

use common::catalogue::{Case, Target, check_all, check_known, raw_head};
use common::{Server, login_token, ok, query_encode, test_config};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// The server and what the cases aim at: Alice's private room (Bob is not in it), with a
/// message, an alias, account data and a filter.
struct Fixture {
    server: Server,
    alice: String,
    bob: String,
    /// A token of Alice's that was logged out.
    logged_out: String,
    room: String,
    event: String,
    filter: String,
}

fn fixture() -> Fixture {
    let config = test_config(
        "[limits]\nauth_attempts_per_minute = 100000\n\n\
         [registration]\nenabled = true\nopen = true\n",
    );
    let server = Server::start_with_users(&config, &[("alice", PASSWORD), ("bob", PASSWORD)]);
    let alice = login_token(&server, "alice", PASSWORD);
    let bob = login_token(&server, "bob", PASSWORD);
    let logged_out = login_token(&server, "alice", PASSWORD);
    ok(server.client().json(
        "POST",
        "/_matrix/client/v3/logout",
        Some(&logged_out),
        &json!({}),
    ));
    let mut client = server.client();
    let room = ok(client.json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&alice),
        &json!({ "preset": "private_chat", "name": "Catalogue", "room_alias_name": "catalogue" }),
    ))["room_id"]
        .as_str()
        .expect("room_id")
        .to_owned();
    let event = ok(client.json(
        "PUT",
        &format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/setup",
            query_encode(&room)
        ),
        Some(&alice),
        &json!({ "msgtype": "m.text", "body": "before the catalogue" }),
    ))["event_id"]
        .as_str()
        .expect("event_id")
        .to_owned();
    ok(client.json(
        "PUT",
        "/_matrix/client/v3/user/@alice:localhost/account_data/m.catalogue",
        Some(&alice),
        &json!({ "kept": true }),
    ));
    let filter = ok(client.json(
        "POST",
        "/_matrix/client/v3/user/@alice:localhost/filter",
        Some(&alice),
        &json!({ "room": { "timeline": { "limit": 5 } } }),
    ))["filter_id"]
        .as_str()
        .expect("filter_id")
        .to_owned();
    Fixture {
        server,
        alice,
        bob,
        logged_out,
        room,
        event,
        filter,
    }
}

/// What no failed request may change: the room's state and timeline, Alice's rooms,
/// profile, account data, push rules, filters and devices, Bob's rooms, the alias.
fn snapshot(fixture: &Fixture) -> Value {
    let mut client = fixture.server.client();
    let room = query_encode(&fixture.room);
    let mut get = |path: &str, token: &str| {
        let response = client.get_with(path, token);
        let json: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        json!({ "status": response.status, "body": json })
    };
    let state = get(
        &format!("/_matrix/client/v3/rooms/{room}/state"),
        &fixture.alice,
    );
    let state: Vec<Value> = state["body"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|event| json!([event["type"], event["state_key"], event["event_id"]]))
        .collect();
    let messages = get(
        &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100"),
        &fixture.alice,
    );
    let timeline: Vec<Value> = messages["body"]["chunk"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|event| event["event_id"].clone())
        .collect();
    let devices: Vec<Value> = get("/_matrix/client/v3/devices", &fixture.alice)["body"]["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|device| device["device_id"].clone())
        .collect();
    json!({
        "state": state,
        "timeline": timeline,
        "alice_rooms": get("/_matrix/client/v3/joined_rooms", &fixture.alice),
        "bob_rooms": get("/_matrix/client/v3/joined_rooms", &fixture.bob),
        "profile": get("/_matrix/client/v3/profile/@alice:localhost", &fixture.alice),
        "account_data": get(
            "/_matrix/client/v3/user/@alice:localhost/account_data/m.catalogue",
            &fixture.alice,
        ),
        "push_rules": get("/_matrix/client/v3/pushrules/", &fixture.alice),
        "filter": get(
            &format!("/_matrix/client/v3/user/@alice:localhost/filter/{}", fixture.filter),
            &fixture.alice,
        ),
        "devices": devices,
        "newcomer": get("/_matrix/client/v3/profile/@newcomer:localhost", &fixture.alice),
        "alias": get(
            &format!("/_matrix/client/v3/directory/room/{}", query_encode("#catalogue:localhost")),
            &fixture.alice,
        ),
        "visibility": get(
            &format!("/_matrix/client/v3/directory/list/room/{room}"),
            &fixture.alice,
        ),
    })
}

fn healthy(fixture: &Fixture) -> Result<(), String> {
    let response = fixture
        .server
        .client()
        .get_with("/_matrix/client/v3/account/whoami", &fixture.alice);
    match response.status {
        200 => Ok(()),
        status => Err(format!(
            "whoami answered {status}: {}",
            String::from_utf8_lossy(&response.body)
        )),
    }
}

/// `[[[…]]]`, `depth` deep, inside an object.
fn deep(depth: usize) -> Vec<u8> {
    format!("{{\"body\":{}{}}}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
}

fn cases(f: &Fixture) -> Vec<Case> {
    let room = query_encode(&f.room);
    let event = query_encode(&f.event);
    let (a, b) = (f.alice.as_str(), f.bob.as_str());
    let send = |txn: &str| format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
    let state = |kind: &str, key: &str| {
        format!(
            "/_matrix/client/v3/rooms/{room}/state/{kind}/{}",
            query_encode(key)
        )
    };
    let in_room = |rest: &str| format!("/_matrix/client/v3/rooms/{room}/{rest}");
    let with_room_id = |id: &str| {
        format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/bad-id",
            query_encode(id)
        )
    };
    let login = "/_matrix/client/v3/login";
    let register = "/_matrix/client/v3/register";
    let create = "/_matrix/client/v3/createRoom";
    let typing = in_room("typing/@alice:localhost");
    let receipt = in_room(&format!("receipt/m.read/{event}"));
    let filter = "/_matrix/client/v3/user/@alice:localhost/filter";
    let displayname = "/_matrix/client/v3/profile/@alice:localhost/displayname";
    let account_data = "/_matrix/client/v3/user/@alice:localhost/account_data";
    let pushrule = "/_matrix/client/v3/pushrules/global";
    let alias = |alias: &str| format!("/_matrix/client/v3/directory/room/{}", query_encode(alias));
    let huge = 9 * 1024 * 1024;
    let message = json!({ "msgtype": "m.text", "body": "hostile" });

    vec![
        // Broken JSON, bad encodings and numbers canonical JSON cannot hold, in an event.
        Case::new("send: truncated JSON", "PUT", send("t1"))
            .token(a)
            .bytes(&b"{\"body\":"[..])
            .expect(400, "M_NOT_JSON"),
        Case::new("send: invalid UTF-8", "PUT", send("t2"))
            .token(a)
            .bytes(&b"{\"msgtype\":\"m.text\",\"body\":\"\xff\xfe\"}"[..])
            .expect(400, "M_NOT_JSON"),
        Case::new("send: a lone surrogate escape", "PUT", send("t3"))
            .token(a)
            .bytes(&br#"{"msgtype":"m.text","body":"\ud800"}"#[..])
            .expect(400, "M_NOT_JSON"),
        Case::new("send: nesting 100,000 deep", "PUT", send("t4"))
            .token(a)
            .bytes(deep(100_000))
            .expect(400, "M_NOT_JSON")
            .expect(400, "M_BAD_JSON"),
        Case::new("send: nesting 200 deep", "PUT", send("t5"))
            .token(a)
            .bytes(deep(200))
            .expect(400, "M_NOT_JSON")
            .expect(400, "M_BAD_JSON"),
        Case::new("send: an integer past 2^53", "PUT", send("t6"))
            .token(a)
            .bytes(&br#"{"msgtype":"m.text","body":"x","n":9007199254740992}"#[..])
            .expect(400, "M_BAD_JSON"),
        Case::new("send: an integer past 2^64", "PUT", send("t7"))
            .token(a)
            .bytes(&br#"{"msgtype":"m.text","body":"x","n":184467440737095516160}"#[..])
            .expect(400, "M_BAD_JSON")
            .expect(400, "M_NOT_JSON"),
        Case::new("send: a float", "PUT", send("t8"))
            .token(a)
            .bytes(&br#"{"msgtype":"m.text","body":"x","n":1.5}"#[..])
            .expect(400, "M_BAD_JSON"),
        Case::new("send: 1e400", "PUT", send("t9"))
            .token(a)
            .bytes(&br#"{"msgtype":"m.text","body":"x","n":1e400}"#[..])
            .expect(400, "M_BAD_JSON")
            .expect(400, "M_NOT_JSON"),
        Case::new("send: NaN", "PUT", send("t10"))
            .token(a)
            .bytes(&br#"{"msgtype":"m.text","body":"x","n":NaN}"#[..])
            .expect(400, "M_NOT_JSON"),
        Case::new("send: Infinity", "PUT", send("t11"))
            .token(a)
            .bytes(&br#"{"msgtype":"m.text","body":"x","n":-Infinity}"#[..])
            .expect(400, "M_NOT_JSON"),
        Case::new("send: trailing bytes after the object", "PUT", send("t12"))
            .token(a)
            .bytes(&br#"{"msgtype":"m.text","body":"x"} {}"#[..])
            .expect(400, "M_NOT_JSON"),
        Case::new("send: a JSON array", "PUT", send("t13"))
            .token(a)
            .json(&json!([message]))
            .expect(400, "M_BAD_JSON")
            .expect(400, "M_NOT_JSON"),
        Case::new("send: a JSON string", "PUT", send("t14"))
            .token(a)
            .json(&json!("hello"))
            .expect(400, "M_BAD_JSON")
            .expect(400, "M_NOT_JSON"),
        Case::new("send: JSON null", "PUT", send("t15"))
            .token(a)
            .bytes(&b"null"[..])
            .expect(400, "M_BAD_JSON")
            .expect(400, "M_NOT_JSON"),
        Case::new("send: an empty body", "PUT", send("t16"))
            .token(a)
            .bytes(Vec::new())
            .expect(400, "M_NOT_JSON"),
        // -0 is an integer to canonical JSON (it encodes as 0): the spec's examples send it.
        Case::new("send: -0 is accepted", "PUT", send("t17"))
            .token(a)
            .bytes(&br#"{"msgtype":"m.text","body":"x","n":-0}"#[..])
            .expect(200, ""),
        // Tokens.
        Case::new(
            "whoami: no token",
            "GET",
            "/_matrix/client/v3/account/whoami",
        )
        .expect(401, "M_MISSING_TOKEN"),
        Case::new(
            "whoami: an unknown token",
            "GET",
            "/_matrix/client/v3/account/whoami",
        )
        .token("syt_not_a_token")
        .expect(401, "M_UNKNOWN_TOKEN"),
        Case::new(
            "whoami: a logged-out token",
            "GET",
            "/_matrix/client/v3/account/whoami",
        )
        .token(&f.logged_out)
        .expect(401, "M_UNKNOWN_TOKEN"),
        Case::new(
            "whoami: an unknown token in the query",
            "GET",
            "/_matrix/client/v3/account/whoami?access_token=nope",
        )
        .expect(401, "M_UNKNOWN_TOKEN"),
        Case::new(
            "whoami: an empty bearer",
            "GET",
            "/_matrix/client/v3/account/whoami",
        )
        .header("Authorization", "Bearer ")
        .expect(401, "M_MISSING_TOKEN")
        .expect(401, "M_UNKNOWN_TOKEN"),
        Case::new(
            "whoami: another scheme",
            "GET",
            "/_matrix/client/v3/account/whoami",
        )
        .header("Authorization", "Basic YWxpY2U6cGFzcw==")
        .expect(401, "M_MISSING_TOKEN")
        .expect(401, "M_UNKNOWN_TOKEN"),
        Case::new(
            "whoami: a 6 KiB token",
            "GET",
            "/_matrix/client/v3/account/whoami",
        )
        .token(&"x".repeat(6 * 1024))
        .expect(401, "M_UNKNOWN_TOKEN"),
        Case::new("send: no token", "PUT", send("t18"))
            .json(&message)
            .expect(401, "M_MISSING_TOKEN"),
        Case::new("send: a logged-out token", "PUT", send("t19"))
            .token(&f.logged_out)
            .json(&message)
            .expect(401, "M_UNKNOWN_TOKEN"),
        // A room the user is not in.
        Case::new("outsider: send", "PUT", send("t20"))
            .token(b)
            .json(&message)
            .expect(403, "M_FORBIDDEN"),
        Case::new("outsider: messages", "GET", in_room("messages?dir=b"))
            .token(b)
            .expect(403, "M_FORBIDDEN"),
        Case::new("outsider: state", "GET", in_room("state"))
            .token(b)
            .expect(403, "M_FORBIDDEN"),
        Case::new("outsider: one state event", "GET", state("m.room.name", ""))
            .token(b)
            .expect(403, "M_FORBIDDEN")
            .expect(404, "M_NOT_FOUND"),
        Case::new("outsider: put state", "PUT", state("m.room.topic", ""))
            .token(b)
            .json(&json!({ "topic": "mine now" }))
            .expect(403, "M_FORBIDDEN"),
        Case::new("outsider: members", "GET", in_room("members"))
            .token(b)
            .expect(403, "M_FORBIDDEN"),
        Case::new(
            "outsider: an event",
            "GET",
            in_room(&format!("event/{event}")),
        )
        .token(b)
        .expect(404, "M_NOT_FOUND"),
        Case::new(
            "outsider: context",
            "GET",
            in_room(&format!("context/{event}")),
        )
        .token(b)
        .expect(404, "M_NOT_FOUND")
        .expect(403, "M_FORBIDDEN"),
        Case::new(
            "outsider: join an invite-only room",
            "POST",
            in_room("join"),
        )
        .token(b)
        .json(&json!({}))
        .expect(403, "M_FORBIDDEN"),
        Case::new("outsider: invite themself", "POST", in_room("invite"))
            .token(b)
            .json(&json!({ "user_id": "@bob:localhost" }))
            .expect(403, "M_FORBIDDEN"),
        Case::new("outsider: typing", "PUT", in_room("typing/@bob:localhost"))
            .token(b)
            .json(&json!({ "typing": true, "timeout": 1000 }))
            .expect(403, "M_FORBIDDEN"),
        Case::new(
            "outsider: redact",
            "PUT",
            in_room(&format!("redact/{event}/r1")),
        )
        .token(b)
        .json(&json!({}))
        .expect(403, "M_FORBIDDEN"),
        Case::new(
            "outsider: publish the room",
            "PUT",
            format!("/_matrix/client/v3/directory/list/room/{room}"),
        )
        .token(b)
        .json(&json!({ "visibility": "public" }))
        .expect(403, "M_FORBIDDEN"),
        Case::new(
            "outsider: delete the alias",
            "DELETE",
            alias("#catalogue:localhost"),
        )
        .token(b)
        .expect(403, "M_FORBIDDEN"),
        Case::new(
            "another user's account data",
            "PUT",
            format!("{account_data}/m.catalogue"),
        )
        .token(b)
        .json(&json!({ "kept": false }))
        .expect(403, "M_FORBIDDEN"),
        Case::new("another user's displayname", "PUT", displayname)
            .token(b)
            .json(&json!({ "displayname": "Mallory" }))
            .expect(403, "M_FORBIDDEN"),
        Case::new("another user's filter", "POST", filter)
            .token(b)
            .json(&json!({}))
            .expect(403, "M_FORBIDDEN"),
        Case::new(
            "another user's typing",
            "PUT",
            in_room("typing/@bob:localhost"),
        )
        .token(a)
        .json(&json!({ "typing": true, "timeout": 1000 }))
        .expect(403, "M_FORBIDDEN"),
        // Bad identifiers in paths.
        Case::new("room ID: `!`", "PUT", with_room_id("!"))
            .token(a)
            .json(&message)
            .expect(400, "M_INVALID_PARAM"),
        Case::new("room ID: no sigil", "PUT", with_room_id("abc:localhost"))
            .token(a)
            .json(&message)
            .expect(400, "M_INVALID_PARAM"),
        Case::new(
            "room ID: an alias",
            "PUT",
            with_room_id("#catalogue:localhost"),
        )
        .token(a)
        .json(&message)
        .expect(400, "M_INVALID_PARAM"),
        Case::new(
            "room ID: 300 bytes",
            "PUT",
            with_room_id(&format!("!{}:localhost", "a".repeat(300))),
        )
        .token(a)
        .json(&message)
        .expect(400, "M_INVALID_PARAM"),
        Case::new(
            "room ID: a bad server name",
            "PUT",
            with_room_id("!abc:bad server!"),
        )
        .token(a)
        .json(&message)
        .expect(400, "M_INVALID_PARAM"),
        Case::new(
            "room ID: percent-encoded invalid UTF-8",
            "PUT",
            "/_matrix/client/v3/rooms/%21%ff%fe%3Alocalhost/send/m.room.message/bad-utf8",
        )
        .token(a)
        .json(&message)
        .expect(400, "M_INVALID_PARAM"),
        Case::new(
            "room ID: an encoded NUL",
            "PUT",
            "/_matrix/client/v3/rooms/%21a%00b%3Alocalhost/send/m.room.message/nul",
        )
        .token(a)
        .json(&message)
        .expect(400, "M_INVALID_PARAM"),
        Case::new(
            "room ID: 64 KiB",
            "GET",
            format!("/_matrix/client/v3/rooms/!{}/state", "a".repeat(64 * 1024)),
        )
        .token(a)
        .expect(400, "*")
        .expect(414, "*")
        .known("actix"),
        Case::new(
            "user ID: `@` in a profile path",
            "GET",
            "/_matrix/client/v3/profile/%40",
        )
        .token(a)
        .expect(400, "M_INVALID_PARAM"),
        Case::new(
            "user ID: no sigil in a profile path",
            "GET",
            "/_matrix/client/v3/profile/alice",
        )
        .token(a)
        .expect(400, "M_INVALID_PARAM"),
        Case::new(
            "user ID: unknown",
            "GET",
            "/_matrix/client/v3/profile/%40nobody%3Alocalhost",
        )
        .token(a)
        .expect(404, "M_NOT_FOUND"),
        Case::new("user ID: bad in an invite", "POST", in_room("invite"))
            .token(a)
            .json(&json!({ "user_id": "not a user" }))
            .expect(400, "M_INVALID_PARAM")
            .expect(400, "M_BAD_JSON"),
        Case::new("event ID: junk", "GET", in_room("event/not-an-event-id"))
            .token(a)
            .expect(400, "M_INVALID_PARAM")
            .expect(404, "M_NOT_FOUND"),
        Case::new(
            "event ID: unknown",
            "GET",
            in_room(&format!("event/{}", query_encode("$nothing_here"))),
        )
        .token(a)
        .expect(404, "M_NOT_FOUND"),
        Case::new("alias: no sigil", "GET", alias("catalogue:localhost"))
            .token(a)
            .expect(400, "M_INVALID_PARAM"),
        Case::new("alias: `#`", "GET", alias("#"))
            .token(a)
            .expect(400, "M_INVALID_PARAM"),
        Case::new("alias: unknown", "GET", alias("#nothing:localhost"))
            .token(a)
            .expect(404, "M_NOT_FOUND"),
        Case::new("alias: of another server", "PUT", alias("#x:other.example"))
            .token(a)
            .json(&json!({ "room_id": f.room }))
            .expect(400, "M_INVALID_PARAM"),
        Case::new("alias: taken", "PUT", alias("#catalogue:localhost"))
            .token(a)
            .json(&json!({ "room_id": f.room }))
            .expect(409, "M_UNKNOWN"),
        Case::new("alias: room_id a number", "PUT", alias("#new:localhost"))
            .token(a)
            .json(&json!({ "room_id": 5 }))
            .expect(400, "M_BAD_JSON"),
        Case::new("alias: room_id invalid", "PUT", alias("#new:localhost"))
            .token(a)
            .json(&json!({ "room_id": "not a room" }))
            .expect(400, "M_INVALID_PARAM")
            .expect(400, "M_BAD_JSON"),
        // Login.
        Case::new("login: type a number", "POST", login)
            .json(&json!({
                "type": 5,
                "identifier": { "type": "m.id.user", "user": "alice" },
                "password": PASSWORD,
            }))
            .expect(400, "M_BAD_JSON")
            .expect(400, "M_UNKNOWN"),
        Case::new("login: an unknown type", "POST", login)
            .json(&json!({
                "type": "m.login.nope",
                "identifier": { "type": "m.id.user", "user": "alice" },
            }))
            .expect(400, "M_UNKNOWN"),
        Case::new("login: user a number", "POST", login)
            .json(&json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": 5 },
                "password": PASSWORD,
            }))
            .expect(400, "M_BAD_JSON")
            .expect(400, "M_INVALID_PARAM"),
        Case::new("login: password a number", "POST", login)
            .json(&json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": "alice" },
                "password": 5,
            }))
            .expect(400, "M_BAD_JSON"),
        Case::new("login: identifier a string", "POST", login)
            .json(
                &json!({ "type": "m.login.password", "identifier": "alice", "password": PASSWORD }),
            )
            .expect(400, "M_BAD_JSON")
            .expect(400, "M_UNKNOWN"),
        Case::new("login: body an array", "POST", login)
            .json(&json!([]))
            .expect(400, "M_BAD_JSON")
            .expect(400, "M_NOT_JSON"),
        Case::new("login: the wrong password", "POST", login)
            .json(&json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": "alice" },
                "password": "wrong",
            }))
            .expect(403, "M_FORBIDDEN"),
        Case::new("login: invalid JSON", "POST", login)
            .bytes(&b"{type: m.login.password}"[..])
            .expect(400, "M_NOT_JSON"),
        // Registration (open on this server).
        Case::new("register: username a number", "POST", register)
            .json(&json!({ "username": 5, "password": "a long enough password" }))
            .expect(400, "M_BAD_JSON")
            .expect(400, "M_INVALID_USERNAME"),
        Case::new("register: username invalid", "POST", register)
            .json(&json!({ "username": "Not Valid!", "password": "a long enough password" }))
            .expect(400, "M_INVALID_USERNAME"),
        Case::new("register: username taken", "POST", register)
            .json(&json!({ "username": "alice", "password": "a long enough password" }))
            .expect(400, "M_USER_IN_USE"),
        Case::new("register: password a number", "POST", register)
            .json(&json!({ "username": "newcomer", "password": 12345678 }))
            .expect(400, "M_BAD_JSON"),
        Case::new("register: inhibit_login a string", "POST", register)
            .json(&json!({
                "username": "newcomer",
                "password": "a long enough password",
                "inhibit_login": "yes",
            }))
            .expect(400, "M_BAD_JSON"),
        // createRoom.
        Case::new("createRoom: name a number", "POST", create)
            .token(a)
            .json(&json!({ "name": 5 }))
            .expect(400, "M_BAD_JSON"),
        Case::new("createRoom: invite not a list", "POST", create)
            .token(a)
            .json(&json!({ "invite": "@bob:localhost" }))
            .expect(400, "M_BAD_JSON"),
        Case::new("createRoom: invite a bad user ID", "POST", create)
            .token(a)
            .json(&json!({ "invite": ["not a user"] }))
            .expect(400, "M_INVALID_PARAM")
            .expect(400, "M_BAD_JSON"),
        Case::new("createRoom: an unknown room version", "POST", create)
            .token(a)
            .json(&json!({ "room_version": "999" }))
            .expect(400, "M_UNSUPPORTED_ROOM_VERSION"),
        Case::new("createRoom: an unknown preset", "POST", create)
            .token(a)
            .json(&json!({ "preset": "everyone_is_admin" }))
            .expect(400, "M_BAD_JSON")
            .expect(400, "M_INVALID_PARAM"),
        Case::new("createRoom: initial_state not events", "POST", create)
            .token(a)
            .json(&json!({ "initial_state": [5] }))
            .expect(400, "M_BAD_JSON")
            .expect(400, "M_INVALID_ROOM_STATE"),
        Case::new(
            "createRoom: power_level_content_override a list",
            "POST",
            create,
        )
        .token(a)
        .json(&json!({ "power_level_content_override": [] }))
        .expect(400, "M_BAD_JSON"),
        Case::new("createRoom: an alias with a colon", "POST", create)
            .token(a)
            .json(&json!({ "room_alias_name": "a:b" }))
            .expect(400, "M_INVALID_PARAM"),
        Case::new("createRoom: an alias taken", "POST", create)
            .token(a)
            .json(&json!({ "room_alias_name": "catalogue" }))
            .expect(400, "M_ROOM_IN_USE"),
        Case::new("createRoom: a float in creation_content", "POST", create)
            .token(a)
            .bytes(&br#"{"creation_content":{"n":0.5}}"#[..])
            .expect(400, "M_BAD_JSON"),
        // State events.
        Case::new(
            "state: malformed power levels",
            "PUT",
            state("m.room.power_levels", ""),
        )
        .token(a)
        .json(&json!({ "users": "everyone" }))
        .expect(400, "M_BAD_JSON"),
        Case::new(
            "state: membership a number",
            "PUT",
            state("m.room.member", "@alice:localhost"),
        )
        .token(a)
        .json(&json!({ "membership": 5 }))
        .expect(400, "M_BAD_JSON"),
        Case::new(
            "state: a body that is a list",
            "PUT",
            state("m.room.topic", ""),
        )
        .token(a)
        .json(&json!(["topic"]))
        .expect(400, "M_BAD_JSON")
        .expect(400, "M_NOT_JSON"),
        Case::new(
            "state: a second create event",
            "PUT",
            state("m.room.create", ""),
        )
        .token(a)
        .json(&json!({ "room_version": "1" }))
        .expect(403, "M_FORBIDDEN")
        .expect(400, "M_BAD_JSON"),
        Case::new(
            "state: join another user",
            "PUT",
            state("m.room.member", "@bob:localhost"),
        )
        .token(a)
        .json(&json!({ "membership": "join" }))
        .expect(403, "M_FORBIDDEN"),
        Case::new(
            "state: own member event with a displayname",
            "PUT",
            state("m.room.member", "@alice:localhost"),
        )
        .token(a)
        .json(&json!({ "membership": "join", "displayname": "Alice here" }))
        .expect(200, ""),
        // Typing.
        Case::new("typing: typing a string", "PUT", typing.clone())
            .token(a)
            .json(&json!({ "typing": "yes", "timeout": 1000 }))
            .expect(400, "M_BAD_JSON"),
        Case::new("typing: timeout a string", "PUT", typing.clone())
            .token(a)
            .json(&json!({ "typing": true, "timeout": "soon" }))
            .expect(400, "M_BAD_JSON"),
        Case::new("typing: typing missing", "PUT", typing)
            .token(a)
            .json(&json!({ "timeout": 1000 }))
            .expect(400, "M_BAD_JSON"),
        // Receipts.
        Case::new(
            "receipt: an unknown type",
            "POST",
            in_room(&format!("receipt/m.nope/{event}")),
        )
        .token(a)
        .json(&json!({}))
        .expect(400, "M_INVALID_PARAM"),
        Case::new("receipt: thread_id a number", "POST", receipt.clone())
            .token(a)
            .json(&json!({ "thread_id": 5 }))
            .expect(400, "M_INVALID_PARAM")
            .expect(400, "M_BAD_JSON"),
        Case::new("receipt: a body that is a list", "POST", receipt)
            .token(a)
            .json(&json!([]))
            .expect(400, "M_BAD_JSON")
            .expect(400, "M_NOT_JSON"),
        // Filters.
        Case::new("filter: room a number", "POST", filter)
            .token(a)
            .json(&json!({ "room": 5 }))
            .expect(400, "M_BAD_JSON")
            .expect(400, "M_INVALID_PARAM"),
        Case::new("filter: limit a string", "POST", filter)
            .token(a)
            .json(&json!({ "room": { "timeline": { "limit": "ten" } } }))
            .expect(400, "M_BAD_JSON")
            .expect(400, "M_INVALID_PARAM"),
        Case::new("filter: an unknown ID", "GET", format!("{filter}/999999"))
            .token(a)
            .expect(404, "M_NOT_FOUND"),
        Case::new(
            "sync: an unknown filter ID",
            "GET",
            "/_matrix/client/v3/sync?filter=nonexistent&timeout=0",
        )
        .token(a)
        .expect(400, "M_INVALID_PARAM")
        .expect(404, "M_NOT_FOUND"),
        Case::new(
            "sync: inline filter broken",
            "GET",
            format!(
                "/_matrix/client/v3/sync?timeout=0&filter={}",
                query_encode("{\"room\":")
            ),
        )
        .token(a)
        .expect(400, "M_INVALID_PARAM")
        .expect(400, "M_NOT_JSON")
        .expect(400, "M_BAD_JSON"),
        Case::new(
            "sync: since garbage",
            "GET",
            "/_matrix/client/v3/sync?since=garbage&timeout=0",
        )
        .token(a)
        .expect(400, "M_INVALID_PARAM"),
        Case::new(
            "sync: since past u64",
            "GET",
            "/_matrix/client/v3/sync?since=99999999999999999999999&timeout=0",
        )
        .token(a)
        .expect(400, "M_INVALID_PARAM"),
        Case::new(
            "sync: timeout negative",
            "GET",
            "/_matrix/client/v3/sync?timeout=-5",
        )
        .token(a)
        .expect(400, "M_INVALID_PARAM"),
        Case::new(
            "messages: from garbage",
            "GET",
            in_room("messages?dir=b&from=garbage"),
        )
        .token(a)
        .expect(400, "M_INVALID_PARAM"),
        Case::new("messages: dir x", "GET", in_room("messages?dir=x"))
            .token(a)
            .expect(400, "M_INVALID_PARAM"),
        Case::new(
            "messages: limit abc",
            "GET",
            in_room("messages?dir=b&limit=abc"),
        )
        .token(a)
        .expect(400, "M_INVALID_PARAM"),
        // Profile.
        Case::new("profile: displayname a number", "PUT", displayname)
            .token(a)
            .json(&json!({ "displayname": 5 }))
            .expect(400, "M_BAD_JSON"),
        Case::new(
            "profile: avatar_url a list",
            "PUT",
            "/_matrix/client/v3/profile/@alice:localhost/avatar_url",
        )
        .token(a)
        .json(&json!({ "avatar_url": ["mxc://x/y"] }))
        .expect(400, "M_BAD_JSON"),
        Case::new("profile: a body that is a list", "PUT", displayname)
            .token(a)
            .json(&json!(["Alice"]))
            .expect(400, "M_BAD_JSON")
            .expect(400, "M_NOT_JSON"),
        Case::new(
            "profile: a key of 300 bytes",
            "PUT",
            format!(
                "/_matrix/client/v3/profile/@alice:localhost/{}",
                "k".repeat(300)
            ),
        )
        .token(a)
        .json(&json!({ "k".repeat(300): "v" }))
        .expect(400, "M_KEY_TOO_LARGE"),
        Case::new(
            "profile: a field of 70 KiB",
            "PUT",
            "/_matrix/client/v3/profile/@alice:localhost/org.example.big",
        )
        .token(a)
        .json(&json!({ "org.example.big": "v".repeat(70 * 1024) }))
        .expect(400, "M_PROFILE_TOO_LARGE")
        .expect(413, "M_TOO_LARGE"),
        // Account data.
        Case::new(
            "account data: a list",
            "PUT",
            format!("{account_data}/m.catalogue"),
        )
        .token(a)
        .json(&json!([1]))
        .expect(400, "M_BAD_JSON")
        .expect(400, "M_NOT_JSON"),
        Case::new(
            "account data: m.fully_read",
            "PUT",
            format!("{account_data}/m.fully_read"),
        )
        .token(a)
        .json(&json!({ "event_id": f.event }))
        .expect(405, "M_BAD_JSON"),
        Case::new(
            "account data: m.push_rules",
            "PUT",
            format!("{account_data}/m.push_rules"),
        )
        .token(a)
        .json(&json!({}))
        .expect(405, "M_BAD_JSON"),
        Case::new(
            "account data: unknown type",
            "GET",
            format!("{account_data}/m.nothing"),
        )
        .token(a)
        .expect(404, "M_NOT_FOUND"),
        Case::new(
            "account data: a bad room ID",
            "PUT",
            "/_matrix/client/v3/user/@alice:localhost/rooms/not-a-room/account_data/m.x",
        )
        .token(a)
        .json(&json!({}))
        .expect(400, "M_INVALID_PARAM"),
        // Push rules.
        Case::new(
            "pushrules: an unknown kind",
            "PUT",
            format!("{pushrule}/nope/x"),
        )
        .token(a)
        .json(&json!({ "actions": ["notify"] }))
        .expect(400, "M_INVALID_PARAM")
        .expect(400, "M_UNKNOWN")
        .expect(404, "M_NOT_FOUND"),
        Case::new(
            "pushrules: a server-default rule ID",
            "PUT",
            format!("{pushrule}/override/.m.rule.mine"),
        )
        .token(a)
        .json(&json!({ "actions": ["notify"] }))
        .expect(400, "M_INVALID_PARAM")
        .expect(400, "M_UNKNOWN"),
        Case::new(
            "pushrules: actions a string",
            "PUT",
            format!("{pushrule}/override/mine"),
        )
        .token(a)
        .json(&json!({ "actions": "notify" }))
        .expect(400, "M_BAD_JSON")
        .expect(400, "M_INVALID_PARAM")
        .expect(400, "M_UNKNOWN"),
        Case::new(
            "pushrules: a content rule without pattern",
            "PUT",
            format!("{pushrule}/content/mine"),
        )
        .token(a)
        .json(&json!({ "actions": ["notify"] }))
        .expect(400, "M_BAD_JSON")
        .expect(400, "M_INVALID_PARAM")
        .expect(400, "M_MISSING_PARAM")
        .expect(400, "M_UNKNOWN"),
        Case::new(
            "pushrules: before an unknown rule",
            "PUT",
            format!("{pushrule}/override/mine?before=nothing"),
        )
        .token(a)
        .json(&json!({ "actions": ["notify"], "conditions": [] }))
        .expect(404, "M_NOT_FOUND")
        .expect(400, "M_UNKNOWN"),
        Case::new(
            "pushrules: get an unknown rule",
            "GET",
            format!("{pushrule}/override/nothing"),
        )
        .token(a)
        .expect(404, "M_NOT_FOUND"),
        Case::new(
            "pushrules: enabled a string",
            "PUT",
            format!("{pushrule}/override/.m.rule.master/enabled"),
        )
        .token(a)
        .json(&json!({ "enabled": "yes" }))
        .expect(400, "M_BAD_JSON"),
        // Directory.
        Case::new(
            "directory: an unknown visibility",
            "PUT",
            format!("/_matrix/client/v3/directory/list/room/{room}"),
        )
        .token(a)
        .json(&json!({ "visibility": "secret" }))
        .expect(400, "M_INVALID_PARAM")
        .expect(400, "M_BAD_JSON"),
        Case::new(
            "publicRooms: limit a string",
            "POST",
            "/_matrix/client/v3/publicRooms",
        )
        .token(a)
        .json(&json!({ "limit": "all" }))
        .expect(400, "M_BAD_JSON"),
        Case::new(
            "publicRooms: since garbage",
            "GET",
            "/_matrix/client/v3/publicRooms?since=garbage",
        )
        .token(a)
        .expect(400, "M_INVALID_PARAM"),
        // Huge bodies and heads.
        Case::new("send: a 9 MiB body", "PUT", send("t21"))
            .token(a)
            .bytes(format!("{{\"body\":\"{}\"}}", "a".repeat(huge)).into_bytes())
            .expect(413, "M_TOO_LARGE"),
        Case::new("send: 100 MB declared, nothing sent", "PUT", send("t22"))
            .raw(raw_head(
                "PUT",
                &send("t22"),
                &[
                    &format!("Authorization: Bearer {a}"),
                    "Content-Type: application/json",
                    "Content-Length: 100000000",
                ],
            ))
            .expect(413, "M_TOO_LARGE"),
        Case::new("send: 9 MiB chunked", "PUT", send("t23"))
            .raw({
                let mut request = raw_head(
                    "PUT",
                    &send("t23"),
                    &[
                        &format!("Authorization: Bearer {a}"),
                        "Content-Type: application/json",
                        "Transfer-Encoding: chunked",
                    ],
                )
                .into_bytes();
                let chunk = "a".repeat(64 * 1024);
                request.extend_from_slice(
                    format!("{:x}\r\n{{\"body\":\"{chunk}\r\n", chunk.len() + 9).as_bytes(),
                );
                for _ in 0..(huge / chunk.len()) {
                    request
                        .extend_from_slice(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes());
                }
                request.extend_from_slice(b"2\r\n\"}\r\n0\r\n\r\n");
                request
            })
            .expect(413, "M_TOO_LARGE"),
        Case::new("a 1 MB header", "GET", "/_matrix/client/v3/account/whoami")
            .raw(raw_head(
                "GET",
                "/_matrix/client/v3/account/whoami",
                &[
                    &format!("Authorization: Bearer {a}"),
                    &format!("X-Padding: {}", "p".repeat(1024 * 1024)),
                ],
            ))
            .expect(431, "*")
            .known("actix"),
        // Framing a proxy and a server could read differently (request smuggling): refused.
        // (Today with a bare 400 from the HTTP layer, refused as it should be, but without
        // the JSON error body: marked as findings.)
        Case::new("framing: Content-Length and chunked", "PUT", send("t24"))
            .raw({
                let mut request = raw_head(
                    "PUT",
                    &send("t24"),
                    &[
                        &format!("Authorization: Bearer {a}"),
                        "Content-Type: application/json",
                        "Content-Length: 4",
                        "Transfer-Encoding: chunked",
                    ],
                );
                request.push_str("2\r\n{}\r\n0\r\n\r\n");
                request
            })
            .expect(400, "*")
            .known("actix"),
        Case::new("framing: two Content-Lengths", "PUT", send("t25"))
            .raw({
                let mut request = raw_head(
                    "PUT",
                    &send("t25"),
                    &[
                        &format!("Authorization: Bearer {a}"),
                        "Content-Type: application/json",
                        "Content-Length: 2",
                        "Content-Length: 40",
                    ],
                );
                request.push_str("{}");
                request
            })
            .expect(400, "*")
            .known("actix"),
        Case::new("framing: a bad chunk size", "PUT", send("t26"))
            .raw({
                let mut request = raw_head(
                    "PUT",
                    &send("t26"),
                    &[
                        &format!("Authorization: Bearer {a}"),
                        "Content-Type: application/json",
                        "Transfer-Encoding: chunked",
                    ],
                );
                request.push_str("zz\r\n{}\r\n0\r\n\r\n");
                request
            })
            .expect(400, "*"),
        Case::new("framing: a garbage request line", "GET", "garbage")
            .raw("GARBAGE\r\n\r\n")
            .expect(400, "*")
            .known("actix"),
        // Routing.
        Case::new(
            "an unknown endpoint",
            "GET",
            "/_matrix/client/v3/nothing/here",
        )
        .token(a)
        .expect(404, "M_UNRECOGNIZED"),
        Case::new("a method not allowed", "DELETE", login).expect(405, "M_UNRECOGNIZED"),
    ]
}

fn target(
    fixture: &Fixture,
) -> (
    impl Fn() -> Value + '_,
    impl Fn() -> Result<(), String> + '_,
) {
    (move || snapshot(fixture), move || healthy(fixture))
}

#[test]
fn the_client_api_refuses_hostile_input_cleanly() {
    let fixture = fixture();
    let (snapshot, healthy) = target(&fixture);
    let target = Target {
        address: fixture.server.address("http"),
        snapshot: &snapshot,
        healthy: &healthy,
    };
    check_all(&target, &cases(&fixture), 80);
}

/// Malformed requests actix-web answers itself, before any of our code runs: a bare `400`
/// or `431` without a JSON body (a URI over the `http` crate's 65,534 bytes, a header block
/// over 128 KiB, broken request framing). What matters holds (refused, nothing changed, the
/// server healthy: the main catalogue checks that); only the JSON body is missing.
#[test]
#[ignore = "actix-web answers these before our code: no JSON body possible"]
fn refused_by_actix_without_a_json_body() {
    let fixture = fixture();
    let (snapshot, healthy) = target(&fixture);
    let target = Target {
        address: fixture.server.address("http"),
        snapshot: &snapshot,
        healthy: &healthy,
    };
    check_known(&target, &cases(&fixture), "actix");
}
