//! Send-to-device messaging against the real server: `PUT /sendToDevice` (idempotent per
//! device and transaction, `*` for every device), delivery in `/sync` until a later token
//! acknowledges it, the bounded inbox and paged delivery, hostile input, a long poll woken
//! by a message, and `m.direct_to_device` both ways between two Hearths.

mod common;

use std::time::{Duration, Instant};

use common::federation::Pair;
use common::{Server, errcode, ok, test_config};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// The inbox bound of `users::to_device::MAX_INBOX`, and the page of `MAX_PER_SYNC`.
const MAX_INBOX: usize = 1000;
const MAX_PER_SYNC: usize = 100;

fn server() -> Server {
    Server::start_with_users(
        &test_config("[limits]\nauth_attempts_per_minute = 100000\n"),
        &[("alice", PASSWORD), ("bob", PASSWORD)],
    )
}

/// A new login (a new device) of `user`: its token and device ID.
fn device(server: &Server, user: &str) -> (String, String) {
    let token = common::login_token(server, user, PASSWORD);
    let whoami = ok(server
        .client()
        .get_with("/_matrix/client/v3/account/whoami", &token));
    let device_id = whoami["device_id"].as_str().expect("device_id").to_owned();
    (token, device_id)
}

fn send_to_device(
    server: &Server,
    token: &str,
    kind: &str,
    txn: &str,
    messages: Value,
) -> common::http::Response {
    server.client().json(
        "PUT",
        &format!("/_matrix/client/v3/sendToDevice/{kind}/{txn}"),
        Some(token),
        &json!({ "messages": messages }),
    )
}

fn sync(server: &Server, token: &str, since: Option<&str>) -> Value {
    let path = match since {
        Some(since) => format!("/_matrix/client/v3/sync?since={since}&timeout=0"),
        None => "/_matrix/client/v3/sync".to_owned(),
    };
    ok(server.client().get_with(&path, token))
}

fn to_device(synced: &Value) -> Vec<Value> {
    synced["to_device"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn next_batch(synced: &Value) -> String {
    synced["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned()
}

#[test]
fn a_message_is_delivered_until_acknowledged_then_deleted() {
    let server = server();
    let (alice, _) = device(&server, "alice");
    let (bob1, bob1_id) = device(&server, "bob");
    let (bob2, _) = device(&server, "bob");
    let t0 = next_batch(&sync(&server, &bob1, None));
    let t0_other = next_batch(&sync(&server, &bob2, None));

    ok(send_to_device(
        &server,
        &alice,
        "m.room_key_request",
        "txn1",
        json!({ "@bob:localhost": { bob1_id: { "n": 1 } } }),
    ));

    let first = sync(&server, &bob1, Some(&t0));
    let events = to_device(&first);
    assert_eq!(events.len(), 1, "{first}");
    assert_eq!(events[0]["sender"], "@alice:localhost");
    assert_eq!(events[0]["type"], "m.room_key_request");
    assert_eq!(events[0]["content"], json!({ "n": 1 }));
    // Not acknowledged yet: the same token gets it again.
    let again = sync(&server, &bob1, Some(&t0));
    assert_eq!(to_device(&again), events);
    // Syncing with the later token acknowledges it: gone for good.
    let t1 = next_batch(&again);
    assert!(to_device(&sync(&server, &bob1, Some(&t1))).is_empty());
    assert!(to_device(&sync(&server, &bob1, Some(&t0))).is_empty());
    assert!(to_device(&sync(&server, &bob1, None)).is_empty());
    // The other device never had it.
    assert!(to_device(&sync(&server, &bob2, Some(&t0_other))).is_empty());
}

#[test]
fn a_repeated_transaction_sends_once_and_star_reaches_every_device() {
    let server = server();
    let (alice, alice_id) = device(&server, "alice");
    let (bob1, _) = device(&server, "bob");
    let (bob2, _) = device(&server, "bob");
    let messages = json!({ "@bob:localhost": { "*": { "hello": true } } });
    for _ in 0..2 {
        ok(send_to_device(
            &server,
            &alice,
            "m.dummy",
            "same",
            messages.clone(),
        ));
    }
    for token in [&bob1, &bob2] {
        let events = to_device(&sync(&server, token, None));
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["content"], json!({ "hello": true }));
    }
    // The same transaction ID from another device (or for another type) is a new message.
    let (alice2, _) = device(&server, "alice");
    ok(send_to_device(
        &server, &alice2, "m.dummy", "same", messages,
    ));
    ok(send_to_device(
        &server,
        &alice,
        "m.other",
        "same",
        json!({}),
    ));
    assert_eq!(to_device(&sync(&server, &bob1, None)).len(), 2);
    // Unknown users and devices are skipped, not errors; a user may message their own
    // devices.
    ok(send_to_device(
        &server,
        &alice2,
        "m.dummy",
        "skip",
        json!({
            "@nobody:localhost": { "*": {} },
            "@bob:localhost": { "NOSUCHDEVICE": {} },
            "@alice:localhost": { alice_id: { "own": 1 } },
        }),
    ));
    assert_eq!(
        to_device(&sync(&server, &alice, None)),
        [json!({
            "sender": "@alice:localhost", "type": "m.dummy", "content": { "own": 1 }
        })]
    );
}

#[test]
fn a_full_inbox_refuses_local_senders_and_sync_hands_it_out_in_pages() {
    let server = server();
    let (alice, _) = device(&server, "alice");
    let (bob, bob_id) = device(&server, "bob");
    let started = Instant::now();
    for n in 0..MAX_INBOX {
        ok(send_to_device(
            &server,
            &alice,
            "m.dummy",
            &format!("fill{n}"),
            json!({ "@bob:localhost": { bob_id.clone(): { "n": n } } }),
        ));
    }
    eprintln!("{MAX_INBOX} to-device sends: {:?}", started.elapsed());
    let full = send_to_device(
        &server,
        &alice,
        "m.dummy",
        "one-more",
        json!({ "@bob:localhost": { bob_id.clone(): { "n": "late" } } }),
    );
    assert_eq!(full.status, 429, "{}", String::from_utf8_lossy(&full.body));
    assert_eq!(errcode(&full), "M_LIMIT_EXCEEDED");

    // Pages of at most MAX_PER_SYNC, in order, each message once.
    let mut since: Option<String> = None;
    let mut seen = Vec::new();
    for _ in 0..(MAX_INBOX / MAX_PER_SYNC + 1) {
        let synced = sync(&server, &bob, since.as_deref());
        let events = to_device(&synced);
        assert!(events.len() <= MAX_PER_SYNC);
        seen.extend(events.iter().map(|event| event["content"]["n"].clone()));
        since = Some(next_batch(&synced));
    }
    let expected: Vec<Value> = (0..MAX_INBOX).map(|n| json!(n)).collect();
    assert_eq!(seen, expected);
    // Acknowledged: there is room again.
    ok(send_to_device(
        &server,
        &alice,
        "m.dummy",
        "after",
        json!({ "@bob:localhost": { bob_id: { "n": "after" } } }),
    ));
    let synced = sync(&server, &bob, since.as_deref());
    assert_eq!(to_device(&synced).len(), 1);
}

#[test]
fn hostile_requests_are_refused_and_change_nothing() {
    let server = server();
    let (alice, _) = device(&server, "alice");
    let (bob, bob_id) = device(&server, "bob");
    let path = "/_matrix/client/v3/sendToDevice/m.dummy/t1";
    let cases = [
        (json!({}), "M_BAD_JSON"),
        (json!({ "messages": [] }), "M_BAD_JSON"),
        (
            json!({ "messages": { "@bob:localhost": [] } }),
            "M_BAD_JSON",
        ),
        (
            json!({ "messages": { "@bob:localhost": { bob_id.clone(): "text" } } }),
            "M_BAD_JSON",
        ),
        (
            json!({ "messages": { "not a user": { "*": {} } } }),
            "M_INVALID_PARAM",
        ),
        // A bad entry after a good one: nothing of the request is stored.
        (
            json!({ "messages": {
                "@bob:localhost": { bob_id: {} },
                "@zz:localhost": { "D": 5 },
            } }),
            "M_BAD_JSON",
        ),
    ];
    for (body, code) in cases {
        let response = server.client().json("PUT", path, Some(&alice), &body);
        assert_eq!(response.status, 400, "{body}");
        assert_eq!(errcode(&response), code, "{body}");
    }
    let response = server
        .client()
        .request(
            "PUT",
            path,
            &[("Content-Type", "application/json")],
            Some(br#"{"messages":{}}"#),
        )
        .expect("answer");
    assert_eq!(response.status, 401);
    let long_type = "m.".to_owned() + &"x".repeat(300);
    let response = send_to_device(&server, &alice, &long_type, "t2", json!({}));
    assert_eq!(errcode(&response), "M_INVALID_PARAM");
    assert!(to_device(&sync(&server, &bob, None)).is_empty());
}

#[test]
fn a_waiting_sync_wakes_for_a_message() {
    let server = server();
    let (alice, _) = device(&server, "alice");
    let (bob, bob_id) = device(&server, "bob");
    let since = next_batch(&sync(&server, &bob, None));
    let waiting = common::waiting_request(
        &server,
        &format!("/_matrix/client/v3/sync?since={since}&timeout=30000"),
        &bob,
    );
    let sent = Instant::now();
    ok(send_to_device(
        &server,
        &alice,
        "m.dummy",
        "wake",
        json!({ "@bob:localhost": { bob_id: { "wake": 1 } } }),
    ));
    let (answer, at) = waiting.join().expect("sync");
    assert!(at.duration_since(sent) < Duration::from_secs(10));
    assert_eq!(to_device(&ok(answer)).len(), 1);
}

/// `bob`'s incremental syncs (from an initial one) until a to-device message arrives.
fn to_device_within(server: &Server, token: &str) -> Vec<Value> {
    let mut since: Option<String> = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let path = match &since {
            Some(since) => format!("/_matrix/client/v3/sync?timeout=1000&since={since}"),
            None => "/_matrix/client/v3/sync".to_owned(),
        };
        let synced = ok(server.client().get_with(&path, token));
        let events = to_device(&synced);
        if !events.is_empty() {
            return events;
        }
        since = Some(next_batch(&synced));
    }
    panic!("no to-device message in time:\n{}", server.log_text());
}

#[test]
fn to_device_messages_cross_between_two_hearths_both_ways() {
    let pair = Pair::start(&["alice"], &["bob"]);
    let alice = pair.login_a("alice");
    let bob = pair.login_b("bob");
    let device_of = |server: &Server, token: &str| {
        ok(server
            .client()
            .get_with("/_matrix/client/v3/account/whoami", token))["device_id"]
            .as_str()
            .expect("device_id")
            .to_owned()
    };
    let alice_id = device_of(&pair.a, &alice);
    let bob_id = device_of(&pair.b, &bob);
    let alice_user = format!("@alice:{}", pair.name_a);
    let bob_user = format!("@bob:{}", pair.name_b);

    ok(pair.a.client().json(
        "PUT",
        "/_matrix/client/v3/sendToDevice/m.room.encrypted/a1",
        Some(&alice),
        &json!({ "messages": { bob_user.clone(): { bob_id: { "ciphertext": "to bob" } } } }),
    ));
    let events = to_device_within(&pair.b, &bob);
    assert_eq!(
        events,
        [json!({ "sender": alice_user, "type": "m.room.encrypted",
                 "content": { "ciphertext": "to bob" } })]
    );

    ok(pair.b.client().json(
        "PUT",
        "/_matrix/client/v3/sendToDevice/m.room.encrypted/b1",
        Some(&bob),
        &json!({ "messages": { alice_user: { "*": { "ciphertext": "to alice" } } } }),
    ));
    let events = to_device_within(&pair.a, &alice);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["sender"], bob_user);
    assert_eq!(events[0]["content"]["ciphertext"], "to alice");
    let _ = alice_id;
}

#[test]
fn a_device_logged_out_loses_its_inbox() {
    let server = server();
    let (alice, _) = device(&server, "alice");
    let login_as = |device_id: &str| {
        ok(server.client().json(
            "POST",
            "/_matrix/client/v3/login",
            None,
            &json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": "bob" },
                "password": PASSWORD,
                "device_id": device_id,
            }),
        ))["access_token"]
            .as_str()
            .expect("token")
            .to_owned()
    };
    let bob = login_as("PHONE");
    ok(send_to_device(
        &server,
        &alice,
        "m.dummy",
        "before-logout",
        json!({ "@bob:localhost": { "PHONE": { "old": true } } }),
    ));
    ok(server
        .client()
        .json("POST", "/_matrix/client/v3/logout", Some(&bob), &json!({})));
    // A new device under the same ID starts with an empty inbox.
    let bob = login_as("PHONE");
    assert!(to_device(&sync(&server, &bob, None)).is_empty());
    ok(send_to_device(
        &server,
        &alice,
        "m.dummy",
        "after-login",
        json!({ "@bob:localhost": { "PHONE": { "new": true } } }),
    ));
    let events = to_device(&sync(&server, &bob, None));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["content"], json!({ "new": true }));
}

/// A to-device message on a Synapse client's incremental syncs, within the deadline.
fn synapse_to_device_within(address: std::net::SocketAddr, token: &str) -> Vec<Value> {
    let mut since: Option<String> = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let path = match &since {
            Some(since) => format!("/_matrix/client/v3/sync?timeout=1000&since={since}"),
            None => "/_matrix/client/v3/sync".to_owned(),
        };
        let synced = ok(common::http::Client::plain(address).get_with(&path, token));
        let events = to_device(&synced);
        if !events.is_empty() {
            return events;
        }
        since = Some(next_batch(&synced));
    }
    panic!("no to-device message on Synapse in time");
}

#[test]
fn to_device_messages_cross_between_hearth_and_synapse_both_ways() {
    use common::synapse::{Synapse, synapse_python};
    let Some(python) = synapse_python() else {
        return;
    };
    let certificates = tempfile::tempdir().expect("tempdir");
    common::federation::write_certificates(certificates.path());
    let synapse = Synapse::start(&python, certificates.path());
    let carol = synapse.register(&python, "carol");
    let carol_id = format!("@carol:{}", synapse.name);
    let hearth = common::federation::start(certificates.path(), "localhost", &[], &["alice"]);
    let alice = common::login_token(&hearth, "alice", PASSWORD);
    let alice_id = format!("@alice:{}", hearth.name);
    let carol_device = ok(common::http::Client::plain(synapse.client)
        .get_with("/_matrix/client/v3/account/whoami", &carol))["device_id"]
        .as_str()
        .expect("device_id")
        .to_owned();

    // Hearth → Synapse, to one named device.
    ok(hearth.client().json(
        "PUT",
        "/_matrix/client/v3/sendToDevice/m.room.encrypted/h1",
        Some(&alice),
        &json!({ "messages": { carol_id.clone(): { carol_device: { "ciphertext": "to carol" } } } }),
    ));
    let events = synapse_to_device_within(synapse.client, &carol);
    assert_eq!(events.len(), 1, "{events:?}\n{}", hearth.log_text());
    assert_eq!(events[0]["sender"], alice_id);
    assert_eq!(events[0]["type"], "m.room.encrypted");
    assert_eq!(events[0]["content"]["ciphertext"], "to carol");

    // Synapse → Hearth, to every device.
    ok(common::http::Client::plain(synapse.client).json(
        "PUT",
        "/_matrix/client/v3/sendToDevice/m.room.encrypted/s1",
        Some(&carol),
        &json!({ "messages": { alice_id: { "*": { "ciphertext": "to alice" } } } }),
    ));
    let events = to_device_within(&hearth, &alice);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["sender"], carol_id);
    assert_eq!(events[0]["content"]["ciphertext"], "to alice");
}

#[test]
fn matrix_nio_sends_and_receives_a_to_device_message() {
    let python = std::env::var("HEARTH_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let present = common::succeeds_within(
        std::process::Command::new(&python).args(["-c", "import nio"]),
        Duration::from_secs(60),
    );
    if !present {
        assert!(
            std::env::var_os("CI").is_none() && std::env::var_os("HEARTH_TEST_PYTHON").is_none(),
            "{python} lacks `nio`: run the tests with scripts/test"
        );
        eprintln!("SKIPPED: no Python `nio`; scripts/test installs it");
        return;
    }
    let server = server();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/nio_to_device.py"
    );
    let url = format!("http://{}", server.address("http"));
    let output = common::output_within(
        std::process::Command::new(&python).args([script, &url, PASSWORD]),
        Duration::from_secs(120),
    );
    assert!(
        output.status.success(),
        "{script} failed:\n{}{}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        server.log_text()
    );
}
