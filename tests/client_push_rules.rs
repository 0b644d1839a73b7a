//! Push rules a user sets through `PUT /pushrules/global/...`, checked through what they
//! decide (spec: client-server API, "Push Notifications", "Push Rules"): the unread
//! notification and highlight counts of `/sync` and the list of `/notifications`. Rule kinds
//! are weighed in the spec's order (override, content, room, sender, underride), a user's
//! rules before the server's defaults of their kind, and `.m.rule.master` before everything.

mod common;

use common::{Server, ok, query_encode, test_config};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// Alice and Bob in a private room of their own (two members: every message notifies Bob
/// by `.m.rule.room_one_to_one`), on one server; Bob sets the rules.
struct Chat {
    server: Server,
    alice: String,
    bob: String,
    room: String,
}

fn chat() -> Chat {
    let server = Server::start_with_users(
        &test_config("[limits]\nauth_attempts_per_minute = 100000\n"),
        &[("alice", PASSWORD), ("bob", PASSWORD)],
    );
    let alice = common::login_token(&server, "alice", PASSWORD);
    let bob = common::login_token(&server, "bob", PASSWORD);
    let chat = Chat {
        room: String::new(),
        server,
        alice,
        bob,
    };
    let room = chat.new_room();
    Chat { room, ..chat }
}

impl Chat {
    /// Another room of Alice's that Bob joined.
    fn new_room(&self) -> String {
        let room = ok(self.server.client().json(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&self.alice),
            &json!({ "invite": ["@bob:localhost"], "preset": "private_chat" }),
        ))["room_id"]
            .as_str()
            .expect("room")
            .to_owned();
        ok(self.server.client().json(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            Some(&self.bob),
            &json!({}),
        ));
        room
    }

    /// Alice sends `content` (an `m.room.message`) to `room`; its event ID.
    fn send_to(&self, room: &str, content: Value) -> String {
        let txn = format!("t{}", std::process::id() as u128 ^ nanos());
        ok(self.server.client().json(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
            Some(&self.alice),
            &content,
        ))["event_id"]
            .as_str()
            .expect("event id")
            .to_owned()
    }

    fn send(&self, content: Value) -> String {
        self.send_to(&self.room, content)
    }

    /// Bob changes his rules; the server must accept.
    fn bob_puts(&self, path: &str, body: Value) {
        ok(self.server.client().json(
            "PUT",
            &format!("/_matrix/client/v3/pushrules/global/{path}"),
            Some(&self.bob),
            &body,
        ));
    }

    /// Bob's `(notification_count, highlight_count)` in `room`, from `/sync`.
    fn counts_in(&self, room: &str) -> (u64, u64) {
        let filter = query_encode(r#"{"room":{"timeline":{"limit":1}}}"#);
        let synced = ok(self.server.client().get_with(
            &format!("/_matrix/client/v3/sync?filter={filter}"),
            &self.bob,
        ));
        let counts = &synced["rooms"]["join"][room]["unread_notifications"];
        (
            counts["notification_count"]
                .as_u64()
                .expect("notifications"),
            counts["highlight_count"].as_u64().expect("highlights"),
        )
    }

    fn counts(&self) -> (u64, u64) {
        self.counts_in(&self.room)
    }

    /// Bob's `/notifications` (`only=highlight` if asked): event ID and actions, newest
    /// first.
    fn notifications(&self, only_highlights: bool) -> Vec<(String, Value)> {
        let path = if only_highlights {
            "/_matrix/client/v3/notifications?only=highlight"
        } else {
            "/_matrix/client/v3/notifications"
        };
        ok(self.server.client().get_with(path, &self.bob))["notifications"]
            .as_array()
            .expect("notifications")
            .iter()
            .map(|n| {
                (
                    n["event"]["event_id"].as_str().expect("id").to_owned(),
                    n["actions"].clone(),
                )
            })
            .collect()
    }

    fn notified(&self, event_id: &str) -> bool {
        self.notifications(false)
            .iter()
            .any(|(id, _)| id == event_id)
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
}

fn text(body: &str) -> Value {
    json!({ "msgtype": "m.text", "body": body })
}

fn highlights(actions: &Value) -> bool {
    actions.as_array().is_some_and(|actions| {
        actions.iter().any(|action| {
            action["set_tweak"] == "highlight" && action.get("value").is_none_or(|v| v == true)
        })
    })
}

#[test]
fn a_custom_override_rule_highlights_ahead_of_the_default_rules() {
    let chat = chat();
    chat.bob_puts(
        "override/urgent",
        json!({
            "conditions": [{ "kind": "event_match", "key": "content.urgency", "pattern": "high" }],
            "actions": ["notify", { "set_tweak": "highlight" }, { "set_tweak": "sound", "value": "alarm" }],
        }),
    );
    let rule = ok(chat.server.client().get_with(
        "/_matrix/client/v3/pushrules/global/override/urgent",
        &chat.bob,
    ));
    assert_eq!(rule["rule_id"], "urgent");
    assert_eq!(rule["default"], false);
    assert_eq!(rule["enabled"], true);

    let plain = chat.send(text("lunch?"));
    assert_eq!(chat.counts(), (1, 0), "a plain message notifies");
    let notice = chat.send(json!({ "msgtype": "m.notice", "body": "build passed" }));
    assert_eq!(
        chat.counts(),
        (1, 0),
        "notices do not notify (.m.rule.suppress_notices)"
    );
    // A user's override rule comes before the server's: an urgent notice highlights.
    let urgent_notice =
        chat.send(json!({ "msgtype": "m.notice", "body": "build broke", "urgency": "high" }));
    assert_eq!(chat.counts(), (2, 1));
    let urgent = chat.send(json!({ "msgtype": "m.text", "body": "fire", "urgency": "high" }));
    assert_eq!(chat.counts(), (3, 2));
    chat.send(json!({ "msgtype": "m.text", "body": "meh", "urgency": "low" }));
    assert_eq!(chat.counts(), (4, 2), "the pattern must match the value");

    let listed = chat.notifications(false);
    assert!(!listed.iter().any(|(id, _)| *id == notice), "{listed:?}");
    assert!(listed.iter().any(|(id, _)| *id == plain));
    let (_, actions) = listed
        .iter()
        .find(|(id, _)| *id == urgent)
        .expect("urgent message listed");
    assert!(highlights(actions), "{actions}");
    assert!(
        actions
            .as_array()
            .is_some_and(|a| a.contains(&json!({ "set_tweak": "sound", "value": "alarm" }))),
        "the rule's own tweaks: {actions}"
    );
    let only: Vec<String> = chat
        .notifications(true)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(only, vec![urgent.clone(), urgent_notice]);

    // Disabled, then deleted: urgency no longer highlights.
    chat.bob_puts("override/urgent/enabled", json!({ "enabled": false }));
    chat.send(json!({ "msgtype": "m.text", "body": "fire 2", "urgency": "high" }));
    assert_eq!(chat.counts(), (5, 2));
    chat.bob_puts("override/urgent/enabled", json!({ "enabled": true }));
    chat.send(json!({ "msgtype": "m.text", "body": "fire 3", "urgency": "high" }));
    assert_eq!(chat.counts(), (6, 3));
    ok(chat.server.client().json(
        "DELETE",
        "/_matrix/client/v3/pushrules/global/override/urgent",
        Some(&chat.bob),
        &json!({}),
    ));
    chat.send(json!({ "msgtype": "m.text", "body": "fire 4", "urgency": "high" }));
    assert_eq!(chat.counts(), (7, 3));
}

#[test]
fn a_keyword_rule_matches_whole_words_in_any_case() {
    let chat = chat();
    chat.bob_puts(
        "content/pizza",
        json!({ "pattern": "pizza", "actions": ["notify", { "set_tweak": "highlight" }] }),
    );
    let asked = chat.send(text("Who wants PIZZA tonight?"));
    assert_eq!(chat.counts(), (1, 1), "case does not matter");
    chat.send(text("two pizzas are enough"));
    assert_eq!(
        chat.counts(),
        (2, 1),
        "a word that only starts with the keyword is no match"
    );
    let punctuated = chat.send(text("(pizza)"));
    assert_eq!(chat.counts(), (3, 2), "punctuation is a word boundary");
    chat.send(text("pizza_party"));
    assert_eq!(chat.counts(), (4, 2), "_ is part of a word");

    let only: Vec<String> = chat
        .notifications(true)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(only, vec![punctuated, asked]);

    // A glob keyword.
    chat.bob_puts(
        "content/deploys",
        json!({ "pattern": "deploy*", "actions": ["notify", { "set_tweak": "highlight" }] }),
    );
    chat.send(text("deploying now"));
    assert_eq!(chat.counts(), (5, 3));
}

#[test]
fn a_dont_notify_room_rule_mutes_the_room_but_not_keywords_or_mentions() {
    let chat = chat();
    let other = chat.new_room();
    chat.bob_puts(
        &format!("room/{}", chat.room),
        json!({ "actions": ["dont_notify"] }),
    );
    chat.bob_puts(
        "content/pizza",
        json!({ "pattern": "pizza", "actions": ["notify", { "set_tweak": "highlight" }] }),
    );
    let muted = chat.send(text("chatter"));
    assert_eq!(chat.counts(), (0, 0), "the room rule silences the room");
    assert!(!chat.notified(&muted));
    chat.send_to(&other, text("chatter elsewhere"));
    assert_eq!(chat.counts_in(&other), (1, 0), "only that room");

    // Content rules come before room rules, override rules (mentions) too.
    chat.send(text("pizza?"));
    assert_eq!(chat.counts(), (1, 1));
    let mention = chat.send(json!({ "msgtype": "m.text", "body": "hey you",
                                    "m.mentions": { "user_ids": ["@bob:localhost"] } }));
    assert_eq!(chat.counts(), (2, 2));
    assert!(chat.notified(&mention));

    // A sender rule comes after the room rule: it does not undo the muting.
    chat.bob_puts("sender/@alice:localhost", json!({ "actions": ["notify"] }));
    chat.send(text("more chatter"));
    assert_eq!(chat.counts(), (2, 2));
    ok(chat.server.client().json(
        "DELETE",
        &format!("/_matrix/client/v3/pushrules/global/room/{}", chat.room),
        Some(&chat.bob),
        &json!({}),
    ));
    chat.send(text("unmuted"));
    assert_eq!(chat.counts(), (3, 2));
}

#[test]
fn the_master_rule_silences_everything() {
    let chat = chat();
    chat.bob_puts(
        "content/pizza",
        json!({ "pattern": "pizza", "actions": ["notify", { "set_tweak": "highlight" }] }),
    );
    chat.bob_puts(
        "override/everything",
        json!({ "conditions": [], "actions": ["notify", { "set_tweak": "highlight" }] }),
    );
    chat.send(text("before"));
    assert_eq!(chat.counts(), (1, 1), "the catch-all override highlights");
    ok(chat.server.client().json(
        "DELETE",
        "/_matrix/client/v3/pushrules/global/override/everything",
        Some(&chat.bob),
        &json!({}),
    ));

    chat.bob_puts(
        "override/.m.rule.master/enabled",
        json!({ "enabled": true }),
    );
    let enabled = ok(chat.server.client().get_with(
        "/_matrix/client/v3/pushrules/global/override/.m.rule.master/enabled",
        &chat.bob,
    ));
    assert_eq!(enabled["enabled"], true);
    chat.bob_puts(
        "override/everything",
        json!({ "conditions": [], "actions": ["notify", { "set_tweak": "highlight" }] }),
    );
    let silenced = [
        chat.send(text("plain")),
        chat.send(text("pizza!")),
        chat.send(json!({ "msgtype": "m.text", "body": "hey you",
                          "m.mentions": { "user_ids": ["@bob:localhost"] } })),
        chat.send(json!({ "msgtype": "m.text", "body": "@room everyone",
                          "m.mentions": { "room": true } })),
    ];
    assert_eq!(
        chat.counts(),
        (1, 1),
        "nothing notifies, not even the user's own override rule"
    );
    for event in &silenced {
        assert!(!chat.notified(event), "{event} listed");
    }

    chat.bob_puts(
        "override/.m.rule.master/enabled",
        json!({ "enabled": false }),
    );
    let after = chat.send(text("back"));
    assert_eq!(chat.counts(), (2, 2));
    assert!(chat.notified(&after));
}
