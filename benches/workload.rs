//! A family's day on one Hearth, measured: `cargo bench --bench workload`.
//!
//! 10 users, 10 rooms (everyone in every room), 500 messages round-robin, with syncs; then
//! prints resident memory, the time from a message's send to the recipient's waiting
//! `/sync` answering with it (each timed `/sync` is checked to carry the message's event
//! ID), send throughput and disk use against the canonical JSON of the stored events. Each
//! figure is printed with its budget from DESIGN.md and `ok` or `OVER`; a figure over
//! budget does not fail the run.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::budget::{self, Report, disk_usage, rss_mib};
use common::http::Client;
use common::{Server, test_config};
use serde_json::{Value, json};

const USERS: usize = 10;
const ROOMS: usize = 10;
const MESSAGES: usize = 500;
const LATENCY_SAMPLES: usize = 50;
const PASSWORD: &str = "benchmark password";

fn ok(response: common::http::Response) -> Value {
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()
}

fn percentile(sorted: &[Duration], p: usize) -> f64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn main() {
    let users: Vec<(String, &str)> = (0..USERS).map(|i| (format!("user{i}"), PASSWORD)).collect();
    let user_refs: Vec<(&str, &str)> = users
        .iter()
        .map(|(name, password)| (name.as_str(), *password))
        .collect();
    let mut server = Server::start_with_users(
        &test_config("[limits]\nauth_attempts_per_minute = 100000\n"),
        &user_refs,
    );
    let pid = server.child.id();
    let idle = rss_mib(pid, "VmRSS:");
    let mut client = server.client();
    let tokens: Vec<String> = users
        .iter()
        .map(|(name, _)| {
            ok(client.json(
                "POST",
                "/_matrix/client/v3/login",
                None,
                &json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": name }, "password": PASSWORD }),
            ))["access_token"]
                .as_str()
                .expect("token")
                .to_owned()
        })
        .collect();
    let invitees: Vec<String> = (1..USERS).map(|i| format!("@user{i}:localhost")).collect();
    let rooms: Vec<String> = (0..ROOMS)
        .map(|i| {
            let body = json!({ "name": format!("room {i}"), "invite": invitees });
            ok(client.json(
                "POST",
                "/_matrix/client/v3/createRoom",
                Some(&tokens[0]),
                &body,
            ))["room_id"]
                .as_str()
                .expect("room")
                .to_owned()
        })
        .collect();
    for token in &tokens[1..] {
        for room in &rooms {
            ok(client.json(
                "POST",
                &format!("/_matrix/client/v3/rooms/{room}/join"),
                Some(token),
                &json!({}),
            ));
        }
    }
    let mut since: Vec<String> = tokens
        .iter()
        .map(|token| {
            ok(client.get_with("/_matrix/client/v3/sync", token))["next_batch"]
                .as_str()
                .expect("batch")
                .to_owned()
        })
        .collect();

    let started = Instant::now();
    for i in 0..MESSAGES {
        let sender = i % USERS;
        let room = &rooms[i % ROOMS];
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/w{i}");
        ok(client.json(
            "PUT",
            &path,
            Some(&tokens[sender]),
            &json!({ "msgtype": "m.text", "body": format!("message {i}") }),
        ));
        if i % 50 == 49 {
            for (user, token) in tokens.iter().enumerate() {
                let path = format!("/_matrix/client/v3/sync?since={}", since[user]);
                since[user] = ok(client.get_with(&path, token))["next_batch"]
                    .as_str()
                    .expect("batch")
                    .to_owned();
            }
        }
    }
    let sending = started.elapsed();
    let after_workload = rss_mib(pid, "VmRSS:");

    // Send-to-sync latency: user1 waits in /sync; user0 sends; time until user1 has it.
    let address = server.address("http");
    let mut latencies = Vec::new();
    let room = rooms[0].clone();
    for sample in 0..LATENCY_SAMPLES {
        let since_now = ok(client.get_with(
            &format!("/_matrix/client/v3/sync?since={}", since[1]),
            &tokens[1],
        ))["next_batch"]
            .as_str()
            .expect("batch")
            .to_owned();
        since[1] = since_now.clone();
        let (done, arrived) = mpsc::channel();
        let token = tokens[1].clone();
        let waiter = std::thread::spawn(move || {
            let mut client = Client::plain(address);
            let path = format!("/_matrix/client/v3/sync?since={since_now}&timeout=10000");
            let response = client.get_with(&path, &token);
            done.send(Instant::now()).expect("report");
            ok(response)
        });
        std::thread::sleep(Duration::from_millis(30));
        let sent = Instant::now();
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/l{sample}");
        let event_id = ok(client.json(
            "PUT",
            &path,
            Some(&tokens[0]),
            &json!({ "msgtype": "m.text", "body": "ping" }),
        ))["event_id"]
            .as_str()
            .expect("event_id")
            .to_owned();
        let received = arrived.recv().expect("sync answered");
        let synced = waiter.join().expect("waiter");
        // The time counts only if this /sync is the one that carried the message.
        let carried = synced["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|event| event["event_id"] == event_id.as_str());
        assert!(
            carried,
            "sample {sample}: the timed /sync did not carry {event_id}: {synced}"
        );
        latencies.push(received.duration_since(sent));
        since[1] = synced["next_batch"].as_str().expect("batch").to_owned();
    }
    latencies.sort();
    let peak = rss_mib(pid, "VmHWM:");
    let data = server.dir.join("data");
    server.signal("TERM");
    server
        .wait_exit(Duration::from_secs(15))
        .expect("the server stops");
    let disk = disk_usage(&data);
    let (events, canonical) = budget::canonical_json_of_events(&data);

    let mut report = Report::new(&format!(
        "hearth workload benchmark ({USERS} users, {ROOMS} rooms, {MESSAGES} messages)"
    ));
    report.memory("RSS idle", idle, Some(budget::IDLE_RSS_MB));
    report.memory(
        "RSS after the workload",
        after_workload,
        Some(budget::ACTIVE_RSS_MB),
    );
    report.memory("peak RSS (VmHWM)", peak, Some(budget::PEAK_RSS_MB));
    report.figure(
        "send throughput (flushed before 200)",
        format!("{:.0} msg/s", MESSAGES as f64 / sending.as_secs_f64()),
    );
    report.millis(
        "send time, each",
        sending.as_secs_f64() * 1000.0 / MESSAGES as f64,
        None,
    );
    for (label, p) in [("median", 50), ("p90", 90), ("max", 100)] {
        report.millis(
            &format!("send-to-sync latency, {label}"),
            percentile(&latencies, p),
            Some(budget::SEND_TO_SYNC_MS),
        );
    }
    report.memory("data directory", disk as f64 / 1048576.0, None);
    report.memory(
        &format!("canonical JSON of {events} events"),
        canonical as f64 / 1048576.0,
        None,
    );
    report.ratio(
        "disk per canonical JSON",
        disk as f64 / canonical as f64,
        Some(budget::DISK_PER_CANONICAL_JSON),
    );
    report.finish();
}
