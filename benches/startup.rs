//! Start-up and idle memory of the release binary: `cargo bench --bench startup`.
//!
//! Prints each figure with its budget from DESIGN.md (idle RSS ≤ 10 MB, cold start ≤ 0.5 s,
//! active ≤ 64 MB steady and ≤ 128 MB at the peak) and `ok` or `OVER`; a figure over budget
//! does not fail the run (timings vary with the machine; figures are read by people).
//! - first start: a fresh data directory (creates the database and the signing key);
//! - cold start: an existing data directory, process start to the first `200` on
//!   `/_matrix/client/versions`;
//! - idle RSS: resident memory a second after start and one request, split into anonymous
//!   and file-backed pages, and by mapping (`/proc/PID/smaps`) for the last run;
//! - login RSS: resident memory after 10 and after 50 password logins (each Argon2 hash
//!   takes 7 MiB while it runs; the memory must go back, not stay with the process).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::budget::{self, Report};
use common::{Server, test_config};

const RUNS: usize = 10;

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with(field))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// Starts the server in `dir` and returns it with the time to its first good `/versions`.
fn start_and_time(dir: &std::path::Path) -> (Server, Duration) {
    let started = Instant::now();
    let server = Server::start_in(dir, &[], &[]).expect("server starts");
    let mut client = server.client();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if client
            .request("GET", "/_matrix/client/versions", &[], None)
            .is_ok_and(|response| response.status == 200)
        {
            return (server, started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!(
        "no 200 from /_matrix/client/versions within 30 s:\n{}",
        server.log_text()
    );
}

fn stop(mut server: Server) {
    server.signal("TERM");
    server.wait_exit(Duration::from_secs(15)).expect("stops");
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hearth.toml"), test_config("")).expect("config");

    let (server, first) = start_and_time(dir.path());
    stop(server);

    let mut cold = Vec::new();
    let mut idle_rss = Vec::new();
    let mut idle_anon = Vec::new();
    let mut idle_file = Vec::new();
    let mut peak_rss = 0;
    let mut resident = None;
    for run in 0..RUNS {
        let (server, elapsed) = start_and_time(dir.path());
        cold.push(elapsed);
        std::thread::sleep(Duration::from_secs(1));
        let pid = server.child.id();
        idle_rss.push(rss_kib(pid, "VmRSS:"));
        idle_anon.push(rss_kib(pid, "RssAnon:"));
        idle_file.push(rss_kib(pid, "RssFile:") + rss_kib(pid, "RssShmem:"));
        peak_rss = peak_rss.max(rss_kib(pid, "VmHWM:"));
        if run == RUNS - 1 {
            resident = Some(budget::Resident::of(pid));
        }
        stop(server);
    }
    idle_anon.sort();
    idle_file.sort();
    let (login_rss, per_login) = measure_logins(dir.path());
    cold.sort();
    idle_rss.sort();
    let binary = std::fs::metadata(common::BINARY)
        .map(|m| m.len())
        .unwrap_or(0);

    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut report = Report::new(&format!(
        "hearth startup benchmark ({RUNS} runs, {})",
        common::BINARY
    ));
    report.memory("binary size", binary as f64 / 1048576.0, None);
    report.millis("first start (fresh)", millis(first), None);
    report.millis(
        "cold start, median",
        millis(cold[RUNS / 2]),
        Some(budget::COLD_START_MS),
    );
    report.millis("cold start, min", millis(cold[0]), None);
    report.millis(
        "cold start, max",
        millis(cold[RUNS - 1]),
        Some(budget::COLD_START_MS),
    );
    report.memory(
        "idle RSS, median",
        mib(idle_rss[RUNS / 2]),
        Some(budget::IDLE_RSS_MB),
    );
    report.memory(
        "idle RSS, max",
        mib(idle_rss[RUNS - 1]),
        Some(budget::IDLE_RSS_MB),
    );
    report.memory(
        "idle RSS, anonymous (median)",
        mib(idle_anon[RUNS / 2]),
        None,
    );
    report.memory(
        "idle RSS, file-backed (median)",
        mib(idle_file[RUNS / 2]),
        None,
    );
    report.memory("peak RSS at start (VmHWM)", mib(peak_rss), None);
    report.millis("login time, each (Argon2id)", millis(per_login), None);
    for (label, kib, budget) in login_rss {
        report.memory(label, mib(kib), budget);
    }
    report.finish();
    if let Some(resident) = resident {
        resident.print("idle (last run)", 14);
    }
}

/// RSS before logins, after 10 and after 50 (sequential password logins, each a new device).
/// Each figure with its budget: logging in is being active (64 MB steady, 128 MB peak).
type Figures = Vec<(&'static str, u64, Option<f64>)>;

fn measure_logins(dir: &std::path::Path) -> (Figures, Duration) {
    let password = "benchmark password";
    let output = common::hearth(dir, &["user", "add", "bench"], &format!("{password}\n"));
    assert!(output.status.success(), "user add failed");
    std::fs::write(
        dir.join("hearth.toml"),
        test_config("[limits]\nauth_attempts_per_minute = 100000\n"),
    )
    .expect("config");
    let (server, _) = start_and_time(dir);
    std::thread::sleep(Duration::from_millis(500));
    let pid = server.child.id();
    let mut figures = vec![(
        "RSS before logins",
        rss_kib(pid, "VmRSS:"),
        Some(budget::IDLE_RSS_MB),
    )];
    let body = serde_json::json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": "bench" },
        "password": password,
    });
    let started = Instant::now();
    for round in 1..=50 {
        let response = server
            .client()
            .json("POST", "/_matrix/client/v3/login", None, &body);
        assert_eq!(response.status, 200, "login failed");
        if round == 10 {
            figures.push((
                "RSS after 10 logins",
                rss_kib(pid, "VmRSS:"),
                Some(budget::ACTIVE_RSS_MB),
            ));
        }
    }
    let per_login = started.elapsed() / 50;
    figures.push((
        "RSS after 50 logins",
        rss_kib(pid, "VmRSS:"),
        Some(budget::ACTIVE_RSS_MB),
    ));
    figures.push((
        "peak RSS (logins)",
        rss_kib(pid, "VmHWM:"),
        Some(budget::PEAK_RSS_MB),
    ));
    stop(server);
    (figures, per_login)
}
