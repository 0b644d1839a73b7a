//! The server's ed25519 signing key and JSON signatures (spec appendix, "Signing JSON").
//!
//! The key file holds one line, `ed25519 <version> <unpadded base64 seed>`, the format
//! Synapse uses too, so a key can move between servers when a domain changes software.

use std::fmt;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use ed25519_compact::{KeyPair, PublicKey, Seed, Signature};
use serde_json::{Map, Value};

use super::{decode_base64, encode_base64, random_bytes};
use crate::matrix::canonical_json::{self, CanonicalJsonError};

/// A key identifier such as `ed25519:a_Xy3k`: algorithm and version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// An `ed25519` key id with the given version, which must be `[a-zA-Z0-9_]+`.
    pub fn ed25519(version: &str) -> Option<KeyId> {
        let valid = !version.is_empty()
            && version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        valid.then(|| KeyId(format!("ed25519:{version}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after `ed25519:`.
    pub(crate) fn version(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, version)| version)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Our signing key: its id and the ed25519 key pair. Cloned once, for the federation client.
#[derive(Clone)]
pub struct SigningKey {
    key_id: KeyId,
    keypair: KeyPair,
}

impl fmt::Debug for SigningKey {
    /// Never prints the secret half.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .field("public_key", &self.public_key_base64())
            .finish()
    }
}

impl SigningKey {
    pub fn from_seed(key_id: KeyId, seed: [u8; 32]) -> SigningKey {
        SigningKey {
            key_id,
            keypair: KeyPair::from_seed(Seed::new(seed)),
        }
    }

    /// A fresh key with a random version such as `a_Xy3k`.
    pub(crate) fn generate() -> SigningKey {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let version: String = random_bytes::<6>()
            .iter()
            .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
            .collect();
        let key_id = KeyId::ed25519(&format!("a_{version}")).expect("alphanumeric version");
        SigningKey::from_seed(key_id, random_bytes::<32>())
    }

    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    pub fn public_key(&self) -> [u8; 32] {
        *self.keypair.pk
    }

    pub fn public_key_base64(&self) -> String {
        encode_base64(self.keypair.pk.as_ref())
    }

    /// Signs `message`. Ed25519 signatures are deterministic: no noise is mixed in, so the
    /// spec's test vectors reproduce exactly.
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        *self.keypair.sk.sign(message, None)
    }

    /// Parses the key file's single line.
    pub fn parse(text: &str) -> Result<SigningKey, String> {
        let mut parts = text.split_whitespace();
        let (Some(algorithm), Some(version), Some(seed), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("expected one line: `ed25519 <version> <base64 seed>`".to_owned());
        };
        if algorithm != "ed25519" {
            return Err(format!("unsupported key algorithm `{algorithm}`"));
        }
        let key_id =
            KeyId::ed25519(version).ok_or_else(|| format!("invalid key version `{version}`"))?;
        let seed: [u8; 32] = decode_base64(seed)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or("the seed must be 32 bytes of base64")?;
        Ok(SigningKey::from_seed(key_id, seed))
    }

    /// The key file's line.
    pub(crate) fn to_file_line(&self) -> String {
        format!(
            "ed25519 {} {}\n",
            self.key_id.version(),
            encode_base64(self.keypair.sk.seed().as_ref())
        )
    }

    /// Reads the key at `path`, refusing a file that others can read.
    pub fn load(path: &Path) -> Result<SigningKey, String> {
        let metadata = std::fs::metadata(path).map_err(|err| err.to_string())?;
        if metadata.permissions().mode() & 0o077 != 0 {
            return Err(format!(
                "the file is readable by other users (mode {:o}); run `chmod 600 {}`",
                metadata.permissions().mode() & 0o777,
                path.display()
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|err| err.to_string())?;
        SigningKey::parse(&text)
    }

    /// Writes the key to a new file with mode 0600, atomically; an existing file is never
    /// overwritten.
    pub(crate) fn write_new(&self, path: &Path) -> std::io::Result<()> {
        crate::storage::files::write_new(path, self.to_file_line().as_bytes(), 0o600)
    }
}

/// Signs a JSON object in place: the signature covers its canonical form without
/// `signatures` and `unsigned`, and is added under `signatures.<server_name>.<key_id>`,
/// keeping any signatures already there.
pub fn sign_json(
    object: &mut Map<String, Value>,
    server_name: &str,
    key: &SigningKey,
) -> Result<(), CanonicalJsonError> {
    let signature = encode_base64(&key.sign(signed_bytes(object)?.as_bytes()));
    let signatures = object
        .entry("signatures")
        .or_insert_with(|| Value::Object(Map::new()));
    if !signatures.is_object() {
        *signatures = Value::Object(Map::new());
    }
    let by_server = signatures
        .as_object_mut()
        .expect("just made an object")
        .entry(server_name)
        .or_insert_with(|| Value::Object(Map::new()));
    if !by_server.is_object() {
        *by_server = Value::Object(Map::new());
    }
    by_server
        .as_object_mut()
        .expect("just made an object")
        .insert(key.key_id.as_str().to_owned(), Value::String(signature));
    Ok(())
}

/// Why a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no signature by {server_name} with key {key_id}")]
    Missing { server_name: String, key_id: String },
    #[error("the signature is not valid base64 of 64 bytes")]
    Malformed,
    #[error("the public key is not 32 bytes")]
    BadPublicKey,
    #[error("the object cannot be encoded as canonical JSON: {0}")]
    NotCanonical(String),
    #[error("the signature does not match")]
    Mismatch,
}

/// Checks the signature of `server_name` with `key_id` on a JSON object.
pub fn verify_json(
    object: &Map<String, Value>,
    server_name: &str,
    key_id: &str,
    public_key: &[u8],
) -> Result<(), VerifyError> {
    let signature = object
        .get("signatures")
        .and_then(|signatures| signatures.get(server_name))
        .and_then(|by_server| by_server.get(key_id))
        .and_then(Value::as_str)
        .ok_or_else(|| VerifyError::Missing {
            server_name: server_name.to_owned(),
            key_id: key_id.to_owned(),
        })?;
    let message = signed_bytes(object).map_err(|err| VerifyError::NotCanonical(err.to_string()))?;
    verify_signature(message.as_bytes(), signature, public_key)
}

/// Checks an unpadded-base64 ed25519 `signature` over `message`, bytes the caller already
/// made canonical (a request body too large to hold as a tree is, in
/// [`crate::matrix::canonical_bytes`]).
pub fn verify_signature(
    message: &[u8],
    signature: &str,
    public_key: &[u8],
) -> Result<(), VerifyError> {
    let signature = decode_base64(signature)
        .and_then(|bytes| Signature::from_slice(&bytes).ok())
        .ok_or(VerifyError::Malformed)?;
    let public_key = PublicKey::from_slice(public_key).map_err(|_| VerifyError::BadPublicKey)?;
    public_key
        .verify(message, &signature)
        .map_err(|_| VerifyError::Mismatch)
}

/// The canonical JSON that a signature covers: the object without `signatures` and `unsigned`.
fn signed_bytes(object: &Map<String, Value>) -> Result<String, CanonicalJsonError> {
    let mut canonical = canonical_json::CanonicalJsonObject::new();
    for (key, value) in object {
        if key != "signatures" && key != "unsigned" {
            canonical.insert(key.clone(), canonical_json::from_json(value.clone())?);
        }
    }
    Ok(canonical_json::CanonicalJsonValue::Object(canonical).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The seed and key id of the spec's "Cryptographic Test Vectors".
    fn spec_key() -> SigningKey {
        let seed = decode_base64("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1").expect("base64");
        let key_id = KeyId::ed25519("1").expect("valid");
        SigningKey::from_seed(key_id, seed.try_into().expect("32 bytes"))
    }

    fn object(value: &Value) -> Map<String, Value> {
        value.as_object().expect("object").clone()
    }

    #[test]
    fn spec_vector_empty_object() {
        let mut signed = object(&json!({}));
        sign_json(&mut signed, "domain", &spec_key()).expect("sign");
        assert_eq!(
            Value::Object(signed),
            json!({ "signatures": { "domain": { "ed25519:1":
                "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ" } } })
        );
    }

    #[test]
    fn spec_vector_object_with_data() {
        let mut signed = object(&json!({ "one": 1, "two": "Two" }));
        sign_json(&mut signed, "domain", &spec_key()).expect("sign");
        assert_eq!(
            signed["signatures"]["domain"]["ed25519:1"],
            "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
        );
    }

    #[test]
    fn signatures_and_unsigned_are_not_covered() {
        let key = spec_key();
        let mut signed = object(&json!({ "one": 1, "unsigned": { "age": 5 } }));
        sign_json(&mut signed, "domain", &key).expect("sign");
        signed.insert("unsigned".into(), json!({ "age": 99 }));
        let public = key.public_key();
        verify_json(&signed, "domain", "ed25519:1", &public).expect("still valid");
    }

    #[test]
    fn tampering_is_detected() {
        let key = spec_key();
        let mut signed = object(&json!({ "one": 1 }));
        sign_json(&mut signed, "domain", &key).expect("sign");
        signed.insert("one".into(), json!(2));
        let result = verify_json(&signed, "domain", "ed25519:1", &key.public_key());
        assert_eq!(result, Err(VerifyError::Mismatch));
    }

    #[test]
    fn missing_or_malformed_signatures_are_reported() {
        let key = spec_key();
        let unsigned = object(&json!({ "one": 1 }));
        assert!(matches!(
            verify_json(&unsigned, "domain", "ed25519:1", &key.public_key()),
            Err(VerifyError::Missing { .. })
        ));
        let garbled = object(&json!({ "signatures": { "domain": { "ed25519:1": "!!" } } }));
        assert_eq!(
            verify_json(&garbled, "domain", "ed25519:1", &key.public_key()),
            Err(VerifyError::Malformed)
        );
    }

    #[test]
    fn other_servers_signatures_are_kept() {
        let mut signed = object(&json!({ "signatures": { "other.org": { "ed25519:x": "abc" } } }));
        sign_json(&mut signed, "domain", &spec_key()).expect("sign");
        assert_eq!(signed["signatures"]["other.org"]["ed25519:x"], "abc");
        assert!(signed["signatures"]["domain"]["ed25519:1"].is_string());
    }

    #[test]
    fn key_file_round_trips() {
        let key = SigningKey::generate();
        assert!(key.key_id().as_str().starts_with("ed25519:a_"));
        let parsed = SigningKey::parse(&key.to_file_line()).expect("parse");
        assert_eq!(parsed.key_id(), key.key_id());
        assert_eq!(parsed.public_key(), key.public_key());
    }

    #[test]
    fn key_file_errors_are_clear() {
        assert!(SigningKey::parse("").is_err());
        assert!(SigningKey::parse("rsa 1 AAAA").is_err());
        assert!(SigningKey::parse("ed25519 bad-version AAAA").is_err());
        assert!(SigningKey::parse("ed25519 1 AAAA").is_err());
    }

    #[test]
    fn key_file_is_private_and_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys/signing.key");
        let key = SigningKey::generate();
        key.write_new(&path).expect("write");
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(SigningKey::generate().write_new(&path).is_err());
        let loaded = SigningKey::load(&path).expect("load");
        assert_eq!(loaded.public_key(), key.public_key());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(
            SigningKey::load(&path)
                .expect_err("too open")
                .contains("chmod 600")
        );
    }
}
