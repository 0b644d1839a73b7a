//! Process lifecycle: clean stops on SIGTERM and SIGINT, systemd notification, the data
//! directory lock, and start-up errors that say what is wrong.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::{Server, hearth, test_config};

fn stops_cleanly_on(signal: &str) {
    let mut server = Server::start(&test_config(""));
    assert_eq!(server.client().get("/_matrix/client/versions").status, 200);
    server.signal(signal);
    let status = server.wait_exit(Duration::from_secs(15)).expect("exits");
    assert!(
        status.success(),
        "exit status {status}\n{}",
        server.log_text()
    );
    assert!(
        server.wait_for_log("storage flushed"),
        "{}",
        server.log_text()
    );
}

#[test]
fn sigterm_stops_cleanly() {
    stops_cleanly_on("TERM");
}

#[test]
fn sigint_stops_cleanly() {
    stops_cleanly_on("INT");
}

/// `systemctl reload` sends SIGHUP whatever the config: a server without TLS must live on.
#[test]
fn sighup_without_tls_is_harmless() {
    let server = Server::start(&test_config(""));
    server.signal("HUP");
    assert!(
        server.wait_for_log("nothing to reload"),
        "{}",
        server.log_text()
    );
    assert_eq!(server.client().get("/_matrix/client/versions").status, 200);
}

#[test]
fn a_second_process_is_refused_on_a_locked_data_directory() {
    let first = Server::start(&test_config(""));
    let error = Server::start_in(&first.dir, &[], &[])
        .err()
        .expect("second refused");
    assert!(
        error.contains("in use by another Hearth process"),
        "{error}"
    );
    assert!(
        error.contains(&first.child.id().to_string()),
        "names the pid: {error}"
    );
    // The first one is unaffected.
    assert_eq!(first.client().get("/_matrix/client/versions").status, 200);
}

#[test]
fn systemd_is_told_when_ready_and_when_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hearth.toml"), test_config("")).expect("config");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut server = Server::start_in(
        dir.path(),
        &[],
        &[("NOTIFY_SOCKET", socket_path.to_str().expect("utf-8"))],
    )
    .expect("starts");
    let mut buffer = [0u8; 256];
    let n = socket.recv(&mut buffer).expect("READY=1 arrives");
    assert_eq!(&buffer[..n], b"READY=1");
    // Ready means ready: the server answers right away.
    assert_eq!(server.client().get("/_matrix/client/versions").status, 200);
    server.signal("TERM");
    let n = socket.recv(&mut buffer).expect("STOPPING=1 arrives");
    assert_eq!(&buffer[..n], b"STOPPING=1");
    assert!(
        server
            .wait_exit(Duration::from_secs(15))
            .expect("exits")
            .success()
    );
}

#[test]
fn an_invalid_config_stops_start_up_naming_key_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("hearth.toml"),
        "[server]\nserver_name = \"localhost\"\n\n[[listeners]]\naddress = \"not an address\"\n",
    )
    .expect("config");
    let output = hearth(dir.path(), &["serve", "--config", "hearth.toml"], "");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 5"), "{stderr}");
    assert!(stderr.contains("hearth.toml"), "{stderr}");
}

#[test]
fn a_missing_config_file_is_an_error_not_the_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = hearth(dir.path(), &["serve", "--config", "nowhere.toml"], "");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("could not read nowhere.toml"), "{stderr}");
}

#[test]
fn the_signing_key_survives_restarts() {
    let mut server = Server::start(&test_config(""));
    let before = server.client().get("/_matrix/key/v2/server").json()["verify_keys"].clone();
    server.signal("TERM");
    server.wait_exit(Duration::from_secs(15)).expect("exits");
    let dir = server.dir.clone();
    let again = Server::start_in(&dir, &[], &[]).expect("restarts");
    let after = again.client().get("/_matrix/key/v2/server").json()["verify_keys"].clone();
    assert_eq!(before, after);
    drop(again);
    drop(server);
}

#[test]
fn a_waiting_sync_answers_at_once_when_the_server_stops() {
    let mut server = Server::start_with_users(
        &test_config("[limits]\nshutdown_grace_seconds = 25\n"),
        &[("alice", "correct horse battery")],
    );
    let token = common::login_token(&server, "alice", "correct horse battery");
    let first = common::ok(server.client().get_with("/_matrix/client/v3/sync", &token));
    let since = first["next_batch"].as_str().expect("token").to_owned();
    // Readiness, not a pause: the poll is written and the server has taken it (see
    // `waiting_request`) before the signal.
    let started = std::time::Instant::now();
    let waiting = common::waiting_request(
        &server,
        &format!("/_matrix/client/v3/sync?since={since}&timeout=60000&set_presence=offline"),
        &token,
    );
    let stopping = std::time::Instant::now();
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(20)).expect("exits");
    assert!(status.success(), "{}", server.log_text());
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "the stop waited for the poll: {:?}",
        stopping.elapsed()
    );
    let (answer, answered) = waiting.join().expect("sync thread");
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    // It was waiting, and the stop answered it: nothing new, the same position.
    assert!(answered > stopping, "the poll was answered before the stop");
    assert_eq!(answer.json()["next_batch"], first["next_batch"]);
    let waited = answered.duration_since(started);
    assert!(waited < Duration::from_secs(30), "{waited:?}");
}

/// The GLIBC_TUNABLES a running server (process `pid`) has, from /proc.
fn tunables_of(pid: u32) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("read environ");
    environ
        .split(|byte| *byte == 0)
        .find_map(|entry| entry.strip_prefix(b"GLIBC_TUNABLES="))
        .map(|value| String::from_utf8_lossy(value).into_owned())
}

/// The server starts itself again with small per-thread malloc caches (memory at rest,
/// `server/memory.rs`), in the same process, so a supervisor's PID stays right; an owner's
/// own setting is left as it is.
#[test]
fn the_server_runs_with_small_thread_caches_unless_told_otherwise() {
    let server = Server::start(&test_config(""));
    assert_eq!(server.client().get("/_matrix/client/versions").status, 200);
    assert_eq!(
        tunables_of(server.child.id()).as_deref(),
        Some("glibc.malloc.tcache_max=128")
    );

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hearth.toml"), test_config("")).expect("config");
    let own = "glibc.malloc.tcache_count=3";
    let server = Server::start_in(dir.path(), &[], &[("GLIBC_TUNABLES", own)]).expect("starts");
    assert_eq!(server.client().get("/_matrix/client/versions").status, 200);
    assert_eq!(tunables_of(server.child.id()).as_deref(), Some(own));
}
