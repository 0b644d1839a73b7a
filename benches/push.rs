//! Push latency: from a message sent to its notification at the push gateway. `cargo bench
//! --bench push` (or, in the debug profile, `cargo test --bench push`).
//!
//! A real Hearth, a push gateway on loopback in this process (the tests' gateway), alice
//! and bob in a room, bob's phone's pusher on the gateway. Alice sends [`MESSAGES`]
//! messages one at a time, each once the previous one's notification arrived; the time from
//! the start of the `/send` request to the gateway receiving the notification is the
//! latency. Printed (median, 90th percentile, worst), not judged against a budget.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::budget::Report;
use common::gateway::Gateway;
use common::{Server, login_token, ok, test_config};
use serde_json::json;

const MESSAGES: usize = 100;
const PASSWORD: &str = "correct horse battery";

fn main() {
    let gateway = Gateway::start();
    let server = Server::start_with_users(
        &test_config("[push]\nallow_private_addresses = true\nallow_http = true\n"),
        &[("alice", PASSWORD), ("bob", PASSWORD)],
    );
    let alice = login_token(&server, "alice", PASSWORD);
    let bob = login_token(&server, "bob", PASSWORD);
    ok(server.client().json(
        "POST",
        "/_matrix/client/v3/pushers/set",
        Some(&bob),
        &json!({
            "kind": "http", "app_id": "org.example.app", "pushkey": "bob-phone",
            "app_display_name": "Example", "device_display_name": "Phone", "lang": "en",
            "data": { "url": gateway.url() },
        }),
    ));
    let room = ok(server.client().json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&alice),
        &json!({ "invite": ["@bob:localhost"], "preset": "private_chat" }),
    ))["room_id"]
        .as_str()
        .expect("room")
        .to_owned();
    ok(server.client().json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/join"),
        Some(&bob),
        &json!({}),
    ));
    gateway.expect(); // the invite
    let mut client = server.client();
    let mut latencies = Vec::with_capacity(MESSAGES);
    for n in 0..MESSAGES {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/push{n}");
        let started = Instant::now();
        let event_id = ok(client.json(
            "PUT",
            &path,
            Some(&alice),
            &json!({ "msgtype": "m.text", "body": format!("message {n}") }),
        ))["event_id"]
            .as_str()
            .expect("event id")
            .to_owned();
        let received = gateway
            .next(Duration::from_secs(20))
            .expect("a notification");
        assert_eq!(received.body["notification"]["event_id"], event_id.as_str());
        latencies.push(received.at.duration_since(started));
    }
    latencies.sort();
    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    let mut report = Report::new(&format!(
        "push: send to push gateway, {MESSAGES} messages one at a time"
    ));
    report.millis("median send → gateway", ms(latencies[MESSAGES / 2]), None);
    report.millis(
        "90th percentile send → gateway",
        ms(latencies[MESSAGES * 9 / 10]),
        None,
    );
    report.millis("worst send → gateway", ms(latencies[MESSAGES - 1]), None);
    report.finish();
}
