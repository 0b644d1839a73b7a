//! The client API for accounts and sessions: login, logout, whoami, registration with
//! tokens and user-interactive auth, password change, deactivation, devices, rate limits,
//! and the errors each answers bad input with.

mod common;

use common::errcode;

use common::http::Response;
use common::{Server, hearth, test_config};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";
const LIMITS: &str = "[limits]\nauth_attempts_per_minute = 100000\n";

fn server_with_alice() -> Server {
    Server::start_with_users(&test_config(LIMITS), &[("alice", PASSWORD)])
}

fn login(server: &Server, user: &str, password: &str) -> Response {
    server.client().json(
        "POST",
        "/_matrix/client/v3/login",
        None,
        &json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user },
            "password": password,
            "initial_device_display_name": "test phone",
        }),
    )
}

fn token_of(response: &Response) -> String {
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()["access_token"]
        .as_str()
        .expect("token")
        .to_owned()
}

#[test]
fn login_flows_offer_passwords() {
    let server = server_with_alice();
    let flows = server.client().get("/_matrix/client/v3/login").json();
    assert_eq!(flows["flows"], json!([{ "type": "m.login.password" }]));
}

#[test]
fn login_then_whoami_then_logout() {
    let server = server_with_alice();
    let response = login(&server, "alice", PASSWORD);
    let token = token_of(&response);
    let json = response.json();
    assert_eq!(json["user_id"], "@alice:localhost");
    let device_id = json["device_id"].as_str().expect("device").to_owned();

    let mut client = server.client();
    let me = client
        .get_with("/_matrix/client/v3/account/whoami", &token)
        .json();
    assert_eq!(me["user_id"], "@alice:localhost");
    assert_eq!(me["device_id"], device_id);
    assert_eq!(me["is_guest"], false);
    // The deprecated query parameter still works.
    let by_query = client.get(&format!(
        "/_matrix/client/v3/account/whoami?access_token={token}"
    ));
    assert_eq!(by_query.status, 200);

    let out = client.json(
        "POST",
        "/_matrix/client/v3/logout",
        Some(&token),
        &json!({}),
    );
    assert_eq!(out.status, 200);
    let after = client.get_with("/_matrix/client/v3/account/whoami", &token);
    assert_eq!(after.status, 401);
    assert_eq!(errcode(&after), "M_UNKNOWN_TOKEN");
    assert_eq!(after.json()["soft_logout"], false);
}

#[test]
fn login_accepts_full_ids_legacy_user_field_and_capitals() {
    let server = server_with_alice();
    token_of(&login(&server, "@alice:localhost", PASSWORD));
    token_of(&login(&server, "ALICE", PASSWORD));
    let legacy = server.client().json(
        "POST",
        "/_matrix/client/v3/login",
        None,
        &json!({ "type": "m.login.password", "user": "alice", "password": PASSWORD }),
    );
    token_of(&legacy);
}

#[test]
fn wrong_passwords_and_unknown_users_look_the_same() {
    let server = server_with_alice();
    for (user, password) in [
        ("alice", "wrong password"),
        ("nobody", PASSWORD),
        ("@alice:elsewhere", PASSWORD),
    ] {
        let response = login(&server, user, password);
        assert_eq!(response.status, 403, "{user}");
        assert_eq!(errcode(&response), "M_FORBIDDEN");
        assert_eq!(response.json()["error"], "Invalid user name or password");
    }
}

#[test]
fn bad_login_requests_get_the_spec_errors() {
    let server = server_with_alice();
    let mut client = server.client();
    let cases: [(&[u8], u16, &str); 6] = [
        (b"{not json", 400, "M_NOT_JSON"),
        (br#"{"type": 5}"#, 400, "M_BAD_JSON"),
        (br#"{"type": "m.login.token", "token": "x"}"#, 400, "M_UNKNOWN"),
        (br#"{"type": "m.login.password", "password": "x"}"#, 400, "M_MISSING_PARAM"),
        (
            br#"{"type": "m.login.password", "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "a@b"}, "password": "x"}"#,
            400,
            "M_UNKNOWN",
        ),
        (
            br#"{"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "x", "device_id": ""}"#,
            400,
            "M_INVALID_PARAM",
        ),
    ];
    for (body, status, code) in cases {
        let response = client
            .request("POST", "/_matrix/client/v3/login", &[], Some(body))
            .expect("request");
        assert_eq!(response.status, status, "{}", String::from_utf8_lossy(body));
        assert_eq!(
            errcode(&response),
            code,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn requests_without_a_valid_token_are_refused() {
    let server = server_with_alice();
    let mut client = server.client();
    let missing = client.get("/_matrix/client/v3/account/whoami");
    assert_eq!(missing.status, 401);
    assert_eq!(errcode(&missing), "M_MISSING_TOKEN");
    for token in ["hth_made_up", "", "x y"] {
        let response = client
            .request(
                "GET",
                "/_matrix/client/v3/devices",
                &[("Authorization", &format!("Bearer {token}"))],
                None,
            )
            .expect("request");
        assert_eq!(response.status, 401, "{token:?}");
    }
}

#[test]
fn logging_in_on_the_same_device_replaces_its_token() {
    let server = server_with_alice();
    let body = |device: &str| {
        json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" },
                "password": PASSWORD, "device_id": device })
    };
    let mut client = server.client();
    let first = token_of(&client.json("POST", "/_matrix/client/v3/login", None, &body("LAPTOP")));
    let second = token_of(&client.json("POST", "/_matrix/client/v3/login", None, &body("LAPTOP")));
    assert_eq!(
        client
            .get_with("/_matrix/client/v3/account/whoami", &first)
            .status,
        401
    );
    let me = client
        .get_with("/_matrix/client/v3/account/whoami", &second)
        .json();
    assert_eq!(me["device_id"], "LAPTOP");
}

#[test]
fn logout_all_ends_every_session() {
    let server = server_with_alice();
    let one = token_of(&login(&server, "alice", PASSWORD));
    let two = token_of(&login(&server, "alice", PASSWORD));
    let mut client = server.client();
    assert_eq!(
        client
            .json(
                "POST",
                "/_matrix/client/v3/logout/all",
                Some(&one),
                &json!({})
            )
            .status,
        200
    );
    for token in [&one, &two] {
        assert_eq!(
            client
                .get_with("/_matrix/client/v3/account/whoami", token)
                .status,
            401
        );
    }
}

/// Completes user-interactive auth with alice's password: the first request gets the flows.
fn with_password_auth(
    server: &Server,
    method: &str,
    path: &str,
    token: &str,
    mut body: Value,
) -> Response {
    let mut client = server.client();
    let challenge = client.json(method, path, Some(token), &body);
    assert_eq!(
        challenge.status,
        401,
        "{}",
        String::from_utf8_lossy(&challenge.body)
    );
    let challenge = challenge.json();
    assert_eq!(
        challenge["flows"],
        json!([{ "stages": ["m.login.password"] }])
    );
    assert!(
        challenge.get("errcode").is_none(),
        "the first challenge is no error"
    );
    body["auth"] = json!({
        "type": "m.login.password",
        "session": challenge["session"],
        "identifier": { "type": "m.id.user", "user": "alice" },
        "password": PASSWORD,
    });
    client.json(method, path, Some(token), &body)
}

#[test]
fn devices_are_listed_renamed_and_deleted_with_auth() {
    let server = server_with_alice();
    let response = login(&server, "alice", PASSWORD);
    let token = token_of(&response);
    let other = login(&server, "alice", PASSWORD);
    let other_token = token_of(&other);
    let other_device = other.json()["device_id"]
        .as_str()
        .expect("device")
        .to_owned();
    let mut client = server.client();

    let devices = client.get_with("/_matrix/client/v3/devices", &token).json();
    assert_eq!(devices["devices"].as_array().expect("list").len(), 2);
    assert_eq!(devices["devices"][0]["display_name"], "test phone");
    assert!(devices["devices"][0]["last_seen_ts"].is_u64());
    assert_eq!(devices["devices"][0]["last_seen_ip"], "127.0.0.1");

    let path = format!("/_matrix/client/v3/devices/{other_device}");
    let renamed = client.json(
        "PUT",
        &path,
        Some(&token),
        &json!({ "display_name": "old tablet" }),
    );
    assert_eq!(renamed.status, 200);
    assert_eq!(
        client.get_with(&path, &token).json()["display_name"],
        "old tablet"
    );
    let missing = client.get_with("/_matrix/client/v3/devices/NOSUCH", &token);
    assert_eq!(missing.status, 404);
    assert_eq!(errcode(&missing), "M_NOT_FOUND");

    // A wrong password is a failed stage: 401 again, with the reason.
    let mut client = server.client();
    let challenge = client
        .json("DELETE", &path, Some(&token), &json!({}))
        .json();
    let wrong = client.json(
        "DELETE",
        &path,
        Some(&token),
        &json!({ "auth": { "type": "m.login.password", "session": challenge["session"],
                           "identifier": { "type": "m.id.user", "user": "alice" }, "password": "nope" } }),
    );
    assert_eq!(wrong.status, 401);
    assert_eq!(errcode(&wrong), "M_FORBIDDEN");

    let deleted = with_password_auth(&server, "DELETE", &path, &token, json!({}));
    assert_eq!(
        deleted.status,
        200,
        "{}",
        String::from_utf8_lossy(&deleted.body)
    );
    assert_eq!(
        client
            .get_with("/_matrix/client/v3/account/whoami", &other_token)
            .status,
        401
    );
    assert_eq!(
        client
            .get_with("/_matrix/client/v3/account/whoami", &token)
            .status,
        200
    );
}

#[test]
fn delete_devices_removes_several() {
    let server = server_with_alice();
    let token = token_of(&login(&server, "alice", PASSWORD));
    let a = login(&server, "alice", PASSWORD).json();
    let b = login(&server, "alice", PASSWORD).json();
    let body = json!({ "devices": [a["device_id"], b["device_id"], "UNKNOWN"] });
    let response = with_password_auth(
        &server,
        "POST",
        "/_matrix/client/v3/delete_devices",
        &token,
        body,
    );
    assert_eq!(response.status, 200);
    let devices = server
        .client()
        .get_with("/_matrix/client/v3/devices", &token)
        .json();
    assert_eq!(devices["devices"].as_array().expect("list").len(), 1);
}

#[test]
fn changing_the_password_logs_out_other_devices() {
    let server = server_with_alice();
    let token = token_of(&login(&server, "alice", PASSWORD));
    let other = token_of(&login(&server, "alice", PASSWORD));
    let weak = server.client().json(
        "POST",
        "/_matrix/client/v3/account/password",
        Some(&token),
        &json!({ "new_password": "short" }),
    );
    assert_eq!(weak.status, 400);
    assert_eq!(errcode(&weak), "M_WEAK_PASSWORD");
    let response = with_password_auth(
        &server,
        "POST",
        "/_matrix/client/v3/account/password",
        &token,
        json!({ "new_password": "a brand new password" }),
    );
    assert_eq!(response.status, 200);
    let mut client = server.client();
    assert_eq!(
        client
            .get_with("/_matrix/client/v3/account/whoami", &other)
            .status,
        401
    );
    assert_eq!(
        client
            .get_with("/_matrix/client/v3/account/whoami", &token)
            .status,
        200
    );
    assert_eq!(login(&server, "alice", PASSWORD).status, 403);
    token_of(&login(&server, "alice", "a brand new password"));
}

#[test]
fn deactivation_ends_the_account() {
    let server = server_with_alice();
    let token = token_of(&login(&server, "alice", PASSWORD));
    let response = with_password_auth(
        &server,
        "POST",
        "/_matrix/client/v3/account/deactivate",
        &token,
        json!({}),
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["id_server_unbind_result"], "success");
    assert_eq!(
        server
            .client()
            .get_with("/_matrix/client/v3/account/whoami", &token)
            .status,
        401
    );
    let again = login(&server, "alice", PASSWORD);
    assert_eq!(again.status, 403);
    assert_eq!(errcode(&again), "M_USER_DEACTIVATED");
}

#[test]
fn registration_is_off_by_default() {
    let server = server_with_alice();
    let mut client = server.client();
    let response = client.json(
        "POST",
        "/_matrix/client/v3/register",
        None,
        &json!({ "username": "bob", "password": PASSWORD }),
    );
    assert_eq!(response.status, 403);
    assert_eq!(errcode(&response), "M_FORBIDDEN");
    let guest = client.json(
        "POST",
        "/_matrix/client/v3/register?kind=guest",
        None,
        &json!({}),
    );
    assert_eq!(guest.status, 403);
    assert_eq!(errcode(&guest), "M_GUEST_ACCESS_FORBIDDEN");
}

#[test]
fn registration_with_a_token_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(&format!("{LIMITS}[registration]\nenabled = true\n"));
    std::fs::write(dir.path().join("hearth.toml"), config).expect("config");
    let output = hearth(
        dir.path(),
        &["token", "add", "family-2026", "--uses", "1"],
        "",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "family-2026"
    );
    let server = Server::start_in(dir.path(), &[], &[]).expect("starts");
    let mut client = server.client();

    let validity = client
        .get("/_matrix/client/v1/register/m.login.registration_token/validity?token=family-2026");
    assert_eq!(validity.json()["valid"], true);
    let body = json!({ "username": "bob", "password": PASSWORD, "initial_device_display_name": "bob's phone" });
    let challenge = client.json("POST", "/_matrix/client/v3/register", None, &body);
    assert_eq!(challenge.status, 401);
    let challenge = challenge.json();
    assert_eq!(
        challenge["flows"],
        json!([{ "stages": ["m.login.registration_token", "m.login.dummy"] }])
    );

    let mut with_auth = body.clone();
    with_auth["auth"] = json!({ "type": "m.login.registration_token", "token": "wrong", "session": challenge["session"] });
    let wrong = client.json("POST", "/_matrix/client/v3/register", None, &with_auth);
    assert_eq!(wrong.status, 401);
    assert_eq!(errcode(&wrong), "M_FORBIDDEN");

    with_auth["auth"]["token"] = json!("family-2026");
    let next = client.json("POST", "/_matrix/client/v3/register", None, &with_auth);
    assert_eq!(next.status, 401, "one more stage: m.login.dummy");
    assert_eq!(
        next.json()["completed"],
        json!(["m.login.registration_token"])
    );
    with_auth["auth"] = json!({ "type": "m.login.dummy", "session": challenge["session"] });
    let registered = client.json("POST", "/_matrix/client/v3/register", None, &with_auth);
    let token = token_of(&registered);
    assert_eq!(registered.json()["user_id"], "@bob:localhost");
    assert_eq!(
        client
            .get_with("/_matrix/client/v3/account/whoami", &token)
            .json()["user_id"],
        "@bob:localhost"
    );
    token_of(&login(&server, "bob", PASSWORD));

    // The token is used up: the next registration cannot complete.
    let validity = client
        .get("/_matrix/client/v1/register/m.login.registration_token/validity?token=family-2026");
    assert_eq!(validity.json()["valid"], false);
    let mut carol = json!({ "username": "carol", "password": PASSWORD });
    let challenge = client
        .json("POST", "/_matrix/client/v3/register", None, &carol)
        .json();
    carol["auth"] = json!({ "type": "m.login.registration_token", "token": "family-2026", "session": challenge["session"] });
    assert_eq!(
        client
            .json("POST", "/_matrix/client/v3/register", None, &carol)
            .status,
        401
    );
    drop(server);
    let listed = hearth(dir.path(), &["token", "list"], "");
    assert!(String::from_utf8_lossy(&listed.stdout).contains("family-2026\tused 1 of 1"));
}

#[test]
fn open_registration_checks_names_and_passwords_first() {
    let config = test_config(&format!(
        "{LIMITS}[registration]\nenabled = true\nopen = true\n"
    ));
    let server = Server::start_with_users(&config, &[("alice", PASSWORD)]);
    let mut client = server.client();
    let register = |client: &mut common::http::Client, body: Value| {
        client.json("POST", "/_matrix/client/v3/register", None, &body)
    };
    let taken = register(
        &mut client,
        json!({ "username": "alice", "password": PASSWORD }),
    );
    assert_eq!(
        (taken.status, errcode(&taken)),
        (400, "M_USER_IN_USE".to_owned())
    );
    let invalid = register(
        &mut client,
        json!({ "username": "not valid!", "password": PASSWORD }),
    );
    assert_eq!(
        (invalid.status, errcode(&invalid)),
        (400, "M_INVALID_USERNAME".to_owned())
    );
    let weak = register(
        &mut client,
        json!({ "username": "dave", "password": "123" }),
    );
    assert_eq!(
        (weak.status, errcode(&weak)),
        (400, "M_WEAK_PASSWORD".to_owned())
    );

    let available = client.get("/_matrix/client/v3/register/available?username=dave");
    assert_eq!(available.json()["available"], true);
    let unavailable = client.get("/_matrix/client/v3/register/available?username=alice");
    assert_eq!(errcode(&unavailable), "M_USER_IN_USE");

    let challenge = register(&mut client, json!({})).json();
    let stages = challenge["flows"].to_string();
    assert!(stages.contains("m.login.dummy"), "{stages}");
    let done = register(
        &mut client,
        json!({ "username": "dave", "password": PASSWORD, "inhibit_login": true,
                "auth": { "type": "m.login.dummy", "session": challenge["session"] } }),
    );
    assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));
    assert_eq!(done.json()["user_id"], "@dave:localhost");
    assert!(
        done.json().get("access_token").is_none(),
        "inhibit_login gives no token"
    );
    token_of(&login(&server, "dave", PASSWORD));
}

#[test]
fn login_attempts_are_rate_limited() {
    let config = test_config("[limits]\nauth_attempts_per_minute = 2\n");
    let server = Server::start_with_users(&config, &[("alice", PASSWORD)]);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(login(&server, "alice", "wrong password"));
    }
    let limited = statuses.last().expect("answers");
    assert_eq!(limited.status, 429);
    assert_eq!(errcode(limited), "M_LIMIT_EXCEEDED");
    assert!(
        limited.json()["retry_after_ms"]
            .as_u64()
            .expect("retry_after_ms")
            > 0
    );
    assert!(limited.header("retry-after").is_some());
}

#[test]
fn renaming_without_a_name_keeps_it_and_deleting_twice_succeeds() {
    let server = server_with_alice();
    let response = login(&server, "alice", PASSWORD);
    let token = token_of(&response);
    let other = login(&server, "alice", PASSWORD).json();
    let path = format!(
        "/_matrix/client/v3/devices/{}",
        other["device_id"].as_str().expect("id")
    );
    let mut client = server.client();
    assert_eq!(
        client.json("PUT", &path, Some(&token), &json!({})).status,
        200
    );
    assert_eq!(
        client.get_with(&path, &token).json()["display_name"],
        "test phone"
    );

    // The first deletion completes auth; a retry of the same session (a lost answer) and a
    // deletion of a device already gone both succeed.
    let challenge = client
        .json("DELETE", &path, Some(&token), &json!({}))
        .json();
    let auth = json!({ "auth": { "type": "m.login.password", "session": challenge["session"],
        "identifier": { "type": "m.id.user", "user": "alice" }, "password": PASSWORD } });
    assert_eq!(
        client.json("DELETE", &path, Some(&token), &auth).status,
        200
    );
    let retry = json!({ "auth": { "session": challenge["session"] } });
    assert_eq!(
        client.json("DELETE", &path, Some(&token), &retry).status,
        200
    );
    // The session belongs to that request: it does not authorize another.
    let elsewhere = client.json(
        "POST",
        "/_matrix/client/v3/account/deactivate",
        Some(&token),
        &retry,
    );
    assert_eq!(elsewhere.status, 403);
    assert_eq!(
        client
            .get_with("/_matrix/client/v3/account/whoami", &token)
            .status,
        200
    );
}

#[test]
fn the_address_behind_a_local_proxy_is_the_one_it_appended() {
    let server = server_with_alice();
    let body = serde_json::to_vec(&json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": "alice" },
        "password": PASSWORD,
    }))
    .expect("json");
    // The client wrote 203.0.113.9 itself; the proxy appended the address it saw.
    let response = server
        .client()
        .request(
            "POST",
            "/_matrix/client/v3/login",
            &[("X-Forwarded-For", "203.0.113.9, 198.51.100.7")],
            Some(&body),
        )
        .expect("login");
    let token = token_of(&response);
    let bearer = format!("Bearer {token}");
    let devices = server
        .client()
        .request(
            "GET",
            "/_matrix/client/v3/devices",
            &[
                ("Authorization", &bearer),
                ("X-Forwarded-For", "198.51.100.7"),
            ],
            None,
        )
        .expect("devices")
        .json();
    assert_eq!(devices["devices"][0]["last_seen_ip"], "198.51.100.7");
}

#[test]
fn bad_query_parameters_and_oversized_bodies_answer_in_json() {
    let config = test_config(&format!("{LIMITS}[registration]\nenabled = true\n"));
    let server = Server::start(&config);
    let mut client = server.client();
    let missing = client.get("/_matrix/client/v3/register/available");
    assert_eq!(missing.status, 400);
    assert_eq!(errcode(&missing), "M_MISSING_PARAM");
    // A huge `identifier` is refused before it is built in memory.
    let mut body = br#"{"type":"m.login.password","password":"x","identifier":["#.to_vec();
    body.extend(std::iter::repeat_n(&b"0,"[..], 200_000).flatten());
    body.extend_from_slice(b"0]}");
    let response = client
        .request("POST", "/_matrix/client/v3/login", &[], Some(&body))
        .expect("answer");
    assert_eq!(response.status, 413);
    assert_eq!(errcode(&response), "M_TOO_LARGE");
    let wrong_type = client.json(
        "POST",
        "/_matrix/client/v3/login",
        None,
        &json!({ "type": "m.login.password", "password": "x", "identifier": [0, 0, 0] }),
    );
    assert_eq!(errcode(&wrong_type), "M_BAD_JSON");
}

/// A `200` to a login means the session is on disk: it survives `kill -9`.
#[test]
fn a_session_survives_a_crash_right_after_login() {
    let mut server = server_with_alice();
    let token = token_of(&login(&server, "alice", PASSWORD));
    server.signal("KILL");
    server
        .wait_exit(std::time::Duration::from_secs(10))
        .expect("killed");
    let dir = server.dir.clone();
    let restarted = Server::start_in(&dir, &[], &[]).expect("restarts");
    let me = restarted
        .client()
        .get_with("/_matrix/client/v3/account/whoami", &token);
    assert_eq!(me.status, 200);
    drop(restarted);
    drop(server);
}
