//! The space hierarchy (`GET /_matrix/client/v1/rooms/{roomId}/hierarchy`): the spec's order
//! of children, depth-first, each room once, only rooms the requester may see, the
//! `suggested_only` and `max_depth` filters, pagination and its errors.

mod common;

use common::{Server, errcode, ok, test_config};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

struct Family {
    _server: Server,
    alice: String,
    bob: String,
    client: common::http::Client,
}

impl Family {
    fn start() -> Family {
        let server = Server::start_with_users(
            &test_config("[limits]\nauth_attempts_per_minute = 100000\n"),
            &[("alice", PASSWORD), ("bob", PASSWORD)],
        );
        let alice = common::login_token(&server, "alice", PASSWORD);
        let bob = common::login_token(&server, "bob", PASSWORD);
        let client = server.client();
        Family {
            _server: server,
            alice,
            bob,
            client,
        }
    }

    fn create(&mut self, body: Value) -> String {
        ok(self.client.json(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&self.alice),
            &body,
        ))["room_id"]
            .as_str()
            .expect("room_id")
            .to_owned()
    }

    fn space(&mut self, name: &str) -> String {
        self.create(json!({
            "name": name,
            "preset": "public_chat",
            "creation_content": { "type": "m.space" },
        }))
    }

    /// Adds `child` to `space`, a moment later than the previous child (so timestamps
    /// differ).
    fn add_child(&mut self, space: &str, child: &str, content: Value) {
        std::thread::sleep(std::time::Duration::from_millis(5));
        ok(self.client.json(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{space}/state/m.space.child/{child}"),
            Some(&self.alice),
            &content,
        ));
    }

    fn hierarchy(&mut self, room: &str, query: &str, token: &str) -> common::http::Response {
        self.client.get_with(
            &format!("/_matrix/client/v1/rooms/{room}/hierarchy{query}"),
            token,
        )
    }
}

fn owned(rooms: &[&String]) -> Vec<String> {
    rooms.iter().map(|room| (*room).clone()).collect()
}

fn ids(page: &Value) -> Vec<String> {
    page["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|room| room["room_id"].as_str().expect("room_id").to_owned())
        .collect()
}

/// The tree the tests walk:
///
/// ```text
/// Family (space, public)
///   ├─ Projects (space, public, order "a") ─┬─ Garden (public)
///   │                                       └─ Family (a loop)
///   ├─ Kitchen (public, order "b", suggested)
///   ├─ Secret (invite only)
///   ├─ Den (restricted to Family's members)
///   ├─ !nowhere:elsewhere.org (not on this server)
///   └─ Attic (its child event has an empty `via`: removed)
/// ```
struct Tree {
    family: String,
    projects: String,
    garden: String,
    kitchen: String,
    secret: String,
    den: String,
}

fn build_tree(f: &mut Family) -> Tree {
    let family = f.space("Family");
    let projects = f.space("Projects");
    let garden = f.create(json!({ "name": "Garden", "preset": "public_chat" }));
    let kitchen = f.create(json!({ "name": "Kitchen", "preset": "public_chat", "topic": "Food" }));
    let secret = f.create(json!({ "name": "Secret", "preset": "private_chat" }));
    let den = f.create(json!({
        "name": "Den",
        "preset": "private_chat",
        "initial_state": [{
            "type": "m.room.join_rules",
            "state_key": "",
            "content": {
                "join_rule": "restricted",
                "allow": [{ "type": "m.room_membership", "room_id": family }],
            },
        }],
    }));
    let attic = f.create(json!({ "name": "Attic", "preset": "public_chat" }));
    let via = json!(["localhost"]);
    // Added in an order unlike the expected one: `order` wins, then time, then room ID.
    f.add_child(&family, &secret, json!({ "via": via }));
    f.add_child(
        &family,
        &kitchen,
        json!({ "via": via, "order": "b", "suggested": true }),
    );
    f.add_child(&family, &den, json!({ "via": via }));
    f.add_child(&family, &projects, json!({ "via": via, "order": "a" }));
    f.add_child(
        &family,
        "!nowhere:elsewhere.org",
        json!({ "via": ["elsewhere.org"] }),
    );
    f.add_child(&family, &attic, json!({ "via": [] }));
    f.add_child(&projects, &garden, json!({ "via": via }));
    f.add_child(&projects, &family, json!({ "via": via }));
    Tree {
        family,
        projects,
        garden,
        kitchen,
        secret,
        den,
    }
}

#[test]
fn hierarchy_walks_depth_first_in_the_spec_order_showing_what_each_may_see() {
    let mut f = Family::start();
    let t = build_tree(&mut f);
    let alice = f.alice.clone();
    let bob = f.bob.clone();

    let page = ok(f.hierarchy(&t.family, "", &alice));
    assert_eq!(
        ids(&page),
        owned(&[
            &t.family,
            &t.projects,
            &t.garden,
            &t.kitchen,
            &t.secret,
            &t.den
        ]),
        "depth first, children by order then time, the loop and the unknown room left out"
    );
    assert!(page.get("next_batch").is_none());

    let root = &page["rooms"][0];
    assert_eq!(root["room_type"], "m.space");
    assert_eq!(root["name"], "Family");
    assert_eq!(root["join_rule"], "public");
    assert_eq!(root["num_joined_members"], 1);
    assert_eq!(root["world_readable"], false);
    assert_eq!(root["guest_can_join"], false);
    let children = root["children_state"].as_array().expect("children_state");
    let child_keys: Vec<&str> = children
        .iter()
        .map(|child| child["state_key"].as_str().expect("state_key"))
        .collect();
    assert_eq!(
        child_keys,
        [
            t.projects.as_str(),
            t.kitchen.as_str(),
            t.secret.as_str(),
            t.den.as_str(),
            "!nowhere:elsewhere.org"
        ],
        "children with a non-empty via, in order"
    );
    for child in children {
        assert_eq!(child["type"], "m.space.child");
        assert_eq!(child["sender"], "@alice:localhost");
        assert!(child["origin_server_ts"].as_u64().is_some());
        assert!(child.get("event_id").is_none(), "stripped: {child}");
    }
    let kitchen = &page["rooms"][3];
    assert_eq!(kitchen["topic"], "Food");
    assert_eq!(kitchen["children_state"], json!([]), "not a space");
    assert!(kitchen.get("room_type").is_none());
    let den = &page["rooms"][5];
    assert_eq!(den["join_rule"], "restricted");
    assert_eq!(den["allowed_room_ids"], json!([t.family]));

    // Bob is in nothing: he sees the public rooms, not the private one, nor (until he is in
    // the space) the restricted one.
    assert_eq!(
        ids(&ok(f.hierarchy(&t.family, "", &bob))),
        owned(&[&t.family, &t.projects, &t.garden, &t.kitchen])
    );
    ok(f.client.json(
        "POST",
        &format!("/_matrix/client/v3/join/{}", t.family),
        Some(&bob),
        &json!({}),
    ));
    assert_eq!(
        ids(&ok(f.hierarchy(&t.family, "", &bob))),
        owned(&[&t.family, &t.projects, &t.garden, &t.kitchen, &t.den])
    );

    // Room summaries answer by the same rule: a public room that is not published, and a
    // restricted one once Bob is in the space that allows him, but not a private room.
    let summary = |f: &mut Family, room: &str| {
        f.client.get_with(
            &format!("/_matrix/client/v1/room_summary/{room}"),
            &f.bob.clone(),
        )
    };
    assert_eq!(ok(summary(&mut f, &t.kitchen))["name"], "Kitchen");
    let den = ok(summary(&mut f, &t.den));
    assert_eq!(den["allowed_room_ids"], json!([t.family]));
    assert!(den.get("membership").is_none());
    assert_eq!(summary(&mut f, &t.secret).status, 404);

    // Filters.
    assert_eq!(
        ids(&ok(f.hierarchy(&t.family, "?max_depth=0", &alice))),
        owned(&[&t.family])
    );
    assert_eq!(
        ids(&ok(f.hierarchy(&t.family, "?max_depth=1", &alice))),
        owned(&[&t.family, &t.projects, &t.kitchen, &t.secret, &t.den])
    );
    assert_eq!(
        ids(&ok(f.hierarchy(&t.family, "?suggested_only=true", &alice))),
        owned(&[&t.family, &t.kitchen])
    );
    // A room that is no space is its own whole hierarchy; a sub-space is a root too.
    assert_eq!(
        ids(&ok(f.hierarchy(&t.kitchen, "", &alice))),
        owned(&[&t.kitchen])
    );
    assert_eq!(
        ids(&ok(f.hierarchy(&t.projects, "", &alice))),
        owned(&[
            &t.projects,
            &t.garden,
            &t.family,
            &t.kitchen,
            &t.secret,
            &t.den
        ])
    );
}

#[test]
fn hierarchy_pages_and_refuses_bad_requests() {
    let mut f = Family::start();
    let t = build_tree(&mut f);
    let alice = f.alice.clone();
    let bob = f.bob.clone();
    let everything = ids(&ok(f.hierarchy(&t.family, "", &alice)));

    // Two rooms a page, until there is no next_batch; together the whole walk.
    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let page = ok(f.hierarchy(&t.family, &query, &alice));
        assert!(ids(&page).len() <= 2);
        seen.extend(ids(&page));
        pages += 1;
        match page["next_batch"].as_str() {
            Some(next) => query = format!("?limit=2&from={next}"),
            None => break,
        }
        assert!(pages < 10, "pagination must end");
    }
    assert_eq!(seen, everything);
    assert_eq!(pages, 3);

    // The settings of a walk cannot change between pages; tokens are checked.
    let page = ok(f.hierarchy(&t.family, "?limit=1&max_depth=1", &alice));
    let next = page["next_batch"].as_str().expect("next_batch").to_owned();
    let second = ok(f.hierarchy(&t.family, &format!("?from={next}"), &alice));
    assert_eq!(
        ids(&second),
        owned(&[&t.projects, &t.kitchen, &t.secret, &t.den]),
        "the token keeps max_depth (the limit is each page's own)"
    );
    for query in [
        format!("?from={next}&max_depth=2"),
        format!("?from={next}&suggested_only=true"),
        "?from=garbage".to_owned(),
        "?from=h1_1_1_0_0000000000000000".to_owned(),
        "?limit=0".to_owned(),
        "?limit=-1".to_owned(),
        "?max_depth=deep".to_owned(),
        "?suggested_only=maybe".to_owned(),
    ] {
        let response = f.hierarchy(&t.family, &query, &alice);
        assert_eq!(response.status, 400, "{query}");
        assert_eq!(errcode(&response), "M_INVALID_PARAM", "{query}");
    }
    let response = f.hierarchy(&t.projects, &format!("?from={next}"), &alice);
    assert_eq!(
        response.status, 400,
        "a token is only good for its own space"
    );
    // A huge limit is clamped, not refused.
    assert_eq!(
        ids(&ok(f.hierarchy(&t.family, "?limit=100000", &alice))),
        everything
    );

    // A root one may not see, or that does not exist, is forbidden (spec: 403).
    for room in [t.secret.as_str(), "!nope:localhost"] {
        let response = f.hierarchy(room, "", &bob);
        assert_eq!(response.status, 403, "{room}");
        assert_eq!(errcode(&response), "M_FORBIDDEN");
    }
    let response = f.hierarchy("not-a-room", "", &bob);
    assert_eq!(response.status, 400);
    assert_eq!(errcode(&response), "M_INVALID_PARAM");
    assert_eq!(
        f.client
            .get(&format!("/_matrix/client/v1/rooms/{}/hierarchy", t.family))
            .status,
        401
    );
}
