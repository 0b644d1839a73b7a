//! Outbound federation requests per second: `cargo bench --bench outbound_http` (or, in the
//! debug profile, `cargo test --bench outbound_http`).
//!
//! Two real Hearths over TLS on 127.0.0.1. A's user looks up the profile of B's user again
//! and again: each lookup is one signed federation request from A to B (remote profiles are
//! not cached), so the rate is bounded by A's outbound client: a TLS handshake per request
//! with a client that does not keep connections alive, one per peer with one that does.
//! Sequential lookups on one client connection, then [`THREADS`] clients at once. A's
//! memory is printed idle (after the first lookup) and after the runs. Printed, not judged
//! against a budget. (B speaks HTTP/1.1 only, so this measures keep-alive, not HTTP/2.)

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::budget::{Report, rss_mib};
use common::federation::Pair;
use common::ok;

const REQUESTS: usize = 400;
const THREADS: usize = 4;

fn lookups(a: SocketAddr, token: &str, path: &str, count: usize) {
    let mut client = common::http::Client::plain(a);
    for _ in 0..count {
        ok(client.get_with(path, token));
    }
}

fn main() {
    let pair = Pair::start(&["alice"], &["bob"]);
    let alice = pair.login_a("alice");
    let a = pair.a.address("http");
    let path = format!("/_matrix/client/v3/profile/@bob:{}", pair.name_b);
    // The first lookup makes B fetch A's key; then A settles.
    lookups(a, &alice, &path, 1);
    std::thread::sleep(Duration::from_secs(2));
    let pid = pair.a.child.id();
    let idle = rss_mib(pid, "VmRSS");

    let started = Instant::now();
    lookups(a, &alice, &path, REQUESTS);
    let sequential = started.elapsed();

    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| lookups(a, &alice, &path, REQUESTS / THREADS));
        }
    });
    let parallel = started.elapsed();

    let mut report = Report::new(&format!(
        "outbound federation: {REQUESTS} remote profile lookups from A to B, each one signed request"
    ));
    let rate = |elapsed: Duration| format!("{:.0}/s", REQUESTS as f64 / elapsed.as_secs_f64());
    report.figure("lookups, one client", rate(sequential));
    report.figure(
        &format!("lookups, {THREADS} clients at once"),
        rate(parallel),
    );
    report.millis(
        "time per lookup, one client",
        sequential.as_secs_f64() * 1000.0 / REQUESTS as f64,
        None,
    );
    report.memory("A's RSS after the first lookup", idle, None);
    report.memory("A's RSS after the runs", rss_mib(pid, "VmRSS"), None);
    report.memory("A's peak RSS", rss_mib(pid, "VmHWM"), None);
    report.finish();
}
