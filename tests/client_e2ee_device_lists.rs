//! Device lists on one server (issue 11, "e2ee-devlists"): `device_lists.changed` and
//! `left` in `/sync` through joins, leaves, kicks, new devices, key uploads, renames and
//! deletions; `/keys/changes` between two tokens; a long-polling `/sync` woken by a device
//! change; a deleted device's keys gone from `/keys/query`.

mod common;

use common::{Server, ok, test_config};
use hearth::matrix::crypto::{KeyId, SigningKey, sign_json};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

fn server() -> Server {
    Server::start_with_users(
        &test_config("[limits]\nauth_attempts_per_minute = 100000\n"),
        &[("alice", PASSWORD), ("bob", PASSWORD), ("carol", PASSWORD)],
    )
}

fn login(server: &Server, user: &str) -> String {
    common::login_token(server, user, PASSWORD)
}

fn whoami(server: &Server, token: &str) -> (String, String) {
    let me = ok(server
        .client()
        .get_with("/_matrix/client/v3/account/whoami", token));
    (
        me["user_id"].as_str().expect("user").to_owned(),
        me["device_id"].as_str().expect("device").to_owned(),
    )
}

/// The device's identity keys, signed by a fresh ed25519 key.
fn device_keys(server: &Server, token: &str, seed: u8) -> Value {
    let (user, device) = whoami(server, token);
    let key = SigningKey::from_seed(KeyId::ed25519(&device).expect("key id"), [seed; 32]);
    let mut keys = json!({
        "user_id": user,
        "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{device}"): format!("curve-{device}-{seed}"),
            format!("ed25519:{device}"): key.public_key_base64(),
        },
    });
    let object = keys.as_object_mut().expect("object");
    sign_json(object, &user, &key).expect("sign");
    keys
}

fn upload_keys(server: &Server, token: &str, seed: u8) {
    let keys = device_keys(server, token, seed);
    ok(server.client().json(
        "POST",
        "/_matrix/client/v3/keys/upload",
        Some(token),
        &json!({ "device_keys": keys }),
    ));
}

fn sync(server: &Server, token: &str, since: Option<&str>) -> Value {
    let path = match since {
        Some(since) => format!("/_matrix/client/v3/sync?timeout=0&since={since}"),
        None => "/_matrix/client/v3/sync?timeout=0".to_owned(),
    };
    ok(server.client().get_with(&path, token))
}

fn token_of(synced: &Value) -> String {
    synced["next_batch"].as_str().expect("token").to_owned()
}

/// `(changed, left)` of a sync, sorted.
fn lists(synced: &Value) -> (Vec<String>, Vec<String>) {
    let list = |name: &str| -> Vec<String> {
        let mut users: Vec<String> = synced["device_lists"][name]
            .as_array()
            .map(|users| {
                users
                    .iter()
                    .filter_map(|user| user.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        users.sort();
        users
    };
    (list("changed"), list("left"))
}

fn create_room(server: &Server, token: &str) -> String {
    ok(server.client().json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(token),
        &json!({ "preset": "public_chat" }),
    ))["room_id"]
        .as_str()
        .expect("room")
        .to_owned()
}

fn join(server: &Server, token: &str, room: &str) {
    ok(server.client().json(
        "POST",
        &format!("/_matrix/client/v3/join/{room}"),
        Some(token),
        &json!({}),
    ));
}

fn leave(server: &Server, token: &str, room: &str) {
    ok(server.client().json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/leave"),
        Some(token),
        &json!({}),
    ));
}

fn delete_device(server: &Server, token: &str, user: &str, device: &str) {
    ok(server.client().json(
        "POST",
        "/_matrix/client/v3/delete_devices",
        Some(token),
        &json!({
            "devices": [device],
            "auth": {
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": user },
                "password": PASSWORD,
            },
        }),
    ));
}

fn query_devices(server: &Server, token: &str, user: &str) -> Vec<String> {
    let answer = ok(server.client().json(
        "POST",
        "/_matrix/client/v3/keys/query",
        Some(token),
        &json!({ "device_keys": { user: [] } }),
    ));
    let mut devices: Vec<String> = answer["device_keys"][user]
        .as_object()
        .map(|devices| devices.keys().cloned().collect())
        .unwrap_or_default();
    devices.sort();
    devices
}

#[test]
fn joins_devices_keys_renames_deletions_and_leaves_reach_the_right_users() {
    let server = server();
    let alice = login(&server, "alice");
    let bob = login(&server, "bob");
    let carol = login(&server, "carol");
    let (alice_id, _) = whoami(&server, &alice);
    let (bob_id, _) = whoami(&server, &bob);
    let (carol_id, _) = whoami(&server, &carol);
    let room = create_room(&server, &alice);
    let mut since = token_of(&sync(&server, &alice, None));
    let carol_since = token_of(&sync(&server, &carol, None));

    // Bob joins Alice's room: they newly share a room.
    join(&server, &bob, &room);
    let synced = sync(&server, &alice, Some(&since));
    assert_eq!(lists(&synced), (vec![bob_id.clone()], vec![]));
    since = token_of(&synced);
    let bob_synced = sync(&server, &bob, None);
    let mut bob_since = token_of(&bob_synced);

    // Bob uploads keys, logs in a second device, renames it: Alice hears of each; Carol,
    // who shares no room with Bob, hears nothing.
    upload_keys(&server, &bob, 1);
    let synced = sync(&server, &alice, Some(&since));
    assert_eq!(lists(&synced), (vec![bob_id.clone()], vec![]));
    since = token_of(&synced);
    // Nothing new: nothing listed.
    let synced = sync(&server, &alice, Some(&since));
    assert_eq!(lists(&synced), (vec![], vec![]));
    since = token_of(&synced);

    let bob_phone = login(&server, "bob");
    let (_, phone_id) = whoami(&server, &bob_phone);
    let synced = sync(&server, &alice, Some(&since));
    assert_eq!(lists(&synced).0, vec![bob_id.clone()]);
    since = token_of(&synced);
    // Bob's own first device hears of his new device too.
    let synced = sync(&server, &bob, Some(&bob_since));
    assert!(lists(&synced).0.contains(&bob_id), "{synced}");
    bob_since = token_of(&synced);

    ok(server.client().json(
        "PUT",
        &format!("/_matrix/client/v3/devices/{phone_id}"),
        Some(&bob),
        &json!({ "display_name": "Bob's phone" }),
    ));
    let synced = sync(&server, &alice, Some(&since));
    assert_eq!(lists(&synced).0, vec![bob_id.clone()]);
    since = token_of(&synced);

    // The phone uploads keys, then is deleted: its keys go, and Alice is told.
    upload_keys(&server, &bob_phone, 2);
    assert_eq!(query_devices(&server, &alice, &bob_id).len(), 2);
    let before_delete = since.clone();
    let synced = sync(&server, &alice, Some(&since));
    since = token_of(&synced);
    delete_device(&server, &bob, "bob", &phone_id);
    let synced = sync(&server, &alice, Some(&since));
    assert_eq!(lists(&synced).0, vec![bob_id.clone()]);
    since = token_of(&synced);
    assert_eq!(query_devices(&server, &alice, &bob_id).len(), 1);

    // `/keys/changes` over the same span says the same.
    let changes = ok(server.client().get_with(
        &format!("/_matrix/client/v3/keys/changes?from={before_delete}&to={since}"),
        &alice,
    ));
    assert_eq!(changes["changed"], json!([bob_id]));
    assert_eq!(changes["left"], json!([]));

    // Carol never shared a room with Bob.
    let carol_synced = sync(&server, &carol, Some(&carol_since));
    assert_eq!(lists(&carol_synced), (vec![], vec![]));

    // Bob leaves: Alice no longer shares a room with him, and he none with her.
    leave(&server, &bob, &room);
    let synced = sync(&server, &alice, Some(&since));
    assert_eq!(lists(&synced), (vec![], vec![bob_id]));
    since = token_of(&synced);
    let synced = sync(&server, &bob, Some(&bob_since));
    assert_eq!(lists(&synced).1, vec![alice_id.clone()]);

    // A device change of someone no longer shared is not Alice's business.
    upload_keys(&server, &bob, 3);
    let synced = sync(&server, &alice, Some(&since));
    assert_eq!(lists(&synced), (vec![], vec![]));
    since = token_of(&synced);

    // Carol joins, then is kicked: changed, then left.
    join(&server, &carol, &room);
    let synced = sync(&server, &alice, Some(&since));
    assert_eq!(lists(&synced), (vec![carol_id.clone()], vec![]));
    since = token_of(&synced);
    // Carol, newly in the room, must look at Alice's devices.
    let carol_synced = sync(&server, &carol, Some(&carol_since));
    assert!(lists(&carol_synced).0.contains(&alice_id), "{carol_synced}");
    ok(server.client().json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/kick"),
        Some(&alice),
        &json!({ "user_id": carol_id }),
    ));
    let synced = sync(&server, &alice, Some(&since));
    assert_eq!(lists(&synced), (vec![], vec![carol_id]));
}

#[test]
fn a_long_polling_sync_wakes_when_a_shared_users_device_changes() {
    let server = server();
    let alice = login(&server, "alice");
    let bob = login(&server, "bob");
    let (bob_id, _) = whoami(&server, &bob);
    let room = create_room(&server, &alice);
    join(&server, &bob, &room);
    let since = token_of(&sync(&server, &alice, None));
    let started = std::time::Instant::now();
    let waiting = common::waiting_request(
        &server,
        &format!("/_matrix/client/v3/sync?timeout=30000&since={since}"),
        &alice,
    );
    upload_keys(&server, &bob, 7);
    let (answer, at) = waiting.join().expect("the long poll");
    assert!(
        at.duration_since(started) < std::time::Duration::from_secs(20),
        "woken by the change, not the timeout"
    );
    assert_eq!(lists(&answer.json()).0, vec![bob_id]);
}

#[test]
fn keys_changes_refuses_what_is_not_a_token() {
    let server = server();
    let alice = login(&server, "alice");
    let answer = server
        .client()
        .get_with("/_matrix/client/v3/keys/changes?from=abc&to=1", &alice);
    assert_eq!(answer.status, 400);
    assert_eq!(common::errcode(&answer), "M_INVALID_PARAM");
    let answer = server
        .client()
        .get_with("/_matrix/client/v3/keys/changes?from=1", &alice);
    assert_eq!(answer.status, 400);
}
