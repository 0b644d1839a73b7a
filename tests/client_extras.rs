//! Tags, event context, timestamp lookup, the user directory, OpenID tokens, rooms in
//! common, room summaries and third-party lookups.

mod common;

use common::ok;

use common::{Server, test_config};
use serde_json::json;

const PASSWORD: &str = "correct horse battery";

fn login(server: &Server, user: &str) -> String {
    common::login_token(server, user, PASSWORD)
}

#[test]
fn around_rooms_and_users() {
    let server = Server::start_with_users(
        &test_config("[limits]\nauth_attempts_per_minute = 100000\n"),
        &[("alice", PASSWORD), ("bob", PASSWORD), ("carol", PASSWORD)],
    );
    let alice = login(&server, "alice");
    let bob = login(&server, "bob");
    let carol = login(&server, "carol");
    let mut client = server.client();
    let room = ok(client.json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&alice),
        &json!({ "invite": ["@bob:localhost"], "name": "Kitchen" }),
    ))["room_id"]
        .as_str()
        .expect("room")
        .to_owned();
    ok(client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/join"),
        Some(&bob),
        &json!({}),
    ));
    let mut ids = Vec::new();
    for i in 0..5 {
        std::thread::sleep(std::time::Duration::from_millis(5));
        let id = ok(client.json(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/c{i}"),
            Some(&alice),
            &json!({ "msgtype": "m.text", "body": format!("m{i}") }),
        ))["event_id"]
            .as_str()
            .expect("id")
            .to_owned();
        ids.push(id);
    }

    // Tags.
    let tag_path = format!("/_matrix/client/v3/user/@alice:localhost/rooms/{room}/tags");
    ok(client.json(
        "PUT",
        &format!("{tag_path}/m.favourite"),
        Some(&alice),
        &json!({ "order": 0.5 }),
    ));
    assert_eq!(
        ok(client.get_with(&tag_path, &alice))["tags"]["m.favourite"]["order"],
        0.5
    );
    ok(client
        .request(
            "DELETE",
            &format!("{tag_path}/m.favourite"),
            &[("Authorization", &format!("Bearer {alice}"))],
            None,
        )
        .expect("delete"));
    assert_eq!(ok(client.get_with(&tag_path, &alice))["tags"], json!({}));

    // Context around the middle message.
    let context = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/context/{}?limit=2", ids[2]),
        &alice,
    ));
    assert_eq!(context["event"]["content"]["body"], "m2");
    assert_eq!(context["events_before"][0]["content"]["body"], "m1");
    assert_eq!(context["events_after"][0]["content"]["body"], "m3");
    assert!(
        context["state"]
            .as_array()
            .expect("state")
            .iter()
            .any(|e| e["type"] == "m.room.name")
    );

    // The event at a time.
    let third = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/event/{}", ids[3]),
        &alice,
    ));
    let ts = third["origin_server_ts"].as_u64().expect("ts");
    let found = ok(client.get_with(
        &format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={ts}&dir=f"),
        &alice,
    ));
    assert_eq!(found["event_id"], ids[3]);
    let none = client.get_with(
        &format!(
            "/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={}&dir=f",
            ts + 10_000_000
        ),
        &alice,
    );
    assert_eq!(none.status, 404);

    // The user directory shows people one shares a room with, not strangers.
    ok(client.json(
        "PUT",
        "/_matrix/client/v3/profile/@bob:localhost/displayname",
        Some(&bob),
        &json!({ "displayname": "Bobby" }),
    ));
    let found = ok(client.json(
        "POST",
        "/_matrix/client/v3/user_directory/search",
        Some(&alice),
        &json!({ "search_term": "bobb" }),
    ));
    assert_eq!(found["results"][0]["user_id"], "@bob:localhost");
    assert_eq!(found["results"][0]["displayname"], "Bobby");
    let stranger = ok(client.json(
        "POST",
        "/_matrix/client/v3/user_directory/search",
        Some(&carol),
        &json!({ "search_term": "bob" }),
    ));
    assert!(stranger["results"].as_array().expect("results").is_empty());

    // Rooms in common, and summaries.
    assert_eq!(
        ok(client.get_with(
            "/_matrix/client/v1/mutual_rooms?user_id=@bob:localhost",
            &alice
        ))["joined"],
        json!([room])
    );
    let summary = ok(client.get_with(&format!("/_matrix/client/v1/room_summary/{room}"), &bob));
    assert_eq!(summary["name"], "Kitchen");
    assert_eq!(summary["num_joined_members"], 2);
    assert_eq!(summary["membership"], "join");
    assert_eq!(
        client
            .get_with(&format!("/_matrix/client/v1/room_summary/{room}"), &carol)
            .status,
        404,
        "a room one may not see does not exist"
    );

    // OpenID tokens, reports, third-party lookups, support contacts.
    let openid = ok(client.json(
        "POST",
        "/_matrix/client/v3/user/@alice:localhost/openid/request_token",
        Some(&alice),
        &json!({}),
    ));
    assert_eq!(openid["token_type"], "Bearer");
    assert_eq!(openid["matrix_server_name"], "localhost");
    assert_eq!(
        client
            .json(
                "POST",
                "/_matrix/client/v3/user/@bob:localhost/openid/request_token",
                Some(&alice),
                &json!({})
            )
            .status,
        403
    );
    ok(client.json(
        "POST",
        "/_matrix/client/v3/users/@bob:localhost/report",
        Some(&alice),
        &json!({ "reason": "test" }),
    ));
    assert!(server.wait_for_log("user reported"));
    assert_eq!(
        client
            .get_with("/_matrix/client/v3/thirdparty/protocol/irc", &alice)
            .status,
        404
    );
    assert_eq!(
        ok(client.get_with("/_matrix/client/v3/thirdparty/location", &alice)),
        json!([])
    );
    assert_eq!(
        client.get("/.well-known/matrix/support").json()["errcode"],
        "M_NOT_FOUND"
    );
}

#[test]
fn search_finds_messages_in_ones_own_rooms_newest_first() {
    let server = Server::start_with_users(
        &test_config("[limits]\nauth_attempts_per_minute = 100000\n"),
        &[("alice", PASSWORD), ("bob", PASSWORD)],
    );
    let alice = login(&server, "alice");
    let bob = login(&server, "bob");
    let mut client = server.client();
    let room = ok(client.json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&alice),
        &json!({ "name": "Recipes" }),
    ))["room_id"]
        .as_str()
        .expect("room")
        .to_owned();
    for (i, body) in [
        "Chocolate cake recipe",
        "buy flour",
        "the CAKE was great",
        "cake photos soon",
    ]
    .iter()
    .enumerate()
    {
        ok(client.json(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/s{i}"),
            Some(&alice),
            &json!({ "msgtype": "m.text", "body": body }),
        ));
    }
    let search = |client: &mut common::http::Client,
                  token: &str,
                  term: &str,
                  next: Option<&str>| {
        let path = match next {
            Some(next) => format!("/_matrix/client/v3/search?next_batch={next}"),
            None => "/_matrix/client/v3/search".to_owned(),
        };
        ok(client.json(
            "POST",
            &path,
            Some(token),
            &json!({ "search_categories": { "room_events": { "search_term": term, "order_by": "recent", "filter": { "limit": 2 } } } }),
        ))
    };
    let first = search(&mut client, &alice, "cake", None);
    let events = &first["search_categories"]["room_events"];
    assert_eq!(events["count"], 3);
    let bodies: Vec<&str> = events["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["result"]["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, vec!["cake photos soon", "the CAKE was great"]);
    let next = events["next_batch"].as_str().expect("more").to_owned();
    let second = search(&mut client, &alice, "cake", Some(&next));
    assert_eq!(
        second["search_categories"]["room_events"]["results"][0]["result"]["content"]["body"],
        "Chocolate cake recipe"
    );
    assert_eq!(
        search(&mut client, &alice, "recipes", None)["search_categories"]["room_events"]["count"],
        1,
        "room names are searched"
    );
    assert_eq!(
        search(&mut client, &bob, "cake", None)["search_categories"]["room_events"]["count"],
        0,
        "not bob's room"
    );
}

#[test]
fn honest_answers_for_what_this_server_does_not_do() {
    let server = Server::start_with_users(
        &test_config("[limits]\nauth_attempts_per_minute = 100000\n"),
        &[("alice", PASSWORD), ("bob", PASSWORD)],
    );
    let alice = login(&server, "alice");
    let mut client = server.client();
    let email = client.json(
        "POST",
        "/_matrix/client/v3/register/email/requestToken",
        None,
        &json!({ "client_secret": "x", "email": "a@b.c", "send_attempt": 1 }),
    );
    assert_eq!(common::errcode(&email), "M_THREEPID_DENIED");
    let refresh = client.json(
        "POST",
        "/_matrix/client/v3/refresh",
        None,
        &json!({ "refresh_token": "anything" }),
    );
    assert_eq!(
        (refresh.status, common::errcode(&refresh)),
        (401, "M_UNKNOWN_TOKEN".to_owned())
    );
    assert_eq!(
        ok(client.get_with("/_matrix/client/v3/voip/turnServer", &alice)),
        json!({})
    );
    let whois = ok(client.get_with("/_matrix/client/v3/admin/whois/@alice:localhost", &alice));
    assert_eq!(whois["user_id"], "@alice:localhost");
    assert_eq!(whois["devices"].as_object().expect("devices").len(), 1);
    assert_eq!(
        client
            .get_with("/_matrix/client/v3/admin/whois/@bob:localhost", &alice)
            .status,
        403,
        "alice is no admin"
    );
}
