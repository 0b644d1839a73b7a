//! Hearth and Synapse side by side, in one run: `cargo bench --bench versus_synapse`.
//!
//! Starts a Synapse from PyPI (`HEARTH_TEST_SYNAPSE_PYTHON`, the `.venv-synapse` that
//! `scripts/test` installs; SQLite, as a family server would run it) next to Hearth, runs the
//! same client workload against both (the `workload` bench's day: 10 users, 10 rooms with
//! everyone in every room, 500 messages with a `/sync` of every user each 50, then 2,000 more
//! messages), and prints for both: the data directory (Synapse: its SQLite database with its
//! write-ahead log and its media store; Hearth: its data directory), cold start to the first
//! `200` on `/versions`, idle RSS, RSS after the workload, and send throughput with 8 clients
//! sending at once. Issue 14's goal: Hearth's data directory at most half of Synapse's.
//! Without Synapse the bench says so and prints nothing (CI installs it first).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::budget::{Report, disk_usage, rss_mib};
use common::federation::write_certificates;
use common::http::Client;
use common::synapse::{PASSWORD, Synapse, synapse_python};
use common::{Server, ok, test_config};
use serde_json::json;

const USERS: usize = 10;
const ROOMS: usize = 10;
const MESSAGES: usize = 500;
const MORE_MESSAGES: usize = 2000;
const CONCURRENT_CLIENTS: usize = 8;
const MESSAGES_PER_CLIENT: usize = 100;

/// One server's figures.
#[derive(Default)]
struct Figures {
    idle_rss: f64,
    after_rss: f64,
    disk: u64,
    throughput: f64,
    cold_start: Duration,
}

/// The workload on the server at `address` whose users (`@user{i}:{server_name}`) have
/// `tokens`: rooms made and joined, the day's messages with syncs, then 2,000 more.
/// Returns the rooms.
fn workload(address: SocketAddr, server_name: &str, tokens: &[String]) -> Vec<String> {
    let mut client = Client::plain(address);
    let invitees: Vec<String> = (1..USERS)
        .map(|i| format!("@user{i}:{server_name}"))
        .collect();
    let rooms: Vec<String> = (0..ROOMS)
        .map(|i| {
            ok(client.json(
                "POST",
                "/_matrix/client/v3/createRoom",
                Some(&tokens[0]),
                &json!({ "name": format!("room {i}"), "invite": invitees }),
            ))["room_id"]
                .as_str()
                .expect("room")
                .to_owned()
        })
        .collect();
    common::everyone_joins(&mut client, tokens, &rooms);
    let mut since = common::first_sync_batches(&mut client, tokens);
    for i in 0..MESSAGES + MORE_MESSAGES {
        let sender = i % USERS;
        let room = &rooms[i % ROOMS];
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/w{i}");
        ok(client.json(
            "PUT",
            &path,
            Some(&tokens[sender]),
            &json!({ "msgtype": "m.text", "body": format!("message {i}") }),
        ));
        if i < MESSAGES && i % 50 == 49 {
            for (user, token) in tokens.iter().enumerate() {
                let path = format!("/_matrix/client/v3/sync?since={}", since[user]);
                since[user] = ok(client.get_with(&path, token))["next_batch"]
                    .as_str()
                    .expect("batch")
                    .to_owned();
            }
        }
    }
    rooms
}

/// Messages per second with [`CONCURRENT_CLIENTS`] clients sending at once, each as its own
/// user into its own room.
fn throughput(address: SocketAddr, tokens: &[String], rooms: &[String]) -> f64 {
    common::concurrent_sends(
        address,
        tokens,
        rooms,
        CONCURRENT_CLIENTS,
        MESSAGES_PER_CLIENT,
        "c",
    )
}

fn login(address: SocketAddr, user: &str, password: &str) -> String {
    ok(Client::plain(address).json(
        "POST",
        "/_matrix/client/v3/login",
        None,
        &json!({ "type": "m.login.password",
                 "identifier": { "type": "m.id.user", "user": user },
                 "password": password }),
    ))["access_token"]
        .as_str()
        .expect("token")
        .to_owned()
}

/// Synapse's data: the SQLite database (with its write-ahead log) and the media store.
fn synapse_disk(dir: &Path) -> u64 {
    let database: u64 = ["homeserver.db", "homeserver.db-wal", "homeserver.db-shm"]
        .iter()
        .filter_map(|file| std::fs::metadata(dir.join(file)).ok())
        .map(|meta| meta.len())
        .sum();
    database + disk_usage(&dir.join("media"))
}

fn hearth_figures() -> Figures {
    let users: Vec<String> = (0..USERS).map(|i| format!("user{i}")).collect();
    let accounts: Vec<(&str, &str)> = users.iter().map(|name| (name.as_str(), PASSWORD)).collect();
    let mut server = Server::start_with_users(
        &test_config("[limits]\nauth_attempts_per_minute = 100000\n"),
        &accounts,
    );
    std::thread::sleep(Duration::from_secs(1));
    let mut figures = Figures {
        idle_rss: rss_mib(server.child.id(), "VmRSS:"),
        ..Figures::default()
    };
    let address = server.address("http");
    let tokens: Vec<String> = users
        .iter()
        .map(|user| login(address, user, PASSWORD))
        .collect();
    let rooms = workload(address, "localhost", &tokens);
    figures.after_rss = rss_mib(server.child.id(), "VmRSS:");
    figures.disk = disk_usage(&server.dir.join("data"));
    figures.throughput = throughput(address, &tokens, &rooms);

    // The stopped server keeps its temporary directory until the second start is done.
    let dir = server.dir.clone();
    server.signal("TERM");
    server
        .wait_exit(Duration::from_secs(15))
        .expect("Hearth stops");
    let started = Instant::now();
    let again = Server::start_in(&dir, &[], &[]).expect("Hearth starts again");
    let mut client = again.client();
    while !client
        .request("GET", "/_matrix/client/versions", &[], None)
        .is_ok_and(|response| response.status == 200)
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    figures.cold_start = started.elapsed();
    drop(again);
    drop(server);
    figures
}

fn synapse_figures(python: &str) -> Figures {
    let certificates = tempfile::tempdir().expect("tempdir");
    write_certificates(certificates.path());
    let mut synapse = Synapse::start(python, certificates.path());
    std::thread::sleep(Duration::from_secs(1));
    let mut figures = Figures {
        idle_rss: rss_mib(synapse.pid(), "VmRSS:"),
        ..Figures::default()
    };
    let tokens: Vec<String> = (0..USERS)
        .map(|i| synapse.register(python, &format!("user{i}")))
        .collect();
    let rooms = workload(synapse.client, &synapse.name, &tokens);
    figures.after_rss = rss_mib(synapse.pid(), "VmRSS:");
    figures.disk = synapse_disk(synapse.dir());
    figures.throughput = throughput(synapse.client, &tokens, &rooms);
    figures.cold_start = synapse.restart(python);
    figures
}

fn main() {
    let Some(python) = synapse_python() else {
        println!("versus_synapse: no Synapse (set HEARTH_TEST_SYNAPSE_PYTHON); skipped");
        return;
    };
    let hearth = hearth_figures();
    let synapse = synapse_figures(&python);

    let mib = |bytes: u64| bytes as f64 / 1048576.0;
    let mut report = Report::new(&format!(
        "Hearth beside Synapse (SQLite): {USERS} users, {ROOMS} rooms, {MESSAGES} messages with syncs + {MORE_MESSAGES} more"
    ));
    for (name, figures) in [("Hearth", &hearth), ("Synapse", &synapse)] {
        report.memory(&format!("{name}: data directory"), mib(figures.disk), None);
        report.millis(
            &format!("{name}: cold start to /versions"),
            figures.cold_start.as_secs_f64() * 1000.0,
            None,
        );
        report.memory(&format!("{name}: idle RSS"), figures.idle_rss, None);
        report.memory(
            &format!("{name}: RSS after the workload"),
            figures.after_rss,
            None,
        );
        report.figure(
            &format!("{name}: send, {CONCURRENT_CLIENTS} clients at once"),
            format!("{:.0} msg/s", figures.throughput),
        );
    }
    report.ratio(
        "Hearth's data directory per Synapse's",
        hearth.disk as f64 / synapse.disk as f64,
        Some(0.5),
    );
    report.finish();
}
