//! The HTTP surface of the foundation: discovery endpoints, our signed key, and the JSON
//! error answers every client gets for unknown routes, wrong methods and oversized bodies.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Server, test_config};
use hearth::matrix::crypto::{decode_base64, verify_json};

#[test]
fn client_versions_lists_only_what_is_implemented() {
    let server = Server::start(&test_config(""));
    let response = server.client().get("/_matrix/client/versions");
    assert_eq!(response.status, 200);
    let json = response.json();
    // The spec versions Hearth claims, written out here (not the handler's own constant,
    // which a test could only agree with): each name as the spec's "Specification
    // versions" gives it (`vX.Y`), from v1.1 to v1.19. Claiming one more is a decision to
    // make here, with the features it needs. The r0 releases come first, as Synapse lists
    // them: their paths are served (issue 13).
    let claimed = serde_json::json!([
        "r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0", "r0.6.1", "v1.1",
        "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12",
        "v1.13", "v1.14", "v1.15", "v1.16", "v1.17", "v1.18", "v1.19"
    ]);
    assert_eq!(json["versions"], claimed);
    assert!(json["unstable_features"].is_object());
    assert_eq!(response.header("content-type"), Some("application/json"));
}

#[test]
fn federation_version_names_the_software() {
    let server = Server::start(&test_config(""));
    let json = server.client().get("/_matrix/federation/v1/version").json();
    assert_eq!(json["server"]["name"], "Hearth");
    assert_eq!(json["server"]["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn unknown_routes_are_unrecognized_json() {
    let server = Server::start(&test_config(""));
    let mut client = server.client();
    for path in [
        "/",
        "/_matrix/client/v3/nonexistent",
        "/_matrix/client/versions/extra",
        "/../../etc/passwd",
    ] {
        let response = client.get(path);
        assert_eq!(response.status, 404, "{path}");
        assert_eq!(response.json()["errcode"], "M_UNRECOGNIZED", "{path}");
    }
}

#[test]
fn wrong_methods_are_405_unrecognized() {
    let server = Server::start(&test_config(""));
    let mut client = server.client();
    for (method, path) in [
        ("POST", "/_matrix/client/versions"),
        ("DELETE", "/_matrix/key/v2/server"),
        ("PUT", "/_matrix/federation/v1/version"),
        ("POST", "/.well-known/matrix/client"),
    ] {
        let response = client
            .request(method, path, &[], Some(b"{}"))
            .expect("request");
        assert_eq!(response.status, 405, "{method} {path}");
        assert_eq!(response.json()["errcode"], "M_UNRECOGNIZED");
    }
}

#[test]
fn method_not_allowed_says_what_is_allowed_and_head_works() {
    let server = Server::start(&test_config(""));
    let mut client = server.client();
    let response = client
        .request("PUT", "/_matrix/client/versions", &[], Some(b"{}"))
        .expect("request");
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("GET, HEAD"));
    let head = client
        .request("HEAD", "/_matrix/client/versions", &[], None)
        .expect("HEAD");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

#[test]
fn federation_endpoints_are_absent_when_federation_is_disabled() {
    let server = Server::start(&test_config("[federation]\nenabled = false\n"));
    let mut client = server.client();
    for path in ["/_matrix/federation/v1/version", "/_matrix/key/v2/server"] {
        let response = client.get(path);
        assert_eq!(response.status, 404, "{path}");
        assert_eq!(response.json()["errcode"], "M_UNRECOGNIZED");
    }
    assert_eq!(client.get("/_matrix/client/versions").status, 200);
}

#[test]
fn cors_headers_on_every_answer_and_preflight() {
    let server = Server::start(&test_config(""));
    let mut client = server.client();
    for path in ["/_matrix/client/versions", "/no/such/route"] {
        let response = client.get(path);
        assert_eq!(
            response.header("access-control-allow-origin"),
            Some("*"),
            "{path}"
        );
        let methods = response
            .header("access-control-allow-methods")
            .expect("methods");
        for method in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
            assert!(methods.contains(method), "{methods}");
        }
        let headers = response
            .header("access-control-allow-headers")
            .expect("headers");
        assert!(headers.contains("Authorization") && headers.contains("Content-Type"));
    }
    let preflight = client
        .request(
            "OPTIONS",
            "/_matrix/client/v3/login",
            &[
                ("Origin", "https://app.element.io"),
                ("Access-Control-Request-Method", "POST"),
            ],
            None,
        )
        .expect("preflight");
    assert!(preflight.status == 204 || preflight.status == 200);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
}

#[test]
fn bodies_over_the_limit_are_refused_before_reading() {
    let server = Server::start(&test_config("[limits]\nmax_request_body_bytes = 2048\n"));
    let mut client = server.client();
    let response = client
        .request(
            "POST",
            "/_matrix/client/versions",
            &[("Content-Type", "application/json")],
            Some(&vec![b' '; 4096]),
        )
        .expect("request");
    assert_eq!(response.status, 413);
    assert_eq!(response.json()["errcode"], "M_TOO_LARGE");
    // The server is unharmed.
    assert_eq!(server.client().get("/_matrix/client/versions").status, 200);
}

#[test]
fn garbage_requests_get_an_answer_not_a_crash() {
    use std::io::{Read as _, Write as _};
    let server = Server::start(&test_config(""));
    let mut stream = std::net::TcpStream::connect(server.address("http")).expect("connect");
    stream
        .write_all(b"\x00\x01NOT HTTP AT ALL\r\n\r\n")
        .expect("write");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert_eq!(server.client().get("/_matrix/client/versions").status, 200);
}

#[test]
fn server_key_is_self_signed_and_verifies() {
    let server = Server::start(&test_config(""));
    let json = server.client().get("/_matrix/key/v2/server").json();
    assert_eq!(json["server_name"], "localhost");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    let now_ms = u64::try_from(now_ms).expect("milliseconds fit in u64");
    let valid_until = json["valid_until_ts"].as_u64().expect("valid_until_ts");
    assert!(
        valid_until > now_ms + 3_600_000,
        "valid for at least an hour"
    );
    assert!(json["old_verify_keys"].is_object());
    let keys = json["verify_keys"].as_object().expect("verify_keys");
    assert_eq!(keys.len(), 1);
    let (key_id, key) = keys.iter().next().expect("a key");
    assert!(key_id.starts_with("ed25519:"));
    let public_key = decode_base64(key["key"].as_str().expect("key")).expect("base64");
    verify_json(
        json.as_object().expect("object"),
        "localhost",
        key_id,
        &public_key,
    )
    .expect("signature verifies");

    // The same key on disk as served, and stable across requests.
    let again = server.client().get("/_matrix/key/v2/server").json();
    assert_eq!(again["verify_keys"], json["verify_keys"]);
}

/// Verifies the key response with Python's `cryptography`, an Ed25519 implementation that
/// shares no code with ours. The test command installs it in a virtualenv and points
/// `HEARTH_TEST_PYTHON` at it; CI insists on it.
#[test]
fn server_key_verifies_with_an_independent_implementation() {
    let python = std::env::var("HEARTH_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let has_cryptography = common::succeeds_within(
        Command::new(&python).args(["-c", "import cryptography"]),
        Duration::from_secs(60),
    );
    if !has_cryptography {
        assert!(
            std::env::var_os("CI").is_none() && std::env::var_os("HEARTH_TEST_PYTHON").is_none(),
            "{python} lacks the `cryptography` package: run the tests with scripts/test"
        );
        eprintln!("SKIPPED: no Python `cryptography`; scripts/test installs it");
        return;
    }
    let server = Server::start(&test_config(""));
    let url = format!("http://{}/_matrix/key/v2/server", server.address("http"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/verify_server_key.py");
    let output = common::output_within(
        Command::new(&python).args([script, &url, "localhost"]),
        Duration::from_secs(60),
    );
    assert!(
        output.status.success(),
        "independent verification failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn well_known_is_404_until_configured() {
    let server = Server::start(&test_config(""));
    let mut client = server.client();
    for path in ["/.well-known/matrix/client", "/.well-known/matrix/server"] {
        let response = client.get(path);
        assert_eq!(response.status, 404, "{path}");
        assert_eq!(response.json()["errcode"], "M_NOT_FOUND");
    }
}

#[test]
fn well_known_delegates_as_configured() {
    let server = Server::start(&test_config(
        "[well_known]\nclient = \"https://matrix.example.org\"\nserver = \"matrix.example.org:443\"\n",
    ));
    let mut client = server.client();
    let response = client.get("/.well-known/matrix/client");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        response.json()["m.homeserver"]["base_url"],
        "https://matrix.example.org"
    );
    let response = client.get("/.well-known/matrix/server");
    assert_eq!(response.json()["m.server"], "matrix.example.org:443");
}

#[test]
fn many_listeners_serve_the_same_server() {
    let server = Server::start(&test_config("[[listeners]]\naddress = \"127.0.0.1:0\"\n"));
    assert_eq!(server.listeners.len(), 2);
    for (_, address) in &server.listeners {
        let response = common::http::Client::plain(*address).get("/_matrix/client/versions");
        assert_eq!(response.status, 200);
    }
}
