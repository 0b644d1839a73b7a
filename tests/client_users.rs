//! Profiles, account data, filters and capabilities through the client API.

mod common;

use common::{errcode, ok};

use common::http::Client;
use common::{Server, test_config};
use serde_json::json;

const PASSWORD: &str = "correct horse battery";

fn login(server: &Server, user: &str) -> String {
    common::login_token(server, user, PASSWORD)
}

fn server() -> Server {
    Server::start_with_users(
        &test_config("[limits]\nauth_attempts_per_minute = 100000\n"),
        &[("alice", PASSWORD), ("bob", PASSWORD)],
    )
}

#[test]
fn capabilities_are_truthful() {
    let server = server();
    let alice = login(&server, "alice");
    let capabilities = ok(server
        .client()
        .get_with("/_matrix/client/v3/capabilities", &alice));
    let caps = &capabilities["capabilities"];
    assert_eq!(caps["m.room_versions"]["default"], "12");
    assert_eq!(caps["m.room_versions"]["available"]["1"], "stable");
    assert_eq!(caps["m.change_password"]["enabled"], true);
    assert_eq!(caps["m.3pid_changes"]["enabled"], false);
}

#[test]
fn profiles_reach_room_memberships() {
    let server = server();
    let alice = login(&server, "alice");
    let bob = login(&server, "bob");
    let mut client: Client = server.client();
    let room = ok(client.json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&alice),
        &json!({}),
    ))["room_id"]
        .as_str()
        .expect("room")
        .to_owned();
    ok(client.json(
        "PUT",
        "/_matrix/client/v3/profile/@alice:localhost/displayname",
        Some(&alice),
        &json!({ "displayname": "Alice" }),
    ));
    ok(client.json(
        "PUT",
        "/_matrix/client/v3/profile/@alice:localhost/avatar_url",
        Some(&alice),
        &json!({ "avatar_url": "mxc://localhost/abc" }),
    ));
    let profile = ok(client.get("/_matrix/client/v3/profile/@alice:localhost"));
    assert_eq!(
        profile,
        json!({ "displayname": "Alice", "avatar_url": "mxc://localhost/abc" })
    );
    assert_eq!(
        ok(client.get("/_matrix/client/v3/profile/@alice:localhost/displayname")),
        json!({ "displayname": "Alice" })
    );
    let member = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/@alice:localhost"),
        &alice,
    ));
    assert_eq!(member["displayname"], "Alice");
    assert_eq!(member["membership"], "join");

    let others = client.json(
        "PUT",
        "/_matrix/client/v3/profile/@alice:localhost/displayname",
        Some(&bob),
        &json!({ "displayname": "Mallory" }),
    );
    assert_eq!(others.status, 403);
    let bad_avatar = client.json(
        "PUT",
        "/_matrix/client/v3/profile/@bob:localhost/avatar_url",
        Some(&bob),
        &json!({ "avatar_url": "https://x" }),
    );
    assert_eq!(errcode(&bad_avatar), "M_INVALID_PARAM");
    let unknown = client.get("/_matrix/client/v3/profile/@nobody:localhost");
    assert_eq!(unknown.status, 404);
    ok(client
        .request(
            "DELETE",
            "/_matrix/client/v3/profile/@alice:localhost/avatar_url",
            &[("Authorization", &format!("Bearer {alice}"))],
            None,
        )
        .expect("delete"));
    assert_eq!(
        ok(client.get("/_matrix/client/v3/profile/@alice:localhost")),
        json!({ "displayname": "Alice" })
    );
}

#[test]
fn account_data_is_stored_and_synced() {
    let server = server();
    let alice = login(&server, "alice");
    let bob = login(&server, "bob");
    let mut client = server.client();
    let room = ok(client.json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&alice),
        &json!({}),
    ))["room_id"]
        .as_str()
        .expect("room")
        .to_owned();
    let since = ok(client.get_with("/_matrix/client/v3/sync", &alice))["next_batch"]
        .as_str()
        .expect("batch")
        .to_owned();
    let direct = json!({ "@bob:localhost": [room] });
    ok(client.json(
        "PUT",
        "/_matrix/client/v3/user/@alice:localhost/account_data/m.direct",
        Some(&alice),
        &direct,
    ));
    ok(client.json(
        "PUT",
        &format!("/_matrix/client/v3/user/@alice:localhost/rooms/{room}/account_data/m.tag"),
        Some(&alice),
        &json!({ "tags": { "m.favourite": {} } }),
    ));
    assert_eq!(
        ok(client.get_with(
            "/_matrix/client/v3/user/@alice:localhost/account_data/m.direct",
            &alice
        )),
        direct
    );
    let synced = ok(client.get_with(
        &format!("/_matrix/client/v3/sync?since={since}&timeout=5000"),
        &alice,
    ));
    assert_eq!(synced["account_data"]["events"][0]["type"], "m.direct");
    assert_eq!(
        synced["rooms"]["join"][&room]["account_data"]["events"][0]["type"],
        "m.tag"
    );
    let next = synced["next_batch"].as_str().expect("batch");
    let quiet = ok(client.get_with(&format!("/_matrix/client/v3/sync?since={next}"), &alice));
    assert!(
        quiet["account_data"]["events"]
            .as_array()
            .expect("events")
            .is_empty()
    );

    let missing = client.get_with(
        "/_matrix/client/v3/user/@alice:localhost/account_data/m.nothing",
        &alice,
    );
    assert_eq!(errcode(&missing), "M_NOT_FOUND");
    let others = client.get_with(
        "/_matrix/client/v3/user/@alice:localhost/account_data/m.direct",
        &bob,
    );
    assert_eq!(others.status, 403);
    let managed = client.json(
        "PUT",
        "/_matrix/client/v3/user/@alice:localhost/account_data/m.fully_read",
        Some(&alice),
        &json!({}),
    );
    assert_eq!(errcode(&managed), "M_BAD_JSON");
    let not_in_room = client.json(
        "PUT",
        &format!("/_matrix/client/v3/user/@bob:localhost/rooms/{room}/account_data/m.tag"),
        Some(&bob),
        &json!({ "tags": {} }),
    );
    assert_eq!(not_in_room.status, 403);
}

#[test]
fn stored_filters_round_trip_and_shape_sync() {
    let server = server();
    let alice = login(&server, "alice");
    let mut client = server.client();
    let filter = json!({ "room": { "timeline": { "limit": 2 } } });
    let id = ok(client.json(
        "POST",
        "/_matrix/client/v3/user/@alice:localhost/filter",
        Some(&alice),
        &filter,
    ))["filter_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let again = ok(client.json(
        "POST",
        "/_matrix/client/v3/user/@alice:localhost/filter",
        Some(&alice),
        &filter,
    ))["filter_id"]
        .clone();
    assert_eq!(again, json!(id), "the same filter, the same ID");
    assert_eq!(
        ok(client.get_with(
            &format!("/_matrix/client/v3/user/@alice:localhost/filter/{id}"),
            &alice
        )),
        filter
    );
    let room = ok(client.json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&alice),
        &json!({}),
    ))["room_id"]
        .as_str()
        .expect("room")
        .to_owned();
    let synced = ok(client.get_with(&format!("/_matrix/client/v3/sync?filter={id}"), &alice));
    assert_eq!(
        synced["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .expect("events")
            .len(),
        2
    );
    let unknown = client.get_with("/_matrix/client/v3/sync?filter=nope", &alice);
    assert_eq!(errcode(&unknown), "M_INVALID_PARAM");
}

#[test]
fn presence_is_set_shared_and_synced() {
    let server = server();
    let alice = login(&server, "alice");
    let bob = login(&server, "bob");
    let mut client = server.client();
    // No shared room yet: Bob cannot see Alice's presence.
    ok(client.json(
        "PUT",
        "/_matrix/client/v3/presence/@alice:localhost/status",
        Some(&alice),
        &json!({ "presence": "online", "status_msg": "baking" }),
    ));
    let hidden = client.get_with("/_matrix/client/v3/presence/@alice:localhost/status", &bob);
    assert_eq!(hidden.status, 403);
    let room = ok(client.json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&alice),
        &json!({ "invite": ["@bob:localhost"] }),
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
    let seen = ok(client.get_with("/_matrix/client/v3/presence/@alice:localhost/status", &bob));
    assert_eq!(seen["presence"], "online");
    assert_eq!(seen["status_msg"], "baking");
    assert_eq!(seen["currently_active"], true);

    let first = ok(client.get_with("/_matrix/client/v3/sync?set_presence=offline", &bob));
    let senders: Vec<&str> = first["presence"]["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["sender"].as_str())
        .collect();
    assert!(senders.contains(&"@alice:localhost"), "{senders:?}");
    let since = first["next_batch"].as_str().expect("batch").to_owned();
    ok(client.json(
        "PUT",
        "/_matrix/client/v3/presence/@alice:localhost/status",
        Some(&alice),
        &json!({ "presence": "unavailable" }),
    ));
    let next = ok(client.get_with(
        &format!("/_matrix/client/v3/sync?since={since}&timeout=5000&set_presence=offline"),
        &bob,
    ));
    let update = &next["presence"]["events"][0];
    assert_eq!(update["sender"], "@alice:localhost");
    assert_eq!(update["content"]["presence"], "unavailable");
    let bad = client.json(
        "PUT",
        "/_matrix/client/v3/presence/@alice:localhost/status",
        Some(&alice),
        &json!({ "presence": "asleep" }),
    );
    assert_eq!(errcode(&bad), "M_INVALID_PARAM");
    let others = client.json(
        "PUT",
        "/_matrix/client/v3/presence/@alice:localhost/status",
        Some(&bob),
        &json!({ "presence": "offline" }),
    );
    assert_eq!(others.status, 403);
}

#[test]
fn push_rules_start_from_the_defaults_and_pushers_are_kept() {
    let server = server();
    let alice = login(&server, "alice");
    let mut client = server.client();
    let all = ok(client.get_with("/_matrix/client/v3/pushrules/", &alice));
    let overrides = all["global"]["override"]
        .as_array()
        .expect("override rules");
    assert!(
        overrides
            .iter()
            .any(|rule| rule["rule_id"] == ".m.rule.master")
    );
    assert!(
        all["global"]["underride"]
            .as_array()
            .expect("underride")
            .iter()
            .any(|rule| rule["rule_id"] == ".m.rule.message")
    );

    let since = ok(client.get_with("/_matrix/client/v3/sync", &alice))["next_batch"]
        .as_str()
        .expect("batch")
        .to_owned();
    ok(client.json(
        "PUT",
        "/_matrix/client/v3/pushrules/global/content/cake",
        Some(&alice),
        &json!({ "pattern": "cake", "actions": ["notify"] }),
    ));
    let rule = ok(client.get_with("/_matrix/client/v3/pushrules/global/content/cake", &alice));
    assert_eq!(rule["pattern"], "cake");
    ok(client.json(
        "PUT",
        "/_matrix/client/v3/pushrules/global/content/cake/enabled",
        Some(&alice),
        &json!({ "enabled": false }),
    ));
    assert_eq!(
        ok(client.get_with(
            "/_matrix/client/v3/pushrules/global/content/cake/enabled",
            &alice
        ))["enabled"],
        false
    );
    ok(client.json(
        "PUT",
        "/_matrix/client/v3/pushrules/global/override/.m.rule.master/enabled",
        Some(&alice),
        &json!({ "enabled": true }),
    ));
    let synced = ok(client.get_with(&format!("/_matrix/client/v3/sync?since={since}"), &alice));
    assert!(
        synced["account_data"]["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["type"] == "m.push_rules")
    );
    let default_delete = client.request(
        "DELETE",
        "/_matrix/client/v3/pushrules/global/override/.m.rule.master",
        &[("Authorization", &format!("Bearer {alice}"))],
        None,
    );
    assert_eq!(default_delete.expect("answer").status, 400);
    ok(client
        .request(
            "DELETE",
            "/_matrix/client/v3/pushrules/global/content/cake",
            &[("Authorization", &format!("Bearer {alice}"))],
            None,
        )
        .expect("delete"));
    assert_eq!(
        client
            .get_with("/_matrix/client/v3/pushrules/global/content/cake", &alice)
            .status,
        404
    );
    let dotted = client.json(
        "PUT",
        "/_matrix/client/v3/pushrules/global/content/.mine",
        Some(&alice),
        &json!({ "pattern": "x", "actions": [] }),
    );
    assert_eq!(errcode(&dotted), "M_INVALID_PARAM");

    let pusher = json!({
        "pushkey": "abc", "kind": "http", "app_id": "im.example.app", "app_display_name": "App",
        "device_display_name": "Phone", "lang": "en", "data": { "url": "https://push.example.org/_matrix/push/v1/notify" }
    });
    ok(client.json(
        "POST",
        "/_matrix/client/v3/pushers/set",
        Some(&alice),
        &pusher,
    ));
    assert_eq!(
        ok(client.get_with("/_matrix/client/v3/pushers", &alice))["pushers"][0]["pushkey"],
        "abc"
    );
    let mut bad = pusher.clone();
    bad["data"]["url"] = json!("https://push.example.org/elsewhere");
    assert_eq!(
        errcode(&client.json("POST", "/_matrix/client/v3/pushers/set", Some(&alice), &bad)),
        "M_INVALID_PARAM"
    );
    ok(client.json(
        "POST",
        "/_matrix/client/v3/pushers/set",
        Some(&alice),
        &json!({ "pushkey": "abc", "app_id": "im.example.app", "kind": null }),
    ));
    assert_eq!(
        ok(client.get_with("/_matrix/client/v3/pushers", &alice))["pushers"],
        json!([])
    );
}

#[test]
fn extended_profiles_keep_any_field_within_the_limits() {
    let server = server();
    let alice = login(&server, "alice");
    let mut client = server.client();
    let path = |key: &str| format!("/_matrix/client/v3/profile/@alice:localhost/{key}");
    ok(client.json(
        "PUT",
        &path("m.tz"),
        Some(&alice),
        &json!({ "m.tz": "Europe/Paris" }),
    ));
    ok(client.json(
        "PUT",
        &path("org.example.pets"),
        Some(&alice),
        &json!({ "org.example.pets": { "cats": 2 } }),
    ));
    let profile = ok(client.get_with("/_matrix/client/v3/profile/@alice:localhost", &alice));
    assert_eq!(profile["m.tz"], "Europe/Paris");
    assert_eq!(profile["org.example.pets"]["cats"], 2);
    assert_eq!(
        ok(client.get_with(&path("org.example.pets"), &alice)),
        json!({ "org.example.pets": { "cats": 2 } })
    );
    ok(client
        .request(
            "DELETE",
            &path("org.example.pets"),
            &[("Authorization", &format!("Bearer {alice}"))],
            None,
        )
        .expect("delete"));
    let gone = client.get_with(&path("org.example.pets"), &alice);
    assert_eq!(gone.status, 404);

    // The spec's errors: a key too long, a profile too large, a wrong type, a missing key.
    let long_key = "k".repeat(256);
    let refused = client.json(
        "PUT",
        &path(&long_key),
        Some(&alice),
        &json!({ long_key.clone(): 1 }),
    );
    assert_eq!(
        (refused.status, errcode(&refused).as_str()),
        (400, "M_KEY_TOO_LARGE")
    );
    let big = "x".repeat(40_000);
    ok(client.json(
        "PUT",
        &path("org.example.a"),
        Some(&alice),
        &json!({ "org.example.a": big }),
    ));
    let refused = client.json(
        "PUT",
        &path("org.example.b"),
        Some(&alice),
        &json!({ "org.example.b": big }),
    );
    assert_eq!(
        (refused.status, errcode(&refused).as_str()),
        (400, "M_PROFILE_TOO_LARGE")
    );
    let refused = client.json("PUT", &path("m.tz"), Some(&alice), &json!({ "m.tz": 3 }));
    assert_eq!(
        (refused.status, errcode(&refused).as_str()),
        (400, "M_BAD_JSON")
    );
    let refused = client.json("PUT", &path("m.tz"), Some(&alice), &json!({ "other": "x" }));
    assert_eq!(
        (refused.status, errcode(&refused).as_str()),
        (400, "M_MISSING_PARAM")
    );
    let caps = ok(client.get_with("/_matrix/client/v3/capabilities", &alice));
    assert_eq!(caps["capabilities"]["m.profile_fields"]["enabled"], true);
}
