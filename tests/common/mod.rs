//! Test support: start the real `hearth` binary on `127.0.0.1:0` with a temporary data
//! directory, find the ports it bound in its log, talk HTTP/1.1 (plain or TLS) to it, and stop
//! it when the test ends.

#![allow(dead_code)]

pub mod budget;
pub mod catalogue;
pub mod e2ee;
pub mod fake;
pub mod federation;
pub mod gateway;
pub mod http;
pub mod synapse;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BINARY: &str = env!("CARGO_BIN_EXE_hearth");

/// The JSON of a `200` answer; any other status fails the test with the body.
pub fn ok(response: http::Response) -> serde_json::Value {
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()
}

/// Every user but the first (whose token is `tokens[0]`, the rooms' creator) joins every
/// room: the benchmarks' day starts with everyone in every room.
pub fn everyone_joins(client: &mut http::Client, tokens: &[String], rooms: &[String]) {
    for token in &tokens[1..] {
        for room in rooms {
            ok(client.json(
                "POST",
                &format!("/_matrix/client/v3/rooms/{room}/join"),
                Some(token),
                &serde_json::json!({}),
            ));
        }
    }
}

/// Each user's first `/sync`: the `next_batch` to sync on from.
pub fn first_sync_batches(client: &mut http::Client, tokens: &[String]) -> Vec<String> {
    tokens
        .iter()
        .map(|token| {
            ok(client.get_with("/_matrix/client/v3/sync", token))["next_batch"]
                .as_str()
                .expect("batch")
                .to_owned()
        })
        .collect()
}

/// Messages per second with `clients` clients sending `each` messages at once, client `n`
/// as user `tokens[n]` into `rooms[n]` (both taken round), each on its own connection.
/// `tag` keeps the transaction IDs of separate runs apart.
pub fn concurrent_sends(
    address: SocketAddr,
    tokens: &[String],
    rooms: &[String],
    clients: usize,
    each: usize,
    tag: &str,
) -> f64 {
    let started = Instant::now();
    let senders: Vec<_> = (0..clients)
        .map(|n| {
            let token = tokens[n % tokens.len()].clone();
            let room = rooms[n % rooms.len()].clone();
            let tag = tag.to_owned();
            std::thread::spawn(move || {
                let mut client = http::Client::plain(address);
                for i in 0..each {
                    let path = format!(
                        "/_matrix/client/v3/rooms/{room}/send/m.room.message/{tag}{n}-{i}"
                    );
                    ok(client.json(
                        "PUT",
                        &path,
                        Some(&token),
                        &serde_json::json!({ "msgtype": "m.text", "body": format!("concurrent {n} {i}") }),
                    ));
                }
            })
        })
        .collect();
    for sender in senders {
        sender.join().expect("a sender");
    }
    (clients * each) as f64 / started.elapsed().as_secs_f64()
}

/// `text` percent-encoded for a query string (filters are JSON in the URL).
pub fn query_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// The `errcode` of an error answer (empty if none).
pub fn errcode(response: &http::Response) -> String {
    response.json()["errcode"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Starts a long-polling `GET path` (with `token`) on a connection of its own, in a thread,
/// and returns once the server is waiting on it: the request is written, and a request sent
/// after it on another connection (the server's one worker takes connections in order) has
/// been answered. Join the thread for the answer and the instant it arrived.
pub fn waiting_request(
    server: &Server,
    path: &str,
    token: &str,
) -> std::thread::JoinHandle<(http::Response, Instant)> {
    let address = server.address("http");
    let (path, bearer) = (path.to_owned(), format!("Bearer {token}"));
    let (written, is_written) = channel();
    let waiting = std::thread::spawn(move || {
        let mut client = http::Client::plain(address);
        client
            .send_only("GET", &path, &[("Authorization", &bearer)])
            .unwrap_or_else(|err| panic!("GET {path}: {err}"));
        written.send(()).expect("tell");
        let answer = client
            .read_answer()
            .unwrap_or_else(|err| panic!("GET {path}: {err}"));
        (answer, Instant::now())
    });
    is_written
        .recv_timeout(Duration::from_secs(20))
        .expect("the waiting request is written");
    let probe = server.client().get("/_matrix/client/versions");
    assert_eq!(probe.status, 200);
    waiting
}

/// Logs in with a password and returns the access token.
pub fn login_token(server: &Server, user: &str, password: &str) -> String {
    let response = server.client().json(
        "POST",
        "/_matrix/client/v3/login",
        None,
        &serde_json::json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user },
            "password": password,
        }),
    );
    ok(response)["access_token"]
        .as_str()
        .expect("token")
        .to_owned()
}
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether `command` runs and exits successfully within `timeout` (`false` if it cannot be
/// started: a missing Python); killed and a test failure if it runs longer.
pub fn succeeds_within(command: &mut Command, timeout: Duration) -> bool {
    let Ok(mut child) = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.success();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} still running after {timeout:?}, killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `command` to completion with its output captured, waiting at most `timeout`: past
/// it, the process is killed and the test fails with what it wrote (a hung helper, a Python
/// tool stuck on the network, must not hang the test run).
pub fn output_within(command: &mut Command, timeout: Duration) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("start {command:?}: {err}"));
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.join().unwrap_or_default();
            panic!(
                "{command:?} still running after {timeout:?}, killed:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Runs `hearth ARGS` to completion in `dir`, feeding `stdin`.
pub fn hearth(dir: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(BINARY)
        .args(args)
        .current_dir(dir)
        .env_remove("HEARTH_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hearth");
    // A command that fails early exits without reading its input: that is no test failure.
    let written = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes());
    if let Err(err) = written {
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::BrokenPipe,
            "write stdin: {err}"
        );
    }
    child.wait_with_output().expect("hearth runs")
}

/// A config for a test server: `localhost`, data in `dir/data`, listeners on port 0.
pub fn test_config(extra: &str) -> String {
    format!(
        "[server]\nserver_name = \"localhost\"\nworkers = 1\n\n\
         [database]\npath = \"data\"\n\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\n\n{extra}"
    )
}

/// A running `hearth serve`, killed when dropped.
pub struct Server {
    pub dir: PathBuf,
    /// The server name, for servers started by [`federation::start`] (empty otherwise).
    pub name: String,
    pub child: Child,
    /// `(scheme, address)` of each listener, in the order they were logged.
    pub listeners: Vec<(String, SocketAddr)>,
    log: Arc<Mutex<Vec<String>>>,
    lines: Receiver<String>,
    _tempdir: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server in a fresh temporary directory with `config` as its config file.
    pub fn start(config: &str) -> Server {
        let tempdir = tempfile::tempdir().expect("tempdir");
        let dir = tempdir.path().to_owned();
        std::fs::write(dir.join("hearth.toml"), config).expect("write config");
        let mut server = Server::start_in(&dir, &[], &[]).expect("server starts");
        server._tempdir = Some(tempdir);
        server
    }

    /// Like [`Server::start`], with accounts made first by `hearth user add` (`name`,
    /// `password`).
    pub fn start_with_users(config: &str, users: &[(&str, &str)]) -> Server {
        let tempdir = tempfile::tempdir().expect("tempdir");
        let dir = tempdir.path().to_owned();
        std::fs::write(dir.join("hearth.toml"), config).expect("write config");
        for (name, password) in users {
            let output = hearth(&dir, &["user", "add", name], &format!("{password}\n"));
            assert!(
                output.status.success(),
                "user add: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let mut server = Server::start_in(&dir, &[], &[]).expect("server starts");
        server._tempdir = Some(tempdir);
        server
    }

    /// Starts `hearth serve --config hearth.toml` in `dir`, with extra environment variables.
    /// Returns the log if the process exits before listening.
    pub fn start_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Server, String> {
        let mut command = Command::new(BINARY);
        command
            .args(["serve", "--config", "hearth.toml"])
            .args(args)
            .current_dir(dir)
            .env_remove("HEARTH_CONFIG")
            .env_remove("NOTIFY_SOCKET")
            .env("RUST_LOG", "info,hearth=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start hearth serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (sender, lines) = channel();
        let log_writer = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log_writer.lock().expect("log").push(line.clone());
                let _ = sender.send(line);
            }
        });
        let mut server = Server {
            dir: dir.to_owned(),
            name: String::new(),
            child,
            listeners: Vec::new(),
            log,
            lines,
            _tempdir: None,
        };
        server.wait_until_ready()?;
        Ok(server)
    }

    fn wait_until_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    if let Some(url) = line.split("listening on ").nth(1) {
                        let (scheme, address) = url.trim().split_once("://").expect("url");
                        let address = address.parse().expect("socket address");
                        self.listeners.push((scheme.to_owned(), address));
                    }
                    if line.contains("ready in") {
                        return Ok(());
                    }
                }
                Err(_) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        // Read what the process wrote before it exited.
                        while self.lines.recv_timeout(Duration::from_secs(5)).is_ok() {}
                        return Err(format!("hearth exited with {status}:\n{}", self.log_text()));
                    }
                }
            }
        }
        Err(format!(
            "hearth did not start in time:\n{}",
            self.log_text()
        ))
    }

    /// The first listener with this scheme.
    pub fn address(&self, scheme: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(s, _)| s == scheme)
            .map(|(_, address)| *address)
            .unwrap_or_else(|| panic!("no {scheme} listener"))
    }

    /// Keeps `dir` (and so its files) for as long as the server lives.
    pub fn keep_dir(&mut self, dir: tempfile::TempDir) {
        self._tempdir = Some(dir);
    }

    /// A plain-HTTP client for the first `http` listener.
    pub fn client(&self) -> http::Client {
        http::Client::plain(self.address("http"))
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Sends `TERM`, `INT`, `HUP` or `KILL` to the server.
    #[allow(unsafe_code)]
    pub fn signal(&self, name: &str) {
        let signal = match name {
            "TERM" => libc::SIGTERM,
            "INT" => libc::SIGINT,
            "HUP" => libc::SIGHUP,
            "KILL" => libc::SIGKILL,
            other => panic!("unknown signal {other}"),
        };
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) only sends a signal to our own child process.
        let result = unsafe { libc::kill(pid, signal) };
        assert_eq!(result, 0, "kill -{name} failed");
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    /// Stops the server; when a test failed, its last log lines go to the test's output,
    /// so a server that died or refused something says why.
    fn drop(&mut self) {
        let exited = self.child.try_wait().ok().flatten();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self
                .log
                .lock()
                .map(|lines| lines.clone())
                .unwrap_or_default();
            let tail = &log[log.len().saturating_sub(40)..];
            eprintln!(
                "--- last log lines of {} (exited on its own: {exited:?}) ---\n{}",
                self.dir.display(),
                tail.join("\n")
            );
        }
    }
}
