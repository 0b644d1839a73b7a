//! Sliding sync's cost, measured: `cargo bench --bench sliding_sync`.
//!
//! One user in 100 rooms (a few messages in each). Prints the time of the initial
//! request (Element X's room list: `all_rooms` over `[[0,19]]`, `timeline_limit` 1, its
//! default `required_state`, and the whole list `[[0,99]]`), and of an incremental request
//! after one new message in one room (each checked to carry that message), with the
//! server's resident memory before and after.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::budget::{Report, rss_mib};
use common::{Server, test_config};
use serde_json::{Value, json};

const ROOMS: usize = 100;
const MESSAGES_PER_ROOM: usize = 3;
const SAMPLES: usize = 50;
const PASSWORD: &str = "benchmark password";
const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

fn ok(response: common::http::Response) -> Value {
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()
}

fn room_list(last: u64) -> Value {
    json!({
        "conn_id": "room-list",
        "lists": {
            "all_rooms": {
                "ranges": [[0, last]],
                "timeline_limit": 1,
                "required_state": [
                    ["m.room.name", ""], ["m.room.encryption", ""], ["m.room.member", "$LAZY"],
                    ["m.room.member", "$ME"], ["m.room.topic", ""], ["m.room.canonical_alias", ""],
                    ["m.room.power_levels", ""], ["org.matrix.msc3401.call.member", "*"],
                    ["m.room.join_rules", ""], ["m.room.tombstone", ""], ["m.room.create", ""],
                    ["m.room.history_visibility", ""], ["io.element.functional_members", ""],
                    ["m.space.parent", "*"], ["m.space.child", "*"]
                ],
                "filters": { "not_room_types": ["m.space"] },
            }
        },
        "extensions": {
            "account_data": { "enabled": true },
            "receipts": { "enabled": true, "rooms": ["*"] },
            "typing": { "enabled": true },
        }
    })
}

fn median_ms(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |p: usize| samples[(samples.len() * p / 100).min(samples.len() - 1)];
    (at(50).as_secs_f64() * 1000.0, at(95).as_secs_f64() * 1000.0)
}

fn main() {
    let server = Server::start_with_users(
        &test_config("[limits]\nauth_attempts_per_minute = 100000\n"),
        &[("alice", PASSWORD)],
    );
    let pid = server.child.id();
    let token = common::login_token(&server, "alice", PASSWORD);
    let mut client = server.client();
    let mut rooms = Vec::new();
    for n in 0..ROOMS {
        let room = ok(client.json(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&token),
            &json!({ "name": format!("room {n}") }),
        ))["room_id"]
            .as_str()
            .expect("room_id")
            .to_owned();
        for m in 0..MESSAGES_PER_ROOM {
            send(&mut client, &token, &room, &format!("{n}-{m}"));
        }
        rooms.push(room);
    }
    let mut report = Report::new(&format!(
        "sliding sync, one user in {ROOMS} rooms ({MESSAGES_PER_ROOM} messages each)"
    ));
    report.memory("RSS before", rss_mib(pid, "VmRSS:"), None);

    for (label, last) in [
        ("initial request, [[0,19]]", 19),
        ("initial request, [[0,99]]", 99),
    ] {
        let mut samples = Vec::new();
        for _ in 0..10 {
            let started = Instant::now();
            let answer = ok(client.json("POST", PATH, Some(&token), &room_list(last)));
            samples.push(started.elapsed());
            assert_eq!(answer["lists"]["all_rooms"]["count"], ROOMS);
        }
        let (median, p95) = median_ms(&mut samples);
        report.millis(&format!("{label}, median"), median, None);
        report.millis(&format!("{label}, p95"), p95, None);
    }

    let first = ok(client.json("POST", PATH, Some(&token), &room_list(99)));
    let mut pos = first["pos"].as_str().expect("pos").to_owned();
    let mut samples = Vec::new();
    for n in 0..SAMPLES {
        let room = &rooms[(n * 37) % ROOMS];
        let event_id = send(&mut client, &token, room, &format!("new {n}"));
        let path = format!("{PATH}?pos={pos}&timeout=0");
        let started = Instant::now();
        let answer = ok(client.json("POST", &path, Some(&token), &room_list(99)));
        samples.push(started.elapsed());
        let timeline = &answer["rooms"][room]["timeline"];
        assert_eq!(timeline[0]["event_id"], event_id.as_str(), "{answer}");
        pos = answer["pos"].as_str().expect("pos").to_owned();
    }
    let (median, p95) = median_ms(&mut samples);
    report.millis("incremental, one new message, median", median, None);
    report.millis("incremental, one new message, p95", p95, None);

    let mut samples = Vec::new();
    for _ in 0..SAMPLES {
        let path = format!("{PATH}?pos={pos}&timeout=0");
        let started = Instant::now();
        let answer = ok(client.json("POST", &path, Some(&token), &room_list(99)));
        samples.push(started.elapsed());
        pos = answer["pos"].as_str().expect("pos").to_owned();
    }
    let (median, _) = median_ms(&mut samples);
    report.millis("incremental, nothing new, median", median, None);
    // For reference: the same client's round trip to the cheapest endpoint.
    let mut samples = Vec::new();
    for _ in 0..SAMPLES {
        let started = Instant::now();
        ok(client.get_with("/_matrix/client/v3/account/whoami", &token));
        samples.push(started.elapsed());
    }
    let (median, _) = median_ms(&mut samples);
    report.millis("for reference: GET whoami, median", median, None);
    report.memory(
        "RSS after",
        rss_mib(pid, "VmRSS:"),
        Some(common::budget::ACTIVE_RSS_MB),
    );
    report.memory(
        "RSS peak",
        rss_mib(pid, "VmHWM:"),
        Some(common::budget::PEAK_RSS_MB),
    );
    report.finish();
}

fn send(client: &mut common::http::Client, token: &str, room: &str, body: &str) -> String {
    let txn = format!(
        "b{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
    );
    ok(client.json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
        Some(token),
        &json!({ "msgtype": "m.text", "body": body }),
    ))["event_id"]
        .as_str()
        .expect("event_id")
        .to_owned()
}
