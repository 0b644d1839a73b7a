//! The content repository through HTTP on one Hearth: uploads and downloads with their safe
//! headers, both thumbnail methods (decoded back), asynchronous uploads with a waiting
//! download, quotas and caps, every error, a decompression bomb, path tricks, and the
//! `hearth media` commands.

mod common;

use std::io::Cursor;
use std::time::Duration;

use common::{Server, errcode, ok, test_config};
use serde_json::json;

const PASSWORD: &str = "correct horse battery";

fn login(server: &Server, user: &str) -> String {
    common::login_token(server, user, PASSWORD)
}

fn start(extra: &str) -> Server {
    Server::start_with_users(
        &test_config(&format!(
            "[limits]\nauth_attempts_per_minute = 100000\n\n{extra}"
        )),
        &[("alice", PASSWORD), ("bob", PASSWORD)],
    )
}

/// A PNG of `width` × `height` with a gradient (so thumbnails have something to show).
fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([x.to_le_bytes()[0], y.to_le_bytes()[0], 128])
    });
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
        .expect("encode png");
    bytes
}

/// A JPEG of `width` × `height`.
fn jpeg(width: u16, height: u16) -> Vec<u8> {
    let pixels: Vec<u8> = (0..u32::from(width) * u32::from(height))
        .flat_map(|i| [i.to_le_bytes()[0], (i / 256).to_le_bytes()[0], 90])
        .collect();
    let mut bytes = Vec::new();
    jpeg_encoder::Encoder::new(&mut bytes, 85)
        .encode(&pixels, width, height, jpeg_encoder::ColorType::Rgb)
        .expect("encode jpeg");
    bytes
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A small PNG whose header claims `width` × `height`: a decompression bomb as far as a
/// decoder that trusts it is concerned.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = png(1, 1);
    // Signature (8), IHDR length (4) and type (4), then width and height.
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

fn upload(
    server: &Server,
    token: &str,
    body: &[u8],
    content_type: &str,
    filename: Option<&str>,
) -> common::http::Response {
    let bearer = format!("Bearer {token}");
    let path = match filename {
        Some(name) => format!(
            "/_matrix/media/v3/upload?filename={}",
            common::query_encode(name)
        ),
        None => "/_matrix/media/v3/upload".to_owned(),
    };
    server
        .client()
        .request(
            "POST",
            &path,
            &[("Authorization", &bearer), ("Content-Type", content_type)],
            Some(body),
        )
        .expect("upload")
}

/// `server/id` of an `mxc://` URI.
fn media_path(content_uri: &str) -> String {
    content_uri
        .strip_prefix("mxc://")
        .expect("an mxc URI")
        .to_owned()
}

fn uploaded(
    server: &Server,
    token: &str,
    body: &[u8],
    content_type: &str,
    name: Option<&str>,
) -> String {
    let answer = ok(upload(server, token, body, content_type, name));
    media_path(answer["content_uri"].as_str().expect("content_uri"))
}

fn get(server: &Server, token: &str, path: &str) -> common::http::Response {
    server.client().get_with(path, token)
}

fn decoded_size(response: &common::http::Response) -> (u32, u32) {
    match response.header("content-type") {
        Some("image/jpeg") => {
            let mut decoder = jpeg_decoder::Decoder::new(response.body.as_slice());
            decoder.decode().expect("a JPEG thumbnail");
            let info = decoder.info().expect("info");
            (u32::from(info.width), u32::from(info.height))
        }
        other => {
            let image = image::load_from_memory(&response.body)
                .unwrap_or_else(|err| panic!("a {other:?} thumbnail: {err}"));
            (image.width(), image.height())
        }
    }
}

#[test]
fn upload_download_and_safe_headers() {
    let server = start("");
    let alice = login(&server, "alice");
    let config = ok(get(&server, &alice, "/_matrix/client/v1/media/config"));
    assert_eq!(config["m.upload.size"], 50 * 1024 * 1024);

    let picture = png(40, 30);
    let media = uploaded(&server, &alice, &picture, "image/png", Some("cat.png"));
    assert!(media.starts_with("localhost/"), "{media}");
    let answer = get(
        &server,
        &alice,
        &format!("/_matrix/client/v1/media/download/{media}"),
    );
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, picture);
    assert_eq!(answer.header("content-type"), Some("image/png"));
    assert_eq!(
        answer.header("content-disposition"),
        Some("inline; filename=\"cat.png\"")
    );
    assert!(
        answer
            .header("content-security-policy")
            .is_some_and(|policy| policy.starts_with("sandbox")),
        "{:?}",
        answer.headers
    );
    assert_eq!(
        answer.header("cross-origin-resource-policy"),
        Some("cross-origin")
    );
    // A name in the path wins over the uploaded one.
    let named = get(
        &server,
        &alice,
        &format!("/_matrix/client/v1/media/download/{media}/kitten.png"),
    );
    assert_eq!(
        named.header("content-disposition"),
        Some("inline; filename=\"kitten.png\"")
    );

    // Types a browser could run are attachments; unusual names are encoded (RFC 5987).
    let page = uploaded(
        &server,
        &alice,
        b"<script>alert(1)</script>",
        "text/html",
        Some("café.html"),
    );
    let answer = get(
        &server,
        &alice,
        &format!("/_matrix/client/v1/media/download/{page}"),
    );
    assert_eq!(answer.header("content-type"), Some("text/html"));
    assert_eq!(
        answer.header("content-disposition"),
        Some("attachment; filename*=utf-8''caf%C3%A9.html")
    );

    // The same bytes twice are stored once.
    let again = uploaded(&server, &alice, &picture, "image/png", None);
    assert_ne!(again, media);
    let mut files = 0;
    for shard in std::fs::read_dir(server.dir.join("data/media/content")).expect("content") {
        files += std::fs::read_dir(shard.expect("shard").path())
            .expect("shard")
            .count();
    }
    assert_eq!(files, 2, "the picture and the page");

    // Bob reads Alice's media too (media are not per-user), and an unknown ID is 404.
    let bob = login(&server, "bob");
    let answer = get(
        &server,
        &bob,
        &format!("/_matrix/client/v1/media/download/{media}"),
    );
    assert_eq!(answer.body, picture);
    let answer = get(
        &server,
        &bob,
        "/_matrix/client/v1/media/download/localhost/nothingHere",
    );
    assert_eq!(
        (answer.status, errcode(&answer).as_str()),
        (404, "M_NOT_FOUND")
    );
}

#[test]
fn thumbnails_crop_and_scale() {
    let server = start("");
    let alice = login(&server, "alice");
    let wide = uploaded(&server, &alice, &png(1000, 500), "image/png", None);
    let photo = uploaded(&server, &alice, &jpeg(2000, 1500), "image/jpeg", None);

    let crop = get(
        &server,
        &alice,
        &format!("/_matrix/client/v1/media/thumbnail/{wide}?width=30&height=30&method=crop"),
    );
    assert_eq!(crop.status, 200, "{}", String::from_utf8_lossy(&crop.body));
    assert_eq!(decoded_size(&crop), (32, 32));
    let scale = get(
        &server,
        &alice,
        &format!("/_matrix/client/v1/media/thumbnail/{wide}?width=320&height=240&method=scale"),
    );
    assert_eq!(decoded_size(&scale), (320, 160));
    let from_jpeg = get(
        &server,
        &alice,
        &format!("/_matrix/client/v1/media/thumbnail/{photo}?width=600&height=400"),
    );
    assert_eq!(from_jpeg.header("content-type"), Some("image/jpeg"));
    assert_eq!(decoded_size(&from_jpeg), (640, 480));
    assert!(
        from_jpeg
            .header("content-disposition")
            .is_some_and(|value| value.starts_with("inline")),
    );
    // Made once, kept: asked again, the same bytes.
    let again = get(
        &server,
        &alice,
        &format!("/_matrix/client/v1/media/thumbnail/{photo}?width=640&height=480"),
    );
    assert_eq!(again.body, from_jpeg.body);
    assert!(server.dir.join("data/media/thumbnails").is_dir());

    // What cannot be thumbnailed, and nonsense sizes.
    let text = uploaded(&server, &alice, b"just words", "text/plain", None);
    let answer = get(
        &server,
        &alice,
        &format!("/_matrix/client/v1/media/thumbnail/{text}?width=32&height=32"),
    );
    assert_eq!(answer.status, 400);
    for query in [
        "width=-1&height=32",
        "width=32",
        "width=abc&height=3",
        "width=32&height=32&method=stretch",
    ] {
        let answer = get(
            &server,
            &alice,
            &format!("/_matrix/client/v1/media/thumbnail/{wide}?{query}"),
        );
        assert_eq!(answer.status, 400, "{query}");
        assert!(
            ["M_INVALID_PARAM", "M_MISSING_PARAM"].contains(&errcode(&answer).as_str()),
            "{query}: {}",
            errcode(&answer)
        );
    }
}

#[test]
fn decompression_bombs_are_refused_from_their_header() {
    let server = start("");
    let alice = login(&server, "alice");
    let bomb = png_claiming(50_000, 50_000);
    assert!(bomb.len() < 200);
    let media = uploaded(&server, &alice, &bomb, "image/png", None);
    let answer = get(
        &server,
        &alice,
        &format!("/_matrix/client/v1/media/thumbnail/{media}?width=96&height=96&method=crop"),
    );
    assert_eq!(
        (answer.status, errcode(&answer).as_str()),
        (413, "M_TOO_LARGE")
    );
    // The server is still there, and still thumbnails.
    let fine = uploaded(&server, &alice, &png(100, 100), "image/png", None);
    let answer = get(
        &server,
        &alice,
        &format!("/_matrix/client/v1/media/thumbnail/{fine}?width=96&height=96&method=crop"),
    );
    assert_eq!(decoded_size(&answer), (96, 96));
}

#[test]
fn asynchronous_uploads() {
    let server = start("[media]\nmax_pending_uploads = 3\n");
    let alice = login(&server, "alice");
    let bob = login(&server, "bob");
    let mut client = server.client();
    let created = ok(client.json("POST", "/_matrix/media/v1/create", Some(&alice), &json!({})));
    let media = media_path(created["content_uri"].as_str().expect("uri"));
    assert!(created["unused_expires_at"].as_u64().expect("expiry") > 0);

    // Not there yet: a short wait ends in 504.
    let answer = get(
        &server,
        &alice,
        &format!("/_matrix/client/v1/media/download/{media}?timeout_ms=100"),
    );
    assert_eq!(
        (answer.status, errcode(&answer).as_str()),
        (504, "M_NOT_YET_UPLOADED")
    );
    // A longer one is answered when the content arrives.
    let waiting = common::waiting_request(
        &server,
        &format!("/_matrix/client/v1/media/download/{media}?timeout_ms=20000"),
        &bob,
    );
    std::thread::sleep(Duration::from_millis(200));
    // Only the creator uploads.
    let put = |token: &str, body: &[u8]| {
        server
            .client()
            .request(
                "PUT",
                &format!("/_matrix/media/v3/upload/{media}?filename=later.txt"),
                &[
                    ("Authorization", &format!("Bearer {token}")),
                    ("Content-Type", "text/plain"),
                ],
                Some(body),
            )
            .expect("put")
    };
    let answer = put(&bob, b"not mine");
    assert_eq!(
        (answer.status, errcode(&answer).as_str()),
        (403, "M_FORBIDDEN")
    );
    ok(put(&alice, b"worth the wait"));
    let (answer, _) = waiting.join().expect("the waiting download");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, b"worth the wait");
    assert_eq!(
        answer.header("content-disposition"),
        Some("inline; filename=\"later.txt\"")
    );
    let answer = put(&alice, b"again");
    assert_eq!(
        (answer.status, errcode(&answer).as_str()),
        (409, "M_CANNOT_OVERWRITE_MEDIA")
    );

    // At most three unused IDs at once.
    for _ in 0..3 {
        ok(client.json("POST", "/_matrix/media/v1/create", Some(&alice), &json!({})));
    }
    let answer = client.json("POST", "/_matrix/media/v1/create", Some(&alice), &json!({}));
    assert_eq!(
        (answer.status, errcode(&answer).as_str()),
        (429, "M_LIMIT_EXCEEDED")
    );
    // Another user has their own allowance; IDs on other servers cannot be uploaded to.
    ok(client.json("POST", "/_matrix/media/v1/create", Some(&bob), &json!({})));
    let answer = server
        .client()
        .request(
            "PUT",
            "/_matrix/media/v3/upload/elsewhere.example/abc",
            &[("Authorization", &format!("Bearer {alice}"))],
            Some(b"x"),
        )
        .expect("put");
    assert_eq!(answer.status, 404);
}

#[test]
fn caps_quotas_and_errors() {
    let server = start("[media]\nmax_upload_size = 4096\nuser_quota_bytes = 6000\n");
    let alice = login(&server, "alice");
    // No token, no upload (and no download).
    let answer = server
        .client()
        .request("POST", "/_matrix/media/v3/upload", &[], Some(b"x"))
        .expect("upload");
    assert_eq!(
        (answer.status, errcode(&answer).as_str()),
        (401, "M_MISSING_TOKEN")
    );
    let answer = server.client().get("/_matrix/client/v1/media/config");
    assert_eq!(answer.status, 401);
    // Over the cap: refused from its Content-Length, and when it comes without one.
    let answer = upload(
        &server,
        &alice,
        &vec![7; 5000],
        "application/octet-stream",
        None,
    );
    assert_eq!(
        (answer.status, errcode(&answer).as_str()),
        (413, "M_TOO_LARGE")
    );
    let chunked = {
        let mut raw = format!(
            "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        for _ in 0..5 {
            raw.extend_from_slice(b"3e8\r\n");
            raw.extend_from_slice(&[b'a'; 1000]);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"0\r\n\r\n");
        common::catalogue::raw_exchange(server.address("http"), &raw).expect("answer")
    };
    assert_eq!(chunked.status, 413);
    assert!(
        std::fs::read_dir(server.dir.join("data/media/tmp"))
            .map(|dir| dir.count())
            .unwrap_or(0)
            == 0,
        "refused uploads leave no temporary file"
    );
    // The quota: 4000 bytes fit, 4000 more do not.
    uploaded(
        &server,
        &alice,
        &[1; 4000],
        "application/octet-stream",
        None,
    );
    let answer = upload(
        &server,
        &alice,
        &[2; 4000],
        "application/octet-stream",
        None,
    );
    assert_eq!(
        (answer.status, errcode(&answer).as_str()),
        (413, "M_TOO_LARGE")
    );
    uploaded(
        &server,
        &alice,
        &[3; 1000],
        "application/octet-stream",
        None,
    );

    // The frozen legacy endpoints serve nothing uploaded now.
    let media = uploaded(
        &server,
        &login(&server, "bob"),
        b"hello",
        "text/plain",
        None,
    );
    let answer = server
        .client()
        .get(&format!("/_matrix/media/v3/download/{media}"));
    assert_eq!(
        (answer.status, errcode(&answer).as_str()),
        (404, "M_NOT_FOUND")
    );
    let answer = server.client().get(&format!(
        "/_matrix/media/v3/thumbnail/{media}?width=32&height=32"
    ));
    assert_eq!(answer.status, 404);
}

#[test]
fn path_tricks_in_media_ids_are_refused() {
    let server = start("");
    let alice = login(&server, "alice");
    std::fs::write(server.dir.join("secret.txt"), "do not serve").expect("write");
    for path in [
        "/_matrix/client/v1/media/download/localhost/..%2F..%2Fsecret.txt",
        "/_matrix/client/v1/media/download/localhost/%2E%2E",
        "/_matrix/client/v1/media/download/localhost/a%00b",
        "/_matrix/client/v1/media/download/..%2Fmedia/abc",
        "/_matrix/client/v1/media/thumbnail/localhost/..%2Fsecret.txt?width=32&height=32",
        "/_matrix/client/v1/media/download/localhost/..",
    ] {
        let answer = get(&server, &alice, path);
        assert!(
            [400, 404].contains(&answer.status),
            "{path}: {}",
            answer.status
        );
        assert!(
            !String::from_utf8_lossy(&answer.body).contains("do not serve"),
            "{path}"
        );
        let code = errcode(&answer);
        assert!(
            ["M_INVALID_PARAM", "M_NOT_FOUND", "M_UNRECOGNIZED"].contains(&code.as_str()),
            "{path}: {code}"
        );
    }
    let answer = server
        .client()
        .request(
            "PUT",
            "/_matrix/media/v3/upload/localhost/..%2F..%2Fx",
            &[("Authorization", &format!("Bearer {alice}"))],
            Some(b"x"),
        )
        .expect("put");
    assert_eq!(answer.status, 400);
}

#[test]
fn the_media_commands() {
    let mut server = start("");
    let alice = login(&server, "alice");
    uploaded(
        &server,
        &alice,
        &[5; 3000],
        "application/octet-stream",
        None,
    );
    uploaded(
        &server,
        &alice,
        &[6; 2000],
        "application/octet-stream",
        None,
    );
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(20)).is_some());
    let usage = common::hearth(&server.dir, &["media", "usage"], "");
    let text = String::from_utf8_lossy(&usage.stdout);
    assert!(
        usage.status.success(),
        "{}",
        String::from_utf8_lossy(&usage.stderr)
    );
    assert!(
        text.contains("@alice:localhost\t2 files\t5000 bytes"),
        "{text}"
    );
    let purge = common::hearth(
        &server.dir,
        &["media", "purge-remote", "--older-than", "1d"],
        "",
    );
    assert!(purge.status.success());
    assert!(String::from_utf8_lossy(&purge.stdout).contains("removed 0"));
    let delete = common::hearth(&server.dir, &["media", "delete-user", "alice"], "");
    assert!(
        delete.status.success(),
        "{}",
        String::from_utf8_lossy(&delete.stderr)
    );
    assert!(String::from_utf8_lossy(&delete.stdout).contains("deleted 2 file(s)"));
    let mut left = 0;
    for shard in std::fs::read_dir(server.dir.join("data/media/content")).expect("content") {
        left += std::fs::read_dir(shard.expect("shard").path())
            .expect("shard")
            .count();
    }
    assert_eq!(left, 0);
    let usage = common::hearth(&server.dir, &["media", "usage"], "");
    assert!(!String::from_utf8_lossy(&usage.stdout).contains("@alice"));
}
