//! Real client libraries that nobody here wrote, driving a Hearth started by the test.
//! The test command (scripts/test) installs them into a virtualenv and points
//! `HEARTH_TEST_PYTHON` at it; CI insists on them.

mod common;

use std::process::Command;

use common::{Server, hearth, test_config};

/// The Python with the packages of tests/requirements.txt, or `None` (with a note) on a
/// developer machine without them.
fn python_with(module: &str) -> Option<String> {
    let python = std::env::var("HEARTH_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let present = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|status| status.success());
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

#[test]
fn matrix_nio_manages_accounts_and_devices() {
    let Some(python) = python_with("nio") else {
        return;
    };
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
    let token = hearth(dir.path(), &["token", "add", "nio-test", "--uses", "1"], "");
    assert!(token.status.success());
    let server = Server::start_in(dir.path(), &[], &[]).expect("starts");
    let url = format!("http://{}", server.address("http"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/nio_accounts.py");
    let output = Command::new(&python)
        .args([script, &url, "nio-test"])
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "matrix-nio failed:\n{}{}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        server.log_text()
    );
}
