//! Calls: `/voip/turnServer` with coturn's shared-secret credentials and with a static
//! user, the spec's empty answer when nothing is configured, and the MatrixRTC (MSC4143)
//! LiveKit transports, at their endpoint and in `/.well-known/matrix/client`.

mod common;

use base64::Engine as _;
use common::{Server, login_token, ok, test_config};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";
const TURN_SERVER: &str = "/_matrix/client/v3/voip/turnServer";
const TRANSPORTS: &str = "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports";

fn start(voip: &str) -> (Server, String) {
    let config = test_config(&format!(
        "[well_known]\nclient = \"https://matrix.example.org\"\n\n[voip]\n{voip}"
    ));
    let server = Server::start_with_users(&config, &[("alice", PASSWORD)]);
    let token = login_token(&server, "alice", PASSWORD);
    (server, token)
}

fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[test]
fn shared_secret_gives_coturn_rest_credentials() {
    let (server, token) = start(
        "turn_uris = [\"turn:turn.example.org:3478?transport=udp\"]\n\
         turn_shared_secret = \"s3cret\"\nturn_ttl_seconds = 3600\n",
    );
    let answer = ok(server.client().get_with(TURN_SERVER, &token));
    assert_eq!(answer["ttl"], 3600);
    assert_eq!(
        answer["uris"],
        json!(["turn:turn.example.org:3478?transport=udp"])
    );
    let username = answer["username"].as_str().expect("username");
    let (expiry, user) = username.split_once(':').expect("<expiry>:<user>");
    assert_eq!(user, "@alice:localhost");
    let expiry: u64 = expiry.parse().expect("a unix time");
    let expected = now_seconds() + 3600;
    assert!(expiry.abs_diff(expected) < 60, "{expiry} vs {expected}");
    // What coturn computes from its static-auth-secret.
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"s3cret");
    let tag = ring::hmac::sign(&key, username.as_bytes());
    assert_eq!(
        answer["password"],
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    );
    // Only for users: no token, no credentials.
    assert_eq!(server.client().get(TURN_SERVER).status, 401);
    // The secret never shows in the effective config.
    let config = std::fs::read_to_string(server.dir.join("hearth.toml")).expect("config");
    let shown = common::hearth(
        &server.dir,
        &["check-config", "--config", "hearth.toml"],
        "",
    );
    assert!(config.contains("s3cret"));
    assert!(!String::from_utf8_lossy(&shown.stdout).contains("s3cret"));
}

#[test]
fn static_credentials_and_no_rtc_transport() {
    let (server, token) = start(
        "turn_uris = [\"turns:turn.example.org:5349\"]\n\
         turn_username = \"family\"\nturn_password = \"calls\"\n",
    );
    let answer = ok(server.client().get_with(TURN_SERVER, &token));
    assert_eq!(answer["username"], "family");
    assert_eq!(answer["password"], "calls");
    assert_eq!(answer["uris"], json!(["turns:turn.example.org:5349"]));
    assert_eq!(answer["ttl"], 86400);
    let transports = ok(server.client().get_with(TRANSPORTS, &token));
    assert_eq!(transports, json!({ "rtc_transports": [] }));
    let well_known = ok(server.client().get("/.well-known/matrix/client"));
    assert!(well_known.get("org.matrix.msc4143.rtc_foci").is_none());
}

#[test]
fn nothing_configured_is_an_empty_answer() {
    let (server, token) = start("");
    assert_eq!(ok(server.client().get_with(TURN_SERVER, &token)), json!({}));
}

#[test]
fn livekit_is_advertised_for_element_call() {
    let (server, token) = start("livekit_url = \"https://livekit-jwt.example.org\"\n");
    let livekit = json!([{
        "type": "livekit",
        "livekit_service_url": "https://livekit-jwt.example.org",
    }]);
    let transports = ok(server.client().get_with(TRANSPORTS, &token));
    assert_eq!(transports["rtc_transports"], livekit);
    assert_eq!(server.client().get(TRANSPORTS).status, 401);
    let well_known: Value = ok(server.client().get("/.well-known/matrix/client"));
    assert_eq!(well_known["org.matrix.msc4143.rtc_foci"], livekit);
    assert_eq!(
        well_known["m.homeserver"]["base_url"],
        "https://matrix.example.org"
    );
}

#[test]
fn contradictory_turn_settings_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("hearth.toml"),
        test_config(
            "[voip]\nturn_uris = [\"turn:t.example.org\"]\nturn_shared_secret = \"a\"\nturn_username = \"b\"\nturn_password = \"c\"\n",
        ),
    )
    .expect("write");
    let output = common::hearth(dir.path(), &["check-config", "--config", "hearth.toml"], "");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("voip.turn_username"));
}
