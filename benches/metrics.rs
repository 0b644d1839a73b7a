//! What the Prometheus metrics cost: `cargo bench --bench metrics`.
//!
//! First what the request path adds, in process: the nanoseconds of classifying a path and
//! counting its answer (`Group::of` and `HttpMetrics::record`), on one thread.
//! Then two servers, metrics off and on, each asked by 4 clients for
//! `/_matrix/client/versions` (the cheapest request there is, so the counting weighs as
//! much as it ever can) in alternating rounds over kept-alive connections: the rates and
//! the server's CPU time per request side by side (CPU time is steadier than the rate on a
//! busy machine), with the time and size of one scrape and the servers' memory. Set
//! `HEARTH_BENCH_SECONDS` to change the length of each round (default 2).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::budget::{Report, rss_mib};
use common::http::Client;
use common::{Server, test_config};
use hearth::api::metrics::{Group, HttpMetrics};

const CLIENTS: usize = 4;
const ROUNDS: usize = 3;

/// Nanoseconds per classified and counted request, on one thread.
fn counting_nanos() -> f64 {
    const CALLS: u32 = 2_000_000;
    let metrics = HttpMetrics::new(true);
    let paths = [
        "/_matrix/client/v3/rooms/!room:example.org/send/m.room.message/txn1",
        "/_matrix/client/v3/sync",
        "/_matrix/federation/v1/send/1234",
        "/_matrix/client/v3/login",
    ];
    let started = Instant::now();
    for n in 0..CALLS {
        let path = std::hint::black_box(paths[n as usize % paths.len()]);
        let elapsed = Duration::from_micros(u64::from(n % 50_000));
        metrics.record(Group::of(path), 200, elapsed);
    }
    started.elapsed().as_nanos() as f64 / f64::from(CALLS)
}

/// User and system CPU time of `pid` so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("comm")
        .1
        .split_whitespace()
        .collect();
    // utime and stime, fields 14 and 15 of stat(5) (11 and 12 after the command name).
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    ticks as f64 / 100.0
}

/// Requests of `CLIENTS` clients asking for `/versions` for `duration`.
fn requests(address: SocketAddr, duration: Duration) -> u64 {
    let started = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut client = Client::plain(address);
                let mut count = 0_u64;
                while started.elapsed() < duration {
                    let answer = client
                        .request("GET", "/_matrix/client/versions", &[], None)
                        .expect("versions");
                    assert_eq!(answer.status, 200);
                    count += 1;
                }
                count
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|thread| thread.join().expect("client"))
        .sum()
}

/// Requests, seconds and server CPU seconds of one server, over the rounds.
#[derive(Default)]
struct Tally {
    requests: u64,
    seconds: f64,
    cpu: f64,
}

impl Tally {
    fn round(&mut self, server: &Server, duration: Duration) {
        let (started, cpu) = (Instant::now(), cpu_seconds(server.child.id()));
        self.requests += requests(server.address("http"), duration);
        self.seconds += started.elapsed().as_secs_f64();
        self.cpu += cpu_seconds(server.child.id()) - cpu;
    }

    fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    fn cpu_micros(&self) -> f64 {
        self.cpu * 1e6 / self.requests as f64
    }
}

fn main() {
    let seconds = std::env::var("HEARTH_BENCH_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(2);
    let duration = Duration::from_secs(seconds);
    let counting = counting_nanos();
    let off = Server::start(&test_config(""));
    let on = Server::start(&test_config("[metrics]\naddress = \"127.0.0.1:0\"\n"));
    assert!(on.wait_for_log("serving metrics at http://"));
    let log = on.log_text();
    let metrics: SocketAddr = log
        .split("serving metrics at http://")
        .nth(1)
        .and_then(|rest| rest.split("/metrics").next())
        .expect("address")
        .parse()
        .expect("socket address");
    // Warm up, then alternate rounds so that the machine's other load falls on both alike.
    requests(off.address("http"), Duration::from_millis(500));
    requests(on.address("http"), Duration::from_millis(500));
    let (mut tally_off, mut tally_on) = (Tally::default(), Tally::default());
    for _ in 0..ROUNDS {
        tally_off.round(&off, duration);
        tally_on.round(&on, duration);
    }
    let scrapes = 20;
    let started = Instant::now();
    let mut size = 0;
    for _ in 0..scrapes {
        let answer = Client::plain(metrics)
            .request("GET", "/metrics", &[], None)
            .expect("scrape");
        assert_eq!(answer.status, 200);
        size = answer.body.len();
    }
    let scrape_ms = started.elapsed().as_secs_f64() * 1000.0 / f64::from(scrapes);

    let mut report = Report::new(&format!(
        "hearth metrics benchmark ({CLIENTS} clients, GET /versions, {ROUNDS} rounds of {seconds} s)"
    ));
    report.figure(
        "classify and count one request",
        format!("{counting:.0} ns"),
    );
    report.figure(
        "requests/s, metrics off",
        format!("{:.0}", tally_off.rate()),
    );
    report.figure("requests/s, metrics on", format!("{:.0}", tally_on.rate()));
    report.figure(
        "server CPU per request, metrics off",
        format!("{:.1} µs", tally_off.cpu_micros()),
    );
    report.figure(
        "server CPU per request, metrics on",
        format!("{:.1} µs", tally_on.cpu_micros()),
    );
    report.millis("one scrape", scrape_ms, None);
    report.figure("scrape size", format!("{size} bytes"));
    report.memory("RSS, metrics off", rss_mib(off.child.id(), "VmRSS:"), None);
    report.memory("RSS, metrics on", rss_mib(on.child.id(), "VmRSS:"), None);
    report.finish();
}
