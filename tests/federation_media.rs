//! Media between two Hearths, and from a server without authenticated media: the federation
//! endpoints' `multipart/mixed` answers (signed requests only), other servers' media
//! fetched into a cache whose size cap evicts the least recently used (and fetched again
//! when asked for), thumbnails of remote media, and the spec's fallback to the legacy
//! download for a server that does not know `/_matrix/federation/v1/media/*`.

mod common;

use std::sync::Arc;

use common::fake::{FakeServer, bind, new_key};
use common::federation::{Signer, signing_key, start, start_with, write_certificates};
use common::{Server, errcode, ok};
use serde_json::json;

const PASSWORD: &str = "correct horse battery";

fn upload(server: &Server, token: &str, body: &[u8], content_type: &str) -> String {
    let answer = server
        .client()
        .request(
            "POST",
            "/_matrix/media/v3/upload?filename=f.bin",
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("Content-Type", content_type),
            ],
            Some(body),
        )
        .expect("upload");
    let uri = ok(answer)["content_uri"].as_str().expect("uri").to_owned();
    uri.strip_prefix("mxc://").expect("mxc").to_owned()
}

fn cached_files(server: &Server) -> usize {
    std::fs::read_dir(server.dir.join("data/media/content"))
        .map(|shards| {
            shards
                .flatten()
                .map(|shard| std::fs::read_dir(shard.path()).map_or(0, |files| files.count()))
                .sum()
        })
        .unwrap_or(0)
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let image =
        image::RgbImage::from_fn(width, height, |x, _| image::Rgb([x.to_le_bytes()[0], 0, 0]));
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(image)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .expect("png");
    bytes
}

#[test]
fn remote_media_are_fetched_cached_and_evicted() {
    let certificates = tempfile::tempdir().expect("tempdir");
    write_certificates(certificates.path());
    let a = start(certificates.path(), "127.0.0.1", &[], &["alice"]);
    let b = start_with(
        certificates.path(),
        "localhost",
        &[],
        &["bob"],
        "[media]\nremote_cache_bytes = 5000\n",
    );
    let alice = common::login_token(&a, "alice", PASSWORD);
    let bob = common::login_token(&b, "bob", PASSWORD);

    // The federation endpoint: signed requests only, answered with multipart/mixed.
    let first = upload(&a, &alice, &[1; 2000], "application/octet-stream");
    let media_id = first.rsplit('/').next().expect("id").to_owned();
    let path = format!("/_matrix/federation/v1/media/download/{media_id}");
    let answer = a.client().get(&path);
    assert_eq!(answer.status, 401);
    let key = signing_key(&b);
    let signer = Signer {
        origin: &b.name,
        key: &key,
        destination: &a.name,
    };
    let answer = signer.get(&a, &path);
    assert_eq!(answer.status, 200);
    let content_type = answer.header("content-type").expect("type").to_owned();
    let boundary = content_type
        .strip_prefix("multipart/mixed; boundary=")
        .expect("multipart");
    let body = String::from_utf8_lossy(&answer.body).into_owned();
    assert!(
        body.starts_with(&format!(
            "--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n"
        )),
        "{body}"
    );
    assert!(body.ends_with(&format!("\r\n--{boundary}--\r\n")));
    assert!(answer.body.windows(2000).any(|window| window == [1; 2000]));
    let answer = signer.get(&a, "/_matrix/federation/v1/media/download/nothingHere");
    assert_eq!(answer.status, 404);

    // Bob reads three of Alice's files through his server; the cache holds 5000 bytes.
    let second = upload(&a, &alice, &[2; 2000], "application/octet-stream");
    let third = upload(&a, &alice, &[3; 2000], "application/octet-stream");
    for (media, byte) in [(&first, 1u8), (&second, 2), (&third, 3)] {
        let answer = b
            .client()
            .get_with(&format!("/_matrix/client/v1/media/download/{media}"), &bob);
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(answer.body, vec![byte; 2000]);
        assert_eq!(
            answer.header("content-disposition"),
            Some("attachment; filename=\"f.bin\"")
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(cached_files(&b), 2, "the least recently used was evicted");
    // Asked for again, it is fetched again.
    let answer = b
        .client()
        .get_with(&format!("/_matrix/client/v1/media/download/{first}"), &bob);
    assert_eq!(answer.body, vec![1; 2000]);
    assert_eq!(cached_files(&b), 2);

    // Thumbnails of remote media, made from the cached original.
    let picture = upload(&a, &alice, &png(300, 200), "image/png");
    let answer = b.client().get_with(
        &format!("/_matrix/client/v1/media/thumbnail/{picture}?width=32&height=32&method=crop"),
        &bob,
    );
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let thumbnail = image::load_from_memory(&answer.body).map_or_else(
        |_| {
            let mut decoder = jpeg_decoder::Decoder::new(answer.body.as_slice());
            decoder.decode().expect("jpeg");
            let info = decoder.info().expect("info");
            (u32::from(info.width), u32::from(info.height))
        },
        |image| (image.width(), image.height()),
    );
    assert_eq!(thumbnail, (32, 32));
    // Media a server does not have is 404 through the other.
    let answer = b.client().get_with(
        &format!("/_matrix/client/v1/media/download/{}/nothingHere", a.name),
        &bob,
    );
    assert_eq!(
        (answer.status, errcode(&answer).as_str()),
        (404, "M_NOT_FOUND")
    );
}

#[test]
fn servers_without_authenticated_media_are_read_through_the_legacy_download() {
    let certificates = tempfile::tempdir().expect("tempdir");
    write_certificates(certificates.path());
    let hearth = start(certificates.path(), "localhost", &[], &["alice"]);
    let alice = common::login_token(&hearth, "alice", PASSWORD);
    let fake = FakeServer::start(
        certificates.path(),
        bind(),
        new_key(),
        Arc::new(|request| {
            if request.path.starts_with("/_matrix/federation/v1/media/") {
                (
                    404,
                    json!({ "errcode": "M_UNRECOGNIZED", "error": "Unrecognized" }),
                )
            } else if request.path.starts_with("/_matrix/media/v3/download/") {
                (200, json!({ "old": "server" }))
            } else {
                (404, json!({ "errcode": "M_NOT_FOUND" }))
            }
        }),
    );
    let answer = hearth.client().get_with(
        &format!(
            "/_matrix/client/v1/media/download/{}/legacyMedia",
            fake.name
        ),
        &alice,
    );
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let value: serde_json::Value = serde_json::from_slice(&answer.body).expect("json");
    assert_eq!(value, json!({ "old": "server" }));
    let paths = fake.paths();
    assert!(
        paths
            .iter()
            .any(|path| path.starts_with("/_matrix/federation/v1/media/download/legacyMedia"))
            && paths
                .iter()
                .any(|path| path.starts_with("/_matrix/media/v3/download/")),
        "{paths:?}"
    );
}
