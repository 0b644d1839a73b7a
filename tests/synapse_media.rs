//! Media between Hearth and a real Synapse (from PyPI, `HEARTH_TEST_SYNAPSE_PYTHON`), both
//! ways: each side's user downloads and thumbnails what the other side's user uploaded,
//! through their own server, which fetches it over federation (the authenticated
//! `/_matrix/federation/v1/media/*` endpoints and their `multipart/mixed` answers); and an
//! asynchronous upload on each side, downloaded from the other while it waits for content.

mod common;

use std::io::Cursor;
use std::net::SocketAddr;
use std::time::Duration;

use common::federation::{start, write_certificates};
use common::http::{Client, Response};
use common::synapse::{PASSWORD, Synapse, synapse_python};
use serde_json::json;

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([x.to_le_bytes()[0], y.to_le_bytes()[0], 200])
    });
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
        .expect("encode png");
    bytes
}

fn upload(address: SocketAddr, token: &str, body: &[u8], name: &str) -> String {
    let answer = Client::plain(address)
        .request(
            "POST",
            &format!("/_matrix/media/v3/upload?filename={name}"),
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("Content-Type", "image/png"),
            ],
            Some(body),
        )
        .expect("upload");
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let uri = answer.json()["content_uri"]
        .as_str()
        .expect("content_uri")
        .to_owned();
    uri.strip_prefix("mxc://").expect("mxc").to_owned()
}

fn get(address: SocketAddr, token: &str, path: &str) -> Response {
    Client::plain(address).get_with(path, token)
}

/// The size of a thumbnail, decoded (JPEG or PNG).
fn decoded_size(response: &Response) -> (u32, u32) {
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    if response.header("content-type") == Some("image/jpeg") {
        let mut decoder = jpeg_decoder::Decoder::new(response.body.as_slice());
        decoder.decode().expect("a JPEG thumbnail");
        let info = decoder.info().expect("info");
        return (u32::from(info.width), u32::from(info.height));
    }
    let image = image::load_from_memory(&response.body).expect("an image thumbnail");
    (image.width(), image.height())
}

/// `server/id` of a new asynchronous upload's ID.
fn create(address: SocketAddr, token: &str) -> String {
    let answer =
        Client::plain(address).json("POST", "/_matrix/media/v1/create", Some(token), &json!({}));
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let uri = answer.json()["content_uri"]
        .as_str()
        .expect("uri")
        .to_owned();
    uri.strip_prefix("mxc://").expect("mxc").to_owned()
}

fn put(address: SocketAddr, token: &str, media: &str, body: &[u8]) {
    let answer = Client::plain(address)
        .request(
            "PUT",
            &format!("/_matrix/media/v3/upload/{media}"),
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("Content-Type", "text/plain"),
            ],
            Some(body),
        )
        .expect("put");
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
}

/// A download of `media` through `address` that waits for its content, in a thread.
fn waiting_download(
    address: SocketAddr,
    token: &str,
    media: &str,
) -> std::thread::JoinHandle<Response> {
    let (token, media) = (token.to_owned(), media.to_owned());
    std::thread::spawn(move || {
        get(
            address,
            &token,
            &format!("/_matrix/client/v1/media/download/{media}?timeout_ms=30000"),
        )
    })
}

#[test]
fn media_flow_between_hearth_and_synapse() {
    let Some(python) = synapse_python() else {
        return;
    };
    let certificates = tempfile::tempdir().expect("tempdir");
    write_certificates(certificates.path());
    let synapse = Synapse::start(&python, certificates.path());
    let carol = synapse.register(&python, "carol");
    let hearth = start(certificates.path(), "localhost", &[], &["alice"]);
    let alice = common::login_token(&hearth, "alice", PASSWORD);
    let (on_hearth, on_synapse) = (hearth.address("http"), synapse.client);

    // Hearth's media, read by Synapse's user through Synapse.
    let ours = png(400, 300);
    let media = upload(on_hearth, &alice, &ours, "sun.png");
    let answer = get(
        on_synapse,
        &carol,
        &format!("/_matrix/client/v1/media/download/{media}"),
    );
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.body, ours);
    let thumbnail = get(
        on_synapse,
        &carol,
        &format!("/_matrix/client/v1/media/thumbnail/{media}?width=32&height=32&method=crop"),
    );
    assert_eq!(decoded_size(&thumbnail), (32, 32));

    // Synapse's media, read by Hearth's user through Hearth (fetched once, then cached).
    let theirs = png(500, 250);
    let media = upload(on_synapse, &carol, &theirs, "moon.png");
    let answer = get(
        on_hearth,
        &alice,
        &format!("/_matrix/client/v1/media/download/{media}"),
    );
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.body, theirs);
    assert_eq!(answer.header("content-type"), Some("image/png"));
    assert_eq!(
        answer.header("content-disposition"),
        Some("inline; filename=\"moon.png\"")
    );
    let crop = get(
        on_hearth,
        &alice,
        &format!("/_matrix/client/v1/media/thumbnail/{media}?width=96&height=96&method=crop"),
    );
    assert_eq!(decoded_size(&crop), (96, 96));
    let scale = get(
        on_hearth,
        &alice,
        &format!("/_matrix/client/v1/media/thumbnail/{media}?width=320&height=240&method=scale"),
    );
    assert_eq!(decoded_size(&scale), (320, 160));

    // Asynchronous uploads, each waited for from the other side.
    let pending = create(on_hearth, &alice);
    let waiting = waiting_download(on_synapse, &carol, &pending);
    std::thread::sleep(Duration::from_secs(1));
    put(on_hearth, &alice, &pending, b"from hearth, later");
    let answer = waiting.join().expect("Synapse's download");
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.body, b"from hearth, later");

    let pending = create(on_synapse, &carol);
    let waiting = waiting_download(on_hearth, &alice, &pending);
    std::thread::sleep(Duration::from_secs(1));
    put(on_synapse, &carol, &pending, b"from synapse, later");
    let answer = waiting.join().expect("Hearth's download");
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.body, b"from synapse, later");

    // Both fetched through the authenticated federation endpoints, not a fallback: Synapse
    // logs the requests it served and the ones it sent.
    let log = synapse.log();
    let endpoint = "/_matrix/federation/v1/media/download/";
    assert!(
        log.lines()
            .any(|line| line.contains("Processed request") && line.contains(endpoint)),
        "Hearth did not use Synapse's federation media endpoint"
    );
    assert!(
        log.lines().any(|line| line.contains(&hearth.name)
            && line.contains(endpoint)
            && !line.contains("Processed request")),
        "Synapse did not use Hearth's federation media endpoint"
    );
}
