//! Device keys between Hearth and a real Synapse (from PyPI, `HEARTH_TEST_SYNAPSE_PYTHON`),
//! both ways: each side's user uploads signed identity and one-time keys on their own server,
//! then queries and claims the other's through their server, which asks the other server
//! over federation (`/user/keys/query`, `/user/keys/claim`, and Synapse's `/user/devices`
//! resync once the users share a room).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::federation::{start, write_certificates};
use common::http::Client;
use common::synapse::{PASSWORD, Synapse, synapse_python};
use hearth::matrix::crypto::{KeyId, SigningKey, sign_json};
use serde_json::{Value, json};

fn call(address: SocketAddr, method: &str, path: &str, token: &str, body: &Value) -> Value {
    let response = Client::plain(address).json(method, path, Some(token), body);
    assert_eq!(
        response.status,
        200,
        "{method} {path}: {}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()
}

/// A device on either server that signs its keys with a real ed25519 key.
struct Device {
    address: SocketAddr,
    token: String,
    user: String,
    id: String,
    key: SigningKey,
}

impl Device {
    fn new(address: SocketAddr, token: String, seed: u8) -> Device {
        let me = call(
            address,
            "GET",
            "/_matrix/client/v3/account/whoami",
            &token,
            &json!(null),
        );
        let id = me["device_id"].as_str().expect("device").to_owned();
        Device {
            address,
            token,
            user: me["user_id"].as_str().expect("user").to_owned(),
            key: SigningKey::from_seed(KeyId::ed25519(&id).expect("key id"), [seed; 32]),
            id,
        }
    }

    fn sign(&self, value: Value) -> Value {
        let Value::Object(mut object) = value else {
            panic!("object")
        };
        sign_json(&mut object, &self.user, &self.key).expect("sign");
        Value::Object(object)
    }

    /// Uploads signed identity keys and one signed one-time key, `OTK`.
    fn upload(&self) {
        let device_keys = self.sign(json!({
            "user_id": self.user,
            "device_id": self.id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{}", self.id): format!("curve-{}", self.id),
                format!("ed25519:{}", self.id): self.key.public_key_base64(),
            },
        }));
        let otk = self.sign(json!({ "key": format!("otk-of-{}", self.id) }));
        let answer = call(
            self.address,
            "POST",
            "/_matrix/client/v3/keys/upload",
            &self.token,
            &json!({ "device_keys": device_keys, "one_time_keys": { "signed_curve25519:OTK": otk } }),
        );
        assert_eq!(answer["one_time_key_counts"]["signed_curve25519"], 1);
    }

    /// The `/keys/query` answer for `other`'s devices, through this device's server.
    fn query(&self, other: &Device) -> Value {
        call(
            self.address,
            "POST",
            "/_matrix/client/v3/keys/query",
            &self.token,
            &json!({ "device_keys": { &other.user: [] }, "timeout": 20000 }),
        )
    }

    fn claim(&self, other: &Device) -> Value {
        call(
            self.address,
            "POST",
            "/_matrix/client/v3/keys/claim",
            &self.token,
            &json!({
                "one_time_keys": { &other.user: { &other.id: "signed_curve25519" } },
                "timeout": 20000,
            }),
        )
    }

    fn ed25519(&self) -> String {
        self.key.public_key_base64()
    }
}

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
