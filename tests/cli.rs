//! The command line: help for every command, `init`, `check-config`, `user …` and `token …`
//! (with the server stopped and through a running server's control socket), `version`.

mod common;

use std::os::unix::fs::PermissionsExt as _;

use common::{Server, hearth, login_token, ok, test_config};

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn version_prints_the_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = hearth(dir.path(), &["version"], "");
    assert!(output.status.success());
    assert_eq!(
        stdout(&output).trim(),
        format!("hearth {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn every_command_has_help() {
    let dir = tempfile::tempdir().expect("tempdir");
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["init", "--help"],
        &["check-config", "--help"],
        &["check", "--help"],
        &["user", "--help"],
        &["user", "add", "--help"],
        &["user", "passwd", "--help"],
        &["user", "deactivate", "--help"],
        &["user", "list", "--help"],
        &["key", "rotate", "--help"],
        &["version", "--help"],
    ] {
        let output = hearth(dir.path(), args, "");
        assert!(output.status.success(), "{args:?}");
        assert!(stdout(&output).contains("Usage:"), "{args:?}");
    }
    let help = stdout(&hearth(dir.path(), &["serve", "--help"], ""));
    assert!(
        help.contains("HEARTH_CONFIG") && help.contains("127.0.0.1:8008"),
        "{help}"
    );
}

#[test]
fn init_writes_config_key_and_certificate_with_private_modes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = hearth(
        dir.path(),
        &["init", "--server-name", "example.org", "--self-signed-cert"],
        "",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let mode = |path: &str| {
        std::fs::metadata(dir.path().join(path))
            .expect(path)
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("hearth-data/signing.key"), 0o600);
    assert_eq!(mode("tls/key.pem"), 0o600);
    assert_eq!(mode("hearth.toml"), 0o640);
    let config = std::fs::read_to_string(dir.path().join("hearth.toml")).expect("config");
    assert!(config.contains("server_name = \"example.org\""));
    assert!(config.contains("0.0.0.0:8448"));

    // A second init refuses to overwrite; --force replaces the config but keeps the key.
    let key = std::fs::read(dir.path().join("hearth-data/signing.key")).expect("key");
    assert!(!hearth(dir.path(), &["init"], "").status.success());
    assert!(
        hearth(dir.path(), &["init", "--force"], "")
            .status
            .success()
    );
    assert_eq!(
        std::fs::read(dir.path().join("hearth-data/signing.key")).expect("key"),
        key
    );
}

#[test]
fn check_config_prints_effective_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("custom.toml"), test_config("")).expect("config");
    let output = hearth(dir.path(), &["check-config", "--config", "custom.toml"], "");
    assert!(output.status.success(), "{}", stderr(&output));
    let shown = stdout(&output);
    assert!(shown.contains("custom.toml is valid"), "{shown}");
    assert!(
        shown.contains("cache_capacity_mb = 8"),
        "defaults are shown: {shown}"
    );
}

#[test]
fn check_config_reads_hearth_config_from_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("env.toml"), test_config("")).expect("config");
    let output = std::process::Command::new(common::BINARY)
        .arg("check-config")
        .current_dir(dir.path())
        .env("HEARTH_CONFIG", "env.toml")
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("env.toml is valid"));
}

#[test]
fn check_config_without_a_file_shows_the_built_in_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = hearth(dir.path(), &["check-config"], "");
    assert!(output.status.success());
    let shown = stdout(&output);
    assert!(shown.contains("server_name = \"localhost\""), "{shown}");
    assert!(shown.contains("127.0.0.1:8008"), "{shown}");
    assert!(shown.contains("hearth-data"), "{shown}");
}

#[test]
fn check_config_refuses_errors_with_key_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("bad.toml"),
        "[server]\nserver_name = \"localhost\"\n\n[database]\ncache_capacity_mb = 0\n",
    )
    .expect("config");
    let output = hearth(dir.path(), &["check-config", "--config", "bad.toml"], "");
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("database.cache_capacity_mb"), "{message}");
    assert!(message.contains("line 5"), "{message}");
}

#[test]
fn user_accounts_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hearth.toml"), test_config("")).expect("config");
    let run = |args: &[&str], stdin: &str| hearth(dir.path(), args, stdin);

    let added = run(&["user", "add", "alice", "--admin"], "a good password\n");
    assert!(added.status.success(), "{}", stderr(&added));
    assert!(stdout(&added).contains("created @alice:localhost (admin)"));
    assert!(
        run(&["user", "add", "@bob:localhost"], "another password\n")
            .status
            .success()
    );

    let duplicate = run(&["user", "add", "alice"], "a good password\n");
    assert!(!duplicate.status.success());
    assert!(stderr(&duplicate).contains("already exists"));
    let weak = run(&["user", "add", "carol"], "short\n");
    assert!(!weak.status.success());
    assert!(stderr(&weak).contains("at least 8 characters"));
    let invalid = run(&["user", "add", "Not Valid"], "a good password\n");
    assert!(!invalid.status.success());
    let foreign = run(&["user", "add", "@dave:elsewhere.org"], "a good password\n");
    assert!(stderr(&foreign).contains("another server"));

    assert!(
        run(&["user", "passwd", "alice"], "a new password\n")
            .status
            .success()
    );
    assert!(
        !run(&["user", "passwd", "nobody"], "a new password\n")
            .status
            .success()
    );
    assert!(run(&["user", "deactivate", "bob"], "").status.success());

    let listed = stdout(&run(&["user", "list"], ""));
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        vec!["@alice:localhost\tadmin", "@bob:localhost\tdeactivated"]
    );
}

/// Whether `user` can log in with `password` over HTTP (any answer but `200` is "no").
fn logs_in(server: &Server, user: &str, password: &str) -> bool {
    let response = server.client().json(
        "POST",
        "/_matrix/client/v3/login",
        None,
        &serde_json::json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user },
            "password": password,
        }),
    );
    response.status == 200
}

#[test]
fn user_and_token_commands_work_while_the_server_runs() {
    let server = Server::start(&test_config("[registration]\nenabled = true\n"));
    let run = |args: &[&str], stdin: &str| {
        let output = hearth(&server.dir, args, stdin);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        stdout(&output)
    };
    let socket = server.dir.join("data/control.sock");
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the control socket is the owner's only"
    );

    assert_eq!(
        run(&["user", "add", "alice", "--admin"], "alice's password\n"),
        "created @alice:localhost (admin)\n"
    );
    assert!(logs_in(&server, "alice", "alice's password"), "at once");
    run(&["user", "add", "bob"], "bob's password\n");
    let duplicate = hearth(&server.dir, &["user", "add", "bob"], "bob's password\n");
    assert!(!duplicate.status.success());
    assert!(
        stderr(&duplicate).contains("already exists"),
        "{}",
        stderr(&duplicate)
    );
    assert_eq!(
        run(&["user", "list"], ""),
        "@alice:localhost\tadmin\n@bob:localhost\t\n"
    );

    assert!(
        run(&["user", "passwd", "bob"], "bob's new password\n")
            .starts_with("changed the password of @bob:localhost")
    );
    assert!(!logs_in(&server, "bob", "bob's password"));
    assert!(logs_in(&server, "bob", "bob's new password"));
    assert_eq!(
        run(&["user", "deactivate", "bob"], ""),
        "deactivated @bob:localhost\n"
    );
    assert!(!logs_in(&server, "bob", "bob's new password"));
    assert_eq!(
        run(&["user", "lock", "alice"], ""),
        "locked @alice:localhost\n"
    );
    assert_eq!(
        run(&["user", "unlock", "alice"], ""),
        "unlocked @alice:localhost\n"
    );

    assert_eq!(
        run(&["token", "add", "family", "--uses", "2"], ""),
        "family\n"
    );
    assert_eq!(run(&["token", "list"], ""), "family\tused 0 of 2\tusable\n");
    assert_eq!(run(&["token", "delete", "family"], ""), "deleted family\n");
    assert_eq!(run(&["token", "list"], ""), "");
    let missing = hearth(&server.dir, &["token", "delete", "family"], "");
    assert!(stderr(&missing).contains("no token family"));

    // The work was the server's (it logs each command), and no password reached its log.
    assert!(server.wait_for_log("control: user add: done"));
    let log = server.log_text();
    assert!(!log.contains("alice's password") && !log.contains("bob's new password"));
}

/// Bob's incremental `/sync` from `since`: its `device_lists.changed` and `next_batch`.
fn changed_devices(server: &Server, token: &str, since: &str) -> (Vec<String>, String) {
    let body = ok(server.client().get_with(
        &format!("/_matrix/client/v3/sync?since={since}&timeout=0"),
        token,
    ));
    let changed = body["device_lists"]["changed"]
        .as_array()
        .map(|users| {
            users
                .iter()
                .filter_map(|user| user.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    (
        changed,
        body["next_batch"].as_str().expect("batch").to_owned(),
    )
}

/// `hearth user passwd` and `deactivate` through the control socket do what the client and
/// admin APIs do: the ended devices are announced at once to whoever shares a room (their
/// next `/sync`), and a deactivation deletes the account's key backups. A command that went
/// around the server's own stream would leave Bob's `/sync` blind to the change.
#[test]
fn account_commands_through_the_socket_announce_devices_and_delete_key_backups() {
    let server = Server::start_with_users(
        &test_config(""),
        &[("alice", "alice's password"), ("bob", "bob's password")],
    );
    let run = |args: &[&str], stdin: &str| {
        let output = hearth(&server.dir, args, stdin);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    };
    run(&["user", "add", "carol", "--admin"], "carol's password\n");
    let alice = login_token(&server, "alice", "alice's password");
    let bob = login_token(&server, "bob", "bob's password");
    let mut client = server.client();
    let room = ok(client.json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&alice),
        &serde_json::json!({ "preset": "public_chat" }),
    ))["room_id"]
        .as_str()
        .expect("room")
        .to_owned();
    ok(client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/join"),
        Some(&bob),
        &serde_json::json!({}),
    ));
    ok(client.json(
        "POST",
        "/_matrix/client/v3/room_keys/version",
        Some(&alice),
        &serde_json::json!({
            "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
            "auth_data": { "public_key": "abcdefg" },
        }),
    ));
    let since = ok(client.get_with("/_matrix/client/v3/sync", &bob))["next_batch"]
        .as_str()
        .expect("batch")
        .to_owned();

    run(&["user", "passwd", "alice"], "alice's new password\n");
    let (changed, since) = changed_devices(&server, &bob, &since);
    assert_eq!(changed, ["@alice:localhost"], "the reset ended her device");

    login_token(&server, "alice", "alice's new password");
    let (_, since) = changed_devices(&server, &bob, &since);
    run(&["user", "deactivate", "alice"], "");
    let (changed, _) = changed_devices(&server, &bob, &since);
    assert_eq!(
        changed,
        ["@alice:localhost"],
        "deactivation ended her device"
    );

    // Brought back by an admin, she finds no backup left.
    let carol = login_token(&server, "carol", "carol's password");
    ok(client.json(
        "PUT",
        "/_synapse/admin/v2/users/@alice:localhost",
        Some(&carol),
        &serde_json::json!({ "deactivated": false, "password": "alice's third password" }),
    ));
    let alice = login_token(&server, "alice", "alice's third password");
    let backup = client.get_with("/_matrix/client/v3/room_keys/version", &alice);
    assert_eq!(backup.status, 404, "the key backup went with the account");
}

#[test]
fn the_control_socket_goes_with_the_server_and_a_stale_one_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hearth.toml"), test_config("")).expect("config");
    let socket = dir.path().join("data/control.sock");
    let mut server = Server::start_in(dir.path(), &[], &[]).expect("starts");
    assert!(socket.exists());
    server.signal("TERM");
    server
        .wait_exit(std::time::Duration::from_secs(15))
        .expect("stops");
    assert!(!socket.exists(), "removed at stop");

    // A crashed server leaves its socket behind: nobody answers there, so the CLI opens the
    // database itself, and the next server replaces the socket.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("a stale socket"));
    let added = hearth(dir.path(), &["user", "add", "carol"], "carol's password\n");
    assert!(added.status.success(), "{}", stderr(&added));
    let server = Server::start_in(dir.path(), &[], &[]).expect("starts over a stale socket");
    assert!(logs_in(&server, "carol", "carol's password"));
    let listed = hearth(dir.path(), &["user", "list"], "");
    assert_eq!(
        stdout(&listed),
        "@carol:localhost\t\n",
        "{}",
        stderr(&listed)
    );
}

#[test]
fn a_running_server_without_its_socket_is_a_clear_error() {
    let server = Server::start(&test_config(""));
    std::fs::remove_file(server.dir.join("data/control.sock")).expect("remove the socket");
    let output = hearth(&server.dir, &["user", "list"], "");
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("holds the data directory") && message.contains("does not answer"),
        "{message}"
    );
}

#[test]
fn a_rotated_key_stays_published_as_an_old_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hearth.toml"), test_config("")).expect("config");
    let mut server = Server::start_in(dir.path(), &[], &[]).expect("starts");
    let before = common::ok(server.client().get("/_matrix/key/v2/server"));
    let first_id = before["verify_keys"]
        .as_object()
        .and_then(|keys| keys.keys().next().cloned())
        .expect("a key");
    server.signal("TERM");
    server
        .wait_exit(std::time::Duration::from_secs(15))
        .expect("stops");
    let rotated = hearth(dir.path(), &["key", "rotate"], "");
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    assert!(stdout(&rotated).contains("new signing key"));
    let server = Server::start_in(dir.path(), &[], &[]).expect("starts again");
    let after = common::ok(server.client().get("/_matrix/key/v2/server"));
    assert!(after["verify_keys"].get(&first_id).is_none());
    assert!(
        after["old_verify_keys"][&first_id]["expired_ts"]
            .as_u64()
            .is_some(),
        "{after}"
    );
    assert_eq!(
        after["old_verify_keys"][&first_id]["key"],
        before["verify_keys"][&first_id]["key"]
    );
}
