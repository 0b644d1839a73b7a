//! Outbound federation end to end: a real Hearth sends its user's messages to another
//! server, here a small actix HTTPS server the test runs that records every
//! `PUT /_matrix/federation/v1/send/{txnId}`. Messages reach it; while it is down nothing is
//! lost and delivery happens when it is back; a transaction it did not accept is sent again
//! after Hearth is killed and restarted, with the same `txnId` and content.
//!
//! Then two real Hearths in one room: messages go both ways, typing and read receipts
//! reach the other side's `/sync`.
//!
//! The remote member of the first test is written into the room through the storage layer while Hearth is
//! stopped: the client API refuses to invite users of other servers until invites over
//! federation exist, and joins over federation do not exist yet either.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use common::federation::{free_port, start, write_certificates};
use common::{Server, hearth, login_token, ok, query_encode};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

const HEARTH_NAME: &str = "hearth.test";
const PASSWORD: &str = "correct horse battery";

/// One transaction as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    txn_id: String,
    authorization: String,
    body: Value,
}

/// What the receiver's handler shares with the test: what it got, and what it answers.
#[derive(Default)]
struct Recorded {
    transactions: Mutex<Vec<Received>>,
    status: AtomicU16,
}

impl Recorded {
    fn all(&self) -> Vec<Received> {
        self.transactions.lock().expect("lock").clone()
    }

    /// The message bodies of every PDU received, in order (retries included).
    fn bodies(&self) -> Vec<String> {
        self.all()
            .iter()
            .flat_map(|txn| txn.body["pdus"].as_array().cloned().unwrap_or_default())
            .filter_map(|pdu| pdu["content"]["body"].as_str().map(str::to_owned))
            .collect()
    }
}

/// `PUT /_matrix/federation/v1/send/{txnId}`: records the transaction, answers `status`.
async fn record(
    request: HttpRequest,
    txn_id: web::Path<String>,
    body: web::Bytes,
    recorded: web::Data<Recorded>,
) -> HttpResponse {
    let authorization = request
        .headers()
        .get("Authorization")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    recorded.transactions.lock().expect("lock").push(Received {
        txn_id: txn_id.into_inner(),
        authorization,
        body,
    });
    let status = recorded.status.load(Ordering::SeqCst);
    let status = actix_web::http::StatusCode::from_u16(status).expect("status");
    HttpResponse::build(status).json(json!({ "pdus": {} }))
}

/// The other server: HTTPS on a fixed port of 127.0.0.1, in a thread of its own, so it can
/// go down and come back on the same address.
struct Receiver {
    handle: actix_web::dev::ServerHandle,
    thread: std::thread::JoinHandle<()>,
}

impl Receiver {
    fn start(certificates: &Path, port: u16, recorded: Arc<Recorded>) -> Receiver {
        let tls = tls_config(certificates);
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the receiver");
        let (sender, handle) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let data = web::Data::from(recorded);
                let server = HttpServer::new(move || {
                    App::new().app_data(data.clone()).route(
                        "/_matrix/federation/v1/send/{txn_id}",
                        web::put().to(record),
                    )
                })
                .workers(1)
                .disable_signals()
                .listen_rustls_0_23(listener, tls)
                .expect("listen")
                .run();
                sender.send(server.handle()).expect("handle");
                server.await.expect("receiver runs");
            });
        });
        let handle = handle.recv().expect("receiver started");
        Receiver { handle, thread }
    }

    /// Stops listening: connections are refused until it starts again.
    fn stop(self) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(self.handle.stop(false));
        self.thread.join().expect("receiver thread");
    }
}

fn tls_config(certificates: &Path) -> rustls::ServerConfig {
    let certs = vec![CertificateDer::from_pem_file(certificates.join("cert.pem")).expect("cert")];
    let key = PrivateKeyDer::from_pem_file(certificates.join("key.pem")).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config")
}

/// Waits up to `timeout` for `done`.
fn wait_until(timeout: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

/// A Hearth data directory with a config trusting the test CA and retrying after 1 s, and
/// the account `alice`.
fn hearth_dir(certificates: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "[server]\nserver_name = \"{HEARTH_NAME}\"\nworkers = 1\n\n\
         [database]\npath = \"data\"\n\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\n\n\
         [federation]\ntrusted_key_servers = []\nextra_ca_file = \"{}\"\n\
         retry_initial_seconds = 1\n",
        certificates.join("ca.pem").display()
    );
    std::fs::write(dir.path().join("hearth.toml"), config).expect("config");
    let output = hearth(
        dir.path(),
        &["user", "add", "alice"],
        &format!("{PASSWORD}\n"),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir
}

fn start_hearth(dir: &Path) -> Server {
    Server::start_in(dir, &[], &[]).expect("hearth starts")
}

fn stop_hearth(mut server: Server, signal: &str) -> PathBuf {
    server.signal(signal);
    assert!(
        server.wait_exit(Duration::from_secs(15)).is_some(),
        "hearth stops"
    );
    if signal == "TERM" {
        assert!(
            server.wait_for_log("outbound sending stopped"),
            "{}",
            server.log_text()
        );
    }
    server.dir.clone()
}

/// Makes `user` a joined member of `room_id` in the stopped Hearth's database, as a join
/// over federation will once it exists.
fn add_remote_member(dir: &Path, room_id: &str, user: &str) {
    let storage = hearth::storage::Storage::open(&dir.join("data"), 1 << 20).expect("open");
    storage
        .roomuser_membership
        .insert(&(room_id.to_owned(), user.to_owned()), &"join".to_owned())
        .expect("member");
    storage.flush_blocking().expect("flush");
}

fn send_message(server: &Server, token: &str, room_id: &str, body: &str) {
    let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{body}");
    let content = json!({ "msgtype": "m.text", "body": body });
    ok(server.client().json("PUT", &path, Some(token), &content));
}

#[test]
fn messages_reach_the_other_server_across_outages_and_restarts() {
    let certificates = tempfile::tempdir().expect("tempdir");
    write_certificates(certificates.path());
    let port = free_port();
    let destination = format!("127.0.0.1:{port}");
    let recorded = Arc::new(Recorded::default());
    recorded.status.store(200, Ordering::SeqCst);
    let receiver = Receiver::start(certificates.path(), port, recorded.clone());

    // A room of alice's, with bob of the other server joined.
    let dir = hearth_dir(certificates.path());
    let server = start_hearth(dir.path());
    let token = login_token(&server, "alice", PASSWORD);
    let created = ok(server.client().json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&token),
        &json!({}),
    ));
    let room_id = created["room_id"].as_str().expect("room id").to_owned();
    stop_hearth(server, "TERM");
    add_remote_member(dir.path(), &room_id, &format!("@bob:{destination}"));
    let server = start_hearth(dir.path());

    // Live: the message arrives as a signed transaction with the PDU as stored.
    send_message(&server, &token, &room_id, "hello");
    assert!(
        wait_until(Duration::from_secs(20), || recorded.bodies() == ["hello"]),
        "{:?}\n{}",
        recorded.all(),
        server.log_text()
    );
    let first = &recorded.all()[0];
    assert_eq!(first.body["origin"], HEARTH_NAME);
    assert!(first.body["origin_server_ts"].is_u64());
    let pdu = &first.body["pdus"][0];
    assert_eq!(pdu["room_id"], room_id.as_str());
    assert_eq!(pdu["sender"], format!("@alice:{HEARTH_NAME}"));
    assert!(pdu["signatures"][HEARTH_NAME].is_object(), "{pdu}");
    assert!(
        first.authorization.starts_with("X-Matrix "),
        "{}",
        first.authorization
    );
    assert!(
        first
            .authorization
            .contains(&format!("destination=\"{destination}\"")),
        "{}",
        first.authorization
    );

    // Down: nothing is lost; back: everything arrives, in order.
    receiver.stop();
    send_message(&server, &token, &room_id, "while-down-1");
    send_message(&server, &token, &room_id, "while-down-2");
    assert!(
        server.wait_for_log("sending failed"),
        "{}",
        server.log_text()
    );
    let receiver = Receiver::start(certificates.path(), port, recorded.clone());
    let expected = ["hello", "while-down-1", "while-down-2"];
    assert!(
        wait_until(Duration::from_secs(20), || recorded.bodies() == expected),
        "{:?}\n{}",
        recorded.bodies(),
        server.log_text()
    );

    // Refused, then Hearth is killed: after the restart the same transaction comes again.
    recorded.status.store(500, Ordering::SeqCst);
    let delivered = recorded.all().len();
    send_message(&server, &token, &room_id, "across-restart");
    assert!(wait_until(Duration::from_secs(20), || recorded.all().len() > delivered));
    let refused = recorded.all().last().cloned().expect("refused transaction");
    stop_hearth(server, "KILL");
    recorded.status.store(200, Ordering::SeqCst);
    let attempts_before = recorded.all().len();
    let server = start_hearth(dir.path());
    assert!(
        wait_until(Duration::from_secs(20), || recorded.all().len()
            > attempts_before),
        "{}",
        server.log_text()
    );
    let retried = recorded.all()[attempts_before].clone();
    assert_eq!(retried.txn_id, refused.txn_id);
    assert_eq!(retried.body, refused.body);
    assert_eq!(retried.body["pdus"][0]["content"]["body"], "across-restart");
    // Accepted now: nothing more is sent.
    std::thread::sleep(Duration::from_secs(2));
    let after = recorded.all();
    assert!(
        after[attempts_before..]
            .iter()
            .all(|txn| txn.txn_id == refused.txn_id),
        "{after:?}"
    );
    drop(server);
    receiver.stop();
}

fn call(server: &Server, method: &str, path: &str, token: &str, body: Value) -> Value {
    ok(server.client().json(method, path, Some(token), &body))
}

/// `bob`'s incremental sync until `found` says it holds what we wait for; returns that sync.
fn sync_until(server: &Server, token: &str, found: impl Fn(&Value) -> bool) -> Value {
    let mut since: Option<String> = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let path = match &since {
            Some(since) => format!("/_matrix/client/v3/sync?timeout=1000&since={since}"),
            None => "/_matrix/client/v3/sync".to_owned(),
        };
        let synced = ok(server.client().get_with(&path, token));
        if found(&synced) {
            return synced;
        }
        since = synced["next_batch"].as_str().map(str::to_owned);
    }
    panic!("not seen in time:\n{}", server.log_text());
}

fn ephemeral_of<'a>(synced: &'a Value, room: &str, kind: &str) -> Option<&'a Value> {
    synced["rooms"]["join"][room]["ephemeral"]["events"]
        .as_array()?
        .iter()
        .find(|event| event["type"] == kind)
}

fn timeline_bodies(synced: &Value, room: &str) -> Vec<String> {
    synced["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|event| event["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn two_hearths_share_messages_typing_and_receipts() {
    let certificates = tempfile::tempdir().expect("tempdir");
    write_certificates(certificates.path());
    let (port_a, port_b) = (free_port(), free_port());
    let (name_a, name_b) = (format!("127.0.0.1:{port_a}"), format!("localhost:{port_b}"));
    let a = start(certificates.path(), &name_a, port_a, &[], &["alice"]);
    let b = start(certificates.path(), &name_b, port_b, &[], &["bob"]);
    let alice = login_token(&a, "alice", PASSWORD);
    let bob = login_token(&b, "bob", PASSWORD);
    let created = call(
        &a,
        "POST",
        "/_matrix/client/v3/createRoom",
        &alice,
        json!({ "preset": "public_chat" }),
    );
    let room = created["room_id"].as_str().expect("room").to_owned();
    let join = format!(
        "/_matrix/client/v3/join/{}?via={}",
        query_encode(&room),
        query_encode(&name_a)
    );
    call(&b, "POST", &join, &bob, json!({}));

    // Alice's message, typing and read receipt reach Bob's server.
    send_message(&a, &alice, &room, "from-alice");
    sync_until(&b, &bob, |synced| {
        timeline_bodies(synced, &room).contains(&"from-alice".to_owned())
    });
    let alice_id = format!("@alice:{name_a}");
    let typing_path = format!("/_matrix/client/v3/rooms/{room}/typing/{alice_id}");
    call(
        &a,
        "PUT",
        &typing_path,
        &alice,
        json!({ "typing": true, "timeout": 30000 }),
    );
    sync_until(&b, &bob, |synced| {
        ephemeral_of(synced, &room, "m.typing")
            .is_some_and(|typing| typing["content"]["user_ids"] == json!([alice_id]))
    });

    // Bob's message reaches Alice's server; Alice reads it, and Bob's server hears so.
    send_message(&b, &bob, &room, "from-bob");
    let synced = sync_until(&a, &alice, |synced| {
        timeline_bodies(synced, &room).contains(&"from-bob".to_owned())
    });
    let event_id = synced["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .and_then(|events| events.iter().find(|e| e["content"]["body"] == "from-bob"))
        .and_then(|event| event["event_id"].as_str())
        .expect("bob's event")
        .to_owned();
    let receipt = format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{event_id}");
    call(&a, "POST", &receipt, &alice, json!({}));
    sync_until(&b, &bob, |synced| {
        ephemeral_of(synced, &room, "m.receipt").is_some_and(|receipts| {
            receipts["content"][&event_id]["m.read"][&alice_id]["ts"].is_u64()
        })
    });
}
