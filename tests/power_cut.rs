//! Power cuts (issue 14, item 8): the server runs with its data directory on a FUSE
//! filesystem that holds every write not yet made durable (`fsync`) and drops it at a
//! simulated power cut (see `power_cut/fs.rs` for the model). Under concurrent sends, the
//! server is killed at a random moment, the filesystem loses what was not synced, and the
//! server starts again on what is left. After every cut: the database opens, every message
//! acknowledged with `200` and an `event_id` is in `/messages` exactly once, a message whose
//! answer the cut swallowed is stored once when the client sends it again with its
//! transaction ID, sending an acknowledged one again returns its `event_id`, and every
//! acknowledged upload downloads with its bytes.
//!
//! `HEARTH_POWER_CUTS` sets the number of cuts (default 100), `HEARTH_POWER_CUT_SEED` the
//! random seed (printed, to replay a failure). Needs `/dev/fuse` and root (or `fusermount3`).

mod common;
#[path = "power_cut/fs.rs"]
mod fs;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, http, ok, test_config};
use fuser::BackgroundSession;
use serde_json::json;

const SENDERS: usize = 4;
/// Uploads per round: each is checked after its cut and again after the last one.
const UPLOADS_PER_ROUND: usize = 4;
const PASSWORD: &str = "correct horse battery";

/// One message a sender tried: its transaction ID, body and what the server answered.
#[derive(Clone, Debug)]
struct Sent {
    txn: String,
    body: String,
    sender: usize,
    event_id: Option<String>,
}

/// The mounted filesystem and the server on it; the server dies before the unmount.
struct Rig {
    dir: PathBuf,
    state: Arc<Mutex<fs::State>>,
    session: Option<BackgroundSession>,
    server: Option<Server>,
}

impl Rig {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn mount(&mut self) {
        let session = fs::mount(&self.state, &self.data()).unwrap_or_else(|err| {
            panic!("FUSE mount failed ({err}): the power-cut test needs /dev/fuse, root and fuse3")
        });
        self.session = Some(session);
    }

    fn unmount(&mut self) {
        if let Some(session) = self.session.take() {
            session.umount_and_join().expect("unmount");
        }
    }

    fn start(&mut self) -> Result<(), String> {
        let server = Server::start_in(&self.dir, &[], &[])?;
        self.server = Some(server);
        Ok(())
    }

    fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
    }

    /// The power cut: the process dies, and the disk keeps only what it made durable.
    fn cut(&mut self, cut: fs::Cut) {
        if let Some(mut server) = self.server.take() {
            server.signal("KILL");
            server.wait_exit(Duration::from_secs(10)).expect("killed");
        }
        self.unmount();
        self.state.lock().expect("state").cut(cut);
        self.mount();
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        drop(self.server.take());
        if let Some(session) = self.session.take() {
            let _ = session.umount_and_join();
        }
    }
}

fn seed() -> u64 {
    std::env::var("HEARTH_POWER_CUT_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock");
            now.as_secs().rotate_left(32) ^ u64::from(now.subsec_nanos())
        })
}

struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

fn send_path(room: &str, txn: &str) -> String {
    format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
        common::query_encode(room)
    )
}

/// `PUT` of one message; `None` when the connection broke (the cut came first).
fn send(client: &mut http::Client, token: &str, room: &str, sent: &Sent) -> Option<http::Response> {
    let bearer = format!("Bearer {token}");
    let body =
        serde_json::to_vec(&json!({ "msgtype": "m.text", "body": sent.body })).expect("json");
    client
        .request(
            "PUT",
            &send_path(room, &sent.txn),
            &[
                ("Authorization", &bearer),
                ("Content-Type", "application/json"),
            ],
            Some(&body),
        )
        .ok()
}

/// Sends messages until `stop`, each with a fresh transaction ID.
fn sender_loop(
    address: std::net::SocketAddr,
    token: String,
    room: String,
    sender: usize,
    round: usize,
    stop: Arc<AtomicBool>,
) -> Vec<Sent> {
    let mut client = http::Client::plain(address);
    let mut sent = Vec::new();
    for number in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut message = Sent {
            txn: format!("r{round}s{sender}n{number}"),
            body: format!("round {round} sender {sender} message {number}"),
            sender,
            event_id: None,
        };
        let answer = send(&mut client, &token, &room, &message);
        let broken = answer.is_none();
        if let Some(answer) = answer
            && answer.status == 200
        {
            message.event_id = answer.json()["event_id"].as_str().map(str::to_owned);
        }
        sent.push(message);
        if broken {
            break;
        }
    }
    sent
}

/// Uploads small files until `stop`; returns the `mxc://` URI and bytes of each one the
/// server acknowledged (each file different, so each is stored anew, often in a new folder).
fn uploader_loop(
    address: std::net::SocketAddr,
    token: String,
    round: usize,
    stop: Arc<AtomicBool>,
) -> Vec<(String, Vec<u8>)> {
    let mut client = http::Client::plain(address);
    let bearer = format!("Bearer {token}");
    let mut uploaded = Vec::new();
    for number in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if uploaded.len() >= UPLOADS_PER_ROUND {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let bytes = format!("file {number} of round {round}\n").repeat(1 + number % 300);
        let answer = client.request(
            "POST",
            "/_matrix/media/v3/upload",
            &[("Authorization", &bearer), ("Content-Type", "text/plain")],
            Some(bytes.as_bytes()),
        );
        let Ok(answer) = answer else { break };
        if let Some(uri) = answer.json()["content_uri"].as_str() {
            uploaded.push((uri.to_owned(), bytes.into_bytes()));
        }
    }
    uploaded
}

/// Every `m.room.message` body in the room, with its event ID, oldest last.
fn room_messages(server: &Server, token: &str, room: &str) -> Vec<(String, String)> {
    let mut client = server.client();
    let mut found = Vec::new();
    let mut from = String::new();
    loop {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000{from}",
            common::query_encode(room)
        );
        let page = ok(client.get_with(&path, token));
        let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
        for event in &chunk {
            if event["type"] == "m.room.message" {
                found.push((
                    event["event_id"].as_str().unwrap_or_default().to_owned(),
                    event["content"]["body"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                ));
            }
        }
        match page["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = format!("&from={}", common::query_encode(end)),
            _ => break,
        }
    }
    found
}

#[derive(Debug, Default)]
struct Figures {
    cuts: usize,
    acknowledged: usize,
    retried: usize,
    lost: usize,
    duplicated: usize,
    txn_mismatch: usize,
    failed_to_open: usize,
    uploads: usize,
    uploads_lost: usize,
    slowest_start: Duration,
}

#[test]
fn acknowledged_messages_survive_power_cuts() {
    let cuts: usize = std::env::var("HEARTH_POWER_CUTS")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(100);
    let seed = seed();
    eprintln!("power cuts: {cuts}, seed {seed} (HEARTH_POWER_CUT_SEED replays it)");
    let mut random = Random(seed | 1);
    let tempdir = tempfile::tempdir().expect("tempdir");
    let dir = tempdir.path().to_owned();
    std::fs::write(dir.join("hearth.toml"), test_config("")).expect("config");
    std::fs::create_dir(dir.join("data")).expect("mountpoint");
    let mut rig = Rig {
        dir: dir.clone(),
        state: Arc::new(Mutex::new(fs::State::new(seed))),
        session: None,
        server: None,
    };
    rig.mount();

    // Accounts and the room, made once; every later step relies on them being durable.
    for sender in 0..SENDERS {
        let output = common::hearth(
            &dir,
            &["user", "add", &format!("s{sender}")],
            &format!("{PASSWORD}\n"),
        );
        assert!(
            output.status.success(),
            "user add: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    rig.start().expect("first start");
    let tokens: Vec<String> = (0..SENDERS)
        .map(|sender| common::login_token(rig.server(), &format!("s{sender}"), PASSWORD))
        .collect();
    let mut client = rig.server().client();
    let room = ok(client.json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&tokens[0]),
        &json!({ "preset": "public_chat" }),
    ))["room_id"]
        .as_str()
        .expect("room_id")
        .to_owned();
    for token in &tokens[1..] {
        ok(client.json(
            "POST",
            &format!("/_matrix/client/v3/join/{}", common::query_encode(&room)),
            Some(token),
            &json!({}),
        ));
    }

    let mut figures = Figures::default();
    let mut acknowledged: BTreeMap<String, Sent> = BTreeMap::new(); // by event ID
    let mut problems: Vec<String> = Vec::new();
    let mut uploads: Vec<(String, Vec<u8>)> = Vec::new();
    let mut checked_uploads = 0;
    let started = Instant::now();
    for round in 0..cuts {
        let cut = if round % 2 == 0 {
            fs::Cut::Strict
        } else {
            fs::Cut::Reordered
        };
        let stop = Arc::new(AtomicBool::new(false));
        let address = rig.server().address("http");
        let senders: Vec<_> = (0..SENDERS)
            .map(|sender| {
                let (token, room, stop) = (tokens[sender].clone(), room.clone(), stop.clone());
                std::thread::spawn(move || sender_loop(address, token, room, sender, round, stop))
            })
            .collect();
        let uploader = {
            let (token, stop) = (tokens[SENDERS - 1].clone(), stop.clone());
            std::thread::spawn(move || uploader_loop(address, token, round, stop))
        };
        std::thread::sleep(Duration::from_millis(50 + random.below(400)));
        rig.cut(cut);
        stop.store(true, Ordering::Relaxed);
        let sent: Vec<Sent> = senders
            .into_iter()
            .flat_map(|sender| sender.join().expect("sender"))
            .collect();
        uploads.extend(uploader.join().expect("uploader"));
        figures.cuts += 1;

        let begun = Instant::now();
        if let Err(log) = rig.start() {
            figures.failed_to_open += 1;
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            problems.push(format!(
                "cut {round} ({cut:?}): the server did not start:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
            break;
        }
        figures.slowest_start = figures.slowest_start.max(begun.elapsed());

        // What the cut interrupted, a client sends again with the same transaction ID.
        let mut client = rig.server().client();
        for mut message in sent {
            match &message.event_id {
                Some(event_id) => {
                    figures.acknowledged += 1;
                    // A few acknowledged ones again: the same event ID must come back.
                    if random.below(8) == 0 {
                        let answer = send(&mut client, &tokens[message.sender], &room, &message)
                            .expect("resend");
                        let again = answer.json()["event_id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        if answer.status != 200 || &again != event_id {
                            figures.txn_mismatch += 1;
                            problems.push(format!(
                                "cut {round}: resending txn {} gave {} {again} instead of {event_id}",
                                message.txn, answer.status
                            ));
                        }
                    }
                    acknowledged.insert(event_id.clone(), message);
                }
                None => {
                    let answer = send(&mut client, &tokens[message.sender], &room, &message)
                        .expect("retry after the cut");
                    let body = answer.json();
                    let Some(event_id) = body["event_id"].as_str() else {
                        problems.push(format!(
                            "cut {round}: retry of {} answered {} {body}",
                            message.txn, answer.status
                        ));
                        continue;
                    };
                    figures.retried += 1;
                    message.event_id = Some(event_id.to_owned());
                    acknowledged.insert(event_id.to_owned(), message);
                }
            }
        }

        // Every message ever acknowledged, once, by event ID and by body.
        let stored = room_messages(rig.server(), &tokens[0], &room);
        let mut by_id: HashMap<&str, usize> = HashMap::new();
        let mut by_body: HashMap<&str, usize> = HashMap::new();
        for (event_id, body) in &stored {
            *by_id.entry(event_id).or_default() += 1;
            *by_body.entry(body).or_default() += 1;
        }
        for (event_id, message) in &acknowledged {
            let ids = by_id.get(event_id.as_str()).copied().unwrap_or(0);
            let bodies = by_body.get(message.body.as_str()).copied().unwrap_or(0);
            if ids == 0 {
                figures.lost += 1;
                problems.push(format!(
                    "cut {round} ({cut:?}): lost {event_id} ({})",
                    message.body
                ));
            } else if ids > 1 || bodies > 1 {
                figures.duplicated += 1;
                problems.push(format!("cut {round} ({cut:?}): {event_id} ({}) stored {ids} times, its body {bodies} times", message.body));
            }
        }
        // This round's acknowledged uploads, with their bytes (all of them after the last).
        figures.uploads = uploads.len();
        let checked = if round + 1 == cuts {
            0
        } else {
            checked_uploads
        };
        checked_uploads = uploads.len();
        for (uri, bytes) in &uploads[checked..] {
            let media = uri.strip_prefix("mxc://").unwrap_or(uri);
            let answer = client.get_with(
                &format!("/_matrix/client/v1/media/download/{media}"),
                &tokens[0],
            );
            if answer.status != 200 || &answer.body != bytes {
                figures.uploads_lost += 1;
                problems.push(format!(
                    "cut {round} ({cut:?}): upload {uri} ({} bytes) answers {} with {} bytes",
                    bytes.len(),
                    answer.status,
                    answer.body.len()
                ));
            }
        }
        if !problems.is_empty() {
            break;
        }
    }
    let counters = rig.state.lock().expect("state").counters;
    let bytes = rig.state.lock().expect("state").file_bytes();
    eprintln!(
        "power cuts: {} in {:.0?} (seed {seed}); acknowledged {} (+{} sent again after a cut), lost {}, duplicated {}, \
         txn mismatches {}, failed to open {}; uploads acknowledged {}, lost {}; slowest restart {:.0?}; data {} KiB; \
         fs: {} writes, {} file syncs, {} dir syncs, dropped {} KiB and {} dir entries, {} writes kept by reordered cuts",
        figures.cuts,
        started.elapsed(),
        figures.acknowledged,
        figures.retried,
        figures.lost,
        figures.duplicated,
        figures.txn_mismatch,
        figures.failed_to_open,
        figures.uploads,
        figures.uploads_lost,
        figures.slowest_start,
        bytes / 1024,
        counters.writes,
        counters.file_syncs,
        counters.dir_syncs,
        counters.dropped_bytes / 1024,
        counters.dropped_entries,
        counters.kept_writes,
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
