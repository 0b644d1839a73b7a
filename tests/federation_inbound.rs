//! The work other servers' events make us do, at its worst (issue 10): a fake server in a
//! room (a small HTTPS server of the test, signing its events with its own key) sends
//! Hearth events meant to cost it much, or to hide a message from its users.
//!
//! - A message first given as an outlier (the prev event fetched with the state at a gap),
//!   then sent through `/send`, reaches the local user's `/sync` and `/messages`.
//! - Events naming 20 forked prev events each: checked off the HTTP workers (`/versions`
//!   answers meanwhile) and within the transaction's budget (the third is refused).
//! - Huge `get_missing_events` answers: a few fetches per transaction, each read up to a
//!   limit, and the server's memory stays small.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fake::{FakeRequest, FakeRoom, FakeServer, bind, event_id_of, new_key};
use common::federation::{Signer, start, write_certificates};
use common::{Server, ok};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// How the fake answers `get_missing_events`.
#[derive(Clone, Copy, PartialEq)]
enum Missing {
    /// Truthfully.
    Honest,
    /// With no events (so the state at the gap is fetched instead).
    Nothing,
    /// With an answer of this many MiB.
    Huge(usize),
}

struct Fake {
    room: FakeRoom,
    missing: Missing,
}

fn handler(fake: Arc<Mutex<Fake>>) -> common::fake::Handler {
    Arc::new(move |request: &FakeRequest| {
        let mut fake = fake.lock().expect("lock");
        let parts: Vec<&str> = request.path.split('/').collect();
        let not_found = (
            404,
            json!({ "errcode": "M_NOT_FOUND", "error": "not here" }),
        );
        let found =
            |answer: Option<Value>| answer.map_or(not_found.clone(), |answer| (200, answer));
        let strings = |value: &Value| -> Vec<String> {
            value
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|id| id.as_str().map(str::to_owned))
                .collect()
        };
        let room = &mut fake.room;
        match parts.get(4).copied() {
            Some("make_join") => (
                200,
                room.make_join(parts.get(6).copied().unwrap_or_default()),
            ),
            Some("send_join") => {
                let answer = json!({
                    "origin": room.server, "members_omitted": false,
                    "state": room.state_events(), "auth_chain": room.auth_chain(),
                });
                let join = request.body.clone();
                room.add_signed((event_id_of(&join), join));
                (200, answer)
            }
            Some("get_missing_events") => match fake.missing {
                Missing::Honest => {
                    let limit = request.body["limit"].as_u64().unwrap_or(10).min(20) as usize;
                    let earliest = strings(&request.body["earliest_events"]);
                    let latest = strings(&request.body["latest_events"]);
                    (
                        200,
                        json!({ "events": fake.room.missing_events(&earliest, &latest, limit) }),
                    )
                }
                Missing::Nothing => (200, json!({ "events": [] })),
                Missing::Huge(mib) => {
                    let padding = "x".repeat(64 * 1024);
                    let events: Vec<Value> =
                        (0..mib * 16).map(|_| json!({ "pad": padding })).collect();
                    (200, json!({ "events": events }))
                }
            },
            Some("state_ids") => found(
                request
                    .param("event_id")
                    .and_then(|id| room.state_ids_at(&id)),
            ),
            Some("state") => found(request.param("event_id").and_then(|id| room.state_at(&id))),
            Some("event") => found(parts.get(5).and_then(|id| room.event_answer(id))),
            // Hearth's own transactions (its messages, presence, receipts) are taken as a
            // real server takes them: a 404 here would put the fake in a 30 s backoff, and a
            // message queued behind a refused transaction would wait that long.
            Some("send") => (200, json!({ "pdus": {} })),
            _ => not_found,
        }
    })
}

/// A Hearth with Alice, joined to a room of a fake server.
struct Setup {
    _certificates: tempfile::TempDir,
    a: Server,
    alice: String,
    fake: Arc<Mutex<Fake>>,
    server: FakeServer,
    key: hearth::matrix::crypto::SigningKey,
    room_id: String,
}

impl Setup {
    fn start() -> Setup {
        let certificates = tempfile::tempdir().expect("tempdir");
        write_certificates(certificates.path());
        let a = start(certificates.path(), "localhost", &[], &["alice"]);
        let alice = common::login_token(&a, "alice", PASSWORD);
        let (listener, name_f) = bind();
        let key = new_key();
        let fake = Arc::new(Mutex::new(Fake {
            room: FakeRoom::create(&name_f, &key, "inbound"),
            missing: Missing::Honest,
        }));
        let room_id = fake.lock().expect("lock").room.room_id.clone();
        let server = FakeServer::start(
            certificates.path(),
            (listener, name_f),
            key.clone(),
            handler(fake.clone()),
        );
        let joined = a.client().json(
            "POST",
            &format!(
                "/_matrix/client/v3/join/{}?via={}",
                common::query_encode(&room_id),
                common::query_encode(&server.name)
            ),
            Some(&alice),
            &json!({}),
        );
        assert_eq!(
            joined.status,
            200,
            "{}",
            String::from_utf8_lossy(&joined.body)
        );
        Setup {
            _certificates: certificates,
            a,
            alice,
            fake,
            server,
            key,
            room_id,
        }
    }

    /// Sends `pdus` in one transaction from the fake server; the answer's `pdus`.
    fn send(&self, txn: &str, pdus: &[Value]) -> Value {
        let signer = Signer {
            origin: &self.server.name,
            key: &self.key,
            destination: &self.a.name,
        };
        let transaction = json!({
            "origin": self.server.name, "origin_server_ts": 1_800_000_000_000u64, "pdus": pdus,
        });
        ok(signer.send(
            &self.a,
            "PUT",
            &format!("/_matrix/federation/v1/send/{txn}"),
            Some(&transaction),
        ))["pdus"]
            .clone()
    }

    /// The bodies of the room's messages Alice reads with `/messages`.
    fn bodies(&self) -> Vec<String> {
        ok(self.a.client().get_with(
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100",
                self.room_id
            ),
            &self.alice,
        ))["chunk"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|event| event["content"]["body"].as_str().map(str::to_owned))
            .collect()
    }

    /// The bodies in Alice's `/sync` timeline of the room.
    fn synced_bodies(&self) -> Vec<String> {
        let filter = common::query_encode(r#"{"room":{"timeline":{"limit":50}}}"#);
        let synced = ok(self.a.client().get_with(
            &format!("/_matrix/client/v3/sync?filter={filter}"),
            &self.alice,
        ));
        synced["rooms"]["join"][&self.room_id]["timeline"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|event| event["content"]["body"].as_str().map(str::to_owned))
            .collect()
    }

    fn message(&self, body: &str) -> Value {
        let mut fake = self.fake.lock().expect("lock");
        let creator = fake.room.creator.clone();
        let id = fake.room.push(
            "m.room.message",
            None,
            &creator,
            json!({ "msgtype": "m.text", "body": body }),
        );
        fake.room.json(&id).expect("message")
    }
}

/// The resident set size of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_message_first_given_as_an_outlier_reaches_the_timeline_when_sent() {
    let setup = Setup::start();
    setup.fake.lock().expect("lock").missing = Missing::Nothing;
    // The fake's server hides "the hidden message": it sends the next message first, and
    // answers no missing events, so Hearth fetches the state at the gap and gets the
    // hidden message as the prev event of that state, an outlier.
    let hidden = setup.message("the hidden message");
    let hidden_id = event_id_of(&hidden);
    let after = setup.message("after it");
    let after_id = event_id_of(&after);
    let answer = setup.send("outlier1", &[after]);
    assert_eq!(answer[&after_id], json!({}), "{answer}");
    assert!(
        setup
            .server
            .paths()
            .iter()
            .any(|path| path.contains(&hidden_id)),
        "the hidden message was fetched as the state's prev event: {:?}",
        setup.server.paths()
    );
    assert!(setup.bodies().contains(&"after it".to_owned()));
    assert!(!setup.bodies().contains(&"the hidden message".to_owned()));

    // Then the hidden message itself comes through /send: it is checked and shown.
    let answer = setup.send("outlier2", &[hidden]);
    assert_eq!(answer[&hidden_id], json!({}), "{answer}");
    assert!(
        setup.bodies().contains(&"the hidden message".to_owned()),
        "{:?}",
        setup.bodies()
    );
    assert!(
        setup
            .synced_bodies()
            .contains(&"the hidden message".to_owned()),
        "{:?}",
        setup.synced_bodies()
    );
    // It is no forward extremity (the message after it builds on it): Alice's next
    // message names only that one.
    let sent = ok(setup.a.client().json(
        "PUT",
        &format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/t1",
            setup.room_id
        ),
        Some(&setup.alice),
        &json!({ "msgtype": "m.text", "body": "alice after" }),
    ));
    let alice_id = sent["event_id"].as_str().expect("event_id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    let prevs = loop {
        let found = setup
            .server
            .requests
            .lock()
            .expect("lock")
            .iter()
            .filter(|request| request.path.contains("/send/"))
            .flat_map(|request| request.body["pdus"].as_array().cloned().unwrap_or_default())
            .find(|pdu| event_id_of(pdu) == alice_id);
        if let Some(pdu) = found {
            break common::fake::prev_ids(&pdu);
        }
        assert!(Instant::now() < deadline, "Alice's message never sent");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(prevs, vec![after_id]);
    // Sent again, it is known: shown once.
    let hidden = setup.fake.lock().expect("lock").room.json(&hidden_id);
    let answer = setup.send("outlier3", &[hidden.expect("hidden")]);
    assert_eq!(answer[&hidden_id], json!({}), "{answer}");
    let shown = setup
        .bodies()
        .iter()
        .filter(|body| *body == "the hidden message")
        .count();
    assert_eq!(shown, 1);
}

/// `count` state events, each on its own branch from the latest event, each setting the
/// same key to its own value: `count` forked states. Returns their JSON.
fn forks(setup: &Setup, count: usize) -> Vec<Value> {
    let mut fake = setup.fake.lock().expect("lock");
    let creator = fake.room.creator.clone();
    let base = fake.room.events.last().expect("events").1.clone();
    let base_id = event_id_of(&base);
    let depth = base["depth"].as_u64().expect("depth") + 1;
    let mut forks = Vec::new();
    for n in 0..count {
        let mut event =
            fake.room
                .template("org.example.fork", Some(""), &creator, json!({ "fork": n }));
        event["prev_events"] = json!([base_id]);
        event["depth"] = json!(depth);
        event["origin_server_ts"] = json!(1_800_000_100_000u64 + n as u64);
        let signed = fake.room.sign(event);
        forks.push(signed.1.clone());
        fake.room.events.push(signed);
    }
    forks
}

/// A message after all of `forks`.
fn merge(setup: &Setup, forks: &[Value], body: &str) -> Value {
    let fake = setup.fake.lock().expect("lock");
    let creator = fake.room.creator.clone();
    let mut event = fake.room.template(
        "m.room.message",
        None,
        &creator,
        json!({ "msgtype": "m.text", "body": body }),
    );
    event["prev_events"] = json!(forks.iter().map(event_id_of).collect::<Vec<_>>());
    event["depth"] = json!(forks[0]["depth"].as_u64().expect("depth") + 1);
    fake.room.sign(event).1
}

#[test]
fn events_naming_many_forks_are_checked_off_the_http_workers_within_a_budget() {
    let setup = Setup::start();
    let forks = forks(&setup, 20);
    let answer = setup.send("forks", &forks);
    for fork in &forks {
        assert_eq!(answer[&event_id_of(fork)], json!({}), "{answer}");
    }
    // Three messages naming all 20 forks, in one transaction, while a client asks
    // /versions again and again.
    let merges: Vec<Value> = (0..3)
        .map(|n| merge(&setup, &forks, &format!("merge {n}")))
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let address = setup.a.address("http");
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            let mut asked = 0;
            while !done.load(Ordering::SeqCst) || asked < 3 {
                let started = Instant::now();
                let answer = common::http::Client::plain(address).get("/_matrix/client/versions");
                assert_eq!(answer.status, 200);
                slowest = slowest.max(started.elapsed());
                asked += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            slowest
        })
    };
    let started = Instant::now();
    let answer = setup.send("merges", &merges);
    let took = started.elapsed();
    done.store(true, Ordering::SeqCst);
    let slowest = watcher.join().expect("watcher");
    eprintln!("3 events naming 20 forks each: {took:?}; slowest /versions meanwhile {slowest:?}");
    assert!(
        slowest < Duration::from_secs(2),
        "/versions took {slowest:?}"
    );
    let ids: Vec<String> = merges.iter().map(event_id_of).collect();
    assert_eq!(answer[&ids[0]], json!({}), "{answer}");
    assert_eq!(answer[&ids[1]], json!({}), "{answer}");
    let refused = answer[&ids[2]]["error"].as_str().unwrap_or_default();
    assert!(refused.contains("budget"), "{answer}");
    let bodies = setup.bodies();
    assert!(bodies.contains(&"merge 0".to_owned()), "{bodies:?}");
    assert!(!bodies.contains(&"merge 2".to_owned()), "{bodies:?}");
    // A later transaction has a budget of its own.
    let answer = setup.send("merges-again", &merges[2..]);
    assert_eq!(answer[&ids[2]], json!({}), "{answer}");
}

#[test]
fn huge_get_missing_events_answers_are_bounded_per_transaction() {
    let setup = Setup::start();
    setup.fake.lock().expect("lock").missing = Missing::Huge(20);
    // Ten messages, each after an event Hearth never got: ten gaps in one transaction.
    let mut pdus = Vec::new();
    for n in 0..10 {
        setup.message(&format!("unseen {n}"));
        pdus.push(setup.message(&format!("seen {n}")));
    }
    // Each after its own unseen event, not after the previous "seen" one.
    let before = rss_kib(setup.a.child.id());
    let started = Instant::now();
    let _ = setup.send("huge", &pdus);
    let took = started.elapsed();
    let after = rss_kib(setup.a.child.id());
    let asked = setup
        .server
        .paths()
        .iter()
        .filter(|path| path.contains("get_missing_events"))
        .count();
    eprintln!(
        "10 gaps, 20 MiB get_missing_events answers: {asked} fetched, {took:?}, RSS {before} KiB -> {after} KiB"
    );
    assert!(asked <= 5, "{asked} get_missing_events in one transaction");
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    ok(setup.a.client().get("/_matrix/client/versions"));
}
