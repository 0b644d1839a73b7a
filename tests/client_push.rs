//! Push delivery to a push gateway on loopback (spec: push gateway API): the notification's
//! fields, `event_id_only`, nothing for one's own events or for rules that do not notify,
//! `rejected` pushkeys removing their pusher, retries after a gateway error, badge updates
//! after reading on another device, delivery resumed after a restart, a hanging gateway
//! holding up neither sending nor other pushers; and `pushers/set`'s `append` and
//! `kind: null`.

mod common;

use std::time::{Duration, Instant};

use common::gateway::{Answer, Gateway};
use common::{Server, hearth, login_token, ok, test_config};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";
const APP: &str = "org.example.app";

fn config() -> String {
    test_config(
        "[limits]\nauth_attempts_per_minute = 100000\n\n\
         [push]\nallow_private_addresses = true\nallow_http = true\n",
    )
}

fn start() -> (Server, String, String) {
    let server = Server::start_with_users(&config(), &[("alice", PASSWORD), ("bob", PASSWORD)]);
    let alice = login_token(&server, "alice", PASSWORD);
    let bob = login_token(&server, "bob", PASSWORD);
    (server, alice, bob)
}

fn set_pusher(server: &Server, token: &str, pushkey: &str, data: Value, append: bool) {
    ok(server.client().json(
        "POST",
        "/_matrix/client/v3/pushers/set",
        Some(token),
        &json!({
            "kind": "http", "app_id": APP, "pushkey": pushkey,
            "app_display_name": "Example", "device_display_name": "Phone", "lang": "en",
            "data": data, "append": append,
        }),
    ));
}

fn pushers(server: &Server, token: &str) -> Vec<Value> {
    ok(server
        .client()
        .get_with("/_matrix/client/v3/pushers", token))["pushers"]
        .as_array()
        .expect("pushers")
        .clone()
}

fn create_room(server: &Server, token: &str, body: &Value) -> String {
    ok(server
        .client()
        .json("POST", "/_matrix/client/v3/createRoom", Some(token), body))["room_id"]
        .as_str()
        .expect("room")
        .to_owned()
}

fn join(server: &Server, token: &str, room: &str) {
    ok(server.client().json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/join"),
        Some(token),
        &json!({}),
    ));
}

fn send(server: &Server, token: &str, room: &str, body: &str) -> String {
    let txn = format!("t{}", rand_suffix());
    ok(server.client().json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
        Some(token),
        &json!({ "msgtype": "m.text", "body": body }),
    ))["event_id"]
        .as_str()
        .expect("event id")
        .to_owned()
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
}

/// A room of alice's that bob joined (invited before his pusher existed).
fn shared_room(server: &Server, alice: &str, bob: &str) -> String {
    let room = create_room(
        server,
        alice,
        &json!({ "invite": ["@bob:localhost"], "preset": "private_chat" }),
    );
    join(server, bob, &room);
    room
}

#[test]
fn a_notification_carries_the_spec_fields() {
    let gateway = Gateway::start();
    let (server, alice, bob) = start();
    ok(server.client().json(
        "PUT",
        "/_matrix/client/v3/profile/@alice:localhost/displayname",
        Some(&alice),
        &json!({ "displayname": "Alice" }),
    ));
    set_pusher(
        &server,
        &bob,
        "bob-phone",
        json!({ "url": gateway.url(), "extra": "kept" }),
        false,
    );
    let room = create_room(
        &server,
        &alice,
        &json!({ "invite": ["@bob:localhost"], "name": "Family", "room_alias_name": "family",
                 "preset": "private_chat" }),
    );

    // The invite notifies bob: he is its target.
    let invite = &gateway.expect()["notification"];
    assert_eq!(invite["type"], "m.room.member");
    assert_eq!(invite["user_is_target"], true);
    assert_eq!(invite["prio"], "high");
    assert_eq!(invite["content"]["membership"], "invite");

    join(&server, &bob, &room);
    let event_id = send(&server, &alice, &room, "dinner is ready");
    let notification = &gateway.expect()["notification"];
    assert_eq!(notification["event_id"], event_id.as_str());
    assert_eq!(notification["room_id"], room.as_str());
    assert_eq!(notification["type"], "m.room.message");
    assert_eq!(notification["sender"], "@alice:localhost");
    assert_eq!(notification["sender_display_name"], "Alice");
    assert_eq!(notification["room_name"], "Family");
    assert_eq!(notification["room_alias"], "#family:localhost");
    assert_eq!(notification["content"]["body"], "dinner is ready");
    assert_eq!(notification["counts"]["unread"], 1);
    assert_eq!(notification["prio"], "high");
    assert!(notification.get("user_is_target").is_none());
    let devices = notification["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 1);
    let device = &devices[0];
    assert_eq!(device["app_id"], APP);
    assert_eq!(device["pushkey"], "bob-phone");
    let pushkey_ts = device["pushkey_ts"].as_u64().expect("pushkey_ts");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(pushkey_ts <= now && now - pushkey_ts < 600, "{pushkey_ts}");
    assert_eq!(device["data"], json!({ "extra": "kept" }), "url is ours");
    // The default rules for a message in a two-person room: a sound.
    assert_eq!(device["tweaks"]["sound"], "default");

    // Bob's own message pushes nothing to him; alice's next one comes next.
    send(&server, &bob, &room, "coming");
    let next = send(&server, &alice, &room, "hurry");
    let notification = &gateway.expect()["notification"];
    assert_eq!(notification["event_id"], next.as_str());
    assert_eq!(
        notification["counts"]["unread"], 1,
        "bob's reply read the rest"
    );

    // A rule that does not notify sends nothing.
    ok(server.client().json(
        "PUT",
        "/_matrix/client/v3/pushrules/global/content/hush",
        Some(&bob),
        &json!({ "pattern": "hush", "actions": [] }),
    ));
    send(&server, &alice, &room, "hush");
    let loud = send(&server, &alice, &room, "loud");
    assert_eq!(gateway.expect()["notification"]["event_id"], loud.as_str());
    assert!(gateway.quiet_for(Duration::from_millis(500)));
}

#[test]
fn event_id_only_sends_ids_and_counts() {
    let gateway = Gateway::start();
    let (server, alice, bob) = start();
    set_pusher(
        &server,
        &bob,
        "bob-phone",
        json!({ "url": gateway.url(), "format": "event_id_only" }),
        false,
    );
    let room = shared_room(&server, &alice, &bob);
    gateway.expect(); // the invite
    let event_id = send(&server, &alice, &room, "secret words");
    let notification = gateway.expect()["notification"].clone();
    assert_eq!(notification["event_id"], event_id.as_str());
    assert_eq!(notification["room_id"], room.as_str());
    assert_eq!(notification["counts"]["unread"], 1);
    for absent in [
        "content",
        "sender",
        "type",
        "sender_display_name",
        "room_name",
    ] {
        assert!(
            notification.get(absent).is_none(),
            "{absent}: {notification}"
        );
    }
    assert_eq!(notification["devices"][0]["data"], json!({}));
}

#[test]
fn a_rejected_pushkey_removes_its_pusher() {
    let gateway = Gateway::start();
    let (server, alice, bob) = start();
    set_pusher(
        &server,
        &bob,
        "bob-phone",
        json!({ "url": gateway.url() }),
        false,
    );
    let room = shared_room(&server, &alice, &bob);
    gateway.expect(); // the invite
    gateway.then(&[Answer::Accept(vec!["bob-phone".to_owned()])]);
    send(&server, &alice, &room, "one");
    gateway.expect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pushers(&server, &bob).is_empty() {
        assert!(Instant::now() < deadline, "the rejected pusher stays");
        std::thread::sleep(Duration::from_millis(50));
    }
    send(&server, &alice, &room, "two");
    assert!(
        gateway.quiet_for(Duration::from_secs(2)),
        "nothing goes to a removed pusher"
    );
}

#[test]
fn a_failing_gateway_is_retried() {
    let gateway = Gateway::start();
    let (server, alice, bob) = start();
    set_pusher(
        &server,
        &bob,
        "bob-phone",
        json!({ "url": gateway.url() }),
        false,
    );
    let room = shared_room(&server, &alice, &bob);
    gateway.expect(); // the invite
    gateway.then(&[Answer::Status(500), Answer::Status(502)]);
    let event_id = send(&server, &alice, &room, "again");
    for attempt in 1..=3 {
        let notification = gateway.expect();
        assert_eq!(
            notification["notification"]["event_id"],
            event_id.as_str(),
            "attempt {attempt}"
        );
    }
    assert!(
        gateway.quiet_for(Duration::from_secs(2)),
        "delivered once accepted"
    );
    assert_eq!(
        pushers(&server, &bob).len(),
        1,
        "an error removes no pusher"
    );
}

#[test]
fn reading_on_another_device_updates_the_badge() {
    let gateway = Gateway::start();
    let (server, alice, bob_phone) = start();
    let bob_laptop = login_token(&server, "bob", PASSWORD);
    set_pusher(
        &server,
        &bob_phone,
        "bob-phone",
        json!({ "url": gateway.url() }),
        false,
    );
    let room = shared_room(&server, &alice, &bob_phone);
    gateway.expect(); // the invite
    send(&server, &alice, &room, "one");
    let last = send(&server, &alice, &room, "two");
    gateway.expect();
    let second = gateway.expect();
    assert_eq!(second["notification"]["counts"]["unread"], 2);
    ok(server.client().json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{last}"),
        Some(&bob_laptop),
        &json!({}),
    ));
    let badge = gateway.expect()["notification"].clone();
    assert!(badge.get("event_id").is_none(), "{badge}");
    assert!(badge.get("content").is_none(), "{badge}");
    assert_eq!(badge["counts"]["unread"], 0);
    assert_eq!(badge["devices"][0]["pushkey"], "bob-phone");
}

#[test]
fn delivery_resumes_after_a_restart() {
    let gateway = Gateway::start();
    gateway.always(Answer::Status(503));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hearth.toml"), config()).expect("config");
    for name in ["alice", "bob"] {
        let output = hearth(dir.path(), &["user", "add", name], &format!("{PASSWORD}\n"));
        assert!(output.status.success());
    }
    let mut server = Server::start_in(dir.path(), &[], &[]).expect("starts");
    let alice = login_token(&server, "alice", PASSWORD);
    let bob = login_token(&server, "bob", PASSWORD);
    let room = shared_room(&server, &alice, &bob);
    set_pusher(
        &server,
        &bob,
        "bob-phone",
        json!({ "url": gateway.url() }),
        false,
    );
    let event_id = send(&server, &alice, &room, "while the gateway is down");
    // Tried (and refused) at least once before the stop.
    let deadline = Instant::now() + Duration::from_secs(20);
    while gateway.expect()["notification"]["event_id"] != event_id.as_str() {
        assert!(Instant::now() < deadline, "never tried");
    }
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(20)).is_some(), "stops");
    while gateway.next(Duration::from_millis(300)).is_some() {}

    gateway.always(Answer::Accept(Vec::new()));
    let _server = Server::start_in(dir.path(), &[], &[]).expect("restarts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while gateway.expect()["notification"]["event_id"] != event_id.as_str() {
        assert!(Instant::now() < deadline, "not delivered after the restart");
    }
    assert!(gateway.quiet_for(Duration::from_secs(1)), "delivered once");
}

#[test]
fn a_hanging_gateway_holds_up_neither_sending_nor_other_pushers() {
    let hanging = Gateway::start();
    hanging.always(Answer::Hang);
    let working = Gateway::start();
    let (server, alice, bob) = start();
    set_pusher(
        &server,
        &bob,
        "bob-phone",
        json!({ "url": hanging.url() }),
        false,
    );
    set_pusher(
        &server,
        &alice,
        "alice-phone",
        json!({ "url": working.url() }),
        false,
    );
    let room = shared_room(&server, &alice, &bob);
    // The invite reaches the gateway, which does not answer.
    assert_eq!(hanging.expect()["notification"]["type"], "m.room.member");
    // The gateway holds bob's delivery; sending goes on, answered at once (the bound is
    // half the gateway time limit, far above a send's usual milliseconds).
    for n in 0..5 {
        let started = Instant::now();
        send(&server, &alice, &room, &format!("more {n}"));
        assert!(started.elapsed() < Duration::from_secs(5), "a send waited");
    }
    // Alice's pusher, on another gateway, is served meanwhile.
    let reply = send(&server, &bob, &room, "bob writes");
    assert_eq!(working.expect()["notification"]["event_id"], reply.as_str());
    hanging.release();
    drop(server);
}

#[test]
fn pushers_set_append_and_deletion() {
    let gateway = Gateway::start();
    let (server, alice, bob) = start();
    let data = json!({ "url": gateway.url() });
    set_pusher(&server, &bob, "shared-tablet", data.clone(), false);
    let listed = pushers(&server, &bob);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["pushkey"], "shared-tablet");
    assert!(listed[0].get("pushkey_ts").is_none(), "not a pusher field");
    assert!(listed[0].get("append").is_none());

    // Without `append`, the key moves to alice: bob's pusher for it goes.
    set_pusher(&server, &alice, "shared-tablet", data.clone(), false);
    assert!(pushers(&server, &bob).is_empty());
    assert_eq!(pushers(&server, &alice).len(), 1);

    // With `append`, both keep it.
    set_pusher(&server, &bob, "shared-tablet", data, true);
    assert_eq!(pushers(&server, &bob).len(), 1);
    assert_eq!(pushers(&server, &alice).len(), 1);

    // `kind: null` deletes bob's only.
    ok(server.client().json(
        "POST",
        "/_matrix/client/v3/pushers/set",
        Some(&bob),
        &json!({ "kind": null, "app_id": APP, "pushkey": "shared-tablet" }),
    ));
    assert!(pushers(&server, &bob).is_empty());
    assert_eq!(pushers(&server, &alice).len(), 1);

    // A deleted pusher gets nothing.
    let room = shared_room(&server, &alice, &bob);
    while gateway.next(Duration::from_millis(500)).is_some() {}
    send(&server, &alice, &room, "to nobody's phone");
    assert!(gateway.quiet_for(Duration::from_secs(2)));
}

#[test]
fn plain_http_gateways_need_the_owners_consent() {
    let server = Server::start_with_users(&test_config(""), &[("bob", PASSWORD)]);
    let bob = login_token(&server, "bob", PASSWORD);
    let body = |url: &str| {
        json!({
            "kind": "http", "app_id": APP, "pushkey": "k",
            "app_display_name": "Example", "device_display_name": "Phone", "lang": "en",
            "data": { "url": url },
        })
    };
    let path = "/_matrix/client/v3/pushers/set";
    let refused = server.client().json(
        "POST",
        path,
        Some(&bob),
        &body("http://127.0.0.1:9/_matrix/push/v1/notify"),
    );
    assert_eq!(refused.status, 400);
    assert_eq!(common::errcode(&refused), "M_INVALID_PARAM");
    let wrong_path = server.client().json(
        "POST",
        path,
        Some(&bob),
        &body("https://push.example.org/notify"),
    );
    assert_eq!(common::errcode(&wrong_path), "M_INVALID_PARAM");
    ok(server.client().json(
        "POST",
        path,
        Some(&bob),
        &body("https://push.example.org/_matrix/push/v1/notify"),
    ));
    assert_eq!(pushers(&server, &bob).len(), 1);
}
