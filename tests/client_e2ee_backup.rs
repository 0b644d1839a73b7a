//! Server-side key backup (`/room_keys/version`, `/room_keys/keys`) against the real server:
//! versions and their lifecycle, the spec's "better key wins" rules, `count` and `etag`,
//! `M_WRONG_ROOM_KEYS_VERSION`, and hostile uploads that must change nothing.

mod common;

use common::http::{Client, Response};
use common::{Server, errcode, ok, query_encode, test_config};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";
const ALGORITHM: &str = "m.megolm_backup.v1.curve25519-aes-sha2";
const ROOM: &str = "!room:localhost";
/// A room version 12 ID: the create event's reference hash, no server name.
const OTHER_ROOM: &str = "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM";

fn server() -> Server {
    Server::start_with_users(
        &test_config("[limits]\nauth_attempts_per_minute = 100000\n"),
        &[("alice", PASSWORD), ("bob", PASSWORD)],
    )
}

fn key(verified: bool, index: u64, forwarded: u64, tag: &str) -> Value {
    json!({
        "first_message_index": index,
        "forwarded_count": forwarded,
        "is_verified": verified,
        "session_data": { "ephemeral": "e", "ciphertext": tag, "mac": "m" },
    })
}

struct Backup {
    client: Client,
    token: String,
}

impl Backup {
    fn new(server: &Server, user: &str) -> Backup {
        Backup {
            client: server.client(),
            token: common::login_token(server, user, PASSWORD),
        }
    }

    fn call(&mut self, method: &str, path: &str, body: &Value) -> Response {
        self.client.json(
            method,
            &format!("/_matrix/client/v3/room_keys/{path}"),
            Some(&self.token),
            body,
        )
    }

    fn get(&mut self, path: &str) -> Response {
        self.client
            .get_with(&format!("/_matrix/client/v3/room_keys/{path}"), &self.token)
    }

    fn create(&mut self, public_key: &str) -> String {
        ok(self.call(
            "POST",
            "version",
            &json!({ "algorithm": ALGORITHM, "auth_data": { "public_key": public_key } }),
        ))["version"]
            .as_str()
            .expect("version")
            .to_owned()
    }

    /// `keys/{room}/{session}?version=` (or `keys/{room}`, `keys`), IDs encoded.
    fn keys_path(version: &str, room: Option<&str>, session: Option<&str>) -> String {
        let mut path = "keys".to_owned();
        for part in [room, session].into_iter().flatten() {
            path.push('/');
            path.push_str(&query_encode(part));
        }
        format!("{path}?version={version}")
    }
}

#[test]
fn backup_versions_are_created_read_updated_and_deleted() {
    let server = server();
    let mut alice = Backup::new(&server, "alice");

    let none = alice.get("version");
    assert_eq!((none.status, errcode(&none).as_str()), (404, "M_NOT_FOUND"));

    assert_eq!(alice.create("first"), "1");
    let current = ok(alice.get("version"));
    assert_eq!(current["version"], "1");
    assert_eq!(current["algorithm"], ALGORITHM);
    assert_eq!(current["auth_data"]["public_key"], "first");
    assert_eq!(current["count"], 0);
    assert!(current["etag"].is_string(), "{current}");

    // Only `auth_data` may change; the algorithm and the version must match.
    ok(alice.call(
        "PUT",
        "version/1",
        &json!({ "algorithm": ALGORITHM, "auth_data": { "public_key": "signed" }, "version": "1" }),
    ));
    assert_eq!(
        ok(alice.get("version/1"))["auth_data"]["public_key"],
        "signed"
    );
    let other_algorithm = alice.call(
        "PUT",
        "version/1",
        &json!({ "algorithm": "m.other", "auth_data": {} }),
    );
    assert_eq!(
        (other_algorithm.status, errcode(&other_algorithm).as_str()),
        (400, "M_INVALID_PARAM")
    );
    let other_version = alice.call(
        "PUT",
        "version/1",
        &json!({ "algorithm": ALGORITHM, "auth_data": {}, "version": "2" }),
    );
    assert_eq!(
        (other_version.status, errcode(&other_version).as_str()),
        (400, "M_INVALID_PARAM")
    );
    let unknown = alice.call(
        "PUT",
        "version/7",
        &json!({ "algorithm": ALGORITHM, "auth_data": {} }),
    );
    assert_eq!(
        (unknown.status, errcode(&unknown).as_str()),
        (404, "M_NOT_FOUND")
    );

    // A new version becomes the current one; the old one can still be read.
    assert_eq!(alice.create("second"), "2");
    assert_eq!(ok(alice.get("version"))["version"], "2");
    assert_eq!(
        ok(alice.get("version/1"))["auth_data"]["public_key"],
        "signed"
    );

    // Deleting the current version makes the one before current again; deleting twice
    // succeeds, a version never created is not found, and numbers are not reused.
    ok(alice.call("DELETE", "version/2", &json!({})));
    assert_eq!(ok(alice.get("version"))["version"], "1");
    assert_eq!(alice.get("version/2").status, 404);
    ok(alice.call("DELETE", "version/2", &json!({})));
    let never = alice.call("DELETE", "version/99", &json!({}));
    assert_eq!(
        (never.status, errcode(&never).as_str()),
        (404, "M_NOT_FOUND")
    );
    for odd in ["abc", "01", "-1"] {
        assert_eq!(alice.get(&format!("version/{odd}")).status, 404, "{odd}");
    }
    assert_eq!(alice.create("third"), "3");

    // The unstable prefix answers the same (older clients call it).
    let unstable = ok(server
        .client()
        .get_with("/_matrix/client/unstable/room_keys/version", &alice.token));
    assert_eq!(unstable["version"], "3");

    // Another user sees none of it.
    let mut bob = Backup::new(&server, "bob");
    assert_eq!(bob.get("version").status, 404);
    assert_eq!(bob.get("version/1").status, 404);
}

#[test]
fn the_better_key_wins_and_count_and_etag_follow() {
    let server = server();
    let mut alice = Backup::new(&server, "alice");
    let version = alice.create("pk");
    let session_path = Backup::keys_path(&version, Some(ROOM), Some("session1"));

    let first = ok(alice.call("PUT", &session_path, &key(false, 5, 1, "first")));
    assert_eq!(first["count"], 1);
    let etag = first["etag"].clone();

    // A worse key (higher index; same index with more forwards) changes nothing.
    for worse in [key(false, 7, 0, "worse"), key(false, 5, 2, "worse")] {
        let answer = ok(alice.call("PUT", &session_path, &worse));
        assert_eq!(
            (answer["count"].clone(), answer["etag"].clone()),
            (json!(1), etag.clone())
        );
    }
    assert_eq!(
        ok(alice.get(&session_path))["session_data"]["ciphertext"],
        "first"
    );

    // A lower index wins; then a verified key beats any unverified one.
    let better = ok(alice.call("PUT", &session_path, &key(false, 2, 3, "lower")));
    assert_eq!(better["count"], 1);
    assert_ne!(better["etag"], etag);
    assert_eq!(
        ok(alice.get(&session_path))["session_data"]["ciphertext"],
        "lower"
    );
    ok(alice.call("PUT", &session_path, &key(true, 9, 9, "verified")));
    ok(alice.call("PUT", &session_path, &key(false, 0, 0, "unverified")));
    let stored = ok(alice.get(&session_path));
    assert_eq!(stored, key(true, 9, 9, "verified"));

    // Several rooms at once, and the three read shapes.
    let all = ok(alice.call(
        "PUT",
        &Backup::keys_path(&version, None, None),
        &json!({ "rooms": {
            ROOM: { "sessions": { "session2": key(false, 0, 0, "s2") } },
            OTHER_ROOM: { "sessions": { "session3": key(false, 0, 0, "s3") } },
        }}),
    ));
    assert_eq!(all["count"], 3);
    let room_keys = ok(alice.call(
        "PUT",
        &Backup::keys_path(&version, Some(OTHER_ROOM), None),
        &json!({ "sessions": { "session4": key(false, 0, 0, "s4") } }),
    ));
    assert_eq!(room_keys["count"], 4);
    assert_eq!(ok(alice.get("version"))["count"], 4);
    assert_eq!(ok(alice.get("version"))["etag"], room_keys["etag"]);

    let everything = ok(alice.get(&Backup::keys_path(&version, None, None)));
    let rooms = everything["rooms"].as_object().expect("rooms");
    assert_eq!(rooms.len(), 2);
    assert_eq!(
        rooms[ROOM]["sessions"].as_object().expect("sessions").len(),
        2
    );
    assert_eq!(
        rooms[OTHER_ROOM]["sessions"]["session4"]["session_data"]["ciphertext"],
        "s4"
    );
    let one_room = ok(alice.get(&Backup::keys_path(&version, Some(OTHER_ROOM), None)));
    assert_eq!(one_room["sessions"].as_object().expect("sessions").len(), 2);
    let empty_room = ok(alice.get(&Backup::keys_path(&version, Some("!empty:localhost"), None)));
    assert_eq!(empty_room, json!({ "sessions": {} }));
    let missing = alice.get(&Backup::keys_path(&version, Some(ROOM), Some("nope")));
    assert_eq!(
        (missing.status, errcode(&missing).as_str()),
        (404, "M_NOT_FOUND")
    );

    // Deleting one session, then a room, then everything.
    let after = ok(alice.call("DELETE", &session_path, &json!({})));
    assert_eq!(after["count"], 3);
    assert_eq!(alice.get(&session_path).status, 404);
    let after = ok(alice.call(
        "DELETE",
        &Backup::keys_path(&version, Some(OTHER_ROOM), None),
        &json!({}),
    ));
    assert_eq!(after["count"], 1);
    let after = ok(alice.call(
        "DELETE",
        &Backup::keys_path(&version, None, None),
        &json!({}),
    ));
    assert_eq!(after["count"], 0);
    assert_eq!(
        ok(alice.get(&Backup::keys_path(&version, None, None))),
        json!({ "rooms": {} })
    );
}

#[test]
fn keys_go_only_to_the_current_version() {
    let server = server();
    let mut alice = Backup::new(&server, "alice");
    let old = alice.create("old");
    ok(alice.call(
        "PUT",
        &Backup::keys_path(&old, Some(ROOM), Some("s")),
        &key(false, 0, 0, "kept"),
    ));
    let current = alice.create("new");

    let wrong = alice.call(
        "PUT",
        &Backup::keys_path(&old, Some(ROOM), Some("s2")),
        &key(false, 0, 0, "x"),
    );
    assert_eq!(
        (wrong.status, errcode(&wrong).as_str()),
        (403, "M_WRONG_ROOM_KEYS_VERSION")
    );
    assert_eq!(wrong.json()["current_version"], current.as_str());
    // The old version's keys can still be read.
    assert_eq!(
        ok(alice.get(&Backup::keys_path(&old, Some(ROOM), Some("s"))))["session_data"]["ciphertext"],
        "kept"
    );

    let unknown = alice.call(
        "PUT",
        &Backup::keys_path("42", Some(ROOM), Some("s")),
        &key(false, 0, 0, "x"),
    );
    assert_eq!(
        (unknown.status, errcode(&unknown).as_str()),
        (404, "M_NOT_FOUND")
    );
    let no_version = alice.call(
        "PUT",
        &format!("keys/{}/s", query_encode(ROOM)),
        &key(false, 0, 0, "x"),
    );
    assert_eq!(
        (no_version.status, errcode(&no_version).as_str()),
        (400, "M_MISSING_PARAM")
    );

    // Deleting a version deletes its keys: they cannot be read any more.
    ok(alice.call("DELETE", &format!("version/{old}"), &json!({})));
    let gone = alice.get(&Backup::keys_path(&old, None, None));
    assert_eq!((gone.status, errcode(&gone).as_str()), (404, "M_NOT_FOUND"));

    // Bob cannot write to (or read) Alice's backup by naming its version.
    let mut bob = Backup::new(&server, "bob");
    let theirs = bob.call(
        "PUT",
        &Backup::keys_path(&current, Some(ROOM), Some("s")),
        &key(false, 0, 0, "x"),
    );
    assert_eq!(theirs.status, 404);
    assert_eq!(
        bob.get(&Backup::keys_path(&current, None, None)).status,
        404
    );
    assert_eq!(ok(alice.get("version"))["count"], 0);
}

#[test]
fn hostile_uploads_change_nothing() {
    let server = server();
    let mut alice = Backup::new(&server, "alice");
    let version = alice.create("pk");
    let all = Backup::keys_path(&version, None, None);

    // One bad room among good ones: nothing is written.
    let bad_room = alice.call(
        "PUT",
        &all,
        &json!({ "rooms": {
            ROOM: { "sessions": { "good": key(false, 0, 0, "g") } },
            "not a room": { "sessions": { "bad": key(false, 0, 0, "b") } },
        }}),
    );
    assert_eq!(
        bad_room.status,
        400,
        "{}",
        String::from_utf8_lossy(&bad_room.body)
    );
    let long_session = "x".repeat(300);
    let bad_session = alice.call(
        "PUT",
        &all,
        &json!({ "rooms": { ROOM: { "sessions": {
            "good": key(false, 0, 0, "g"),
            long_session: key(false, 0, 0, "b"),
        }}}}),
    );
    assert_eq!(bad_session.status, 400);
    for malformed in [
        json!({ "first_message_index": -1, "forwarded_count": 0, "is_verified": false, "session_data": {} }),
        json!({ "first_message_index": 0, "forwarded_count": 0, "is_verified": "yes", "session_data": {} }),
        json!({ "first_message_index": 0, "forwarded_count": 0, "is_verified": false }),
        json!({ "first_message_index": 0, "forwarded_count": 0, "is_verified": false, "session_data": "text" }),
    ] {
        let answer = alice.call(
            "PUT",
            &Backup::keys_path(&version, Some(ROOM), Some("s")),
            &malformed,
        );
        assert_eq!(
            (answer.status, errcode(&answer).as_str()),
            (400, "M_BAD_JSON"),
            "{malformed}"
        );
    }
    let bad_version = alice.call(
        "POST",
        "version",
        &json!({ "algorithm": ALGORITHM, "auth_data": "not an object" }),
    );
    assert_eq!(bad_version.status, 400);

    let info = ok(alice.get("version"));
    assert_eq!(
        (info["version"].as_str(), info["count"].as_u64()),
        (Some(version.as_str()), Some(0))
    );
    assert_eq!(ok(alice.get(&all)), json!({ "rooms": {} }));

    // Without a token, nothing at all.
    let anonymous = server.client().get("/_matrix/client/v3/room_keys/version");
    assert_eq!(anonymous.status, 401);
}

/// `count` stays the number of keys when several devices upload at once, some of them the
/// same sessions.
#[test]
fn concurrent_uploads_keep_count_exact() {
    let server = server();
    let mut alice = Backup::new(&server, "alice");
    let version = alice.create("pk");
    let path = Backup::keys_path(&version, None, None);
    let threads: Vec<_> = (0..4)
        .map(|device| {
            let mut client = server.client();
            let token = alice.token.clone();
            let path = format!("/_matrix/client/v3/room_keys/{path}");
            std::thread::spawn(move || {
                for batch in 0..20 {
                    // Sessions 0..200 of each batch overlap between devices by half.
                    let sessions: serde_json::Map<String, Value> = (0..10)
                        .map(|i| {
                            let session = format!("s{}-{}", batch, (device / 2) * 10 + i);
                            (session, key(device % 2 == 0, device as u64, 0, "c"))
                        })
                        .collect();
                    let body = json!({ "rooms": { ROOM: { "sessions": sessions } } });
                    ok(client.json("PUT", &path, Some(&token), &body));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("uploader");
    }
    // Devices 0 and 1 share sessions, as do 2 and 3: 2 × 20 × 10 distinct sessions.
    let info = ok(alice.get("version"));
    assert_eq!(info["count"], 400);
    let all = ok(alice.get(&path));
    assert_eq!(
        all["rooms"][ROOM]["sessions"]
            .as_object()
            .expect("sessions")
            .len(),
        400
    );
    // Where two devices raced on a session, the verified key (even devices) won.
    assert!(
        all["rooms"][ROOM]["sessions"]
            .as_object()
            .expect("sessions")
            .values()
            .all(|key| key["is_verified"] == true),
    );
}

/// Figures for the report: memory and time of a large backup (run with
/// `cargo nextest run --test client_e2ee_backup --run-ignored only`).
#[test]
#[ignore = "a measurement, not a check"]
fn measure_a_large_backup() {
    fn rss_kib(pid: u32) -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .expect("status")
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches(" kB").trim().parse().ok())
            .expect("VmRSS")
    }
    let server = server();
    let pid = server.child.id();
    let mut alice = Backup::new(&server, "alice");
    let version = alice.create("pk");
    let path = Backup::keys_path(&version, None, None);
    let before = rss_kib(pid);
    let started = std::time::Instant::now();
    // 20,000 keys in 100 uploads of 200, about the size of real ones (~400 bytes each).
    for batch in 0..100 {
        let sessions: serde_json::Map<String, Value> = (0..200)
            .map(|i| {
                let mut k = key(false, 0, 0, &"c".repeat(300));
                k["session_data"]["ephemeral"] = json!("e".repeat(43));
                (format!("{:043}", batch * 200 + i), k)
            })
            .collect();
        let room = format!("!room{}:localhost", batch % 20);
        ok(alice.call(
            "PUT",
            &path,
            &json!({ "rooms": { room: { "sessions": sessions } } }),
        ));
    }
    let uploaded = started.elapsed();
    let after_upload = rss_kib(pid);
    let started = std::time::Instant::now();
    let all = alice.get(&path);
    let read = started.elapsed();
    let after_read = rss_kib(pid);
    let body = all.body.len();
    let started = std::time::Instant::now();
    ok(alice.call("DELETE", &format!("version/{version}"), &json!({})));
    let deleted = started.elapsed();
    eprintln!(
        "20000 keys: upload {uploaded:?} (RSS {before} -> {after_upload} KiB); GET all {read:?}, \
         {body} bytes (RSS {after_read} KiB); delete version {deleted:?} (RSS {} KiB)",
        rss_kib(pid)
    );
}

/// A backup acknowledged is on disk: it survives the server being killed.
#[test]
fn acknowledged_keys_survive_a_kill() {
    let mut server = server();
    let mut alice = Backup::new(&server, "alice");
    let version = alice.create("pk");
    let path = Backup::keys_path(&version, Some(ROOM), Some("s"));
    let stored = ok(alice.call("PUT", &path, &key(true, 3, 0, "durable")));
    server.signal("KILL");
    server
        .wait_exit(std::time::Duration::from_secs(10))
        .expect("killed");

    let restarted = Server::start_in(&server.dir.clone(), &[], &[]).expect("restarts");
    let mut client = restarted.client();
    let info = ok(client.get_with("/_matrix/client/v3/room_keys/version", &alice.token));
    assert_eq!(
        (info["count"].clone(), info["etag"].clone()),
        (json!(1), stored["etag"].clone())
    );
    let read = ok(client.get_with(
        &format!("/_matrix/client/v3/room_keys/{path}"),
        &alice.token,
    ));
    assert_eq!(read, key(true, 3, 0, "durable"));
}

/// A user holds at most 100 backup versions at once; deleting one makes room again.
#[test]
fn live_backup_versions_are_bounded() {
    let server = server();
    let mut alice = Backup::new(&server, "alice");
    for expected in 1..=100 {
        assert_eq!(alice.create("pk"), expected.to_string());
    }
    let refused = alice.call(
        "POST",
        "version",
        &json!({ "algorithm": ALGORITHM, "auth_data": {} }),
    );
    assert_eq!(
        (refused.status, errcode(&refused).as_str()),
        (403, "M_FORBIDDEN")
    );
    assert_eq!(ok(alice.get("version"))["version"], "100");
    ok(alice.call("DELETE", "version/1", &json!({})));
    assert_eq!(alice.create("pk"), "101");
}

/// A backup made and used with real end-to-end crypto (vodozemac, under Element's and
/// matrix-rust-sdk's encryption): a new device decrypts room history with the key it
/// restores from the backup (tests/clients/vodozemac_key_backup.py). matrix-nio has no
/// key backup support, so the script does what such a client does, with the real library.
#[test]
fn a_new_device_decrypts_history_from_a_real_backup() {
    use std::process::Command;
    use std::time::Duration;

    let python = std::env::var("HEARTH_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let present = common::succeeds_within(
        Command::new(&python).args(["-c", "import vodozemac"]),
        Duration::from_secs(60),
    );
    if !present {
        assert!(
            std::env::var_os("CI").is_none() && std::env::var_os("HEARTH_TEST_PYTHON").is_none(),
            "{python} lacks `vodozemac`: run the tests with scripts/test"
        );
        eprintln!("SKIPPED: no Python `vodozemac`; scripts/test installs it");
        return;
    }
    let server = server();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/vodozemac_key_backup.py"
    );
    let url = format!("http://{}", server.address("http"));
    let output = common::output_within(
        Command::new(&python).args([script, &url, PASSWORD]),
        Duration::from_secs(120),
    );
    assert!(
        output.status.success(),
        "{script} failed:\n{}{}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        server.log_text()
    );
}
