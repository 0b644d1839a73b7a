//! Two (or three) real Hearth processes federating over TLS on loopback, with a CA the test
//! makes and each server trusts through `federation.extra_ca_file`: fetching keys directly
//! and through a notary, and `X-Matrix` signed requests accepted or refused as the spec says.

mod common;

use common::federation::{Pair, start, write_certificates};
use common::{Server, errcode, ok, query_encode};
use hearth::federation::auth::{RequestToSign, authorization_header};
use hearth::matrix::crypto::{KeyId, SigningKey, verify_json};
use serde_json::{Value, json};

/// The keys a server publishes, asked over plain HTTP by the test.
fn published_keys(server: &Server) -> Value {
    ok(server.client().get("/_matrix/key/v2/server"))
}

/// Checks that `answer` carries a valid signature of `signer`, made with a key `signer`
/// publishes in `signer_keys`.
fn assert_signed_by(answer: &Value, signer: &str, signer_keys: &Value) {
    let object = answer.as_object().expect("object");
    let keys = signer_keys["verify_keys"].as_object().expect("verify keys");
    let valid = keys.iter().any(|(key_id, key)| {
        let public =
            hearth::matrix::crypto::decode_base64(key["key"].as_str().expect("key")).expect("b64");
        verify_json(object, signer, key_id, &public).is_ok()
    });
    assert!(valid, "no valid signature of {signer} on {answer}");
}

#[test]
fn keys_are_fetched_directly_and_through_a_notary() {
    let certificates = tempfile::tempdir().expect("tempdir");
    write_certificates(certificates.path());
    // An IP literal (discovery step 1) and host names with ports (step 2).
    let b = start(certificates.path(), "127.0.0.1", &[], &[]);
    let c = start(certificates.path(), "localhost", &[], &[]);
    let a = start(certificates.path(), "localhost", &[&b.name], &["alice"]);
    let (name_a, name_b, name_c) = (a.name.clone(), b.name.clone(), c.name.clone());
    let (keys_a, keys_b, keys_c) = (published_keys(&a), published_keys(&b), published_keys(&c));

    // Directly: A fetches B's keys from B and vouches for them.
    let answer = ok(a.client().get(&format!("/_matrix/key/v2/query/{name_b}")));
    let vouched = &answer["server_keys"][0];
    assert_eq!(vouched["server_name"], name_b.as_str());
    assert_eq!(vouched["verify_keys"], keys_b["verify_keys"]);
    assert_signed_by(vouched, &name_b, &keys_b);
    assert_signed_by(vouched, &name_a, &keys_a);

    // B learns C's keys as a notary (directly from C).
    let answer = ok(b.client().get(&format!("/_matrix/key/v2/query/{name_c}")));
    assert_eq!(
        answer["server_keys"][0]["verify_keys"],
        keys_c["verify_keys"]
    );

    // C signs a request to A (the test holds C's key). A cannot reach C for its key, so it
    // asks its notary B, checks B's and C's signatures, and accepts the request.
    let key_c = SigningKey::load(&c.dir.join("data/signing.key")).expect("C's key");
    drop(c);
    let path = format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        query_encode(&format!("@alice:{name_a}"))
    );
    let request = RequestToSign {
        method: "GET",
        uri: &path,
        origin: &name_c,
        destination: &name_a,
        content: None,
    };
    let signed = authorization_header(&request, &key_c).expect("sign");
    let response = profile_query(&a, &path, Some(&signed));
    assert_eq!(response.status, 200, "{}", a.log_text());

    // A now vouches for C's keys as a notary too: C's and A's signatures. B's is not kept:
    // only the signed fields and the server's own signatures are (issue 10, bounded keys).
    let query = json!({ "server_keys": { &name_c: {} } });
    let answer = ok(a
        .client()
        .json("POST", "/_matrix/key/v2/query", None, &query));
    let vouched = &answer["server_keys"][0];
    assert_eq!(vouched["verify_keys"], keys_c["verify_keys"]);
    assert_signed_by(vouched, &name_c, &keys_c);
    assert_signed_by(vouched, &name_a, &keys_a);
    assert!(vouched["signatures"].get(&name_b).is_none(), "{vouched}");

    // Our own keys, as a notary, are what we publish.
    let own = ok(a.client().get(&format!("/_matrix/key/v2/query/{name_a}")));
    assert_eq!(own["server_keys"][0]["verify_keys"], keys_a["verify_keys"]);

    // Nobody knows a server that does not exist: an empty list, not an error.
    let unknown = ok(a.client().get("/_matrix/key/v2/query/127.0.0.1:1"));
    assert_eq!(unknown["server_keys"], json!([]));
}

/// Sends a profile query to `server` (named `destination`) with `authorization`, if any.
fn profile_query(
    server: &Server,
    path: &str,
    authorization: Option<&str>,
) -> common::http::Response {
    let headers: Vec<(&str, &str)> = authorization
        .map(|value| ("Authorization", value))
        .into_iter()
        .collect();
    server
        .client()
        .request("GET", path, &headers, None)
        .expect("request")
}

#[test]
fn signed_requests_are_accepted_and_forgeries_refused() {
    let Pair {
        a,
        b,
        name_a,
        name_b,
        ..
    } = Pair::start_on(("localhost", &[]), ("127.0.0.1", &["alice"]));
    let key_a = SigningKey::load(&a.dir.join("data/signing.key")).expect("A's key");
    let path = format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        query_encode(&format!("@alice:{name_b}"))
    );
    let sign = |key: &SigningKey, destination: &str, uri: &str| {
        let request = RequestToSign {
            method: "GET",
            uri,
            origin: &name_a,
            destination,
            content: None,
        };
        authorization_header(&request, key).expect("sign")
    };

    // Signed by A for B: B fetches A's key over TLS and accepts.
    let signed = sign(&key_a, &name_b, &path);
    let response = profile_query(&b, &path, Some(&signed));
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert!(response.json().is_object());

    let refused = |authorization: Option<&str>, path: &str| {
        let response = profile_query(&b, path, authorization);
        assert_eq!(
            response.status,
            401,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        assert_eq!(errcode(&response), "M_UNAUTHORIZED");
    };
    // No header, a malformed one, a bearer token.
    refused(None, &path);
    refused(Some("X-Matrix origin="), &path);
    refused(Some("Bearer abc"), &path);
    // Signed for another server, or for another request.
    refused(Some(&sign(&key_a, "other.example", &path)), &path);
    refused(Some(&signed), &format!("{path}&field=displayname"));
    // A forgery: the right key id, another key.
    let impostor = SigningKey::from_seed(key_a.key_id().clone(), [42; 32]);
    refused(Some(&sign(&impostor, &name_b, &path)), &path);
    // A key A never published.
    let unknown = SigningKey::from_seed(KeyId::ed25519("unknown").expect("id"), [43; 32]);
    refused(Some(&sign(&unknown, &name_b, &path)), &path);
    // A claims to be a server that does not exist.
    let ghost = RequestToSign {
        method: "GET",
        uri: &path,
        origin: "127.0.0.1:1",
        destination: &name_b,
        content: None,
    };
    refused(
        Some(&authorization_header(&ghost, &key_a).expect("sign")),
        &path,
    );

    // The valid request still works after all that.
    assert_eq!(profile_query(&b, &path, Some(&signed)).status, 200);
}
