//! No requests into the owner's network: a real Hearth asked to reach loopback addresses
//! (a notary query, an invite, a profile, a room directory, a join naming `127.0.0.1:PORT`
//! or `localhost:PORT`) never connects there while `federation.allow_private_addresses` is
//! off, and whatever happens, a client learns nothing about the address (a closed port, a
//! port that answers garbage and a refused address all read the same).

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Server, errcode, login_token, ok, test_config};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// A port that accepts connections, counts them and closes each at once (a service that
/// is not Matrix: ssh, a printer).
fn counting_port() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (port, accepted)
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

fn server(allow_private_addresses: bool) -> (Server, String) {
    let config = test_config(&format!(
        "[federation]\ntrusted_key_servers = []\nallow_private_addresses = {allow_private_addresses}\n"
    ));
    let server = Server::start_with_users(&config, &[("alice", PASSWORD)]);
    let token = login_token(&server, "alice", PASSWORD);
    (server, token)
}

#[test]
fn key_queries_naming_loopback_connect_nowhere() {
    let (server, _token) = server(false);
    let (port, accepted) = counting_port();
    let names = [format!("127.0.0.1:{port}"), format!("localhost:{port}")];
    let query = json!({ "server_keys": {
        names[0].clone(): {},
        names[1].clone(): { "ed25519:a": { "minimum_valid_until_ts": 1 } },
    }});
    let answer = ok(server
        .client()
        .json("POST", "/_matrix/key/v2/query", None, &query));
    assert_eq!(answer["server_keys"], json!([]));
    for name in &names {
        let answer = ok(server
            .client()
            .get(&format!("/_matrix/key/v2/query/{name}")));
        assert_eq!(answer["server_keys"], json!([]));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "nothing connected");
}

/// Every client request that reaches another server, aimed at `server_name`: status,
/// errcode and message of each answer.
fn reach(
    server: &Server,
    token: &str,
    room_id: &str,
    server_name: &str,
) -> Vec<(u16, String, String)> {
    let mut client = server.client();
    let answers = [
        client.json(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room_id}/invite"),
            Some(token),
            &json!({ "user_id": format!("@x:{server_name}") }),
        ),
        client.get_with(
            &format!("/_matrix/client/v3/profile/@x:{server_name}"),
            token,
        ),
        client.get_with(
            &format!("/_matrix/client/v3/publicRooms?server={server_name}"),
            token,
        ),
        client.json(
            "POST",
            &format!("/_matrix/client/v3/join/!room:{server_name}?server_name={server_name}"),
            Some(token),
            &json!({}),
        ),
        client.json(
            "POST",
            &format!("/_matrix/client/v3/join/%23room:{server_name}"),
            Some(token),
            &json!({}),
        ),
    ];
    answers
        .iter()
        .map(|answer| {
            let body: Value = answer.json();
            let message = body["error"]
                .as_str()
                .unwrap_or_default()
                .replace(server_name, "SERVER");
            (answer.status, errcode(answer), message)
        })
        .collect()
}

fn assert_nothing_told(answers: &[(u16, String, String)]) {
    for (status, errcode, message) in answers {
        assert!(*status >= 400, "{status} {errcode} {message}");
        for secret in [
            "os error",
            "refused",
            "corrupt",
            "private",
            "tls",
            "TLS",
            "127.0.0.1",
            "I/O",
        ] {
            assert!(!message.contains(secret), "{status} {errcode} {message}");
        }
    }
}

fn room(server: &Server, token: &str) -> String {
    ok(server.client().json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(token),
        &json!({}),
    ))["room_id"]
        .as_str()
        .expect("room id")
        .to_owned()
}

#[test]
fn private_destinations_are_refused_and_look_unreachable() {
    let (server, token) = server(false);
    let room_id = room(&server, &token);
    let (open, accepted) = counting_port();
    let closed = closed_port();
    let to_open = reach(&server, &token, &room_id, &format!("127.0.0.1:{open}"));
    let to_closed = reach(&server, &token, &room_id, &format!("127.0.0.1:{closed}"));
    let to_named = reach(&server, &token, &room_id, &format!("localhost:{open}"));
    assert_nothing_told(&to_open);
    assert_eq!(
        to_open, to_closed,
        "an open and a closed port look the same"
    );
    assert_eq!(to_open, to_named);
    assert_eq!(to_open[0].0, 502, "{:?}", to_open[0]);
    assert_eq!(to_open[0].1, "M_UNKNOWN");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "nothing connected");
    let health = server.client().get("/_matrix/client/versions");
    assert_eq!(health.status, 200);
}

#[test]
fn connection_failures_reach_clients_without_their_details() {
    // Allowed to connect: a closed port (connection refused) and a port that closes at once
    // (a broken TLS handshake) fail differently on the wire, and must not to the client.
    let (server, token) = server(true);
    let room_id = room(&server, &token);
    let (open, accepted) = counting_port();
    let closed = closed_port();
    let to_open = reach(&server, &token, &room_id, &format!("127.0.0.1:{open}"));
    let to_closed = reach(&server, &token, &room_id, &format!("127.0.0.1:{closed}"));
    assert_nothing_told(&to_open);
    assert_eq!(
        to_open, to_closed,
        "an open and a closed port look the same"
    );
    assert!(
        accepted.load(Ordering::SeqCst) > 0,
        "the open port was tried"
    );
}

/// A profile query signed by `origin` (with a key the test makes up) for the server at
/// `server`.
fn signed_profile_query(server: std::net::SocketAddr, origin: &str) -> common::http::Response {
    use hearth::federation::auth::{RequestToSign, authorization_header};
    use hearth::matrix::crypto::{KeyId, SigningKey};
    let key = SigningKey::from_seed(KeyId::ed25519("a").expect("id"), [7; 32]);
    let path = "/_matrix/federation/v1/query/profile?user_id=%40alice%3Alocalhost";
    let request = RequestToSign {
        method: "GET",
        uri: path,
        origin,
        destination: "localhost",
        content: None,
    };
    let authorization = authorization_header(&request, &key).expect("sign");
    common::http::Client::plain(server)
        .request("GET", path, &[("Authorization", &authorization)], None)
        .expect("request")
}

#[test]
fn a_dead_origin_named_by_many_requests_is_asked_once() {
    let (server, _token) = server(true);
    let (port, accepted) = counting_port();
    let origin = format!("127.0.0.1:{port}");
    let address = server.address("http");
    std::thread::scope(|scope| {
        let answers: Vec<_> = (0..20)
            .map(|_| scope.spawn(|| signed_profile_query(address, &origin).status))
            .collect();
        for answer in answers {
            let status = answer.join().expect("thread");
            assert_ne!(status, 200);
        }
    });
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one key fetch");
    let again = signed_profile_query(server.address("http"), &origin);
    assert_ne!(again.status, 200);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the failure is remembered"
    );
}

#[test]
fn a_hanging_origin_is_given_up_on_quickly() {
    let (server, _token) = server(true);
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let started = std::time::Instant::now();
    let answer = signed_profile_query(server.address("http"), &format!("127.0.0.1:{port}"));
    let took = started.elapsed();
    assert_eq!(
        answer.status,
        401,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert!(took < Duration::from_secs(11), "gave up after {took:?}");
    let health = server.client().get("/_matrix/client/versions");
    assert_eq!(health.status, 200);
}
