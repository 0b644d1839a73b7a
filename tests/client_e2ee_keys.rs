//! Device keys, one-time keys and fallback keys (issue 11, "e2ee-keys"): `/keys/upload`,
//! `/keys/query`, `/keys/claim` and the counts in `/sync`, on one server and across two
//! federating ones. Devices sign their keys here with real ed25519 keys, as a client does.

mod common;

use common::federation::Pair;
use common::{Server, errcode, ok, test_config};
use hearth::matrix::crypto::{KeyId, SigningKey, sign_json};
use serde_json::{Map, Value, json};

const PASSWORD: &str = "correct horse battery";

fn server() -> Server {
    Server::start_with_users(
        &test_config("[limits]\nauth_attempts_per_minute = 100000\n"),
        &[("alice", PASSWORD), ("bob", PASSWORD)],
    )
}

/// A logged-in device: its user, ID, token and the ed25519 key it signs with.
struct Device {
    user: String,
    id: String,
    token: String,
    key: SigningKey,
}

impl Device {
    fn new(server: &Server, token: String, seed: u8) -> Device {
        let whoami = ok(server
            .client()
            .get_with("/_matrix/client/v3/account/whoami", &token));
        let id = whoami["device_id"].as_str().expect("device").to_owned();
        let key = SigningKey::from_seed(KeyId::ed25519(&id).expect("key id"), [seed; 32]);
        Device {
            user: whoami["user_id"].as_str().expect("user").to_owned(),
            id,
            token,
            key,
        }
    }

    fn sign(&self, object: Value) -> Value {
        let Value::Object(mut object) = object else {
            panic!("not an object")
        };
        sign_json(&mut object, &self.user, &self.key).expect("sign");
        Value::Object(object)
    }

    /// The device's identity keys, signed by itself.
    fn device_keys(&self) -> Value {
        self.sign(json!({
            "user_id": self.user,
            "device_id": self.id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{}", self.id): format!("curve-{}", self.id),
                format!("ed25519:{}", self.id): self.key.public_key_base64(),
            },
        }))
    }

    /// `count` signed one-time keys, IDs `AAA{n}`.
    fn one_time_keys(&self, from: usize, count: usize) -> Map<String, Value> {
        (from..from + count)
            .map(|n| {
                (
                    format!("signed_curve25519:AAA{n}"),
                    self.sign(json!({ "key": format!("otk{n}") })),
                )
            })
            .collect()
    }
}

fn post(server: &Server, token: &str, path: &str, body: &Value) -> common::http::Response {
    server.client().json("POST", path, Some(token), body)
}

fn sync(server: &Server, token: &str) -> Value {
    ok(server.client().get_with("/_matrix/client/v3/sync", token))
}

#[test]
fn upload_query_claim_and_counts_in_sync() {
    let server = server();
    let alice = Device::new(&server, common::login_token(&server, "alice", PASSWORD), 1);
    let bob = common::login_token(&server, "bob", PASSWORD);

    // Nothing uploaded yet: counts at zero, no fallback key.
    let first = sync(&server, &alice.token);
    assert_eq!(
        first["device_one_time_keys_count"],
        json!({ "signed_curve25519": 0 })
    );
    assert_eq!(first["device_unused_fallback_key_types"], json!([]));

    let uploaded = ok(post(
        &server,
        &alice.token,
        "/_matrix/client/v3/keys/upload",
        &json!({
            "device_keys": alice.device_keys(),
            "one_time_keys": alice.one_time_keys(0, 3),
            "fallback_keys": {
                "signed_curve25519:FALLBACK": alice.sign(json!({ "key": "fb", "fallback": true })),
            },
        }),
    ));
    assert_eq!(
        uploaded["one_time_key_counts"],
        json!({ "signed_curve25519": 3 })
    );
    // The same keys again change nothing.
    let again = ok(post(
        &server,
        &alice.token,
        "/_matrix/client/v3/keys/upload",
        &json!({ "one_time_keys": alice.one_time_keys(0, 3) }),
    ));
    assert_eq!(again["one_time_key_counts"]["signed_curve25519"], 3);
    let synced = sync(&server, &alice.token);
    assert_eq!(synced["device_one_time_keys_count"]["signed_curve25519"], 3);
    assert_eq!(
        synced["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );

    // Bob sees Alice's device keys, as signed, with the device's name.
    ok(server.client().json(
        "PUT",
        &format!("/_matrix/client/v3/devices/{}", alice.id),
        Some(&alice.token),
        &json!({ "display_name": "Alice's phone" }),
    ));
    let queried = ok(post(
        &server,
        &bob,
        "/_matrix/client/v3/keys/query",
        &json!({ "device_keys": { &alice.user: [] } }),
    ));
    let keys = &queried["device_keys"][&alice.user][&alice.id];
    let mut expected = alice.device_keys();
    expected["unsigned"] = json!({ "device_display_name": "Alice's phone" });
    assert_eq!(keys, &expected);
    assert_eq!(queried["failures"], json!({}));

    // Three claims take the three one-time keys, each once; the fourth gets the fallback.
    let mut seen = Vec::new();
    for _ in 0..3 {
        let claimed = ok(post(
            &server,
            &bob,
            "/_matrix/client/v3/keys/claim",
            &json!({ "one_time_keys": { &alice.user: { &alice.id: "signed_curve25519" } } }),
        ));
        let keys = claimed["one_time_keys"][&alice.user][&alice.id]
            .as_object()
            .expect("a key")
            .clone();
        assert_eq!(keys.len(), 1);
        let (key_id, _) = keys.into_iter().next().expect("key");
        assert!(key_id.starts_with("signed_curve25519:AAA"), "{key_id}");
        assert!(!seen.contains(&key_id), "{key_id} handed out twice");
        seen.push(key_id);
    }
    let fallback = ok(post(
        &server,
        &bob,
        "/_matrix/client/v3/keys/claim",
        &json!({ "one_time_keys": { &alice.user: { &alice.id: "signed_curve25519" } } }),
    ));
    assert_eq!(
        fallback["one_time_keys"][&alice.user][&alice.id]["signed_curve25519:FALLBACK"]["key"],
        "fb"
    );
    let synced = sync(&server, &alice.token);
    assert_eq!(synced["device_one_time_keys_count"]["signed_curve25519"], 0);
    assert_eq!(synced["device_unused_fallback_key_types"], json!([]));

    // A new fallback key is unused again; an unknown device gets nothing.
    ok(post(
        &server,
        &alice.token,
        "/_matrix/client/v3/keys/upload",
        &json!({ "fallback_keys": {
            "signed_curve25519:FALLBACK2": alice.sign(json!({ "key": "fb2", "fallback": true })),
        } }),
    ));
    let synced = sync(&server, &alice.token);
    assert_eq!(
        synced["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );
    let nothing = ok(post(
        &server,
        &bob,
        "/_matrix/client/v3/keys/claim",
        &json!({ "one_time_keys": { &alice.user: { "NOSUCHDEVICE": "signed_curve25519" } } }),
    ));
    assert_eq!(nothing["one_time_keys"], json!({}));

    // Logging out deletes the device and its keys.
    ok(post(
        &server,
        &alice.token,
        "/_matrix/client/v3/logout",
        &json!({}),
    ));
    let queried = ok(post(
        &server,
        &bob,
        "/_matrix/client/v3/keys/query",
        &json!({ "device_keys": { &alice.user: [] } }),
    ));
    assert_eq!(queried["device_keys"][&alice.user], json!({}));
}

#[test]
fn concurrent_claims_hand_each_key_out_once() {
    let server = server();
    let alice = Device::new(&server, common::login_token(&server, "alice", PASSWORD), 2);
    let bob = common::login_token(&server, "bob", PASSWORD);
    ok(post(
        &server,
        &alice.token,
        "/_matrix/client/v3/keys/upload",
        &json!({ "device_keys": alice.device_keys(), "one_time_keys": alice.one_time_keys(0, 10) }),
    ));
    let claims: Vec<_> = (0..16)
        .map(|_| {
            let mut client = server.client();
            let (bob, user, device) = (bob.clone(), alice.user.clone(), alice.id.clone());
            std::thread::spawn(move || {
                let answer = client.json(
                    "POST",
                    "/_matrix/client/v3/keys/claim",
                    Some(&bob),
                    &json!({ "one_time_keys": { &user: { &device: "signed_curve25519" } } }),
                );
                ok(answer)["one_time_keys"][&user][&device]
                    .as_object()
                    .map(|keys| keys.keys().cloned().collect::<Vec<_>>())
                    .unwrap_or_default()
            })
        })
        .collect();
    let mut handed_out: Vec<String> = claims
        .into_iter()
        .flat_map(|claim| claim.join().expect("claim"))
        .collect();
    assert_eq!(handed_out.len(), 10, "{handed_out:?}");
    handed_out.sort();
    handed_out.dedup();
    assert_eq!(handed_out.len(), 10, "a key was handed out twice");
}

#[test]
fn hostile_uploads_are_refused_and_change_nothing() {
    let server = server();
    let alice = Device::new(&server, common::login_token(&server, "alice", PASSWORD), 3);
    let bob = Device::new(&server, common::login_token(&server, "bob", PASSWORD), 4);
    let upload = |body: Value| {
        post(
            &server,
            &alice.token,
            "/_matrix/client/v3/keys/upload",
            &body,
        )
    };
    let refused = |response: common::http::Response| {
        assert_eq!(
            response.status,
            400,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        assert_eq!(errcode(&response), "M_INVALID_PARAM");
    };
    // Keys for another user's device, signed by that device.
    refused(upload(json!({ "device_keys": bob.device_keys() })));
    // Keys for our user but not this device.
    let mut other = alice.device_keys();
    other["device_id"] = json!("OTHERDEVICE");
    refused(upload(json!({ "device_keys": other })));
    // A forged signature (changed after signing).
    let mut forged = alice.device_keys();
    forged["algorithms"] = json!(["m.olm.v1.curve25519-aes-sha2"]);
    refused(upload(json!({ "device_keys": forged })));
    // Unsigned one-time keys, with the (valid) device keys: the whole upload is refused.
    refused(upload(json!({
        "device_keys": alice.device_keys(),
        "one_time_keys": { "signed_curve25519:X": { "key": "unsigned" } },
    })));
    refused(upload(json!({ "one_time_keys": { "no-colon": "key" } })));
    let counts = sync(&server, &alice.token);
    assert_eq!(counts["device_one_time_keys_count"]["signed_curve25519"], 0);
    let queried = ok(post(
        &server,
        &bob.token,
        "/_matrix/client/v3/keys/query",
        &json!({ "device_keys": { &alice.user: [] } }),
    ));
    assert_eq!(queried["device_keys"][&alice.user], json!({}));

    // A key ID uploaded again with other content.
    ok(upload(json!({
        "device_keys": alice.device_keys(),
        "one_time_keys": alice.one_time_keys(0, 1),
    })));
    refused(upload(json!({ "one_time_keys": {
        "signed_curve25519:AAA0": alice.sign(json!({ "key": "different" })),
    } })));
    // More one-time keys than a device may hold.
    refused(upload(
        json!({ "one_time_keys": alice.one_time_keys(1, 1000) }),
    ));
    assert_eq!(
        sync(&server, &alice.token)["device_one_time_keys_count"]["signed_curve25519"],
        1
    );

    // Bad user IDs and shapes.
    let bad = post(
        &server,
        &bob.token,
        "/_matrix/client/v3/keys/query",
        &json!({ "device_keys": { "not a user": [] } }),
    );
    refused(bad);
    let bad = post(
        &server,
        &bob.token,
        "/_matrix/client/v3/keys/claim",
        &json!({ "one_time_keys": "nope" }),
    );
    assert_eq!(errcode(&bad), "M_BAD_JSON");
    let unauthenticated = server.client().json(
        "POST",
        "/_matrix/client/v3/keys/query",
        None,
        &json!({ "device_keys": {} }),
    );
    assert_eq!(unauthenticated.status, 401);
}

#[test]
fn unstable_paths_answer_like_v3() {
    let server = server();
    let alice = Device::new(&server, common::login_token(&server, "alice", PASSWORD), 5);
    let uploaded = ok(post(
        &server,
        &alice.token,
        "/_matrix/client/unstable/keys/upload",
        &json!({
            "device_keys": alice.device_keys(),
            "one_time_keys": alice.one_time_keys(0, 2),
            "org.matrix.msc2732.fallback_keys": {
                "signed_curve25519:FB": alice.sign(json!({ "key": "fb", "fallback": true })),
            },
        }),
    ));
    assert_eq!(uploaded["one_time_key_counts"]["signed_curve25519"], 2);
    let queried = ok(post(
        &server,
        &alice.token,
        "/_matrix/client/unstable/keys/query",
        &json!({ "device_keys": { &alice.user: [&alice.id] } }),
    ));
    assert!(queried["device_keys"][&alice.user][&alice.id].is_object());
    let claimed = ok(post(
        &server,
        &alice.token,
        "/_matrix/client/unstable/keys/claim",
        &json!({ "one_time_keys": { &alice.user: { &alice.id: "signed_curve25519" } } }),
    ));
    assert!(claimed["one_time_keys"][&alice.user][&alice.id].is_object());
    assert_eq!(
        sync(&server, &alice.token)["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );
}

#[test]
fn keys_are_queried_and_claimed_across_federation() {
    let pair = Pair::start(&["alice"], &["bob"]);
    let alice = Device::new(&pair.a, pair.login_a("alice"), 6);
    let bob = Device::new(&pair.b, pair.login_b("bob"), 7);
    ok(post(
        &pair.a,
        &alice.token,
        "/_matrix/client/v3/keys/upload",
        &json!({ "device_keys": alice.device_keys(), "one_time_keys": alice.one_time_keys(0, 1) }),
    ));
    ok(post(
        &pair.b,
        &bob.token,
        "/_matrix/client/v3/keys/upload",
        &json!({ "device_keys": bob.device_keys() }),
    ));

    // Bob (on B) asks for Alice's keys (on A) and his own at once; a dead server fails alone.
    let dead = "@carol:127.0.0.1:1";
    let queried = ok(post(
        &pair.b,
        &bob.token,
        "/_matrix/client/v3/keys/query",
        &json!({ "device_keys": { &alice.user: [], &bob.user: [], dead: [] }, "timeout": 5000 }),
    ));
    assert_eq!(
        queried["device_keys"][&alice.user][&alice.id]["keys"],
        alice.device_keys()["keys"]
    );
    // Device names stay on their server.
    assert!(queried["device_keys"][&alice.user][&alice.id]["unsigned"].is_null());
    assert!(queried["device_keys"][&bob.user][&bob.id].is_object());
    assert_eq!(queried["failures"], json!({ "127.0.0.1:1": {} }));

    // One-time key, then the device has none left (and no fallback).
    let claim = json!({ "one_time_keys": { &alice.user: { &alice.id: "signed_curve25519" } } });
    let claimed = ok(post(
        &pair.b,
        &bob.token,
        "/_matrix/client/v3/keys/claim",
        &claim,
    ));
    assert_eq!(
        claimed["one_time_keys"][&alice.user][&alice.id]["signed_curve25519:AAA0"]["key"],
        "otk0"
    );
    let empty = ok(post(
        &pair.b,
        &bob.token,
        "/_matrix/client/v3/keys/claim",
        &claim,
    ));
    assert_eq!(empty["one_time_keys"], json!({}));
    assert_eq!(
        sync(&pair.a, &alice.token)["device_one_time_keys_count"]["signed_curve25519"],
        0
    );

    // A lists the device for other servers (device-list resyncs).
    let devices = ok(post(
        &pair.b,
        &bob.token,
        "/_matrix/client/v3/keys/query",
        &json!({ "device_keys": { &alice.user: [&alice.id] } }),
    ));
    assert!(devices["device_keys"][&alice.user][&alice.id].is_object());
}

#[test]
fn a_silent_server_fails_alone_within_the_timeout() {
    // A federating server (loopback servers allowed), so the request really goes out.
    let certificates = tempfile::tempdir().expect("tempdir");
    common::federation::write_certificates(certificates.path());
    let server = common::federation::start(certificates.path(), "localhost", &[], &["bob"]);
    let bob = common::login_token(&server, "bob", PASSWORD);
    let alice = format!("@alice:{}", server.name);
    // A "server" that takes connections and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("address").port();
    let held = std::thread::spawn(move || {
        let mut connections = Vec::new();
        silent.set_nonblocking(true).expect("nonblocking listener");
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < until {
            if let Ok((connection, _)) = silent.accept() {
                connections.push(connection);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    });
    let carol = format!("@carol:127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let queried = ok(post(
        &server,
        &bob,
        "/_matrix/client/v3/keys/query",
        &json!({ "device_keys": { &carol: [], &alice: [] }, "timeout": 1000 }),
    ));
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    assert_eq!(
        queried["failures"],
        json!({ format!("127.0.0.1:{port}"): {} })
    );
    assert_eq!(queried["device_keys"][&alice], json!({}));
    let claimed = ok(post(
        &server,
        &bob,
        "/_matrix/client/v3/keys/claim",
        &json!({ "one_time_keys": { &carol: { "DEV": "signed_curve25519" } }, "timeout": 1000 }),
    ));
    assert_eq!(
        claimed["failures"],
        json!({ format!("127.0.0.1:{port}"): {} })
    );
    // The silent listener's thread ends on its own (10 s); the test does not wait for it.
    drop(held);
}
