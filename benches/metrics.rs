//! What the Prometheus metrics cost: `cargo bench --bench metrics`.
//!
//! The same server is started twice, with metrics off and on, and 4 clients ask it for
//! `/_matrix/client/versions` (the cheapest request there is, so the per-request counting
//! weighs as much as it ever can) for a few seconds each, over kept-alive connections; the
//! rates are printed side by side, with the time and size of one scrape and the server's
//! memory. Set `HEARTH_BENCH_SECONDS` to change the duration of each run (default 5).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::budget::{Report, rss_mib};
use common::http::Client;
use common::{Server, test_config};

const CLIENTS: usize = 4;

/// Requests per second of `CLIENTS` clients asking for `/versions` for `duration`.
fn rate(address: SocketAddr, duration: Duration) -> f64 {
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
    let total: u64 = threads
        .into_iter()
        .map(|thread| thread.join().expect("client"))
        .sum();
    total as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let seconds = std::env::var("HEARTH_BENCH_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(5);
    let duration = Duration::from_secs(seconds);
    let off = Server::start(&test_config("[limits]\nmax_requests_per_address = 1000\n"));
    // Warm up, then measure.
    rate(off.address("http"), Duration::from_millis(500));
    let rate_off = rate(off.address("http"), duration);
    let rss_off = rss_mib(off.child.id(), "VmRSS:");
    drop(off);

    let on = Server::start(&test_config(
        "[limits]\nmax_requests_per_address = 1000\n\n[metrics]\naddress = \"127.0.0.1:0\"\n",
    ));
    assert!(on.wait_for_log("serving metrics at http://"));
    let log = on.log_text();
    let metrics: SocketAddr = log
        .split("serving metrics at http://")
        .nth(1)
        .and_then(|rest| rest.split("/metrics").next())
        .expect("address")
        .parse()
        .expect("socket address");
    rate(on.address("http"), Duration::from_millis(500));
    let rate_on = rate(on.address("http"), duration);
    let rss_on = rss_mib(on.child.id(), "VmRSS:");
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
        "hearth metrics benchmark ({CLIENTS} clients, GET /versions, {seconds} s each)"
    ));
    report.figure("requests/s, metrics off", format!("{rate_off:.0}"));
    report.figure("requests/s, metrics on", format!("{rate_on:.0}"));
    report.figure(
        "change with metrics on",
        format!("{:+.1} %", (rate_on / rate_off - 1.0) * 100.0),
    );
    report.millis("one scrape", scrape_ms, None);
    report.figure("scrape size", format!("{size} bytes"));
    report.memory("RSS after the run, metrics off", rss_off, None);
    report.memory("RSS after the run, metrics on", rss_on, None);
    report.finish();
}
