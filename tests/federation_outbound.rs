//! Outbound federation end to end: a real Hearth sends its user's messages to another
//! server, here a fake server of the test (`common::fake`: HTTPS with the test CA, serving
//! its own signing key) whose user joined the room over federation (`make_join` and
//! `send_join`, signed as the fake), and which records every
//! `PUT /_matrix/federation/v1/send/{txnId}`. Messages reach it; while it is down (every
//! connection dropped) nothing is lost and delivery happens when it is back; a transaction
//! it did not accept is sent again after Hearth is killed and restarted, with the same
//! `txnId` and content, and once accepted it is not sent again.
//!
//! Then two real Hearths in one room: messages go both ways, typing and read receipts
//! reach the other side's `/sync`.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fake::{FakeRequest, FakeServer, new_key};
use common::federation::{Pair, Signer, write_certificates};
use common::{Server, hearth, login_token, ok, query_encode};
use hearth::matrix::crypto::SigningKey;
use serde_json::{Value, json};

const HEARTH_NAME: &str = "hearth.test";
const PASSWORD: &str = "correct horse battery";

/// One transaction as the receiver got it, and the status it answered.
#[derive(Debug, Clone)]
struct Received {
    txn_id: String,
    authorization: String,
    body: Value,
    status: u16,
}

/// What the fake's handler shares with the test: what it got, and what it answers.
#[derive(Default)]
struct Recorded {
    transactions: Mutex<Vec<Received>>,
    status: AtomicU16,
}

impl Recorded {
    fn all(&self) -> Vec<Received> {
        self.transactions.lock().expect("lock").clone()
    }

    /// The transactions that carry PDUs (EDU-only ones left out), in order.
    fn with_pdus(&self) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|txn| {
                txn.body["pdus"]
                    .as_array()
                    .is_some_and(|pdus| !pdus.is_empty())
            })
            .collect()
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

/// The fake's answers: `/send` recorded and answered with the status of the moment;
/// anything else unknown.
fn handler(recorded: Arc<Recorded>) -> common::fake::Handler {
    Arc::new(move |request: &FakeRequest| {
        let Some(txn_id) = request.path.strip_prefix("/_matrix/federation/v1/send/") else {
            return (
                404,
                json!({ "errcode": "M_UNRECOGNIZED", "error": "not here" }),
            );
        };
        let status = recorded.status.load(Ordering::SeqCst);
        recorded.transactions.lock().expect("lock").push(Received {
            txn_id: txn_id.to_owned(),
            authorization: request.authorization.clone(),
            body: request.body.clone(),
            status,
        });
        (status, json!({ "pdus": {} }))
    })
}

/// The other server's address, held by the test for the whole test (so no other process
/// can take its port): served by the fake while it is up; while it is down, a thread takes
/// every connection and drops it at once.
struct Receiver {
    listener: TcpListener,
    name: String,
    key: SigningKey,
    recorded: Arc<Recorded>,
    certificates: PathBuf,
    fake: Option<FakeServer>,
    down: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
}

impl Receiver {
    fn start(certificates: &Path, recorded: Arc<Recorded>) -> Receiver {
        let (listener, name) = common::fake::bind();
        let mut receiver = Receiver {
            listener,
            name,
            key: new_key(),
            recorded,
            certificates: certificates.to_owned(),
            fake: None,
            down: None,
        };
        receiver.up();
        receiver
    }

    /// Serves again (the fake, on a copy of the same listening socket).
    fn up(&mut self) {
        if let Some((stop, thread)) = self.down.take() {
            stop.store(true, Ordering::SeqCst);
            thread.join().expect("the dropping thread");
        }
        let listener = self.listener.try_clone().expect("listener");
        listener.set_nonblocking(false).expect("blocking");
        self.fake = Some(FakeServer::start(
            &self.certificates,
            (listener, self.name.clone()),
            self.key.clone(),
            handler(self.recorded.clone()),
        ));
    }

    /// Goes down: the fake stops, and every connection is dropped unanswered.
    fn down(&mut self) {
        self.unanswering(false);
    }

    /// Goes silent: the fake stops, and every connection is accepted and held, never
    /// answered (until the receiver is dropped or up again), as a dead host behind a
    /// proxy, or a hostile server, does.
    fn silent(&mut self) {
        self.unanswering(true);
    }

    fn unanswering(&mut self, hold: bool) {
        drop(self.fake.take());
        let listener = self.listener.try_clone().expect("listener");
        listener.set_nonblocking(true).expect("non-blocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((connection, _)) if hold => held.push(connection),
                    Ok((connection, _)) => drop(connection),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        self.down = Some((stop, thread));
    }

    fn signer(&self) -> Signer<'_> {
        Signer {
            origin: &self.name,
            key: &self.key,
            destination: HEARTH_NAME,
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.down.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = thread.join();
        }
    }
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
         retry_initial_seconds = 1\nallow_private_addresses = true\n",
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

/// `user` of the fake joins `room_id` over federation: `make_join` and `send_join` (v2) to
/// Hearth, signed as the fake, with the join event the fake builds from the template and
/// signs.
fn join_over_federation(server: &Server, receiver: &Receiver, room_id: &str, user: &str) {
    over_federation(server, receiver, room_id, user, "join");
}

/// `make_{what}` and `send_{what}` (v2) for `user` of the fake in `room_id`.
fn over_federation(server: &Server, receiver: &Receiver, room_id: &str, user: &str, what: &str) {
    let signer = receiver.signer();
    let query = if what == "join" { "?ver=11" } else { "" };
    let template = ok(signer.get(
        server,
        &format!(
            "/_matrix/federation/v1/make_{what}/{}/{}{query}",
            query_encode(room_id),
            query_encode(user)
        ),
    ));
    let rules = ruma::RoomVersionId::try_from(template["room_version"].as_str().expect("version"))
        .expect("version")
        .rules()
        .expect("rules");
    let mut event = template["event"].clone();
    event["origin_server_ts"] = json!(hearth::matrix::time::now_ms());
    let Ok(ruma::CanonicalJsonValue::Object(mut object)) =
        ruma::CanonicalJsonValue::try_from(event)
    else {
        panic!("an event is an object");
    };
    hearth::matrix::events::signing::hash_and_sign(
        &mut object,
        &rules,
        &receiver.name,
        &receiver.key,
    )
    .expect("sign");
    let event_id = hearth::matrix::events::signing::event_id_for(&object, &rules)
        .expect("id")
        .expect("hashed IDs");
    let event = serde_json::to_value(ruma::CanonicalJsonValue::Object(object)).expect("json");
    ok(signer.send(
        server,
        "PUT",
        &format!(
            "/_matrix/federation/v2/send_{what}/{}/{}",
            query_encode(room_id),
            query_encode(event_id.as_str())
        ),
        Some(&event),
    ));
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
    let recorded = Arc::new(Recorded::default());
    recorded.status.store(200, Ordering::SeqCst);
    let mut receiver = Receiver::start(certificates.path(), recorded.clone());
    let destination = receiver.name.clone();

    // A room of alice's, joined over federation by bob of the other server.
    let dir = hearth_dir(certificates.path());
    let server = start_hearth(dir.path());
    let token = login_token(&server, "alice", PASSWORD);
    let created = ok(server.client().json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&token),
        &json!({ "preset": "public_chat", "room_version": "11" }),
    ));
    let room_id = created["room_id"].as_str().expect("room id").to_owned();
    let bob = format!("@bob:{destination}");
    join_over_federation(&server, &receiver, &room_id, &bob);
    let members = ok(server.client().get_with(
        &format!("/_matrix/client/v3/rooms/{room_id}/joined_members"),
        &token,
    ));
    assert!(members["joined"].get(&bob).is_some(), "{members}");

    // Live: the message arrives as a signed transaction with the PDU as stored.
    send_message(&server, &token, &room_id, "hello");
    assert!(
        wait_until(Duration::from_secs(20), || recorded.bodies() == ["hello"]),
        "{:?}\n{}",
        recorded.all(),
        server.log_text()
    );
    let first = &recorded.with_pdus()[0];
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
    receiver.down();
    send_message(&server, &token, &room_id, "while-down-1");
    send_message(&server, &token, &room_id, "while-down-2");
    assert!(
        server.wait_for_log("sending failed"),
        "{}",
        server.log_text()
    );
    receiver.up();
    let expected = ["hello", "while-down-1", "while-down-2"];
    assert!(
        wait_until(Duration::from_secs(20), || recorded.bodies() == expected),
        "{:?}\n{}",
        recorded.bodies(),
        server.log_text()
    );

    // Refused, then Hearth is killed: after the restart the same transaction comes again.
    recorded.status.store(500, Ordering::SeqCst);
    let delivered = recorded.with_pdus().len();
    send_message(&server, &token, &room_id, "across-restart");
    assert!(wait_until(Duration::from_secs(20), || recorded
        .with_pdus()
        .len()
        > delivered));
    let refused = recorded
        .with_pdus()
        .last()
        .cloned()
        .expect("refused transaction");
    assert_eq!(refused.status, 500);
    stop_hearth(server, "KILL");
    recorded.status.store(200, Ordering::SeqCst);
    let attempts_before = recorded.with_pdus().len();
    let server = start_hearth(dir.path());
    assert!(
        wait_until(Duration::from_secs(20), || recorded.with_pdus().len()
            > attempts_before),
        "{}",
        server.log_text()
    );
    let retried = recorded.with_pdus()[attempts_before].clone();
    assert_eq!(retried.txn_id, refused.txn_id);
    assert_eq!(retried.body, refused.body);
    assert_eq!(retried.status, 200);
    assert_eq!(retried.body["pdus"][0]["content"]["body"], "across-restart");
    // Accepted now: it is not sent again. The next message goes out in a transaction of its
    // own, and the sender sends in order, so once it arrived nothing of the accepted one is
    // still to come: exactly those two transactions, each PDU once.
    send_message(&server, &token, &room_id, "after-restart");
    assert!(
        wait_until(Duration::from_secs(20), || recorded
            .bodies()
            .contains(&"after-restart".to_owned())),
        "{}",
        server.log_text()
    );
    let after = recorded.with_pdus()[attempts_before..].to_vec();
    assert_eq!(after.len(), 2, "{after:?}");
    assert_ne!(after[1].txn_id, refused.txn_id, "{after:?}");
    let bodies: Vec<&Value> = after[1].body["pdus"]
        .as_array()
        .expect("pdus")
        .iter()
        .map(|pdu| &pdu["content"]["body"])
        .collect();
    assert_eq!(bodies, [&json!("after-restart")], "{after:?}");
    let accepted: Vec<String> = recorded
        .all()
        .iter()
        .filter(|txn| txn.status == 200)
        .flat_map(|txn| txn.body["pdus"].as_array().cloned().unwrap_or_default())
        .filter_map(|pdu| pdu["content"]["body"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        accepted,
        [
            "hello",
            "while-down-1",
            "while-down-2",
            "across-restart",
            "after-restart"
        ],
        "each message accepted exactly once"
    );
    drop(server);
}

/// Once every user of a server left a room, Hearth sends it the room's events no more: the
/// fake's user leaves one room over federation (`make_leave`, `send_leave`) and stays in
/// another; a message in the room left, then one in the other, are sent; the fake gets the
/// second (the sender sends in order, so the first would have come before it) and never the
/// first.
#[test]
fn a_server_whose_users_all_left_a_room_is_sent_its_events_no_more() {
    let certificates = tempfile::tempdir().expect("tempdir");
    write_certificates(certificates.path());
    let recorded = Arc::new(Recorded::default());
    recorded.status.store(200, Ordering::SeqCst);
    let receiver = Receiver::start(certificates.path(), recorded.clone());
    let dir = hearth_dir(certificates.path());
    let server = start_hearth(dir.path());
    let token = login_token(&server, "alice", PASSWORD);
    let bob = format!("@bob:{}", receiver.name);
    let [left, lobby] = ["left", "lobby"].map(|_| {
        let created = ok(server.client().json(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&token),
            &json!({ "preset": "public_chat", "room_version": "11" }),
        ));
        let room = created["room_id"].as_str().expect("room id").to_owned();
        join_over_federation(&server, &receiver, &room, &bob);
        room
    });
    send_message(&server, &token, &left, "before-leaving");
    assert!(
        wait_until(Duration::from_secs(20), || recorded
            .bodies()
            .contains(&"before-leaving".to_owned())),
        "{}",
        server.log_text()
    );

    over_federation(&server, &receiver, &left, &bob, "leave");
    let members = ok(server.client().get_with(
        &format!("/_matrix/client/v3/rooms/{left}/joined_members"),
        &token,
    ));
    assert!(members["joined"].get(&bob).is_none(), "{members}");
    send_message(&server, &token, &left, "after-leaving");
    send_message(&server, &token, &lobby, "in-the-lobby");
    assert!(
        wait_until(Duration::from_secs(20), || recorded
            .bodies()
            .contains(&"in-the-lobby".to_owned())),
        "{}",
        server.log_text()
    );
    assert!(
        !recorded.bodies().contains(&"after-leaving".to_owned()),
        "the room's event was sent to a server with no one left in it: {:?}",
        recorded.bodies()
    );
}

/// A live server is not held up by dead ones: ten servers in the room accept
/// connections and never answer (more than Hearth's eight sending slots), and our message
/// still reaches the one live server within seconds, first while the dead ones are tried
/// for the first time (their senders turn slow and free their slots), then while they are
/// retried (in slots of their own).
#[test]
fn a_live_server_gets_our_events_while_dead_ones_hang() {
    const DEAD: usize = 10;
    let certificates = tempfile::tempdir().expect("tempdir");
    write_certificates(certificates.path());
    let recorded = Arc::new(Recorded::default());
    recorded.status.store(200, Ordering::SeqCst);
    let live = Receiver::start(certificates.path(), recorded.clone());
    let dead_recorded = Arc::new(Recorded::default());
    dead_recorded.status.store(200, Ordering::SeqCst);
    let mut dead: Vec<Receiver> = (0..DEAD)
        .map(|_| Receiver::start(certificates.path(), dead_recorded.clone()))
        .collect();
    let dir = hearth_dir(certificates.path());
    let server = start_hearth(dir.path());
    let token = login_token(&server, "alice", PASSWORD);
    let created = ok(server.client().json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&token),
        &json!({ "preset": "public_chat", "room_version": "11" }),
    ));
    let room_id = created["room_id"].as_str().expect("room id").to_owned();
    for receiver in dead.iter().chain([&live]) {
        join_over_federation(
            &server,
            receiver,
            &room_id,
            &format!("@bob:{}", receiver.name),
        );
    }
    // Joins are sent on to the room's other servers: let those go before they go silent.
    let live_bob = format!("@bob:{}", live.name);
    let live_join_arrivals = || {
        dead_recorded
            .all()
            .iter()
            .flat_map(|txn| txn.body["pdus"].as_array().cloned().unwrap_or_default())
            .filter(|pdu| pdu["state_key"] == live_bob.as_str())
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(30), || live_join_arrivals() >= DEAD),
        "{}",
        server.log_text()
    );
    for receiver in &mut dead {
        receiver.silent();
    }

    for (message, limit) in [("first", 12), ("second", 5), ("third", 5)] {
        // The dead servers' senders are at work (first tries, then retries after 1 s, 2 s,
        // …): on a server where they take every slot, the live one waits for their timeouts.
        std::thread::sleep(Duration::from_secs(3));
        let started = Instant::now();
        send_message(&server, &token, &room_id, message);
        let arrived = wait_until(Duration::from_secs(limit), || {
            recorded.bodies().contains(&message.to_owned())
        });
        let took = started.elapsed();
        assert!(
            arrived,
            "{message} did not reach the live server in {limit} s\n{}",
            server.log_text()
        );
        println!("{message}: reached the live server in {took:?} with {DEAD} dead servers");
    }
    drop(server);
}

/// A server down long enough to be in catch-up gets, once back, the newest event of the
/// room rather than every event it missed, as soon as it contacts us (its backoff has
/// grown well past the test's waits); later messages go to it one by one again.
#[test]
fn a_dead_server_back_gets_the_newest_event_when_it_contacts_us() {
    let certificates = tempfile::tempdir().expect("tempdir");
    write_certificates(certificates.path());
    let recorded = Arc::new(Recorded::default());
    recorded.status.store(200, Ordering::SeqCst);
    let mut receiver = Receiver::start(certificates.path(), recorded.clone());
    let dir = hearth_dir(certificates.path());
    let server = start_hearth(dir.path());
    let token = login_token(&server, "alice", PASSWORD);
    let created = ok(server.client().json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&token),
        &json!({ "preset": "public_chat", "room_version": "11" }),
    ));
    let room_id = created["room_id"].as_str().expect("room id").to_owned();
    join_over_federation(
        &server,
        &receiver,
        &room_id,
        &format!("@bob:{}", receiver.name),
    );
    send_message(&server, &token, &room_id, "hello");
    assert!(
        wait_until(Duration::from_secs(20), || recorded.bodies() == ["hello"]),
        "{}",
        server.log_text()
    );

    // Down: failures 1 s, 2 s, 4 s apart put it in catch-up; then its backoff grows.
    receiver.down();
    send_message(&server, &token, &room_id, "down-0");
    assert!(
        wait_until(Duration::from_secs(30), || server
            .log_text()
            .contains("backlog collapses")),
        "{}",
        server.log_text()
    );
    for n in 1..=20 {
        send_message(&server, &token, &room_id, &format!("down-{n}"));
    }
    assert!(
        wait_until(Duration::from_secs(40), || server
            .log_text()
            .contains("retry_in_seconds=16")),
        "{}",
        server.log_text()
    );

    // Back, and it sends us a transaction: the newest event comes at once, alone.
    receiver.up();
    let before = recorded.bodies().len();
    let txn = json!({
        "origin": receiver.name,
        "origin_server_ts": hearth::matrix::time::now_ms(),
        "pdus": [],
        "edus": [],
    });
    ok(receiver.signer().send(
        &server,
        "PUT",
        "/_matrix/federation/v1/send/back-1",
        Some(&txn),
    ));
    assert!(
        wait_until(Duration::from_secs(5), || recorded
            .bodies()
            .contains(&"down-20".to_owned())),
        "{:?}\n{}",
        recorded.bodies(),
        server.log_text()
    );
    let caught_up: Vec<String> = recorded.bodies()[before..].to_vec();
    assert_eq!(caught_up, ["down-20"], "only the newest event of the room");

    // Healthy again: each message goes, one by one.
    send_message(&server, &token, &room_id, "after-1");
    send_message(&server, &token, &room_id, "after-2");
    assert!(
        wait_until(Duration::from_secs(10), || recorded.bodies().len()
            == before + 3),
        "{:?}\n{}",
        recorded.bodies(),
        server.log_text()
    );
    assert_eq!(
        recorded.bodies()[before..],
        ["down-20", "after-1", "after-2"]
    );
    drop(server);
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
    let pair = Pair::start(&["alice"], &["bob"]);
    let (alice, bob) = (pair.login_a("alice"), pair.login_b("bob"));
    let room = pair.shared_room(&alice, &json!({ "preset": "public_chat" }), &[&bob]);
    let Pair { a, b, name_a, .. } = pair;

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
