//! A web client in a real browser (issue 13): the Hydrogen web client, bundled from npm's
//! `hydrogen-view-sdk`, in Debian's headless Chromium driven by `puppeteer-core`
//! (`tests/browser/hydrogen.mjs`). Alice logs in through Hydrogen's form, sees the room list,
//! opens the family room, sends a message; Bob replies through the HTTP API and Alice sees it.
//! Hydrogen speaks the legacy `r0` paths and is served from another origin than Hearth, so
//! this also proves the r0 mapping and the CORS headers with a real browser.
//!
//! `scripts/test` installs Chromium and `npm ci`s `tests/browser` first; without them the test
//! is skipped outside CI and fails in CI. The screenshot's path is printed (nextest shows this
//! test's output even when it passes: `.config/nextest.toml`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Server, ok, test_config};
use serde_json::json;

const ALICE_PASSWORD: &str = "alice's long password";
const BOB_PASSWORD: &str = "bob's long password";
const ROOM_NAME: &str = "Family room";

/// The browser, Node and the test's node_modules, or `None` (skipped) outside CI.
fn browser_tools() -> Option<(PathBuf, String)> {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let present = folder.join("node_modules/puppeteer-core").is_dir()
        && folder.join("node_modules/hydrogen-view-sdk").is_dir()
        && Path::new(&chromium).exists();
    if present {
        return Some((folder, chromium));
    }
    assert!(
        std::env::var_os("CI").is_none() && std::env::var_os("HEARTH_TEST_BROWSER").is_none(),
        "no Chromium at {chromium} or no tests/browser/node_modules: run the tests with scripts/test"
    );
    eprintln!("SKIPPED: no Chromium or tests/browser/node_modules; scripts/test installs them");
    None
}

/// Where the screenshot goes: kept after the test (CI keeps the log that names it).
fn screenshot_path() -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    std::env::temp_dir()
        .join("hearth-browser-test")
        .join(format!("hydrogen-{stamp}-{}.png", std::process::id()))
}

#[test]
fn hydrogen_logs_in_opens_the_room_sends_and_sees_the_reply() {
    let Some((folder, chromium)) = browser_tools() else {
        return;
    };
    let server = Server::start_with_users(
        &test_config("[limits]\nauth_attempts_per_minute = 100000\n"),
        &[("alice", ALICE_PASSWORD), ("bob", BOB_PASSWORD)],
    );
    let alice = common::login_token(&server, "alice", ALICE_PASSWORD);
    let bob = common::login_token(&server, "bob", BOB_PASSWORD);
    let mut client = server.client();
    let room = ok(client.json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&bob),
        &json!({ "name": ROOM_NAME, "invite": ["@alice:localhost"], "preset": "private_chat" }),
    ))["room_id"]
        .as_str()
        .expect("room_id")
        .to_owned();
    ok(client.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/join"),
        Some(&alice),
        &json!({}),
    ));

    let screenshot = screenshot_path();
    let hearth = format!("http://{}", server.address("http"));
    let output = common::output_within(
        Command::new("node")
            .arg(folder.join("hydrogen.mjs"))
            .current_dir(&folder)
            .env("HEARTH_URL", &hearth)
            .env("HEARTH_USER", "alice")
            .env("HEARTH_PASSWORD", ALICE_PASSWORD)
            .env("HEARTH_ROOM_NAME", ROOM_NAME)
            .env("HEARTH_ROOM_ID", &room)
            .env("HEARTH_OTHER_TOKEN", &bob)
            .env("SCREENSHOT", &screenshot)
            .env("CHROMIUM", &chromium),
        Duration::from_secs(280),
    );
    // The script writes its steps, the page's console and what Hearth refused to stderr.
    let log = String::from_utf8_lossy(&output.stderr);
    println!("{}{log}", String::from_utf8_lossy(&output.stdout));
    println!("screenshot of Hydrogen: {}", screenshot.display());
    assert!(
        output.status.success() && log.contains("browser: PASSED"),
        "the browser test failed (its log and the page's console are above; screenshot: {})",
        screenshot.display()
    );

    // What Hydrogen sent reached the room, as Bob reads it.
    let sent = log
        .lines()
        .find_map(|line| line.strip_prefix("browser: sent "))
        .and_then(|quoted| serde_json::from_str::<String>(quoted).ok())
        .expect("the browser names the message it sent");
    let messages = ok(client.get_with(
        &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=20"),
        &bob,
    ));
    let bodies: Vec<&str> = messages["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter(|event| event["sender"] == "@alice:localhost")
        .filter_map(|event| event["content"]["body"].as_str())
        .collect();
    assert!(bodies.contains(&sent.as_str()), "{bodies:?}");
}
