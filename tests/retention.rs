//! Message retention (`m.room.retention`, MSC1763; issue 14 item 9): expired messages lose
//! their content everywhere clients read them, the room keeps working, current state keeps
//! its content, and rooms without a lifetime are left alone.

mod common;

use std::time::{Duration, Instant};

use common::{Server, ok, query_encode, test_config};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// A lifetime short enough to wait for, long enough to read a fresh message before it goes.
const LIFETIME_MS: u64 = 4000;

fn start(retention: &str) -> Server {
    Server::start_with_users(
        &test_config(&format!(
            "[limits]\nauth_attempts_per_minute = 100000\n\n[retention]\n{retention}"
        )),
        &[("alice", PASSWORD), ("bob", PASSWORD)],
    )
}

fn login(server: &Server, user: &str) -> String {
    common::login_token(server, user, PASSWORD)
}

fn create_room(server: &Server, token: &str, body: Value) -> String {
    ok(server
        .client()
        .json("POST", "/_matrix/client/v3/createRoom", Some(token), &body))["room_id"]
        .as_str()
        .expect("room")
        .to_owned()
}

fn send(server: &Server, token: &str, room: &str, body: &str) -> String {
    let txn = format!("t{}", body.len() as u128 * 1_000_000 + now_nanos());
    ok(server.client().json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
        Some(token),
        &json!({ "msgtype": "m.text", "body": body }),
    ))["event_id"]
        .as_str()
        .expect("event id")
        .to_owned()
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
}

fn event(server: &Server, token: &str, room: &str, event_id: &str) -> Value {
    ok(server.client().get_with(
        &format!("/_matrix/client/v3/rooms/{room}/event/{event_id}"),
        token,
    ))
}

/// Waits until `/event` shows the event without content (the purge ran), at most 30 s.
fn wait_pruned(server: &Server, token: &str, room: &str, event_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shown = event(server, token, room, event_id);
        if shown["content"] == json!({}) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{event_id} still has content: {shown}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn messages(server: &Server, token: &str, room: &str) -> Value {
    ok(server.client().get_with(
        &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100"),
        token,
    ))
}

fn search_bodies(server: &Server, token: &str, term: &str) -> Vec<(String, String)> {
    let answer = ok(server.client().json(
        "POST",
        "/_matrix/client/v3/search",
        Some(token),
        &json!({ "search_categories": { "room_events": { "search_term": term } } }),
    ));
    answer["search_categories"]["room_events"]["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|result| {
            (
                result["result"]["room_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                result["result"]["content"]["body"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect()
}

fn sync(server: &Server, token: &str) -> Value {
    let filter = query_encode(r#"{"room":{"timeline":{"limit":100}}}"#);
    ok(server
        .client()
        .get_with(&format!("/_matrix/client/v3/sync?filter={filter}"), token))
}

fn joined(server: &Server, token: &str, room: &str) {
    ok(server.client().json(
        "POST",
        &format!("/_matrix/client/v3/join/{room}"),
        Some(token),
        &json!({}),
    ));
}

#[test]
fn expired_messages_lose_their_content_and_the_room_keeps_working() {
    let server = start("enabled = true\npurge_interval = \"200ms\"\n");
    let alice = login(&server, "alice");
    let bob = login(&server, "bob");
    let retained = create_room(
        &server,
        &alice,
        json!({
            "preset": "public_chat",
            "name": "Kitchen",
            "initial_state": [{
                "type": "m.room.retention", "state_key": "",
                "content": { "max_lifetime": LIFETIME_MS }
            }],
        }),
    );
    // No policy, and no server default: kept for ever.
    let kept = create_room(&server, &alice, json!({ "preset": "private_chat" }));
    let secrets: Vec<String> = (0..3)
        .map(|n| send(&server, &alice, &retained, &format!("pancake secret {n}")))
        .collect();
    // An old topic, replaced: no longer current state, so it goes like a message.
    let old_topic = ok(server.client().json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{retained}/state/m.room.topic/"),
        Some(&alice),
        &json!({ "topic": "pancake talk" }),
    ))["event_id"]
        .as_str()
        .expect("topic")
        .to_owned();
    ok(server.client().json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{retained}/state/m.room.topic/"),
        Some(&alice),
        &json!({ "topic": "breakfast" }),
    ));
    let kept_message = send(&server, &alice, &kept, "pancake forever");

    for secret in &secrets {
        wait_pruned(&server, &alice, &retained, secret);
    }
    wait_pruned(&server, &alice, &retained, &old_topic);

    // `/event`: the pruned form, its ID, type and sender kept.
    let shown = event(&server, &alice, &retained, &secrets[0]);
    assert_eq!(shown["event_id"], json!(secrets[0]));
    assert_eq!(shown["type"], json!("m.room.message"));
    assert_eq!(shown["sender"], json!("@alice:localhost"));
    assert!(shown["origin_server_ts"].is_u64(), "{shown}");
    // `/messages`, `/context`, `/sync`: no body anywhere.
    let history = messages(&server, &alice, &retained);
    assert!(!history.to_string().contains("pancake"), "{history}");
    let chunk = history["chunk"].as_array().expect("chunk");
    assert!(
        chunk
            .iter()
            .any(|event| event["event_id"] == json!(secrets[1])),
        "the pruned events stay in the timeline: {history}"
    );
    let context = ok(server.client().get_with(
        &format!(
            "/_matrix/client/v3/rooms/{retained}/context/{}?limit=10",
            secrets[1]
        ),
        &alice,
    ));
    assert_eq!(context["event"]["content"], json!({}), "{context}");
    assert!(!context.to_string().contains("pancake"), "{context}");
    let initial = sync(&server, &alice);
    let room_sync = &initial["rooms"]["join"][&retained];
    assert!(!room_sync.is_null(), "{initial}");
    assert!(!room_sync.to_string().contains("pancake"), "{room_sync}");
    // Search finds only the room without a lifetime.
    assert_eq!(
        search_bodies(&server, &alice, "pancake"),
        vec![(kept.clone(), "pancake forever".to_owned())]
    );
    // The room without a lifetime is untouched.
    let untouched = event(&server, &alice, &kept, &kept_message);
    assert_eq!(untouched["content"]["body"], json!("pancake forever"));

    // Current state keeps its content: the name, the topic now, the policy itself.
    let name = ok(server.client().get_with(
        &format!("/_matrix/client/v3/rooms/{retained}/state/m.room.name/"),
        &alice,
    ));
    assert_eq!(name, json!({ "name": "Kitchen" }));
    let topic = ok(server.client().get_with(
        &format!("/_matrix/client/v3/rooms/{retained}/state/m.room.topic/"),
        &alice,
    ));
    assert_eq!(topic, json!({ "topic": "breakfast" }));
    let policy = ok(server.client().get_with(
        &format!("/_matrix/client/v3/rooms/{retained}/state/m.room.retention/"),
        &alice,
    ));
    assert_eq!(policy, json!({ "max_lifetime": LIFETIME_MS }));

    // The room still works: a second user joins, a new message is sent and read.
    joined(&server, &bob, &retained);
    let fresh = send(&server, &alice, &retained, "waffles today");
    let bob_history = messages(&server, &bob, &retained);
    assert!(
        bob_history.to_string().contains("waffles today"),
        "{bob_history}"
    );
    assert!(
        !bob_history.to_string().contains("pancake"),
        "{bob_history}"
    );
    let bob_sync = sync(&server, &bob);
    assert!(
        !bob_sync["rooms"]["join"][&retained].is_null(),
        "{bob_sync}"
    );
    assert!(!bob_sync.to_string().contains("pancake"), "{bob_sync}");
    // And its messages expire in turn.
    wait_pruned(&server, &alice, &retained, &fresh);
    let members = ok(server.client().get_with(
        &format!("/_matrix/client/v3/rooms/{retained}/joined_members"),
        &alice,
    ));
    assert_eq!(
        members["joined"].as_object().map(|joined| joined.len()),
        Some(2),
        "{members}"
    );
}

#[test]
fn the_server_default_applies_to_rooms_without_a_policy() {
    let server = start(&format!(
        "enabled = true\ndefault_max_lifetime = {LIFETIME_MS}\npurge_interval = \"200ms\"\n"
    ));
    let alice = login(&server, "alice");
    let defaulted = create_room(&server, &alice, json!({ "preset": "private_chat" }));
    // A room's own (longer) policy wins over the default.
    let own_policy = create_room(
        &server,
        &alice,
        json!({
            "preset": "private_chat",
            "initial_state": [{
                "type": "m.room.retention", "state_key": "",
                "content": { "max_lifetime": 86_400_000u64 }
            }],
        }),
    );
    let gone = send(&server, &alice, &defaulted, "syrup secret");
    let stays = send(&server, &alice, &own_policy, "syrup forever");
    wait_pruned(&server, &alice, &defaulted, &gone);
    assert_eq!(
        event(&server, &alice, &own_policy, &stays)["content"]["body"],
        json!("syrup forever")
    );
    assert_eq!(
        search_bodies(&server, &alice, "syrup"),
        vec![(own_policy, "syrup forever".to_owned())]
    );
}

#[test]
fn nothing_is_purged_when_retention_is_off() {
    // The default: `enabled = false`, whatever the rooms ask for.
    let server = start("default_max_lifetime = 1\npurge_interval = \"100ms\"\n");
    let alice = login(&server, "alice");
    let room = create_room(
        &server,
        &alice,
        json!({
            "preset": "private_chat",
            "initial_state": [{
                "type": "m.room.retention", "state_key": "",
                "content": { "max_lifetime": 1 }
            }],
        }),
    );
    let message = send(&server, &alice, &room, "crepes");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        event(&server, &alice, &room, &message)["content"]["body"],
        json!("crepes")
    );
}

/// The value of `key=` in a log line (tracing's `key=value` fields).
fn field(line: &str, key: &str) -> Option<u64> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[test]
fn a_long_backlog_is_purged_in_batches() {
    const MESSAGES: usize = 400;
    let server = start("enabled = true\npurge_interval = \"200ms\"\n");
    let alice = login(&server, "alice");
    let room = create_room(
        &server,
        &alice,
        json!({
            "preset": "private_chat",
            "initial_state": [{
                "type": "m.room.retention", "state_key": "",
                "content": { "max_lifetime": LIFETIME_MS }
            }],
        }),
    );
    let sent: Vec<String> = (0..MESSAGES)
        .map(|n| send(&server, &alice, &room, &format!("crumpet {n}")))
        .collect();
    wait_pruned(&server, &alice, &room, &sent[MESSAGES - 1]);
    let history = messages(&server, &alice, &room);
    assert!(!history.to_string().contains("crumpet"), "{history}");
    // The room keeps its timeline, every event in its place.
    let chunk = history["chunk"].as_array().expect("chunk");
    assert_eq!(chunk[0]["event_id"], json!(sent[MESSAGES - 1]));
    // Figures: events pruned per run and how long the runs took (debug build).
    let log = server.log_text();
    let runs: Vec<(u64, u64)> = log
        .lines()
        .filter(|line| line.contains("retention: pruned expired events"))
        .filter_map(|line| Some((field(line, "events")?, field(line, "elapsed_ms")?)))
        .collect();
    let (events, elapsed) = runs
        .iter()
        .fold((0, 0), |(events, ms), (e, m)| (events + e, ms + m));
    eprintln!(
        "retention figures: {events} events pruned in {} runs, {elapsed} ms in all",
        runs.len()
    );
    assert_eq!(events, MESSAGES as u64, "{log}");
}

/// Another server asking for a pruned event gets the redacted form, still signed by us, with
/// the same event ID (the reference hash covers only what redaction keeps).
#[test]
fn other_servers_get_the_pruned_event_still_signed() {
    use common::federation::{PASSWORD as FED_PASSWORD, Signer, signing_key, start, start_with};
    use ruma::signatures::{PublicKeyMap, reference_hash, verify_event};
    use ruma::{CanonicalJsonValue, RoomVersionId};

    let certificates = tempfile::tempdir().expect("tempdir");
    common::federation::write_certificates(certificates.path());
    let b = start(certificates.path(), "127.0.0.1", &[], &[]);
    let a = start_with(
        certificates.path(),
        "localhost",
        &[],
        &["alice"],
        "[retention]\nenabled = true\npurge_interval = \"200ms\"\n",
    );
    let alice = common::login_token(&a, "alice", FED_PASSWORD);
    let room = create_room(
        &a,
        &alice,
        json!({
            "preset": "public_chat",
            "initial_state": [
                { "type": "m.room.history_visibility", "state_key": "",
                  "content": { "history_visibility": "world_readable" } },
                { "type": "m.room.retention", "state_key": "",
                  "content": { "max_lifetime": 1000 } },
            ],
        }),
    );
    let message = send(&a, &alice, &room, "scone secret");
    wait_pruned(&a, &alice, &room, &message);

    let key_b = signing_key(&b);
    let as_b = Signer {
        origin: &b.name,
        key: &key_b,
        destination: &a.name,
    };
    let answer = ok(as_b.get(
        &a,
        &format!("/_matrix/federation/v1/event/{}", query_encode(&message)),
    ));
    let pdu = &answer["pdus"][0];
    assert_eq!(pdu["content"], json!({}), "{answer}");
    for field in [
        "auth_events",
        "prev_events",
        "depth",
        "hashes",
        "signatures",
    ] {
        assert!(pdu.get(field).is_some(), "{field} kept: {pdu}");
    }
    let published = ok(a.client().get("/_matrix/key/v2/server"));
    let mut keys = std::collections::BTreeMap::new();
    for (key_id, key) in published["verify_keys"].as_object().expect("keys") {
        let key = ruma::serde::Base64::parse(key["key"].as_str().expect("key")).expect("b64");
        keys.insert(key_id.clone(), key);
    }
    let keys = PublicKeyMap::from([(a.name.clone(), keys)]);
    let rules = RoomVersionId::V12.rules().expect("rules");
    let CanonicalJsonValue::Object(object) =
        CanonicalJsonValue::try_from(pdu.clone()).expect("canonical")
    else {
        panic!("a PDU is an object");
    };
    verify_event(&keys, &object, &rules).expect("our signatures still verify");
    assert_eq!(
        format!("${}", reference_hash(&object, &rules).expect("hash")),
        message
    );
}

/// The walk remembers where it stopped: after a restart it reads only what came since.
#[test]
fn the_walk_resumes_where_it_stopped_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("hearth.toml"),
        test_config("[retention]\nenabled = true\npurge_interval = \"200ms\"\n"),
    )
    .expect("config");
    let added = common::hearth(
        dir.path(),
        &["user", "add", "alice"],
        &format!("{PASSWORD}\n"),
    );
    assert!(added.status.success(), "{added:?}");
    let mut server = Server::start_in(dir.path(), &[], &[]).expect("starts");
    let alice = login(&server, "alice");
    let room = create_room(
        &server,
        &alice,
        json!({
            "preset": "private_chat",
            "initial_state": [{
                "type": "m.room.retention", "state_key": "",
                "content": { "max_lifetime": 1000 }
            }],
        }),
    );
    let first: Vec<String> = (0..5)
        .map(|n| send(&server, &alice, &room, &format!("bagel {n}")))
        .collect();
    wait_pruned(&server, &alice, &room, &first[4]);
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(20)).is_some(), "stops");
    drop(server);

    let server = Server::start_in(dir.path(), &[], &[]).expect("starts again");
    let alice = login(&server, "alice");
    let later = send(&server, &alice, &room, "bagel later");
    wait_pruned(&server, &alice, &room, &later);
    let log = server.log_text();
    let walked: u64 = log
        .lines()
        .filter(|line| line.contains("retention: pruned expired events"))
        .filter_map(|line| field(line, "walked"))
        .sum();
    // Only the new message: not the room's first events again.
    assert_eq!(walked, 1, "{log}");
    assert_eq!(
        event(&server, &alice, &room, &first[0])["content"],
        json!({})
    );
}
