//! Hearth federating with a real Synapse (installed from PyPI by scripts/test into
//! `.venv-synapse`, pointed at by `HEARTH_TEST_SYNAPSE_PYTHON`), over TLS on loopback with a
//! CA the test makes: rooms created on each side and joined from the other in room versions
//! 10, 11 and 12, invites both ways, messages, history backfill, profile and alias lookups,
//! restricted rooms held by each side joined by members of their allowed rooms.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::federation::{free_port, start, write_certificates};
use common::http::Client;
use common::{Server, ok, query_encode};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// The Python with Synapse, or `None` (with a note) on a machine without it; CI insists.
fn synapse_python() -> Option<String> {
    let python =
        std::env::var("HEARTH_TEST_SYNAPSE_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let present = Command::new(&python)
        .args(["-c", "import synapse"])
        .status()
        .is_ok_and(|status| status.success());
    if present {
        return Some(python);
    }
    assert!(
        std::env::var_os("CI").is_none()
            && std::env::var_os("HEARTH_TEST_SYNAPSE_PYTHON").is_none(),
        "{python} lacks Synapse: run the tests with scripts/test"
    );
    eprintln!("SKIPPED: no Synapse; scripts/test installs it into .venv-synapse");
    None
}

/// A Synapse process, stopped when dropped.
struct Synapse {
    child: Child,
    name: String,
    client: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Synapse {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- Synapse log (last lines) ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Synapse {
    fn start(python: &str, certificates: &Path) -> Synapse {
        let dir = tempfile::tempdir().expect("tempdir");
        let (federation_port, client_port) = (free_port(), free_port());
        let name = format!("127.0.0.1:{federation_port}");
        let path = |file: &str| dir.path().join(file).display().to_string();
        for file in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::copy(certificates.join(file), dir.path().join(file)).expect("copy");
        }
        let log_config = format!(
            "version: 1\nformatters:\n  plain:\n    format: '%(asctime)s %(levelname)s %(name)s %(message)s'\n\
             handlers:\n  file:\n    class: logging.FileHandler\n    formatter: plain\n    filename: {}\n\
             root:\n  level: INFO\n  handlers: [file]\ndisable_existing_loggers: false\n",
            path("synapse.log")
        );
        std::fs::write(dir.path().join("log.yaml"), log_config).expect("log config");
        let limits = "{per_second: 1000, burst_count: 1000}";
        let config = format!(
            "server_name: \"{name}\"\n\
             pid_file: {pid}\n\
             listeners:\n\
             \x20 - {{port: {federation_port}, bind_addresses: ['127.0.0.1'], type: http, tls: true, resources: [{{names: [federation], compress: false}}]}}\n\
             \x20 - {{port: {client_port}, bind_addresses: ['127.0.0.1'], type: http, tls: false, resources: [{{names: [client], compress: false}}]}}\n\
             tls_certificate_path: {cert}\n\
             tls_private_key_path: {key}\n\
             federation_custom_ca_list: [{ca}]\n\
             federation_verify_certificates: true\n\
             ip_range_blacklist: []\n\
             ip_range_whitelist: ['127.0.0.0/8']\n\
             database: {{name: sqlite3, args: {{database: {db}}}}}\n\
             log_config: {log}\n\
             media_store_path: {media}\n\
             registration_shared_secret: \"test-secret\"\n\
             report_stats: false\n\
             macaroon_secret_key: \"test-macaroon\"\n\
             form_secret: \"test-form\"\n\
             signing_key_path: {signing}\n\
             trusted_key_servers: []\n\
             suppress_key_server_warning: true\n\
             rc_message: {limits}\n\
             rc_joins: {{local: {limits}, remote: {limits}}}\n\
             rc_login: {{address: {limits}, account: {limits}}}\n\
             rc_invites: {{per_room: {limits}, per_user: {limits}}}\n",
            pid = path("synapse.pid"),
            cert = path("cert.pem"),
            key = path("key.pem"),
            ca = path("ca.pem"),
            db = path("homeserver.db"),
            log = path("log.yaml"),
            media = path("media"),
            signing = path("signing.key"),
        );
        std::fs::write(dir.path().join("homeserver.yaml"), config).expect("config");
        let keys = Command::new(python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(dir.path().join("homeserver.yaml"))
            .arg("--generate-keys")
            .output()
            .expect("synapse generate-keys");
        assert!(
            keys.status.success(),
            "{}",
            String::from_utf8_lossy(&keys.stderr)
        );
        let child = Command::new(python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(dir.path().join("homeserver.yaml"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("stderr.log")).expect("stderr"),
            ))
            .spawn()
            .expect("synapse starts");
        let synapse = Synapse {
            child,
            name,
            client: SocketAddr::from(([127, 0, 0, 1], client_port)),
            dir,
        };
        synapse.wait_until_up();
        synapse
    }

    fn wait_until_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if Client::plain(self.client)
                .request("GET", "/_matrix/client/versions", &[], None)
                .is_ok_and(|response| response.status == 200)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("Synapse did not start: {}", self.log());
    }

    fn log(&self) -> String {
        let read =
            |file: &str| std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default();
        format!("{}\n{}", read("stderr.log"), read("synapse.log"))
    }

    fn register(&self, python: &str, user: &str) -> String {
        let script = PathBuf::from(python)
            .parent()
            .expect("venv bin")
            .join("register_new_matrix_user");
        let output = Command::new(script)
            .args([
                "-u",
                user,
                "-p",
                PASSWORD,
                "--no-admin",
                "-k",
                "test-secret",
            ])
            .arg(format!("http://{}", self.client))
            .output()
            .expect("register_new_matrix_user");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let answer = Client::plain(self.client).json(
            "POST",
            "/_matrix/client/v3/login",
            None,
            &json!({ "type": "m.login.password",
                     "identifier": { "type": "m.id.user", "user": user },
                     "password": PASSWORD }),
        );
        ok(answer)["access_token"]
            .as_str()
            .expect("token")
            .to_owned()
    }
}

/// A client call that must succeed, on either server.
fn call(address: SocketAddr, method: &str, path: &str, token: &str, body: Value) -> Value {
    let response = Client::plain(address).json(method, path, Some(token), &body);
    assert_eq!(
        response.status,
        200,
        "{method} {path}: {}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()
}

fn create_room(address: SocketAddr, token: &str, body: Value) -> String {
    call(
        address,
        "POST",
        "/_matrix/client/v3/createRoom",
        token,
        body,
    )["room_id"]
        .as_str()
        .expect("room id")
        .to_owned()
}

fn join(address: SocketAddr, token: &str, room: &str, via: &str) -> Value {
    call(
        address,
        "POST",
        &format!(
            "/_matrix/client/v3/join/{}?via={}",
            query_encode(room),
            query_encode(via)
        ),
        token,
        json!({}),
    )
}

fn send(address: SocketAddr, token: &str, room: &str, body: &str) -> String {
    let txn = format!("t{}", Instant::now().elapsed().as_nanos() ^ rand_bits());
    call(
        address,
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
        token,
        json!({ "msgtype": "m.text", "body": body }),
    )["event_id"]
        .as_str()
        .expect("event id")
        .to_owned()
}

/// Says that `user` is typing in `room`.
fn typing(address: SocketAddr, token: &str, room: &str, user: &str) {
    let path = format!("/_matrix/client/v3/rooms/{room}/typing/{user}");
    call(
        address,
        "PUT",
        &path,
        token,
        json!({ "typing": true, "timeout": 30000 }),
    );
}

/// Where `/sync` is now, to watch for news from. Synapse serves a repeated initial sync
/// from a cache for a while, so news is asked for incrementally; and this initial sync has
/// a filter of its own, so it does not put a stale answer in that cache for a plain one.
fn sync_token(address: SocketAddr, token: &str) -> String {
    let filter = query_encode(r#"{"room":{"timeline":{"limit":1}}}"#);
    let synced = call(
        address,
        "GET",
        &format!("/_matrix/client/v3/sync?filter={filter}"),
        token,
        json!(null),
    );
    synced["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned()
}

/// The ephemeral event of type `kind` in `room` among the news since `since` (which moves
/// on), or null.
fn news(address: SocketAddr, token: &str, since: &mut String, room: &str, kind: &str) -> Value {
    let path = format!(
        "/_matrix/client/v3/sync?timeout=0&since={}",
        query_encode(since)
    );
    let synced = call(address, "GET", &path, token, json!(null));
    if let Some(next) = synced["next_batch"].as_str() {
        *since = next.to_owned();
    }
    synced["rooms"]["join"][room]["ephemeral"]["events"]
        .as_array()
        .and_then(|events| events.iter().find(|event| event["type"] == kind))
        .cloned()
        .unwrap_or(Value::Null)
}

fn rand_bits() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
}

/// The message bodies of a room, oldest first, as `/messages` pages back to the start.
fn bodies(address: SocketAddr, token: &str, room: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..20 {
        let mut path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50");
        if let Some(from) = &from {
            path.push_str(&format!("&from={from}"));
        }
        let page = call(address, "GET", &path, token, json!(null));
        for event in page["chunk"].as_array().into_iter().flatten() {
            if let Some(body) = event["content"]["body"].as_str() {
                found.push(body.to_owned());
            }
        }
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => break,
        }
    }
    found.reverse();
    found
}

/// Waits until `check` holds (federation is asynchronous), failing after a while.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting: {what}");
}

fn joined_members(address: SocketAddr, token: &str, room: &str) -> Value {
    call(
        address,
        "GET",
        &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
        token,
        json!(null),
    )["joined"]
        .clone()
}

#[test]
fn hearth_and_synapse_hold_rooms_together() {
    let Some(python) = synapse_python() else {
        return;
    };
    let certificates = tempfile::tempdir().expect("tempdir");
    write_certificates(certificates.path());
    let synapse = Synapse::start(&python, certificates.path());
    let carol = synapse.register(&python, "carol");
    let carol_id = format!("@carol:{}", synapse.name);
    let port = free_port();
    let hearth_name = format!("localhost:{port}");
    let hearth: Server = start(certificates.path(), &hearth_name, port, &[], &["alice"]);
    let alice = common::login_token(&hearth, "alice", PASSWORD);
    let alice_id = format!("@alice:{hearth_name}");
    let (h, s) = (hearth.address("http"), synapse.client);

    for version in ["10", "11", "12"] {
        // A Synapse room with some history, joined from Hearth.
        let room = create_room(
            s,
            &carol,
            json!({ "preset": "public_chat", "room_version": version, "name": format!("Synapse {version}") }),
        );
        send(s, &carol, &room, &format!("before alice {version}"));
        join(h, &alice, &room, &synapse.name);
        assert!(
            joined_members(s, &carol, &room).get(&alice_id).is_some(),
            "version {version}: {}",
            synapse.log()
        );
        // History from before the join comes back through backfill.
        assert!(
            bodies(h, &alice, &room).contains(&format!("before alice {version}")),
            "version {version}: no backfilled history"
        );
        // Synapse's messages reach Hearth.
        let from_synapse = send(s, &carol, &room, &format!("from synapse {version}"));
        eventually("a message from Synapse", || {
            bodies(h, &alice, &room).contains(&format!("from synapse {version}"))
        });
        // Hearth's messages reach Synapse (the outbound queue's transactions).
        let from_hearth = send(h, &alice, &room, &format!("from hearth {version}"));
        eventually("a message from Hearth at Synapse", || {
            bodies(s, &carol, &room).contains(&format!("from hearth {version}"))
        });
        // Typing and read receipts, both ways.
        let (mut at_s, mut at_h) = (sync_token(s, &carol), sync_token(h, &alice));
        typing(h, &alice, &room, &alice_id);
        eventually("Hearth's typing at Synapse", || {
            let typing = news(s, &carol, &mut at_s, &room, "m.typing");
            typing["content"]["user_ids"] == json!([alice_id])
        });
        typing(s, &carol, &room, &carol_id);
        eventually("Synapse's typing at Hearth", || {
            let typing = news(h, &alice, &mut at_h, &room, "m.typing");
            typing["content"]["user_ids"]
                .as_array()
                .is_some_and(|users| users.contains(&json!(carol_id)))
        });
        let receipt = format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{from_hearth}");
        call(s, "POST", &receipt, &carol, json!({}));
        eventually("Synapse's read receipt at Hearth", || {
            let receipts = news(h, &alice, &mut at_h, &room, "m.receipt");
            receipts["content"][&from_hearth]["m.read"]
                .get(&carol_id)
                .is_some()
        });
        let receipt = format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{from_synapse}");
        call(h, "POST", &receipt, &alice, json!({}));
        eventually("Hearth's read receipt at Synapse", || {
            let receipts = news(s, &carol, &mut at_s, &room, "m.receipt");
            receipts["content"][&from_synapse]["m.read"]
                .get(&alice_id)
                .is_some()
        });

        // A Hearth room joined from Synapse.
        let room = create_room(
            h,
            &alice,
            json!({ "preset": "public_chat", "room_version": version, "name": format!("Hearth {version}") }),
        );
        join(s, &carol, &room, &hearth_name);
        assert!(joined_members(h, &alice, &room).get(&carol_id).is_some());
        let name = call(
            s,
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            &carol,
            json!(null),
        );
        assert_eq!(name["name"], format!("Hearth {version}"));
        send(
            s,
            &carol,
            &room,
            &format!("synapse in hearth's room {version}"),
        );
        eventually("Synapse's message in Hearth's room", || {
            bodies(h, &alice, &room).contains(&format!("synapse in hearth's room {version}"))
        });
        send(h, &alice, &room, &format!("hearth in its room {version}"));
        eventually("Hearth's message in its room at Synapse", || {
            bodies(s, &carol, &room).contains(&format!("hearth in its room {version}"))
        });
    }

    // Invites both ways.
    let room = create_room(
        s,
        &carol,
        json!({ "preset": "private_chat", "invite": [alice_id] }),
    );
    eventually("Synapse's invite at Hearth", || {
        let synced = call(h, "GET", "/_matrix/client/v3/sync", &alice, json!(null));
        synced["rooms"]["invite"].get(&room).is_some()
    });
    call(
        h,
        "POST",
        &format!("/_matrix/client/v3/join/{}", query_encode(&room)),
        &alice,
        json!({}),
    );
    assert!(joined_members(s, &carol, &room).get(&alice_id).is_some());
    let room = create_room(h, &alice, json!({ "preset": "private_chat" }));
    call(
        h,
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/invite"),
        &alice,
        json!({ "user_id": carol_id }),
    );
    eventually("Hearth's invite at Synapse", || {
        let synced = call(s, "GET", "/_matrix/client/v3/sync", &carol, json!(null));
        synced["rooms"]["invite"].get(&room).is_some()
    });
    call(
        s,
        "POST",
        &format!("/_matrix/client/v3/join/{}", query_encode(&room)),
        &carol,
        json!({}),
    );
    assert!(joined_members(h, &alice, &room).get(&carol_id).is_some());

    // Profiles and aliases across.
    call(
        s,
        "PUT",
        &format!("/_matrix/client/v3/profile/{carol_id}/displayname"),
        &carol,
        json!({ "displayname": "Carol on Synapse" }),
    );
    let profile = call(
        h,
        "GET",
        &format!("/_matrix/client/v3/profile/{carol_id}"),
        &alice,
        json!(null),
    );
    assert_eq!(profile["displayname"], "Carol on Synapse");
    call(
        h,
        "PUT",
        &format!("/_matrix/client/v3/profile/{alice_id}/displayname"),
        &alice,
        json!({ "displayname": "Alice on Hearth" }),
    );
    let profile = call(
        s,
        "GET",
        &format!("/_matrix/client/v3/profile/{alice_id}"),
        &carol,
        json!(null),
    );
    assert_eq!(profile["displayname"], "Alice on Hearth");
    let aliased = create_room(
        s,
        &carol,
        json!({ "preset": "public_chat", "room_alias_name": "lobby" }),
    );
    let alias = format!("#lobby:{}", synapse.name);
    let resolved = call(
        h,
        "GET",
        &format!("/_matrix/client/v3/directory/room/{}", query_encode(&alias)),
        &alice,
        json!(null),
    );
    assert_eq!(resolved["room_id"], aliased.as_str());
    call(
        h,
        "POST",
        &format!("/_matrix/client/v3/join/{}", query_encode(&alias)),
        &alice,
        json!({}),
    );
    assert!(joined_members(s, &carol, &aliased).get(&alice_id).is_some());
}

/// A room of `version` whose join rules let in the members of `allowed` only.
fn restricted_room_body(version: &str, allowed: &str) -> Value {
    json!({
        "room_version": version,
        "preset": "private_chat",
        "initial_state": [{
            "type": "m.room.join_rules", "state_key": "",
            "content": { "join_rule": "restricted",
                         "allow": [{ "type": "m.room_membership", "room_id": allowed }] }
        }],
    })
}

/// `POST /join` that must fail: its status and `errcode`.
fn refused_join(address: SocketAddr, token: &str, room: &str, via: &str) -> (u16, String) {
    let response = Client::plain(address).json(
        "POST",
        &format!(
            "/_matrix/client/v3/join/{}?via={}",
            query_encode(room),
            query_encode(via)
        ),
        Some(token),
        &json!({}),
    );
    assert_ne!(response.status, 200, "the join should be refused");
    (response.status, common::errcode(&response))
}

#[test]
fn restricted_rooms_let_members_of_allowed_rooms_in_across_hearth_and_synapse() {
    let Some(python) = synapse_python() else {
        return;
    };
    let certificates = tempfile::tempdir().expect("tempdir");
    write_certificates(certificates.path());
    let synapse = Synapse::start(&python, certificates.path());
    let carol = synapse.register(&python, "carol");
    let carol_id = format!("@carol:{}", synapse.name);
    let port = free_port();
    let hearth_name = format!("localhost:{port}");
    let hearth: Server = start(certificates.path(), &hearth_name, port, &[], &["alice"]);
    let alice = common::login_token(&hearth, "alice", PASSWORD);
    let alice_id = format!("@alice:{hearth_name}");
    let (h, s) = (hearth.address("http"), synapse.client);

    for version in ["9", "10"] {
        // Hearth resident: Synapse's Carol joins the space, then the room Hearth vouches for.
        let space = create_room(
            h,
            &alice,
            json!({ "preset": "public_chat", "room_version": version,
                    "creation_content": { "type": "m.space" } }),
        );
        let room = create_room(h, &alice, restricted_room_body(version, &space));
        let (status, code) = refused_join(s, &carol, &room, &hearth_name);
        assert_eq!(
            (status, code.as_str()),
            (403, "M_FORBIDDEN"),
            "version {version}"
        );
        join(s, &carol, &space, &hearth_name);
        join(s, &carol, &room, &hearth_name);
        assert!(
            joined_members(h, &alice, &room).get(&carol_id).is_some(),
            "version {version}"
        );
        assert!(
            joined_members(s, &carol, &room).get(&carol_id).is_some(),
            "version {version}: {}",
            synapse.log()
        );
        let member = call(
            h,
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{carol_id}"),
            &alice,
            json!(null),
        );
        assert_eq!(
            member["join_authorised_via_users_server"],
            alice_id.as_str()
        );

        // Synapse resident: Hearth's Alice joins the space, then the room Synapse vouches for.
        let space = create_room(
            s,
            &carol,
            json!({ "preset": "public_chat", "room_version": version,
                    "creation_content": { "type": "m.space" } }),
        );
        let room = create_room(s, &carol, restricted_room_body(version, &space));
        let (status, _) = refused_join(h, &alice, &room, &synapse.name);
        assert_eq!(status, 403, "version {version}");
        join(h, &alice, &space, &synapse.name);
        join(h, &alice, &room, &synapse.name);
        assert!(
            joined_members(s, &carol, &room).get(&alice_id).is_some(),
            "version {version}: {}",
            synapse.log()
        );
        let member = call(
            h,
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{alice_id}"),
            &alice,
            json!(null),
        );
        assert_eq!(
            member["join_authorised_via_users_server"],
            carol_id.as_str()
        );
        // Talking works once in.
        send(
            h,
            &alice,
            &room,
            &format!("alice in synapse's restricted room {version}"),
        );
        eventually("Hearth's message in Synapse's restricted room", || {
            bodies(s, &carol, &room)
                .contains(&format!("alice in synapse's restricted room {version}"))
        });
    }
}
