//! Key fetching against real TLS servers on 127.0.0.1 (the test CA of [`super::tests`]):
//! private addresses refused before any connection, answers over 16 KiB refused, a dead
//! server fetched once for many concurrent requests, and fetched keys kept in memory only
//! until a request confirms them.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{HttpResponse, web};
use serde_json::{Value, json};

use super::Transport;
use super::tests::{TestCa, serve, test_ca};
use crate::config::FederationConfig;
use crate::matrix::crypto::{KeyId, SigningKey, sign_json};

pub(super) fn transport(
    ca: &TestCa,
    allow_private_addresses: bool,
) -> (Transport, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, &ca.ca_pem).expect("write ca");
    let config = FederationConfig {
        trusted_key_servers: Vec::new(),
        extra_ca_file: Some(path),
        allow_private_addresses,
        ..Default::default()
    };
    let name = ruma::OwnedServerName::try_from("us.example").expect("name");
    let key = SigningKey::from_seed(KeyId::ed25519("us").expect("id"), [5; 32]);
    (Transport::new(name, key, &config).expect("transport"), dir)
}

/// A key server on 127.0.0.1 answering `/_matrix/key/v2/server` with what `answer` holds.
fn key_server(ca: &TestCa, answer: Arc<Mutex<Value>>, hits: Arc<AtomicUsize>) -> String {
    let routes = move |config: &mut web::ServiceConfig| {
        let answer = answer.clone();
        config.route(
            "/_matrix/key/v2/server",
            web::get().to(move || {
                let body = answer.lock().expect("lock").clone();
                async move { HttpResponse::Ok().json(body) }
            }),
        );
    };
    let port = serve(ca, routes, hits);
    format!("127.0.0.1:{port}")
}

fn signed_answer(server: &str, key: &SigningKey, padding: usize) -> Value {
    let mut answer = json!({
        "server_name": server,
        "verify_keys": { key.key_id().as_str(): { "key": key.public_key_base64() } },
        "old_verify_keys": {},
        "valid_until_ts": crate::matrix::time::now_ms() + 3_600_000,
    });
    if padding > 0 {
        answer["padding"] = json!("x".repeat(padding));
    }
    sign_json(answer.as_object_mut().expect("object"), server, key).expect("sign");
    answer
}

/// A listener that counts connections and closes each at once: a dead federation port.
fn dead_port() -> (u16, Arc<AtomicUsize>) {
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

#[actix_web::test]
async fn private_addresses_are_never_connected_to() {
    let ca = test_ca();
    let (port, accepted) = dead_port();
    let (transport, _dir) = transport(&ca, false);
    let (_storage_dir, storage) = crate::storage::testing::temporary();
    for server in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let found = transport
            .request_key(
                &storage,
                &server,
                "ed25519:a",
                crate::matrix::time::now_ms(),
            )
            .await;
        assert!(found.is_err(), "{server}");
        let answer = transport
            .notary_answer(&storage, &server, 0, crate::matrix::time::now_ms())
            .await
            .expect("an answer");
        assert!(answer.is_none(), "{server}");
    }
    let err = transport
        .unsigned_request(&format!("[::1]:{port}"), "GET", "/", 100)
        .await
        .expect_err("refused");
    assert!(
        matches!(err, super::FederationError::PrivateAddress(_)),
        "{err}"
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "nothing connected");
}

#[actix_web::test]
async fn a_dead_server_is_fetched_once_for_many_requests() {
    let ca = test_ca();
    let (port, accepted) = dead_port();
    let (transport, _dir) = transport(&ca, true);
    let (_storage_dir, storage) = crate::storage::testing::temporary();
    let server = format!("127.0.0.1:{port}");
    let now = crate::matrix::time::now_ms();
    let asks = (0..20).map(|_| transport.request_key(&storage, &server, "ed25519:a", now));
    let results = futures_util::future::join_all(asks).await;
    assert!(results.iter().all(Result::is_err));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one fetch for 20 requests"
    );
    // Remembered as failing: asking again does not connect again.
    assert!(
        transport
            .request_key(&storage, &server, "ed25519:a", now)
            .await
            .is_err()
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the failure is remembered"
    );
}

#[actix_web::test]
async fn key_answers_over_16_kib_are_refused() {
    let ca = test_ca();
    let answer = Arc::new(Mutex::new(Value::Null));
    let server = key_server(&ca, answer.clone(), Arc::new(AtomicUsize::new(0)));
    let key = SigningKey::from_seed(KeyId::ed25519("a").expect("id"), [1; 32]);
    *answer.lock().expect("lock") = signed_answer(&server, &key, 17 * 1024);
    let (transport, _dir) = transport(&ca, true);
    let (_storage_dir, storage) = crate::storage::testing::temporary();
    let now = crate::matrix::time::now_ms();
    let padded = transport
        .request_key(&storage, &server, "ed25519:a", now)
        .await;
    assert!(padded.is_err(), "a padded answer is refused");
    // A new transport, without the memory of that failure, takes the real answer.
    *answer.lock().expect("lock") = signed_answer(&server, &key, 0);
    let (transport, _dir) = transport_again(&ca);
    let found = transport
        .request_key(&storage, &server, "ed25519:a", now)
        .await
        .expect("a small answer");
    assert_eq!(found, key.public_key());
}

fn transport_again(ca: &TestCa) -> (Transport, tempfile::TempDir) {
    transport(ca, true)
}

#[actix_web::test]
async fn fetched_keys_are_stored_only_once_confirmed() {
    let ca = test_ca();
    let answer = Arc::new(Mutex::new(Value::Null));
    let hits = Arc::new(AtomicUsize::new(0));
    let server = key_server(&ca, answer.clone(), hits.clone());
    let key = SigningKey::from_seed(KeyId::ed25519("a").expect("id"), [1; 32]);
    // Padding the server signed: usable keys, but not something we would vouch for.
    *answer.lock().expect("lock") = signed_answer(&server, &key, 100);
    let (transport, _dir) = transport(&ca, true);
    let (_storage_dir, storage) = crate::storage::testing::temporary();
    let now = crate::matrix::time::now_ms();
    let found = transport
        .request_key(&storage, &server, "ed25519:a", now)
        .await
        .expect("fetched");
    assert_eq!(found, key.public_key());
    assert!(
        storage
            .servername_keys
            .get(&server)
            .expect("read")
            .is_none(),
        "not stored before a request verified with it"
    );
    assert_eq!(transport.keys.servers_held(), 1, "held in memory");
    let notary = transport
        .notary_answer(&storage, &server, 0, now)
        .await
        .expect("answer");
    assert!(
        notary.is_none(),
        "a reduced answer that no longer verifies is not served"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1, "answered from memory");
    transport
        .confirm_keys(&storage, &server, now)
        .expect("confirmed");
    let stored = storage
        .servername_keys
        .get(&server)
        .expect("read")
        .expect("stored once confirmed");
    assert!(stored.current_key("ed25519:a", now).is_some());
    assert!(stored.response.is_null());

    // An answer of only the signed fields is kept reduced and served, with both signatures.
    let other_key = SigningKey::from_seed(KeyId::ed25519("b").expect("id"), [2; 32]);
    let answer2 = Arc::new(Mutex::new(Value::Null));
    let server2 = key_server(&ca, answer2.clone(), Arc::new(AtomicUsize::new(0)));
    *answer2.lock().expect("lock") = signed_answer(&server2, &other_key, 0);
    let served = transport
        .notary_answer(&storage, &server2, 0, now)
        .await
        .expect("answer")
        .expect("served");
    assert!(
        storage
            .servername_keys
            .get(&server2)
            .expect("read")
            .is_none()
    );
    let object = served.as_object().expect("object");
    let mut names: Vec<&String> = object.keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "old_verify_keys",
            "server_name",
            "signatures",
            "valid_until_ts",
            "verify_keys"
        ]
    );
    assert!(object["signatures"][server2.as_str()].is_object());
    assert!(object["signatures"]["us.example"].is_object());
    super::keys::verify_response(&served, &server2, now).expect("still self-signed");
}

/// A listener on `ip` counting connections (closing each at once).
fn counting_listener(ip: &str) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind((ip, 0)).expect("bind");
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

#[actix_web::test]
async fn every_well_known_redirect_is_checked_before_connecting() {
    let ca = test_ca();
    // The first hop (127.0.0.1) is allowed and redirects to 127.0.0.2, which is "private".
    let (target_port, accepted) = counting_listener("127.0.0.2");
    let routes = move |config: &mut web::ServiceConfig| {
        config.route(
            "/.well-known/matrix/server",
            web::get().to(move || async move {
                HttpResponse::Found()
                    .insert_header((
                        "Location",
                        format!("https://127.0.0.2:{target_port}/.well-known/matrix/server"),
                    ))
                    .finish()
            }),
        );
    };
    let hits = Arc::new(AtomicUsize::new(0));
    let port = serve(&ca, routes, hits.clone());
    let (transport, _dir) = transport(&ca, true);
    let dns = super::dns::Dns::from_system();
    let refusing = |ip: std::net::IpAddr| ip == std::net::Ipv4Addr::new(127, 0, 0, 2);
    let client = transport.client.refusing(refusing);
    let answer = super::well_known::fetch(&client, &dns, "127.0.0.1", port).await;
    assert_eq!(answer.delegated, None);
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the first hop was asked");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "the redirect was not followed"
    );
    // The control: allowed, the redirect is followed (and fails there).
    let (allowing, _dir) = transport_again(&ca);
    let answer = super::well_known::fetch(&allowing.client, &dns, "127.0.0.1", port).await;
    assert_eq!(answer.delegated, None);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "followed when allowed");
}
