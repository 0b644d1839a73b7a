//! Joining a large room over federation, measured: `cargo bench --bench federation_join`.
//!
//! A first Hearth holds a room with `HEARTH_BENCH_STATE_EVENTS` state events (10,000 unless
//! set; set by its owner: half of them
//! member events of users of another server, banned, half other state); a user of a
//! second Hearth joins it over TLS on loopback. Prints how long the join took and the
//! joining server's resident memory before, at its peak, and after, the rate and processor
//! time at which it receives messages sent into the room, and its disk use against
//! the canonical JSON of the events it stored. Each figure is printed with its budget from
//! DESIGN.md (64 MB steady, 128 MB peak, disk ≤ 2× the canonical JSON) and `ok` or `OVER`;
//! a figure over budget does not fail the run. Asserts only that everything succeeds.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::budget::{self, Report, disk_usage};
use common::federation::Pair;
use common::http::Client;
use common::{ok, query_encode};
use serde_json::json;

/// The room's size unless `HEARTH_BENCH_STATE_EVENTS` says otherwise (CI runs the default;
/// the 50,000 and 100,000 cases take minutes to fill).
const DEFAULT_STATE_EVENTS: usize = 10_000;
const MESSAGES: usize = 500;

fn state_events() -> usize {
    match std::env::var("HEARTH_BENCH_STATE_EVENTS") {
        Ok(value) => value
            .replace(['_', ','], "")
            .parse()
            .expect("HEARTH_BENCH_STATE_EVENTS is a number of state events"),
        Err(_) => DEFAULT_STATE_EVENTS,
    }
}

/// The machine's load average over 1, 5 and 15 minutes: the machine may be shared, and
/// the figures mean little without it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Processor time (user + system) the process has used, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are the stat file's 14th and 15th fields: 12th and 13th after it.
    let ticks: f64 = fields[11..13]
        .iter()
        .map(|field| field.parse::<f64>().expect("ticks"))
        .sum();
    #[allow(unsafe_code)]
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks / per_second.max(1) as f64
}

fn status_mib(pid: u32, field: &str) -> f64 {
    budget::rss_mib(pid, field)
}

fn main() {
    let state_events = state_events();
    let load_at_start = load_average();
    let pair = Pair::start(&["alice"], &["bob"]);
    let (alice, bob) = (pair.login_a("alice"), pair.login_b("bob"));
    let Pair {
        a, mut b, name_a, ..
    } = pair;

    let mut client = Client::plain(a.address("http"));
    let room = ok(client.json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&alice),
        &json!({ "preset": "public_chat", "name": "Big room" }),
    ))["room_id"]
        .as_str()
        .expect("room")
        .to_owned();
    let filling = Instant::now();
    // Half member events (large rooms are mostly members: each is indexed by user too),
    // half other state.
    for i in 0..state_events {
        if i % 2 == 0 {
            ok(client.json(
                "POST",
                &format!("/_matrix/client/v3/rooms/{room}/ban"),
                Some(&alice),
                &json!({ "user_id": format!("@member{i}:elsewhere.example"), "reason": "bench" }),
            ));
        } else {
            ok(client.json(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{room}/state/org.example.bench/key{i}"),
                Some(&alice),
                &json!({ "i": i, "padding": "a state event of a large room" }),
            ));
        }
    }
    let filled_in = filling.elapsed();
    let load_after_filling = load_average();

    let resident_before = status_mib(a.child.id(), "VmRSS:");
    let pid = b.child.id();
    let before = status_mib(pid, "VmRSS:");
    let joining = Instant::now();
    let joined = Client::plain(b.address("http")).json(
        "POST",
        &format!(
            "/_matrix/client/v3/join/{}?via={}",
            query_encode(&room),
            query_encode(&name_a)
        ),
        Some(&bob),
        &json!({}),
    );
    let took = joining.elapsed();
    ok(joined);
    let peak = status_mib(pid, "VmHWM:");
    let after = status_mib(pid, "VmRSS:");
    let (after_anonymous, after_file) = budget::rss_split_mib(pid);
    let resident_peak = status_mib(a.child.id(), "VmHWM:");

    // Then messages in that room, from the first server's user to the joined server: the
    // receiving side checks each against the large state (signatures, auth, soft fail).
    // Sent by 8 clients at once, so the first server batches them into transactions as a
    // busy room does; the rate that arrives is bounded by the sender too, so the joining
    // server's processor time per message is printed beside it (its receiving cost alone).
    // For profiling the receive phase (`perf record -p`): the two servers' process IDs,
    // then a pause of `HEARTH_BENCH_PAUSE_SECS` before the messages are sent.
    if let Some(pause) = std::env::var("HEARTH_BENCH_PAUSE_SECS")
        .ok()
        .and_then(|secs| secs.parse::<u64>().ok())
    {
        eprintln!(
            "receive phase: resident pid {}, joined pid {pid}; sending in {pause} s",
            a.child.id()
        );
        std::thread::sleep(std::time::Duration::from_secs(pause));
    }
    let log_lines_before = a.log_text().lines().count();
    let cpu_before = cpu_seconds(pid);
    let resident_cpu_before = cpu_seconds(a.child.id());
    let sending = Instant::now();
    let senders = 8;
    common::concurrent_sends(
        a.address("http"),
        std::slice::from_ref(&alice),
        std::slice::from_ref(&room),
        senders,
        MESSAGES / senders,
        "bench",
    );
    let last = "the last message".to_owned();
    ok(client.json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/bench-last"),
        Some(&alice),
        &json!({ "msgtype": "m.text", "body": last }),
    ));
    let messages = MESSAGES / senders * senders + 1;
    let sent_in = sending.elapsed();
    let mut receiving = Client::plain(b.address("http"));
    let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1");
    while receiving.get_with(&path, &bob).json()["chunk"][0]["content"]["body"]
        .as_str()
        .is_none_or(|body| body != last)
    {
        assert!(sending.elapsed().as_secs() < 300, "messages never arrived");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let delivered_in = sending.elapsed();
    let receiving_cpu = cpu_seconds(pid) - cpu_before;
    let sending_cpu = cpu_seconds(a.child.id()) - resident_cpu_before;
    // The transactions that carried them: how well the resident server batched.
    let (transactions, pdus_sent) = a
        .log_text()
        .lines()
        .skip(log_lines_before)
        .filter(|line| line.contains("federation: transaction accepted"))
        .filter_map(|line| {
            line.split("pdus=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .fold((0, 0), |(count, pdus), n| (count + 1, pdus + n));
    let after_messages = status_mib(pid, "VmRSS:");
    let load_at_end = load_average();
    if std::env::var_os("HEARTH_BENCH_MEMORY_LOG").is_some() {
        for line in b.log_text().lines() {
            if line.contains("memory") {
                println!("{line}");
            }
        }
    }

    let data_b = b.dir.join("data");
    b.signal("TERM");
    b.wait_exit(std::time::Duration::from_secs(30))
        .expect("the joining server stops");
    let size_b = disk_usage(&data_b);
    let (events, canonical) = budget::canonical_json_of_events(&data_b);

    let mut report = Report::new(&format!(
        "hearth federation join benchmark ({state_events} state events)"
    ));
    report.figure(
        "load average at start / filled / end",
        format!("{load_at_start} / {load_after_filling} / {load_at_end}"),
    );
    report.figure(
        "room filled on the first server",
        format!(
            "{:.1} s ({:.0} state events/s)",
            filled_in.as_secs_f64(),
            state_events as f64 / filled_in.as_secs_f64()
        ),
    );
    report.figure(
        "join over federation",
        format!(
            "{:.2} s ({:.0} state events/s)",
            took.as_secs_f64(),
            state_events as f64 / took.as_secs_f64()
        ),
    );
    report.memory(
        "joining server RSS before",
        before,
        Some(budget::IDLE_RSS_MB),
    );
    report.memory(
        "joining server peak RSS (VmHWM)",
        peak,
        Some(budget::PEAK_RSS_MB),
    );
    report.memory(
        "joining server RSS after the join",
        after,
        Some(budget::ACTIVE_RSS_MB),
    );
    report.figure(
        "... of which anonymous / file-backed",
        format!("{after_anonymous:.1} / {after_file:.1} MiB"),
    );
    report.figure(
        &format!("{messages} messages sent by 8 clients"),
        format!("{:.2} s", sent_in.as_secs_f64()),
    );
    report.figure(
        "... all received after",
        format!(
            "{:.2} s ({:.0} messages/s)",
            delivered_in.as_secs_f64(),
            messages as f64 / delivered_in.as_secs_f64()
        ),
    );
    report.figure(
        "... joining server's processor time for them",
        format!(
            "{:.2} s ({:.2} ms a message: {:.0} messages/s of one core)",
            receiving_cpu,
            receiving_cpu * 1000.0 / messages as f64,
            messages as f64 / receiving_cpu.max(f64::EPSILON)
        ),
    );
    report.figure(
        "... resident server's processor time for them",
        format!(
            "{:.2} s ({:.2} ms a message)",
            sending_cpu,
            sending_cpu * 1000.0 / messages as f64
        ),
    );
    report.figure(
        "... in transactions",
        format!(
            "{transactions} ({:.1} PDUs each)",
            pdus_sent as f64 / transactions.max(1) as f64
        ),
    );
    report.memory(
        "joining server RSS after messages",
        after_messages,
        Some(budget::ACTIVE_RSS_MB),
    );
    report.memory("resident server RSS before", resident_before, None);
    report.memory(
        "resident server peak (incl. filling)",
        resident_peak,
        Some(budget::PEAK_RSS_MB),
    );
    report.memory(
        "joining server data directory",
        size_b as f64 / 1_048_576.0,
        None,
    );
    report.memory(
        &format!("canonical JSON of its {events} events"),
        canonical as f64 / 1_048_576.0,
        None,
    );
    report.ratio(
        "disk per canonical JSON",
        size_b as f64 / canonical as f64,
        Some(budget::DISK_PER_CANONICAL_JSON),
    );
    report.finish();
}
