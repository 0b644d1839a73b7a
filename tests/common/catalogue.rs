//! The hostile-input catalogue's harness (issue 10): a table of requests, each with the
//! answers the spec allows, run one by one against a real server. For every case it checks
//! the status, that an error answer is a JSON object with a string `errcode` (the expected
//! one) and a string `error`, that nothing the case could have touched changed (a snapshot
//! taken before and after, by the test's own follow-up requests), and that the server still
//! answers `/versions` and a normal authenticated request.
//!
//! A case that fails today because of a finding another change is fixing carries
//! `.known(who)`: the main test leaves it out, and a test of its own (`#[ignore]`d until the
//! fix is merged) runs exactly those cases and must pass once it is.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use super::http::{Client, Response};

/// What a case sends after its head.
#[derive(Clone)]
pub enum Body {
    None,
    /// Bytes sent with a `Content-Length` and `Content-Type: application/json`.
    Bytes(Vec<u8>),
    /// The whole request, head and body, written as is on a connection of its own (declared
    /// lengths that lie, chunked bodies, huge headers).
    Raw(Vec<u8>),
}

/// One hostile request and the answers the spec allows for it.
#[derive(Clone)]
pub struct Case {
    pub name: String,
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Body,
    /// Allowed `(status, errcode)` pairs: an errcode of `""` checks nothing (a success);
    /// `"*"` takes any errcode, for statuses whose errcode the spec leaves open.
    pub expect: Vec<(u16, &'static str)>,
    /// Who fixes the known finding this case shows (`None`: it must pass today).
    pub known: Option<&'static str>,
    /// Compare the snapshots even though the answer may be a success (a transaction whose
    /// PDUs must all be refused is answered `200`).
    pub unchanged: bool,
}

impl Case {
    pub fn new(name: impl Into<String>, method: &'static str, path: impl Into<String>) -> Case {
        Case {
            name: name.into(),
            method,
            path: path.into(),
            headers: Vec::new(),
            body: Body::None,
            expect: Vec::new(),
            known: None,
            unchanged: false,
        }
    }

    /// A JSON body.
    pub fn json(self, body: &Value) -> Case {
        self.bytes(serde_json::to_vec(body).expect("serialize"))
    }

    /// A body of any bytes, declared as JSON.
    pub fn bytes(mut self, body: impl Into<Vec<u8>>) -> Case {
        self.body = Body::Bytes(body.into());
        self
    }

    /// The whole request as raw bytes (the method and path are only for the report).
    pub fn raw(mut self, request: impl Into<Vec<u8>>) -> Case {
        self.body = Body::Raw(request.into());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Case {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// `Authorization: Bearer token`.
    pub fn token(self, token: &str) -> Case {
        self.header("Authorization", &format!("Bearer {token}"))
    }

    /// An allowed answer; call again for each other one the spec allows.
    pub fn expect(mut self, status: u16, errcode: &'static str) -> Case {
        self.expect.push((status, errcode));
        self
    }

    /// A known finding, fixed by `who`: left out of the main run until merged.
    pub fn known(mut self, who: &'static str) -> Case {
        self.known = Some(who);
        self
    }

    /// Nothing may change, whatever the answer.
    pub fn unchanged(mut self) -> Case {
        self.unchanged = true;
        self
    }

    fn must_not_change(&self) -> bool {
        self.unchanged || self.expect.iter().all(|(status, _)| *status >= 400)
    }
}

/// The server under test, and how to look at it.
pub struct Target<'a> {
    pub address: SocketAddr,
    /// What the cases must not change, read by follow-up requests.
    pub snapshot: &'a dyn Fn() -> Value,
    /// A normal request that must still work after each case (`Err` with why not).
    pub healthy: &'a dyn Fn() -> Result<(), String>,
}

/// Runs `cases` and returns a line for each failure.
pub fn run(target: &Target<'_>, cases: &[&Case]) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases {
        let before = (target.snapshot)();
        let problem = match send(target.address, case) {
            Err(err) => Some(format!("no answer: {err}")),
            Ok(response) => check(case, &response),
        };
        if let Some(problem) = problem {
            failures.push(format!("{}: {problem}", case.name));
        }
        if case.must_not_change() {
            let after = (target.snapshot)();
            if before != after {
                failures.push(format!(
                    "{}: state changed:\nbefore {before}\nafter  {after}",
                    case.name
                ));
            }
        }
        if let Err(err) = versions(target.address).and_then(|()| (target.healthy)()) {
            failures.push(format!("{}: server unhealthy afterwards: {err}", case.name));
        }
    }
    failures
}

/// Runs the cases with no known finding; every one must pass.
pub fn check_all(target: &Target<'_>, cases: &[Case], minimum: usize) {
    let selected: Vec<&Case> = cases.iter().filter(|case| case.known.is_none()).collect();
    assert_unique_names(cases);
    let failures = run(target, &selected);
    assert!(
        failures.is_empty(),
        "{} failures in {} cases:\n{}",
        failures.len(),
        selected.len(),
        failures.join("\n")
    );
    assert!(
        cases.len() >= minimum,
        "the catalogue has {} cases, fewer than {minimum}",
        cases.len()
    );
    eprintln!(
        "{} cases passed ({} known findings left out)",
        selected.len(),
        cases.len() - selected.len()
    );
}

/// Runs the cases of known findings `who` is fixing; every one must pass once fixed.
pub fn check_known(target: &Target<'_>, cases: &[Case], who: &str) {
    let selected: Vec<&Case> = cases
        .iter()
        .filter(|case| case.known == Some(who))
        .collect();
    assert!(!selected.is_empty(), "no known findings for {who}");
    let failures = run(target, &selected);
    assert!(
        failures.is_empty(),
        "{} failures in {} known findings ({who}):\n{}",
        failures.len(),
        selected.len(),
        failures.join("\n")
    );
}

fn assert_unique_names(cases: &[Case]) {
    let mut names: Vec<&str> = cases.iter().map(|case| case.name.as_str()).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "two cases share a name");
}

fn check(case: &Case, response: &Response) -> Option<String> {
    let body = String::from_utf8_lossy(&response.body);
    let shown: String = body.chars().take(300).collect();
    let Some((_, errcode)) = case
        .expect
        .iter()
        .find(|(status, _)| *status == response.status)
    else {
        return Some(format!(
            "status {} ({shown}), expected {:?}",
            response.status, case.expect
        ));
    };
    if response.status < 400 {
        return None;
    }
    let json: Value = match serde_json::from_slice(&response.body) {
        Ok(json) => json,
        Err(_) => {
            return Some(format!(
                "status {}, body not JSON: {shown:?}",
                response.status
            ));
        }
    };
    let (Some(got), Some(_)) = (json["errcode"].as_str(), json["error"].as_str()) else {
        return Some(format!("error body without errcode and error: {shown}"));
    };
    let allowed: Vec<&str> = case
        .expect
        .iter()
        .filter(|(status, _)| *status == response.status)
        .map(|(_, errcode)| *errcode)
        .collect();
    if *errcode != "*" && !allowed.contains(&got) {
        return Some(format!(
            "status {}, errcode {got} ({shown}), expected one of {allowed:?}",
            response.status
        ));
    }
    None
}

fn send(address: SocketAddr, case: &Case) -> Result<Response, String> {
    let headers: Vec<(&str, &str)> = case
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    match &case.body {
        Body::Raw(bytes) => raw_exchange(address, bytes),
        Body::None => Client::plain(address)
            .request(case.method, &case.path, &headers, None)
            .map_err(|err| err.to_string()),
        Body::Bytes(bytes) => {
            let mut headers = headers;
            headers.push(("Content-Type", "application/json"));
            Client::plain(address)
                .request(case.method, &case.path, &headers, Some(bytes))
                .map_err(|err| err.to_string())
        }
    }
}

/// Writes `request` on a new connection (a server may answer and close before it has all
/// of it: write errors are not failures) and reads one answer.
pub fn raw_exchange(address: SocketAddr, request: &[u8]) -> Result<Response, String> {
    let mut stream = TcpStream::connect(address).map_err(|err| err.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|err| err.to_string())?;
    stream
        .set_write_timeout(Some(Duration::from_secs(20)))
        .map_err(|err| err.to_string())?;
    for chunk in request.chunks(64 * 1024) {
        if stream.write_all(chunk).is_err() {
            break;
        }
    }
    let mut received = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                received.extend_from_slice(&buffer[..n]);
                if let Some(response) = complete(&received) {
                    return Ok(response);
                }
            }
            Err(err) if received.is_empty() => return Err(err.to_string()),
            Err(_) => break,
        }
    }
    complete(&received)
        .or_else(|| parse_until_close(&received))
        .ok_or_else(|| {
            format!(
                "connection closed after {} bytes: {:?}",
                received.len(),
                String::from_utf8_lossy(&received[..received.len().min(200)])
            )
        })
}

/// The answer in `bytes` once its head and `Content-Length` body are all there.
fn complete(bytes: &[u8]) -> Option<Response> {
    let end = bytes.windows(4).position(|window| window == b"\r\n\r\n")? + 4;
    let (status, headers) = head(&bytes[..end])?;
    let length: usize = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))?
        .1
        .parse()
        .ok()?;
    (bytes.len() >= end + length).then(|| Response {
        status,
        headers,
        body: bytes[end..end + length].to_vec(),
    })
}

fn parse_until_close(bytes: &[u8]) -> Option<Response> {
    let end = bytes.windows(4).position(|window| window == b"\r\n\r\n")? + 4;
    let (status, headers) = head(&bytes[..end])?;
    Some(Response {
        status,
        headers,
        body: bytes[end..].to_vec(),
    })
}

fn head(bytes: &[u8]) -> Option<(u16, Vec<(String, String)>)> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    Some((status, headers))
}

/// `GET /_matrix/client/versions` answers 200 on a fresh connection.
fn versions(address: SocketAddr) -> Result<(), String> {
    let response = Client::plain(address)
        .request("GET", "/_matrix/client/versions", &[], None)
        .map_err(|err| format!("/versions: {err}"))?;
    if response.status == 200 {
        Ok(())
    } else {
        Err(format!("/versions answered {}", response.status))
    }
}

/// The request head of a raw request, with `Host` and any extra lines.
pub fn raw_head(method: &str, path: &str, extra: &[&str]) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head
}
