//! Disk growth while events queue for a server that is down: `cargo bench --bench
//! outbound_backlog` (or, in the debug profile, `cargo test --bench outbound_backlog`).
//!
//! Two real Hearths, A and B, share a room (B's user joined it over federation); A also has
//! a room of its own. B is killed. A's user sends 5,000 messages to the room of its own
//! (the baseline: what storing the events costs), then 5,000 to the shared room, whose every
//! event is for B, which is down. The difference between the two growths of A's data
//! directory is what the outbound queue of a dead server costs on disk (sled grows its
//! file in segments and keeps overwritten values until it cleans them, so this figure is
//! coarse); the entries and bytes left in the outbound queues once A stopped are exact.
//! Printed, not judged against a budget.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::budget::{Report, disk_usage};
use common::federation::{Pair, create_room};
use common::{Server, ok};
use serde_json::json;

const MESSAGES: usize = 5_000;

/// Sends [`MESSAGES`] messages to `room`, one client connection kept alive.
fn send_all(server: &Server, token: &str, room: &str, tag: &str) -> Duration {
    let mut client = server.client();
    let started = Instant::now();
    for n in 0..MESSAGES {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{tag}{n}");
        let content = json!({ "msgtype": "m.text", "body": format!("{tag} message {n}") });
        ok(client.json("PUT", &path, Some(token), &content));
    }
    started.elapsed()
}

/// The data directory's bytes once the outbound follower and senders had time to settle.
fn settled_usage(server: &Server) -> u64 {
    std::thread::sleep(Duration::from_secs(5));
    disk_usage(&server.dir.join("data"))
}

fn main() {
    let pair = Pair::start(&["alice"], &["bob"]);
    let alice = pair.login_a("alice");
    let bob = pair.login_b("bob");
    let shared = pair.shared_room(&alice, &json!({ "preset": "public_chat" }), &[&bob]);
    let own = create_room(&pair.a, &alice, &json!({ "preset": "private_chat" }));
    let mut b = pair.b;
    b.signal("KILL");
    assert!(b.wait_exit(Duration::from_secs(15)).is_some(), "B stops");
    let a = pair.a;

    let start = settled_usage(&a);
    let own_time = send_all(&a, &alice, &own, "own");
    let after_own = settled_usage(&a);
    let shared_time = send_all(&a, &alice, &shared, "shared");
    let after_shared = settled_usage(&a);
    let sent_lines = a.log_text().matches("sending failed").count();

    let own_growth = after_own.saturating_sub(start);
    let shared_growth = after_shared.saturating_sub(after_own);
    let mut report = Report::new(&format!(
        "outbound backlog: {MESSAGES} messages to a room of A's own, then {MESSAGES} to a room shared with B, which is down"
    ));
    let mib = |bytes: u64| bytes as f64 / 1_048_576.0;
    report.memory("data directory at start", mib(start), None);
    report.memory("growth, room of A's own", mib(own_growth), None);
    report.memory("growth, room shared with dead B", mib(shared_growth), None);
    report.figure(
        "queue cost (shared − own)",
        format!(
            "{:.1} KiB",
            (shared_growth as f64 - own_growth as f64) / 1024.0
        ),
    );
    report.millis(
        "send time per message, own room",
        own_time.as_secs_f64() * 1000.0 / MESSAGES as f64,
        None,
    );
    report.millis(
        "send time per message, shared room",
        shared_time.as_secs_f64() * 1000.0 / MESSAGES as f64,
        None,
    );
    report.figure("failed sends logged", sent_lines.to_string());
    let collapsed = a.log_text().contains("backlog collapses");
    report.figure("backlog collapsed (catch-up)", collapsed.to_string());
    let mut a = a;
    a.signal("TERM");
    assert!(a.wait_exit(Duration::from_secs(30)).is_some(), "A stops");
    let storage = hearth::storage::Storage::open(&a.dir.join("data"), 1 << 20).expect("open");
    let (entries, bytes) = storage.outbound_footprint().expect("footprint");
    report.figure("outbound queue entries", entries.to_string());
    report.figure(
        "outbound queue bytes",
        format!("{:.1} KiB", bytes as f64 / 1024.0),
    );
    drop(storage);
    drop(a);

    report.finish();
}
