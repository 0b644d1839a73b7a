//! `hearth media usage | purge-remote | delete-user` while the server runs: the command goes
//! through the control socket, the server does the work, and clients see its effect at once.

mod common;

use common::{Server, hearth, login_token, ok, test_config};

fn run(server: &Server, args: &[&str]) -> String {
    let output = hearth(&server.dir, args, "");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn media_commands_work_while_the_server_runs() {
    let server = Server::start_with_users(&test_config(""), &[("alice", "alice's password")]);
    let alice = login_token(&server, "alice", "alice's password");
    let bearer = format!("Bearer {alice}");
    let answer = ok(server
        .client()
        .request(
            "POST",
            "/_matrix/media/v3/upload",
            &[("Authorization", &bearer), ("Content-Type", "text/plain")],
            Some(b"twelve bytes"),
        )
        .expect("upload"));
    let media = answer["content_uri"]
        .as_str()
        .and_then(|uri| uri.strip_prefix("mxc://"))
        .expect("content uri")
        .to_owned();

    assert_eq!(
        run(&server, &["media", "usage"]),
        "@alice:localhost\t1 files\t12 bytes\n(other servers' media, cached)\t0 bytes\n"
    );
    assert_eq!(
        run(&server, &["media", "purge-remote", "--older-than", "1s"]),
        "removed 0 cached remote file(s), 0 bytes\n"
    );
    assert_eq!(
        run(&server, &["media", "delete-user", "alice"]),
        "deleted 1 file(s) of @alice:localhost, 12 bytes\n"
    );
    let gone = server.client().get_with(
        &format!("/_matrix/client/v1/media/download/{media}"),
        &alice,
    );
    assert_eq!(gone.status, 404);
    assert_eq!(
        run(&server, &["media", "usage"]),
        "(other servers' media, cached)\t0 bytes\n"
    );
    // The server did the work (it holds the database; the CLI could not have opened it).
    for command in ["media usage", "media purge-remote", "media delete-user"] {
        assert!(
            server.wait_for_log(&format!("control: {command}: done")),
            "{command}"
        );
    }
    let bad_age = hearth(
        &server.dir,
        &["media", "purge-remote", "--older-than", "soon"],
        "",
    );
    assert!(!bad_age.status.success());
}
