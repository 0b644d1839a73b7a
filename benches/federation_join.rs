//! Joining a large room over federation, measured: `cargo bench --bench federation_join`.
//!
//! A first Hearth holds a room with 10,000 state events (set by its owner: half of them
//! member events of users of another server, banned, half other state); a user of a
//! second Hearth joins it over TLS on loopback. Prints how long the join took and the
//! joining server's resident memory before, at its peak, and after. Budget (DESIGN.md):
//! 64 MB steady, 128 MB peak. Prints figures, asserts nothing but success.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::federation::{free_port, start, write_certificates};
use common::http::Client;
use common::{ok, query_encode};
use serde_json::json;

const STATE_EVENTS: usize = 10_000;
const MESSAGES: usize = 500;
const PASSWORD: &str = "correct horse battery";

fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with(field))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn main() {
    let certificates = tempfile::tempdir().expect("tempdir");
    write_certificates(certificates.path());
    let (port_a, port_b) = (free_port(), free_port());
    let name_a = format!("127.0.0.1:{port_a}");
    let name_b = format!("localhost:{port_b}");
    let a = start(certificates.path(), &name_a, port_a, &[], &["alice"]);
    let b = start(certificates.path(), &name_b, port_b, &[], &["bob"]);
    let alice = common::login_token(&a, "alice", PASSWORD);
    let bob = common::login_token(&b, "bob", PASSWORD);

    let mut client = Client::plain(a.address("http"));
    let room = ok(client.json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&alice),
        &json!({ "preset": "public_chat", "name": "Big room" }),
    ))["room_id"]
        .as_str()
        .expect("room")
        .to_owned();
    let filling = Instant::now();
    // Half member events (large rooms are mostly members: each is indexed by user too),
    // half other state.
    for i in 0..STATE_EVENTS {
        if i % 2 == 0 {
            ok(client.json(
                "POST",
                &format!("/_matrix/client/v3/rooms/{room}/ban"),
                Some(&alice),
                &json!({ "user_id": format!("@member{i}:elsewhere.example"), "reason": "bench" }),
            ));
        } else {
            ok(client.json(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{room}/state/org.example.bench/key{i}"),
                Some(&alice),
                &json!({ "i": i, "padding": "a state event of a large room" }),
            ));
        }
    }
    let filled_in = filling.elapsed();

    let resident_before = status_mib(a.child.id(), "VmRSS:");
    let pid = b.child.id();
    let before = status_mib(pid, "VmRSS:");
    let joining = Instant::now();
    let joined = Client::plain(b.address("http")).json(
        "POST",
        &format!(
            "/_matrix/client/v3/join/{}?via={}",
            query_encode(&room),
            query_encode(&name_a)
        ),
        Some(&bob),
        &json!({}),
    );
    let took = joining.elapsed();
    ok(joined);
    let peak = status_mib(pid, "VmHWM:");
    let after = status_mib(pid, "VmRSS:");
    let size_b = dir_size(&b);
    let resident_peak = status_mib(a.child.id(), "VmHWM:");

    // Then messages in that room, from the first server's user to the joined server: the
    // receiving side checks each against the large state (signatures, auth, soft fail).
    let sending = Instant::now();
    for i in 0..MESSAGES {
        ok(client.json(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/bench{i}"),
            Some(&alice),
            &json!({ "msgtype": "m.text", "body": format!("message {i}") }),
        ));
    }
    let sent_in = sending.elapsed();
    let last = format!("message {}", MESSAGES - 1);
    let mut receiving = Client::plain(b.address("http"));
    let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1");
    while receiving.get_with(&path, &bob).json()["chunk"][0]["content"]["body"]
        .as_str()
        .is_none_or(|body| body != last)
    {
        assert!(sending.elapsed().as_secs() < 300, "messages never arrived");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let delivered_in = sending.elapsed();
    let after_messages = status_mib(pid, "VmRSS:");
    if std::env::var_os("HEARTH_BENCH_MEMORY_LOG").is_some() {
        for line in b.log_text().lines() {
            if line.contains("memory") {
                println!("{line}");
            }
        }
    }

    println!("hearth federation join benchmark ({STATE_EVENTS} state events)");
    println!(
        "  room filled on the first server   {:.1} s ({:.0} state events/s)",
        filled_in.as_secs_f64(),
        STATE_EVENTS as f64 / filled_in.as_secs_f64()
    );
    println!(
        "  join over federation              {:.2} s",
        took.as_secs_f64()
    );
    println!("  joining server RSS before         {before:.1} MiB");
    println!("  joining server peak RSS (VmHWM)   {peak:.1} MiB (budget 128 MiB)");
    println!("  joining server RSS after          {after:.1} MiB (budget 64 MiB steady)");
    println!(
        "  {MESSAGES} messages sent, then received  sent in {:.2} s, all received after {:.2} s ({:.0} messages/s over federation)",
        sent_in.as_secs_f64(),
        delivered_in.as_secs_f64(),
        MESSAGES as f64 / delivered_in.as_secs_f64()
    );
    println!("  joining server RSS after messages {after_messages:.1} MiB");
    println!(
        "  resident server RSS before / peak {resident_before:.1} / {resident_peak:.1} MiB (peak includes filling the room)"
    );
    println!(
        "  joining server data directory     {:.1} MiB",
        size_b as f64 / 1_048_576.0
    );
}

fn dir_size(server: &common::Server) -> u64 {
    fn walk(path: &std::path::Path) -> u64 {
        std::fs::read_dir(path)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| match entry.metadata() {
                        Ok(meta) if meta.is_dir() => walk(&entry.path()),
                        Ok(meta) => meta.len(),
                        Err(_) => 0,
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(&server.dir.join("data"))
}
