//! Device lists between two Hearths (issue 11, "e2ee-devlists"): a user's new keys and
//! new device reach the other server's users (`device_lists.changed`, `/keys/query`)
//! through `m.device_list_update`; a missed update (an EDU whose `prev_id` names one never
//! received) is repaired by fetching the whole list from `/user/devices`; the other
//! server's list is then answered from the cache even while its server is down.

mod common;

use std::time::{Duration, Instant};

use common::federation::{Pair, Signer, signing_key};
use common::{Server, ok};
use hearth::matrix::crypto::{KeyId, SigningKey, sign_json};
use serde_json::{Value, json};

/// The device's identity keys, signed by a key from `seed`.
fn device_keys(server: &Server, token: &str, seed: u8) -> (String, Value) {
    let me = ok(server
        .client()
        .get_with("/_matrix/client/v3/account/whoami", token));
    let (user, device) = (
        me["user_id"].as_str().expect("user").to_owned(),
        me["device_id"].as_str().expect("device").to_owned(),
    );
    let key = SigningKey::from_seed(KeyId::ed25519(&device).expect("key id"), [seed; 32]);
    let mut keys = json!({
        "user_id": user,
        "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{device}"): format!("curve-{device}"),
            format!("ed25519:{device}"): key.public_key_base64(),
        },
    });
    sign_json(keys.as_object_mut().expect("object"), &user, &key).expect("sign");
    (device, keys)
}

fn upload_keys(server: &Server, token: &str, seed: u8) -> String {
    let (device, keys) = device_keys(server, token, seed);
    ok(server.client().json(
        "POST",
        "/_matrix/client/v3/keys/upload",
        Some(token),
        &json!({ "device_keys": keys }),
    ));
    device
}

/// The devices `/keys/query` on `server` lists for `user`, sorted, and the answer.
fn queried_devices(server: &Server, token: &str, user: &str) -> (Vec<String>, Value) {
    let answer = ok(server.client().json(
        "POST",
        "/_matrix/client/v3/keys/query",
        Some(token),
        &json!({ "device_keys": { user: [] }, "timeout": 5000 }),
    ));
    let mut devices: Vec<String> = answer["device_keys"][user]
        .as_object()
        .map(|devices| devices.keys().cloned().collect())
        .unwrap_or_default();
    devices.sort();
    (devices, answer)
}

/// Waits (up to 30 s) until `/keys/query` on `server` lists exactly `expected`.
fn wait_for_devices(server: &Server, token: &str, user: &str, expected: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut expected: Vec<String> = expected.iter().map(|d| (*d).to_owned()).collect();
    expected.sort();
    loop {
        let (devices, answer) = queried_devices(server, token, user);
        if devices == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{user}'s devices stay {devices:?}, not {expected:?}: {answer}\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Long-polls `/sync` on `server` from `since` until `user` is in `device_lists.changed`;
/// the next token.
fn wait_for_changed(server: &Server, token: &str, since: &str, user: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut since = since.to_owned();
    loop {
        let synced = ok(server.client().get_with(
            &format!("/_matrix/client/v3/sync?timeout=2000&since={since}"),
            token,
        ));
        since = synced["next_batch"].as_str().expect("token").to_owned();
        let changed = synced["device_lists"]["changed"]
            .as_array()
            .is_some_and(|users| users.iter().any(|u| u == user));
        if changed {
            return since;
        }
        assert!(
            Instant::now() < deadline,
            "{user} never in device_lists.changed\n{}",
            server.log_text()
        );
    }
}

#[test]
fn device_changes_cross_servers_and_a_missed_update_is_repaired_by_a_resync() {
    let mut pair = Pair::start(&["alice"], &["bob"]);
    let alice = pair.login_a("alice");
    let bob = pair.login_b("bob");
    let bob_id = format!("@bob:{}", pair.name_b);
    let room = pair.shared_room(&alice, &json!({ "preset": "public_chat" }), &[&bob]);
    let since = ok(pair.a.client().get_with("/_matrix/client/v3/sync", &alice))["next_batch"]
        .as_str()
        .expect("token")
        .to_owned();

    // Bob's keys reach Alice's server: her sync names him, her query lists his device.
    let laptop = upload_keys(&pair.b, &bob, 1);
    let since = wait_for_changed(&pair.a, &alice, &since, &bob_id);
    wait_for_devices(&pair.a, &alice, &bob_id, &[&laptop]);

    // A second device of Bob's, with keys: the update reaches A in order.
    let phone_token = pair.login_b("bob");
    let phone = upload_keys(&pair.b, &phone_token, 2);
    let since = wait_for_changed(&pair.a, &alice, &since, &bob_id);
    wait_for_devices(&pair.a, &alice, &bob_id, &[&laptop, &phone]);

    // B's /user/devices has a real stream position.
    let key_a = signing_key(&pair.a);
    let as_a = Signer {
        origin: &pair.name_a,
        key: &key_a,
        destination: &pair.name_b,
    };
    let listed = ok(as_a.get(
        &pair.b,
        &format!(
            "/_matrix/federation/v1/user/devices/{}",
            common::query_encode(&bob_id)
        ),
    ));
    assert!(
        listed["stream_id"].as_u64().is_some_and(|id| id > 0),
        "{listed}"
    );
    assert_eq!(listed["devices"].as_array().map(Vec::len), Some(2));

    // B's word that the phone is gone (in order: it names no earlier update) applies to
    // A's cache: A answers from it, without asking B.
    let key_b = pair.key_b();
    let as_b = Signer {
        origin: &pair.name_b,
        key: &key_b,
        destination: &pair.name_a,
    };
    let send = |txn: &str, content: Value| {
        let transaction = json!({
            "origin": pair.name_b,
            "origin_server_ts": 1_800_000_000_000u64,
            "pdus": [],
            "edus": [{ "edu_type": "m.device_list_update", "content": content }],
        });
        ok(as_b.send(
            &pair.a,
            "PUT",
            &format!("/_matrix/federation/v1/send/{txn}"),
            Some(&transaction),
        ));
    };
    send(
        "devlist-1",
        json!({
            "user_id": bob_id, "device_id": phone, "stream_id": 1u64 << 40,
            "prev_id": [], "deleted": true,
        }),
    );
    wait_for_devices(&pair.a, &alice, &bob_id, &[&laptop]);
    let since = wait_for_changed(&pair.a, &alice, &since, &bob_id);

    // An update whose `prev_id` A never saw: A fetches the whole list from B, and the
    // phone (which B still has) is back; the update's own device is not taken on trust.
    send(
        "devlist-2",
        json!({
            "user_id": bob_id, "device_id": "GHOST", "stream_id": (1u64 << 40) + 2,
            "prev_id": [(1u64 << 40) + 1], "deleted": false,
            "keys": { "user_id": bob_id, "device_id": "GHOST", "keys": {} },
        }),
    );
    wait_for_devices(&pair.a, &alice, &bob_id, &[&laptop, &phone]);
    wait_for_changed(&pair.a, &alice, &since, &bob_id);
    assert!(
        pair.a
            .log_text()
            .contains("a device-list update was missed"),
        "{}",
        pair.a.log_text()
    );

    // With B down, A still answers Bob's devices from its cache, and no failure.
    pair.b.signal("TERM");
    assert!(pair.b.wait_exit(Duration::from_secs(15)).is_some());
    let (devices, answer) = queried_devices(&pair.a, &alice, &bob_id);
    let mut expected = vec![laptop, phone];
    expected.sort();
    assert_eq!(devices, expected, "{answer}");
    assert_eq!(answer["failures"], json!({}), "{answer}");
    drop(room);
}
