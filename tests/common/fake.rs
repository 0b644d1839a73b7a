//! A fake Matrix server for tests of hostile or broken servers: HTTPS on loopback with the
//! test certificates, serving its signing key, every other request answered by the test's
//! own handler. With it, [`FakeRoom`]: a room version 11 room held by the fake, its events
//! built and signed by hand, so a test can answer with the room as it is or with lies.

use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use hearth::matrix::crypto::{KeyId, SigningKey};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

/// One request the fake received: the path percent-decoded, the query as sent.
#[derive(Debug, Clone)]
pub struct FakeRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The `Authorization` header, if any.
    pub authorization: String,
    pub body: Value,
}

impl FakeRequest {
    /// The value of query parameter `name`, percent-decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key == name).then(|| percent_decode(value))
        })
    }
}

/// What the test answers: a status and a JSON body.
pub type Handler = Arc<dyn Fn(&FakeRequest) -> (u16, Value) + Send + Sync>;

/// The fake server, stopped when dropped.
pub struct FakeServer {
    pub name: String,
    pub key: SigningKey,
    /// Every request received (key requests left out), in order.
    pub requests: Arc<Mutex<Vec<FakeRequest>>>,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A listener on a free port of 127.0.0.1 and the server name it gives (an IP literal the
/// test certificate covers).
pub fn bind() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake server");
    let port = listener.local_addr().expect("address").port();
    (listener, format!("127.0.0.1:{port}"))
}

/// A new signing key for a fake server.
pub fn new_key() -> SigningKey {
    let id = KeyId::ed25519("fake").expect("key id");
    SigningKey::from_seed(id, rand_seed())
}

fn rand_seed() -> [u8; 32] {
    hearth::matrix::crypto::random_bytes::<32>()
}

struct Shared {
    name: String,
    key: SigningKey,
    handler: Handler,
    requests: Arc<Mutex<Vec<FakeRequest>>>,
}

impl FakeServer {
    /// Serves `name` on `listener` (from [`bind`]) with `key`, answering with `handler`.
    pub fn start(
        certificates: &Path,
        (listener, name): (TcpListener, String),
        key: SigningKey,
        handler: Handler,
    ) -> FakeServer {
        let tls = tls_config(certificates);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            name: name.clone(),
            key: key.clone(),
            handler,
            requests: requests.clone(),
        });
        let (sender, handle) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let data = web::Data::from(shared);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                        .default_service(web::to(answer))
                })
                .workers(1)
                .disable_signals()
                .listen_rustls_0_23(listener, tls)
                .expect("listen")
                .run();
                sender.send(server.handle()).expect("handle");
                server.await.expect("the fake server runs");
            });
        });
        let handle = handle.recv().expect("the fake server started");
        FakeServer {
            name,
            key,
            requests,
            handle,
            thread: Some(thread),
        }
    }

    /// The paths requested so far (key requests left out).
    pub fn paths(&self) -> Vec<String> {
        self.requests
            .lock()
            .expect("lock")
            .iter()
            .map(|request| request.path.clone())
            .collect()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(self.handle.stop(false));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn answer(request: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let path = percent_decode(request.path());
    if path == "/_matrix/key/v2/server" {
        return HttpResponse::Ok().json(key_response(&shared.name, &shared.key));
    }
    let request = FakeRequest {
        method: request.method().to_string(),
        path,
        query: request.query_string().to_owned(),
        authorization: request
            .headers()
            .get("Authorization")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    shared.requests.lock().expect("lock").push(request.clone());
    let (status, body) = (shared.handler)(&request);
    let status = actix_web::http::StatusCode::from_u16(status).expect("status");
    HttpResponse::build(status).json(body)
}

/// The fake's `/_matrix/key/v2/server` answer, signed with its key.
fn key_response(name: &str, key: &SigningKey) -> Value {
    let mut response = json!({
        "server_name": name,
        "valid_until_ts": hearth::matrix::time::now_ms() + 24 * 3600 * 1000,
        "verify_keys": { key.key_id().as_str(): { "key": key.public_key_base64() } },
        "old_verify_keys": {},
    });
    let object = response.as_object_mut().expect("object");
    hearth::matrix::crypto::sign_json(object, name, key).expect("sign");
    response
}

fn tls_config(certificates: &Path) -> rustls::ServerConfig {
    let certs = vec![CertificateDer::from_pem_file(certificates.join("cert.pem")).expect("cert")];
    let key = PrivateKeyDer::from_pem_file(certificates.join("key.pem")).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config")
}

pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A room version 11 room held by a fake server: events built and signed by its key, kept
/// in order, with the room's current state.
#[derive(Clone)]
pub struct FakeRoom {
    pub room_id: String,
    pub server: String,
    pub creator: String,
    key: SigningKey,
    /// Every event, oldest first: `(event_id, json)`.
    pub events: Vec<(String, Value)>,
    pub state: std::collections::BTreeMap<(String, String), String>,
    /// The state before each event, as the room's history gives it.
    pub state_before:
        std::collections::HashMap<String, std::collections::BTreeMap<(String, String), String>>,
}

pub fn rules() -> ruma::room_version_rules::RoomVersionRules {
    ruma::RoomVersionId::V11.rules().expect("rules")
}

/// Signs `event` as `server` and returns its ID and signed JSON.
pub fn sign(event: Value, server: &str, key: &SigningKey) -> (String, Value) {
    let Ok(ruma::CanonicalJsonValue::Object(mut object)) =
        ruma::CanonicalJsonValue::try_from(event)
    else {
        panic!("an event is an object");
    };
    let rules = rules();
    hearth::matrix::events::signing::hash_and_sign(&mut object, &rules, server, key).expect("sign");
    let id = hearth::matrix::events::signing::event_id_for(&object, &rules)
        .expect("id")
        .expect("v11 ids are hashes")
        .to_string();
    let json = serde_json::to_value(ruma::CanonicalJsonValue::Object(object)).expect("json");
    (id, json)
}

impl FakeRoom {
    /// A public room created by `@creator:server`: create, the creator's join, power levels
    /// (the creator at 100), public join rules.
    pub fn create(server: &str, key: &SigningKey, localpart: &str) -> FakeRoom {
        let creator = format!("@creator:{server}");
        let suffix: String = hearth::matrix::crypto::random_bytes::<6>()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let mut room = FakeRoom {
            room_id: format!("!{localpart}{suffix}:{server}"),
            server: server.to_owned(),
            creator: creator.clone(),
            key: key.clone(),
            events: Vec::new(),
            state: Default::default(),
            state_before: Default::default(),
        };
        room.push(
            "m.room.create",
            Some(""),
            &creator,
            json!({ "room_version": "11" }),
        );
        room.push(
            "m.room.member",
            Some(&creator),
            &creator,
            json!({ "membership": "join" }),
        );
        room.push(
            "m.room.power_levels",
            Some(""),
            &creator,
            json!({ "users": { &creator: 100 } }),
        );
        room.push(
            "m.room.join_rules",
            Some(""),
            &creator,
            json!({ "join_rule": "public" }),
        );
        room
    }

    /// The auth events a new event needs, from the current state (as the spec selects
    /// them): create, power levels, the sender's membership; for a membership, the target's
    /// and the join rules.
    pub fn auth_for(&self, kind: &str, state_key: Option<&str>, sender: &str) -> Vec<String> {
        let mut keys = vec![
            ("m.room.create".to_owned(), String::new()),
            ("m.room.power_levels".to_owned(), String::new()),
            ("m.room.member".to_owned(), sender.to_owned()),
        ];
        if kind == "m.room.member"
            && let Some(target) = state_key
        {
            keys.push(("m.room.member".to_owned(), target.to_owned()));
            keys.push(("m.room.join_rules".to_owned(), String::new()));
        }
        let mut ids: Vec<String> = Vec::new();
        for key in keys {
            if let Some(id) = self.state.get(&key)
                && !ids.contains(id)
            {
                ids.push(id.clone());
            }
        }
        ids
    }

    /// An unsigned event after the latest one, with the auth events the state gives.
    pub fn template(
        &self,
        kind: &str,
        state_key: Option<&str>,
        sender: &str,
        content: Value,
    ) -> Value {
        let mut auth = if kind == "m.room.create" {
            Vec::new()
        } else {
            self.auth_for(kind, state_key, sender)
        };
        // The join rules are an auth event of joins, invites and knocks only.
        let membership = content["membership"].as_str().unwrap_or_default();
        if !["join", "invite", "knock"].contains(&membership)
            && let Some(rules) = self
                .state
                .get(&("m.room.join_rules".to_owned(), String::new()))
        {
            auth.retain(|id| id != rules);
        }
        let prev: Vec<String> = self
            .events
            .last()
            .map(|(id, _)| id.clone())
            .into_iter()
            .collect();
        let mut event = json!({
            "room_id": self.room_id, "sender": sender, "type": kind, "content": content,
            "depth": self.events.len() + 1, "origin_server_ts": 1_800_000_000_000u64 + self.events.len() as u64,
            "prev_events": prev, "auth_events": auth,
        });
        if let Some(state_key) = state_key {
            event["state_key"] = json!(state_key);
        }
        event
    }

    /// Signs `event` as the fake server.
    pub fn sign(&self, event: Value) -> (String, Value) {
        sign(event, &self.server, &self.key)
    }

    /// Adds an event after the latest one; returns its ID.
    pub fn push(
        &mut self,
        kind: &str,
        state_key: Option<&str>,
        sender: &str,
        content: Value,
    ) -> String {
        let event = self.template(kind, state_key, sender, content);
        self.add_signed(self.sign(event))
    }

    /// Adds an event signed elsewhere (a joining server's join).
    pub fn add_signed(&mut self, (id, json): (String, Value)) -> String {
        self.state_before.insert(id.clone(), self.state.clone());
        if let (Some(kind), Some(state_key)) = (json["type"].as_str(), json["state_key"].as_str()) {
            self.state
                .insert((kind.to_owned(), state_key.to_owned()), id.clone());
        }
        self.events.push((id.clone(), json));
        id
    }

    pub fn json(&self, id: &str) -> Option<Value> {
        self.events
            .iter()
            .find(|(event_id, _)| event_id == id)
            .map(|(_, json)| json.clone())
    }

    pub fn state_events(&self) -> Vec<Value> {
        self.state.values().filter_map(|id| self.json(id)).collect()
    }

    /// The auth chain of the current state: every event it rests on.
    pub fn auth_chain(&self) -> Vec<Value> {
        self.auth_chain_of(self.state.values().cloned().collect())
    }

    /// Every event `start` rests on through `auth_events`, `start` left out.
    pub fn auth_chain_of(&self, start: Vec<String>) -> Vec<Value> {
        let mut seen = std::collections::BTreeSet::new();
        let mut todo: Vec<String> = start
            .iter()
            .filter_map(|id| self.json(id))
            .flat_map(|json| auth_ids(&json))
            .collect();
        while let Some(id) = todo.pop() {
            if seen.insert(id.clone())
                && let Some(json) = self.json(&id)
            {
                todo.extend(auth_ids(&json));
            }
        }
        seen.iter().filter_map(|id| self.json(id)).collect()
    }

    /// `make_join`'s answer for `user_id`.
    pub fn make_join(&self, user_id: &str) -> Value {
        let mut event = self.template(
            "m.room.member",
            Some(user_id),
            user_id,
            json!({ "membership": "join" }),
        );
        event["origin"] = json!(user_id.split_once(':').map(|(_, s)| s).unwrap_or_default());
        json!({ "room_version": "11", "event": event })
    }
}

impl FakeRoom {
    /// `get_missing_events`: the events before `latest` back to `earliest`, at most
    /// `limit`, oldest first.
    pub fn missing_events(
        &self,
        earliest: &[String],
        latest: &[String],
        limit: usize,
    ) -> Vec<Value> {
        let mut found: Vec<(u64, Value)> = Vec::new();
        let mut seen: std::collections::BTreeSet<String> = latest.iter().cloned().collect();
        let mut todo: std::collections::VecDeque<String> = latest
            .iter()
            .filter_map(|id| self.json(id))
            .flat_map(|json| prev_ids(&json))
            .collect();
        while let Some(id) = todo.pop_front() {
            if found.len() >= limit || earliest.contains(&id) || !seen.insert(id.clone()) {
                continue;
            }
            let Some(json) = self.json(&id) else { continue };
            todo.extend(prev_ids(&json));
            found.push((json["depth"].as_u64().unwrap_or_default(), json));
        }
        found.sort_by_key(|(depth, _)| *depth);
        found.into_iter().map(|(_, json)| json).collect()
    }

    /// `/state_ids` at `event_id`: the state before it and the auth chain of that state.
    pub fn state_ids_at(&self, event_id: &str) -> Option<Value> {
        let state: Vec<String> = self.state_before.get(event_id)?.values().cloned().collect();
        let chain: Vec<String> = self
            .auth_chain_of(state.clone())
            .iter()
            .map(event_id_of)
            .collect();
        Some(json!({ "pdu_ids": state, "auth_chain_ids": chain }))
    }

    /// `/state` at `event_id`: as [`FakeRoom::state_ids_at`], with the events themselves.
    pub fn state_at(&self, event_id: &str) -> Option<Value> {
        let state: Vec<String> = self.state_before.get(event_id)?.values().cloned().collect();
        let pdus: Vec<Value> = state.iter().filter_map(|id| self.json(id)).collect();
        Some(json!({ "pdus": pdus, "auth_chain": self.auth_chain_of(state) }))
    }

    /// `/event/{eventId}`.
    pub fn event_answer(&self, event_id: &str) -> Option<Value> {
        let json = self.json(event_id)?;
        Some(
            json!({ "origin": self.server, "origin_server_ts": 1_800_000_000_000u64, "pdus": [json] }),
        )
    }
}

/// The ID of an event of a room version 11 room.
pub fn event_id_of(json: &Value) -> String {
    let Ok(ruma::CanonicalJsonValue::Object(object)) =
        ruma::CanonicalJsonValue::try_from(json.clone())
    else {
        panic!("an event is an object");
    };
    hearth::matrix::events::signing::event_id_for(&object, &rules())
        .expect("id")
        .expect("v11 ids are hashes")
        .to_string()
}

/// The `prev_events` of an event's JSON.
pub fn prev_ids(json: &Value) -> Vec<String> {
    json["prev_events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|id| id.as_str().map(str::to_owned))
        .collect()
}

/// The `auth_events` of an event's JSON.
pub fn auth_ids(json: &Value) -> Vec<String> {
    json["auth_events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|id| id.as_str().map(str::to_owned))
        .collect()
}
