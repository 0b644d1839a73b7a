//! Strangers at the HTTP layer, against the real server over raw TCP: bodies that never
//! finish, bodies too large for their endpoint, unauthenticated bodies past the server-wide
//! budget, signed requests from origins without a usable key, and one address holding many
//! connections. Each must be refused cheaply (a status with a JSON error, the connection
//! closed where it would otherwise be held) while the server keeps answering others.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{Server, test_config};
use serde_json::Value;

/// A TCP connection to `server` from `source` (any address of 127.0.0.0/8: the tests play
/// different clients from different loopback addresses).
fn connect_from(server: SocketAddr, source: IpAddr) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(source, 0)).expect("bind");
        socket.connect(server).await.expect("connect")
    });
    let stream = stream.into_std().expect("std stream");
    stream.set_nonblocking(false).expect("blocking");
    stream
}

fn connect(server: &Server) -> TcpStream {
    TcpStream::connect(server.address("http")).expect("connect")
}

/// Sends a request head and the first bytes of its body (`sent` of them).
fn start_request(stream: &mut TcpStream, method: &str, path: &str, headers: &str, sent: &[u8]) {
    let head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n");
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(sent).expect("write body");
}

/// The status and JSON body of the answer on `stream`, or `None` if none came in `timeout`.
fn answer(stream: &mut TcpStream, timeout: Duration) -> Option<(u16, Value)> {
    let deadline = Instant::now() + timeout;
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_string();
            let status = head.split(' ').nth(1)?.parse().ok()?;
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                let body =
                    serde_json::from_slice(&data[end + 4..end + 4 + length]).unwrap_or(Value::Null);
                return Some((status, body));
            }
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        match stream.read(&mut buffer) {
            Ok(0) => return None,
            Ok(n) => data.extend_from_slice(&buffer[..n]),
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None;
            }
            Err(_) => return None,
        }
    }
}

/// Whether the server closes `stream` within `timeout` (end of stream or a reset).
fn closed_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buffer = [0u8; 4096];
    loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return false;
        };
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

fn versions_answers(server: &Server) -> Duration {
    let started = Instant::now();
    let mut stream = connect(server);
    start_request(&mut stream, "GET", "/_matrix/client/versions", "", b"");
    let (status, _) = answer(&mut stream, Duration::from_secs(5)).expect("/versions answers");
    assert_eq!(status, 200);
    started.elapsed()
}

const LOGIN: &str = "/_matrix/client/v3/login";
const PASSWORD: &str = "correct horse battery";

#[test]
fn a_slow_body_gets_408_and_its_connection_is_closed_in_time() {
    let server = Server::start(&test_config("[limits]\nbody_timeout_seconds = 2\n"));
    let started = Instant::now();
    let mut stream = connect(&server);
    start_request(
        &mut stream,
        "POST",
        LOGIN,
        "Content-Length: 1000\r\n",
        b"{\"type\": \"",
    );
    let (status, body) = answer(&mut stream, Duration::from_secs(10)).expect("an answer");
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["errcode"], "M_UNKNOWN");
    assert!(closed_within(&mut stream, Duration::from_secs(3)));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(6),
        "{elapsed:?}"
    );

    // The same for a chunked body that never ends.
    let mut stream = connect(&server);
    start_request(
        &mut stream,
        "POST",
        LOGIN,
        "Transfer-Encoding: chunked\r\n",
        b"5\r\n{\"typ\r\n",
    );
    let (status, _) = answer(&mut stream, Duration::from_secs(10)).expect("an answer");
    assert_eq!(status, 408);
    assert!(closed_within(&mut stream, Duration::from_secs(3)));
}

#[test]
fn a_body_its_handler_never_reads_does_not_keep_the_connection() {
    let server = Server::start(&test_config(""));
    for framing in ["Content-Length: 1000\r\n", "Transfer-Encoding: chunked\r\n"] {
        let mut stream = connect(&server);
        let sent: &[u8] = if framing.starts_with("Content") {
            b"0123456789"
        } else {
            b"a\r\n0123456789\r\n"
        };
        start_request(
            &mut stream,
            "GET",
            "/_matrix/client/versions",
            framing,
            sent,
        );
        let (status, _) = answer(&mut stream, Duration::from_secs(5)).expect("an answer");
        assert_eq!(status, 200, "{framing}");
        assert!(
            closed_within(&mut stream, Duration::from_secs(40)),
            "{framing}: the connection stays open"
        );
    }
}

#[test]
fn versions_keeps_answering_while_one_address_holds_many_unfinished_bodies() {
    let server = Server::start(&test_config(
        "[limits]\nmax_requests_per_address = 32\nbody_timeout_seconds = 60\n",
    ));
    let attacker = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..300 {
        let mut stream = connect_from(server.address("http"), attacker);
        start_request(
            &mut stream,
            "POST",
            LOGIN,
            "Content-Length: 1000\r\n",
            b"0123456789",
        );
        held.push(stream);
    }
    // 32 are read (and wait for the rest of their bodies); every other is refused at once
    // and closed. Which 32 depends on the order the server took the connections in.
    for stream in &mut held {
        if let Some((status, body)) = answer(stream, Duration::from_millis(250)) {
            assert_eq!(status, 429, "{body}");
            assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
            assert!(body["retry_after_ms"].as_u64().is_some());
            assert!(closed_within(stream, Duration::from_secs(3)));
            refused += 1;
        }
    }
    assert_eq!(refused, 268);
    for _ in 0..5 {
        let took = versions_answers(&server);
        assert!(took < Duration::from_secs(1), "/versions took {took:?}");
    }
}

#[test]
fn endpoints_refuse_bodies_over_their_caps_with_413() {
    let server = Server::start_with_users(&test_config(""), &[("alice", PASSWORD)]);
    let token = common::login_token(&server, "alice", PASSWORD);
    for (method, path, length) in [
        // Account requests: 64 KiB.
        ("POST", LOGIN, 100 * 1024),
        // Other client requests: 1 MiB.
        ("POST", "/_matrix/client/v3/createRoom", 2 * 1024 * 1024),
        // One PDU: 128 KiB, checked before the signature.
        (
            "PUT",
            "/_matrix/federation/v2/send_join/!a:localhost/$b",
            200 * 1024,
        ),
        ("POST", "/_matrix/key/v2/query", 100 * 1024),
        // The server's ceiling (8 MiB) binds a transaction.
        ("PUT", "/_matrix/federation/v1/send/1", 9 * 1024 * 1024),
    ] {
        let mut stream = connect(&server);
        start_request(
            &mut stream,
            method,
            path,
            &format!("Content-Length: {length}\r\nAuthorization: Bearer {token}\r\n"),
            b"{",
        );
        let (status, body) = answer(&mut stream, Duration::from_secs(5)).expect("an answer");
        assert_eq!(status, 413, "{path}: {body}");
        assert_eq!(body["errcode"], "M_TOO_LARGE", "{path}");
    }
    // A chunked body has no length to check first: it is cut when it passes the cap.
    let mut stream = connect(&server);
    let chunk = vec![b' '; 70 * 1024];
    let mut body = format!("{:x}\r\n", chunk.len()).into_bytes();
    body.extend_from_slice(&chunk);
    body.extend_from_slice(b"\r\n");
    start_request(
        &mut stream,
        "POST",
        LOGIN,
        "Transfer-Encoding: chunked\r\n",
        &body,
    );
    let (status, body) = answer(&mut stream, Duration::from_secs(5)).expect("an answer");
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["errcode"], "M_TOO_LARGE");
}

#[test]
fn unauthenticated_bodies_past_the_budget_get_429() {
    let server = Server::start(&test_config(
        "[limits]\nunauthenticated_body_bytes = 65536\n",
    ));
    // Two logins that together send more than the budget and never finish.
    let mut streams: Vec<TcpStream> = (0..2).map(|_| connect(&server)).collect();
    for stream in &mut streams {
        start_request(
            stream,
            "POST",
            LOGIN,
            "Content-Length: 60000\r\n",
            &vec![b' '; 40_000],
        );
    }
    let answers: Vec<_> = streams
        .iter_mut()
        .filter_map(|stream| answer(stream, Duration::from_secs(3)))
        .collect();
    assert_eq!(answers.len(), 1, "{answers:?}");
    let (status, body) = &answers[0];
    assert_eq!(*status, 429);
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
    assert_eq!(body["retry_after_ms"], 1000);
    // Once they are gone, the budget is back.
    drop(streams);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = connect(&server);
        start_request(
            &mut stream,
            "POST",
            LOGIN,
            "Content-Length: 50000\r\n",
            &vec![b' '; 50_000],
        );
        let (status, _) = answer(&mut stream, Duration::from_secs(5)).expect("an answer");
        if status == 400 {
            break;
        }
        assert_eq!(status, 429);
        assert!(Instant::now() < deadline, "the budget never came back");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `X-Matrix` for `origin` with a key nobody can have: the signature is never reached.
fn x_matrix(origin: &str) -> String {
    format!(
        "Authorization: X-Matrix origin=\"{origin}\",destination=\"localhost\",key=\"ed25519:nope\",sig=\"AAAA\"\r\n"
    )
}

const TRANSACTION_LENGTH: usize = 8 * 1024 * 1024;

#[test]
fn a_transaction_without_a_usable_key_is_refused_before_its_body_is_read() {
    let server = Server::start(&test_config(
        "[federation]\ntrusted_key_servers = []\nallow_private_addresses = true\n",
    ));
    // A port where nothing listens: the key fetch fails at once.
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port();
    for headers in [String::new(), x_matrix(&format!("127.0.0.1:{closed_port}"))] {
        let mut stream = connect(&server);
        start_request(
            &mut stream,
            "PUT",
            "/_matrix/federation/v1/send/1",
            &format!("Content-Length: {TRANSACTION_LENGTH}\r\n{headers}"),
            b"[0,0,0,",
        );
        let (status, body) = answer(&mut stream, Duration::from_secs(20)).expect("an answer");
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["errcode"], "M_UNAUTHORIZED");
        assert!(closed_within(&mut stream, Duration::from_secs(3)));
    }
}

fn resident_kib(server: &Server) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn transactions_waiting_for_a_key_that_never_comes_hold_no_body() {
    let server = Server::start(&test_config(
        "[federation]\ntrusted_key_servers = []\nallow_private_addresses = true\n",
    ));
    // Twelve origins (requests naming one origin share its key fetch) whose ports accept
    // connections and never answer.
    let silent: Vec<TcpListener> = (0..12)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let before = resident_kib(&server);
    let body = {
        let mut body = b"[".to_vec();
        body.extend(std::iter::repeat_n(*b"0,", TRANSACTION_LENGTH / 2 - 2).flatten());
        body.push(b'0');
        body.push(b']');
        body
    };
    let senders: Vec<_> = silent
        .iter()
        .map(|listener| {
            let origin = format!(
                "127.0.0.1:{}",
                listener.local_addr().expect("address").port()
            );
            let mut stream = connect(&server);
            let body = body.clone();
            let headers = format!("Content-Length: {}\r\n{}", body.len(), x_matrix(&origin));
            std::thread::spawn(move || {
                start_request(
                    &mut stream,
                    "PUT",
                    "/_matrix/federation/v1/send/1",
                    &headers,
                    b"",
                );
                stream
                    .set_write_timeout(Some(Duration::from_secs(3)))
                    .expect("timeout");
                // The server reads none of it: this blocks once the socket buffers are full.
                let written = stream.write(&body).unwrap_or(0);
                let _ = stream.write_all(&body[written..]);
                stream
            })
        })
        .collect();
    let streams: Vec<_> = senders
        .into_iter()
        .map(|sender| sender.join().expect("sender"))
        .collect();
    let after = resident_kib(&server);
    let grown_mib = after.saturating_sub(before) / 1024;
    assert!(
        grown_mib < 24,
        "12 transactions waiting for a key took {grown_mib} MiB"
    );
    // Each is still waiting for its key, or was refused once the fetch gave up: never
    // anything that needed the body.
    let mut streams = streams;
    for stream in &mut streams {
        if let Some((status, body)) = answer(stream, Duration::from_millis(50)) {
            assert_eq!(status, 401, "{body}");
            assert_eq!(body["errcode"], "M_UNAUTHORIZED");
        }
    }
    drop(streams);
    drop(silent);
}

#[test]
fn a_second_concurrent_transaction_from_one_origin_gets_429() {
    use common::fake::{FakeServer, bind, new_key, sign};
    use common::federation::{Signer, create_room, start, write_certificates};
    use serde_json::json;

    let certificates = tempfile::tempdir().expect("tempdir");
    write_certificates(certificates.path());
    let server = start(certificates.path(), "127.0.0.1", &[], &["alice"]);
    let token = common::login_token(&server, "alice", common::federation::PASSWORD);
    let room = create_room(&server, &token, &json!({ "preset": "public_chat" }));
    let fake = FakeServer::start(
        certificates.path(),
        bind(),
        new_key(),
        std::sync::Arc::new(|_: &common::fake::FakeRequest| (404, json!({}))),
    );
    // A PDU signed by a server whose port accepts connections and never answers: checking its
    // signature holds the first transaction (the key fetch waits for its time limit).
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_name = format!("127.0.0.1:{}", silent.local_addr().expect("address").port());
    let (_, pdu) = sign(
        json!({
            "room_id": room,
            "sender": format!("@x:{silent_name}"),
            "type": "m.room.message",
            "content": { "msgtype": "m.text", "body": "held" },
            "origin_server_ts": 1,
            "depth": 10,
            "prev_events": [],
            "auth_events": [],
        }),
        &silent_name,
        &new_key(),
    );
    let transaction =
        |pdus: Vec<Value>| json!({ "origin": fake.name, "origin_server_ts": 1, "pdus": pdus });
    let signer = Signer {
        origin: &fake.name,
        key: &fake.key,
        destination: &server.name,
    };
    std::thread::scope(|scope| {
        let address = server.address("http");
        let first_body = transaction(vec![pdu.clone()]);
        let path = "/_matrix/federation/v1/send/first";
        let authorization = hearth::federation::auth::authorization_header(
            &hearth::federation::auth::RequestToSign {
                method: "PUT",
                uri: path,
                origin: &fake.name,
                destination: &server.name,
                content: Some(&first_body),
            },
            &fake.key,
        )
        .expect("sign");
        let first = scope.spawn(move || {
            let bytes = serde_json::to_vec(&first_body).expect("json");
            common::http::Client::plain(address)
                .request(
                    "PUT",
                    path,
                    &[("Authorization", authorization.as_str())],
                    Some(&bytes),
                )
                .expect("the first transaction")
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut attempt = 0;
        loop {
            assert!(!first.is_finished(), "the first transaction was not held");
            assert!(Instant::now() < deadline, "no 429 while the first was held");
            attempt += 1;
            let second = signer.send(
                &server,
                "PUT",
                &format!("/_matrix/federation/v1/send/second{attempt}"),
                Some(&transaction(Vec::new())),
            );
            if second.status == 429 {
                let body = second.json();
                assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
                assert!(body["retry_after_ms"].as_u64().is_some());
                break;
            }
            assert_eq!(second.status, 200);
            std::thread::sleep(Duration::from_millis(50));
        }
        let first = first.join().expect("first");
        assert_eq!(first.status, 200);
    });
    // Once the first is done, the origin's place is free again.
    let after = signer.send(
        &server,
        "PUT",
        "/_matrix/federation/v1/send/after",
        Some(&transaction(Vec::new())),
    );
    assert_eq!(after.status, 200);
    drop(silent);
}
