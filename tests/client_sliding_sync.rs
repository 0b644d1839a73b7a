//! Simplified sliding sync (MSC4186) against the real server, with requests shaped as
//! Element X's room-list service sends them: an `all_rooms` list `[[0,19]]` with
//! `timeline_limit` 1 and its default `required_state`, then room subscriptions with a
//! bigger timeline, and the extensions. Covers windows and counts, ordering as messages
//! arrive, long-poll wake-ups, invites, `M_UNKNOWN_POS`, every extension, and `prev_batch`
//! with `/messages`.

mod common;

use std::time::{Duration, Instant};

use common::{Server, errcode, ok, test_config};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";
const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

fn server() -> Server {
    Server::start_with_users(
        &test_config("[limits]\nauth_attempts_per_minute = 100000\n"),
        &[("alice", PASSWORD), ("bob", PASSWORD)],
    )
}

/// Element X's default `required_state` for its room list (matrix-rust-sdk's room-list
/// service).
fn element_x_required_state() -> Value {
    json!([
        ["m.room.name", ""],
        ["m.room.encryption", ""],
        ["m.room.member", "$LAZY"],
        ["m.room.member", "$ME"],
        ["m.room.topic", ""],
        ["m.room.canonical_alias", ""],
        ["m.room.power_levels", ""],
        ["org.matrix.msc3401.call.member", "*"],
        ["m.room.join_rules", ""],
        ["m.room.tombstone", ""],
        ["m.room.create", ""],
        ["m.room.history_visibility", ""],
        ["io.element.functional_members", ""],
        ["m.space.parent", "*"],
        ["m.space.child", "*"]
    ])
}

/// The room-list request: the `all_rooms` list over `range`, and the extensions Element X
/// turns on there.
fn room_list(range: (u64, u64)) -> Value {
    json!({
        "conn_id": "room-list",
        "lists": {
            "all_rooms": {
                "ranges": [[range.0, range.1]],
                "timeline_limit": 1,
                "required_state": element_x_required_state(),
                "filters": { "not_room_types": ["m.space"] },
            }
        },
        "extensions": {
            "account_data": { "enabled": true },
            "receipts": { "enabled": true, "rooms": ["*"] },
            "typing": { "enabled": true },
        }
    })
}

fn post(
    server: &Server,
    token: &str,
    pos: Option<&str>,
    timeout: u64,
    body: &Value,
) -> common::http::Response {
    let path = match pos {
        Some(pos) => format!("{PATH}?pos={pos}&timeout={timeout}"),
        None => PATH.to_owned(),
    };
    server.client().json("POST", &path, Some(token), body)
}

fn sliding(server: &Server, token: &str, pos: Option<&str>, body: &Value) -> Value {
    ok(post(server, token, pos, 0, body))
}

fn pos(answer: &Value) -> String {
    answer["pos"].as_str().expect("pos").to_owned()
}

fn create_room(server: &Server, token: &str, body: Value) -> String {
    ok(server
        .client()
        .json("POST", "/_matrix/client/v3/createRoom", Some(token), &body))["room_id"]
        .as_str()
        .expect("room_id")
        .to_owned()
}

fn send(server: &Server, token: &str, room: &str, body: &str) -> String {
    let txn = format!("t{}", rand_suffix());
    ok(server.client().json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
        Some(token),
        &json!({ "msgtype": "m.text", "body": body }),
    ))["event_id"]
        .as_str()
        .expect("event_id")
        .to_owned()
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
}

fn bodies(room: &Value) -> Vec<String> {
    room["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter_map(|event| event["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

fn rooms(answer: &Value) -> Vec<String> {
    answer["rooms"]
        .as_object()
        .map(|rooms| rooms.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn versions_advertise_simplified_sliding_sync() {
    let server = server();
    let versions = ok(server.client().get("/_matrix/client/versions"));
    assert_eq!(
        versions["unstable_features"]["org.matrix.simplified_msc3575"],
        true
    );
}

#[test]
fn the_room_list_window_counts_orders_and_grows() {
    let server = server();
    let alice = common::login_token(&server, "alice", PASSWORD);
    let mut created = Vec::new();
    for n in 0..25 {
        let room = create_room(&server, &alice, json!({ "name": format!("Room {n}") }));
        send(&server, &alice, &room, &format!("hello {n}"));
        created.push(room);
    }
    // A space is left out by the list's `not_room_types`.
    create_room(
        &server,
        &alice,
        json!({ "name": "Space", "creation_content": { "type": "m.space" } }),
    );

    let first = sliding(&server, &alice, None, &room_list((0, 19)));
    assert_eq!(first["lists"]["all_rooms"]["count"], 25, "{first}");
    let sent = rooms(&first);
    assert_eq!(sent.len(), 20);
    // The 20 most recently active: the last 20 created.
    for room in &created[5..] {
        assert!(sent.contains(room), "{room} missing");
    }
    let newest = &first["rooms"][&created[24]];
    assert_eq!(newest["initial"], true);
    assert_eq!(newest["name"], "Room 24");
    assert_eq!(newest["membership"], "join");
    assert_eq!(newest["joined_count"], 1);
    assert_eq!(newest["invited_count"], 0);
    assert_eq!(newest["notification_count"], 0);
    assert_eq!(bodies(newest), vec!["hello 24"]);
    assert_eq!(newest["limited"], true);
    assert!(newest["bump_stamp"].as_u64().is_some());
    assert!(newest["prev_batch"].as_str().is_some());
    let state_types: Vec<&str> = newest["required_state"]
        .as_array()
        .expect("required_state")
        .iter()
        .filter_map(|event| event["type"].as_str())
        .collect();
    for wanted in [
        "m.room.create",
        "m.room.name",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.member",
    ] {
        assert!(
            state_types.contains(&wanted),
            "{wanted} not in {state_types:?}"
        );
    }
    // `$ME` and `$LAZY`: alice's own member event, nobody else's.
    let members: Vec<&Value> = newest["required_state"]
        .as_array()
        .expect("required_state")
        .iter()
        .filter(|event| event["type"] == "m.room.member")
        .collect();
    assert_eq!(members.len(), 1);

    // A message in the oldest room moves it to the top: the next answer sends it (whole,
    // it is new to the connection) and nothing else.
    send(&server, &alice, &created[0], "back on top");
    let second = sliding(&server, &alice, Some(&pos(&first)), &room_list((0, 19)));
    assert_eq!(rooms(&second), vec![created[0].clone()], "{second}");
    let bumped = &second["rooms"][&created[0]];
    assert_eq!(bumped["initial"], true);
    assert_eq!(bodies(bumped), vec!["back on top"]);
    let top_stamp = bumped["bump_stamp"].as_u64().expect("bump_stamp");
    for room in &created[1..] {
        if let Some(stamp) = first["rooms"][room]["bump_stamp"].as_u64() {
            assert!(stamp < top_stamp);
        }
    }

    // A new message in a room already sent comes as a change, with `num_live`.
    send(&server, &alice, &created[24], "more");
    let third = sliding(&server, &alice, Some(&pos(&second)), &room_list((0, 19)));
    assert_eq!(rooms(&third), vec![created[24].clone()]);
    let changed = &third["rooms"][&created[24]];
    assert!(changed.get("initial").is_none(), "{changed}");
    assert_eq!(bodies(changed), vec!["more"]);
    assert_eq!(changed["num_live"], 1);

    // Growing the window sends only the rooms not sent yet.
    let fourth = sliding(&server, &alice, Some(&pos(&third)), &room_list((0, 99)));
    let mut grown = rooms(&fourth);
    grown.sort();
    let mut expected: Vec<String> = created[1..5].to_vec();
    expected.sort();
    assert_eq!(grown, expected);

    // Nothing new: an answer with no rooms.
    let fifth = sliding(&server, &alice, Some(&pos(&fourth)), &room_list((0, 99)));
    assert!(rooms(&fifth).is_empty(), "{fifth}");
    assert_eq!(fifth["lists"]["all_rooms"]["count"], 25);
}

#[test]
fn a_waiting_request_wakes_when_a_message_arrives() {
    let server = server();
    let alice = common::login_token(&server, "alice", PASSWORD);
    let bob = common::login_token(&server, "bob", PASSWORD);
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" }));
    ok(server.client().json(
        "POST",
        &format!("/_matrix/client/v3/join/{room}"),
        Some(&bob),
        &json!({}),
    ));
    let first = sliding(&server, &alice, None, &room_list((0, 19)));
    let since = pos(&first);
    let address = server.address("http");
    let started = Instant::now();
    let waiting = std::thread::spawn({
        let (alice, since) = (alice.clone(), since);
        move || {
            let path = format!("{PATH}?pos={since}&timeout=20000");
            ok(common::http::Client::plain(address).json(
                "POST",
                &path,
                Some(&alice),
                &room_list((0, 19)),
            ))
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    send(&server, &bob, &room, "wake up");
    let answer = waiting.join().expect("the waiting request");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "answered before the message: {answer}"
    );
    assert!(waited < Duration::from_secs(10), "not woken: {waited:?}");
    assert_eq!(bodies(&answer["rooms"][&room]), vec!["wake up"]);
    assert_eq!(answer["rooms"][&room]["notification_count"], 1);

    // With nothing new, a request waits for its timeout and answers empty.
    let started = Instant::now();
    let empty = ok(post(
        &server,
        &alice,
        Some(&pos(&answer)),
        600,
        &room_list((0, 19)),
    ));
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert!(rooms(&empty).is_empty());
}

#[test]
fn subscriptions_send_more_history_and_prev_batch_pages_back() {
    let server = server();
    let alice = common::login_token(&server, "alice", PASSWORD);
    let room = create_room(&server, &alice, json!({ "name": "Chat" }));
    for n in 0..30 {
        send(&server, &alice, &room, &format!("m{n}"));
    }
    let first = sliding(&server, &alice, None, &room_list((0, 19)));
    assert_eq!(bodies(&first["rooms"][&room]), vec!["m29"]);

    // Opening the room: a subscription with Element X's bigger timeline and extra state.
    let mut request = room_list((0, 19));
    let mut state = element_x_required_state();
    state
        .as_array_mut()
        .expect("array")
        .push(json!(["m.room.pinned_events", ""]));
    request["room_subscriptions"] = json!({
        room.clone(): { "timeline_limit": 20, "required_state": state }
    });
    let opened = sliding(&server, &alice, Some(&pos(&first)), &request);
    let subscribed = &opened["rooms"][&room];
    assert_eq!(subscribed["initial"], true, "{opened}");
    assert_eq!(subscribed["expanded_timeline"], true);
    let timeline = bodies(subscribed);
    assert_eq!(timeline.len(), 20);
    assert_eq!(timeline.first().map(String::as_str), Some("m10"));
    assert_eq!(subscribed["limited"], true);

    // `prev_batch` continues in `/messages` exactly where the timeline starts.
    let prev_batch = subscribed["prev_batch"].as_str().expect("prev_batch");
    let page = ok(server.client().get_with(
        &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=5&from={prev_batch}"),
        &alice,
    ));
    let older: Vec<&str> = page["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter_map(|event| event["content"]["body"].as_str())
        .collect();
    assert_eq!(older, vec!["m9", "m8", "m7", "m6", "m5"]);

    // The `pos` works as a `/messages` token too.
    let from_pos = server.client().get_with(
        &format!(
            "/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1&from={}",
            pos(&opened)
        ),
        &alice,
    );
    assert_eq!(from_pos.status, 200);

    // A subscription to a room the user is not in is ignored.
    let mut stranger = room_list((0, 19));
    stranger["room_subscriptions"] = json!({ "!nowhere:localhost": { "timeline_limit": 5 } });
    let bob = common::login_token(&server, "bob", PASSWORD);
    let answer = sliding(&server, &bob, None, &stranger);
    assert!(rooms(&answer).is_empty(), "{answer}");
    let peek = sliding(
        &server,
        &bob,
        None,
        &json!({ "room_subscriptions": { room.clone(): { "timeline_limit": 5 } } }),
    );
    assert!(rooms(&peek).is_empty(), "{peek}");
}

#[test]
fn invites_come_with_their_stripped_state() {
    let server = server();
    let alice = common::login_token(&server, "alice", PASSWORD);
    let bob = common::login_token(&server, "bob", PASSWORD);
    let room = create_room(&server, &bob, json!({ "name": "Bob's room" }));
    let first = sliding(&server, &alice, None, &room_list((0, 19)));
    assert_eq!(first["lists"]["all_rooms"]["count"], 0);
    ok(server.client().json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/invite"),
        Some(&bob),
        &json!({ "user_id": "@alice:localhost" }),
    ));
    let mut request = room_list((0, 19));
    request["lists"]["invites"] = json!({
        "ranges": [[0, 9]],
        "timeline_limit": 0,
        "required_state": [],
        "filters": { "is_invite": true },
    });
    let answer = sliding(&server, &alice, Some(&pos(&first)), &request);
    assert_eq!(answer["lists"]["all_rooms"]["count"], 1, "{answer}");
    assert_eq!(answer["lists"]["invites"]["count"], 1);
    let invited = &answer["rooms"][&room];
    assert_eq!(invited["membership"], "invite");
    assert_eq!(invited["initial"], true);
    let stripped = invited["invite_state"].as_array().expect("invite_state");
    assert!(stripped.iter().any(|event| event["type"] == "m.room.name"
        && event["content"]["name"] == "Bob's room"));
    assert!(stripped.iter().any(|event| event["type"] == "m.room.member"
        && event["state_key"] == "@alice:localhost"
        && event["content"]["membership"] == "invite"));
    assert!(invited.get("timeline").is_none());

    // Joining turns it into a joined room, sent with its timeline.
    ok(server.client().json(
        "POST",
        &format!("/_matrix/client/v3/join/{room}"),
        Some(&alice),
        &json!({}),
    ));
    let joined = sliding(&server, &alice, Some(&pos(&answer)), &request);
    let now_joined = &joined["rooms"][&room];
    assert_eq!(now_joined["membership"], "join", "{joined}");
    // Whole, as the client had only the stripped state.
    assert_eq!(now_joined["initial"], true);
    assert!(
        now_joined["required_state"]
            .as_array()
            .expect("required_state")
            .iter()
            .any(|event| event["type"] == "m.room.create")
    );
    assert_eq!(joined["lists"]["invites"]["count"], 0);
}

#[test]
fn an_unknown_or_foreign_pos_is_refused_and_a_retry_is_answered() {
    let server = server();
    let alice = common::login_token(&server, "alice", PASSWORD);
    let bob = common::login_token(&server, "bob", PASSWORD);
    let room = create_room(&server, &alice, json!({}));
    for garbage in ["nonsense", "12_34", "5"] {
        let refused = post(&server, &alice, Some(garbage), 0, &room_list((0, 19)));
        assert_eq!(refused.status, 400);
        assert_eq!(errcode(&refused), "M_UNKNOWN_POS");
    }
    let first = sliding(&server, &alice, None, &room_list((0, 19)));
    let first_pos = pos(&first);
    // Someone else's connection, or another of one's own, does not know this pos.
    let foreign = post(&server, &bob, Some(&first_pos), 0, &room_list((0, 19)));
    assert_eq!(errcode(&foreign), "M_UNKNOWN_POS");
    let mut other_conn = room_list((0, 19));
    other_conn["conn_id"] = json!("encryption");
    assert_eq!(
        errcode(&post(&server, &alice, Some(&first_pos), 0, &other_conn)),
        "M_UNKNOWN_POS"
    );

    // An answer the client never saw: a retry with the same pos gets the same news again.
    send(&server, &alice, &room, "once");
    let lost = sliding(&server, &alice, Some(&first_pos), &room_list((0, 19)));
    assert_eq!(bodies(&lost["rooms"][&room]), vec!["once"]);
    let retried = sliding(&server, &alice, Some(&first_pos), &room_list((0, 19)));
    assert_eq!(bodies(&retried["rooms"][&room]), vec!["once"]);
    // The lost answer's pos is gone once the retry was answered.
    let stale = post(&server, &alice, Some(&pos(&lost)), 0, &room_list((0, 19)));
    assert_eq!(errcode(&stale), "M_UNKNOWN_POS");
    // A new connection (no pos) starts over.
    let again = sliding(&server, &alice, None, &room_list((0, 19)));
    assert_eq!(again["rooms"][&room]["initial"], true);

    // Hostile shapes: wrong types, too many lists, backwards ranges.
    let wrong = post(
        &server,
        &alice,
        None,
        0,
        &json!({ "lists": { "a": { "ranges": "all" } } }),
    );
    assert_eq!(wrong.status, 400);
    assert_eq!(errcode(&wrong), "M_BAD_JSON");
    let lists: serde_json::Map<String, Value> = (0..101)
        .map(|n| {
            (
                format!("l{n}"),
                json!({ "ranges": [[0, 1]], "timeline_limit": 1 }),
            )
        })
        .collect();
    let many = post(&server, &alice, None, 0, &json!({ "lists": lists }));
    assert_eq!(errcode(&many), "M_INVALID_PARAM");
    let backwards = post(
        &server,
        &alice,
        None,
        0,
        &json!({ "lists": { "a": { "ranges": [[5, 1]] } } }),
    );
    assert_eq!(errcode(&backwards), "M_INVALID_PARAM");
    let huge = post(
        &server,
        &alice,
        None,
        0,
        &json!({ "lists": { "a": { "ranges": [[0, u64::MAX]], "timeline_limit": u64::MAX } } }),
    );
    assert_eq!(huge.status, 200);
}

/// A new login of `user`: its token and device ID.
fn device(server: &Server, user: &str) -> (String, String) {
    let token = common::login_token(server, user, PASSWORD);
    let whoami = ok(server
        .client()
        .get_with("/_matrix/client/v3/account/whoami", &token));
    (
        token,
        whoami["device_id"].as_str().expect("device_id").to_owned(),
    )
}

fn encryption_request(since: Option<&str>) -> Value {
    let mut to_device = json!({ "enabled": true });
    if let Some(since) = since {
        to_device["since"] = json!(since);
    }
    json!({
        "conn_id": "encryption",
        "extensions": { "to_device": to_device, "e2ee": { "enabled": true } }
    })
}

#[test]
fn to_device_messages_are_delivered_once_and_deleted_after_the_next_request() {
    let server = server();
    let (alice, _) = device(&server, "alice");
    let (bob, bob_device) = device(&server, "bob");
    let first = sliding(&server, &bob, None, &encryption_request(None));
    assert_eq!(first["extensions"]["to_device"]["events"], json!([]));
    let since = first["extensions"]["to_device"]["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    ok(server.client().json(
        "PUT",
        "/_matrix/client/v3/sendToDevice/m.test/txn1",
        Some(&alice),
        &json!({ "messages": { "@bob:localhost": { bob_device: { "n": 1 } } } }),
    ));
    let second = sliding(
        &server,
        &bob,
        Some(&pos(&first)),
        &encryption_request(Some(&since)),
    );
    let events = second["extensions"]["to_device"]["events"]
        .as_array()
        .expect("events");
    assert_eq!(events.len(), 1, "{second}");
    assert_eq!(events[0]["sender"], "@alice:localhost");
    assert_eq!(events[0]["content"]["n"], 1);
    let next = second["extensions"]["to_device"]["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    // Asked again with the old token (the answer was lost): delivered again.
    let retried = sliding(
        &server,
        &bob,
        Some(&pos(&first)),
        &encryption_request(Some(&since)),
    );
    assert_eq!(
        retried["extensions"]["to_device"]["events"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    // With the new token: acknowledged, deleted, not delivered again (nor by `/sync`).
    let third = sliding(
        &server,
        &bob,
        Some(&pos(&retried)),
        &encryption_request(Some(&next)),
    );
    assert_eq!(
        third["extensions"]["to_device"]["events"],
        json!([]),
        "{third}"
    );
    let synced = ok(server.client().get_with("/_matrix/client/v3/sync", &bob));
    assert_eq!(synced["to_device"]["events"], json!([]));
}

#[test]
fn the_e2ee_extension_counts_one_time_and_fallback_keys() {
    let server = server();
    let (alice, _) = device(&server, "alice");
    let first = sliding(&server, &alice, None, &encryption_request(None));
    let e2ee = &first["extensions"]["e2ee"];
    assert_eq!(
        e2ee["device_one_time_keys_count"]["signed_curve25519"], 0,
        "{first}"
    );
    assert_eq!(e2ee["device_unused_fallback_key_types"], json!([]));
    assert_eq!(e2ee["device_lists"], json!({ "changed": [], "left": [] }));
    let uploaded = server.client().json(
        "POST",
        "/_matrix/client/v3/keys/upload",
        Some(&alice),
        &json!({
            "one_time_keys": {
                "curve25519:AAA1": "key1",
                "curve25519:AAA2": "key2",
            },
            "fallback_keys": { "curve25519:FB": "fallback" },
        }),
    );
    assert_eq!(
        uploaded.status,
        200,
        "{}",
        String::from_utf8_lossy(&uploaded.body)
    );
    let second = sliding(
        &server,
        &alice,
        Some(&pos(&first)),
        &encryption_request(None),
    );
    let e2ee = &second["extensions"]["e2ee"];
    assert_eq!(
        e2ee["device_one_time_keys_count"]["curve25519"], 2,
        "{second}"
    );
    assert_eq!(
        e2ee["device_unused_fallback_key_types"],
        json!(["curve25519"])
    );
}

#[test]
fn the_e2ee_extension_lists_device_list_changes_and_leaves() {
    let server = server();
    let alice = common::login_token(&server, "alice", PASSWORD);
    let bob = common::login_token(&server, "bob", PASSWORD);
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" }));
    ok(server.client().json(
        "POST",
        &format!("/_matrix/client/v3/join/{room}"),
        Some(&bob),
        &json!({}),
    ));
    let first = sliding(&server, &alice, None, &encryption_request(None));
    // Bob signs in on a second device: Alice's client must query his keys again.
    let _bob_phone = common::login_token(&server, "bob", PASSWORD);
    let second = sliding(
        &server,
        &alice,
        Some(&pos(&first)),
        &encryption_request(None),
    );
    let lists = &second["extensions"]["e2ee"]["device_lists"];
    assert_eq!(lists["changed"], json!(["@bob:localhost"]), "{second}");
    assert_eq!(lists["left"], json!([]), "{second}");
    // Bob leaves the only room they shared: he is in `left`.
    ok(server.client().json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/leave"),
        Some(&bob),
        &json!({}),
    ));
    let third = sliding(
        &server,
        &alice,
        Some(&pos(&second)),
        &encryption_request(None),
    );
    let lists = &third["extensions"]["e2ee"]["device_lists"];
    assert_eq!(lists["left"], json!(["@bob:localhost"]), "{third}");
    assert_eq!(lists["changed"], json!([]), "{third}");
}

#[test]
fn account_data_receipts_and_typing_come_through_their_extensions() {
    let server = server();
    let alice = common::login_token(&server, "alice", PASSWORD);
    let bob = common::login_token(&server, "bob", PASSWORD);
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" }));
    ok(server.client().json(
        "POST",
        &format!("/_matrix/client/v3/join/{room}"),
        Some(&bob),
        &json!({}),
    ));
    ok(server.client().json(
        "PUT",
        "/_matrix/client/v3/user/@alice:localhost/account_data/org.example.setting",
        Some(&alice),
        &json!({ "on": true }),
    ));
    let first = sliding(&server, &alice, None, &room_list((0, 19)));
    let global = first["extensions"]["account_data"]["global"]
        .as_array()
        .expect("global");
    assert!(
        global
            .iter()
            .any(|event| event["type"] == "org.example.setting"),
        "{first}"
    );

    // Room account data (a tag), a receipt and typing by bob.
    ok(server.client().json(
        "PUT",
        &format!("/_matrix/client/v3/user/@alice:localhost/rooms/{room}/tags/m.favourite"),
        Some(&alice),
        &json!({ "order": 0.5 }),
    ));
    let event = send(&server, &alice, &room, "read me");
    ok(server.client().json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{event}"),
        Some(&bob),
        &json!({}),
    ));
    ok(server.client().json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/typing/@bob:localhost"),
        Some(&bob),
        &json!({ "typing": true, "timeout": 30000 }),
    ));
    let second = sliding(&server, &alice, Some(&pos(&first)), &room_list((0, 19)));
    let extensions = &second["extensions"];
    let room_data = extensions["account_data"]["rooms"][&room]
        .as_array()
        .expect("room account data");
    assert!(
        room_data.iter().any(|event| event["type"] == "m.tag"),
        "{second}"
    );
    assert!(
        extensions["account_data"]["global"]
            .as_array()
            .expect("global")
            .is_empty()
    );
    assert!(
        extensions["receipts"]["rooms"][&room]["content"][&event]["m.read"]["@bob:localhost"]
            .is_object(),
        "{second}"
    );
    assert_eq!(
        extensions["typing"]["rooms"][&room]["content"]["user_ids"],
        json!(["@bob:localhost"])
    );
    // Nothing changed since: no receipts or typing again.
    let third = sliding(&server, &alice, Some(&pos(&second)), &room_list((0, 19)));
    assert_eq!(
        third["extensions"]["receipts"]["rooms"],
        json!({}),
        "{third}"
    );
    assert_eq!(third["extensions"]["typing"]["rooms"], json!({}));
}

#[test]
fn list_filters_pick_direct_encrypted_and_typed_rooms() {
    let server = server();
    let alice = common::login_token(&server, "alice", PASSWORD);
    let plain = create_room(&server, &alice, json!({}));
    let direct = create_room(&server, &alice, json!({ "is_direct": true }));
    let encrypted = create_room(
        &server,
        &alice,
        json!({
            "initial_state": [{ "type": "m.room.encryption", "state_key": "", "content": { "algorithm": "m.megolm.v1.aes-sha2" } }]
        }),
    );
    let space = create_room(
        &server,
        &alice,
        json!({ "creation_content": { "type": "m.space" } }),
    );
    ok(server.client().json(
        "PUT",
        "/_matrix/client/v3/user/@alice:localhost/account_data/m.direct",
        Some(&alice),
        &json!({ "@bob:localhost": [direct] }),
    ));
    ok(server.client().json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{space}/state/m.space.child/{plain}"),
        Some(&alice),
        &json!({ "via": ["localhost"] }),
    ));
    let list = |filters: Value| json!({ "ranges": [[0, 9]], "timeline_limit": 0, "required_state": [], "filters": filters });
    let answer = sliding(
        &server,
        &alice,
        None,
        &json!({
            "lists": {
                "dms": list(json!({ "is_dm": true })),
                "encrypted": list(json!({ "is_encrypted": true })),
                "spaces": list(json!({ "room_types": ["m.space"] })),
                "rooms": list(json!({ "not_room_types": ["m.space"], "is_dm": false })),
            "in_space": list(json!({ "spaces": [space] })),
            }
        }),
    );
    assert_eq!(answer["lists"]["dms"]["count"], 1, "{answer}");
    assert_eq!(answer["lists"]["encrypted"]["count"], 1);
    assert_eq!(answer["lists"]["spaces"]["count"], 1);
    assert_eq!(answer["lists"]["rooms"]["count"], 2);
    assert_eq!(answer["lists"]["in_space"]["count"], 1);
    assert_eq!(answer["rooms"][&direct]["is_dm"], true);
    for room in [&plain, &direct, &encrypted, &space] {
        assert!(answer["rooms"][room].is_object(), "{room} not sent");
    }
}

#[test]
fn a_superseded_request_still_waiting_does_not_spoil_the_connection() {
    let server = server();
    let alice = common::login_token(&server, "alice", PASSWORD);
    let room = create_room(&server, &alice, json!({}));
    let first = sliding(&server, &alice, None, &room_list((0, 19)));
    let since = pos(&first);
    // The client sends a long poll, gives up on it (Element X does when its ranges change)
    // and sends a new request with the same pos; the old one is still waiting here.
    let address = server.address("http");
    let abandoned = std::thread::spawn({
        let (alice, since) = (alice.clone(), since.clone());
        move || {
            common::http::Client::plain(address).json(
                "POST",
                &format!("{PATH}?pos={since}&timeout=20000"),
                Some(&alice),
                &room_list((0, 19)),
            )
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let newer = sliding(&server, &alice, Some(&since), &room_list((0, 49)));
    // News wakes the abandoned request; it must not record an answer of its own.
    send(&server, &alice, &room, "news");
    let old = abandoned.join().expect("the abandoned request");
    assert_eq!(errcode(&old), "M_UNKNOWN_POS");
    let next = sliding(&server, &alice, Some(&pos(&newer)), &room_list((0, 49)));
    assert_eq!(bodies(&next["rooms"][&room]), vec!["news"], "{next}");
}
