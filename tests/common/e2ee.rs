//! A device with real ed25519 keys, on Hearth or Synapse, for the end-to-end encryption
//! tests that run against both (`synapse_e2ee_*`): it signs and uploads its keys, queries
//! another user's and claims their one-time keys.

use std::net::SocketAddr;

use hearth::matrix::crypto::{KeyId, SigningKey, sign_json};
use serde_json::{Value, json};

use super::http::Client;

pub fn call(address: SocketAddr, method: &str, path: &str, token: &str, body: &Value) -> Value {
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
pub struct Device {
    pub address: SocketAddr,
    pub token: String,
    pub user: String,
    pub id: String,
    pub key: SigningKey,
}

impl Device {
    pub fn new(address: SocketAddr, token: String, seed: u8) -> Device {
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

    pub fn sign(&self, value: Value) -> Value {
        let Value::Object(mut object) = value else {
            panic!("object")
        };
        sign_json(&mut object, &self.user, &self.key).expect("sign");
        Value::Object(object)
    }

    /// Uploads signed identity keys and one signed one-time key, `OTK`.
    pub fn upload(&self) {
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
    pub fn query(&self, other: &Device) -> Value {
        call(
            self.address,
            "POST",
            "/_matrix/client/v3/keys/query",
            &self.token,
            &json!({ "device_keys": { &other.user: [] }, "timeout": 20000 }),
        )
    }

    pub fn claim(&self, other: &Device) -> Value {
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

    pub fn ed25519(&self) -> String {
        self.key.public_key_base64()
    }
}
