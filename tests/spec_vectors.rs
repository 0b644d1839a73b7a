//! The spec's own test vectors (appendices, "Cryptographic test vectors": the key seed
//! `YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1`, server `domain`, key `ed25519:1`), not
//! values our own code made: JSON signing gives exactly the spec's signatures, and an
//! `X-Matrix` request signature (the signature of a JSON object, as "Request
//! Authentication" defines it) is the one an independent Ed25519 implementation (ring,
//! through rustls), checked against the same vectors first, makes from the spec's key over
//! the request object written out here in canonical JSON.

use std::sync::Arc;

use hearth::federation::auth::{RequestToSign, XMatrix, authorization_header};
use hearth::matrix::crypto::{KeyId, SigningKey, decode_base64, encode_base64, sign_json};
use rustls::SignatureScheme;
use rustls::pki_types::PrivatePkcs8KeyDer;
use serde_json::{Value, json};

const SEED: &str = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";
const SERVER: &str = "domain";
/// The spec's signature of `{}`.
const EMPTY_SIGNATURE: &str =
    "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ";
/// The spec's signature of `{"one":1,"two":"Two"}`.
const DATA_SIGNATURE: &str =
    "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw";

fn seed() -> [u8; 32] {
    decode_base64(SEED)
        .expect("base64")
        .try_into()
        .expect("32 bytes")
}

fn spec_key() -> SigningKey {
    SigningKey::from_seed(KeyId::ed25519("1").expect("key id"), seed())
}

/// Ed25519 from ring, sharing no code with ours: the seed in a PKCS#8 v1 document (RFC 8410).
fn independent_signer() -> Arc<dyn rustls::sign::Signer> {
    let mut pkcs8 = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    pkcs8.extend_from_slice(&seed());
    let key = rustls::crypto::ring::sign::any_eddsa_type(&PrivatePkcs8KeyDer::from(pkcs8))
        .expect("an Ed25519 key");
    Arc::from(
        key.choose_scheme(&[SignatureScheme::ED25519])
            .expect("Ed25519"),
    )
}

fn independent_signature(canonical_json: &str) -> String {
    let signature = independent_signer()
        .sign(canonical_json.as_bytes())
        .expect("sign");
    encode_base64(&signature)
}

/// The spec's "signed data" for an object: the object with the signature under
/// `signatures.domain."ed25519:1"`.
fn spec_signed(mut object: Value, signature: &str) -> Value {
    object["signatures"] = json!({ SERVER: { "ed25519:1": signature } });
    object
}

#[test]
fn json_signing_gives_the_specs_signatures() {
    for (object, signature) in [
        (json!({}), EMPTY_SIGNATURE),
        (json!({ "one": 1, "two": "Two" }), DATA_SIGNATURE),
    ] {
        let mut signed = object.as_object().expect("object").clone();
        sign_json(&mut signed, SERVER, &spec_key()).expect("sign");
        assert_eq!(Value::Object(signed), spec_signed(object, signature));
    }
}

#[test]
fn the_independent_signer_agrees_with_the_spec() {
    assert_eq!(independent_signature("{}"), EMPTY_SIGNATURE);
    assert_eq!(
        independent_signature(r#"{"one":1,"two":"Two"}"#),
        DATA_SIGNATURE
    );
}

#[test]
fn request_signatures_are_the_signature_of_the_request_object() {
    let uri = "/_matrix/federation/v1/send/1?x=y";
    let content = json!({ "pdus": [], "origin": SERVER, "origin_server_ts": 1 });
    // The object of "Request Authentication", in canonical JSON (keys sorted, no spaces),
    // written by hand.
    let canonical = format!(
        r#"{{"content":{{"origin":"{SERVER}","origin_server_ts":1,"pdus":[]}},"destination":"dest.example:8448","method":"PUT","origin":"{SERVER}","uri":"{uri}"}}"#
    );
    let expected = independent_signature(&canonical);
    let request = RequestToSign {
        method: "PUT",
        uri,
        origin: SERVER,
        destination: "dest.example:8448",
        content: Some(&content),
    };
    let header = authorization_header(&request, &spec_key()).expect("sign");
    assert_eq!(
        header,
        format!(
            r#"X-Matrix origin="{SERVER}",destination="dest.example:8448",key="ed25519:1",sig="{expected}""#
        )
    );

    // A header made by the independent signer is accepted, for that request only.
    let public = spec_key().public_key();
    let parsed = XMatrix::parse(&header)
        .expect("well formed")
        .expect("X-Matrix");
    parsed
        .verify("PUT", uri, "dest.example:8448", Some(&content), &public)
        .expect("the independent signature verifies");
    for (method, other_uri, destination, body) in [
        ("GET", uri, "dest.example:8448", Some(&content)),
        (
            "PUT",
            "/_matrix/federation/v1/send/2?x=y",
            "dest.example:8448",
            Some(&content),
        ),
        ("PUT", uri, "other.example", Some(&content)),
        ("PUT", uri, "dest.example:8448", None),
    ] {
        assert!(
            parsed
                .verify(method, other_uri, destination, body, &public)
                .is_err(),
            "{method} {other_uri} to {destination}"
        );
    }

    // A GET has no content: none is signed.
    let canonical = r#"{"destination":"dest.example:8448","method":"GET","origin":"domain","uri":"/_matrix/key/v2/query/x"}"#;
    let request = RequestToSign {
        method: "GET",
        uri: "/_matrix/key/v2/query/x",
        origin: SERVER,
        destination: "dest.example:8448",
        content: None,
    };
    let header = authorization_header(&request, &spec_key()).expect("sign");
    assert!(
        header.ends_with(&format!("sig=\"{}\"", independent_signature(canonical))),
        "{header}"
    );
}
