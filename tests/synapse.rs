//! Hearth federating with a real Synapse (installed from PyPI by scripts/test into
//! `.venv-synapse`, pointed at by `HEARTH_TEST_SYNAPSE_PYTHON`), over TLS on loopback with a
//! CA the test makes: rooms created on each side and joined from the other in every room
//! version 1 to 12, invites both ways, messages, history backfill, profile and alias lookups,
//! restricted rooms held by each side joined by members of their allowed rooms, leaving,
//! rejoining and declining invites both ways, redactions and state changes. Each test starts
//! its own pair of servers (nextest runs each test in a process of its own).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::federation::{start, write_certificates};
use common::http::Client;
use common::synapse::{PASSWORD, Synapse, synapse_python};
use common::{Server, query_encode};
use serde_json::{Value, json};

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

fn leave(address: SocketAddr, token: &str, room: &str) {
    call(
        address,
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/leave"),
        token,
        json!({}),
    );
}

/// A `GET` that may fail: its JSON on `200`, else null.
fn get_or_null(address: SocketAddr, token: &str, path: &str) -> Value {
    let response = Client::plain(address).get_with(path, token);
    if response.status == 200 {
        response.json()
    } else {
        Value::Null
    }
}

/// The content of the state event `kind` (state key "") of `room`, or null.
fn state(address: SocketAddr, token: &str, room: &str, kind: &str) -> Value {
    get_or_null(
        address,
        token,
        &format!("/_matrix/client/v3/rooms/{room}/state/{kind}/"),
    )
}

/// `user`'s membership of `room`, as the holder of `token` sees it ("" if not visible).
fn membership(address: SocketAddr, token: &str, room: &str, user: &str) -> String {
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{user}");
    get_or_null(address, token, &path)["membership"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The news since `since` (which moves on): a whole `/sync` answer.
fn sync_since(address: SocketAddr, token: &str, since: &mut String) -> Value {
    let path = format!(
        "/_matrix/client/v3/sync?timeout=0&since={}",
        query_encode(since)
    );
    let synced = call(address, "GET", &path, token, json!(null));
    if let Some(next) = synced["next_batch"].as_str() {
        *since = next.to_owned();
    }
    synced
}

/// The rooms of `section` ("join", "invite", "leave") in a whole new `/sync`.
fn rooms_in(address: SocketAddr, token: &str, section: &str) -> Value {
    let filter = query_encode(r#"{"room":{"timeline":{"limit":1},"include_leave":true}}"#);
    let path = format!("/_matrix/client/v3/sync?filter={filter}");
    call(address, "GET", &path, token, json!(null))["rooms"][section].clone()
}

/// A Synapse with a user `carol` and a Hearth with a user `alice`, trusting each other's
/// certificates; the servers stop when it is dropped.
struct Pair {
    synapse: Synapse,
    hearth: Server,
    hearth_name: String,
    alice: String,
    alice_id: String,
    carol: String,
    carol_id: String,
    /// The client listeners of Hearth and of Synapse.
    h: SocketAddr,
    s: SocketAddr,
    _certificates: tempfile::TempDir,
}

impl Drop for Pair {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.hearth.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- Hearth log (last lines) ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

impl Pair {
    /// Both servers, or `None` on a machine without Synapse.
    fn start() -> Option<Pair> {
        let python = synapse_python()?;
        let certificates = tempfile::tempdir().expect("tempdir");
        write_certificates(certificates.path());
        let synapse = Synapse::start(&python, certificates.path());
        let carol = synapse.register(&python, "carol");
        let carol_id = format!("@carol:{}", synapse.name);
        let hearth: Server = start(certificates.path(), "localhost", &[], &["alice"]);
        let hearth_name = hearth.name.clone();
        let alice = common::login_token(&hearth, "alice", PASSWORD);
        let alice_id = format!("@alice:{hearth_name}");
        let (h, s) = (hearth.address("http"), synapse.client);
        Some(Pair {
            synapse,
            hearth,
            hearth_name,
            alice,
            alice_id,
            carol,
            carol_id,
            h,
            s,
            _certificates: certificates,
        })
    }
}

#[test]
fn hearth_and_synapse_hold_rooms_together() {
    let Some(pair) = Pair::start() else {
        return;
    };
    let Pair {
        synapse,
        hearth_name,
        alice,
        alice_id,
        carol,
        carol_id,
        h,
        s,
        ..
    } = &pair;
    let (alice, carol, alice_id, carol_id, hearth_name) = (
        alice.as_str(),
        carol.as_str(),
        alice_id.as_str(),
        carol_id.as_str(),
        hearth_name.as_str(),
    );
    let (h, s) = (*h, *s);

    for version in ["10", "11", "12"] {
        // A Synapse room with some history, joined from Hearth.
        let room = create_room(
            s,
            carol,
            json!({ "preset": "public_chat", "room_version": version, "name": format!("Synapse {version}") }),
        );
        send(s, carol, &room, &format!("before alice {version}"));
        join(h, alice, &room, &synapse.name);
        assert!(
            joined_members(s, carol, &room).get(alice_id).is_some(),
            "version {version}: {}",
            synapse.log()
        );
        // History from before the join comes back through backfill.
        assert!(
            bodies(h, alice, &room).contains(&format!("before alice {version}")),
            "version {version}: no backfilled history"
        );
        // Synapse's messages reach Hearth.
        let from_synapse = send(s, carol, &room, &format!("from synapse {version}"));
        eventually("a message from Synapse", || {
            bodies(h, alice, &room).contains(&format!("from synapse {version}"))
        });
        // Hearth's messages reach Synapse (the outbound queue's transactions).
        let from_hearth = send(h, alice, &room, &format!("from hearth {version}"));
        eventually("a message from Hearth at Synapse", || {
            bodies(s, carol, &room).contains(&format!("from hearth {version}"))
        });
        // Typing and read receipts, both ways.
        let (mut at_s, mut at_h) = (sync_token(s, carol), sync_token(h, alice));
        typing(h, alice, &room, alice_id);
        eventually("Hearth's typing at Synapse", || {
            let typing = news(s, carol, &mut at_s, &room, "m.typing");
            typing["content"]["user_ids"] == json!([alice_id])
        });
        typing(s, carol, &room, carol_id);
        eventually("Synapse's typing at Hearth", || {
            let typing = news(h, alice, &mut at_h, &room, "m.typing");
            typing["content"]["user_ids"]
                .as_array()
                .is_some_and(|users| users.contains(&json!(carol_id)))
        });
        let receipt = format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{from_hearth}");
        call(s, "POST", &receipt, carol, json!({}));
        eventually("Synapse's read receipt at Hearth", || {
            let receipts = news(h, alice, &mut at_h, &room, "m.receipt");
            receipts["content"][&from_hearth]["m.read"]
                .get(carol_id)
                .is_some()
        });
        let receipt = format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{from_synapse}");
        call(h, "POST", &receipt, alice, json!({}));
        eventually("Hearth's read receipt at Synapse", || {
            let receipts = news(s, carol, &mut at_s, &room, "m.receipt");
            receipts["content"][&from_synapse]["m.read"]
                .get(alice_id)
                .is_some()
        });

        // A Hearth room joined from Synapse.
        let room = create_room(
            h,
            alice,
            json!({ "preset": "public_chat", "room_version": version, "name": format!("Hearth {version}") }),
        );
        // History from before Synapse joined: Synapse backfills it from Hearth.
        send(h, alice, &room, &format!("before synapse joined {version}"));
        join(s, carol, &room, hearth_name);
        assert!(joined_members(h, alice, &room).get(carol_id).is_some());
        eventually("Hearth's history backfilled by Synapse", || {
            bodies(s, carol, &room).contains(&format!("before synapse joined {version}"))
        });
        let name = call(
            s,
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            carol,
            json!(null),
        );
        assert_eq!(name["name"], format!("Hearth {version}"));
        send(
            s,
            carol,
            &room,
            &format!("synapse in hearth's room {version}"),
        );
        eventually("Synapse's message in Hearth's room", || {
            bodies(h, alice, &room).contains(&format!("synapse in hearth's room {version}"))
        });
        send(h, alice, &room, &format!("hearth in its room {version}"));
        eventually("Hearth's message in its room at Synapse", || {
            bodies(s, carol, &room).contains(&format!("hearth in its room {version}"))
        });
    }

    // Invites both ways.
    let room = create_room(
        s,
        carol,
        json!({ "preset": "private_chat", "invite": [alice_id] }),
    );
    eventually("Synapse's invite at Hearth", || {
        let synced = call(h, "GET", "/_matrix/client/v3/sync", alice, json!(null));
        synced["rooms"]["invite"].get(&room).is_some()
    });
    call(
        h,
        "POST",
        &format!("/_matrix/client/v3/join/{}", query_encode(&room)),
        alice,
        json!({}),
    );
    assert!(joined_members(s, carol, &room).get(alice_id).is_some());
    let room = create_room(h, alice, json!({ "preset": "private_chat" }));
    call(
        h,
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/invite"),
        alice,
        json!({ "user_id": carol_id }),
    );
    eventually("Hearth's invite at Synapse", || {
        let synced = call(s, "GET", "/_matrix/client/v3/sync", carol, json!(null));
        synced["rooms"]["invite"].get(&room).is_some()
    });
    call(
        s,
        "POST",
        &format!("/_matrix/client/v3/join/{}", query_encode(&room)),
        carol,
        json!({}),
    );
    assert!(joined_members(h, alice, &room).get(carol_id).is_some());

    // Profiles and aliases across.
    call(
        s,
        "PUT",
        &format!("/_matrix/client/v3/profile/{carol_id}/displayname"),
        carol,
        json!({ "displayname": "Carol on Synapse" }),
    );
    let profile = call(
        h,
        "GET",
        &format!("/_matrix/client/v3/profile/{carol_id}"),
        alice,
        json!(null),
    );
    assert_eq!(profile["displayname"], "Carol on Synapse");
    call(
        h,
        "PUT",
        &format!("/_matrix/client/v3/profile/{alice_id}/displayname"),
        alice,
        json!({ "displayname": "Alice on Hearth" }),
    );
    let profile = call(
        s,
        "GET",
        &format!("/_matrix/client/v3/profile/{alice_id}"),
        carol,
        json!(null),
    );
    assert_eq!(profile["displayname"], "Alice on Hearth");
    let aliased = create_room(
        s,
        carol,
        json!({ "preset": "public_chat", "room_alias_name": "lobby" }),
    );
    let alias = format!("#lobby:{}", synapse.name);
    let resolved = call(
        h,
        "GET",
        &format!("/_matrix/client/v3/directory/room/{}", query_encode(&alias)),
        alice,
        json!(null),
    );
    assert_eq!(resolved["room_id"], aliased.as_str());
    call(
        h,
        "POST",
        &format!("/_matrix/client/v3/join/{}", query_encode(&alias)),
        alice,
        json!({}),
    );
    assert!(joined_members(s, carol, &aliased).get(alice_id).is_some());
    // And the other way: Synapse resolves an alias of Hearth's and joins by it.
    let hearths = create_room(
        h,
        alice,
        json!({ "preset": "public_chat", "room_alias_name": "hearthside" }),
    );
    let alias = format!("#hearthside:{hearth_name}");
    let resolved = call(
        s,
        "GET",
        &format!("/_matrix/client/v3/directory/room/{}", query_encode(&alias)),
        carol,
        json!(null),
    );
    assert_eq!(resolved["room_id"], hearths.as_str(), "{resolved}");
    assert!(
        resolved["servers"]
            .as_array()
            .is_some_and(|servers| servers.contains(&json!(hearth_name))),
        "{resolved}"
    );
    call(
        s,
        "POST",
        &format!("/_matrix/client/v3/join/{}", query_encode(&alias)),
        carol,
        json!({}),
    );
    assert!(joined_members(h, alice, &hearths).get(carol_id).is_some());
}

/// Leaving and declining, both ways: the other server sees the leave, the server left
/// behind stops sending the room's events to the one that left, `/sync` moves the room to
/// `leave`, and a user who left can come back.
#[test]
fn leaves_and_declined_invites_cross_both_ways() {
    let Some(pair) = Pair::start() else {
        return;
    };
    let Pair {
        synapse,
        hearth_name,
        alice,
        alice_id,
        carol,
        carol_id,
        h,
        s,
        ..
    } = &pair;
    let (h, s) = (*h, *s);
    // A room both stay in: messages there show what came before them has been sent.
    let lobby = create_room(s, carol, json!({ "preset": "public_chat" }));
    join(h, alice, &lobby, &synapse.name);

    // A Hearth user leaves a Synapse room.
    let room = create_room(s, carol, json!({ "preset": "public_chat" }));
    join(h, alice, &room, &synapse.name);
    let mut at_h = sync_token(h, alice);
    leave(h, alice, &room);
    eventually("Hearth's leave at Synapse", || {
        membership(s, carol, &room, alice_id) == "leave"
    });
    assert!(joined_members(s, carol, &room).get(alice_id).is_none());
    let synced = sync_since(h, alice, &mut at_h);
    assert!(synced["rooms"]["leave"].get(&room).is_some(), "{synced}");
    assert!(synced["rooms"]["join"].get(&room).is_none(), "{synced}");
    send(s, carol, &room, "after alice left");
    send(s, carol, &lobby, "lobby after alice left");
    eventually("the lobby message at Hearth", || {
        bodies(h, alice, &lobby).contains(&"lobby after alice left".to_owned())
    });
    let synced = sync_since(h, alice, &mut at_h);
    assert!(
        !synced.to_string().contains(r#""body":"after alice left""#),
        "a message after the leave reached Hearth: {synced}"
    );
    // Coming back goes through Synapse, which knows what changed meanwhile: the room became
    // invite-only (Hearth's copy of the state, from before the leave, says public).
    let rules = format!("/_matrix/client/v3/rooms/{room}/state/m.room.join_rules/");
    call(s, "PUT", &rules, carol, json!({ "join_rule": "invite" }));
    let path = format!(
        "/_matrix/client/v3/join/{}?via={}",
        query_encode(&room),
        query_encode(&synapse.name)
    );
    let refused = Client::plain(h).json("POST", &path, Some(alice), &json!({}));
    assert_eq!(
        refused.status,
        403,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    assert_eq!(membership(s, carol, &room, alice_id), "leave");
    call(
        s,
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/invite"),
        carol,
        json!({ "user_id": alice_id }),
    );
    eventually("Synapse's new invite at Hearth", || {
        rooms_in(h, alice, "invite").get(&room).is_some()
    });
    // The invite shows the room as it is now, not as Hearth last saw it.
    let invited = rooms_in(h, alice, "invite")[&room]["invite_state"]["events"].clone();
    assert!(
        invited.as_array().into_iter().flatten().any(|event| {
            event["type"] == "m.room.join_rules" && event["content"]["join_rule"] == "invite"
        }),
        "{invited}"
    );
    join(h, alice, &room, &synapse.name);
    assert!(joined_members(s, carol, &room).get(alice_id).is_some());
    send(s, carol, &room, "after alice came back");
    eventually("a message after the rejoin at Hearth", || {
        bodies(h, alice, &room).contains(&"after alice came back".to_owned())
    });
    // The message sent while she was away comes with the room's history, once.
    let history = bodies(h, alice, &room);
    let away = history.iter().filter(|body| *body == "after alice left");
    assert_eq!(away.count(), 1, "{history:?}");
    // Out again, invited again, and this time declining (through Synapse: Hearth's copy of
    // the room is stale once more).
    leave(h, alice, &room);
    eventually("Hearth's second leave at Synapse", || {
        membership(s, carol, &room, alice_id) == "leave"
    });
    call(
        s,
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/invite"),
        carol,
        json!({ "user_id": alice_id }),
    );
    eventually("Synapse's third invite at Hearth", || {
        rooms_in(h, alice, "invite").get(&room).is_some()
    });
    leave(h, alice, &room);
    assert_eq!(membership(s, carol, &room, alice_id), "leave");
    assert!(rooms_in(h, alice, "invite").get(&room).is_none());

    // A Synapse user leaves a Hearth room: the leave reaches Hearth, and Carol's /sync
    // moves the room to `leave` with nothing sent after it. (That Hearth sends the room's
    // events to a server with no one left in it no more is checked where each transaction
    // can be seen: federation_outbound.rs.)
    let room = create_room(h, alice, json!({ "preset": "public_chat" }));
    join(s, carol, &room, hearth_name);
    let mut at_s = sync_token(s, carol);
    leave(s, carol, &room);
    eventually("Synapse's leave at Hearth", || {
        membership(h, alice, &room, carol_id) == "leave"
    });
    assert!(joined_members(h, alice, &room).get(carol_id).is_none());
    let members = call(
        s,
        "GET",
        &format!("/_matrix/client/v3/rooms/{room}/members"),
        carol,
        json!(null),
    );
    let carol_at_s = members["chunk"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|member| member["state_key"] == carol_id.as_str());
    assert_eq!(
        carol_at_s.map(|member| &member["content"]["membership"]),
        Some(&json!("leave")),
        "{members}"
    );
    send(h, alice, &room, "after carol left");
    send(h, alice, &lobby, "lobby after carol left");
    eventually("the lobby message at Synapse", || {
        bodies(s, carol, &lobby).contains(&"lobby after carol left".to_owned())
    });
    let synced = sync_since(s, carol, &mut at_s);
    assert!(synced["rooms"]["leave"].get(&room).is_some(), "{synced}");
    assert!(
        !synced.to_string().contains(r#""body":"after carol left""#),
        "{synced}"
    );
    // Back in (through Hearth, the room's only resident server now): Hearth sends to
    // Synapse again.
    join(s, carol, &room, hearth_name);
    assert!(joined_members(h, alice, &room).get(carol_id).is_some());
    send(h, alice, &room, "after carol came back");
    eventually("a message after Synapse's rejoin at Synapse", || {
        bodies(s, carol, &room).contains(&"after carol came back".to_owned())
    });

    // A Hearth user declines a Synapse invite (make_leave and send_leave to Synapse).
    let room = create_room(
        s,
        carol,
        json!({ "preset": "private_chat", "invite": [alice_id] }),
    );
    eventually("Synapse's invite at Hearth", || {
        rooms_in(h, alice, "invite").get(&room).is_some()
    });
    let mut at_h = sync_token(h, alice);
    leave(h, alice, &room);
    eventually("Hearth's declining at Synapse", || {
        membership(s, carol, &room, alice_id) == "leave"
    });
    let synced = sync_since(h, alice, &mut at_h);
    assert!(synced["rooms"]["leave"].get(&room).is_some(), "{synced}");
    assert!(rooms_in(h, alice, "invite").get(&room).is_none());

    // A Synapse user declines a Hearth invite.
    let room = create_room(h, alice, json!({ "preset": "private_chat" }));
    let mut at_s = sync_token(s, carol);
    call(
        h,
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/invite"),
        alice,
        json!({ "user_id": carol_id }),
    );
    eventually("Hearth's invite at Synapse", || {
        sync_since(s, carol, &mut at_s)["rooms"]["invite"]
            .get(&room)
            .is_some()
    });
    leave(s, carol, &room);
    eventually("Synapse's declining at Hearth", || {
        membership(h, alice, &room, carol_id) == "leave"
    });
    let synced = sync_since(s, carol, &mut at_s);
    assert!(synced["rooms"]["leave"].get(&room).is_some(), "{synced}");
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

/// `POST /join` that must fail: its status and `errcode` (a success fails the test).
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
    assert!(
        response.status >= 400,
        "the join should be refused: {} {}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
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
    let hearth: Server = start(certificates.path(), "localhost", &[], &["alice"]);
    let hearth_name = hearth.name.clone();
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
        // The spec's code for a user in none of the allowed rooms: 403 `M_FORBIDDEN`.
        let (status, code) = refused_join(h, &alice, &room, &synapse.name);
        assert_eq!(
            (status, code.as_str()),
            (403, "M_FORBIDDEN"),
            "version {version}"
        );
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

/// Room versions 1 to 9 (10 to 12 are above): a room made on each side in each version,
/// joined from the other, with one message each way.
#[test]
fn joins_cross_both_ways_in_room_versions_1_to_9() {
    let Some(pair) = Pair::start() else {
        return;
    };
    let Pair {
        synapse,
        hearth_name,
        alice,
        alice_id,
        carol,
        carol_id,
        h,
        s,
        ..
    } = &pair;
    let (h, s) = (*h, *s);
    let capabilities = call(
        s,
        "GET",
        "/_matrix/client/v3/capabilities",
        carol,
        json!(null),
    );
    let available = &capabilities["capabilities"]["m.room_versions"]["available"];
    for version in 1..=9 {
        let version = version.to_string();
        assert!(available.get(&version).is_some(), "{capabilities}");
        let exchange = |room: &str, from_synapse: &str, from_hearth: &str| {
            send(s, carol, room, from_synapse);
            eventually("a message from Synapse at Hearth", || {
                bodies(h, alice, room).contains(&from_synapse.to_owned())
            });
            send(h, alice, room, from_hearth);
            eventually("a message from Hearth at Synapse", || {
                bodies(s, carol, room).contains(&from_hearth.to_owned())
            });
        };
        let room = create_room(
            s,
            carol,
            json!({ "preset": "public_chat", "room_version": version }),
        );
        join(h, alice, &room, &synapse.name);
        assert!(
            joined_members(s, carol, &room).get(alice_id).is_some(),
            "version {version}"
        );
        let created = call(
            h,
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.create/"),
            alice,
            json!(null),
        );
        assert_eq!(created["room_version"], version.as_str());
        exchange(
            &room,
            &format!("synapse's room {version}, from synapse"),
            &format!("synapse's room {version}, from hearth"),
        );

        let room = create_room(
            h,
            alice,
            json!({ "preset": "public_chat", "room_version": version }),
        );
        join(s, carol, &room, hearth_name);
        assert!(
            joined_members(h, alice, &room).get(carol_id).is_some(),
            "version {version}"
        );
        exchange(
            &room,
            &format!("hearth's room {version}, from synapse"),
            &format!("hearth's room {version}, from hearth"),
        );
    }
}

/// Redactions and state changes cross both ways, in a room made on Synapse (version 11)
/// and one made on Hearth (version 12), where everyone may set the name and topic.
#[test]
fn redactions_and_state_changes_cross_both_ways() {
    let Some(pair) = Pair::start() else {
        return;
    };
    let Pair {
        synapse,
        hearth_name,
        alice,
        carol,
        h,
        s,
        ..
    } = &pair;
    let (h, s) = (*h, *s);
    let open_state = json!({ "events": { "m.room.name": 0, "m.room.topic": 0 } });
    for (maker, version) in ["synapse", "hearth"].into_iter().zip(["11", "12"]) {
        let body = json!({ "preset": "public_chat", "room_version": version,
                           "power_level_content_override": open_state });
        let room = if maker == "synapse" {
            let room = create_room(s, carol, body);
            join(h, alice, &room, &synapse.name);
            room
        } else {
            let room = create_room(h, alice, body);
            join(s, carol, &room, hearth_name);
            room
        };
        let event = |address: SocketAddr, token: &str, id: &str| {
            get_or_null(
                address,
                token,
                &format!("/_matrix/client/v3/rooms/{room}/event/{id}"),
            )
        };
        let redact = |address: SocketAddr, token: &str, id: &str| {
            let path = format!(
                "/_matrix/client/v3/rooms/{room}/redact/{id}/r{}",
                rand_bits()
            );
            call(address, "PUT", &path, token, json!({ "reason": "oops" }));
        };
        let redacted = |seen: &Value| {
            seen["content"] == json!({}) && seen["unsigned"]["redacted_because"].is_object()
        };

        // Synapse's message redacted on Synapse, then at Hearth.
        let message = send(s, carol, &room, &format!("carol's regret {version}"));
        eventually("Synapse's message at Hearth", || {
            event(h, alice, &message)["content"]["body"].is_string()
        });
        redact(s, carol, &message);
        eventually("Synapse's redaction at Hearth", || {
            redacted(&event(h, alice, &message))
        });
        // Hearth's message redacted on Hearth, then at Synapse.
        let message = send(h, alice, &room, &format!("alice's regret {version}"));
        eventually("Hearth's message at Synapse", || {
            event(s, carol, &message)["content"]["body"].is_string()
        });
        redact(h, alice, &message);
        eventually("Hearth's redaction at Synapse", || {
            redacted(&event(s, carol, &message))
        });

        // The topic set on Synapse, the name set on Hearth, each seen on the other.
        let topic = format!("carol's topic {version} {maker}");
        let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/");
        call(s, "PUT", &path, carol, json!({ "topic": topic }));
        eventually("Synapse's topic at Hearth", || {
            state(h, alice, &room, "m.room.topic")["topic"] == topic.as_str()
        });
        let name = format!("alice's name {version} {maker}");
        let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/");
        call(h, "PUT", &path, alice, json!({ "name": name }));
        eventually("Hearth's name at Synapse", || {
            state(s, carol, &room, "m.room.name")["name"] == name.as_str()
        });
    }
}
