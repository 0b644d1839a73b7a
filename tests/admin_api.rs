//! The server administration API of Synapse (`/_synapse/admin/…`) as existing tools call
//! it: who may call it (`401` without a token, `403 M_FORBIDDEN` for a non-admin), the
//! users endpoints with paging and filters, devices, whois, registration tokens, the room
//! list, details, members and state, and a room deletion that makes local users leave and
//! purges the room's content.

mod common;

use std::time::{Duration, Instant};

use common::{Server, errcode, hearth, login_token, ok, test_config};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// A running server with an administrator `root` and users `alice` and `bob`; the tokens
/// of `root` and `alice`.
fn start() -> (Server, String, String) {
    let server = Server::start(&test_config(
        "[limits]\nauth_attempts_per_minute = 100000\n\n[registration]\nenabled = true\n",
    ));
    for (name, admin) in [("root", true), ("alice", false), ("bob", false)] {
        let mut args = vec!["user", "add", name];
        if admin {
            args.push("--admin");
        }
        let output = hearth(&server.dir, &args, &format!("{PASSWORD}\n"));
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let root = login_token(&server, "root", PASSWORD);
    let alice = login_token(&server, "alice", PASSWORD);
    (server, root, alice)
}

fn call(
    server: &Server,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> common::http::Response {
    let mut client = server.client();
    match body {
        Some(body) => client.json(method, path, Some(token), &body),
        None => {
            let bearer = format!("Bearer {token}");
            client
                .request(method, path, &[("Authorization", &bearer)], None)
                .unwrap_or_else(|err| panic!("{method} {path}: {err}"))
        }
    }
}

fn logs_in(server: &Server, user: &str, password: &str) -> bool {
    server
        .client()
        .json(
            "POST",
            "/_matrix/client/v3/login",
            None,
            &json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": user },
                "password": password,
            }),
        )
        .status
        == 200
}

#[test]
fn only_server_admins_may_call_it() {
    let (server, root, alice) = start();
    let anonymous = server.client().get("/_synapse/admin/v1/server_version");
    assert_eq!(anonymous.status, 401);
    assert_eq!(errcode(&anonymous), "M_MISSING_TOKEN");
    for path in [
        "/_synapse/admin/v1/server_version",
        "/_synapse/admin/v2/users",
        "/_synapse/admin/v2/users/@bob:localhost",
        "/_synapse/admin/v1/registration_tokens",
        "/_synapse/admin/v1/rooms",
    ] {
        let refused = call(&server, "GET", path, &alice, None);
        assert_eq!(refused.status, 403, "{path}");
        assert_eq!(errcode(&refused), "M_FORBIDDEN", "{path}");
    }
    let refused = call(
        &server,
        "PUT",
        "/_synapse/admin/v2/users/@alice:localhost",
        &alice,
        Some(json!({ "admin": true })),
    );
    assert_eq!(refused.status, 403);
    let version = ok(call(
        &server,
        "GET",
        "/_synapse/admin/v1/server_version",
        &root,
        None,
    ));
    assert!(
        version["server_version"]
            .as_str()
            .is_some_and(|v| v.contains("Hearth")),
        "{version}"
    );
}

#[test]
fn users_are_listed_paged_and_filtered() {
    let (server, root, _) = start();
    for name in ["carol", "dave", "erin"] {
        let created = call(
            &server,
            "PUT",
            &format!("/_synapse/admin/v2/users/@{name}:localhost"),
            &root,
            Some(json!({ "password": PASSWORD, "displayname": format!("{name} the tester") })),
        );
        assert_eq!(
            created.status,
            201,
            "{}",
            String::from_utf8_lossy(&created.body)
        );
    }
    ok(call(
        &server,
        "POST",
        "/_synapse/admin/v1/deactivate/@erin:localhost",
        &root,
        Some(json!({})),
    ));

    let names = |page: &Value| -> Vec<String> {
        page["users"]
            .as_array()
            .expect("users")
            .iter()
            .map(|user| user["name"].as_str().expect("name").to_owned())
            .collect()
    };
    // Deactivated accounts only when asked for; by user ID; `next_token` while more follow.
    let first = ok(call(
        &server,
        "GET",
        "/_synapse/admin/v2/users?limit=2",
        &root,
        None,
    ));
    assert_eq!(names(&first), ["@alice:localhost", "@bob:localhost"]);
    assert_eq!(first["total"], 5);
    let next = first["next_token"].as_str().expect("next_token");
    let second = ok(call(
        &server,
        "GET",
        &format!("/_synapse/admin/v2/users?limit=2&from={next}"),
        &root,
        None,
    ));
    assert_eq!(names(&second), ["@carol:localhost", "@dave:localhost"]);
    let last = ok(call(
        &server,
        "GET",
        "/_synapse/admin/v2/users?limit=2&from=4",
        &root,
        None,
    ));
    assert_eq!(names(&last), ["@root:localhost"]);
    assert!(last.get("next_token").is_none(), "{last}");
    let all = ok(call(
        &server,
        "GET",
        "/_synapse/admin/v2/users?deactivated=true&guests=false",
        &root,
        None,
    ));
    assert_eq!(all["total"], 6);
    let erin = &all["users"][4];
    assert_eq!(erin["name"], "@erin:localhost");
    assert_eq!(erin["deactivated"], true);
    assert_eq!(erin["is_guest"], false);

    // `name` matches localparts and display names; `user_id` the whole ID.
    let by_name = ok(call(
        &server,
        "GET",
        "/_synapse/admin/v2/users?name=tester",
        &root,
        None,
    ));
    assert_eq!(names(&by_name), ["@carol:localhost", "@dave:localhost"]);
    assert_eq!(by_name["users"][0]["displayname"], "carol the tester");
    let by_id = ok(call(
        &server,
        "GET",
        "/_synapse/admin/v2/users?user_id=%40ro",
        &root,
        None,
    ));
    assert_eq!(names(&by_id), ["@root:localhost"]);
    assert_eq!(by_id["users"][0]["admin"], true);
    let bad = call(
        &server,
        "GET",
        "/_synapse/admin/v2/users?order_by=shoe_size",
        &root,
        None,
    );
    assert_eq!(bad.status, 400);
    assert_eq!(errcode(&bad), "M_INVALID_PARAM");
}

#[test]
fn accounts_are_created_modified_deactivated_and_reset() {
    let (server, root, _) = start();
    let path = "/_synapse/admin/v2/users/@frank:localhost";
    let missing = call(&server, "GET", path, &root, None);
    assert_eq!(missing.status, 404);
    assert_eq!(errcode(&missing), "M_NOT_FOUND");
    let created = call(
        &server,
        "PUT",
        path,
        &root,
        Some(json!({ "password": "frank's password", "displayname": "Frank", "admin": true })),
    );
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let frank = created.json();
    assert_eq!(frank["name"], "@frank:localhost");
    assert_eq!(frank["displayname"], "Frank");
    assert_eq!(frank["admin"], true);
    assert_eq!(frank["deactivated"], false);
    assert!(logs_in(&server, "frank", "frank's password"));

    // Modify: a new password ends the sessions unless `logout_devices` is false.
    let frank_token = login_token(&server, "frank", "frank's password");
    let changed = ok(call(
        &server,
        "PUT",
        path,
        &root,
        Some(
            json!({ "password": "frank's 2nd password", "admin": false, "logout_devices": false }),
        ),
    ));
    assert_eq!(changed["admin"], false);
    assert!(logs_in(&server, "frank", "frank's 2nd password"));
    let whoami = call(
        &server,
        "GET",
        "/_matrix/client/v3/account/whoami",
        &frank_token,
        None,
    );
    assert_eq!(whoami.status, 200, "the session was kept");
    let devices = ok(call(
        &server,
        "GET",
        "/_synapse/admin/v2/users/@frank:localhost/devices",
        &root,
        None,
    ));
    assert!(
        devices["total"].as_u64().is_some_and(|n| n >= 2),
        "{devices}"
    );
    assert_eq!(devices["devices"][0]["user_id"], "@frank:localhost");

    ok(call(
        &server,
        "POST",
        "/_synapse/admin/v1/reset_password/@frank:localhost",
        &root,
        Some(json!({ "new_password": "frank's 3rd password" })),
    ));
    let whoami = call(
        &server,
        "GET",
        "/_matrix/client/v3/account/whoami",
        &frank_token,
        None,
    );
    assert_eq!(whoami.status, 401, "a reset password ends every session");
    assert!(logs_in(&server, "frank", "frank's 3rd password"));
    let weak = call(
        &server,
        "POST",
        "/_synapse/admin/v1/reset_password/@frank:localhost",
        &root,
        Some(json!({ "new_password": "short" })),
    );
    assert_eq!(errcode(&weak), "M_WEAK_PASSWORD");

    let deactivated = ok(call(
        &server,
        "POST",
        "/_synapse/admin/v1/deactivate/@frank:localhost",
        &root,
        Some(json!({ "erase": false })),
    ));
    assert_eq!(deactivated["id_server_unbind_result"], "success");
    assert!(!logs_in(&server, "frank", "frank's 3rd password"));
    assert_eq!(
        ok(call(&server, "GET", path, &root, None))["deactivated"],
        true
    );
    // Reactivation needs a password.
    let refused = call(
        &server,
        "PUT",
        path,
        &root,
        Some(json!({ "deactivated": false })),
    );
    assert_eq!(refused.status, 400);
    ok(call(
        &server,
        "PUT",
        path,
        &root,
        Some(json!({ "deactivated": false, "password": "frank is back" })),
    ));
    assert!(logs_in(&server, "frank", "frank is back"));

    // Only our own users.
    let foreign = call(
        &server,
        "GET",
        "/_synapse/admin/v2/users/@x:elsewhere.org",
        &root,
        None,
    );
    assert_eq!(foreign.status, 400);
    let wrong_type = call(&server, "PUT", path, &root, Some(json!({ "admin": "yes" })));
    assert_eq!(wrong_type.status, 400, "a hostile body is refused whole");
    assert_eq!(ok(call(&server, "GET", path, &root, None))["admin"], false);
    let no_demotion = call(
        &server,
        "PUT",
        "/_synapse/admin/v2/users/@root:localhost",
        &root,
        Some(json!({ "admin": false })),
    );
    assert_eq!(no_demotion.status, 400);
}

#[test]
fn whois_and_devices_of_a_user() {
    let (server, root, alice) = start();
    let whois = ok(call(
        &server,
        "GET",
        "/_synapse/admin/v1/whois/@alice:localhost",
        &root,
        None,
    ));
    assert_eq!(whois["user_id"], "@alice:localhost");
    let devices = whois["devices"].as_object().expect("devices");
    assert_eq!(devices.len(), 1);
    let device_id = devices.keys().next().expect("device").clone();
    let path = format!("/_synapse/admin/v2/users/@alice:localhost/devices/{device_id}");
    let device = ok(call(&server, "GET", &path, &root, None));
    assert_eq!(device["device_id"], device_id.as_str());
    ok(call(
        &server,
        "PUT",
        &path,
        &root,
        Some(json!({ "display_name": "kitchen tablet" })),
    ));
    assert_eq!(
        ok(call(&server, "GET", &path, &root, None))["display_name"],
        "kitchen tablet"
    );
    ok(call(&server, "DELETE", &path, &root, None));
    assert_eq!(call(&server, "GET", &path, &root, None).status, 404);
    let whoami = call(
        &server,
        "GET",
        "/_matrix/client/v3/account/whoami",
        &alice,
        None,
    );
    assert_eq!(whoami.status, 401, "the deleted device's session ended");
    let devices = "/_synapse/admin/v2/users/@alice:localhost/devices";
    assert_eq!(ok(call(&server, "GET", devices, &root, None))["total"], 0);

    // Several at once.
    let phone = login_token(&server, "alice", PASSWORD);
    login_token(&server, "alice", PASSWORD);
    let list = ok(call(&server, "GET", devices, &root, None));
    assert_eq!(list["total"], 2);
    let ids: Vec<Value> = list["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|d| d["device_id"].clone())
        .collect();
    ok(call(
        &server,
        "POST",
        "/_synapse/admin/v2/users/@alice:localhost/delete_devices",
        &root,
        Some(json!({ "devices": ids })),
    ));
    assert_eq!(ok(call(&server, "GET", devices, &root, None))["total"], 0);
    assert_eq!(
        call(
            &server,
            "GET",
            "/_matrix/client/v3/account/whoami",
            &phone,
            None
        )
        .status,
        401
    );
}

#[test]
fn registration_tokens_are_managed() {
    let (server, root, _) = start();
    let base = "/_synapse/admin/v1/registration_tokens";
    let made = ok(call(
        &server,
        "POST",
        &format!("{base}/new"),
        &root,
        Some(json!({ "token": "family", "uses_allowed": 1 })),
    ));
    assert_eq!(
        made,
        json!({ "token": "family", "uses_allowed": 1, "pending": 0, "completed": 0, "expiry_time": null })
    );
    let random = ok(call(
        &server,
        "POST",
        &format!("{base}/new"),
        &root,
        Some(json!({ "length": 24 })),
    ));
    assert_eq!(random["token"].as_str().map(str::len), Some(24));
    let taken = call(
        &server,
        "POST",
        &format!("{base}/new"),
        &root,
        Some(json!({ "token": "family" })),
    );
    assert_eq!(errcode(&taken), "M_INVALID_PARAM");
    let past = call(
        &server,
        "POST",
        &format!("{base}/new"),
        &root,
        Some(json!({ "expiry_time": 1000 })),
    );
    assert_eq!(errcode(&past), "M_INVALID_PARAM");

    // Used once by a registration, the token is no longer valid.
    let register = |token: &str| {
        let mut client = server.client();
        let first = client.json(
            "POST",
            "/_matrix/client/v3/register",
            None,
            &json!({ "username": "gina", "password": PASSWORD }),
        );
        let session = first.json()["session"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let token_stage = client.json(
            "POST",
            "/_matrix/client/v3/register",
            None,
            &json!({
                "username": "gina",
                "password": PASSWORD,
                "auth": { "type": "m.login.registration_token", "token": token, "session": session },
            }),
        );
        assert_eq!(token_stage.status, 401, "then m.login.dummy");
        client.json(
            "POST",
            "/_matrix/client/v3/register",
            None,
            &json!({
                "username": "gina",
                "password": PASSWORD,
                "auth": { "type": "m.login.dummy", "session": session },
            }),
        )
    };
    assert_eq!(register("family").status, 200);
    let family = ok(call(&server, "GET", &format!("{base}/family"), &root, None));
    assert_eq!(family["completed"], 1);
    let invalid = ok(call(
        &server,
        "GET",
        &format!("{base}?valid=false"),
        &root,
        None,
    ));
    assert_eq!(
        invalid["registration_tokens"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(invalid["registration_tokens"][0]["token"], "family");
    let valid = ok(call(
        &server,
        "GET",
        &format!("{base}?valid=true"),
        &root,
        None,
    ));
    assert_eq!(
        valid["registration_tokens"].as_array().map(Vec::len),
        Some(1)
    );

    let updated = ok(call(
        &server,
        "PUT",
        &format!("{base}/family"),
        &root,
        Some(json!({ "uses_allowed": null })),
    ));
    assert_eq!(updated["uses_allowed"], Value::Null);
    assert_eq!(updated["completed"], 1);
    ok(call(
        &server,
        "DELETE",
        &format!("{base}/family"),
        &root,
        None,
    ));
    let gone = call(&server, "GET", &format!("{base}/family"), &root, None);
    assert_eq!(gone.status, 404);
    assert_eq!(errcode(&gone), "M_NOT_FOUND");
    assert_eq!(
        call(&server, "DELETE", &format!("{base}/family"), &root, None).status,
        404
    );
}

fn create_room(server: &Server, token: &str, body: Value) -> String {
    ok(server
        .client()
        .json("POST", "/_matrix/client/v3/createRoom", Some(token), &body))["room_id"]
        .as_str()
        .expect("room_id")
        .to_owned()
}

#[test]
fn rooms_are_listed_with_details_members_and_state() {
    let (server, root, alice) = start();
    let kitchen = create_room(
        &server,
        &alice,
        json!({ "name": "Kitchen", "room_alias_name": "kitchen", "preset": "public_chat" }),
    );
    let garden = create_room(&server, &alice, json!({ "name": "Garden" }));
    let _attic = create_room(&server, &root, json!({ "name": "Attic" }));
    let bob = login_token(&server, "bob", PASSWORD);
    ok(server.client().json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{kitchen}/join"),
        Some(&bob),
        &json!({}),
    ));

    let list = ok(call(
        &server,
        "GET",
        "/_synapse/admin/v1/rooms",
        &root,
        None,
    ));
    assert_eq!(list["total_rooms"], 3);
    let names: Vec<&str> = list["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["Attic", "Garden", "Kitchen"], "by name");
    let by_size = ok(call(
        &server,
        "GET",
        "/_synapse/admin/v1/rooms?order_by=joined_members&limit=1",
        &root,
        None,
    ));
    assert_eq!(by_size["rooms"][0]["room_id"], kitchen.as_str());
    assert_eq!(by_size["rooms"][0]["joined_members"], 2);
    assert_eq!(by_size["rooms"][0]["joined_local_members"], 2);
    assert_eq!(by_size["rooms"][0]["canonical_alias"], "#kitchen:localhost");
    assert_eq!(by_size["next_batch"], 1);
    let found = ok(call(
        &server,
        "GET",
        "/_synapse/admin/v1/rooms?search_term=Gard",
        &root,
        None,
    ));
    assert_eq!(found["total_rooms"], 1);
    assert_eq!(found["rooms"][0]["room_id"], garden.as_str());

    let details = ok(call(
        &server,
        "GET",
        &format!("/_synapse/admin/v1/rooms/{kitchen}"),
        &root,
        None,
    ));
    assert_eq!(details["name"], "Kitchen");
    assert_eq!(details["creator"], "@alice:localhost");
    assert_eq!(details["join_rules"], "public");
    assert_eq!(details["forgotten"], false);
    assert!(
        details["state_events"].as_u64().is_some_and(|n| n >= 5),
        "{details}"
    );
    let members = ok(call(
        &server,
        "GET",
        &format!("/_synapse/admin/v1/rooms/{kitchen}/members"),
        &root,
        None,
    ));
    assert_eq!(
        members,
        json!({ "total": 2, "members": ["@alice:localhost", "@bob:localhost"] })
    );
    let state = ok(call(
        &server,
        "GET",
        &format!("/_synapse/admin/v1/rooms/{kitchen}/state?type=m.room.name"),
        &root,
        None,
    ));
    assert_eq!(state["state"].as_array().map(Vec::len), Some(1));
    assert_eq!(state["state"][0]["content"]["name"], "Kitchen");
    let unknown = call(
        &server,
        "GET",
        "/_synapse/admin/v1/rooms/!nope:localhost",
        &root,
        None,
    );
    assert_eq!(unknown.status, 404);
}

#[test]
fn a_deleted_room_is_left_by_every_local_user() {
    let (server, root, alice) = start();
    let room = create_room(
        &server,
        &alice,
        json!({ "name": "Doomed", "room_alias_name": "doomed", "preset": "public_chat" }),
    );
    let bob = login_token(&server, "bob", PASSWORD);
    ok(server.client().json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/join"),
        Some(&bob),
        &json!({}),
    ));
    let kept = create_room(&server, &alice, json!({ "name": "Kept" }));
    say(&server, &alice, &room, "doomed words 7d1f");
    say(&server, &alice, &kept, "kept words 7d1f");
    ok(server.client().json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/"),
        Some(&alice),
        &json!({ "topic": "doomed topic 7d1f" }),
    ));

    let refused = call(
        &server,
        "DELETE",
        &format!("/_synapse/admin/v2/rooms/{room}"),
        &alice,
        Some(json!({})),
    );
    assert_eq!(refused.status, 403);
    let moved = call(
        &server,
        "DELETE",
        &format!("/_synapse/admin/v2/rooms/{room}"),
        &root,
        Some(json!({ "new_room_user_id": "@root:localhost" })),
    );
    assert_eq!(
        errcode(&moved),
        "M_INVALID_PARAM",
        "not supported, and not pretended"
    );

    let started = ok(call(
        &server,
        "DELETE",
        &format!("/_synapse/admin/v2/rooms/{room}"),
        &root,
        Some(json!({ "block": true })),
    ));
    let delete_id = started["delete_id"].as_str().expect("delete_id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = ok(call(
            &server,
            "GET",
            &format!("/_synapse/admin/v2/rooms/delete_status/{delete_id}"),
            &root,
            None,
        ));
        let running =
            ["shutting_down", "purging"].contains(&status["status"].as_str().unwrap_or(""));
        if !running || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status["status"], "complete", "{status}");
    assert_eq!(status["room_id"], room.as_str());
    assert_eq!(
        status["shutdown_room"]["kicked_users"],
        json!(["@alice:localhost", "@bob:localhost"])
    );
    assert_eq!(
        status["shutdown_room"]["local_aliases"],
        json!(["#doomed:localhost"])
    );
    let by_room = ok(call(
        &server,
        "GET",
        &format!("/_synapse/admin/v2/rooms/{room}/delete_status"),
        &root,
        None,
    ));
    assert_eq!(by_room["results"][0]["delete_id"], delete_id.as_str());

    for (token, rooms) in [(&alice, json!([kept])), (&bob, json!([]))] {
        let joined = ok(call(
            &server,
            "GET",
            "/_matrix/client/v3/joined_rooms",
            token,
            None,
        ));
        assert_eq!(joined["joined_rooms"], rooms);
    }
    let alias = server
        .client()
        .get("/_matrix/client/v3/directory/room/%23doomed:localhost");
    assert_eq!(alias.status, 404, "the alias is gone");
    let members = ok(call(
        &server,
        "GET",
        &format!("/_synapse/admin/v1/rooms/{room}/members"),
        &root,
        None,
    ));
    assert_eq!(members["total"], 0);
    let details = ok(call(
        &server,
        "GET",
        &format!("/_synapse/admin/v1/rooms/{room}"),
        &root,
        None,
    ));
    assert_eq!(
        details["forgotten"], true,
        "purge: every local user forgot it"
    );

    // Purged: the room's words are nowhere in the database (a backup holds all of it),
    // where another room's still are.
    let backup = tempfile::tempdir().expect("tempdir");
    let target = backup.path().join("copy");
    let target = target.to_str().expect("path");
    let output = hearth(&server.dir, &["backup", target], "");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let everything = files_text(backup.path());
    assert!(
        everything.contains("kept words 7d1f"),
        "the check can see words"
    );
    assert!(
        !everything.contains("doomed words 7d1f"),
        "a message was purged"
    );
    assert!(
        !everything.contains("doomed topic 7d1f"),
        "the current state was purged"
    );

    // Blocked: nobody joins again until the block is lifted.
    let block = format!("/_synapse/admin/v1/rooms/{room}/block");
    let status = ok(call(&server, "GET", &block, &root, None));
    assert_eq!(
        status,
        json!({ "block": true, "user_id": "@root:localhost" })
    );
    let join = format!("/_matrix/client/v3/rooms/{room}/join");
    let refused = server.client().json("POST", &join, Some(&bob), &json!({}));
    assert_eq!(refused.status, 403);
    assert_eq!(errcode(&refused), "M_FORBIDDEN");
    ok(call(
        &server,
        "PUT",
        &block,
        &root,
        Some(json!({ "block": false })),
    ));
    assert_eq!(
        ok(call(&server, "GET", &block, &root, None)),
        json!({ "block": false })
    );
    ok(server.client().json("POST", &join, Some(&bob), &json!({})));
}

/// Sends a text message.
fn say(server: &Server, token: &str, room: &str, body: &str) {
    let txn: String = body.chars().filter(char::is_ascii_alphanumeric).collect();
    ok(server.client().json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
        Some(token),
        &json!({ "msgtype": "m.text", "body": body }),
    ));
}

/// Every file under `dir`, read as (lossy) text and joined.
fn files_text(dir: &std::path::Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            text.push_str(&files_text(&path));
        } else {
            text.push_str(&String::from_utf8_lossy(
                &std::fs::read(&path).expect("read"),
            ));
        }
    }
    text
}

/// Uploads `body` as `token`'s user; the media ID.
fn upload_media(server: &Server, token: &str, body: &[u8], name: &str) -> String {
    let bearer = format!("Bearer {token}");
    let response = server
        .client()
        .request(
            "POST",
            &format!("/_matrix/media/v3/upload?filename={name}"),
            &[("Authorization", &bearer), ("Content-Type", "text/plain")],
            Some(body),
        )
        .expect("upload");
    let uri = ok(response)["content_uri"]
        .as_str()
        .expect("content_uri")
        .to_owned();
    uri.rsplit('/').next().expect("media ID").to_owned()
}

#[test]
fn a_users_media_is_listed_and_deleted_one_by_one_or_all_at_once() {
    let (server, root, alice) = start();
    let first = upload_media(&server, &alice, b"first file", "first.txt");
    let second = upload_media(&server, &alice, b"second, longer file", "second.txt");
    let path = "/_synapse/admin/v1/users/@alice:localhost/media";

    let refused = call(&server, "GET", path, &alice, None);
    assert_eq!(
        (refused.status, errcode(&refused)),
        (403, "M_FORBIDDEN".to_owned())
    );
    let listed = ok(call(&server, "GET", path, &root, None));
    assert_eq!(listed["total"], 2, "{listed}");
    let media = listed["media"].as_array().expect("media");
    let ids: Vec<&str> = media
        .iter()
        .map(|entry| entry["media_id"].as_str().expect("id"))
        .collect();
    assert!(
        ids.contains(&first.as_str()) && ids.contains(&second.as_str()),
        "{listed}"
    );
    let entry = media
        .iter()
        .find(|entry| entry["media_id"] == second.as_str())
        .expect("second");
    assert_eq!(entry["media_length"], 19);
    assert_eq!(entry["upload_name"], "second.txt");
    assert_eq!(entry["media_type"], "text/plain");
    let paged = ok(call(
        &server,
        "GET",
        &format!("{path}?limit=1"),
        &root,
        None,
    ));
    assert_eq!(paged["media"].as_array().map(Vec::len), Some(1));
    assert_eq!(paged["next_token"], 1, "{paged}");

    // One by one: gone from downloads and from the list.
    let deleted = ok(call(
        &server,
        "DELETE",
        &format!("/_synapse/admin/v1/media/localhost/{first}"),
        &root,
        None,
    ));
    assert_eq!(deleted, json!({ "deleted_media": [first], "total": 1 }));
    let download = call(
        &server,
        "GET",
        &format!("/_matrix/client/v1/media/download/localhost/{first}"),
        &alice,
        None,
    );
    assert_eq!(download.status, 404);
    let again = call(
        &server,
        "DELETE",
        &format!("/_synapse/admin/v1/media/localhost/{first}"),
        &root,
        None,
    );
    assert_eq!(
        (again.status, errcode(&again)),
        (404, "M_NOT_FOUND".to_owned())
    );

    // All at once.
    let all = ok(call(&server, "DELETE", path, &root, None));
    assert_eq!(all, json!({ "deleted_media": [second], "total": 1 }));
    assert_eq!(ok(call(&server, "GET", path, &root, None))["total"], 0);
}
