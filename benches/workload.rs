//! A family's day on one Hearth, measured: `cargo bench --bench workload`.
//!
//! 10 users, 10 rooms (everyone in every room), 500 messages round-robin, with syncs; then
//! prints resident memory, the time from a message's send to the recipient's waiting
//! `/sync` answering with it (each timed `/sync` is checked to carry the message's event
//! ID), send throughput (one client, and 8 at once on the restored server), where the
//! resident memory is (by mapping, and the threads) at idle and after the day, disk use
//! against the canonical JSON of the stored events, and the size and time of a
//! `hearth backup` of the running server and of its restore. Each
//! figure is printed with its budget from DESIGN.md and `ok` or `OVER`; a figure over
//! budget does not fail the run.
//!
//! With `HEARTH_BENCH_ENCRYPTED=1` the same day runs as end-to-end encrypted apps make it
//! (issue 11): every device uploads its identity keys and 100 one-time keys, signed with a
//! real ed25519 key; the rooms are encrypted (`m.room.encryption`); before its first message
//! in a room each user queries the members' keys, claims a one-time key of every other
//! device and sends each the room key as an encrypted to-device message; and every message
//! is an `m.room.encrypted` event with a Megolm-sized ciphertext. The server never decrypts,
//! so ciphertext of the right shape and size costs it what real ciphertext would; the
//! to-device messages are delivered and acknowledged through `/sync`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::budget::{self, Report, disk_usage, rss_mib};
use common::http::Client;
use common::{Server, ok, test_config};
use hearth::matrix::crypto::{KeyId, SigningKey, sign_json};
use serde_json::{Map, Value, json};

const USERS: usize = 10;
const ROOMS: usize = 10;
const MESSAGES: usize = 500;
const LATENCY_SAMPLES: usize = 50;
/// Messages sent after the day is measured, for the disk figures (issue 14).
const EXTRA_MESSAGES: usize = 2000;
/// The concurrent send figure: clients at once, and messages each.
const CONCURRENT_CLIENTS: usize = 8;
const MESSAGES_PER_CLIENT: usize = 100;
const PASSWORD: &str = "benchmark password";

/// One-time keys each device uploads: enough for every other user to claim one per room.
const ONE_TIME_KEYS: usize = 100;

/// Deterministic stand-in bytes for ciphertext, as unpadded base64 (a xorshift stream).
fn ciphertext(seed: u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(ALPHABET[(state % 64) as usize])
        })
        .collect()
}

/// A device of the encrypted workload: its user, ID and the ed25519 key it signs with.
struct Device {
    user: String,
    id: String,
    key: SigningKey,
}

impl Device {
    fn new(client: &mut Client, token: &str, seed: u8) -> Device {
        let whoami = ok(client.get_with("/_matrix/client/v3/account/whoami", token));
        let id = whoami["device_id"].as_str().expect("device").to_owned();
        let key = SigningKey::from_seed(KeyId::ed25519(&id).expect("key id"), [seed; 32]);
        let user = whoami["user_id"].as_str().expect("user").to_owned();
        Device { user, id, key }
    }

    fn sign(&self, object: Value) -> Value {
        let Value::Object(mut object) = object else {
            panic!("not an object")
        };
        sign_json(&mut object, &self.user, &self.key).expect("sign");
        Value::Object(object)
    }

    /// Identity keys, one-time keys and a fallback key, as an app uploads them at login.
    fn upload(&self, client: &mut Client, token: &str) {
        let one_time_keys: Map<String, Value> = (0..ONE_TIME_KEYS)
            .map(|n| {
                let key = ciphertext(n as u64, 43);
                (
                    format!("signed_curve25519:{}{n}", self.id),
                    self.sign(json!({ "key": key })),
                )
            })
            .collect();
        let device_keys = self.sign(json!({
            "user_id": self.user,
            "device_id": self.id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{}", self.id): ciphertext(7, 43),
                format!("ed25519:{}", self.id): self.key.public_key_base64(),
            },
        }));
        ok(client.json(
            "POST",
            "/_matrix/client/v3/keys/upload",
            Some(token),
            &json!({
                "device_keys": device_keys,
                "one_time_keys": one_time_keys,
                "fallback_keys": {
                    "signed_curve25519:FB": self.sign(json!({ "key": ciphertext(9, 43), "fallback": true })),
                },
            }),
        ));
    }
}

/// What an app does before its first message in an encrypted room: query the members'
/// keys, claim a one-time key of each of their devices, and send each device the room key
/// in an Olm-encrypted to-device message.
fn share_room_key(client: &mut Client, token: &str, me: &Device, others: &[&Device], room: &str) {
    let wanted: Map<String, Value> = others
        .iter()
        .map(|other| (other.user.clone(), json!([])))
        .collect();
    ok(client.json(
        "POST",
        "/_matrix/client/v3/keys/query",
        Some(token),
        &json!({ "device_keys": wanted }),
    ));
    let claims: Map<String, Value> = others
        .iter()
        .map(|other| {
            (
                other.user.clone(),
                json!({ other.id.clone(): "signed_curve25519" }),
            )
        })
        .collect();
    ok(client.json(
        "POST",
        "/_matrix/client/v3/keys/claim",
        Some(token),
        &json!({ "one_time_keys": claims }),
    ));
    let messages: Map<String, Value> = others
        .iter()
        .map(|other| {
            let content = json!({
                "algorithm": "m.olm.v1.curve25519-aes-sha2",
                "sender_key": ciphertext(7, 43),
                "ciphertext": { ciphertext(1, 43): { "type": 0, "body": ciphertext(room.len() as u64, 1100) } },
            });
            (other.user.clone(), json!({ other.id.clone(): content }))
        })
        .collect();
    let txn = format!("share-{}-{}", me.id, room.replace(['!', ':'], ""));
    ok(client.json(
        "PUT",
        &format!("/_matrix/client/v3/sendToDevice/m.room.encrypted/{txn}"),
        Some(token),
        &json!({ "messages": messages }),
    ));
}

/// An `m.room.encrypted` event's content of the size Megolm gives a short message.
fn megolm_content(device: &Device, n: u64) -> Value {
    json!({
        "algorithm": "m.megolm.v1.aes-sha2",
        "sender_key": ciphertext(7, 43),
        "device_id": device.id,
        "session_id": ciphertext(3, 43),
        "ciphertext": ciphertext(n, 280),
    })
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
    let idle_resident = budget::Resident::of(pid);
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
    let encrypted = std::env::var_os("HEARTH_BENCH_ENCRYPTED").is_some_and(|value| value == "1");
    let devices: Vec<Device> = if encrypted {
        tokens
            .iter()
            .enumerate()
            .map(|(i, token)| {
                let seed = u8::try_from(i + 1).expect("a few users");
                let device = Device::new(&mut client, token, seed);
                device.upload(&mut client, token);
                device
            })
            .collect()
    } else {
        Vec::new()
    };
    let invitees: Vec<String> = (1..USERS).map(|i| format!("@user{i}:localhost")).collect();
    let rooms: Vec<String> = (0..ROOMS)
        .map(|i| {
            let mut body = json!({ "name": format!("room {i}"), "invite": invitees });
            if encrypted {
                body["initial_state"] = json!([{
                    "type": "m.room.encryption", "state_key": "",
                    "content": { "algorithm": "m.megolm.v1.aes-sha2" },
                }]);
            }
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
    common::everyone_joins(&mut client, &tokens, &rooms);
    let mut since = common::first_sync_batches(&mut client, &tokens);

    let mut shared = std::collections::HashSet::new();
    let started = Instant::now();
    for i in 0..MESSAGES {
        let sender = i % USERS;
        let room = &rooms[i % ROOMS];
        if encrypted {
            // A user's first message in a room: the room key goes to everyone first.
            if shared.insert((sender, room.clone())) {
                let others: Vec<&Device> = devices
                    .iter()
                    .enumerate()
                    .filter(|(n, _)| *n != sender)
                    .map(|(_, device)| device)
                    .collect();
                share_room_key(
                    &mut client,
                    &tokens[sender],
                    &devices[sender],
                    &others,
                    room,
                );
            }
            let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.encrypted/w{i}");
            ok(client.json(
                "PUT",
                &path,
                Some(&tokens[sender]),
                &megolm_content(&devices[sender], i as u64),
            ));
        } else {
            let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/w{i}");
            ok(client.json(
                "PUT",
                &path,
                Some(&tokens[sender]),
                &json!({ "msgtype": "m.text", "body": format!("message {i}") }),
            ));
        }
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
    let after_resident = budget::Resident::of(pid);

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
        let (kind, content) = if encrypted {
            (
                "m.room.encrypted",
                megolm_content(&devices[0], 10_000 + sample as u64),
            )
        } else {
            (
                "m.room.message",
                json!({ "msgtype": "m.text", "body": "ping" }),
            )
        };
        let path = format!("/_matrix/client/v3/rooms/{room}/send/{kind}/l{sample}");
        let event_id = ok(client.json("PUT", &path, Some(&tokens[0]), &content))["event_id"]
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

    // Issue 14's disk load: the day above plus 2,000 more messages, then where the bytes go.
    for i in 0..EXTRA_MESSAGES {
        let sender = i % USERS;
        let room = &rooms[i % ROOMS];
        let (kind, content) = if encrypted {
            (
                "m.room.encrypted",
                megolm_content(&devices[sender], 20_000 + i as u64),
            )
        } else {
            (
                "m.room.message",
                json!({ "msgtype": "m.text", "body": format!("more {i}") }),
            )
        };
        let path = format!("/_matrix/client/v3/rooms/{room}/send/{kind}/x{i}");
        ok(client.json("PUT", &path, Some(&tokens[sender]), &content));
    }
    let after_more = rss_mib(pid, "VmRSS:");
    let data = server.dir.join("data");
    // A backup of the running server (issue 14), then a restore of it into a new data
    // directory once the server stopped.
    let backups = tempfile::tempdir().expect("tempdir");
    let backup_dir = backups.path().join("backup");
    let backup_text = backup_dir.to_str().expect("utf-8 path");
    let started = Instant::now();
    let output = common::hearth(&server.dir, &["backup", backup_text], "");
    let backup_time = started.elapsed();
    assert!(
        output.status.success(),
        "backup: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let backup_bytes = disk_usage(&backup_dir);
    let said = String::from_utf8_lossy(&output.stdout);
    let held = said
        .split("writes held for ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or("?")
        .to_owned();
    server.signal("TERM");
    server
        .wait_exit(Duration::from_secs(15))
        .expect("the server stops");
    let disk = disk_usage(&data);
    let (events, canonical) = budget::canonical_json_of_events(&data);
    let restored = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        server.dir.join("hearth.toml"),
        restored.path().join("hearth.toml"),
    )
    .expect("config");
    let started = Instant::now();
    let output = common::hearth(restored.path(), &["restore", backup_text], "");
    let restore_time = started.elapsed();
    assert!(
        output.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Send throughput with 8 clients at once, on the restored server (the tokens came back
    // with it), so the day's disk figures above stay those of the day.
    let restored_server =
        Server::start_in(restored.path(), &[], &[]).expect("the restored server starts");
    let concurrent = common::concurrent_sends(
        restored_server.address("http"),
        &tokens,
        &rooms,
        CONCURRENT_CLIENTS,
        MESSAGES_PER_CLIENT,
        "c",
    );
    drop(restored_server);
    let backup_line = format!(
        "{:.1} MiB in {} ms, restore: {} ms",
        backup_bytes as f64 / 1048576.0,
        backup_time.as_millis(),
        restore_time.as_millis()
    );

    let mode = if encrypted {
        ", end-to-end encrypted"
    } else {
        ""
    };
    let mut report = Report::new(&format!(
        "hearth workload benchmark ({USERS} users, {ROOMS} rooms, {MESSAGES} messages{mode})"
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
    report.figure(
        &format!("send throughput, {CONCURRENT_CLIENTS} clients at once"),
        format!("{concurrent:.0} msg/s"),
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
    report.memory(
        &format!("RSS after {EXTRA_MESSAGES} more messages"),
        after_more,
        Some(budget::ACTIVE_RSS_MB),
    );
    report.memory(
        &format!("data directory (+{EXTRA_MESSAGES} messages)"),
        disk as f64 / 1048576.0,
        None,
    );
    report.figure(
        "data directory per event",
        format!("{:.0} B", disk as f64 / events as f64),
    );
    report.figure(
        "canonical JSON per event",
        format!("{:.0} B", canonical as f64 / events as f64),
    );
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
    report.figure("backup", backup_line);
    report.figure("backup: writes held", held);
    report.finish();
    idle_resident.print("idle", 12);
    after_resident.print("after the workload", 12);
    budget::print_trees(&data, events);
}
