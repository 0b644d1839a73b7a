//! What strangers cost, measured: `cargo bench --bench hostile`.
//!
//! (a) Twelve concurrent unauthenticated `PUT /_matrix/federation/v1/send/{txnId}` with 8 MiB
//! bodies (a JSON array of zeros) and an `X-Matrix` header naming an origin whose port accepts
//! connections and never answers: the server's resident memory, sampled while they wait, over
//! its idle figure (goal: at most +24 MiB; it was +1,678 MiB when the body was parsed into a
//! tree before the key was fetched).
//!
//! (b) 1,100 connections from one address (127.0.0.2), each starting a request that declares
//! `Content-Length: 1000` and sends 10 bytes: `/versions` latency from another address
//! (127.0.0.1) while they are open (goal: it answers, within 100 ms at the worst; it did not
//! answer at all before).
//!
//! Each figure is printed with its goal and `ok` or `OVER`; a figure over it does not fail
//! the run.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::budget::{Report, rss_mib};
use common::{Server, test_config};

const FLOOD_REQUESTS: usize = 12;
const FLOOD_BODY: usize = 8 * 1024 * 1024;
/// How long the flood is watched: the key fetches give up (and the requests are refused,
/// their bodies unread) after a few seconds.
const FLOOD_WATCH: Duration = Duration::from_secs(5);
/// Goal for (a): MiB over idle.
const FLOOD_GOAL_MIB: f64 = 24.0;
const HELD_CONNECTIONS: usize = 1100;
const LATENCY_SAMPLES: usize = 50;
/// Goal for (b): the slowest `/versions`, in milliseconds.
const VERSIONS_GOAL_MS: f64 = 100.0;

fn connect_from(server: SocketAddr, source: IpAddr) -> std::io::Result<TcpStream> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        socket.connect(server).await
    })?;
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// One `/versions` on a new connection: the time to its whole answer.
fn versions(server: SocketAddr) -> Option<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(server).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream
        .write_all(
            b"GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .ok()?;
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) if answer.starts_with(b"HTTP/1.1 200") => Some(started.elapsed()),
        Err(err) if err.kind() == ErrorKind::ConnectionReset && !answer.is_empty() => {
            Some(started.elapsed())
        }
        _ => None,
    }
}

fn flood(report: &mut Report) {
    let server = Server::start(&test_config(
        "[federation]\ntrusted_key_servers = []\nallow_private_addresses = true\n",
    ));
    let pid = server.child.id();
    let address = server.address("http");
    // Twelve origins (one key fetch each: requests naming one origin share its fetch), whose
    // ports accept connections and never answer (kept open until the end).
    let silent: Vec<TcpListener> = (0..FLOOD_REQUESTS)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let origins: Vec<String> = silent
        .iter()
        .map(|listener| {
            format!(
                "127.0.0.1:{}",
                listener.local_addr().expect("address").port()
            )
        })
        .collect();
    for listener in &silent {
        let accepting = listener.try_clone().expect("listener");
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while let Ok((stream, _)) = accepting.accept() {
                held.push(stream);
            }
        });
    }
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss_mib(pid, "VmRSS:");
    let mut body = b"[".to_vec();
    body.extend(std::iter::repeat_n(*b"0,", FLOOD_BODY / 2 - 2).flatten());
    body.extend_from_slice(b"0]");
    let length = body.len();
    let head = |origin: &str| {
        format!(
            "PUT /_matrix/federation/v1/send/1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\
             Authorization: X-Matrix origin=\"{origin}\",destination=\"localhost\",key=\"ed25519:a\",sig=\"AAAA\"\r\n\r\n",
            length
        )
    };
    let body = std::sync::Arc::new(body);
    let started = Instant::now();
    let senders: Vec<_> = origins
        .iter()
        .map(|origin| {
            let head = head(origin);
            let body = body.clone();
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(address).expect("connect");
                stream
                    .set_write_timeout(Some(FLOOD_WATCH))
                    .expect("timeout");
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
                stream
            })
        })
        .collect();
    let mut peak = idle;
    while started.elapsed() < FLOOD_WATCH {
        peak = peak.max(rss_mib(pid, "VmRSS:"));
        std::thread::sleep(Duration::from_millis(20));
    }
    let streams: Vec<_> = senders
        .into_iter()
        .filter_map(|sender| sender.join().ok())
        .collect();
    peak = peak.max(rss_mib(pid, "VmRSS:"));
    // Answered by now means refused when the key fetch gave up: the body was never read.
    let answered = streams
        .iter()
        .filter(|stream| stream.set_nonblocking(true).is_ok() && stream.peek(&mut [0u8; 1]).is_ok())
        .count();
    report.figure(
        "(a) refused by the end of the watch",
        format!("{answered} of {FLOOD_REQUESTS}"),
    );
    report.memory("(a) RSS idle", idle, None);
    report.memory("(a) RSS peak during the flood", peak, None);
    report.memory_mib("(a) RSS peak over idle", peak - idle, FLOOD_GOAL_MIB);
    drop(streams);
}

fn unfinished_bodies(report: &mut Report) {
    let server = Server::start(&test_config(""));
    let address = server.address("http");
    let attacker = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut held = Vec::new();
    let mut failed = 0;
    for _ in 0..HELD_CONNECTIONS {
        match connect_from(address, attacker) {
            Ok(mut stream) => {
                let _ = stream.write_all(
                    b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: localhost\r\n\
                      Content-Length: 1000\r\n\r\n0123456789",
                );
                held.push(stream);
            }
            Err(_) => failed += 1,
        }
    }
    report.figure(
        "(b) connections opened",
        format!("{} of {HELD_CONNECTIONS}", held.len()),
    );
    if failed > 0 {
        report.figure("(b) connections that failed to open", failed.to_string());
    }
    let mut samples = Vec::new();
    let mut unanswered = 0;
    for _ in 0..LATENCY_SAMPLES {
        match versions(address) {
            Some(took) => samples.push(took),
            None => unanswered += 1,
        }
    }
    samples.sort();
    report.figure(
        "(b) /versions answered",
        format!("{} of {LATENCY_SAMPLES}", samples.len()),
    );
    if let (Some(median), Some(max)) = (samples.get(samples.len() / 2), samples.last()) {
        report.millis("(b) /versions median", median.as_secs_f64() * 1000.0, None);
        report.millis(
            "(b) /versions max",
            max.as_secs_f64() * 1000.0,
            Some(VERSIONS_GOAL_MS),
        );
    }
    report.count("(b) /versions unanswered", unanswered, 0);
    drop(held);
}

fn main() {
    let mut report = Report::new("hostile: what strangers cost");
    flood(&mut report);
    unfinished_bodies(&mut report);
    report.finish();
}
