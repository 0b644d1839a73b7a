//! State resolution v2 after a real network split: two servers (two real Hearths, or Hearth
//! and a real Synapse) share a room; the test cuts the loopback links between them, each
//! side changes the room's state on its own, and the links are restored. Once each server
//! has the other's events, both must serve the same `/state`, and it must be the one the
//! spec's state resolution v2 gives (spec: room versions, "State resolution, version 2"):
//! power events ordered by the reverse topological power ordering (the ban or demotion by
//! the more powerful user is applied first, and the demoted or banned user's concurrent
//! changes then fail their auth checks), the other conflicted events by their mainline
//! position.
//!
//! The split is a TCP relay per server run by the test: each server's name carries the
//! relay's port, while the server listens on another; cutting a link closes its open
//! connections and refuses new ones. Which events each side makes during the split, and
//! so the resolved state, does not depend on timing: only how soon the servers retry does.

mod common;

use std::collections::BTreeMap;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::federation::{free_port, lost_port_race, write_certificates};
use common::http::Client;
use common::synapse::{Synapse, synapse_python};
use common::{Server, hearth, query_encode};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// A relay from a port of its own to a server's federation port, that can be cut.
struct Link {
    port: u16,
    shared: Arc<Mutex<LinkState>>,
}

struct LinkState {
    open: bool,
    stopped: bool,
    streams: Vec<TcpStream>,
}

impl Link {
    fn to(target: u16) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().expect("address").port();
        let shared = Arc::new(Mutex::new(LinkState {
            open: true,
            stopped: false,
            streams: Vec::new(),
        }));
        let state = shared.clone();
        std::thread::spawn(move || {
            for incoming in listener.incoming() {
                let Ok(client) = incoming else { continue };
                // Deciding and registering under the lock: a cut closes every connection
                // that got through.
                let mut guard = state.lock().expect("link");
                if guard.stopped {
                    break;
                }
                if !guard.open {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                for stream in [&client, &server] {
                    if let Ok(clone) = stream.try_clone() {
                        guard.streams.push(clone);
                    }
                }
                drop(guard);
                relay(&client, &server);
                relay(&server, &client);
            }
        });
        Link { port, shared }
    }

    /// The network splits: open connections are closed, new ones refused.
    fn cut(&self) {
        let mut state = self.shared.lock().expect("link");
        state.open = false;
        for stream in state.streams.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.shared.lock().expect("link").open = true;
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.cut();
        self.shared.lock().expect("link").stopped = true;
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies one direction of a relayed connection.
fn relay(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// A Hearth server behind a [`Link`]: named after the link's port, retrying a peer one
/// second after a failure (30 s by default) so that the end of a split is noticed soon.
fn start_hearth(certificates: &Path, host: &str, users: &[&str]) -> (Server, Link, String) {
    // The server's own port is only free when asked: another process may take it first, so
    // a start that lost that race is tried again on another port.
    let mut failures = Vec::new();
    for _ in 0..8 {
        match try_start_hearth(certificates, host, users) {
            Ok(started) => return started,
            Err((log, port)) if lost_port_race(&log, port) => failures.push(log),
            Err((log, _)) => panic!("server did not start: {log}"),
        }
    }
    panic!("no free port in 8 attempts:\n{}", failures.join("\n"));
}

fn try_start_hearth(
    certificates: &Path,
    host: &str,
    users: &[&str],
) -> Result<(Server, Link, String), (String, u16)> {
    let port = free_port();
    let link = Link::to(port);
    let name = format!("{host}:{}", link.port);
    let dir = tempfile::tempdir().expect("tempdir");
    for file in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::copy(certificates.join(file), dir.path().join(file)).expect("copy");
    }
    let config = format!(
        "[server]\nserver_name = \"{name}\"\nworkers = 1\n\n\
         [database]\npath = \"data\"\n\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\n\n\
         [[listeners]]\naddress = \"127.0.0.1:{port}\"\ntls = true\n\n\
         [tls]\ncertificate = \"cert.pem\"\nprivate_key = \"key.pem\"\n\n\
         [federation]\ntrusted_key_servers = []\nextra_ca_file = \"ca.pem\"\n\
         retry_initial_seconds = 1\nallow_private_addresses = true\n"
    );
    std::fs::write(dir.path().join("hearth.toml"), config).expect("config");
    for user in users {
        let output = hearth(dir.path(), &["user", "add", user], &format!("{PASSWORD}\n"));
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut server = Server::start_in(dir.path(), &[], &[]).map_err(|log| (log, port))?;
    server.keep_dir(dir);
    Ok((server, link, name))
}

/// A Synapse behind a [`Link`] (named after the link's port), retrying a peer a second after
/// a failure (10 minutes by default) so that the end of a split is noticed soon.
fn start_synapse(python: &str, certificates: &Path) -> (Synapse, Link, String) {
    let retry_soon = "federation:\n\
                      \x20 destination_min_retry_interval: 1s\n\
                      \x20 destination_max_retry_interval: 4s\n\
                      \x20 max_long_retries: 2\n\
                      \x20 max_long_retry_delay: 1s\n";
    let (synapse, link) = Synapse::start_with(python, certificates, retry_soon, |port| {
        let link = Link::to(port);
        (link.port, link)
    });
    let name = synapse.name.clone();
    (synapse, link, name)
}

/// One server as its clients see it: its client API, its name, and its users' tokens.
struct Side {
    http: SocketAddr,
    name: String,
    tokens: BTreeMap<&'static str, String>,
}

impl Side {
    fn new(http: SocketAddr, name: String, users: &[&'static str]) -> Side {
        let tokens = users
            .iter()
            .map(|user| {
                let answer = Client::plain(http).json(
                    "POST",
                    "/_matrix/client/v3/login",
                    None,
                    &json!({ "type": "m.login.password",
                             "identifier": { "type": "m.id.user", "user": user },
                             "password": PASSWORD }),
                );
                let token = answer.json()["access_token"]
                    .as_str()
                    .unwrap_or_else(|| panic!("login {user}: {}", answer.json()))
                    .to_owned();
                (*user, token)
            })
            .collect();
        Side { http, name, tokens }
    }

    fn id(&self, user: &str) -> String {
        format!("@{user}:{}", self.name)
    }

    fn token(&self, user: &str) -> &str {
        &self.tokens[user]
    }

    fn request(
        &self,
        user: &str,
        method: &str,
        path: &str,
        body: &Value,
    ) -> common::http::Response {
        Client::plain(self.http).json(method, path, Some(self.token(user)), body)
    }

    /// A client call that must succeed.
    fn call(&self, user: &str, method: &str, path: &str, body: Value) -> Value {
        let response = self.request(user, method, path, &body);
        assert_eq!(
            response.status,
            200,
            "{user} {method} {path} on {}: {}",
            self.name,
            String::from_utf8_lossy(&response.body)
        );
        response.json()
    }

    /// `user`'s view of the room's current state: event IDs by type and state key.
    fn state(&self, user: &str, room: &str) -> BTreeMap<(String, String), String> {
        let path = format!("/_matrix/client/v3/rooms/{room}/state");
        self.call(user, "GET", &path, json!(null))
            .as_array()
            .expect("state")
            .iter()
            .map(|event| {
                let field = |name: &str| event[name].as_str().expect(name).to_owned();
                ((field("type"), field("state_key")), field("event_id"))
            })
            .collect()
    }

    fn content(&self, user: &str, room: &str, kind: &str, state_key: &str) -> Value {
        let path = format!("/_matrix/client/v3/rooms/{room}/state/{kind}/{state_key}");
        self.call(user, "GET", &path, json!(null))
    }

    /// Sets a state event; its event ID.
    fn put_state(&self, user: &str, room: &str, kind: &str, content: Value) -> String {
        let path = format!("/_matrix/client/v3/rooms/{room}/state/{kind}/");
        self.call(user, "PUT", &path, content)["event_id"]
            .as_str()
            .expect("event ID")
            .to_owned()
    }

    fn join(&self, user: &str, room: &str, via: &str) {
        let path = format!(
            "/_matrix/client/v3/join/{}?via={}",
            query_encode(room),
            query_encode(via)
        );
        self.call(user, "POST", &path, json!({}));
    }

    fn send(&self, user: &str, room: &str, txn: &str, body: &str) -> common::http::Response {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
        self.request(
            user,
            "PUT",
            &path,
            &json!({ "msgtype": "m.text", "body": body }),
        )
    }

    /// The message bodies of the room's latest 50 events, oldest first.
    fn bodies(&self, user: &str, room: &str) -> Vec<String> {
        let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50");
        let page = self.call(user, "GET", &path, json!(null));
        let mut bodies: Vec<String> = page["chunk"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|event| event["content"]["body"].as_str().map(str::to_owned))
            .collect();
        bodies.reverse();
        bodies
    }
}

/// Waits up to a minute for `check`; fails with `what` and the last `describe()`.
fn eventually(what: &str, mut check: impl FnMut() -> bool, describe: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: {}", describe());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Two servers sharing a room of `version` held by Alice of server A, which Bob, Carol and
/// Dave of server B joined; the links to cut; and what must outlive the test.
struct Split {
    a: Side,
    b: Side,
    link_a: Link,
    link_b: Link,
    room: String,
    _keep: Vec<Box<dyn std::any::Any>>,
}

const B_USERS: [&str; 3] = ["bob", "carol", "dave"];

fn two_hearths(version: &str) -> Split {
    let certificates = tempfile::tempdir().expect("tempdir");
    write_certificates(certificates.path());
    let (server_a, link_a, name_a) = start_hearth(certificates.path(), "127.0.0.1", &["alice"]);
    let (server_b, link_b, name_b) = start_hearth(certificates.path(), "localhost", &B_USERS);
    let a = Side::new(server_a.address("http"), name_a, &["alice"]);
    let b = Side::new(server_b.address("http"), name_b, &B_USERS);
    let keep: Vec<Box<dyn std::any::Any>> = vec![
        Box::new(server_a),
        Box::new(server_b),
        Box::new(certificates),
    ];
    shared_room(a, b, link_a, link_b, keep, version)
}

fn hearth_and_synapse(python: &str, version: &str) -> Split {
    let certificates = tempfile::tempdir().expect("tempdir");
    write_certificates(certificates.path());
    let (server_a, link_a, name_a) = start_hearth(certificates.path(), "127.0.0.1", &["alice"]);
    let (synapse, link_b, name_b) = start_synapse(python, certificates.path());
    for user in B_USERS {
        synapse.register(python, user);
    }
    let a = Side::new(server_a.address("http"), name_a, &["alice"]);
    let b = Side::new(synapse.client, name_b, &B_USERS);
    // Synapse is stopped first (its log is printed while Hearth still runs).
    let keep: Vec<Box<dyn std::any::Any>> = vec![
        Box::new(synapse),
        Box::new(server_a),
        Box::new(certificates),
    ];
    shared_room(a, b, link_a, link_b, keep, version)
}

fn shared_room(
    a: Side,
    b: Side,
    link_a: Link,
    link_b: Link,
    keep: Vec<Box<dyn std::any::Any>>,
    version: &str,
) -> Split {
    let room = a.call(
        "alice",
        "POST",
        "/_matrix/client/v3/createRoom",
        json!({ "preset": "public_chat", "room_version": version }),
    )["room_id"]
        .as_str()
        .expect("room")
        .to_owned();
    for user in B_USERS {
        b.join(user, &room, &a.name);
    }
    // B joins its later users itself (it is in the room by then): A learns of them by a
    // transaction.
    eventually(
        "A did not see B's users join",
        || {
            let state = a.state("alice", &room);
            B_USERS
                .iter()
                .all(|user| state.contains_key(&key("m.room.member", &b.id(user))))
        },
        || format!("{:?}", a.state("alice", &room)),
    );
    Split {
        a,
        b,
        link_a,
        link_b,
        room,
        _keep: keep,
    }
}

impl Split {
    /// Alice changes the power levels (keeping what `change` leaves alone, so that a
    /// version 12 room's creator stays unlisted); once B has the event, its ID.
    fn set_levels_and_share(&self, change: impl FnOnce(&mut Value)) -> String {
        let mut levels = self
            .a
            .content("alice", &self.room, "m.room.power_levels", "");
        change(&mut levels);
        let id = self
            .a
            .put_state("alice", &self.room, "m.room.power_levels", levels);
        self.wait_on_b(&id);
        id
    }

    /// Waits until B's view (Dave's) has `event_id` in the room's state.
    fn wait_on_b(&self, event_id: &str) {
        let key = ("m.room.power_levels".to_owned(), String::new());
        eventually(
            "B did not get the power levels",
            || {
                self.b
                    .state("dave", &self.room)
                    .get(&key)
                    .map(String::as_str)
                    == Some(event_id)
            },
            || format!("{:?}", self.b.state("dave", &self.room)),
        );
    }

    fn split(&self) {
        self.link_a.cut();
        self.link_b.cut();
    }

    fn reconnect(&self) {
        self.link_a.restore();
        self.link_b.restore();
    }

    /// Waits until both servers show one state of the room, holding `entry`; that state.
    fn agreed_state(&self, entry: (&str, &str, &str)) -> BTreeMap<(String, String), String> {
        let (kind, state_key, event_id) = entry;
        let key = (kind.to_owned(), state_key.to_owned());
        eventually(
            "the servers did not agree on the room's state",
            || {
                let on_a = self.a.state("alice", &self.room);
                on_a.get(&key).map(String::as_str) == Some(event_id)
                    && on_a == self.b.state("dave", &self.room)
            },
            || {
                format!(
                    "waiting for {key:?} = {event_id}\non A: {:#?}\non B: {:#?}",
                    self.a.state("alice", &self.room),
                    self.b.state("dave", &self.room)
                )
            },
        );
        self.a.state("alice", &self.room)
    }
}

fn key(kind: &str, state_key: &str) -> (String, String) {
    (kind.to_owned(), state_key.to_owned())
}

/// During the split Alice (power 100, or the creator) bans Bob on A, while on B Bob
/// (power 50, enough to ban and to change power levels) bans Carol, promotes Dave and
/// names the room. State resolution v2 applies the power events in reverse topological
/// power order: Alice's ban first; Bob, banned, then fails the auth checks of all three
/// of his events. So both servers end with Bob banned, Carol still joined, Dave at power
/// 0 and no name, and Carol and Dave go on talking to Alice.
fn ban_during_split(s: &Split) {
    let (room, a, b) = (&s.room, &s.a, &s.b);
    let (bob, carol, dave) = (b.id("bob"), b.id("carol"), b.id("dave"));
    let levels = s.set_levels_and_share(|levels| {
        levels["users"][&bob] = json!(50);
        levels["ban"] = json!(50);
        levels["events"]["m.room.power_levels"] = json!(50);
        levels["state_default"] = json!(50);
    });
    let before = a.state("alice", room);
    let carol_joined = before[&key("m.room.member", &carol)].clone();

    s.split();
    a.call(
        "alice",
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/ban"),
        json!({ "user_id": bob, "reason": "split brain" }),
    );
    let alices_ban = a.state("alice", room)[&key("m.room.member", &bob)].clone();
    b.call(
        "bob",
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/ban"),
        json!({ "user_id": carol }),
    );
    let mut promoted = b.content("bob", room, "m.room.power_levels", "");
    promoted["users"][&dave] = json!(50);
    let bobs_levels = b.put_state("bob", room, "m.room.power_levels", promoted);
    let bobs_name = b.put_state("bob", room, "m.room.name", json!({ "name": "Bob's room" }));

    // Apart, each side has only its own changes.
    let on_b = b.state("dave", room);
    assert_eq!(
        b.content("dave", room, "m.room.member", &carol)["membership"],
        "ban"
    );
    assert_eq!(on_b[&key("m.room.power_levels", "")], bobs_levels);
    assert_eq!(
        on_b[&key("m.room.member", &bob)],
        before[&key("m.room.member", &bob)]
    );
    assert_eq!(
        a.state("alice", room)[&key("m.room.member", &carol)],
        carol_joined
    );

    s.reconnect();
    let agreed = s.agreed_state(("m.room.member", &bob, &alices_ban));
    assert_eq!(
        agreed[&key("m.room.member", &carol)],
        carol_joined,
        "Bob's ban of Carol fails once Bob is banned"
    );
    assert_eq!(
        agreed[&key("m.room.power_levels", "")],
        levels,
        "Bob's power levels fail once he is banned"
    );
    assert!(
        !agreed.contains_key(&key("m.room.name", "")),
        "Bob's name ({bobs_name}) fails once he is banned"
    );
    for side in [a, b] {
        let user = if side.name == a.name { "alice" } else { "dave" };
        assert_eq!(
            side.content(user, room, "m.room.member", &carol)["membership"],
            "join"
        );
        assert_eq!(
            side.content(user, room, "m.room.power_levels", "")["users"].get(&dave),
            None
        );
    }

    // The room goes on: Carol, joined again on B, and Dave talk to Alice; Bob may not.
    let refused = b.send("bob", room, "bob-after", "am I still here?");
    assert_eq!(
        refused.status,
        403,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    assert_eq!(
        b.send("carol", room, "carol-after", "back from the split")
            .status,
        200
    );
    assert_eq!(b.send("dave", room, "dave-after", "me too").status, 200);
    eventually(
        "A did not get Carol's and Dave's messages",
        || {
            let bodies = a.bodies("alice", room);
            bodies.contains(&"back from the split".to_owned())
                && bodies.contains(&"me too".to_owned())
        },
        || format!("{:?}", a.bodies("alice", room)),
    );
    let members = a.call(
        "alice",
        "GET",
        &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
        json!(null),
    );
    assert!(members["joined"].get(&carol).is_some(), "{members}");
    assert!(members["joined"].get(&bob).is_none(), "{members}");
    assert_eq!(s.agreed_state(("m.room.member", &bob, &alices_ban)), agreed);
}

/// During the split Alice demotes Bob (power 50, enough to change power levels and state)
/// to 0 and sets a topic on A, while on B Bob promotes Carol and names the room, and then
/// Dave (power 50) sets a topic, later than Alice's. Alice's power levels are applied
/// first (her power is higher), and Bob's then fail: Carol stays at 0, the room has no
/// name. Both topics pass their checks; mainline ordering puts Dave's first (its power
/// levels, Bob's, lead to the mainline only at the levels before the split) and Alice's
/// last (it cites her new levels, later on the mainline), so Alice's topic is the room's
/// although Dave's is the later one.
fn demotion_during_split(s: &Split) {
    let (room, a, b) = (&s.room, &s.a, &s.b);
    let (bob, carol, dave) = (b.id("bob"), b.id("carol"), b.id("dave"));
    s.set_levels_and_share(|levels| {
        levels["users"][&bob] = json!(50);
        levels["users"][&dave] = json!(50);
        levels["events"]["m.room.power_levels"] = json!(50);
        levels["events"]["m.room.topic"] = json!(50);
        levels["state_default"] = json!(50);
    });

    s.split();
    let mut demoted = a.content("alice", room, "m.room.power_levels", "");
    demoted["users"][&bob] = json!(0);
    let alices_levels = a.put_state("alice", room, "m.room.power_levels", demoted);
    let alices_topic = a.put_state("alice", room, "m.room.topic", json!({ "topic": "Alice's" }));
    let mut promoted = b.content("bob", room, "m.room.power_levels", "");
    promoted["users"][&carol] = json!(50);
    b.put_state("bob", room, "m.room.power_levels", promoted);
    b.put_state("bob", room, "m.room.name", json!({ "name": "Bob's room" }));
    std::thread::sleep(Duration::from_millis(20));
    let daves_topic = b.put_state("dave", room, "m.room.topic", json!({ "topic": "Dave's" }));
    let ts = |side: &Side, user: &str, id: &str| {
        side.call(
            user,
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/event/{id}"),
            json!(null),
        )["origin_server_ts"]
            .as_u64()
            .expect("origin_server_ts")
    };
    assert!(ts(b, "dave", &daves_topic) > ts(a, "alice", &alices_topic));

    s.reconnect();
    let agreed = s.agreed_state(("m.room.power_levels", "", &alices_levels));
    assert_eq!(
        agreed[&key("m.room.topic", "")],
        alices_topic,
        "mainline ordering: Alice's topic (Dave's was {daves_topic})"
    );
    assert!(
        !agreed.contains_key(&key("m.room.name", "")),
        "Bob's name fails once he is demoted"
    );
    for (side, user) in [(a, "alice"), (b, "dave")] {
        let levels = side.content(user, room, "m.room.power_levels", "");
        assert_eq!(levels["users"][&bob], 0, "{levels}");
        assert_eq!(levels["users"].get(&carol), None, "{levels}");
        assert_eq!(
            side.content(user, room, "m.room.topic", "")["topic"],
            "Alice's"
        );
    }
    // On B, Bob may no longer set state; Dave still may.
    let refused = b.request(
        "bob",
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/"),
        &json!({ "topic": "Bob's" }),
    );
    assert_eq!(
        refused.status,
        403,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    let last = b.put_state("dave", room, "m.room.topic", json!({ "topic": "settled" }));
    assert_eq!(
        s.agreed_state(("m.room.topic", "", &last))[&key("m.room.power_levels", "")],
        alices_levels
    );
}

#[test]
fn a_ban_during_a_split_wins_over_the_banned_users_changes_v10() {
    ban_during_split(&two_hearths("10"));
}

#[test]
fn a_ban_during_a_split_wins_over_the_banned_users_changes_v12() {
    ban_during_split(&two_hearths("12"));
}

#[test]
fn a_demotion_during_a_split_wins_and_mainline_orders_the_topics_v11() {
    demotion_during_split(&two_hearths("11"));
}

#[test]
fn with_synapse_a_ban_during_a_split_wins_over_the_banned_users_changes() {
    let Some(python) = synapse_python() else {
        return;
    };
    ban_during_split(&hearth_and_synapse(&python, "10"));
}

#[test]
fn with_synapse_a_demotion_during_a_split_wins_and_mainline_orders_the_topics() {
    let Some(python) = synapse_python() else {
        return;
    };
    demotion_during_split(&hearth_and_synapse(&python, "11"));
}
