//! Device lists between Hearth and a real Synapse (issue 11, "e2ee-devlists"), both ways:
//! once a Hearth user and a Synapse user share a room, a new login (with keys) on either
//! side reaches the other side's user in `/sync`'s `device_lists.changed` (through
//! `m.device_list_update`, and the receiving server's `/user/devices` resync) and in its
//! `/keys/query` answer.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::e2ee::{Device, call};
use common::federation::{start, write_certificates};
use common::http::Client;
use common::synapse::{PASSWORD, Synapse, synapse_python};
use serde_json::json;

/// Waits (a bounded time) until `check` holds.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Logs `user` in on the server at `address` (a new device): the access token.
fn login(address: SocketAddr, user: &str) -> String {
    let answer = Client::plain(address).json(
        "POST",
        "/_matrix/client/v3/login",
        None,
        &json!({ "type": "m.login.password",
                 "identifier": { "type": "m.id.user", "user": user },
                 "password": PASSWORD }),
    );
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    answer.json()["access_token"]
        .as_str()
        .expect("token")
        .to_owned()
}

/// The sync token of a first sync.
fn first_sync(device: &Device) -> String {
    let synced = call(
        device.address,
        "GET",
        "/_matrix/client/v3/sync?timeout=0",
        &device.token,
        &json!(null),
    );
    synced["next_batch"].as_str().expect("token").to_owned()
}

/// Syncs `device` from `since` until `user` is in `device_lists.changed` (a bounded time).
fn wait_for_changed(device: &Device, since: &str, user: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut since = since.to_owned();
    loop {
        let synced = call(
            device.address,
            "GET",
            &format!(
                "/_matrix/client/v3/sync?timeout=2000&since={}",
                common::query_encode(&since)
            ),
            &device.token,
            &json!(null),
        );
        let changed = synced["device_lists"]["changed"]
            .as_array()
            .is_some_and(|users| users.iter().any(|u| u == user));
        if changed {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{user} never in device_lists.changed of {}",
            device.user
        );
        since = synced["next_batch"].as_str().expect("token").to_owned();
    }
}

#[test]
fn a_new_login_reaches_the_other_side_both_ways() {
    let Some(python) = synapse_python() else {
        return;
    };
    let certificates = tempfile::tempdir().expect("tempdir");
    write_certificates(certificates.path());
    let synapse = Synapse::start(&python, certificates.path());
    let carol_token = synapse.register(&python, "carol");
    let hearth = start(certificates.path(), "localhost", &[], &["alice"]);
    let alice_token = common::login_token(&hearth, "alice", PASSWORD);
    let alice = Device::new(hearth.address("http"), alice_token, 21);
    let carol = Device::new(synapse.client, carol_token, 22);
    alice.upload();
    carol.upload();
    let room = call(
        alice.address,
        "POST",
        "/_matrix/client/v3/createRoom",
        &alice.token,
        &json!({ "preset": "public_chat" }),
    )["room_id"]
        .as_str()
        .expect("room")
        .to_owned();
    call(
        carol.address,
        "POST",
        &format!(
            "/_matrix/client/v3/join/{}?server_name={}",
            common::query_encode(&room),
            common::query_encode(&hearth.name)
        ),
        &carol.token,
        &json!({}),
    );
    // Both sides know each other's first device before the new logins.
    eventually("Synapse to list Alice's device", || {
        carol.query(&alice)["device_keys"][&alice.user][&alice.id].is_object()
    });
    eventually("Hearth to list Carol's device", || {
        alice.query(&carol)["device_keys"][&carol.user][&carol.id].is_object()
    });
    let alice_since = first_sync(&alice);
    let carol_since = first_sync(&carol);

    // Hearth → Synapse: Alice logs in a second device and uploads its keys.
    let alice_phone_token = common::login_token(&hearth, "alice", PASSWORD);
    let alice_phone = Device::new(hearth.address("http"), alice_phone_token, 23);
    alice_phone.upload();
    wait_for_changed(&carol, &carol_since, &alice.user);
    eventually("Synapse to list Alice's new device", || {
        carol.query(&alice)["device_keys"][&alice.user][&alice_phone.id]["keys"]
            [format!("ed25519:{}", alice_phone.id)]
            == alice_phone.ed25519()
    });

    // Synapse → Hearth: Carol logs in a second device and uploads its keys.
    let carol_phone_token = login(synapse.client, "carol");
    let carol_phone = Device::new(synapse.client, carol_phone_token, 24);
    carol_phone.upload();
    wait_for_changed(&alice, &alice_since, &carol.user);
    eventually("Hearth to list Carol's new device", || {
        alice.query(&carol)["device_keys"][&carol.user][&carol_phone.id]["keys"]
            [format!("ed25519:{}", carol_phone.id)]
            == carol_phone.ed25519()
    });
}
