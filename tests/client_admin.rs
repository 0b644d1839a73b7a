//! Account moderation: `/_matrix/client/v1/admin/lock/{userId}` and
//! `/admin/suspend/{userId}` (who may call them, their errors, that the flags survive a
//! restart), and what a lock and a suspension then refuse or still allow. Also the
//! `hearth user lock|suspend` commands.

mod common;

use std::time::Duration;

use common::{Server, errcode, hearth, ok, test_config};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// A server with an administrator `root`, another one `boss`, users `alice`, `bob`,
/// `carol`, `dave` (deactivated) and `erin` (locked from the command line).
fn start() -> (Server, tempfile::TempDir) {
    let tempdir = tempfile::tempdir().expect("tempdir");
    let dir = tempdir.path();
    std::fs::write(
        dir.join("hearth.toml"),
        test_config("[limits]\nauth_attempts_per_minute = 100000\n"),
    )
    .expect("write config");
    let run = |args: &[&str], stdin: &str| {
        let output = hearth(dir, args, stdin);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let password = format!("{PASSWORD}\n");
    run(&["user", "add", "--admin", "root"], &password);
    run(&["user", "add", "--admin", "boss"], &password);
    for name in ["alice", "bob", "carol", "dave", "erin"] {
        run(&["user", "add", name], &password);
    }
    run(&["user", "deactivate", "dave"], "");
    assert!(run(&["user", "lock", "erin"], "").contains("locked @erin:localhost"));
    run(&["user", "suspend", "erin"], "");
    run(&["user", "unsuspend", "erin"], "");
    let list = run(&["user", "list"], "");
    assert!(list.contains("@erin:localhost\tlocked\n"), "{list}");
    let server = Server::start_in(dir, &[], &[]).expect("server starts");
    (server, tempdir)
}

fn login(client: &mut common::http::Client, user: &str) -> common::http::Response {
    client.json(
        "POST",
        "/_matrix/client/v3/login",
        None,
        &json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user },
            "password": PASSWORD,
        }),
    )
}

fn token(client: &mut common::http::Client, user: &str) -> String {
    ok(login(client, user))["access_token"]
        .as_str()
        .expect("token")
        .to_owned()
}

fn put(
    client: &mut common::http::Client,
    what: &str,
    user: &str,
    token: &str,
    body: Value,
) -> common::http::Response {
    client.json(
        "PUT",
        &format!("/_matrix/client/v1/admin/{what}/{user}"),
        Some(token),
        &body,
    )
}

fn get(
    client: &mut common::http::Client,
    what: &str,
    user: &str,
    token: &str,
) -> common::http::Response {
    client.get_with(&format!("/_matrix/client/v1/admin/{what}/{user}"), token)
}

#[track_caller]
fn refused(response: common::http::Response, status: u16, code: &str) {
    assert_eq!(
        (response.status, errcode(&response)),
        (status, code.to_owned()),
        "{}",
        String::from_utf8_lossy(&response.body)
    );
}

#[test]
fn only_admins_lock_and_suspend_local_non_admin_accounts() {
    let (server, _dir) = start();
    let mut client = server.client();
    let root = token(&mut client, "root");
    let alice = token(&mut client, "alice");

    // Only administrators are told they may moderate.
    let capabilities = ok(client.get_with("/_matrix/client/v3/capabilities", &root));
    assert_eq!(
        capabilities["capabilities"]["m.account_moderation"],
        json!({ "lock": true, "suspend": true })
    );
    let capabilities = ok(client.get_with("/_matrix/client/v3/capabilities", &alice));
    assert!(
        capabilities["capabilities"]
            .get("m.account_moderation")
            .is_none()
    );

    for what in ["lock", "suspend"] {
        let field = if what == "lock" {
            "locked"
        } else {
            "suspended"
        };
        // A non-administrator learns nothing, whatever the user ID.
        for user in [
            "@bob:localhost",
            "@nobody:localhost",
            "bob",
            "@bob:elsewhere.org",
        ] {
            refused(get(&mut client, what, user, &alice), 403, "M_FORBIDDEN");
            refused(
                put(&mut client, what, user, &alice, json!({ field: true })),
                403,
                "M_FORBIDDEN",
            );
        }
        // For an administrator, the spec's errors.
        refused(get(&mut client, what, "bob", &root), 400, "M_INVALID_PARAM");
        refused(
            get(&mut client, what, "@bob:elsewhere.org", &root),
            400,
            "M_INVALID_PARAM",
        );
        refused(
            get(&mut client, what, "@nobody:localhost", &root),
            404,
            "M_NOT_FOUND",
        );
        refused(
            put(
                &mut client,
                what,
                "@dave:localhost",
                &root,
                json!({ field: true }),
            ),
            404,
            "M_NOT_FOUND",
        );
        refused(
            get(&mut client, what, "@boss:localhost", &root),
            403,
            "M_FORBIDDEN",
        );
        refused(
            put(
                &mut client,
                what,
                "@root:localhost",
                &root,
                json!({ field: true }),
            ),
            403,
            "M_FORBIDDEN",
        );
        assert_eq!(
            ok(get(&mut client, what, "@root:localhost", &root)),
            json!({ field: false })
        );
        for body in [json!({ field: "yes" }), json!({}), json!({ field: null })] {
            refused(
                put(&mut client, what, "@bob:localhost", &root, body),
                400,
                "M_BAD_JSON",
            );
        }
        assert_eq!(
            ok(get(&mut client, what, "@bob:localhost", &root)),
            json!({ field: false }),
            "nothing changed"
        );
        assert_eq!(
            client
                .json(
                    "POST",
                    &format!("/_matrix/client/v1/admin/{what}/@bob:localhost"),
                    Some(&root),
                    &json!({ field: true })
                )
                .status,
            405
        );
    }
}

#[test]
fn a_locked_account_may_only_log_out_and_the_lock_survives_a_restart() {
    let (mut server, dir) = start();
    let mut client = server.client();
    let root = token(&mut client, "root");
    let bob = token(&mut client, "bob");
    let bob_other = token(&mut client, "bob");

    assert_eq!(
        ok(put(
            &mut client,
            "lock",
            "@bob:localhost",
            &root,
            json!({ "locked": true })
        )),
        json!({ "locked": true })
    );
    assert_eq!(
        ok(get(&mut client, "lock", "@bob:localhost", &root)),
        json!({ "locked": true })
    );
    for path in [
        "/_matrix/client/v3/account/whoami",
        "/_matrix/client/v3/sync",
        "/_matrix/client/v3/capabilities",
    ] {
        let response = client.get_with(path, &bob);
        assert_eq!(response.status, 401, "{path}");
        assert_eq!(
            response.json(),
            json!({
                "errcode": "M_USER_LOCKED",
                "error": "This account has been locked",
                "soft_logout": true,
            }),
            "{path}"
        );
    }
    // No new token while locked; a wrong password does not reveal the lock.
    refused(login(&mut client, "bob"), 401, "M_USER_LOCKED");
    let wrong = client.json(
        "POST",
        "/_matrix/client/v3/login",
        None,
        &json!({ "type": "m.login.password", "user": "bob", "password": "wrong password" }),
    );
    refused(wrong, 403, "M_FORBIDDEN");
    // Erin was locked from the command line before the server started.
    refused(login(&mut client, "erin"), 401, "M_USER_LOCKED");

    // The lock is on disk: it holds after a restart.
    server.signal("TERM");
    server.wait_exit(Duration::from_secs(15)).expect("exits");
    drop(server);
    let server = Server::start_in(dir.path(), &[], &[]).expect("restarts");
    let mut client = server.client();
    refused(
        client.get_with("/_matrix/client/v3/account/whoami", &bob),
        401,
        "M_USER_LOCKED",
    );

    // Logging out is allowed, and ends that session for good.
    ok(client.json("POST", "/_matrix/client/v3/logout", Some(&bob), &json!({})));
    // Unlocking gives the sessions that were kept their use back.
    assert_eq!(
        ok(put(
            &mut client,
            "lock",
            "@bob:localhost",
            &root,
            json!({ "locked": false })
        )),
        json!({ "locked": false })
    );
    assert_eq!(
        ok(client.get_with("/_matrix/client/v3/account/whoami", &bob_other))["user_id"],
        "@bob:localhost"
    );
    refused(
        client.get_with("/_matrix/client/v3/account/whoami", &bob),
        401,
        "M_UNKNOWN_TOKEN",
    );
    token(&mut client, "bob");
}

#[test]
fn a_suspended_account_reads_and_leaves_but_does_not_act() {
    let (server, _dir) = start();
    let mut client = server.client();
    let root = token(&mut client, "root");
    let alice = token(&mut client, "alice");
    let bob = token(&mut client, "bob");
    let create = |client: &mut common::http::Client, token: &str| {
        ok(client.json(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(token),
            &json!({ "preset": "public_chat" }),
        ))["room_id"]
            .as_str()
            .expect("room_id")
            .to_owned()
    };
    let room = create(&mut client, &alice);
    let other = create(&mut client, &alice);
    ok(client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/join"),
        Some(&bob),
        &json!({}),
    ));
    let send = |client: &mut common::http::Client, token: &str, txn: &str| {
        client.json(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
            Some(token),
            &json!({ "msgtype": "m.text", "body": "hello" }),
        )
    };
    let own = ok(send(&mut client, &bob, "before"))["event_id"]
        .as_str()
        .expect("event_id")
        .to_owned();
    let alices = ok(send(&mut client, &alice, "a1"))["event_id"]
        .as_str()
        .expect("event_id")
        .to_owned();

    ok(put(
        &mut client,
        "suspend",
        "@bob:localhost",
        &root,
        json!({ "suspended": true }),
    ));
    assert_eq!(
        ok(get(&mut client, "suspend", "@bob:localhost", &root)),
        json!({ "suspended": true })
    );

    // Acting is refused.
    let suspended = |response: common::http::Response, what: &str| {
        assert_eq!(
            (response.status, errcode(&response)),
            (403, "M_USER_SUSPENDED".to_owned()),
            "{what}"
        );
    };
    suspended(send(&mut client, &bob, "after"), "send");
    suspended(
        client.json(
            "POST",
            &format!("/_matrix/client/v3/rooms/{other}/join"),
            Some(&bob),
            &json!({}),
        ),
        "join",
    );
    suspended(
        client.json(
            "POST",
            &format!("/_matrix/client/v3/join/{other}"),
            Some(&bob),
            &json!({}),
        ),
        "join by ID or alias",
    );
    suspended(
        client.json(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            Some(&bob),
            &json!({ "user_id": "@carol:localhost" }),
        ),
        "invite",
    );
    suspended(
        client.json(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&bob),
            &json!({}),
        ),
        "createRoom",
    );
    suspended(
        client.json(
            "PUT",
            "/_matrix/client/v3/profile/@bob:localhost/displayname",
            Some(&bob),
            &json!({ "displayname": "Robert" }),
        ),
        "profile",
    );
    suspended(
        client.json(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/"),
            Some(&bob),
            &json!({ "topic": "mine now" }),
        ),
        "state",
    );
    suspended(
        client.json(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/redact/{alices}/r1"),
            Some(&bob),
            &json!({}),
        ),
        "redacting another's event",
    );

    // Reading, syncing, redacting one's own events and leaving still work.
    ok(client.get_with("/_matrix/client/v3/sync", &bob));
    ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b"),
        &bob,
    ));
    ok(client.get_with("/_matrix/client/v3/account/whoami", &bob));
    ok(client.json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/redact/{own}/r2"),
        Some(&bob),
        &json!({}),
    ));
    ok(client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/leave"),
        Some(&bob),
        &json!({}),
    ));
    // A suspended account may still log in.
    token(&mut client, "bob");

    // Lifted, the account acts again.
    ok(put(
        &mut client,
        "suspend",
        "@bob:localhost",
        &root,
        json!({ "suspended": false }),
    ));
    create(&mut client, &bob);
}
