//! A family's day on one Hearth, measured: `cargo bench --bench workload`.
//!
//! 10 users, 10 rooms (everyone in every room), 500 messages round-robin, with syncs; then
//! prints resident memory, the time from a message's send to the recipient's waiting
//! `/sync` answering (budget: 5 ms), send throughput and disk use. Prints figures, asserts
//! nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::http::Client;
use common::{Server, test_config};
use serde_json::{Value, json};

const USERS: usize = 10;
const ROOMS: usize = 10;
const MESSAGES: usize = 500;
const LATENCY_SAMPLES: usize = 50;
const PASSWORD: &str = "benchmark password";

fn rss_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with(field))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn ok(response: common::http::Response) -> Value {
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()
}

fn disk_usage(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| {
                    let path = entry.path();
                    if path.is_dir() {
                        disk_usage(&path)
                    } else {
                        entry.metadata().map_or(0, |m| m.len())
                    }
                })
                .sum()
        })
        .unwrap_or(0)
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
    let server = Server::start_with_users(
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
            response.json()["next_batch"]
                .as_str()
                .expect("batch")
                .to_owned()
        });
        std::thread::sleep(Duration::from_millis(30));
        let sent = Instant::now();
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/l{sample}");
        ok(client.json(
            "PUT",
            &path,
            Some(&tokens[0]),
            &json!({ "msgtype": "m.text", "body": "ping" }),
        ));
        let received = arrived.recv().expect("sync answered");
        latencies.push(received.duration_since(sent));
        since[1] = waiter.join().expect("waiter");
    }
    latencies.sort();
    let peak = rss_mib(pid, "VmHWM:");
    let disk = disk_usage(&server.dir.join("data")) as f64 / 1048576.0;

    println!("hearth workload benchmark ({USERS} users, {ROOMS} rooms, {MESSAGES} messages)");
    println!("  RSS idle                  {idle:>8.1} MiB");
    println!("  RSS after the workload    {after_workload:>8.1} MiB (budget: 64 MiB steady)");
    println!("  peak RSS                  {peak:>8.1} MiB");
    println!(
        "  send throughput           {:>8.0} messages/s ({:.2} ms each, flushed before each 200)",
        MESSAGES as f64 / sending.as_secs_f64(),
        sending.as_secs_f64() * 1000.0 / MESSAGES as f64
    );
    println!(
        "  send-to-sync latency      {:>8.2} ms median, {:.2} p90, {:.2} max (budget 5 ms)",
        percentile(&latencies, 50),
        percentile(&latencies, 90),
        percentile(&latencies, 100)
    );
    println!("  data directory            {disk:>8.1} MiB");
}
