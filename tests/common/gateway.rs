//! A push gateway on loopback for tests: a tiny HTTP/1.1 server in the test process that
//! records each `POST /_matrix/push/v1/notify` body and answers as the test says (accept,
//! reject pushkeys, fail, or hang until released).

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How the gateway answers one request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// `200 {"rejected": [...]}`.
    Accept(Vec<String>),
    /// That status, with an empty JSON body.
    Status(u16),
    /// No answer until [`Gateway::release`] (then `200`).
    Hang,
}

/// A received notification, and when it arrived.
pub struct Received {
    pub body: Value,
    pub at: Instant,
}

pub struct Gateway {
    pub address: SocketAddr,
    /// Answers for the next requests, in order; then [`Gateway::default_answer`].
    script: Arc<Mutex<VecDeque<Answer>>>,
    default_answer: Arc<Mutex<Answer>>,
    released: Arc<(Mutex<bool>, Condvar)>,
    received: Receiver<Received>,
}

impl Gateway {
    /// Listens on `127.0.0.1:0`; accepts everything unless told otherwise.
    pub fn start() -> Gateway {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind gateway");
        let address = listener.local_addr().expect("address");
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let default_answer = Arc::new(Mutex::new(Answer::Accept(Vec::new())));
        let released = Arc::new((Mutex::new(false), Condvar::new()));
        let (sender, received) = channel();
        let shared = (script.clone(), default_answer.clone(), released.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let (script, default_answer, released) = shared.clone();
                let sender = sender.clone();
                std::thread::spawn(move || {
                    serve(stream, &script, &default_answer, &released, &sender)
                });
            }
        });
        Gateway {
            address,
            script,
            default_answer,
            released,
            received,
        }
    }

    /// The URL a pusher names.
    pub fn url(&self) -> String {
        format!("http://{}/_matrix/push/v1/notify", self.address)
    }

    /// Answers the next requests with `answers`, in order.
    pub fn then(&self, answers: &[Answer]) {
        self.script
            .lock()
            .expect("script")
            .extend(answers.iter().cloned());
    }

    /// Answers every request not scripted with `answer`.
    pub fn always(&self, answer: Answer) {
        *self.default_answer.lock().expect("default") = answer;
    }

    /// Lets every hanging request (and later [`Answer::Hang`]s) answer `200`.
    pub fn release(&self) {
        let (lock, wake) = &*self.released;
        *lock.lock().expect("released") = true;
        wake.notify_all();
    }

    /// The next notification received, within `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Received> {
        self.received.recv_timeout(timeout).ok()
    }

    /// The next notification, or the test fails.
    pub fn expect(&self) -> Value {
        self.next(Duration::from_secs(20))
            .expect("a notification reaches the gateway")
            .body
    }

    /// Whether nothing arrives within `wait`.
    pub fn quiet_for(&self, wait: Duration) -> bool {
        self.next(wait).is_none()
    }
}

fn serve(
    stream: TcpStream,
    script: &Mutex<VecDeque<Answer>>,
    default_answer: &Mutex<Answer>,
    released: &(Mutex<bool>, Condvar),
    sender: &Sender<Received>,
) {
    let mut reader = BufReader::new(stream);
    let mut length = 0usize;
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    assert!(
        request_line.starts_with("POST /_matrix/push/v1/notify "),
        "{request_line}"
    );
    let answer = script
        .lock()
        .expect("script")
        .pop_front()
        .unwrap_or_else(|| default_answer.lock().expect("default").clone());
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let _ = sender.send(Received {
        body,
        at: Instant::now(),
    });
    let (status, answer_body) = match answer {
        Answer::Accept(rejected) => (200, json!({ "rejected": rejected })),
        Answer::Status(status) => (status, json!({})),
        Answer::Hang => {
            let (lock, wake) = released;
            let mut done = lock.lock().expect("released");
            while !*done {
                done = wake.wait(done).expect("released");
            }
            (200, json!({ "rejected": [] }))
        }
    };
    let answer_body = answer_body.to_string();
    let mut stream = reader.into_inner();
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer_body}",
        answer_body.len()
    );
    let _ = stream.flush();
}
