//! `hearth backup DIR` and `hearth restore DIR` (issue 14, item 3): a backup taken while
//! clients keep sending holds every message acknowledged before it started, the media
//! byte for byte and the same signing key; a stopped server backs up the same way; and
//! what is not a whole backup (or not an empty place to restore into) is refused with a
//! clear message and a non-zero exit.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, hearth, login_token, ok, test_config};
use serde_json::{Value, json};

const PASSWORD: &str = "a family password";
const SENDERS: usize = 4;

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `hearth ARGS` in `dir` and expects it to succeed; returns its output.
fn succeeds(dir: &Path, args: &[&str]) -> String {
    let output = hearth(dir, args, "");
    assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `hearth ARGS` in `dir` and expects it to fail; returns what it printed on stderr.
fn fails(dir: &Path, args: &[&str]) -> String {
    let output = hearth(dir, args, "");
    assert!(!output.status.success(), "{args:?} succeeded");
    stderr(&output)
}

fn create_room(server: &Server, token: &str) -> String {
    ok(server.client().json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(token),
        &json!({ "preset": "public_chat" }),
    ))["room_id"]
        .as_str()
        .expect("room")
        .to_owned()
}

fn join(server: &Server, token: &str, room: &str) {
    ok(server.client().json(
        "POST",
        &format!("/_matrix/client/v3/join/{room}"),
        Some(token),
        &json!({}),
    ));
}

fn send(client: &mut common::http::Client, token: &str, room: &str, txn: &str) -> Option<String> {
    let response = client.json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
        Some(token),
        &json!({ "msgtype": "m.text", "body": txn }),
    );
    (response.status == 200)
        .then(|| response.json()["event_id"].as_str().map(str::to_owned))
        .flatten()
}

fn upload(server: &Server, token: &str, body: &[u8]) -> String {
    let bearer = format!("Bearer {token}");
    let answer = ok(server
        .client()
        .request(
            "POST",
            "/_matrix/media/v3/upload",
            &[
                ("Authorization", &bearer),
                ("Content-Type", "application/octet-stream"),
            ],
            Some(body),
        )
        .expect("upload"));
    answer["content_uri"]
        .as_str()
        .and_then(|uri| uri.strip_prefix("mxc://"))
        .expect("content uri")
        .to_owned()
}

fn download(server: &Server, token: &str, media: &str) -> Vec<u8> {
    let answer = server
        .client()
        .get_with(&format!("/_matrix/client/v1/media/download/{media}"), token);
    assert_eq!(answer.status, 200, "{media}");
    answer.body
}

/// Every event ID of the room's timeline, by `/messages` backwards from the end.
fn timeline(server: &Server, token: &str, room: &str) -> HashSet<String> {
    let mut client = server.client();
    let mut ids = HashSet::new();
    let mut from: Option<String> = None;
    loop {
        let path = match &from {
            Some(from) => format!(
                "/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100&from={}",
                common::query_encode(from)
            ),
            None => format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100"),
        };
        let page = ok(client.get_with(&path, token));
        let chunk = page["chunk"].as_array().expect("chunk");
        for event in chunk {
            ids.insert(event["event_id"].as_str().expect("id").to_owned());
        }
        match page["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
            _ => return ids,
        }
    }
}

fn server_keys(server: &Server) -> Value {
    let keys = ok(server.client().get("/_matrix/key/v2/server"));
    json!({ "verify_keys": keys["verify_keys"], "old_verify_keys": keys["old_verify_keys"] })
}

/// Deterministic bytes of `len` (a xorshift stream), so a copy is checked byte for byte.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// A new directory with the same config (same server name, data in `data`), no data yet.
fn fresh_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hearth.toml"), test_config("")).expect("config");
    dir
}

#[test]
fn a_backup_under_write_load_restores_every_acknowledged_message() {
    let server = Server::start_with_users(
        &test_config("[limits]\nauth_attempts_per_minute = 100000\n"),
        &[("alice", PASSWORD), ("bob", PASSWORD)],
    );
    let alice = login_token(&server, "alice", PASSWORD);
    let bob = login_token(&server, "bob", PASSWORD);
    let room = create_room(&server, &alice);
    join(&server, &bob, &room);
    let pictures: Vec<(String, Vec<u8>)> = [(1, 300_000), (2, 10), (3, 70_000)]
        .into_iter()
        .map(|(seed, len)| {
            let body = bytes(seed, len);
            (upload(&server, &alice, &body), body)
        })
        .collect();
    // The same content twice is one file: the backup copies it once.
    upload(&server, &bob, &pictures[0].1);
    let keys_before = server_keys(&server);

    // Senders keep sending; each acknowledged event is recorded with the instant its answer
    // arrived.
    let acknowledged: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|i| {
            let token = login_token(&server, if i % 2 == 0 { "alice" } else { "bob" }, PASSWORD);
            let (address, room) = (server.address("http"), room.clone());
            let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut client = common::http::Client::plain(address);
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    if let Some(id) = send(&mut client, &token, &room, &format!("s{i}-{n}")) {
                        acknowledged
                            .lock()
                            .expect("lock")
                            .push((id, Instant::now()));
                    }
                    n += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));

    let backups = tempfile::tempdir().expect("tempdir");
    let target = backups.path().join("nightly");
    let target_text = target.to_str().expect("utf-8 path");
    let started = Instant::now();
    let printed = succeeds(&server.dir, &["backup", target_text]);
    let during = acknowledged
        .lock()
        .expect("lock")
        .iter()
        .filter(|(_, at)| *at > started)
        .count();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.join().expect("sender");
    }
    assert!(printed.starts_with("backed up "), "{printed}");
    assert!(
        printed.contains("3 media file(s)"),
        "each content once: {printed}"
    );
    assert!(
        server.wait_for_log("control: backup: done"),
        "the server made it"
    );
    let before: Vec<String> = acknowledged
        .lock()
        .expect("lock")
        .iter()
        .filter(|(_, at)| *at < started)
        .map(|(id, _)| id.clone())
        .collect();
    eprintln!(
        "{} messages acknowledged before the backup started, {during} while it ran: {printed}",
        before.len()
    );
    assert!(before.len() >= 20, "only {} messages before", before.len());
    assert!(
        during > 0,
        "no message was acknowledged while the backup ran"
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(target.join("manifest.json")).expect("manifest"))
            .expect("manifest JSON");
    assert_eq!(manifest["format"], "hearth-backup");
    assert_eq!(manifest["server_name"], "localhost");
    drop(server);

    let restored_dir = fresh_dir();
    let restored = succeeds(restored_dir.path(), &["restore", target_text]);
    assert!(restored.starts_with("restored "), "{restored}");
    let mut server = Server::start_in(restored_dir.path(), &[], &[]).expect("starts");
    server.keep_dir(restored_dir);
    let alice = login_token(&server, "alice", PASSWORD);
    let found = timeline(&server, &alice, &room);
    let lost: Vec<&String> = before.iter().filter(|id| !found.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged messages lost, first {:?}",
        lost.len(),
        before.len(),
        lost.first()
    );
    for (media, body) in &pictures {
        assert_eq!(&download(&server, &alice, media), body, "{media}");
    }
    assert_eq!(server_keys(&server), keys_before, "the same signing key");
    // The restored server takes new messages after the old ones.
    let mut client = server.client();
    assert!(send(&mut client, &alice, &room, "after-the-restore").is_some());
}

#[test]
fn a_stopped_server_backs_up_with_its_old_keys_too() {
    let dir = fresh_dir();
    let added = hearth(
        dir.path(),
        &["user", "add", "alice"],
        &format!("{PASSWORD}\n"),
    );
    assert!(added.status.success(), "{}", stderr(&added));
    let mut server = Server::start_in(dir.path(), &[], &[]).expect("starts");
    let alice = login_token(&server, "alice", PASSWORD);
    let room = create_room(&server, &alice);
    let sent = send(&mut server.client(), &alice, &room, "hello").expect("sent");
    let media = upload(&server, &alice, b"a small file");
    server.signal("TERM");
    server.wait_exit(Duration::from_secs(15)).expect("stops");
    succeeds(dir.path(), &["key", "rotate"]);

    let backups = tempfile::tempdir().expect("tempdir");
    let target = backups.path().join("b");
    let target_text = target.to_str().expect("utf-8 path");
    let printed = succeeds(dir.path(), &["backup", target_text]);
    assert!(printed.contains("with its old keys"), "{printed}");
    let server = Server::start_in(dir.path(), &[], &[]).expect("starts again");
    let keys_before = server_keys(&server);
    drop(server);

    // `hearth init` made a key the backup's replaces (it never signed anything).
    let restored_dir = fresh_dir();
    succeeds(
        restored_dir.path(),
        &["init", "--config", "init.toml", "--data-dir", "data"],
    );
    succeeds(restored_dir.path(), &["restore", target_text]);
    let mut server = Server::start_in(restored_dir.path(), &[], &[]).expect("starts");
    server.keep_dir(restored_dir);
    assert_eq!(server_keys(&server), keys_before, "key and old key back");
    let alice = login_token(&server, "alice", PASSWORD);
    assert!(timeline(&server, &alice, &room).contains(&sent));
    assert_eq!(download(&server, &alice, &media), b"a small file");
}

#[test]
fn what_is_not_a_whole_backup_or_an_empty_place_is_refused() {
    let server = Server::start(&test_config(""));
    let backups = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| {
        backups
            .path()
            .join(name)
            .to_str()
            .expect("utf-8")
            .to_owned()
    };

    // A backup goes into a new or empty directory only.
    std::fs::create_dir(backups.path().join("full")).expect("dir");
    std::fs::write(backups.path().join("full/keep.txt"), "mine").expect("file");
    let message = fails(&server.dir, &["backup", &path("full")]);
    assert!(message.contains("is not empty"), "{message}");
    assert_eq!(
        std::fs::read_dir(backups.path().join("full"))
            .expect("dir")
            .count(),
        1,
        "untouched"
    );
    succeeds(&server.dir, &["backup", &path("good")]);

    // Restoring onto a running server's data directory.
    let message = fails(&server.dir, &["restore", &path("good")]);
    assert!(message.contains("is running"), "{message}");
    drop(server);

    let copy = |name: &str| {
        let target = backups.path().join(name);
        std::fs::create_dir_all(target.join("media")).expect("dir");
        for file in ["database.hdb", "signing.key", "manifest.json"] {
            std::fs::copy(backups.path().join("good").join(file), target.join(file)).expect("copy");
        }
        target
    };
    let restore_fails = |name: &str, expected: &str| {
        let dir = fresh_dir();
        let message = fails(dir.path(), &["restore", &path(name)]);
        assert!(message.contains(expected), "{name}: {message}");
        let left = std::fs::read_dir(dir.path().join("data"))
            .map(|entries| entries.count())
            .unwrap_or(0);
        assert_eq!(left, 0, "{name}: a refused restore leaves nothing behind");
    };

    // A backup cut short (no manifest), a damaged manifest, a changed database file.
    std::fs::remove_file(copy("cut").join("manifest.json")).expect("remove");
    restore_fails("cut", "has no manifest.json");
    std::fs::write(copy("garbled").join("manifest.json"), "{\"format\": ").expect("write");
    restore_fails("garbled", "is damaged");
    let altered = copy("altered").join("database.hdb");
    let mut database = std::fs::read(&altered).expect("read");
    let middle = database.len() / 2;
    database[middle] ^= 0x55;
    std::fs::write(&altered, database).expect("write");
    restore_fails("altered", "does not match the backup's manifest");
    let newer = copy("newer").join("manifest.json");
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(&newer).expect("read")).expect("json");
    manifest["version"] = json!(99);
    std::fs::write(&newer, manifest.to_string()).expect("write");
    restore_fails("newer", "newer Hearth");
    restore_fails("nothing-here", "has no manifest.json");

    // Another server's backup, and a data directory already in use.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        elsewhere.path().join("hearth.toml"),
        test_config("").replace("\"localhost\"", "\"other.example\""),
    )
    .expect("config");
    let message = fails(elsewhere.path(), &["restore", &path("good")]);
    assert!(
        message.contains("is of the server `localhost`"),
        "{message}"
    );
    let used = fresh_dir();
    std::fs::create_dir(used.path().join("data")).expect("dir");
    std::fs::write(used.path().join("data/notes"), "x").expect("file");
    let message = fails(used.path(), &["restore", &path("good")]);
    assert!(message.contains("is not empty"), "{message}");

    // The good one restores.
    let dir = fresh_dir();
    succeeds(dir.path(), &["restore", &path("good")]);
}
