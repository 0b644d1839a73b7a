//! Cross-signing (issue 11, item 4) and dehydrated devices (item 6, MSC3814) on one Hearth,
//! over HTTP: `/keys/device_signing/upload` (the first upload free, a replacement behind
//! user-interactive auth), `/keys/signatures/upload` (each signature checked, failures per
//! key), what `/keys/query` shows to whom, hostile uploads that store nothing, and a
//! dehydrated device that receives a to-device message and hands it back through
//! `…/events`. Keys are real ed25519 keys (ed25519-compact) signing the canonical JSON.

mod common;

use common::{Server, errcode, ok, test_config};
use ed25519_compact::{KeyPair, Seed};
use hearth::matrix::crypto::encode_base64;
use serde_json::{Map, Value, json};

const PASSWORD: &str = "correct horse battery";
const V3: &str = "/_matrix/client/v3";
const MSC3814: &str = "/_matrix/client/unstable/org.matrix.msc3814.v1";

fn server() -> Server {
    Server::start_with_users(
        &test_config("[limits]\nauth_attempts_per_minute = 100000\n"),
        &[("alice", PASSWORD), ("bob", PASSWORD)],
    )
}

/// An ed25519 key of a client: a device's or a cross-signing key.
struct Key(KeyPair);

impl Key {
    fn new(seed: u8) -> Key {
        Key(KeyPair::from_seed(Seed::new([seed; 32])))
    }

    fn public(&self) -> String {
        encode_base64(self.0.pk.as_ref())
    }

    /// Signs `object` as `user` with key ID `ed25519:<name>`: over its canonical JSON (keys
    /// sorted, no spaces; the objects here are ASCII), without `signatures` and `unsigned`.
    fn sign_as(&self, user: &str, name: &str, object: &Value) -> Value {
        let mut object = object.as_object().expect("object").clone();
        let mut signed = object.clone();
        signed.remove("signatures");
        signed.remove("unsigned");
        let canonical = serde_json::to_string(&Value::Object(signed)).expect("json");
        let signature = encode_base64(self.0.sk.sign(canonical.as_bytes(), None).as_ref());
        let signatures = object.entry("signatures").or_insert_with(|| json!({}));
        let by_user = signatures
            .as_object_mut()
            .expect("signatures")
            .entry(user)
            .or_insert_with(|| json!({}));
        by_user[format!("ed25519:{name}")] = json!(signature);
        Value::Object(object)
    }

    /// Signs as a cross-signing key, whose key ID is its public key.
    fn sign(&self, user: &str, object: &Value) -> Value {
        self.sign_as(user, &self.public(), object)
    }

    /// This key as a cross-signing key of `usage` for `user` (unsigned).
    fn cross_signing(&self, user: &str, usage: &str) -> Value {
        json!({
            "user_id": user,
            "usage": [usage],
            "keys": { format!("ed25519:{}", self.public()): self.public() },
        })
    }
}

/// A user's three cross-signing keys, the self-signing and user-signing ones signed by the
/// master key.
struct CrossSigning {
    user: String,
    master: Key,
    self_signing: Key,
    user_signing: Key,
}

impl CrossSigning {
    fn new(user: &str, seed: u8) -> CrossSigning {
        CrossSigning {
            user: user.to_owned(),
            master: Key::new(seed),
            self_signing: Key::new(seed + 1),
            user_signing: Key::new(seed + 2),
        }
    }

    fn master_key(&self) -> Value {
        self.master.cross_signing(&self.user, "master")
    }

    fn body(&self) -> Value {
        json!({
            "master_key": self.master_key(),
            "self_signing_key": self.master.sign(
                &self.user,
                &self.self_signing.cross_signing(&self.user, "self_signing"),
            ),
            "user_signing_key": self.master.sign(
                &self.user,
                &self.user_signing.cross_signing(&self.user, "user_signing"),
            ),
        })
    }
}

/// A logged-in device with its identity key.
struct Device {
    user: String,
    id: String,
    token: String,
    key: Key,
}

impl Device {
    fn login(server: &Server, user: &str, seed: u8) -> Device {
        let token = common::login_token(server, user, PASSWORD);
        let whoami = ok(server
            .client()
            .get_with(&format!("{V3}/account/whoami"), &token));
        let device = Device {
            user: whoami["user_id"].as_str().expect("user").to_owned(),
            id: whoami["device_id"].as_str().expect("device").to_owned(),
            token,
            key: Key::new(seed),
        };
        ok(post(
            server,
            &device.token,
            &format!("{V3}/keys/upload"),
            &json!({ "device_keys": device.device_keys() }),
        ));
        device
    }

    fn device_keys(&self) -> Value {
        identity_keys(&self.user, &self.id, &self.key)
    }
}

/// A device's identity keys, signed by the device.
fn identity_keys(user: &str, device_id: &str, key: &Key) -> Value {
    key.sign_as(
        user,
        device_id,
        &json!({
            "user_id": user,
            "device_id": device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{device_id}"): format!("curve-{device_id}"),
                format!("ed25519:{device_id}"): key.public(),
            },
        }),
    )
}

fn post(server: &Server, token: &str, path: &str, body: &Value) -> common::http::Response {
    server.client().json("POST", path, Some(token), body)
}

fn upload_signing(server: &Server, token: &str, body: &Value) -> common::http::Response {
    post(
        server,
        token,
        &format!("{V3}/keys/device_signing/upload"),
        body,
    )
}

fn query(server: &Server, token: &str, users: &[&str]) -> Value {
    let wanted: Map<String, Value> = users.iter().map(|u| (u.to_string(), json!([]))).collect();
    ok(post(
        server,
        token,
        &format!("{V3}/keys/query"),
        &json!({ "device_keys": wanted }),
    ))
}

fn password_auth(session: &str) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": "alice" },
        "password": PASSWORD,
        "session": session,
    })
}

#[test]
fn first_upload_is_free_replacing_needs_auth_and_query_shows_who_sees_what() {
    let server = server();
    let alice = Device::login(&server, "alice", 1);
    let bob = Device::login(&server, "bob", 2);
    let keys = CrossSigning::new(&alice.user, 10);

    ok(upload_signing(&server, &alice.token, &keys.body()));
    // The same keys again (a retry after a lost answer): no auth asked.
    ok(upload_signing(&server, &alice.token, &keys.body()));

    let own = query(&server, &alice.token, &[&alice.user]);
    assert_eq!(own["master_keys"][&alice.user], keys.master_key());
    assert_eq!(
        own["self_signing_keys"][&alice.user],
        keys.body()["self_signing_key"]
    );
    assert_eq!(
        own["user_signing_keys"][&alice.user],
        keys.body()["user_signing_key"]
    );
    // Bob sees Alice's master and self-signing keys, never her user-signing key.
    let seen = query(&server, &bob.token, &[&alice.user]);
    assert_eq!(seen["master_keys"][&alice.user], keys.master_key());
    assert!(seen["self_signing_keys"][&alice.user].is_object());
    assert_eq!(seen["user_signing_keys"], json!({}));

    // A new master key needs the password.
    let replacement = CrossSigning::new(&alice.user, 20);
    let challenge = upload_signing(&server, &alice.token, &replacement.body());
    assert_eq!(challenge.status, 401);
    let challenge = challenge.json();
    assert_eq!(
        challenge["flows"],
        json!([{ "stages": ["m.login.password"] }])
    );
    let session = challenge["session"].as_str().expect("session").to_owned();
    assert_eq!(
        query(&server, &bob.token, &[&alice.user])["master_keys"][&alice.user],
        keys.master_key(),
        "nothing replaced before auth"
    );
    let mut body = replacement.body();
    body["auth"] = json!({ "session": session, "password": "wrong", "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": "alice" } });
    assert_eq!(upload_signing(&server, &alice.token, &body).status, 401);
    body["auth"] = password_auth(&session);
    ok(upload_signing(&server, &alice.token, &body));
    assert_eq!(
        query(&server, &bob.token, &[&alice.user])["master_keys"][&alice.user],
        replacement.master_key()
    );

    // Apps of the last years call these under `unstable/`.
    let unstable = post(
        &server,
        &alice.token,
        "/_matrix/client/unstable/keys/device_signing/upload",
        &replacement.body(),
    );
    ok(unstable);
    ok(post(
        &server,
        &alice.token,
        "/_matrix/client/unstable/keys/signatures/upload",
        &json!({}),
    ));
}

#[test]
fn signatures_are_checked_per_key_and_shown_to_those_who_may_see_them() {
    let server = server();
    let alice = Device::login(&server, "alice", 1);
    let bob = Device::login(&server, "bob", 2);
    let alice_keys = CrossSigning::new(&alice.user, 10);
    let bob_keys = CrossSigning::new(&bob.user, 30);
    ok(upload_signing(&server, &alice.token, &alice_keys.body()));
    ok(upload_signing(&server, &bob.token, &bob_keys.body()));
    let ssk = alice_keys.self_signing.public();
    let usk = alice_keys.user_signing.public();
    let master = alice_keys.master.public();
    let bob_master = bob_keys.master.public();

    // Her device by her self-signing key; her master key by her device; Bob's master key by
    // her user-signing key. Plus three bad ones: a forged signature, an unknown device,
    // and a device object that is not the one stored.
    let signed_device = alice_keys
        .self_signing
        .sign(&alice.user, &alice.device_keys());
    let signed_master = alice
        .key
        .sign_as(&alice.user, &alice.id, &alice_keys.master_key());
    let signed_bob = alice_keys
        .user_signing
        .sign(&alice.user, &bob_keys.master_key());
    let forged = Key::new(99).sign_as(&alice.user, &ssk, &alice.device_keys());
    let mut altered = alice.device_keys();
    altered["keys"][format!("curve25519:{}", alice.id)] = json!("another key");
    let altered = alice_keys.self_signing.sign(&alice.user, &altered);
    let answer = ok(post(
        &server,
        &alice.token,
        &format!("{V3}/keys/signatures/upload"),
        &json!({
            alice.user.clone(): { alice.id.clone(): signed_device, master: signed_master },
            bob.user.clone(): { bob_master: signed_bob },
        }),
    ));
    assert_eq!(answer["failures"], json!({}));
    let bad = ok(post(
        &server,
        &alice.token,
        &format!("{V3}/keys/signatures/upload"),
        &json!({ alice.user.clone(): { "NOSUCHDEVICE": forged } }),
    ));
    assert_eq!(
        bad["failures"][&alice.user]["NOSUCHDEVICE"]["errcode"],
        "M_NOT_FOUND"
    );
    let bad = ok(post(
        &server,
        &bob.token,
        &format!("{V3}/keys/signatures/upload"),
        &json!({ bob.user.clone(): {
            bob.id.clone(): Key::new(98).sign_as(&bob.user, &bob_keys.self_signing.public(), &bob.device_keys()),
        } }),
    ));
    assert_eq!(
        bad["failures"][&bob.user][&bob.id]["errcode"],
        "M_INVALID_SIGNATURE"
    );
    let bad = ok(post(
        &server,
        &alice.token,
        &format!("{V3}/keys/signatures/upload"),
        &json!({ alice.user.clone(): { alice.id.clone(): altered } }),
    ));
    assert_eq!(
        bad["failures"][&alice.user][&alice.id]["errcode"],
        "M_INVALID_PARAM"
    );

    // Bob sees Alice's device signed by her self-signing key, and her master key signed by
    // her device; not her signature of his master key, which is hers alone.
    let by_bob = query(&server, &bob.token, &[&alice.user, &bob.user]);
    let device_signatures =
        &by_bob["device_keys"][&alice.user][&alice.id]["signatures"][&alice.user];
    assert!(device_signatures[format!("ed25519:{ssk}")].is_string());
    assert!(device_signatures[format!("ed25519:{}", alice.id)].is_string());
    assert!(
        by_bob["master_keys"][&alice.user]["signatures"][&alice.user]
            [format!("ed25519:{}", alice.id)]
        .is_string()
    );
    assert!(
        by_bob["master_keys"][&bob.user]["signatures"]
            .get(&alice.user)
            .is_none(),
        "a user-signing signature is its signer's only"
    );
    let by_alice = query(&server, &alice.token, &[&bob.user]);
    assert!(
        by_alice["master_keys"][&bob.user]["signatures"][&alice.user][format!("ed25519:{usk}")]
            .is_string()
    );
    // The forged and altered signatures were not stored.
    let device =
        &query(&server, &alice.token, &[&alice.user])["device_keys"][&alice.user][&alice.id];
    assert_eq!(
        device["signatures"][&alice.user].as_object().map(Map::len),
        Some(2),
        "the device's own signature and the self-signing key's"
    );
}

#[test]
fn hostile_uploads_get_the_spec_errors_and_store_nothing() {
    let server = server();
    let alice = Device::login(&server, "alice", 1);
    let bob = Device::login(&server, "bob", 2);
    let keys = CrossSigning::new(&alice.user, 10);
    let body = keys.body();

    let case = |name: &str, body: Value, status: u16, code: &str| {
        let response = upload_signing(&server, &alice.token, &body);
        assert_eq!(
            (response.status, errcode(&response)),
            (status, code.to_owned()),
            "{name}: {}",
            String::from_utf8_lossy(&response.body)
        );
    };
    // A self-signing key without any master key to check it against.
    case(
        "no master key",
        json!({ "self_signing_key": body["self_signing_key"] }),
        400,
        "M_MISSING_PARAM",
    );
    // Keys for another user.
    let bobs = CrossSigning::new(&bob.user, 40);
    case("another user's keys", bobs.body(), 400, "M_INVALID_PARAM");
    // The wrong usage.
    let mut wrong_usage = body.clone();
    wrong_usage["master_key"]["usage"] = json!(["self_signing"]);
    case("wrong usage", wrong_usage, 400, "M_INVALID_PARAM");
    // Two keys in one.
    let mut two = body.clone();
    two["master_key"]["keys"]["ed25519:other"] = json!("other");
    case("two keys", two, 400, "M_INVALID_PARAM");
    // A self-signing key signed by a key that is not the master key.
    let mut unsigned = body.clone();
    unsigned["self_signing_key"] = Key::new(77).sign(
        &alice.user,
        &keys.self_signing.cross_signing(&alice.user, "self_signing"),
    );
    case("not signed by master", unsigned, 400, "M_INVALID_SIGNATURE");
    // A user-signing key with a corrupted signature.
    let mut corrupted = body;
    corrupted["user_signing_key"]["signatures"][&alice.user]
        [format!("ed25519:{}", keys.master.public())] = json!("AAAA");
    case("corrupt signature", corrupted, 400, "M_INVALID_SIGNATURE");
    // Not JSON objects where keys belong.
    case(
        "wrong types",
        json!({ "master_key": "key" }),
        400,
        "M_BAD_JSON",
    );

    let seen = query(&server, &bob.token, &[&alice.user]);
    assert_eq!(seen["master_keys"], json!({}), "nothing stored");
    assert_eq!(seen["self_signing_keys"], json!({}));

    // Signatures by keys one does not have, or of objects that are not keys.
    let answer = ok(post(
        &server,
        &alice.token,
        &format!("{V3}/keys/signatures/upload"),
        &json!({
            alice.user.clone(): { alice.id.clone(): alice.device_keys(), "x": "not an object" },
            "not a user": { "k": {} },
        }),
    ));
    assert_eq!(
        answer["failures"][&alice.user][&alice.id]["errcode"], "M_NOT_FOUND",
        "no self-signing key yet"
    );
    assert_eq!(
        answer["failures"][&alice.user]["x"]["errcode"],
        "M_BAD_JSON"
    );
    assert_eq!(
        answer["failures"]["not a user"]["k"]["errcode"],
        "M_INVALID_PARAM"
    );
}

#[test]
fn a_dehydrated_device_receives_to_device_messages_and_is_replaced() {
    let server = server();
    let alice = Device::login(&server, "alice", 1);
    let bob = Device::login(&server, "bob", 2);
    let versions = ok(server.client().get("/_matrix/client/versions"));
    assert_eq!(versions["unstable_features"]["org.matrix.msc3814"], true);

    let missing = server
        .client()
        .get_with(&format!("{MSC3814}/dehydrated_device"), &alice.token);
    assert_eq!(
        (missing.status, errcode(&missing)),
        (404, "M_NOT_FOUND".to_owned())
    );

    let dehydrated_key = Key::new(50);
    let otk = dehydrated_key.sign_as(&alice.user, "DEHYDRATED1", &json!({ "key": "otk-1" }));
    let put = |device_id: &str, key: &Key, one_time_keys: Value| {
        server.client().json(
            "PUT",
            &format!("{MSC3814}/dehydrated_device"),
            Some(&alice.token),
            &json!({
                "device_id": device_id,
                "device_data": { "algorithm": "m.dehydration.v2", "device_pickle": "opaque" },
                "initial_device_display_name": "Dehydrated device",
                "device_keys": identity_keys(&alice.user, device_id, key),
                "one_time_keys": one_time_keys,
            }),
        )
    };
    assert_eq!(
        ok(put(
            "DEHYDRATED1",
            &dehydrated_key,
            json!({ "signed_curve25519:A1": otk })
        ))["device_id"],
        "DEHYDRATED1"
    );
    let got = ok(server
        .client()
        .get_with(&format!("{MSC3814}/dehydrated_device"), &alice.token));
    assert_eq!(got["device_id"], "DEHYDRATED1");
    assert_eq!(got["device_data"]["device_pickle"], "opaque");

    // Nobody logs in as the dehydrated device, not even with the right password.
    let login = server.client().json(
        "POST",
        "/_matrix/client/v3/login",
        None,
        &json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": "alice" },
            "password": PASSWORD,
            "device_id": "DEHYDRATED1",
        }),
    );
    assert_eq!(
        (login.status, errcode(&login)),
        (403, "M_FORBIDDEN".to_owned())
    );

    // Bob's client sees the device, claims its one-time key and sends it a room key.
    let seen = query(&server, &bob.token, &[&alice.user]);
    assert!(seen["device_keys"][&alice.user]["DEHYDRATED1"].is_object());
    let claimed = ok(post(
        &server,
        &bob.token,
        &format!("{V3}/keys/claim"),
        &json!({ "one_time_keys": { alice.user.clone(): { "DEHYDRATED1": "signed_curve25519" } } }),
    ));
    assert!(
        claimed["one_time_keys"][&alice.user]["DEHYDRATED1"]["signed_curve25519:A1"].is_object()
    );
    ok(server.client().json(
        "PUT",
        &format!("{V3}/sendToDevice/m.room.encrypted/txn1"),
        Some(&bob.token),
        &json!({ "messages": { alice.user.clone(): { "DEHYDRATED1": { "ciphertext": "room key" } } } }),
    ));

    // A new client of Alice's reads the device's messages, a page at a time.
    let events_path = format!("{MSC3814}/dehydrated_device/DEHYDRATED1/events");
    let first = ok(post(&server, &alice.token, &events_path, &json!({})));
    assert_eq!(first["events"].as_array().map(Vec::len), Some(1));
    assert_eq!(first["events"][0]["sender"], bob.user.as_str());
    assert_eq!(first["events"][0]["type"], "m.room.encrypted");
    assert_eq!(first["events"][0]["content"]["ciphertext"], "room key");
    let next = first["next_batch"].as_str().expect("next_batch").to_owned();
    let second = ok(post(
        &server,
        &alice.token,
        &events_path,
        &json!({ "next_batch": next }),
    ));
    assert_eq!(second["events"], json!([]));
    let again = ok(post(
        &server,
        &alice.token,
        &events_path,
        &json!({ "next_batch": next }),
    ));
    assert_eq!(again["events"], json!([]), "acknowledged messages are gone");
    // Another device's messages are not the dehydrated device's to read.
    let other = post(
        &server,
        &alice.token,
        &format!("{MSC3814}/dehydrated_device/{}/events", alice.id),
        &json!({}),
    );
    assert_eq!(other.status, 404);

    // Replacing it deletes the old device and its keys; it never had a token to log in.
    let bad = put("DEHYDRATED2", &Key::new(51), json!({}));
    ok(bad);
    let seen = query(&server, &bob.token, &[&alice.user]);
    assert!(
        seen["device_keys"][&alice.user]
            .get("DEHYDRATED1")
            .is_none()
    );
    assert!(seen["device_keys"][&alice.user]["DEHYDRATED2"].is_object());
    assert_eq!(
        post(&server, &alice.token, &events_path, &json!({})).status,
        404
    );
    // Keys signed by another key than the device's: refused, the old device kept.
    let mut forged = identity_keys(&alice.user, "DEHYDRATED3", &Key::new(52));
    forged["keys"]["ed25519:DEHYDRATED3"] = json!(Key::new(53).public());
    let refused = server.client().json(
        "PUT",
        &format!("{MSC3814}/dehydrated_device"),
        Some(&alice.token),
        &json!({ "device_id": "DEHYDRATED3", "device_data": {}, "device_keys": forged }),
    );
    assert_eq!(refused.status, 400);
    // Naming one of her logged-in devices is refused too.
    let taken = put(&alice.id.clone(), &Key::new(54), json!({}));
    assert_eq!(taken.status, 400);

    let deleted = server.client().json(
        "DELETE",
        &format!("{MSC3814}/dehydrated_device"),
        Some(&alice.token),
        &json!({}),
    );
    assert!(ok(deleted)["device_id"].is_string());
    let gone = server
        .client()
        .get_with(&format!("{MSC3814}/dehydrated_device"), &alice.token);
    assert_eq!(gone.status, 404);
    let devices = ok(server
        .client()
        .get_with(&format!("{V3}/devices"), &alice.token));
    assert_eq!(devices["devices"].as_array().map(Vec::len), Some(1));
}
