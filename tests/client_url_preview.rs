//! URL previews through a real Hearth: off by default; when on, OpenGraph read from the
//! `<head>` of a page served on 127.0.0.1 (previews are allowed private addresses in these
//! tests only), redirects followed, answers cached, the byte and time limits kept; and by
//! default, loopback pages refused without a connection.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Server, errcode, login_token, ok, query_encode, test_config};

const PASSWORD: &str = "correct horse battery";

/// A page bigger than the test's byte limit, its tags after the limit.
const PADDING: usize = 64 * 1024;

/// A small web site on 127.0.0.1, counting the connections it accepts.
struct Site {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl Site {
    fn start() -> Site {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || answer(stream));
            }
        });
        Site { port, connections }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Answers one request by its path.
fn answer(mut stream: TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let page = |body: String| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let reply = match path.as_str() {
        "/page" => page(
            "<html><head><title>Ignored</title>\
             <meta property=\"og:title\" content=\"Family &amp; friends\">\
             <meta property=\"og:description\" content=\"Photos from the weekend\">\
             <meta property=\"og:image\" content=\"http://127.0.0.1/cat.png\">\
             </head><body><meta property=\"og:type\" content=\"in the body\"></body></html>"
                .to_owned(),
        ),
        "/moved" => "HTTP/1.1 302 Found\r\nLocation: /page\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
        "/padded" => page(format!(
            "<html><head><title>Padded</title><!--{}--><meta property=\"og:title\" content=\"Too far\"></head></html>",
            "x".repeat(PADDING)
        )),
        "/image.png" => "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 4\r\nConnection: close\r\n\r\n\u{89}PNG".to_owned(),
        "/slow" => {
            // The head, then the body never comes.
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 100000\r\n\r\n<html><head>");
            std::thread::sleep(Duration::from_secs(30));
            return;
        }
        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
    };
    let _ = stream.write_all(reply.as_bytes());
}

fn server(preview_config: &str) -> (Server, String) {
    let config = test_config(preview_config);
    let server = Server::start_with_users(&config, &[("alice", PASSWORD)]);
    let token = login_token(&server, "alice", PASSWORD);
    (server, token)
}

/// Previews on, loopback allowed (the test's site is on 127.0.0.1), small limits.
const ON: &str = "[url_preview]\nenabled = true\nallow_private_addresses = true\n\
                  max_bytes = 16384\ntimeout_seconds = 2\n";

fn preview(server: &Server, token: &str, url: &str, extra: &str) -> common::http::Response {
    let path = format!(
        "/_matrix/client/v1/media/preview_url?url={}{extra}",
        query_encode(url)
    );
    server.client().get_with(&path, token)
}

#[test]
fn previews_are_off_by_default() {
    let site = Site::start();
    let (server, token) = server("");
    for base in [
        "/_matrix/client/v1/media/preview_url",
        "/_matrix/media/v3/preview_url",
    ] {
        let path = format!("{base}?url={}", query_encode(&site.url("/page")));
        let answer = server.client().get_with(&path, &token);
        assert_eq!(answer.status, 404, "{base}");
        assert_eq!(errcode(&answer), "M_UNRECOGNIZED");
    }
    assert_eq!(site.connections(), 0, "nothing was fetched");
}

#[test]
fn open_graph_comes_from_the_head_and_is_cached() {
    let site = Site::start();
    let (server, token) = server(ON);
    let found = ok(preview(&server, &token, &site.url("/page"), ""));
    assert_eq!(found["og:title"], "Family & friends");
    assert_eq!(found["og:description"], "Photos from the weekend");
    assert!(
        found.get("og:type").is_none(),
        "the body is not read: {found}"
    );
    assert!(found.get("og:image").is_none(), "no mxc image: {found}");
    assert_eq!(site.connections(), 1);

    // Cached: the same URL (with a `ts`, and through the deprecated path) fetches nothing.
    let again = ok(preview(
        &server,
        &token,
        &site.url("/page"),
        "&ts=1510610716656",
    ));
    assert_eq!(again, found);
    let legacy = format!(
        "/_matrix/media/v3/preview_url?url={}",
        query_encode(&site.url("/page"))
    );
    assert_eq!(ok(server.client().get_with(&legacy, &token)), found);
    assert_eq!(site.connections(), 1, "answered from the cache");

    let moved = ok(preview(&server, &token, &site.url("/moved"), ""));
    assert_eq!(
        moved["og:title"], "Family & friends",
        "the redirect was followed"
    );
    let image = ok(preview(&server, &token, &site.url("/image.png"), ""));
    assert_eq!(image, serde_json::json!({}), "not HTML: nothing to tell");
}

#[test]
fn bad_requests_get_the_spec_errors() {
    let site = Site::start();
    let (server, token) = server(ON);
    let bad_ts = preview(&server, &token, &site.url("/page"), "&ts=yesterday");
    assert_eq!(
        (bad_ts.status, errcode(&bad_ts)),
        (400, "M_INVALID_PARAM".into())
    );
    for url in ["ftp://127.0.0.1/file", "not a url", "file:///etc/passwd"] {
        let answer = preview(&server, &token, url, "");
        assert_eq!(
            (answer.status, errcode(&answer)),
            (400, "M_INVALID_PARAM".into()),
            "{url}"
        );
    }
    let missing = server
        .client()
        .get_with("/_matrix/client/v1/media/preview_url", &token);
    assert_eq!(
        (missing.status, errcode(&missing)),
        (400, "M_MISSING_PARAM".into())
    );
    let anonymous = server.client().get(&format!(
        "/_matrix/client/v1/media/preview_url?url={}",
        query_encode(&site.url("/page"))
    ));
    assert_eq!(anonymous.status, 401);
    let gone = preview(&server, &token, &site.url("/nothing-here"), "");
    assert_eq!(gone.status, 502);
    assert_eq!(site.connections(), 1, "only the missing page was asked for");
}

#[test]
fn byte_and_time_limits_hold() {
    let site = Site::start();
    let (server, token) = server(ON);
    // The tags sit after the 16 KiB read: the title before them is all there is.
    let padded = ok(preview(&server, &token, &site.url("/padded"), ""));
    assert_eq!(padded["og:title"], "Padded", "{padded}");
    let started = Instant::now();
    let slow = preview(&server, &token, &site.url("/slow"), "");
    let took = started.elapsed();
    assert_eq!(slow.status, 502, "{}", String::from_utf8_lossy(&slow.body));
    assert!(took < Duration::from_secs(6), "gave up after {took:?}");
    let health = server.client().get("/_matrix/client/versions");
    assert_eq!(health.status, 200);
}

#[test]
fn private_addresses_are_refused_by_default() {
    let site = Site::start();
    // On, but private addresses not allowed (the default), while federation may reach them:
    // previews have a policy of their own.
    let (server, token) =
        server("[url_preview]\nenabled = true\n\n[federation]\nallow_private_addresses = true\n");
    let port = site.port;
    for url in [
        site.url("/page"),
        format!("http://localhost:{port}/page"),
        format!("http://127.1:{port}/page"),
        format!("http://[::ffff:127.0.0.1]:{port}/page"),
        format!("https://127.0.0.1:{port}/page"),
    ] {
        let answer = preview(&server, &token, &url, "");
        assert_eq!(answer.status, 502, "{url}");
        let message = answer.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            !message.contains("private") && !message.contains("127.0.0.1"),
            "{message}"
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(site.connections(), 0, "nothing connected");
}
