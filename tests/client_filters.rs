//! Filters in `/sync`, `/messages` and `/context`: event types and senders, rooms, fields,
//! lazy-loaded members, `state` at the timeline's start, `state_after`, left rooms.

mod common;

use common::{Server, errcode, ok, query_encode, test_config};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

struct People {
    server: Server,
    alice: String,
    bob: String,
    carol: String,
}

fn start() -> People {
    let server = Server::start_with_users(
        &test_config("[limits]\nauth_attempts_per_minute = 100000\n"),
        &[("alice", PASSWORD), ("bob", PASSWORD), ("carol", PASSWORD)],
    );
    let login = |user| common::login_token(&server, user, PASSWORD);
    let (alice, bob, carol) = (login("alice"), login("bob"), login("carol"));
    People {
        server,
        alice,
        bob,
        carol,
    }
}

impl People {
    fn call(&self, method: &str, path: &str, token: &str, body: Value) -> Value {
        ok(self.server.client().json(method, path, Some(token), &body))
    }

    /// A public room of alice's that bob and carol joined.
    fn room(&self, name: &str) -> String {
        let room = self.call(
            "POST",
            "/_matrix/client/v3/createRoom",
            &self.alice,
            json!({ "preset": "public_chat", "name": name }),
        )["room_id"]
            .as_str()
            .expect("room")
            .to_owned();
        for token in [&self.bob, &self.carol] {
            self.call(
                "POST",
                &format!("/_matrix/client/v3/join/{room}"),
                token,
                json!({}),
            );
        }
        room
    }

    fn say(&self, token: &str, room: &str, body: &str) -> String {
        let txn = format!("t{}", rand_suffix());
        self.call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
            token,
            json!({ "msgtype": "m.text", "body": body }),
        )["event_id"]
            .as_str()
            .expect("id")
            .to_owned()
    }

    fn topic(&self, room: &str, topic: &str) {
        self.call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/"),
            &self.alice,
            json!({ "topic": topic }),
        );
    }

    fn sync(&self, token: &str, query: &str) -> Value {
        ok(self
            .server
            .client()
            .get_with(&format!("/_matrix/client/v3/sync?{query}"), token))
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
}

fn filter(value: Value) -> String {
    format!("filter={}", query_encode(&value.to_string()))
}

fn types(events: &Value) -> Vec<String> {
    events
        .as_array()
        .expect("events")
        .iter()
        .map(|event| event["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn state_keys_of(events: &Value, kind: &str) -> Vec<String> {
    let mut keys: Vec<String> = events
        .as_array()
        .expect("events")
        .iter()
        .filter(|event| event["type"] == kind)
        .map(|event| event["state_key"].as_str().unwrap_or_default().to_owned())
        .collect();
    keys.sort();
    keys
}

#[test]
fn timeline_filters_choose_types_senders_rooms_and_fields() {
    let people = start();
    let room = people.room("Kitchen");
    let other = people.room("Garden");
    people.say(&people.alice, &room, "from alice");
    people.say(&people.bob, &room, "from bob");

    let only_messages = filter(json!({ "room": { "timeline": {
        "types": ["*.message", "m.room.member"], "not_types": ["m.room.member"],
        "not_senders": ["@bob:localhost"], "limit": 5 } } }));
    let synced = people.sync(&people.carol, &only_messages);
    let timeline = &synced["rooms"]["join"][&room]["timeline"];
    assert_eq!(types(&timeline["events"]), ["m.room.message"]);
    assert_eq!(timeline["events"][0]["content"]["body"], "from alice");

    // Rooms: only one, or all but one.
    let only_room = filter(json!({ "room": { "rooms": [room] } }));
    let synced = people.sync(&people.carol, &only_room);
    assert!(synced["rooms"]["join"].get(&room).is_some());
    assert!(synced["rooms"]["join"].get(&other).is_none());
    let not_room = filter(json!({ "room": { "not_rooms": [room] } }));
    let synced = people.sync(&people.carol, &not_room);
    assert!(synced["rooms"]["join"].get(&room).is_none());
    assert!(synced["rooms"]["join"].get(&other).is_some());

    // Fields: only those named.
    let fields = filter(json!({ "event_fields": ["type", "content.body"],
                                "room": { "rooms": [room], "timeline": { "limit": 1 } } }));
    let synced = people.sync(&people.carol, &fields);
    let event = &synced["rooms"]["join"][&room]["timeline"]["events"][0];
    assert_eq!(
        event,
        &json!({ "type": "m.room.message", "content": { "body": "from bob" } })
    );

    // Stored filters work the same, and bad ones are refused.
    let stored = people.call(
        "POST",
        "/_matrix/client/v3/user/@carol:localhost/filter",
        &people.carol,
        json!({ "room": { "rooms": [other] } }),
    )["filter_id"]
        .as_str()
        .expect("filter id")
        .to_owned();
    let synced = people.sync(&people.carol, &format!("filter={stored}"));
    assert!(synced["rooms"]["join"].get(&room).is_none());
    let mut client = people.server.client();
    let bad = client.json(
        "POST",
        "/_matrix/client/v3/user/@carol:localhost/filter",
        Some(&people.carol),
        &json!({ "room": { "timeline": { "limit": "ten" } } }),
    );
    assert_eq!((bad.status, errcode(&bad).as_str()), (400, "M_BAD_JSON"));
    let bad = client.get_with(
        &format!(
            "/_matrix/client/v3/sync?filter={}",
            query_encode("{\"room\":{\"rooms\":\"!a:x\"}}")
        ),
        &people.carol,
    );
    assert_eq!(
        (bad.status, errcode(&bad).as_str()),
        (400, "M_INVALID_PARAM")
    );
    let bad = client.get_with("/_matrix/client/v3/sync?filter=nosuchfilter", &people.carol);
    assert_eq!(bad.status, 400);
}

#[test]
fn lazy_loading_sends_only_the_members_shown() {
    let people = start();
    let room = people.room("Kitchen");
    for i in 0..3 {
        people.say(&people.bob, &room, &format!("bob {i}"));
    }
    let lazy = filter(json!({ "room": {
        "timeline": { "limit": 2 },
        "state": { "lazy_load_members": true } } }));
    let synced = people.sync(&people.carol, &lazy);
    let state = &synced["rooms"]["join"][&room]["state"]["events"];
    assert_eq!(
        state_keys_of(state, "m.room.member"),
        ["@bob:localhost", "@carol:localhost"],
        "the sender shown and the user themselves"
    );
    assert_eq!(
        state_keys_of(state, "m.room.name"),
        [""],
        "other state is all there"
    );
    let everyone = people.sync(
        &people.carol,
        &filter(json!({ "room": { "timeline": { "limit": 2 } } })),
    );
    assert_eq!(
        state_keys_of(
            &everyone["rooms"]["join"][&room]["state"]["events"],
            "m.room.member"
        ),
        ["@alice:localhost", "@bob:localhost", "@carol:localhost"]
    );

    // Incremental: a new speaker's member event comes with their first message.
    let since = synced["next_batch"].as_str().expect("token").to_owned();
    people.say(&people.alice, &room, "alice speaks");
    let next = people.sync(&people.carol, &format!("since={since}&{lazy}"));
    let state = &next["rooms"]["join"][&room]["state"]["events"];
    assert_eq!(state_keys_of(state, "m.room.member"), ["@alice:localhost"]);

    // /messages with lazy-loading answers the senders' member events.
    let messages = ok(people.server.client().get_with(
        &format!(
            "/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=2&{}",
            filter(json!({ "lazy_load_members": true, "types": ["m.room.message"] }))
        ),
        &people.carol,
    ));
    assert_eq!(
        types(&messages["chunk"]),
        ["m.room.message", "m.room.message"]
    );
    assert_eq!(
        state_keys_of(&messages["state"], "m.room.member"),
        ["@alice:localhost", "@bob:localhost"]
    );
}

#[test]
fn state_is_exact_at_the_timeline_start_and_after_its_end() {
    let people = start();
    let room = people.room("Kitchen");
    people.topic(&room, "first");
    let synced = people.sync(&people.carol, "");
    let since = synced["next_batch"].as_str().expect("token").to_owned();

    // The topic changes, then enough messages follow that the change leaves the timeline.
    people.topic(&room, "second");
    for i in 0..4 {
        people.say(&people.bob, &room, &format!("m{i}"));
    }
    let limited = filter(json!({ "room": { "timeline": { "limit": 2 } } }));
    let next = people.sync(&people.carol, &format!("since={since}&{limited}"));
    let joined = &next["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], true);
    let state = joined["state"]["events"].as_array().expect("state");
    assert_eq!(state.len(), 1, "only what changed: {state:?}");
    assert_eq!(state[0]["content"]["topic"], "second");

    // A topic change inside the timeline: `state` holds the topic before it,
    // `state_after` the topic after it.
    people.topic(&room, "third");
    people.say(&people.bob, &room, "after the topic");
    let initial = people.sync(&people.carol, &limited);
    let joined = &initial["rooms"]["join"][&room];
    let topic_in = |events: &Value| {
        events
            .as_array()
            .expect("events")
            .iter()
            .find(|event| event["type"] == "m.room.topic")
            .map(|event| event["content"]["topic"].clone())
    };
    assert_eq!(topic_in(&joined["state"]["events"]), Some(json!("second")));
    assert_eq!(
        topic_in(&joined["timeline"]["events"]),
        Some(json!("third"))
    );
    let after = people.sync(&people.carol, &format!("use_state_after=true&{limited}"));
    let joined = &after["rooms"]["join"][&room];
    assert!(joined.get("state").is_none());
    assert_eq!(
        topic_in(&joined["state_after"]["events"]),
        Some(json!("third"))
    );

    // /context gives the state at the event.
    let early = people.say(&people.bob, &room, "before fourth");
    people.topic(&room, "fourth");
    let context = ok(people.server.client().get_with(
        &format!("/_matrix/client/v3/rooms/{room}/context/{early}?limit=0"),
        &people.carol,
    ));
    assert_eq!(topic_in(&context["state"]), Some(json!("third")));
}

#[test]
fn left_rooms_come_on_a_first_sync_only_when_asked() {
    let people = start();
    let room = people.room("Kitchen");
    people.say(&people.alice, &room, "hello");
    people.call(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/leave"),
        &people.carol,
        json!({}),
    );
    let plain = people.sync(&people.carol, "");
    assert!(plain["rooms"]["leave"].get(&room).is_none());
    let with_leave = people.sync(
        &people.carol,
        &filter(json!({ "room": { "include_leave": true } })),
    );
    let left = &with_leave["rooms"]["leave"][&room];
    let events = left["timeline"]["events"].as_array().expect("timeline");
    assert_eq!(
        events.last().expect("event")["content"]["membership"],
        "leave"
    );
    assert!(left["state"]["events"].is_array());
}

#[test]
fn history_visibility_applies_as_it_was_when_each_event_was_sent() {
    let people = start();
    let room = people.call(
        "POST",
        "/_matrix/client/v3/createRoom",
        &people.alice,
        json!({ "preset": "public_chat",
                "initial_state": [{ "type": "m.room.history_visibility", "state_key": "",
                                    "content": { "history_visibility": "joined" } }] }),
    )["room_id"]
        .as_str()
        .expect("room")
        .to_owned();
    people.say(&people.alice, &room, "private before");
    people.call(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.history_visibility/"),
        &people.alice,
        json!({ "history_visibility": "shared" }),
    );
    people.say(&people.alice, &room, "shared before");
    people.call(
        "POST",
        &format!("/_matrix/client/v3/join/{room}"),
        &people.bob,
        json!({}),
    );

    let bodies = |events: &Value| -> Vec<String> {
        events
            .as_array()
            .expect("events")
            .iter()
            .filter_map(|event| event["content"]["body"].as_str().map(str::to_owned))
            .collect()
    };
    let page = ok(people.server.client().get_with(
        &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"),
        &people.bob,
    ));
    assert_eq!(
        bodies(&page["chunk"]),
        ["shared before"],
        "not what was joined-only then"
    );
    let synced = people.sync(
        &people.bob,
        &filter(json!({ "room": { "timeline": { "limit": 50 } } })),
    );
    assert_eq!(
        bodies(&synced["rooms"]["join"][&room]["timeline"]["events"]),
        ["shared before"]
    );
}

#[test]
fn concurrent_tag_changes_from_two_devices_are_both_kept() {
    let people = start();
    let room = people.room("Kitchen");
    let second_device = common::login_token(&people.server, "carol", PASSWORD);
    let tokens = [people.carol.clone(), second_device];
    let address = people.server.address("http");
    std::thread::scope(|scope| {
        for (device, token) in tokens.iter().enumerate() {
            let room = &room;
            scope.spawn(move || {
                let mut client = common::http::Client::plain(address);
                for i in 0..25 {
                    let path = format!(
                        "/_matrix/client/v3/user/@carol:localhost/rooms/{room}/tags/u.d{device}t{i}"
                    );
                    ok(client.json("PUT", &path, Some(token), &json!({})));
                }
            });
        }
    });
    let tags = people.call(
        "GET",
        &format!("/_matrix/client/v3/user/@carol:localhost/rooms/{room}/tags"),
        &people.carol,
        json!(null),
    );
    assert_eq!(tags["tags"].as_object().expect("tags").len(), 50);
}

#[test]
fn someone_never_in_a_room_sees_none_of_its_state() {
    let people = start();
    let room = people.call(
        "POST",
        "/_matrix/client/v3/createRoom",
        &people.alice,
        json!({ "preset": "private_chat", "name": "Secret", "invite": ["@carol:localhost"] }),
    )["room_id"]
        .as_str()
        .expect("room")
        .to_owned();
    people.call(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/leave"),
        &people.carol,
        json!({}),
    );
    let synced = people.sync(
        &people.carol,
        &filter(json!({ "room": { "include_leave": true } })),
    );
    let left = &synced["rooms"]["leave"][&room];
    assert_eq!(left["state"]["events"], json!([]), "declined: no state");
    let events = left["timeline"]["events"].as_array().expect("timeline");
    assert_eq!(events.len(), 1, "only their own membership: {events:?}");
    assert_eq!(events[0]["state_key"], "@carol:localhost");
}

#[test]
fn incremental_sync_brings_rooms_changed_only_by_typing_receipts_or_room_data() {
    let people = start();
    let room = people.room("Kitchen");
    let message = people.say(&people.alice, &room, "hello");
    let since = people.sync(&people.bob, "")["next_batch"]
        .as_str()
        .expect("token")
        .to_owned();
    let next = |query: &str| people.sync(&people.bob, &format!("since={since}&{query}"));

    // Typing by someone else.
    people.call(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/typing/@alice:localhost"),
        &people.alice,
        json!({ "typing": true, "timeout": 30000 }),
    );
    let synced = next("timeout=0");
    assert_eq!(
        types(&synced["rooms"]["join"][&room]["ephemeral"]["events"]),
        ["m.typing"]
    );

    // Room account data of the user's own.
    people.call(
        "PUT",
        &format!(
            "/_matrix/client/v3/user/@bob:localhost/rooms/{room}/account_data/org.example.note"
        ),
        &people.bob,
        json!({ "note": "milk" }),
    );
    let synced = next("timeout=0");
    assert_eq!(
        types(&synced["rooms"]["join"][&room]["account_data"]["events"]),
        ["org.example.note"]
    );

    // Their own private receipt from another device, with ephemeral events filtered out:
    // the counts changed, so the room comes.
    people.call(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read.private/{message}"),
        &people.bob,
        json!({}),
    );
    let no_ephemeral = filter(json!({ "room": { "ephemeral": { "types": [] } } }));
    let synced = next(&no_ephemeral);
    let joined = &synced["rooms"]["join"][&room];
    assert_eq!(joined["unread_notifications"]["notification_count"], 0);
    assert_eq!(joined["ephemeral"]["events"], json!([]));
}

#[test]
fn bundled_threads_count_only_what_the_reader_may_see() {
    let people = start();
    let room = people.call(
        "POST",
        "/_matrix/client/v3/createRoom",
        &people.alice,
        json!({ "preset": "public_chat",
                "initial_state": [{ "type": "m.room.history_visibility", "state_key": "",
                                    "content": { "history_visibility": "joined" } }] }),
    )["room_id"]
        .as_str()
        .expect("room")
        .to_owned();
    people.call(
        "POST",
        &format!("/_matrix/client/v3/join/{room}"),
        &people.carol,
        json!({}),
    );
    let root = people.say(&people.alice, &room, "root");
    let reply = |body: &str| {
        people.call(
            "PUT",
            &format!(
                "/_matrix/client/v3/rooms/{room}/send/m.room.message/t{}",
                rand_suffix()
            ),
            &people.alice,
            json!({ "msgtype": "m.text", "body": body,
                    "m.relates_to": { "rel_type": "m.thread", "event_id": root } }),
        );
    };
    reply("while carol is here");
    people.call(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/leave"),
        &people.carol,
        json!({}),
    );
    reply("after carol left");
    let page = ok(people.server.client().get_with(
        &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"),
        &people.carol,
    ));
    let shown_root = page["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .find(|event| event["event_id"] == root.as_str())
        .cloned()
        .expect("root");
    let thread = &shown_root["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(thread["count"], 1);
    assert_eq!(
        thread["latest_event"]["content"]["body"],
        "while carol is here"
    );
}
