//! Device keys between Hearth and a real Synapse (from PyPI, `HEARTH_TEST_SYNAPSE_PYTHON`),
//! both ways: each side's user uploads signed identity and one-time keys on their own server,
//! then queries and claims the other's through their server, which asks the other server
//! over federation (`/user/keys/query`, `/user/keys/claim`, and Synapse's `/user/devices`
//! resync once the users share a room).

mod common;

use std::time::{Duration, Instant};

use common::e2ee::{Device, call};
use common::federation::{start, write_certificates};
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

#[test]
fn device_keys_are_queried_and_claimed_between_hearth_and_synapse() {
    let Some(python) = synapse_python() else {
        return;
    };
    let certificates = tempfile::tempdir().expect("tempdir");
    write_certificates(certificates.path());
    let synapse = Synapse::start(&python, certificates.path());
    let carol_token = synapse.register(&python, "carol");
    let hearth = start(certificates.path(), "localhost", &[], &["alice"]);
    let alice_token = common::login_token(&hearth, "alice", PASSWORD);
    let alice = Device::new(hearth.address("http"), alice_token, 11);
    let carol = Device::new(synapse.client, carol_token, 12);
    alice.upload();
    carol.upload();

    // Hearth → Synapse: Alice's server asks Synapse for Carol's keys, then claims her key.
    let queried = alice.query(&carol);
    assert_eq!(queried["failures"], json!({}), "{queried}");
    let keys = &queried["device_keys"][&carol.user][&carol.id];
    assert_eq!(
        keys["keys"][format!("ed25519:{}", carol.id)],
        carol.ed25519(),
        "{queried}"
    );
    let claimed = alice.claim(&carol);
    assert_eq!(
        claimed["one_time_keys"][&carol.user][&carol.id]["signed_curve25519:OTK"]["key"],
        format!("otk-of-{}", carol.id),
        "{claimed}"
    );

    // Synapse → Hearth: Carol's server asks Hearth for Alice's keys, then claims her key.
    let queried = carol.query(&alice);
    let keys = &queried["device_keys"][&alice.user][&alice.id];
    assert_eq!(
        keys["keys"][format!("ed25519:{}", alice.id)],
        alice.ed25519(),
        "{queried}"
    );
    let claimed = carol.claim(&alice);
    assert_eq!(
        claimed["one_time_keys"][&alice.user][&alice.id]["signed_curve25519:OTK"]["key"],
        format!("otk-of-{}", alice.id),
        "{claimed}"
    );
    // The key left Hearth: a second claim finds none.
    let again = carol.claim(&alice);
    assert!(
        again["one_time_keys"][&alice.user][&alice.id].is_null(),
        "{again}"
    );

    // Once they share a room, Synapse tracks Alice's devices (through Hearth's
    // `/user/devices`) and still answers with her keys.
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
    let hearth_name = hearth.name.clone();
    call(
        carol.address,
        "POST",
        &format!(
            "/_matrix/client/v3/join/{}?server_name={}",
            common::query_encode(&room),
            common::query_encode(&hearth_name)
        ),
        &carol.token,
        &json!({}),
    );
    eventually("Synapse to list Alice's device in the shared room", || {
        let queried = carol.query(&alice);
        queried["device_keys"][&alice.user][&alice.id]["keys"][format!("ed25519:{}", alice.id)]
            == alice.ed25519()
    });
}
