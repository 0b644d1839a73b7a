//! Cross-signing keys between Hearth and a real Synapse (from PyPI,
//! `HEARTH_TEST_SYNAPSE_PYTHON`), both ways (issue 11, items 4 and 7): a user's master and
//! self-signing keys uploaded on one side are seen by the other side's `/keys/query`, and
//! so is a replacement, which reaches the other server as an `m.signing_key_update` EDU:
//! Synapse answers for Alice from what it keeps of her (so the new key is there only if
//! Hearth's EDU reached it), and Hearth keeps Carol's new keys from Synapse's EDU and
//! answers with them once Synapse is gone.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::federation::{start, write_certificates};
use common::http::Client;
use common::synapse::{PASSWORD, Synapse, synapse_python};
use ed25519_compact::{KeyPair, Seed};
use hearth::matrix::crypto::encode_base64;
use serde_json::{Value, json};

fn request(address: SocketAddr, path: &str, token: &str, body: &Value) -> common::http::Response {
    Client::plain(address).json("POST", path, Some(token), body)
}

fn call(address: SocketAddr, path: &str, token: &str, body: &Value) -> Value {
    let response = request(address, path, token, body);
    assert_eq!(
        response.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()
}

/// A real ed25519 key that signs canonical JSON (keys sorted, compact; ASCII here).
struct Key(KeyPair);

impl Key {
    fn new(seed: u8) -> Key {
        Key(KeyPair::from_seed(Seed::new([seed; 32])))
    }

    fn public(&self) -> String {
        encode_base64(self.0.pk.as_ref())
    }

    fn sign(&self, user: &str, object: Value) -> Value {
        let mut object = object;
        let canonical = serde_json::to_string(&object).expect("json");
        let signature = encode_base64(self.0.sk.sign(canonical.as_bytes(), None).as_ref());
        object["signatures"] = json!({ user: { format!("ed25519:{}", self.public()): signature } });
        object
    }

    /// Signs `object` as `user`'s key `key_id` (a device's own key: `ed25519:DEVICEID`).
    fn sign_as(&self, user: &str, key_id: &str, object: Value) -> Value {
        let mut object = object;
        let canonical = serde_json::to_string(&object).expect("json");
        let signature = encode_base64(self.0.sk.sign(canonical.as_bytes(), None).as_ref());
        object["signatures"] = json!({ user: { key_id: signature } });
        object
    }

    fn as_cross_signing(&self, user: &str, usage: &str) -> Value {
        json!({
            "user_id": user,
            "usage": [usage],
            "keys": { format!("ed25519:{}", self.public()): self.public() },
        })
    }
}

/// Uploads a master key (seed `seed`) and a self-signing key signed by it for `user` on
/// the server at `address`, through user-interactive auth with the password when the
/// server asks for it (a replacement). Returns the master public key.
fn upload_cross_signing(address: SocketAddr, token: &str, user: &str, seed: u8) -> String {
    let master = Key::new(seed);
    let self_signing = Key::new(seed + 1);
    let mut body = json!({
        "master_key": master.as_cross_signing(user, "master"),
        "self_signing_key": master.sign(user, self_signing.as_cross_signing(user, "self_signing")),
    });
    let path = "/_matrix/client/v3/keys/device_signing/upload";
    let first = request(address, path, token, &body);
    if first.status == 401 {
        let localpart = user
            .trim_start_matches('@')
            .split(':')
            .next()
            .expect("localpart");
        body["auth"] = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": localpart },
            "password": PASSWORD,
            "session": first.json()["session"],
        });
        call(address, path, token, &body);
    } else {
        assert_eq!(
            first.status,
            200,
            "{}",
            String::from_utf8_lossy(&first.body)
        );
    }
    master.public()
}

fn whoami(address: SocketAddr, token: &str) -> String {
    let response = Client::plain(address).get_with("/_matrix/client/v3/account/whoami", token);
    response.json()["user_id"]
        .as_str()
        .expect("user")
        .to_owned()
}

/// The master key of `user` that the server at `address` answers with (`None` without).
fn master_key_seen(address: SocketAddr, token: &str, user: &str) -> Option<String> {
    let answer = call(
        address,
        "/_matrix/client/v3/keys/query",
        token,
        &json!({ "device_keys": { user: [] }, "timeout": 20000 }),
    );
    let master = &answer["master_keys"][user];
    assert!(
        master.is_null() || answer["self_signing_keys"][user].is_object(),
        "{answer}"
    );
    master["keys"]
        .as_object()
        .and_then(|keys| keys.values().next())
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Waits (a bounded time) until `check` holds.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn cross_signing_keys_and_their_updates_cross_between_hearth_and_synapse() {
    let Some(python) = synapse_python() else {
        return;
    };
    let certificates = tempfile::tempdir().expect("tempdir");
    write_certificates(certificates.path());
    let synapse = Synapse::start(&python, certificates.path());
    let carol_token = synapse.register(&python, "carol");
    let hearth = start(certificates.path(), "localhost", &[], &["alice"]);
    let alice_token = common::login_token(&hearth, "alice", PASSWORD);
    let (h, s) = (hearth.address("http"), synapse.client);
    let alice = whoami(h, &alice_token);
    let carol = whoami(s, &carol_token);

    // They share a room: each server now tells the other of its user's key changes.
    let room = call(
        h,
        "/_matrix/client/v3/createRoom",
        &alice_token,
        &json!({ "preset": "public_chat" }),
    )["room_id"]
        .as_str()
        .expect("room")
        .to_owned();
    call(
        s,
        &format!(
            "/_matrix/client/v3/join/{}?server_name={}",
            common::query_encode(&room),
            common::query_encode(&hearth.name)
        ),
        &carol_token,
        &json!({}),
    );

    let alice_master = upload_cross_signing(h, &alice_token, &alice, 10);
    let carol_master = upload_cross_signing(s, &carol_token, &carol, 20);

    // Hearth → Synapse and Synapse → Hearth: each sees the other's keys.
    assert_eq!(
        master_key_seen(h, &alice_token, &carol).as_deref(),
        Some(carol_master.as_str())
    );
    eventually("Synapse to answer with Alice's master key", || {
        master_key_seen(s, &carol_token, &alice).as_deref() == Some(alice_master.as_str())
    });

    // Alice replaces her keys: Synapse hears of it through Hearth's m.signing_key_update.
    let alice_new = upload_cross_signing(h, &alice_token, &alice, 30);
    assert_ne!(alice_new, alice_master);
    eventually("Synapse to answer with Alice's new master key", || {
        master_key_seen(s, &carol_token, &alice).as_deref() == Some(alice_new.as_str())
    });

    // Alice signs her device with her self-signing key: Synapse, which keeps her device
    // list, hears of it through Hearth's m.device_list_update and shows it verified.
    let device_id = Client::plain(h)
        .get_with("/_matrix/client/v3/account/whoami", &alice_token)
        .json()["device_id"]
        .as_str()
        .expect("device")
        .to_owned();
    let device_key = Key::new(50);
    let device_keys = json!({
        "user_id": alice,
        "device_id": device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{device_id}"): "curve25519-key-of-alice",
            format!("ed25519:{device_id}"): device_key.public(),
        },
    });
    let self_signed =
        device_key.sign_as(&alice, &format!("ed25519:{device_id}"), device_keys.clone());
    call(
        h,
        "/_matrix/client/v3/keys/upload",
        &alice_token,
        &json!({ "device_keys": self_signed }),
    );
    let device_seen = |key_id: &str| {
        let answer = call(
            s,
            "/_matrix/client/v3/keys/query",
            &carol_token,
            &json!({ "device_keys": { &alice: [] }, "timeout": 20000 }),
        );
        answer["device_keys"][&alice][&device_id]["signatures"][&alice][key_id].is_string()
    };
    eventually("Synapse to see Alice's device", || {
        device_seen(&format!("ed25519:{device_id}"))
    });
    let self_signing = Key::new(31);
    let cross_signed = self_signing.sign(&alice, device_keys);
    let failures = call(
        h,
        "/_matrix/client/v3/keys/signatures/upload",
        &alice_token,
        &json!({ &alice: { &device_id: cross_signed } }),
    );
    assert_eq!(failures["failures"], json!({}), "{failures}");
    eventually(
        "Synapse to see Alice's device signed by her self-signing key",
        || device_seen(&format!("ed25519:{}", self_signing.public())),
    );

    // Carol replaces hers: Hearth keeps them from Synapse's EDU, without asking, and
    // answers with them even once Synapse is gone.
    let carol_new = upload_cross_signing(s, &carol_token, &carol, 40);
    eventually("Hearth to keep Carol's new keys from Synapse's EDU", || {
        hearth.log_text().lines().any(|line| {
            line.contains("m.signing_key_update kept") && line.contains(carol_new.as_str())
        })
    });
    drop(synapse);
    let answer = call(
        h,
        "/_matrix/client/v3/keys/query",
        &alice_token,
        &json!({ "device_keys": { &carol: [] }, "timeout": 5000 }),
    );
    assert!(
        answer["failures"]
            .as_object()
            .is_some_and(|f| !f.is_empty()),
        "{answer}"
    );
    assert_eq!(
        answer["master_keys"][&carol]["keys"][format!("ed25519:{carol_new}")],
        carol_new.as_str(),
        "{answer}"
    );
}
