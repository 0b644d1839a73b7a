//! Rooms through the client API: create, send (idempotent per transaction), state, events,
//! membership, `/sync` (initial, incremental, long-poll), `/messages`, every room version,
//! the errors for bad input and missing permission, and durability under `kill -9`.

mod common;

use common::{errcode, ok};

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::http::{Client, Response};
use common::{Server, test_config};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

fn login(server: &Server, user: &str) -> String {
    common::login_token(server, user, PASSWORD)
}

fn server() -> Server {
    Server::start_with_users(
        &test_config("[limits]\nauth_attempts_per_minute = 100000\n"),
        &[("alice", PASSWORD), ("bob", PASSWORD), ("carol", PASSWORD)],
    )
}

fn create_room(client: &mut Client, token: &str, body: Value) -> String {
    ok(client.json("POST", "/_matrix/client/v3/createRoom", Some(token), &body))["room_id"]
        .as_str()
        .expect("room_id")
        .to_owned()
}

fn send(client: &mut Client, token: &str, room: &str, txn: &str, body: &str) -> Response {
    client.json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
        Some(token),
        &json!({ "msgtype": "m.text", "body": body }),
    )
}

fn sync(client: &mut Client, token: &str, since: Option<&str>, timeout_ms: u64) -> Value {
    let path = match since {
        Some(since) => format!("/_matrix/client/v3/sync?since={since}&timeout={timeout_ms}"),
        None => "/_matrix/client/v3/sync".to_owned(),
    };
    ok(client.get_with(&path, token))
}

fn timeline_bodies(sync: &Value, room: &str) -> Vec<String> {
    sync["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|event| event["type"] == "m.room.message")
                .map(|event| {
                    event["content"]["body"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn create_send_read_and_resend_idempotently() {
    let server = server();
    let alice = login(&server, "alice");
    let mut client = server.client();
    let room = create_room(
        &mut client,
        &alice,
        json!({ "name": "Family", "topic": "Dinner plans" }),
    );
    assert!(room.starts_with('!'));
    assert!(
        !room.contains(':'),
        "room version 12 IDs carry no server name: {room}"
    );

    let first = ok(send(&mut client, &alice, &room, "txn1", "hello"))["event_id"].clone();
    let again = ok(send(&mut client, &alice, &room, "txn1", "hello"))["event_id"].clone();
    assert_eq!(first, again, "the same transaction ID is the same message");
    let other = ok(send(&mut client, &alice, &room, "txn2", "hello"))["event_id"].clone();
    assert_ne!(first, other);

    let event = ok(client.get_with(
        &format!(
            "/_matrix/client/v3/rooms/{room}/event/{}",
            first.as_str().expect("id")
        ),
        &alice,
    ));
    assert_eq!(event["content"]["body"], "hello");
    assert_eq!(event["sender"], "@alice:localhost");
    assert_eq!(event["room_id"], room);
    assert!(event.get("hashes").is_none() && event.get("signatures").is_none());

    let name = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
        &alice,
    ));
    assert_eq!(name, json!({ "name": "Family" }));
    let put = client.json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic"),
        Some(&alice),
        &json!({ "topic": "Lunch" }),
    );
    ok(put);
    let topic = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic?format=event"),
        &alice,
    ));
    assert_eq!(topic["content"]["topic"], "Lunch");
    let all = ok(client.get_with(&format!("/_matrix/client/v3/rooms/{room}/state"), &alice));
    let types: Vec<&str> = all
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    for kind in [
        "m.room.create",
        "m.room.member",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.history_visibility",
        "m.room.name",
        "m.room.topic",
    ] {
        assert!(types.contains(&kind), "{kind} in {types:?}");
    }
    let joined = ok(client.get_with("/_matrix/client/v3/joined_rooms", &alice));
    assert_eq!(joined["joined_rooms"], json!([room]));
    let members = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
        &alice,
    ));
    assert!(members["joined"]["@alice:localhost"].is_object());
}

#[test]
fn a_conversation_through_sync() {
    let server = server();
    let alice = login(&server, "alice");
    let bob = login(&server, "bob");
    let mut a = server.client();
    let mut b = server.client();
    let room = create_room(
        &mut a,
        &alice,
        json!({ "invite": ["@bob:localhost"], "is_direct": true }),
    );

    let first = sync(&mut b, &bob, None, 0);
    let invite = &first["rooms"]["invite"][&room]["invite_state"]["events"];
    let invite_events = invite.as_array().expect("invite state");
    assert!(invite_events.iter().any(|e| e["type"] == "m.room.member"
        && e["state_key"] == "@bob:localhost"
        && e["content"]["is_direct"] == true));
    assert!(invite_events.iter().any(|e| e["type"] == "m.room.create"));
    let since = first["next_batch"].as_str().expect("next_batch").to_owned();

    ok(b.json(
        "POST",
        &format!("/_matrix/client/v3/join/{room}"),
        Some(&bob),
        &json!({}),
    ));
    let after_join = sync(&mut b, &bob, Some(&since), 0);
    let joined = &after_join["rooms"]["join"][&room];
    let mut seen: Vec<Value> = joined["state"]["events"].as_array().expect("state").clone();
    seen.extend(
        joined["timeline"]["events"]
            .as_array()
            .expect("timeline")
            .iter()
            .cloned(),
    );
    assert!(
        seen.iter().any(|e| e["type"] == "m.room.create"),
        "a newly joined room comes with its state: {joined}"
    );
    let since = after_join["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();

    // A long-poll wakes as soon as the message is sent, not at its timeout.
    let waiter = common::waiting_request(
        &server,
        &format!("/_matrix/client/v3/sync?since={since}&timeout=20000"),
        &bob,
    );
    let sending = Instant::now();
    ok(send(&mut a, &alice, &room, "t1", "dinner at 7?"));
    let (woken, answered) = waiter.join().expect("poll");
    let waited = answered.duration_since(sending);
    assert!(waited < Duration::from_secs(10), "woke after {waited:?}");
    let woken = ok(woken);
    assert_eq!(timeline_bodies(&woken, &room), vec!["dinner at 7?"]);
    let since = woken["next_batch"].as_str().expect("next_batch").to_owned();

    ok(send(&mut b, &bob, &room, "t1", "yes!"));
    let next = sync(&mut b, &bob, Some(&since), 0);
    assert_eq!(
        timeline_bodies(&next, &room),
        vec!["yes!"],
        "no duplicates, only what is new"
    );
    let since = next["next_batch"].as_str().expect("next_batch").to_owned();
    let quiet = sync(&mut b, &bob, Some(&since), 0);
    assert!(quiet["rooms"]["join"].as_object().expect("join").is_empty());

    // Leaving shows the room under `leave`, and the door is shut.
    ok(b.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/leave"),
        Some(&bob),
        &json!({}),
    ));
    let left = sync(&mut b, &bob, Some(&since), 0);
    assert!(left["rooms"]["leave"][&room].is_object());
    let refused = send(&mut b, &bob, &room, "t2", "still here?");
    assert_eq!(refused.status, 403);
    assert_eq!(
        ok(b.get_with("/_matrix/client/v3/joined_rooms", &bob))["joined_rooms"],
        json!([])
    );
}

#[test]
fn messages_paginate_both_ways() {
    let server = server();
    let alice = login(&server, "alice");
    let mut client = server.client();
    let room = create_room(&mut client, &alice, json!({}));
    for i in 0..25 {
        ok(send(
            &mut client,
            &alice,
            &room,
            &format!("m{i}"),
            &format!("message {i}"),
        ));
    }
    let mut seen = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let path = match &from {
            Some(from) => {
                format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=10&from={from}")
            }
            None => format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=10"),
        };
        let page = ok(client.get_with(&path, &alice));
        for event in page["chunk"].as_array().expect("chunk") {
            if event["type"] == "m.room.message" {
                seen.push(event["content"]["body"].as_str().expect("body").to_owned());
            }
        }
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).rev().map(|i| format!("message {i}")).collect();
    assert_eq!(seen, expected);
    let forward = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=5"),
        &alice,
    ));
    assert_eq!(forward["chunk"][0]["type"], "m.room.create");
    let bad = client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/messages?dir=x"),
        &alice,
    );
    assert_eq!(errcode(&bad), "M_INVALID_PARAM");
}

#[test]
fn every_room_version_from_1_to_12() {
    let server = server();
    let alice = login(&server, "alice");
    let bob = login(&server, "bob");
    let mut client = server.client();
    for version in 1..=12 {
        let room = create_room(
            &mut client,
            &alice,
            json!({ "room_version": version.to_string(), "invite": ["@bob:localhost"] }),
        );
        ok(client.json(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            Some(&bob),
            &json!({}),
        ));
        let event = ok(send(&mut client, &bob, &room, "t", "hi"))["event_id"]
            .as_str()
            .expect("id")
            .to_owned();
        if version <= 2 {
            assert!(event.ends_with(":localhost"), "version {version}: {event}");
        } else {
            assert!(!event.contains(':'), "version {version}: {event}");
        }
        let create = ok(client.get_with(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.create/"),
            &alice,
        ));
        assert_eq!(create["room_version"], version.to_string());
    }
    let unsupported = client.json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&alice),
        &json!({ "room_version": "13" }),
    );
    assert_eq!(unsupported.status, 400);
    assert_eq!(errcode(&unsupported), "M_UNSUPPORTED_ROOM_VERSION");
}

#[test]
fn permissions_and_bad_input() {
    let server = server();
    let alice = login(&server, "alice");
    let bob = login(&server, "bob");
    let carol = login(&server, "carol");
    let mut client = server.client();
    let room = create_room(&mut client, &alice, json!({ "invite": ["@bob:localhost"] }));
    ok(client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/join"),
        Some(&bob),
        &json!({}),
    ));

    // Outsiders can neither read nor write, and cannot tell a room exists.
    for (path, method) in [
        (format!("/_matrix/client/v3/rooms/{room}/state"), "GET"),
        (
            "/_matrix/client/v3/rooms/!nosuchroom:localhost/state".to_owned(),
            "GET",
        ),
    ] {
        let response = client
            .request(
                method,
                &path,
                &[("Authorization", &format!("Bearer {carol}"))],
                None,
            )
            .expect("answer");
        assert_eq!(response.status, 403, "{path}");
    }
    assert_eq!(
        send(&mut client, &carol, &room, "t", "let me in").status,
        403
    );
    let uninvited = client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/join"),
        Some(&carol),
        &json!({}),
    );
    assert_eq!(uninvited.status, 403);
    assert_eq!(errcode(&uninvited), "M_FORBIDDEN");

    // Power levels: bob (0) may talk but not rename the room (50), kick or ban.
    assert_eq!(send(&mut client, &bob, &room, "t", "hi").status, 200);
    let rename = client.json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
        Some(&bob),
        &json!({ "name": "mine" }),
    );
    assert_eq!(rename.status, 403);
    let kick = client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/kick"),
        Some(&bob),
        &json!({ "user_id": "@alice:localhost" }),
    );
    assert_eq!(kick.status, 403);
    // Alice may ban bob, who then cannot send.
    ok(client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/ban"),
        Some(&alice),
        &json!({ "user_id": "@bob:localhost", "reason": "test" }),
    ));
    assert_eq!(send(&mut client, &bob, &room, "t2", "hello?").status, 403);

    // Malformed requests.
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/x1");
    let auth = format!("Bearer {alice}");
    let not_json = client
        .request("PUT", &path, &[("Authorization", &auth)], Some(b"{oops"))
        .expect("answer");
    assert_eq!(errcode(&not_json), "M_NOT_JSON");
    let not_object = client
        .request("PUT", &path, &[("Authorization", &auth)], Some(b"[1,2]"))
        .expect("answer");
    assert_eq!(errcode(&not_object), "M_BAD_JSON");
    let float = client
        .request(
            "PUT",
            &path,
            &[("Authorization", &auth)],
            Some(b"{\"n\": 1.5}"),
        )
        .expect("answer");
    assert_eq!(errcode(&float), "M_BAD_JSON");
    let huge = send(&mut client, &alice, &room, "x2", &"x".repeat(70_000));
    assert_eq!(huge.status, 413);
    assert_eq!(errcode(&huge), "M_TOO_LARGE");
    let member = client.json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/@carol:localhost"),
        Some(&alice),
        &json!({ "membership": "join" }),
    );
    // Only a user may join themselves: the auth rules' refusal.
    assert_eq!(
        (member.status, errcode(&member)),
        (403, "M_FORBIDDEN".to_owned())
    );
    let bad_room = send(&mut client, &alice, "not-a-room", "x3", "hi");
    assert_eq!(errcode(&bad_room), "M_INVALID_PARAM");
    let alias = client.json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&alice),
        &json!({ "room_alias_name": "bad:alias" }),
    );
    assert_eq!(alias.status, 400);
    let preset = client.json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&alice),
        &json!({ "preset": "party" }),
    );
    assert_eq!(errcode(&preset), "M_INVALID_PARAM");
    let remote = client.json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&alice),
        &json!({ "invite": ["@dave:elsewhere.org"] }),
    );
    assert_eq!(remote.status, 400);
    let missing = client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/event/$nope"),
        &alice,
    );
    assert_eq!(errcode(&missing), "M_NOT_FOUND");
    // Nothing above was half-written: the room still works.
    ok(send(&mut client, &alice, &room, "x4", "still fine"));
}

/// A `200` to `/send` means the event is on disk: every acknowledged message survives
/// `kill -9` in the middle of a burst.
#[test]
fn acknowledged_messages_survive_kill_9() {
    let mut server = server();
    let alice = login(&server, "alice");
    let mut client = server.client();
    let room = create_room(&mut client, &alice, json!({}));
    let address = server.address("http");
    let token = alice.clone();
    let room_for_burst = room.clone();
    // The burst sends until the server is gone: each send is acknowledged (200) or the
    // connection fails (the kill); any other answer fails the test.
    let counted = Arc::new(AtomicUsize::new(0));
    let counter = counted.clone();
    let burst = std::thread::spawn(move || {
        let mut client = Client::plain(address);
        let mut acknowledged = Vec::new();
        for i in 0.. {
            let sent = client.request(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{room_for_burst}/send/m.room.message/burst{i}"),
                &[("Authorization", &format!("Bearer {token}"))],
                Some(format!("{{\"msgtype\":\"m.text\",\"body\":\"{i}\"}}").as_bytes()),
            );
            match sent {
                Ok(response) => {
                    assert_eq!(
                        response.status,
                        200,
                        "send {i} refused before the kill: {}",
                        String::from_utf8_lossy(&response.body)
                    );
                    acknowledged.push(response.json()["event_id"].as_str().expect("id").to_owned());
                    counter.store(acknowledged.len(), Ordering::SeqCst);
                }
                Err(err) => return (acknowledged, err),
            }
        }
        unreachable!("the burst ends with the kill")
    });
    // Killed in the middle of the burst: once a good number of sends were acknowledged.
    let deadline = Instant::now() + Duration::from_secs(60);
    while counted.load(Ordering::SeqCst) < 50 {
        assert!(
            Instant::now() < deadline && !burst.is_finished(),
            "the burst did not get going:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    server.signal("KILL");
    let (acknowledged, ended) = burst.join().expect("burst");
    server.wait_exit(Duration::from_secs(10)).expect("killed");
    assert!(
        acknowledged.len() >= 50,
        "{} acknowledged before the kill",
        acknowledged.len()
    );
    eprintln!(
        "{} sends acknowledged before the kill; the next one ended with: {ended}",
        acknowledged.len()
    );
    let dir = server.dir.clone();
    let restarted = Server::start_in(&dir, &[], &[]).expect("restarts");
    let mut client = restarted.client();
    for event_id in &acknowledged {
        let response = client.get_with(
            &format!("/_matrix/client/v3/rooms/{room}/event/{event_id}"),
            &alice,
        );
        assert_eq!(
            response.status,
            200,
            "acknowledged {event_id} was lost ({} acknowledged)",
            acknowledged.len()
        );
    }
    // The room goes on where it stopped.
    ok(send(
        &mut client,
        &alice,
        &room,
        "after-restart",
        "still here",
    ));
    drop(restarted);
    drop(server);
}

fn join(client: &mut Client, token: &str, room: &str) {
    ok(client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/join"),
        Some(token),
        &json!({}),
    ));
}

/// Sends from several users into several rooms at once while another user syncs in a tight
/// loop: every acknowledged message arrives exactly once.
#[test]
fn concurrent_sends_reach_sync_exactly_once() {
    let server = server();
    let alice = login(&server, "alice");
    let bob = login(&server, "bob");
    let carol = login(&server, "carol");
    let mut client = server.client();
    let rooms: Vec<String> = (0..3)
        .map(|_| {
            create_room(
                &mut client,
                &alice,
                json!({ "invite": ["@bob:localhost", "@carol:localhost"] }),
            )
        })
        .collect();
    for room in &rooms {
        join(&mut client, &bob, room);
        join(&mut client, &carol, room);
    }
    let mut since = sync(&mut client, &carol, None, 0)["next_batch"]
        .as_str()
        .expect("batch")
        .to_owned();
    let address = server.address("http");
    let senders: Vec<_> = [alice, bob.clone()]
        .into_iter()
        .enumerate()
        .map(|(who, token)| {
            let rooms = rooms.clone();
            std::thread::spawn(move || {
                let mut client = Client::plain(address);
                let mut sent = Vec::new();
                for i in 0..60 {
                    let room = &rooms[i % rooms.len()];
                    let response = send(
                        &mut client,
                        &token,
                        room,
                        &format!("s{who}-{i}"),
                        &format!("{who}-{i}"),
                    );
                    sent.push(ok(response)["event_id"].as_str().expect("id").to_owned());
                }
                sent
            })
        })
        .collect();
    let mut received: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut finished = false;
    while Instant::now() < deadline {
        let response = sync(&mut client, &carol, Some(&since), 200);
        for room in &rooms {
            for event in response["rooms"]["join"][room]["timeline"]["events"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if event["type"] == "m.room.message" {
                    received.push(event["event_id"].as_str().expect("id").to_owned());
                }
            }
        }
        since = response["next_batch"].as_str().expect("batch").to_owned();
        if finished {
            break;
        }
        finished = senders.iter().all(|sender| sender.is_finished());
    }
    let mut sent: Vec<String> = senders
        .into_iter()
        .flat_map(|sender| sender.join().expect("sender"))
        .collect();
    sent.sort();
    let mut unique = received.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), received.len(), "no event twice");
    assert_eq!(unique, sent, "every acknowledged event arrived");
}

#[test]
fn history_is_only_for_those_who_were_in_the_room() {
    let server = server();
    let alice = login(&server, "alice");
    let bob = login(&server, "bob");
    let carol = login(&server, "carol");
    let mut client = server.client();
    let room = create_room(&mut client, &alice, json!({ "invite": ["@bob:localhost"] }));
    ok(send(
        &mut client,
        &alice,
        &room,
        "secret",
        "before bob decides",
    ));
    let since = sync(&mut client, &bob, None, 0)["next_batch"]
        .as_str()
        .expect("batch")
        .to_owned();
    // Bob declines: he never joined, so he reads nothing of the room.
    ok(client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/leave"),
        Some(&bob),
        &json!({}),
    ));
    let messages = client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b"),
        &bob,
    );
    assert_eq!(messages.status, 403);
    let left = sync(&mut client, &bob, Some(&since), 0);
    let events = left["rooms"]["leave"][&room]["timeline"]["events"]
        .as_array()
        .expect("timeline")
        .clone();
    assert_eq!(events.len(), 1, "only his own leave: {events:?}");
    assert_eq!(events[0]["state_key"], "@bob:localhost");

    // Under `joined` visibility, a newcomer sees nothing from before their join.
    let private = create_room(
        &mut client,
        &alice,
        json!({ "invite": ["@carol:localhost"], "initial_state": [
            { "type": "m.room.history_visibility", "content": { "history_visibility": "joined" } }
        ] }),
    );
    ok(send(&mut client, &alice, &private, "old", "before carol"));
    join(&mut client, &carol, &private);
    ok(send(&mut client, &alice, &private, "new", "after carol"));
    let carol_sync = sync(&mut client, &carol, None, 0);
    assert_eq!(timeline_bodies(&carol_sync, &private), vec!["after carol"]);
    let page = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{private}/messages?dir=b&limit=50"),
        &carol,
    ));
    let bodies: Vec<&str> = page["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, vec!["after carol"]);
}

#[test]
fn version_12_rooms_privilege_creators_as_the_spec_says() {
    let server = server();
    let alice = login(&server, "alice");
    let mut client = server.client();
    let room = create_room(
        &mut client,
        &alice,
        json!({ "preset": "trusted_private_chat", "invite": ["@bob:localhost"] }),
    );
    let levels = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
        &alice,
    ));
    assert!(
        levels["users"].get("@alice:localhost").is_none(),
        "creators are not listed: {levels}"
    );
    assert_eq!(levels["events"]["m.room.tombstone"], 150);
    let create = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.create/"),
        &alice,
    ));
    assert_eq!(create["additional_creators"], json!(["@bob:localhost"]));
    let page = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=1"),
        &alice,
    ));
    assert_eq!(page["chunk"][0]["type"], "m.room.create");
    assert_eq!(
        page["chunk"][0]["room_id"], room,
        "the create event is shown with its room"
    );
}

#[test]
fn a_failed_create_leaves_no_room_and_odd_content_is_refused() {
    let server = server();
    let alice = login(&server, "alice");
    let mut client = server.client();
    let bad_levels = client.json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&alice),
        &json!({ "room_version": "10", "power_level_content_override": { "users": { "@alice:localhost": 10 } }, "name": "never" }),
    );
    assert_eq!(
        bad_levels.status,
        403,
        "{}",
        String::from_utf8_lossy(&bad_levels.body)
    );
    assert_eq!(
        ok(client.get_with("/_matrix/client/v3/joined_rooms", &alice))["joined_rooms"],
        json!([])
    );
    let member_state = client.json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&alice),
        &json!({ "initial_state": [{ "type": "m.room.member", "state_key": "@bob:localhost", "content": { "membership": "join" } }] }),
    );
    assert_eq!(errcode(&member_state), "M_INVALID_PARAM");
    let nobody = client.json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&alice),
        &json!({ "invite": ["@nobody:localhost"] }),
    );
    assert_eq!(nobody.status, 404);

    let room = create_room(&mut client, &alice, json!({}));
    let mut deep = json!("bottom");
    for _ in 0..100 {
        deep = json!({ "a": deep });
    }
    let nested = client.json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/deep"),
        Some(&alice),
        &deep,
    );
    assert_eq!(errcode(&nested), "M_BAD_JSON");
    let long_key = client.json(
        "PUT",
        &format!(
            "/_matrix/client/v3/rooms/{room}/state/m.custom/{}",
            "k".repeat(300)
        ),
        Some(&alice),
        &json!({}),
    );
    assert_eq!(errcode(&long_key), "M_BAD_JSON");
    // The room is unharmed, and sync still reads it.
    ok(send(&mut client, &alice, &room, "fine", "fine"));
    assert_eq!(
        timeline_bodies(&sync(&mut client, &alice, None, 0), &room),
        vec!["fine"]
    );
}

#[test]
fn membership_actions_apply_only_where_they_make_sense() {
    let server = server();
    let alice = login(&server, "alice");
    let bob = login(&server, "bob");
    let mut client = server.client();
    let room = create_room(&mut client, &alice, json!({ "invite": ["@bob:localhost"] }));
    join(&mut client, &bob, &room);
    let before = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100"),
        &alice,
    ))["chunk"]
        .as_array()
        .expect("chunk")
        .len();
    join(&mut client, &bob, &room);
    let after = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100"),
        &alice,
    ))["chunk"]
        .as_array()
        .expect("chunk")
        .len();
    assert_eq!(before, after, "joining again sends nothing");
    let unban_member = client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/unban"),
        Some(&alice),
        &json!({ "user_id": "@bob:localhost" }),
    );
    assert_eq!(unban_member.status, 403, "unban does not kick");
    ok(client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/ban"),
        Some(&alice),
        &json!({ "user_id": "@bob:localhost" }),
    ));
    let kick_banned = client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/kick"),
        Some(&alice),
        &json!({ "user_id": "@bob:localhost" }),
    );
    assert_eq!(kick_banned.status, 403, "kick does not unban");
    ok(client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/unban"),
        Some(&alice),
        &json!({ "user_id": "@bob:localhost" }),
    ));
}

#[test]
fn redactions_need_ownership_or_power() {
    let server = server();
    let alice = login(&server, "alice");
    let bob = login(&server, "bob");
    let mut client = server.client();
    let room = create_room(&mut client, &alice, json!({ "invite": ["@bob:localhost"] }));
    join(&mut client, &bob, &room);
    let hers = ok(send(&mut client, &alice, &room, "a", "alice's"))["event_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let his = ok(send(&mut client, &bob, &room, "b", "bob's"))["event_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let redact = |client: &mut Client, token: &str, target: &str, txn: &str| {
        client.json(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.redaction/{txn}"),
            Some(token),
            &json!({ "redacts": target }),
        )
    };
    assert_eq!(redact(&mut client, &bob, &hers, "r1").status, 403);
    ok(redact(&mut client, &bob, &his, "r2"));
    ok(redact(&mut client, &alice, &his, "r3"));
}

#[test]
fn own_messages_carry_their_transaction_id_and_gaps_fill_from_prev_batch() {
    let server = server();
    let alice = login(&server, "alice");
    let mut client = server.client();
    let room = create_room(&mut client, &alice, json!({}));
    let since = sync(&mut client, &alice, None, 0)["next_batch"]
        .as_str()
        .expect("batch")
        .to_owned();
    for i in 0..30 {
        ok(send(
            &mut client,
            &alice,
            &room,
            &format!("gap{i}"),
            &format!("m{i}"),
        ));
    }
    let response = ok(client.get_with(
        &format!(
            "/_matrix/client/v3/sync?since={since}&filter={}",
            "%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A5%7D%7D%7D"
        ),
        &alice,
    ));
    let joined = &response["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], true);
    let events = joined["timeline"]["events"].as_array().expect("events");
    assert_eq!(events.len(), 5);
    assert_eq!(events[4]["unsigned"]["transaction_id"], "gap29");
    // Paging back from prev_batch returns exactly the messages the timeline left out.
    let prev = joined["timeline"]["prev_batch"]
        .as_str()
        .expect("prev_batch");
    let page = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=25&from={prev}&to={since}"),
        &alice,
    ));
    let bodies: Vec<&str> = page["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    let expected: Vec<String> = (0..25).rev().map(|i| format!("m{i}")).collect();
    assert_eq!(bodies, expected);
}

#[test]
fn typing_and_receipts_reach_the_other_members() {
    let server = server();
    let alice = login(&server, "alice");
    let bob = login(&server, "bob");
    let mut client = server.client();
    let room = create_room(&mut client, &alice, json!({ "invite": ["@bob:localhost"] }));
    join(&mut client, &bob, &room);
    let message = ok(send(&mut client, &alice, &room, "m", "read me"))["event_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let since = sync(&mut client, &bob, None, 0)["next_batch"]
        .as_str()
        .expect("batch")
        .to_owned();

    // Typing wakes a waiting sync.
    let waiter = common::waiting_request(
        &server,
        &format!("/_matrix/client/v3/sync?since={since}&timeout=20000"),
        &bob,
    );
    ok(client.json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/typing/@alice:localhost"),
        Some(&alice),
        &json!({ "typing": true, "timeout": 30000 }),
    ));
    let woken = ok(waiter.join().expect("poll").0);
    let ephemeral = &woken["rooms"]["join"][&room]["ephemeral"]["events"];
    assert_eq!(ephemeral[0]["type"], "m.typing");
    assert_eq!(
        ephemeral[0]["content"]["user_ids"],
        json!(["@alice:localhost"])
    );
    let since = woken["next_batch"].as_str().expect("batch").to_owned();
    let others = client.json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/typing/@alice:localhost"),
        Some(&bob),
        &json!({ "typing": true }),
    );
    assert_eq!(others.status, 403);

    // Bob's public receipt reaches Alice; his private one does not.
    ok(client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{message}"),
        Some(&bob),
        &json!({}),
    ));
    ok(client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/read_markers"),
        Some(&bob),
        &json!({ "m.fully_read": message, "m.read.private": message }),
    ));
    let alice_view = sync(&mut client, &alice, None, 0);
    let receipts = alice_view["rooms"]["join"][&room]["ephemeral"]["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|event| event["type"] == "m.receipt")
        .expect("receipts")
        .clone();
    assert!(receipts["content"][&message]["m.read"]["@bob:localhost"]["ts"].is_u64());
    assert!(
        receipts["content"][&message]
            .get("m.read.private")
            .is_none()
    );
    let bob_view = sync(&mut client, &bob, Some(&since), 0);
    let bob_room = &bob_view["rooms"]["join"][&room];
    let own = bob_room["ephemeral"]["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["type"] == "m.receipt")
        .expect("receipts")
        .clone();
    assert!(own["content"][&message]["m.read.private"]["@bob:localhost"].is_object());
    assert_eq!(
        bob_room["account_data"]["events"][0]["type"],
        "m.fully_read"
    );
    assert_eq!(
        bob_room["account_data"]["events"][0]["content"]["event_id"],
        message
    );
    let bad = client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/$nope"),
        Some(&bob),
        &json!({}),
    );
    assert_eq!(bad.status, 404);
}

#[test]
fn redacted_events_lose_their_content() {
    let server = server();
    let alice = login(&server, "alice");
    let mut client = server.client();
    let room = create_room(&mut client, &alice, json!({}));
    let id = ok(send(
        &mut client,
        &alice,
        &room,
        "oops",
        "my password is hunter2",
    ))["event_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let redaction = ok(client.json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/redact/{id}/r1"),
        Some(&alice),
        &json!({ "reason": "typo" }),
    ))["event_id"]
        .clone();
    let again = ok(client.json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/redact/{id}/r1"),
        Some(&alice),
        &json!({}),
    ))["event_id"]
        .clone();
    assert_eq!(redaction, again, "the same transaction, the same redaction");
    let event = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/event/{id}"),
        &alice,
    ));
    assert_eq!(event["content"], json!({}), "{event}");
    assert_eq!(event["unsigned"]["redacted_because"]["event_id"], redaction);
    let page = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=5"),
        &alice,
    ));
    let text = page.to_string();
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn members_forget_reports_and_third_party_ids() {
    let server = server();
    let alice = login(&server, "alice");
    let bob = login(&server, "bob");
    let mut client = server.client();
    let room = create_room(&mut client, &alice, json!({ "invite": ["@bob:localhost"] }));
    let before_join = sync(&mut client, &alice, None, 0)["next_batch"]
        .as_str()
        .expect("batch")
        .to_owned();
    join(&mut client, &bob, &room);
    let all = ok(client.get_with(&format!("/_matrix/client/v3/rooms/{room}/members"), &alice));
    assert_eq!(all["chunk"].as_array().expect("chunk").len(), 2);
    let joined = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/members?membership=join"),
        &alice,
    ));
    assert_eq!(joined["chunk"].as_array().expect("chunk").len(), 2);
    let earlier = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/members?at={before_join}"),
        &alice,
    ));
    let bob_then = earlier["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .find(|e| e["state_key"] == "@bob:localhost")
        .expect("bob")
        .clone();
    assert_eq!(
        bob_then["content"]["membership"], "invite",
        "at the token, bob was only invited"
    );

    let message = ok(send(&mut client, &bob, &room, "x", "rude"))["event_id"]
        .as_str()
        .expect("id")
        .to_owned();
    ok(client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/report/{message}"),
        Some(&alice),
        &json!({ "reason": "rude" }),
    ));
    assert!(server.wait_for_log("event reported"));

    let not_left = client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/forget"),
        Some(&bob),
        &json!({}),
    );
    assert_eq!(not_left.status, 400);
    ok(client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/leave"),
        Some(&bob),
        &json!({}),
    ));
    ok(client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/forget"),
        Some(&bob),
        &json!({}),
    ));
    assert_eq!(
        client
            .get_with(
                &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b"),
                &bob
            )
            .status,
        403
    );

    assert_eq!(
        ok(client.get_with("/_matrix/client/v3/account/3pid", &alice)),
        json!({ "threepids": [] })
    );
    let add = client.json(
        "POST",
        "/_matrix/client/v3/account/3pid/add",
        Some(&alice),
        &json!({}),
    );
    assert_eq!(errcode(&add), "M_THREEPID_DENIED");
    assert_eq!(
        ok(client.get_with("/_matrix/client/v3/thirdparty/protocols", &alice)),
        json!({})
    );
}

#[test]
fn aliases_and_the_public_directory() {
    let server = server();
    let alice = login(&server, "alice");
    let bob = login(&server, "bob");
    let mut client = server.client();
    let room = create_room(
        &mut client,
        &alice,
        json!({ "room_alias_name": "family", "visibility": "public", "preset": "public_chat", "name": "The Family", "topic": "dinner" }),
    );
    let resolved = ok(client.get("/_matrix/client/v3/directory/room/%23family:localhost"));
    assert_eq!(resolved["room_id"], room);
    assert_eq!(resolved["servers"], json!(["localhost"]));
    let canonical = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.canonical_alias/"),
        &alice,
    ));
    assert_eq!(canonical["alias"], "#family:localhost");
    let taken = client.json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&alice),
        &json!({ "room_alias_name": "family" }),
    );
    assert_eq!(
        (taken.status, errcode(&taken)),
        (400, "M_ROOM_IN_USE".to_owned())
    );

    // Bob finds the room in the directory, joins by alias, and adds an alias of his own.
    let listed = ok(client.get("/_matrix/client/v3/publicRooms"));
    assert_eq!(listed["chunk"][0]["room_id"], room);
    assert_eq!(listed["chunk"][0]["name"], "The Family");
    assert_eq!(listed["chunk"][0]["canonical_alias"], "#family:localhost");
    let searched = ok(client.json(
        "POST",
        "/_matrix/client/v3/publicRooms",
        Some(&bob),
        &json!({ "filter": { "generic_search_term": "DINNER" } }),
    ));
    assert_eq!(searched["chunk"].as_array().expect("chunk").len(), 1);
    let none = ok(client.json(
        "POST",
        "/_matrix/client/v3/publicRooms",
        Some(&bob),
        &json!({ "filter": { "generic_search_term": "nothing like it" } }),
    ));
    assert!(none["chunk"].as_array().expect("chunk").is_empty());
    let joined = ok(client.json(
        "POST",
        "/_matrix/client/v3/join/%23family:localhost",
        Some(&bob),
        &json!({}),
    ));
    assert_eq!(joined["room_id"], room);
    ok(client.json(
        "PUT",
        "/_matrix/client/v3/directory/room/%23bobs:localhost",
        Some(&bob),
        &json!({ "room_id": room }),
    ));
    let again = client.json(
        "PUT",
        "/_matrix/client/v3/directory/room/%23bobs:localhost",
        Some(&bob),
        &json!({ "room_id": room }),
    );
    assert_eq!(again.status, 409);
    let foreign = client.json(
        "PUT",
        "/_matrix/client/v3/directory/room/%23x:elsewhere.org",
        Some(&bob),
        &json!({ "room_id": room }),
    );
    assert_eq!(errcode(&foreign), "M_INVALID_PARAM");
    let aliases = ok(client.get_with(&format!("/_matrix/client/v3/rooms/{room}/aliases"), &alice));
    assert_eq!(aliases["aliases"].as_array().expect("aliases").len(), 2);

    // Bob (power 0) may remove his own alias, not Alice's; nor unlist the room.
    let remove = |client: &mut Client, token: &str, alias: &str| {
        client
            .request(
                "DELETE",
                &format!("/_matrix/client/v3/directory/room/{alias}"),
                &[("Authorization", &format!("Bearer {token}"))],
                None,
            )
            .expect("answer")
    };
    assert_eq!(remove(&mut client, &bob, "%23family:localhost").status, 403);
    assert_eq!(remove(&mut client, &bob, "%23bobs:localhost").status, 200);
    let unlist = client.json(
        "PUT",
        &format!("/_matrix/client/v3/directory/list/room/{room}"),
        Some(&bob),
        &json!({ "visibility": "private" }),
    );
    assert_eq!(unlist.status, 403);
    ok(client.json(
        "PUT",
        &format!("/_matrix/client/v3/directory/list/room/{room}"),
        Some(&alice),
        &json!({ "visibility": "private" }),
    ));
    assert_eq!(
        ok(client.get(&format!("/_matrix/client/v3/directory/list/room/{room}")))["visibility"],
        "private"
    );
    assert!(
        ok(client.get("/_matrix/client/v3/publicRooms"))["chunk"]
            .as_array()
            .expect("chunk")
            .is_empty()
    );
    let missing = client.get("/_matrix/client/v3/directory/room/%23nothing:localhost");
    assert_eq!(errcode(&missing), "M_NOT_FOUND");
}

#[test]
fn review_regressions_redaction_state_profile_rejoin_and_threads() {
    let server = server();
    let alice = login(&server, "alice");
    let bob = login(&server, "bob");
    let mut client = server.client();
    let room = create_room(&mut client, &alice, json!({ "invite": ["@bob:localhost"] }));
    join(&mut client, &bob, &room);
    let hers = ok(send(&mut client, &alice, &room, "h", "alice's"))["event_id"]
        .as_str()
        .expect("id")
        .to_owned();
    // A "redaction" sent as state is refused, and does not redact.
    let sneaky = client.json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.redaction/x"),
        Some(&bob),
        &json!({ "redacts": hers }),
    );
    assert_eq!(sneaky.status, 400);
    let event = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/event/{hers}"),
        &alice,
    ));
    assert_eq!(event["content"]["body"], "alice's");

    // A profile change is not a new join: no full state again.
    let since = sync(&mut client, &bob, None, 0)["next_batch"]
        .as_str()
        .expect("batch")
        .to_owned();
    ok(client.json(
        "PUT",
        "/_matrix/client/v3/profile/@bob:localhost/displayname",
        Some(&bob),
        &json!({ "displayname": "Bob" }),
    ));
    let after = sync(&mut client, &bob, Some(&since), 0);
    let joined = &after["rooms"]["join"][&room];
    assert!(
        joined["state"]["events"]
            .as_array()
            .expect("state")
            .is_empty(),
        "{joined}"
    );
    let timeline = joined["timeline"]["events"].as_array().expect("timeline");
    assert_eq!(timeline.len(), 1);
    assert_eq!(timeline[0]["content"]["displayname"], "Bob");

    // A rejoin is a new join, unlike the profile change: bob leaves, is invited again (the
    // room is invite only) and joins; his sync brings the room's state again, and he is a
    // member who can talk.
    let since = after["next_batch"].as_str().expect("batch").to_owned();
    ok(client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/leave"),
        Some(&bob),
        &json!({}),
    ));
    assert_eq!(send(&mut client, &bob, &room, "gone", "hello?").status, 403);
    ok(client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/invite"),
        Some(&alice),
        &json!({ "user_id": "@bob:localhost" }),
    ));
    join(&mut client, &bob, &room);
    let rejoined = sync(&mut client, &bob, Some(&since), 0);
    let joined = &rejoined["rooms"]["join"][&room];
    let events: Vec<&Value> = joined["state"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            joined["timeline"]["events"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .collect();
    assert!(
        events.iter().any(|event| event["type"] == "m.room.create"),
        "a rejoined room comes with its state: {joined}"
    );
    let memberships: Vec<&Value> = joined["timeline"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|event| event["state_key"] == "@bob:localhost")
        .map(|event| &event["content"]["membership"])
        .collect();
    assert_eq!(
        memberships.last().copied(),
        Some(&json!("join")),
        "{joined}"
    );
    let member = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/@bob:localhost"),
        &alice,
    ));
    assert_eq!(member["membership"], "join");
    ok(send(&mut client, &bob, &room, "back", "back again"));

    // Receipts name a thread by its root event here, or `main`.
    let bad_thread = client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{hers}"),
        Some(&bob),
        &json!({ "thread_id": "$not-in-this-room" }),
    );
    assert_eq!(errcode(&bad_thread), "M_INVALID_PARAM");
    ok(client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{hers}"),
        Some(&bob),
        &json!({ "thread_id": "main" }),
    ));
}

#[test]
fn knocking_and_letting_in() {
    let server = server();
    let alice = login(&server, "alice");
    let bob = login(&server, "bob");
    let mut client = server.client();
    let room = create_room(
        &mut client,
        &alice,
        json!({ "initial_state": [{ "type": "m.room.join_rules", "content": { "join_rule": "knock" } }] }),
    );
    let closed = create_room(&mut client, &alice, json!({}));
    let refused = client.json(
        "POST",
        &format!("/_matrix/client/v3/knock/{closed}"),
        Some(&bob),
        &json!({}),
    );
    assert_eq!(refused.status, 403, "knocking needs the knock join rule");

    let since = sync(&mut client, &alice, None, 0)["next_batch"]
        .as_str()
        .expect("batch")
        .to_owned();
    ok(client.json(
        "POST",
        &format!("/_matrix/client/v3/knock/{room}"),
        Some(&bob),
        &json!({ "reason": "it's me" }),
    ));
    let bob_view = sync(&mut client, &bob, None, 0);
    let knock_state = bob_view["rooms"]["knock"][&room]["knock_state"]["events"]
        .as_array()
        .expect("knock state")
        .clone();
    assert!(
        knock_state
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "knock")
    );
    let alice_view = sync(&mut client, &alice, Some(&since), 0);
    let seen = alice_view["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .expect("timeline")
        .clone();
    assert!(
        seen.iter()
            .any(|e| e["state_key"] == "@bob:localhost" && e["content"]["membership"] == "knock")
    );
    ok(client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/invite"),
        Some(&alice),
        &json!({ "user_id": "@bob:localhost" }),
    ));
    join(&mut client, &bob, &room);
    ok(send(&mut client, &bob, &room, "in", "thanks"));
}

#[test]
fn upgrading_a_room_replaces_it() {
    let server = server();
    let alice = login(&server, "alice");
    let bob = login(&server, "bob");
    let mut client = server.client();
    let old = create_room(
        &mut client,
        &alice,
        json!({ "room_version": "10", "name": "Old den", "topic": "t", "room_alias_name": "den", "invite": ["@bob:localhost"] }),
    );
    join(&mut client, &bob, &old);
    let denied = client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{old}/upgrade"),
        Some(&bob),
        &json!({ "new_version": "12" }),
    );
    assert_eq!(denied.status, 403);
    let unsupported = client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{old}/upgrade"),
        Some(&alice),
        &json!({ "new_version": "99" }),
    );
    assert_eq!(errcode(&unsupported), "M_UNSUPPORTED_ROOM_VERSION");

    let new = ok(client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{old}/upgrade"),
        Some(&alice),
        &json!({ "new_version": "12" }),
    ))["replacement_room"]
        .as_str()
        .expect("replacement")
        .to_owned();
    let tombstone = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{old}/state/m.room.tombstone/"),
        &alice,
    ));
    assert_eq!(tombstone["replacement_room"], new);
    let create = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{new}/state/m.room.create/"),
        &alice,
    ));
    assert_eq!(create["predecessor"]["room_id"], old);
    assert_eq!(create["room_version"], "12");
    assert_eq!(
        ok(client.get_with(
            &format!("/_matrix/client/v3/rooms/{new}/state/m.room.name/"),
            &alice
        ))["name"],
        "Old den"
    );
    assert_eq!(
        ok(client.get("/_matrix/client/v3/directory/room/%23den:localhost"))["room_id"],
        new
    );
    let levels = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{new}/state/m.room.power_levels/"),
        &alice,
    ));
    assert!(
        levels["users"].get("@alice:localhost").is_none(),
        "v12 creators are not listed"
    );
    // The old room is closed to ordinary members; bob follows into the new one.
    assert_eq!(send(&mut client, &bob, &old, "late", "hello?").status, 403);
    let since = sync(&mut client, &bob, None, 0)["next_batch"]
        .as_str()
        .expect("batch")
        .to_owned();
    // The new room keeps the old one's join rules (invite only): bob is let in by an
    // invite, as in the old room, then joins the room the tombstone names.
    let rules = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{new}/state/m.room.join_rules/"),
        &alice,
    ));
    assert_eq!(rules["join_rule"], "invite");
    let uninvited = client.json(
        "POST",
        &format!("/_matrix/client/v3/join/{new}"),
        Some(&bob),
        &json!({}),
    );
    assert_eq!(uninvited.status, 403);
    assert_eq!(errcode(&uninvited), "M_FORBIDDEN");
    ok(client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{new}/invite"),
        Some(&alice),
        &json!({ "user_id": "@bob:localhost" }),
    ));
    join(&mut client, &bob, &new);
    let message = ok(send(&mut client, &bob, &new, "followed", "here now"))["event_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let bob_sync = sync(&mut client, &bob, Some(&since), 0);
    let followed = &bob_sync["rooms"]["join"][&new];
    let events: Vec<&Value> = followed["state"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            followed["timeline"]["events"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .collect();
    let create = events
        .iter()
        .find(|event| event["type"] == "m.room.create")
        .unwrap_or_else(|| panic!("the new room comes with its state: {followed}"));
    assert_eq!(create["content"]["predecessor"]["room_id"], old);
    assert!(
        events
            .iter()
            .any(|event| event["type"] == "m.room.name" && event["content"]["name"] == "Old den"),
        "{followed}"
    );
    assert!(
        events
            .iter()
            .any(|event| event["event_id"] == message.as_str()),
        "{followed}"
    );
    let members = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{new}/joined_members"),
        &alice,
    ));
    assert!(
        members["joined"].get("@bob:localhost").is_some(),
        "{members}"
    );
    // Bob is still a member of the old room, whose timeline ends with the tombstone.
    let old_members = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{old}/joined_members"),
        &bob,
    ));
    assert!(old_members["joined"].get("@bob:localhost").is_some());
}

#[test]
fn relations_and_threads() {
    let server = server();
    let alice = login(&server, "alice");
    let bob = login(&server, "bob");
    let mut client = server.client();
    let room = create_room(&mut client, &alice, json!({ "invite": ["@bob:localhost"] }));
    join(&mut client, &bob, &room);
    let root = ok(send(&mut client, &alice, &room, "root", "who wants pizza?"))["event_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let relate = |client: &mut Client, token: &str, kind: &str, txn: &str, content: Value| {
        ok(client.json(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/{kind}/{txn}"),
            Some(token),
            &content,
        ))["event_id"]
            .as_str()
            .expect("id")
            .to_owned()
    };
    let reply = relate(
        &mut client,
        &bob,
        "m.room.message",
        "t1",
        json!({ "msgtype": "m.text", "body": "me!", "m.relates_to": { "rel_type": "m.thread", "event_id": root } }),
    );
    relate(
        &mut client,
        &alice,
        "m.reaction",
        "r1",
        json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": root, "key": "🍕" } }),
    );
    relate(
        &mut client,
        &alice,
        "m.reaction",
        "r2",
        json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": reply, "key": "👍" } }),
    );
    let all = ok(client.get_with(
        &format!("/_matrix/client/v1/rooms/{room}/relations/{root}"),
        &alice,
    ));
    assert_eq!(all["chunk"].as_array().expect("chunk").len(), 2);
    let threads_only = ok(client.get_with(
        &format!("/_matrix/client/v1/rooms/{room}/relations/{root}/m.thread"),
        &alice,
    ));
    assert_eq!(threads_only["chunk"][0]["event_id"], reply);
    let reactions = ok(client.get_with(
        &format!("/_matrix/client/v1/rooms/{room}/relations/{root}/m.annotation/m.reaction"),
        &alice,
    ));
    assert_eq!(
        reactions["chunk"][0]["content"]["m.relates_to"]["key"],
        "🍕"
    );
    let deep = ok(client.get_with(
        &format!("/_matrix/client/v1/rooms/{room}/relations/{root}?recurse=true"),
        &alice,
    ));
    assert_eq!(
        deep["chunk"].as_array().expect("chunk").len(),
        3,
        "the reaction to the reply too"
    );
    let paged = ok(client.get_with(
        &format!("/_matrix/client/v1/rooms/{room}/relations/{root}?limit=1"),
        &alice,
    ));
    assert_eq!(paged["chunk"].as_array().expect("chunk").len(), 1);
    assert!(paged["next_batch"].is_string());

    let threads = ok(client.get_with(&format!("/_matrix/client/v1/rooms/{room}/threads"), &alice));
    assert_eq!(threads["chunk"][0]["event_id"], root);
    assert_eq!(
        threads["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["count"],
        1
    );
    assert_eq!(
        threads["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["latest_event"]["event_id"],
        reply
    );
    let mine = ok(client.get_with(
        &format!("/_matrix/client/v1/rooms/{room}/threads?include=participated"),
        &bob,
    ));
    assert_eq!(mine["chunk"].as_array().expect("chunk").len(), 1);
}
