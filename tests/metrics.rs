//! Prometheus metrics (issue 14, item 4): off by default (no socket at all); when an address
//! is set, a listener of its own answers `GET /metrics` with text every line of which is
//! valid exposition format, with HELP and TYPE for every family, counters that move with
//! requests (a 404 included), a waiting `/sync` counted, histograms cumulative with `+Inf`
//! equal to the count, and an inbound federation transaction's PDUs counted; anything but
//! `GET /metrics` is refused.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::fake::{FakeServer, bind, new_key};
use common::federation::{Signer, start_with, write_certificates};
use common::{Server, login_token, ok, test_config, waiting_request};
use serde_json::json;

const PASSWORD: &str = "correct horse battery";
const METRICS_ON: &str = "[metrics]\naddress = \"127.0.0.1:0\"\n";

/// The metrics listener's address, from the server's log.
fn metrics_address(server: &Server) -> SocketAddr {
    assert!(
        server.wait_for_log("serving metrics at http://"),
        "no metrics listener:\n{}",
        server.log_text()
    );
    let log = server.log_text();
    let url = log
        .split("serving metrics at http://")
        .nth(1)
        .and_then(|rest| rest.split("/metrics").next())
        .expect("address in the log");
    url.parse().expect("socket address")
}

/// One scrape, checked line by line: the samples by name and labels (labels as
/// `a="x",b="y"`, in the order written).
struct Scrape {
    samples: BTreeMap<(String, String), f64>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    fn get(&self, name: &str, labels: &str) -> f64 {
        *self
            .samples
            .get(&(name.to_owned(), labels.to_owned()))
            .unwrap_or_else(|| panic!("no sample {name}{{{labels}}}"))
    }
}

fn is_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_' || first == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The family a sample belongs to (a histogram's `_bucket`, `_sum`, `_count` are its own).
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).is_some_and(|kind| kind == "histogram")
        {
            return base;
        }
    }
    name
}

/// Parses `{a="x",b="y"}` (escapes included) into its text between the braces, checking
/// each label's name and quoting; returns it and the rest of the line.
fn parse_labels(line: &str) -> (String, &str) {
    let Some(rest) = line.strip_prefix('{') else {
        return (String::new(), line);
    };
    let mut chars = rest.char_indices().peekable();
    let mut expecting_name = true;
    loop {
        if expecting_name {
            let start = chars.peek().map(|(i, _)| *i).expect("label");
            if rest[start..].starts_with('}') {
                return (rest[..start].to_owned(), &rest[start + 1..]);
            }
            let equals = rest[start..].find('=').expect("=") + start;
            assert!(is_name(&rest[start..equals]), "label name in {line}");
            assert_eq!(
                &rest[equals + 1..equals + 2],
                "\"",
                "quoted value in {line}"
            );
            while chars.peek().is_some_and(|(i, _)| *i <= equals + 1) {
                chars.next();
            }
            expecting_name = false;
        } else {
            let (_, c) = chars.next().expect("value ends");
            match c {
                '\\' => {
                    let (_, escaped) = chars.next().expect("escape");
                    assert!(matches!(escaped, '\\' | '"' | 'n'), "escape in {line}");
                }
                '"' => {
                    let (i, next) = chars.next().expect("after value");
                    match next {
                        ',' => expecting_name = true,
                        '}' => return (rest[..i].to_owned(), &rest[i + 1..]),
                        other => panic!("{other} after a label value in {line}"),
                    }
                }
                '\n' => panic!("raw newline in {line}"),
                _ => {}
            }
        }
    }
}

/// Checks every line of `text` against the exposition format and returns the samples.
fn parse(text: &str) -> Scrape {
    let mut helps = BTreeSet::new();
    let mut types = BTreeMap::new();
    let mut samples = BTreeMap::new();
    assert!(text.ends_with('\n'), "the text ends with a newline");
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (keyword, name) = (parts.next().expect("keyword"), parts.next().expect("name"));
            assert!(is_name(name), "family name in {line}");
            match keyword {
                "HELP" => {
                    assert!(helps.insert(name.to_owned()), "one HELP for {name}");
                    assert!(parts.next().is_some_and(|help| !help.is_empty()));
                }
                "TYPE" => {
                    let kind = parts.next().expect("type");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "{line}"
                    );
                    assert!(
                        types.insert(name.to_owned(), kind.to_owned()).is_none(),
                        "one TYPE for {name}"
                    );
                }
                other => panic!("unknown comment {other}"),
            }
            continue;
        }
        assert!(!line.is_empty() && !line.starts_with('#'), "line {line:?}");
        let end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value in {line}"));
        let name = &line[..end];
        assert!(is_name(name), "metric name in {line}");
        let (labels, rest) = parse_labels(&line[end..]);
        let value = rest.strip_prefix(' ').expect("a space before the value");
        assert!(!value.contains(' '), "no timestamp expected in {line}");
        let number: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            other => other.parse().unwrap_or_else(|_| panic!("value in {line}")),
        };
        let family = family_of(name, &types);
        assert!(helps.contains(family), "HELP before {line}");
        assert!(types.contains_key(family), "TYPE before {line}");
        if types[family] == "counter" {
            assert!(
                name.ends_with("_total"),
                "a counter's name ends in _total: {name}"
            );
        }
        assert!(
            samples.insert((name.to_owned(), labels), number).is_none(),
            "one sample per name and labels: {line}"
        );
    }
    Scrape { samples, types }
}

/// Every histogram's buckets rise with `le`, and `+Inf` equals `_count`.
fn check_histograms(scrape: &Scrape) {
    let histograms: Vec<&String> = scrape
        .types
        .iter()
        .filter(|(_, kind)| *kind == "histogram")
        .map(|(name, _)| name)
        .collect();
    assert!(!histograms.is_empty());
    for name in histograms {
        let bucket = format!("{name}_bucket");
        // Series by their labels without `le`.
        let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for ((sample, labels), value) in &scrape.samples {
            if *sample != bucket {
                continue;
            }
            let (others, le) = labels.rsplit_once(",le=\"").expect("le last");
            let le = le.trim_end_matches('"');
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().expect("le")
            };
            series
                .entry(others.to_owned())
                .or_default()
                .push((le, *value));
        }
        assert!(!series.is_empty(), "{name} has buckets");
        for (labels, mut buckets) in series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            assert!(
                buckets.windows(2).all(|pair| pair[0].1 <= pair[1].1),
                "{name}{{{labels}}} buckets are cumulative: {buckets:?}"
            );
            let (last_le, last) = *buckets.last().expect("a bucket");
            assert!(last_le.is_infinite(), "{name}{{{labels}}} ends with +Inf");
            assert_eq!(last, scrape.get(&format!("{name}_count"), &labels));
            scrape.get(&format!("{name}_sum"), &labels);
        }
    }
}

fn scrape(address: SocketAddr) -> Scrape {
    let response = common::http::Client::plain(address)
        .request("GET", "/metrics", &[], None)
        .expect("scrape");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let scrape = parse(std::str::from_utf8(&response.body).expect("UTF-8"));
    check_histograms(&scrape);
    scrape
}

/// The TCP ports `pid` listens on (its sockets in LISTEN state, from /proc).
fn listening_ports(pid: u32) -> BTreeSet<u16> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut ports = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 9 && fields[3] == "0A" && inodes.contains(fields[9]) {
                let port = fields[1].rsplit(':').next().expect("port");
                ports.insert(u16::from_str_radix(port, 16).expect("hex port"));
            }
        }
    }
    ports
}

#[test]
fn metrics_are_off_by_default_and_nothing_listens_for_them() {
    let server = Server::start(&test_config(""));
    assert!(
        !server.log_text().contains("metrics"),
        "{}",
        server.log_text()
    );
    let ports = listening_ports(server.child.id());
    assert_eq!(
        ports,
        BTreeSet::from([server.address("http").port()]),
        "only the client listener"
    );
}

#[test]
fn a_scrape_shows_requests_long_polls_events_and_the_process() {
    let server = Server::start_with_users(&test_config(METRICS_ON), &[("alice", PASSWORD)]);
    let address = metrics_address(&server);
    assert_eq!(
        listening_ports(server.child.id()),
        BTreeSet::from([server.address("http").port(), address.port()])
    );
    let before = scrape(address);
    let token = login_token(&server, "alice", PASSWORD);
    let mut client = server.client();
    let room = ok(client.json(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&token),
        &json!({}),
    ))["room_id"]
        .as_str()
        .expect("room")
        .to_owned();
    for n in 0..3 {
        ok(client.json(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/m{n}"),
            Some(&token),
            &json!({ "msgtype": "m.text", "body": "hello" }),
        ));
    }
    assert_eq!(
        client.get("/_matrix/client/v3/no/such/endpoint").status,
        404
    );
    let since = ok(client.get_with("/_matrix/client/v3/sync?timeout=0", &token))["next_batch"]
        .as_str()
        .expect("batch")
        .to_owned();

    // A /sync waits: counted while it does.
    let waiting = waiting_request(
        &server,
        &format!("/_matrix/client/v3/sync?since={since}&timeout=30000"),
        &token,
    );
    let during = scrape(address);
    assert_eq!(
        during.get("hearth_sync_long_polls_waiting", "kind=\"sync\""),
        1.0
    );
    ok(client.json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/wake"),
        Some(&token),
        &json!({ "msgtype": "m.text", "body": "wake up" }),
    ));
    let (answer, _) = waiting.join().expect("the sync answers");
    assert_eq!(answer.status, 200);

    let after = scrape(address);
    let moved = |name: &str, labels: &str| after.get(name, labels) - before.get(name, labels);
    let requests = "hearth_http_requests_total";
    assert_eq!(moved(requests, "group=\"client_send\",status=\"2xx\""), 4.0);
    assert!(moved(requests, "group=\"client_other\",status=\"4xx\"") >= 1.0);
    assert!(moved(requests, "group=\"client_other\",status=\"2xx\"") >= 2.0);
    assert!(moved(requests, "group=\"client_sync\",status=\"2xx\"") >= 2.0);
    assert_eq!(moved(requests, "group=\"client_send\",status=\"5xx\""), 0.0);
    let latency = "hearth_http_request_duration_seconds_count";
    assert_eq!(moved(latency, "group=\"client_send\""), 4.0);
    assert_eq!(
        after.get("hearth_sync_long_polls_waiting", "kind=\"sync\""),
        0.0
    );
    assert_eq!(
        after.get("hearth_sync_long_polls_waiting", "kind=\"sliding_sync\""),
        0.0
    );
    // The room's creation events, three messages and the one that woke the sync.
    assert!(moved("hearth_events_persisted_total", "") >= 9.0);
    assert!(after.get("hearth_database_size_bytes", "") > 0.0);
    let rss = after.get("process_resident_memory_bytes", "");
    assert!(rss > 1e6 && rss < 1e9, "RSS {rss}");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let started = after.get("process_start_time_seconds", "");
    assert!(started <= now && started > now - 300.0, "start {started}");
    for name in [
        "hearth_federation_outbound_queued",
        "hearth_federation_outbound_catch_up_rows",
        "hearth_federation_failing_destinations",
        "hearth_federation_inbound_transactions_total",
    ] {
        assert_eq!(after.get(name, ""), 0.0, "{name}");
    }
}

#[test]
fn the_metrics_listener_answers_only_get_metrics() {
    let server = Server::start(&test_config(METRICS_ON));
    let address = metrics_address(&server);
    let mut client = common::http::Client::plain(address);
    let answer = |method: &str, path: &str| {
        let mut client = common::http::Client::plain(address);
        client
            .request(method, path, &[], None)
            .unwrap_or_else(|err| panic!("{method} {path}: {err}"))
            .status
    };
    assert_eq!(answer("POST", "/metrics"), 405);
    assert_eq!(answer("DELETE", "/metrics"), 405);
    assert_eq!(answer("GET", "/"), 404);
    assert_eq!(answer("GET", "/metrics/more"), 404);
    assert_eq!(answer("GET", "/_matrix/client/versions"), 404);
    assert_eq!(answer("GET", "/metrics?name=x"), 200);
    // Not HTTP at all: a 400, and the connection closed.
    let mut raw = TcpStream::connect(address).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    raw.write_all(b"\x16\x03\x01 hello\r\n\r\n").expect("write");
    let mut text = String::new();
    raw.read_to_string(&mut text).expect("read to the end");
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    // A head that never ends is not read for ever: the connection is closed.
    let mut endless = TcpStream::connect(address).expect("connect");
    endless
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    endless
        .write_all(&vec![b'a'; 9 * 1024])
        .expect("write a long head");
    let mut rest = Vec::new();
    let _ = endless.read_to_end(&mut rest);
    assert!(
        rest.is_empty() || rest.starts_with(b"HTTP/1.1 400 "),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    // The listener still answers.
    assert_eq!(
        client
            .request("GET", "/metrics", &[], None)
            .expect("scrape")
            .status,
        200
    );
    // The main listener never served metrics.
    assert_eq!(server.client().get("/metrics").status, 404);
}

#[test]
fn an_inbound_transaction_and_its_pdus_are_counted() {
    let certificates = tempfile::tempdir().expect("tempdir");
    write_certificates(certificates.path());
    let server = start_with(certificates.path(), "localhost", &[], &[], METRICS_ON);
    let address = metrics_address(&server);
    let (listener, name_f) = bind();
    let key_f = new_key();
    let _fake = FakeServer::start(
        certificates.path(),
        (listener, name_f.clone()),
        key_f.clone(),
        Arc::new(|_| (404, json!({ "errcode": "M_NOT_FOUND", "error": "nothing" }))),
    );
    let signer = Signer {
        origin: &name_f,
        key: &key_f,
        destination: &server.name,
    };
    // A PDU of a room this server does not hold, and one that is not even an object.
    let room = common::fake::FakeRoom::create(&name_f, &key_f, "elsewhere");
    let pdu = room
        .state_events()
        .into_iter()
        .next()
        .expect("create event");
    let transaction = json!({
        "origin": name_f, "origin_server_ts": 1_800_000_000_000u64, "pdus": [pdu, 42],
    });
    let answer = signer.send(
        &server,
        "PUT",
        "/_matrix/federation/v1/send/t1",
        Some(&transaction),
    );
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let after = scrape(address);
    assert_eq!(
        after.get("hearth_federation_inbound_transactions_total", ""),
        1.0
    );
    assert_eq!(
        after.get(
            "hearth_federation_inbound_pdus_total",
            "result=\"rejected\""
        ),
        2.0
    );
    assert_eq!(
        after.get(
            "hearth_federation_inbound_pdus_total",
            "result=\"accepted\""
        ),
        0.0
    );
    assert_eq!(
        after.get(
            "hearth_http_requests_total",
            "group=\"federation_send\",status=\"2xx\""
        ),
        1.0
    );
}
