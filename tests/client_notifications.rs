//! Push rules at work: unread notification and highlight counts in `/sync` (per room and
//! per thread), receipts and sending clearing them, and `/notifications`.

mod common;

use common::{Server, errcode, ok, query_encode, test_config};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

struct Room<'a> {
    server: &'a Server,
    id: String,
}

impl Room<'_> {
    fn send(&self, token: &str, txn: &str, content: Value) -> String {
        ok(self.server.client().json(
            "PUT",
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
                self.id
            ),
            Some(token),
            &content,
        ))["event_id"]
            .as_str()
            .expect("event id")
            .to_owned()
    }

    fn receipt(&self, token: &str, kind: &str, event_id: &str, body: Value) {
        ok(self.server.client().json(
            "POST",
            &format!(
                "/_matrix/client/v3/rooms/{}/receipt/{kind}/{event_id}",
                self.id
            ),
            Some(token),
            &body,
        ));
    }

    /// The room's entry in a full sync of `token`'s user, with `filter`.
    fn synced(&self, token: &str, filter: &Value) -> Value {
        let path = format!(
            "/_matrix/client/v3/sync?filter={}",
            query_encode(&filter.to_string())
        );
        let response = ok(self.server.client().get_with(&path, token));
        response["rooms"]["join"][&self.id].clone()
    }

    fn counts(&self, token: &str) -> (u64, u64) {
        let room = self.synced(token, &json!({ "room": { "timeline": { "limit": 1 } } }));
        let counts = &room["unread_notifications"];
        (
            counts["notification_count"]
                .as_u64()
                .expect("notifications"),
            counts["highlight_count"].as_u64().expect("highlights"),
        )
    }
}

fn text(body: &str) -> Value {
    json!({ "msgtype": "m.text", "body": body })
}

fn start() -> (Server, String, String) {
    let server = Server::start_with_users(
        &test_config("[limits]\nauth_attempts_per_minute = 100000\n"),
        &[("alice", PASSWORD), ("bob", PASSWORD)],
    );
    let alice = common::login_token(&server, "alice", PASSWORD);
    let bob = common::login_token(&server, "bob", PASSWORD);
    (server, alice, bob)
}

fn shared_room<'a>(server: &'a Server, alice: &str, bob: &str) -> Room<'a> {
    let id = ok(server.client().json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(alice),
        &json!({ "invite": ["@bob:localhost"], "preset": "private_chat" }),
    ))["room_id"]
        .as_str()
        .expect("room")
        .to_owned();
    ok(server.client().json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{id}/join"),
        Some(bob),
        &json!({}),
    ));
    Room { server, id }
}

#[test]
fn messages_notify_mentions_highlight_and_reading_clears() {
    let (server, alice, bob) = start();
    let room = shared_room(&server, &alice, &bob);
    assert_eq!(room.counts(&bob), (0, 0), "joining notifies nobody");

    room.send(&alice, "1", text("one"));
    let second = room.send(&alice, "2", text("two"));
    let mention = room.send(
        &alice,
        "3",
        json!({ "msgtype": "m.text", "body": "bob: look",
                "m.mentions": { "user_ids": ["@bob:localhost"] } }),
    );
    assert_eq!(room.counts(&bob), (3, 1));
    assert_eq!(
        room.counts(&alice),
        (0, 0),
        "one's own messages never notify"
    );

    // A receipt clears up to its event; private receipts count too, the further one wins.
    room.receipt(&bob, "m.read", &second, json!({}));
    assert_eq!(room.counts(&bob), (1, 1));
    room.receipt(&bob, "m.read.private", &mention, json!({}));
    assert_eq!(room.counts(&bob), (0, 0));
    room.receipt(&bob, "m.read", &second, json!({}));
    assert_eq!(
        room.counts(&bob),
        (0, 0),
        "an older receipt takes nothing back"
    );

    // Sending marks everything before it read.
    room.send(&alice, "4", text("four"));
    assert_eq!(room.counts(&bob), (1, 0));
    room.send(&bob, "b1", text("reply"));
    assert_eq!(room.counts(&bob), (0, 0));

    // A room rule that does not notify silences the room.
    ok(server.client().json(
        "PUT",
        &format!("/_matrix/client/v3/pushrules/global/room/{}", room.id),
        Some(&bob),
        &json!({ "actions": [] }),
    ));
    room.send(&alice, "5", text("muted"));
    assert_eq!(room.counts(&bob), (0, 0));
}

#[test]
fn threads_count_apart_when_asked() {
    let (server, alice, bob) = start();
    let room = shared_room(&server, &alice, &bob);
    let root = room.send(&alice, "root", text("root"));
    room.receipt(&bob, "m.read", &root, json!({}));
    let in_thread = |txn: &str| {
        room.send(
            &alice,
            txn,
            json!({ "msgtype": "m.text", "body": txn,
                    "m.relates_to": { "rel_type": "m.thread", "event_id": root } }),
        )
    };
    in_thread("t1");
    let t2 = in_thread("t2");
    room.send(&alice, "main", text("main"));

    // Without asking, everything counts in the room.
    assert_eq!(room.counts(&bob), (3, 0));
    let threaded =
        json!({ "room": { "timeline": { "limit": 1, "unread_thread_notifications": true } } });
    let synced = room.synced(&bob, &threaded);
    assert_eq!(synced["unread_notifications"]["notification_count"], 1);
    assert_eq!(
        synced["unread_thread_notifications"][&root]["notification_count"],
        2
    );

    // A threaded receipt clears only its thread.
    room.receipt(&bob, "m.read", &t2, json!({ "thread_id": root }));
    let synced = room.synced(&bob, &threaded);
    assert_eq!(synced["unread_notifications"]["notification_count"], 1);
    assert!(synced["unread_thread_notifications"].get(&root).is_none());
    assert_eq!(room.counts(&bob), (1, 0));
}

#[test]
fn notifications_list_newest_first_with_pages_and_highlights() {
    let (server, alice, bob) = start();
    let room = shared_room(&server, &alice, &bob);
    let first = room.send(&alice, "1", text("one"));
    room.send(
        &alice,
        "2",
        json!({ "msgtype": "m.text", "body": "hey",
                "m.mentions": { "user_ids": ["@bob:localhost"] } }),
    );
    let third = room.send(&alice, "3", text("three"));
    room.receipt(&bob, "m.read", &first, json!({}));

    let mut client = server.client();
    let page = ok(client.get_with("/_matrix/client/v3/notifications?limit=2", &bob));
    let listed = page["notifications"].as_array().expect("list");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["event"]["event_id"], third.as_str());
    assert_eq!(listed[0]["room_id"], room.id.as_str());
    assert_eq!(listed[0]["read"], false);
    assert!(
        listed[0]["actions"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("notify")))
    );
    assert!(listed[0]["ts"].as_u64().is_some());
    let next = page["next_token"].as_str().expect("next token");
    let rest = ok(client.get_with(
        &format!("/_matrix/client/v3/notifications?limit=2&from={next}"),
        &bob,
    ));
    let rest = rest["notifications"].as_array().expect("list").clone();
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[0]["event"]["event_id"], first.as_str());
    assert_eq!(rest[0]["read"], true);
    // The invite notified bob too (`.m.rule.invite_for_me`); joining read it.
    assert_eq!(rest[1]["event"]["content"]["membership"], "invite");
    assert_eq!(rest[1]["read"], true);

    let highlights = ok(client.get_with("/_matrix/client/v3/notifications?only=highlight", &bob));
    let highlights = highlights["notifications"].as_array().expect("list");
    assert_eq!(highlights.len(), 1);
    assert_eq!(highlights[0]["event"]["content"]["body"], "hey");

    assert!(
        ok(client.get_with("/_matrix/client/v3/notifications", &alice))["notifications"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
    let bad = client.get_with("/_matrix/client/v3/notifications?from=nope", &bob);
    assert_eq!(
        (bad.status, errcode(&bad).as_str()),
        (400, "M_INVALID_PARAM")
    );
    let bad = client.get_with("/_matrix/client/v3/notifications?only=everything", &bob);
    assert_eq!(bad.status, 400);
    let anonymous = client.get("/_matrix/client/v3/notifications");
    assert_eq!(anonymous.status, 401);
}

#[test]
fn events_come_with_their_bundled_aggregations() {
    let (server, alice, bob) = start();
    let room = shared_room(&server, &alice, &bob);
    let root = room.send(&alice, "root", text("root"));
    let reply = |token: &str, txn: &str| {
        room.send(
            token,
            txn,
            json!({ "msgtype": "m.text", "body": txn,
                    "m.relates_to": { "rel_type": "m.thread", "event_id": root } }),
        )
    };
    reply(&alice, "r1");
    let latest = reply(&bob, "r2");
    let edit = |token: &str, txn: &str, body: &str| {
        room.send(
            token,
            txn,
            json!({ "msgtype": "m.text", "body": format!("* {body}"),
                    "m.new_content": { "msgtype": "m.text", "body": body },
                    "m.relates_to": { "rel_type": "m.replace", "event_id": root } }),
        )
    };
    edit(&alice, "e1", "first edit");
    let second_edit = edit(&alice, "e2", "second edit");
    edit(&bob, "e3", "not bob's to edit");
    let reference = room.send(
        &bob,
        "ref",
        json!({ "msgtype": "m.text", "body": "see",
                "m.relates_to": { "rel_type": "m.reference", "event_id": root } }),
    );

    let mut client = server.client();
    let event = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{}/event/{root}", room.id),
        &bob,
    ));
    let relations = &event["unsigned"]["m.relations"];
    assert_eq!(relations["m.thread"]["count"], 2);
    assert_eq!(
        relations["m.thread"]["latest_event"]["event_id"],
        latest.as_str()
    );
    assert_eq!(relations["m.thread"]["current_user_participated"], true);
    assert_eq!(relations["m.replace"]["event_id"], second_edit.as_str());
    assert_eq!(
        relations["m.reference"]["chunk"],
        json!([{ "event_id": reference }])
    );
    assert_eq!(
        event["content"]["body"], "root",
        "the original content is kept"
    );

    // The same in /sync and /messages; someone who took no part sees that too.
    let synced = room.synced(&alice, &json!({ "room": { "timeline": { "limit": 20 } } }));
    let in_timeline = synced["timeline"]["events"]
        .as_array()
        .expect("timeline")
        .iter()
        .find(|event| event["event_id"] == root.as_str())
        .cloned()
        .expect("root in timeline");
    assert_eq!(
        in_timeline["unsigned"]["m.relations"]["m.thread"]["count"],
        2
    );
    let page = ok(client.get_with(
        &format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=20",
            room.id
        ),
        &bob,
    ));
    assert!(
        page["chunk"]
            .as_array()
            .expect("chunk")
            .iter()
            .any(|event| {
                event["event_id"] == root.as_str()
                    && event["unsigned"]["m.relations"]["m.replace"]["event_id"]
                        == second_edit.as_str()
            })
    );

    // A redacted event bundles nothing.
    ok(client.json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{}/redact/{root}/x1", room.id),
        Some(&alice),
        &json!({}),
    ));
    let redacted = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{}/event/{root}", room.id),
        &bob,
    ));
    assert!(redacted["unsigned"].get("m.relations").is_none());
}

#[test]
fn a_threaded_receipt_must_name_the_events_thread() {
    let (server, alice, bob) = start();
    let room = shared_room(&server, &alice, &bob);
    let root = room.send(&alice, "root", text("root"));
    let main = room.send(&alice, "main", text("main"));
    let reply = room.send(
        &alice,
        "reply",
        json!({ "msgtype": "m.text", "body": "reply",
                "m.relates_to": { "rel_type": "m.thread", "event_id": root } }),
    );
    let mut client = server.client();
    let path = |event: &str| {
        format!(
            "/_matrix/client/v3/rooms/{}/receipt/m.read/{event}",
            room.id
        )
    };
    for (event, thread) in [(&main, root.as_str()), (&reply, "main")] {
        let refused = client.json(
            "POST",
            &path(event),
            Some(&bob),
            &json!({ "thread_id": thread }),
        );
        assert_eq!(
            (refused.status, errcode(&refused).as_str()),
            (400, "M_INVALID_PARAM")
        );
    }
    ok(client.json(
        "POST",
        &path(&reply),
        Some(&bob),
        &json!({ "thread_id": root }),
    ));
    ok(client.json(
        "POST",
        &path(&main),
        Some(&bob),
        &json!({ "thread_id": "main" }),
    ));
}
