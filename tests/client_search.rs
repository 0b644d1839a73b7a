//! `/search` over room events: rank and recent order, pages, event context with profiles,
//! room state, groups, filters, who sees what, and the requests that are refused.

mod common;

use common::{Server, errcode, ok, query_encode, test_config};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// Alice and Bob in "Kitchen", Alice alone in "Cake Garden", Carol in neither.
struct World {
    server: Server,
    alice: String,
    bob: String,
    carol: String,
    kitchen: String,
    garden: String,
}

fn login(server: &Server, user: &str) -> String {
    common::login_token(server, user, PASSWORD)
}

fn create_room(server: &Server, token: &str, body: Value) -> String {
    ok(server
        .client()
        .json("POST", "/_matrix/client/v3/createRoom", Some(token), &body))["room_id"]
        .as_str()
        .expect("room")
        .to_owned()
}

fn send(server: &Server, token: &str, room: &str, txn: &str, body: &str) -> String {
    ok(server.client().json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
        Some(token),
        &json!({ "msgtype": "m.text", "body": body }),
    ))["event_id"]
        .as_str()
        .expect("event id")
        .to_owned()
}

fn set_displayname(server: &Server, token: &str, user: &str, name: &str) {
    ok(server.client().json(
        "PUT",
        &format!("/_matrix/client/v3/profile/{user}/displayname"),
        Some(token),
        &json!({ "displayname": name }),
    ));
}

/// Kitchen messages, oldest first: "cake cake cake is the best cake" (Alice), "I like
/// cheesecake" (Bob), "cakes for everyone" (Alice), "just cake" (Bob), "nothing here" (Bob).
fn world() -> World {
    let server = Server::start_with_users(
        &test_config("[limits]\nauth_attempts_per_minute = 100000\n"),
        &[("alice", PASSWORD), ("bob", PASSWORD), ("carol", PASSWORD)],
    );
    let alice = login(&server, "alice");
    let bob = login(&server, "bob");
    let carol = login(&server, "carol");
    set_displayname(&server, &alice, "@alice:localhost", "Alice Before");
    let kitchen = create_room(
        &server,
        &alice,
        json!({ "name": "Kitchen", "invite": ["@bob:localhost"] }),
    );
    ok(server.client().json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{kitchen}/join"),
        Some(&bob),
        &json!({}),
    ));
    let garden = create_room(&server, &alice, json!({ "name": "Cake Garden" }));
    send(
        &server,
        &alice,
        &kitchen,
        "1",
        "cake cake cake is the best cake",
    );
    send(&server, &bob, &kitchen, "2", "I like cheesecake");
    send(&server, &alice, &kitchen, "3", "cakes for everyone");
    send(&server, &bob, &kitchen, "4", "just cake");
    send(&server, &bob, &kitchen, "5", "nothing here");
    World {
        server,
        alice,
        bob,
        carol,
        kitchen,
        garden,
    }
}

/// The raw answer to a search with `criteria`, from `next_batch` when given.
fn search_raw(
    server: &Server,
    token: &str,
    criteria: Value,
    next_batch: Option<&str>,
) -> common::http::Response {
    let path = match next_batch {
        Some(next) => format!(
            "/_matrix/client/v3/search?next_batch={}",
            query_encode(next)
        ),
        None => "/_matrix/client/v3/search".to_owned(),
    };
    server.client().json(
        "POST",
        &path,
        Some(token),
        &json!({ "search_categories": { "room_events": criteria } }),
    )
}

fn search(server: &Server, token: &str, criteria: Value, next_batch: Option<&str>) -> Value {
    ok(search_raw(server, token, criteria, next_batch))["search_categories"]["room_events"].clone()
}

/// What each result says: its message body, or the room name it set.
fn texts(room_events: &Value) -> Vec<String> {
    room_events["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            let content = &r["result"]["content"];
            content["body"]
                .as_str()
                .or(content["name"].as_str())
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// Every page of a search, following `next_batch` (and checking `count` stays the same).
fn all_pages(server: &Server, token: &str, criteria: Value) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let page = search(server, token, criteria.clone(), next.as_deref());
        assert_eq!(page["count"], 5, "count on every page: {page}");
        pages.push(texts(&page));
        match page["next_batch"].as_str() {
            Some(token) => next = Some(token.to_owned()),
            None => return pages,
        }
        assert!(pages.len() < 10, "pagination ends");
    }
}

#[test]
fn rank_and_recent_orders_paginate_to_the_end() {
    let w = world();
    // Rank: repeated whole words, then a room name, then whole word, prefix, infix.
    let ranked = search(&w.server, &w.alice, json!({ "search_term": "cake" }), None);
    assert_eq!(
        texts(&ranked),
        vec![
            "cake cake cake is the best cake",
            "Cake Garden",
            "just cake",
            "cakes for everyone",
            "I like cheesecake",
        ],
        "rank is the default order"
    );
    let ranks: Vec<f64> = ranked["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["rank"].as_f64().expect("rank"))
        .collect();
    assert!(ranks.windows(2).all(|pair| pair[0] > pair[1]), "{ranks:?}");
    let mut highlights: Vec<&str> = ranked["highlights"]
        .as_array()
        .expect("highlights")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    highlights.sort_unstable();
    assert_eq!(highlights, vec!["cake", "cakes", "cheesecake"]);
    assert!(ranked.get("next_batch").is_none(), "all on one page");

    let recent = search(
        &w.server,
        &w.alice,
        json!({ "search_term": "cake", "order_by": "recent" }),
        None,
    );
    assert_eq!(
        texts(&recent),
        vec![
            "just cake",
            "cakes for everyone",
            "I like cheesecake",
            "cake cake cake is the best cake",
            "Cake Garden",
        ]
    );

    let pages = all_pages(
        &w.server,
        &w.alice,
        json!({ "search_term": "cake", "filter": { "limit": 2 } }),
    );
    assert_eq!(
        pages,
        vec![
            texts(&ranked)[..2].to_vec(),
            texts(&ranked)[2..4].to_vec(),
            texts(&ranked)[4..].to_vec()
        ]
    );
    let pages = all_pages(
        &w.server,
        &w.alice,
        json!({ "search_term": "cake", "order_by": "recent", "filter": { "limit": 2 } }),
    );
    assert_eq!(pages.concat(), texts(&recent));
    assert_eq!(pages.len(), 3);

    // Only the keys asked for; every word must occur.
    let names = search(
        &w.server,
        &w.alice,
        json!({ "search_term": "cake", "keys": ["content.name"] }),
        None,
    );
    assert_eq!(texts(&names), vec!["Cake Garden"]);
    let both = search(
        &w.server,
        &w.alice,
        json!({ "search_term": "CAKE everyone" }),
        None,
    );
    assert_eq!(texts(&both), vec!["cakes for everyone"]);
}

#[test]
fn context_profiles_state_and_groups() {
    let w = world();
    set_displayname(&w.server, &w.alice, "@alice:localhost", "Alice After");
    let found = search(
        &w.server,
        &w.bob,
        json!({
            "search_term": "everyone",
            "event_context": { "before_limit": 1, "after_limit": 1, "include_profile": true },
            "include_state": true,
        }),
        None,
    );
    let result = &found["results"][0];
    assert_eq!(result["result"]["room_id"], w.kitchen.as_str());
    let context = &result["context"];
    assert_eq!(
        context["events_before"][0]["content"]["body"],
        "I like cheesecake"
    );
    assert_eq!(context["events_before"].as_array().map(Vec::len), Some(1));
    assert_eq!(context["events_after"][0]["content"]["body"], "just cake");
    assert_eq!(
        context["profile_info"]["@alice:localhost"]["displayname"], "Alice Before",
        "the profile when the message was sent"
    );
    assert!(context["profile_info"]["@bob:localhost"].is_object());
    // The tokens continue the context with /messages.
    let start = context["start"].as_str().expect("start");
    let end = context["end"].as_str().expect("end");
    let mut client = w.server.client();
    let earlier = ok(client.get_with(
        &format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1&from={start}",
            w.kitchen
        ),
        &w.bob,
    ));
    assert_eq!(
        earlier["chunk"][0]["content"]["body"],
        "cake cake cake is the best cake"
    );
    let later = ok(client.get_with(
        &format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=f&limit=1&from={end}",
            w.kitchen
        ),
        &w.bob,
    ));
    assert_eq!(later["chunk"][0]["content"]["body"], "nothing here");
    // The state of the rooms with results, and of no other.
    let states = found["state"].as_object().expect("state");
    assert_eq!(states.len(), 1);
    let kitchen_state = states[&w.kitchen].as_array().expect("kitchen state");
    assert!(
        kitchen_state
            .iter()
            .any(|event| event["type"] == "m.room.name" && event["content"]["name"] == "Kitchen")
    );

    // Groups: by room and by sender, with tokens that continue within a group.
    let criteria = json!({
        "search_term": "cake",
        "filter": { "limit": 2 },
        "groupings": { "group_by": [ { "key": "room_id" }, { "key": "sender" } ] },
    });
    let grouped = search(&w.server, &w.alice, criteria.clone(), None);
    let ids: Vec<&str> = grouped["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["result"]["event_id"].as_str())
        .collect();
    let by_room = &grouped["groups"]["room_id"];
    assert_eq!(by_room[&w.kitchen]["order"], 1);
    assert_eq!(by_room[&w.kitchen]["results"], json!([ids[0]]));
    assert_eq!(by_room[&w.garden]["order"], 2);
    assert_eq!(by_room[&w.garden]["results"], json!([ids[1]]));
    assert!(by_room[&w.garden].get("next_batch").is_none());
    assert_eq!(
        grouped["groups"]["sender"]["@alice:localhost"]["results"],
        json!(ids)
    );
    let in_kitchen = by_room[&w.kitchen]["next_batch"]
        .as_str()
        .expect("more in the kitchen");
    let more = search(&w.server, &w.alice, criteria.clone(), Some(in_kitchen));
    assert_eq!(texts(&more), vec!["just cake", "cakes for everyone"]);
    assert_eq!(
        more["groups"]["room_id"]
            .as_object()
            .map(|groups| groups.len()),
        Some(1),
        "only the kitchen"
    );
    let last = search(&w.server, &w.alice, criteria, more["next_batch"].as_str());
    assert_eq!(texts(&last), vec!["I like cheesecake"]);
    assert!(last.get("next_batch").is_none());
}

#[test]
fn filters_and_what_each_user_may_see() {
    let w = world();
    let by_bob = search(
        &w.server,
        &w.alice,
        json!({ "search_term": "cake", "order_by": "recent",
                "filter": { "senders": ["@bob:localhost"] } }),
        None,
    );
    assert_eq!(texts(&by_bob), vec!["just cake", "I like cheesecake"]);
    let in_garden = search(
        &w.server,
        &w.alice,
        json!({ "search_term": "cake", "filter": { "rooms": [w.garden] } }),
        None,
    );
    assert_eq!(texts(&in_garden), vec!["Cake Garden"]);
    let not_garden = search(
        &w.server,
        &w.alice,
        json!({ "search_term": "cake", "filter": { "not_rooms": [w.garden], "types": ["m.room.name"] } }),
        None,
    );
    assert_eq!(not_garden["count"], 0);

    // Carol is in no room; Bob is not in the garden.
    let carol = search(&w.server, &w.carol, json!({ "search_term": "cake" }), None);
    assert_eq!((carol["count"].clone(), texts(&carol).len()), (json!(0), 0));
    let bob = search(&w.server, &w.bob, json!({ "search_term": "cake" }), None);
    assert_eq!(bob["count"], 4);
    assert!(!texts(&bob).contains(&"Cake Garden".to_owned()));

    // Redacted events are not found by the words they had.
    let best = search(&w.server, &w.alice, json!({ "search_term": "best" }), None);
    let best_id = best["results"][0]["result"]["event_id"]
        .as_str()
        .expect("found")
        .to_owned();
    ok(w.server.client().json(
        "PUT",
        &format!(
            "/_matrix/client/v3/rooms/{}/redact/{}/r1",
            w.kitchen,
            query_encode(&best_id)
        ),
        Some(&w.alice),
        &json!({ "reason": "typo" }),
    ));
    let after = search(&w.server, &w.alice, json!({ "search_term": "best" }), None);
    assert_eq!(after["count"], 0);

    // A former member finds what they could read, not what came after they left.
    ok(w.server.client().json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{}/leave", w.kitchen),
        Some(&w.bob),
        &json!({}),
    ));
    send(&w.server, &w.alice, &w.kitchen, "6", "cake after bob left");
    let left = search(
        &w.server,
        &w.bob,
        json!({ "search_term": "cake", "order_by": "recent" }),
        None,
    );
    assert_eq!(texts(&left)[0], "just cake");
    assert_eq!(left["count"], 3, "the redacted one is gone too");
}

#[test]
fn malformed_requests_are_refused() {
    let w = world();
    let refused = |criteria: Value, next: Option<&str>| {
        let response = search_raw(&w.server, &w.alice, criteria, next);
        (response.status, errcode(&response))
    };
    let invalid = (400, "M_INVALID_PARAM".to_owned());
    let bad_json = (400, "M_BAD_JSON".to_owned());
    assert_eq!(
        refused(json!({ "search_term": "cake" }), Some("garbage")),
        invalid
    );
    assert_eq!(
        refused(json!({ "search_term": "cake" }), Some("12")),
        invalid
    );
    let page = search(
        &w.server,
        &w.alice,
        json!({ "search_term": "cake", "filter": { "limit": 1 } }),
        None,
    );
    let rank_token = page["next_batch"].as_str().expect("more");
    assert_eq!(
        refused(
            json!({ "search_term": "cake", "order_by": "recent" }),
            Some(rank_token)
        ),
        invalid,
        "a token is for the order it was made for"
    );
    assert_eq!(refused(json!({ "search_term": "?!" }), None), invalid);
    // Enums and types are checked while reading the body: M_BAD_JSON.
    assert_eq!(
        refused(
            json!({ "search_term": "cake", "order_by": "sideways" }),
            None
        ),
        bad_json
    );
    assert_eq!(
        refused(
            json!({ "search_term": "cake", "keys": ["content.url"] }),
            None
        ),
        bad_json
    );
    assert_eq!(refused(json!({ "search_term": 5 }), None), bad_json);
    assert_eq!(
        refused(
            json!({ "search_term": "cake", "filter": { "limit": "ten" } }),
            None
        ),
        bad_json
    );
    assert_eq!(
        refused(
            json!({ "search_term": "cake", "filter": { "senders": "@bob:localhost" } }),
            None
        ),
        bad_json
    );
    assert_eq!(
        refused(
            json!({ "search_term": "cake", "event_context": { "before_limit": -1 } }),
            None
        ),
        bad_json
    );
    assert_eq!(
        refused(
            json!({ "search_term": "cake", "groupings": { "group_by": [ { "key": "origin" } ] } }),
            None
        ),
        bad_json
    );
    // Huge limits are clamped, not refused.
    let all = search(
        &w.server,
        &w.alice,
        json!({ "search_term": "cake", "filter": { "limit": 100000 } }),
        None,
    );
    assert_eq!(texts(&all).len(), 5);
}
