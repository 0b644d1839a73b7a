//! Real client libraries that nobody here wrote, driving a Hearth started by the test.
//! The test command (scripts/test) installs them into a virtualenv and points
//! `HEARTH_TEST_PYTHON` at it; CI insists on them.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Server, hearth, test_config};

/// The Python with the packages of tests/requirements.txt, or `None` (with a note) on a
/// developer machine without them.
fn python_with(module: &str) -> Option<String> {
    let python = std::env::var("HEARTH_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let present = common::succeeds_within(
        Command::new(&python).args(["-c", &format!("import {module}")]),
        Duration::from_secs(60),
    );
    if present {
        return Some(python);
    }
    assert!(
        std::env::var_os("CI").is_none() && std::env::var_os("HEARTH_TEST_PYTHON").is_none(),
        "{python} lacks `{module}`: run the tests with scripts/test"
    );
    eprintln!("SKIPPED: no Python `{module}`; scripts/test installs it");
    None
}

/// A server with @alice (password "alice's long password") and a one-use registration
/// token `token`, and the Python to drive it.
fn server_for_nio(token: &str) -> Option<(Server, String)> {
    let python = python_with("nio")?;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(
        "[limits]\nauth_attempts_per_minute = 100000\n[registration]\nenabled = true\n",
    );
    std::fs::write(dir.path().join("hearth.toml"), config).expect("config");
    let added = hearth(
        dir.path(),
        &["user", "add", "alice"],
        "alice's long password\n",
    );
    assert!(added.status.success());
    let made = hearth(dir.path(), &["token", "add", token, "--uses", "1"], "");
    assert!(made.status.success());
    let mut server = Server::start_in(dir.path(), &[], &[]).expect("starts");
    server.keep_dir(dir);
    Some((server, python))
}

fn run_script(server: &Server, python: &str, script: &str, token: &str) {
    let url = format!("http://{}", server.address("http"));
    // matrix-nio scripts talk to a local server: a few seconds; a stuck one is killed.
    let output = common::output_within(
        Command::new(python).args([script, &url, token]),
        Duration::from_secs(120),
    );
    assert!(
        output.status.success(),
        "{script} failed:\n{}{}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        server.log_text()
    );
}

#[test]
fn matrix_nio_holds_a_conversation() {
    let Some((server, python)) = server_for_nio("nio-chat") else {
        return;
    };
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/nio_conversation.py"
    );
    run_script(&server, &python, script, "nio-chat");
}

#[test]
fn matrix_nio_manages_accounts_and_devices() {
    let Some((server, python)) = server_for_nio("nio-test") else {
        return;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/nio_accounts.py");
    run_script(&server, &python, script, "nio-test");
}

#[test]
fn matrix_nio_uploads_queries_and_claims_device_keys() {
    // The `e2e` extra (vodozemac wheels): a real Olm account on each side.
    if python_with("vodozemac").is_none() {
        return;
    }
    let Some((server, python)) = server_for_nio("nio-keys") else {
        return;
    };
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/nio_e2ee_keys.py"
    );
    run_script(&server, &python, script, "nio-keys");
}

#[test]
fn matrix_nio_holds_an_encrypted_conversation_and_a_new_device_gets_the_key() {
    // The `e2e` extra (vodozemac wheels): real Olm and Megolm on every client.
    if python_with("vodozemac").is_none() {
        return;
    }
    let Some((server, python)) = server_for_nio("nio-e2ee") else {
        return;
    };
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/nio_e2ee_conversation.py"
    );
    run_script(&server, &python, script, "nio-e2ee");
}
