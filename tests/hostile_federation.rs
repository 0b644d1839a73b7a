//! The hostile-input catalogue of the federation API (issue 10): one real Hearth server and
//! a fake remote server (with a real key Hearth fetches, and a user who joined one of
//! Hearth's rooms the proper way), then a table of requests as a hostile server would send
//! them: no `X-Matrix`, malformed ones, the wrong destination, forged signatures, unknown
//! origins, oversized transactions, PDUs of the wrong shape, PDUs failing the auth rules,
//! events of rooms Hearth is not in, bad transaction IDs, `make_join` for unknown rooms and
//! unsupported versions, profile queries for users of other servers. `common::catalogue`
//! runs them: the spec's status and errcode, a JSON error body, the rooms unchanged (PDUs
//! refused inside a `200` transaction answer included), and a healthy server after each.

mod common;

use std::sync::Arc;

use common::catalogue::{Case, Target, check_all, check_known, raw_head};
use common::fake::{FakeRequest, FakeRoom, FakeServer, bind, new_key, sign};
use common::federation::{Signer, start, write_certificates};
use common::{Server, login_token, ok, query_encode};
use hearth::federation::auth::{RequestToSign, authorization_header};
use hearth::matrix::crypto::SigningKey;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

struct Fixture {
    server: Server,
    /// Hearth's server name.
    name: String,
    _fake: FakeServer,
    /// The fake server's name and key: the requests' origin.
    origin: String,
    key: SigningKey,
    alice: String,
    /// A public room of Alice's that `@mallory:{origin}` joined over federation.
    public: String,
    /// A private room of Alice's, with no remote member.
    private: String,
    /// IDs in the public room: create, power levels, Mallory's join.
    create: String,
    power_levels: String,
    join: String,
    /// A room of the fake server Hearth is not in.
    elsewhere: FakeRoom,
    _certificates: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let certificates = tempfile::tempdir().expect("tempdir");
    write_certificates(certificates.path());
    let server = start(certificates.path(), "127.0.0.1", &[], &["alice"]);
    let name = server.name.clone();
    let (listener, origin) = bind();
    let key = new_key();
    // The fake takes every transaction Hearth sends it and knows nothing else.
    let handler: common::fake::Handler = Arc::new(|request: &FakeRequest| {
        if request.path.starts_with("/_matrix/federation/v1/send/") {
            (200, json!({ "pdus": {} }))
        } else {
            (
                404,
                json!({ "errcode": "M_NOT_FOUND", "error": "the fake knows nothing" }),
            )
        }
    });
    let fake = FakeServer::start(
        certificates.path(),
        (listener, origin.clone()),
        key.clone(),
        handler,
    );
    let alice = login_token(&server, "alice", PASSWORD);
    let create_room = |body: Value| {
        ok(server
            .client()
            .json("POST", "/_matrix/client/v3/createRoom", Some(&alice), &body))["room_id"]
            .as_str()
            .expect("room_id")
            .to_owned()
    };
    let public = create_room(json!({ "preset": "public_chat", "room_version": "11" }));
    let private = create_room(json!({ "preset": "private_chat", "room_version": "11" }));
    for room in [&public, &private] {
        ok(server.client().json(
            "PUT",
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/setup",
                query_encode(room)
            ),
            Some(&alice),
            &json!({ "msgtype": "m.text", "body": "before the catalogue" }),
        ));
    }

    // Mallory of the fake server joins the public room, as the spec has it.
    let signer = Signer {
        origin: &origin,
        key: &key,
        destination: &name,
    };
    let mallory = format!("@mallory:{origin}");
    let template = ok(signer.get(
        &server,
        &format!(
            "/_matrix/federation/v1/make_join/{}/{}?ver=11",
            query_encode(&public),
            query_encode(&mallory)
        ),
    ));
    let (join, join_json) = sign(template["event"].clone(), &origin, &key);
    ok(signer.send(
        &server,
        "PUT",
        &format!(
            "/_matrix/federation/v2/send_join/{}/{}",
            query_encode(&public),
            query_encode(&join)
        ),
        Some(&join_json),
    ));
    let state = ok(server.client().get_with(
        &format!("/_matrix/client/v3/rooms/{}/state", query_encode(&public)),
        &alice,
    ));
    let id_of = |kind: &str| {
        state
            .as_array()
            .into_iter()
            .flatten()
            .find(|event| event["type"] == kind)
            .and_then(|event| event["event_id"].as_str())
            .expect("state event")
            .to_owned()
    };
    let (create, power_levels) = (id_of("m.room.create"), id_of("m.room.power_levels"));
    let elsewhere = FakeRoom::create(&origin, &key, "elsewhere");
    Fixture {
        server,
        name,
        _fake: fake,
        origin,
        key,
        alice,
        public,
        private,
        create,
        power_levels,
        join,
        elsewhere,
        _certificates: certificates,
    }
}

/// What no refused request may change: both rooms' state and timeline, Alice's rooms, and
/// what Hearth knows of the fake's room.
fn snapshot(f: &Fixture) -> Value {
    let mut client = f.server.client();
    let mut room = |room: &str| {
        let room = query_encode(room);
        let state = client.get_with(&format!("/_matrix/client/v3/rooms/{room}/state"), &f.alice);
        let state: Vec<Value> = serde_json::from_slice::<Value>(&state.body)
            .ok()
            .and_then(|json| json.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|event| json!([event["type"], event["state_key"], event["event_id"]]))
            .collect();
        let messages = client.get_with(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100"),
            &f.alice,
        );
        let timeline: Vec<Value> = serde_json::from_slice::<Value>(&messages.body)
            .ok()
            .and_then(|json| json["chunk"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|event| event["event_id"].clone())
            .collect();
        json!({ "state": state, "timeline": timeline, "status": messages.status })
    };
    let public = room(&f.public);
    let private = room(&f.private);
    let elsewhere = room(&f.elsewhere.room_id);
    let joined = client.get_with("/_matrix/client/v3/joined_rooms", &f.alice);
    json!({
        "public": public,
        "private": private,
        "elsewhere": elsewhere,
        "joined": serde_json::from_slice::<Value>(&joined.body).unwrap_or(Value::Null),
    })
}

fn healthy(f: &Fixture) -> Result<(), String> {
    let mut client = f.server.client();
    let whoami = client.get_with("/_matrix/client/v3/account/whoami", &f.alice);
    let version = client.get("/_matrix/federation/v1/version");
    match (whoami.status, version.status) {
        (200, 200) => Ok(()),
        statuses => Err(format!(
            "whoami and federation version answered {statuses:?}"
        )),
    }
}

/// The `Authorization` header for a request from `origin`, to `destination`, with `key`.
fn header(
    key: &SigningKey,
    origin: &str,
    destination: &str,
    (method, uri, content): (&str, &str, Option<&Value>),
) -> String {
    authorization_header(
        &RequestToSign {
            method,
            uri,
            origin,
            destination,
            content,
        },
        key,
    )
    .expect("sign")
}

fn cases(f: &Fixture) -> Vec<Case> {
    let (origin, key, dest) = (f.origin.as_str(), &f.key, f.name.as_str());
    let mallory = format!("@mallory:{origin}");
    let alice_id = format!("@alice:{dest}");
    let public = query_encode(&f.public);
    let private = query_encode(&f.private);
    let now = hearth::matrix::time::now_ms();

    // A request signed properly, with a JSON body or none.
    let signed = |name: &str, method: &'static str, path: String, body: Option<Value>| {
        let authorization = header(key, origin, dest, (method, &path, body.as_ref()));
        let case = Case::new(name, method, path).header("Authorization", &authorization);
        match body {
            Some(body) => case.json(&body),
            None => case,
        }
    };
    // A transaction of these PDUs and EDUs, signed properly.
    let transaction = |name: &str, txn: &str, pdus: Vec<Value>, edus: Vec<Value>| {
        signed(
            name,
            "PUT",
            format!("/_matrix/federation/v1/send/{txn}"),
            Some(json!({ "origin": origin, "origin_server_ts": now, "pdus": pdus, "edus": edus })),
        )
    };
    // A transaction whose PDU holds `number` (which canonical JSON cannot hold, so the
    // request can only be signed without its body): refused one way or another.
    let unsignable = |name: &str, txn: &str, number: &str| {
        let path = format!("/_matrix/federation/v1/send/{txn}");
        let event = sign(
            json!({
                "room_id": f.public, "sender": format!("@mallory:{origin}"),
                "type": "m.room.message",
                "content": { "msgtype": "m.text", "body": "number", "n": "NUMBER" },
                "depth": 50, "origin_server_ts": now, "prev_events": [f.join],
                "auth_events": [f.create, f.power_levels, f.join],
            }),
            origin,
            key,
        )
        .1;
        let text =
            json!({ "origin": origin, "origin_server_ts": now, "pdus": [event], "edus": [] })
                .to_string()
                .replace("\"NUMBER\"", number);
        Case::new(name, "PUT", path.clone())
            .header(
                "Authorization",
                &header(key, origin, dest, ("PUT", &path, None)),
            )
            .bytes(text.into_bytes())
            .expect(200, "")
            .expect(400, "M_BAD_JSON")
            .expect(400, "M_NOT_JSON")
            .expect(401, "M_UNAUTHORIZED")
            .unchanged()
    };
    // A PDU of the public room by `sender`, signed by the fake.
    let pdu = |kind: &str, state_key: Option<&str>, sender: &str, content: Value| {
        let mut event = json!({
            "room_id": f.public, "sender": sender, "type": kind, "content": content,
            "depth": 50, "origin_server_ts": now, "prev_events": [f.join],
            "auth_events": [f.create, f.power_levels, f.join],
        });
        if let Some(state_key) = state_key {
            event["state_key"] = json!(state_key);
        }
        sign(event, origin, key).1
    };
    let message = |body: &str| {
        pdu(
            "m.room.message",
            None,
            &mallory,
            json!({ "msgtype": "m.text", "body": body }),
        )
    };
    let send_path = "/_matrix/federation/v1/send/no-auth";
    let body = json!({ "origin": origin, "origin_server_ts": now, "pdus": [], "edus": [] });
    // Requests whose `X-Matrix` header is `value`.
    let with_header = |name: &str, value: &str| {
        Case::new(name, "PUT", send_path)
            .header("Authorization", value)
            .json(&body)
            .expect(401, "M_UNAUTHORIZED")
            .expect(400, "M_UNAUTHORIZED")
            .expect(401, "M_FORBIDDEN")
    };
    let good = header(key, origin, dest, ("PUT", send_path, Some(&body)));
    let sig = good
        .rsplit_once("sig=\"")
        .expect("sig")
        .1
        .trim_end_matches('"');
    let key_id = key.key_id().as_str().to_owned();
    let other_key = new_key();
    // An `X-Matrix` header of these parameters, each quoted.
    let xmatrix = |params: &[(&str, &str)]| {
        let params: Vec<String> = params
            .iter()
            .map(|(name, value)| format!("{name}=\"{value}\""))
            .collect();
        format!("X-Matrix {}", params.join(","))
    };
    let closed_port = common::federation::free_port();
    let unknown_origin = format!("127.0.0.1:{closed_port}");
    let make_join = |room: &str, user: &str, query: &str| {
        format!(
            "/_matrix/federation/v1/make_join/{}/{}{query}",
            query_encode(room),
            query_encode(user)
        )
    };

    let mut cases = vec![
        // Authentication.
        Case::new("send: no Authorization", "PUT", send_path)
            .json(&body)
            .expect(401, "M_UNAUTHORIZED")
            .expect(401, "M_MISSING_TOKEN"),
        Case::new(
            "make_join: no Authorization",
            "GET",
            make_join(&f.public, &mallory, "?ver=11"),
        )
        .expect(401, "M_UNAUTHORIZED")
        .expect(401, "M_MISSING_TOKEN"),
        Case::new(
            "state: no Authorization",
            "GET",
            format!("/_matrix/federation/v1/state/{public}?event_id=x"),
        )
        .expect(401, "M_UNAUTHORIZED")
        .expect(401, "M_MISSING_TOKEN"),
        Case::new(
            "query/profile: no Authorization",
            "GET",
            format!(
                "/_matrix/federation/v1/query/profile?user_id={}",
                query_encode(&alice_id)
            ),
        )
        .expect(401, "M_UNAUTHORIZED")
        .expect(401, "M_MISSING_TOKEN"),
        with_header("X-Matrix: a bearer token instead", "Bearer abc")
            .expect(401, "M_MISSING_TOKEN")
            .expect(401, "M_UNKNOWN_TOKEN"),
        with_header("X-Matrix: no parameters", "X-Matrix"),
        with_header(
            "X-Matrix: no sig",
            &format!("X-Matrix origin=\"{origin}\",destination=\"{dest}\",key=\"{key_id}\""),
        ),
        with_header(
            "X-Matrix: no origin",
            &format!("X-Matrix destination=\"{dest}\",key=\"{key_id}\",sig=\"{sig}\""),
        ),
        with_header(
            "X-Matrix: no key",
            &format!("X-Matrix origin=\"{origin}\",destination=\"{dest}\",sig=\"{sig}\""),
        ),
        with_header(
            "X-Matrix: an origin that is no server name",
            &xmatrix(&[
                ("origin", "not a server!"),
                ("destination", dest),
                ("key", &key_id),
                ("sig", sig),
            ]),
        ),
        with_header(
            "X-Matrix: an RSA key",
            &format!(
                "X-Matrix origin=\"{origin}\",destination=\"{dest}\",key=\"rsa:1\",sig=\"{sig}\""
            ),
        ),
        with_header(
            "X-Matrix: a parameter twice",
            &xmatrix(&[
                ("origin", origin),
                ("origin", "other.example"),
                ("destination", dest),
                ("key", &key_id),
                ("sig", sig),
            ]),
        ),
        with_header(
            "X-Matrix: an unclosed quote",
            &format!(
                "X-Matrix origin=\"{origin},destination=\"{dest}\",key=\"{key_id}\",sig=\"{sig}\""
            ),
        ),
        with_header(
            "X-Matrix: no commas",
            &format!(
                "X-Matrix origin=\"{origin}\" destination=\"{dest}\" key=\"{key_id}\" sig=\"{sig}\""
            ),
        ),
        with_header(
            "X-Matrix: 8 KiB",
            &format!(
                "X-Matrix origin=\"{origin}\",destination=\"{dest}\",key=\"{key_id}\",sig=\"{}\"",
                "A".repeat(8192)
            ),
        ),
        with_header(
            "X-Matrix: sig not base64",
            &format!(
                "X-Matrix origin=\"{origin}\",destination=\"{dest}\",key=\"{key_id}\",sig=\"!!!\""
            ),
        ),
        with_header(
            "X-Matrix: a forged signature",
            &format!(
                "X-Matrix origin=\"{origin}\",destination=\"{dest}\",key=\"{key_id}\",sig=\"{}\"",
                "A".repeat(86)
            ),
        ),
        with_header(
            "X-Matrix: signed by another key",
            &header(&other_key, origin, dest, ("PUT", send_path, Some(&body))),
        ),
        with_header(
            "X-Matrix: an unknown key ID",
            &good.replace(&key_id, "ed25519:nokey"),
        ),
        with_header(
            "X-Matrix: the wrong destination",
            &header(
                key,
                origin,
                "other.example",
                ("PUT", send_path, Some(&body)),
            ),
        ),
        with_header(
            "X-Matrix: an unknown origin",
            &header(key, &unknown_origin, dest, ("PUT", send_path, Some(&body))),
        ),
        with_header(
            "X-Matrix: an origin that does not resolve",
            &header(
                key,
                "nowhere.invalid",
                dest,
                ("PUT", send_path, Some(&body)),
            ),
        ),
        with_header(
            "X-Matrix: signed for another path",
            &header(
                key,
                origin,
                dest,
                ("PUT", "/_matrix/federation/v1/send/other", Some(&body)),
            ),
        ),
        with_header(
            "X-Matrix: signed for another method",
            &header(key, origin, dest, ("POST", send_path, Some(&body))),
        ),
        with_header(
            "X-Matrix: signed for another body",
            &header(
                key,
                origin,
                dest,
                ("PUT", send_path, Some(&json!({ "pdus": [] }))),
            ),
        ),
        with_header(
            "X-Matrix: signed without the body",
            &header(key, origin, dest, ("PUT", send_path, None)),
        ),
        // Transactions of the wrong shape or size.
        {
            let path = "/_matrix/federation/v1/send/not-json";
            Case::new("send: a body that is not JSON", "PUT", path)
                .header(
                    "Authorization",
                    &header(key, origin, dest, ("PUT", path, None)),
                )
                .bytes(&b"{\"pdus\": ["[..])
                .expect(400, "M_NOT_JSON")
                .expect(401, "M_UNAUTHORIZED")
        },
        {
            let path = "/_matrix/federation/v1/send/bad-utf8";
            Case::new("send: invalid UTF-8", "PUT", path)
                .header(
                    "Authorization",
                    &header(key, origin, dest, ("PUT", path, None)),
                )
                .bytes(&b"{\"pdus\":[],\"edus\":[],\"origin\":\"\xff\"}"[..])
                .expect(400, "M_NOT_JSON")
                .expect(401, "M_UNAUTHORIZED")
        },
        {
            let path = "/_matrix/federation/v1/send/deep";
            let mut bytes = b"{\"pdus\":".to_vec();
            bytes.extend(std::iter::repeat_n(b'[', 100_000));
            Case::new("send: nesting 100,000 deep", "PUT", path)
                .header(
                    "Authorization",
                    &header(key, origin, dest, ("PUT", path, None)),
                )
                .bytes(bytes)
                .expect(400, "M_NOT_JSON")
                .expect(400, "M_BAD_JSON")
                .expect(401, "M_UNAUTHORIZED")
        },
        signed(
            "send: pdus not a list",
            "PUT",
            "/_matrix/federation/v1/send/t1".into(),
            Some(json!({ "origin": origin, "origin_server_ts": now, "pdus": {} })),
        )
        .expect(400, "M_BAD_JSON"),
        signed(
            "send: no pdus",
            "PUT",
            "/_matrix/federation/v1/send/t2".into(),
            Some(json!({ "origin": origin, "origin_server_ts": now })),
        )
        .expect(400, "M_BAD_JSON"),
        signed(
            "send: a body that is a list",
            "PUT",
            "/_matrix/federation/v1/send/t3".into(),
            Some(json!([])),
        )
        .expect(400, "M_BAD_JSON")
        .expect(400, "M_NOT_JSON"),
        transaction(
            "send: 51 PDUs",
            "t4",
            (0..51).map(|n| message(&format!("flood {n}"))).collect(),
            Vec::new(),
        )
        .expect(400, "*")
        .expect(413, "M_TOO_LARGE"),
        transaction(
            "send: 101 EDUs",
            "t5",
            Vec::new(),
            (0..101)
                .map(|_| json!({ "edu_type": "m.typing", "content": {} }))
                .collect(),
        )
        .expect(400, "*")
        .expect(413, "M_TOO_LARGE"),
        {
            let path = "/_matrix/federation/v1/send/huge";
            let padding = "a".repeat(9 * 1024 * 1024);
            Case::new("send: a 9 MiB body", "PUT", path)
                .header(
                    "Authorization",
                    &header(key, origin, dest, ("PUT", path, None)),
                )
                .bytes(
                    format!("{{\"pdus\":[],\"edus\":[],\"padding\":\"{padding}\"}}").into_bytes(),
                )
                .expect(413, "M_TOO_LARGE")
        },
        Case::new(
            "send: 100 MB declared, nothing sent",
            "PUT",
            "/_matrix/federation/v1/send/declared",
        )
        .raw(raw_head(
            "PUT",
            "/_matrix/federation/v1/send/declared",
            &[
                &format!(
                    "Authorization: {}",
                    header(
                        key,
                        origin,
                        dest,
                        ("PUT", "/_matrix/federation/v1/send/declared", None)
                    )
                ),
                "Content-Type: application/json",
                "Content-Length: 100000000",
            ],
        ))
        .expect(413, "M_TOO_LARGE"),
        // Transaction IDs.
        signed(
            "send: an empty transaction ID",
            "PUT",
            "/_matrix/federation/v1/send/".into(),
            Some(body.clone()),
        )
        .expect(404, "M_UNRECOGNIZED")
        .expect(400, "M_INVALID_PARAM")
        .expect(405, "M_UNRECOGNIZED"),
        signed(
            "send: a 64 KiB transaction ID",
            "PUT",
            format!("/_matrix/federation/v1/send/{}", "t".repeat(64 * 1024)),
            Some(body.clone()),
        )
        .expect(400, "*")
        .expect(414, "*")
        .known("actix"),
        // PDUs refused inside a 200 answer: nothing may change.
        transaction(
            "pdu: a string",
            "p1",
            vec![json!("not an event")],
            Vec::new(),
        )
        .expect(200, "")
        .expect(400, "M_BAD_JSON")
        .unchanged(),
        transaction("pdu: an empty object", "p2", vec![json!({})], Vec::new())
            .expect(200, "")
            .expect(400, "M_BAD_JSON")
            .unchanged(),
        transaction(
            "pdu: no room ID",
            "p3",
            vec![{
                let mut event = message("no room");
                event.as_object_mut().expect("object").remove("room_id");
                event
            }],
            Vec::new(),
        )
        .expect(200, "")
        .expect(400, "M_BAD_JSON")
        .unchanged(),
        unsignable("pdu: a float in the content", "p4", "1.5"),
        unsignable("pdu: an integer past 2^53", "p5", "9007199254740993"),
        transaction(
            "pdu: content a string",
            "p6",
            vec![sign(json!({
            "room_id": f.public, "sender": mallory, "type": "m.room.message", "content": "text",
            "depth": 50, "origin_server_ts": now, "prev_events": [f.join],
            "auth_events": [f.create, f.power_levels, f.join],
        }), origin, key).1],
            Vec::new(),
        )
        .expect(200, "")
        .expect(400, "M_BAD_JSON")
        .unchanged(),
        transaction(
            "pdu: unsigned",
            "p7",
            vec![{
                let mut event = message("unsigned");
                event.as_object_mut().expect("object").remove("signatures");
                event
            }],
            Vec::new(),
        )
        .expect(200, "")
        .unchanged(),
        transaction(
            "pdu: signed by another key",
            "p8",
            vec![
                sign(
                    serde_json::from_value::<Value>(message("forged"))
                        .map(|mut event| {
                            let object = event.as_object_mut().expect("object");
                            object.remove("signatures");
                            object.remove("hashes");
                            event
                        })
                        .expect("event"),
                    origin,
                    &other_key,
                )
                .1,
            ],
            Vec::new(),
        )
        .expect(200, "")
        .unchanged(),
        transaction(
            "pdu: a sender of Hearth's server",
            "p9",
            vec![pdu(
                "m.room.message",
                None,
                &alice_id,
                json!({ "msgtype": "m.text", "body": "forged alice" }),
            )],
            Vec::new(),
        )
        .expect(200, "")
        .unchanged(),
        transaction(
            "pdu: power levels without the power",
            "p10",
            vec![pdu(
                "m.room.power_levels",
                Some(""),
                &mallory,
                json!({ "users": { &mallory: 100 } }),
            )],
            Vec::new(),
        )
        .expect(200, "")
        .unchanged(),
        transaction(
            "pdu: kick without the power",
            "p11",
            vec![pdu(
                "m.room.member",
                Some(&alice_id),
                &mallory,
                json!({ "membership": "leave" }),
            )],
            Vec::new(),
        )
        .expect(200, "")
        .unchanged(),
        transaction(
            "pdu: a second create event",
            "p12",
            vec![pdu(
                "m.room.create",
                Some(""),
                &mallory,
                json!({ "room_version": "11" }),
            )],
            Vec::new(),
        )
        .expect(200, "")
        .unchanged(),
        transaction(
            "pdu: no auth events",
            "p13",
            vec![{
                let mut event = message("no auth");
                event.as_object_mut().expect("object").remove("signatures");
                event["auth_events"] = json!([]);
                let object = event.as_object_mut().expect("object");
                object.remove("hashes");
                sign(event, origin, key).1
            }],
            Vec::new(),
        )
        .expect(200, "")
        .unchanged(),
        transaction(
            "pdu: a room Mallory is not in",
            "p14",
            vec![
                sign(
                    json!({
                        "room_id": f.private, "sender": mallory, "type": "m.room.message",
                        "content": { "msgtype": "m.text", "body": "let me in" },
                        "depth": 50, "origin_server_ts": now,
                        "prev_events": [f.join], "auth_events": [f.create],
                    }),
                    origin,
                    key,
                )
                .1,
            ],
            Vec::new(),
        )
        .expect(200, "")
        .unchanged(),
        transaction(
            "pdu: a room Hearth is not in",
            "p15",
            vec![f.elsewhere.json(&f.elsewhere.events[3].0).expect("event")],
            Vec::new(),
        )
        .expect(200, "")
        .unchanged(),
        transaction(
            "pdu: an unknown room version's room",
            "p16",
            vec![sign(json!({
            "room_id": "!nowhere:example.org", "sender": mallory, "type": "m.room.message",
            "content": {}, "depth": 1, "origin_server_ts": now,
            "prev_events": [], "auth_events": [],
        }), origin, key).1],
            Vec::new(),
        )
        .expect(200, "")
        .unchanged(),
        transaction(
            "edu: an unknown type",
            "e1",
            Vec::new(),
            vec![json!({ "edu_type": "org.example.nope", "content": { "x": 1 } })],
        )
        .expect(200, "")
        .unchanged(),
        transaction(
            "edu: typing in a room Mallory is not in",
            "e2",
            Vec::new(),
            vec![json!({
                "edu_type": "m.typing",
                "content": { "room_id": f.private, "user_id": mallory, "typing": true },
            })],
        )
        .expect(200, "")
        .unchanged(),
        transaction(
            "edu: typing as Alice",
            "e3",
            Vec::new(),
            vec![json!({
                "edu_type": "m.typing",
                "content": { "room_id": f.public, "user_id": alice_id, "typing": true },
            })],
        )
        .expect(200, "")
        .unchanged(),
        transaction(
            "edu: a receipt of the wrong shape",
            "e4",
            Vec::new(),
            vec![json!({
                "edu_type": "m.receipt", "content": { &f.public: { "m.read": "everything" } },
            })],
        )
        .expect(200, "")
        .unchanged(),
        transaction(
            "edu: content a list",
            "e5",
            Vec::new(),
            vec![json!({ "edu_type": "m.presence", "content": [] })],
        )
        .expect(200, "")
        .unchanged(),
        // make_join.
        signed(
            "make_join: an unknown room",
            "GET",
            make_join("!unknown:example.org", &mallory, "?ver=11"),
            None,
        )
        .expect(404, "M_NOT_FOUND"),
        signed(
            "make_join: an invalid room ID",
            "GET",
            make_join("!", &mallory, "?ver=11"),
            None,
        )
        .expect(400, "M_INVALID_PARAM")
        .expect(404, "M_NOT_FOUND"),
        signed(
            "make_join: an unsupported version",
            "GET",
            make_join(&f.public, &mallory, "?ver=1"),
            None,
        )
        .expect(400, "M_INCOMPATIBLE_ROOM_VERSION"),
        signed(
            "make_join: no version",
            "GET",
            make_join(&f.public, &mallory, ""),
            None,
        )
        .expect(400, "M_INCOMPATIBLE_ROOM_VERSION"),
        signed(
            "make_join: a user of another server",
            "GET",
            make_join(&f.public, "@eve:other.example", "?ver=11"),
            None,
        )
        .expect(403, "M_FORBIDDEN"),
        signed(
            "make_join: an invalid user ID",
            "GET",
            make_join(&f.public, "mallory", "?ver=11"),
            None,
        )
        .expect(400, "M_INVALID_PARAM")
        .expect(403, "M_FORBIDDEN"),
        signed(
            "make_join: an invite-only room",
            "GET",
            make_join(&f.private, &mallory, "?ver=11"),
            None,
        )
        .expect(403, "M_FORBIDDEN"),
        signed(
            "send_join: junk",
            "PUT",
            format!(
                "/_matrix/federation/v2/send_join/{public}/{}",
                query_encode("$junk")
            ),
            Some(json!({ "junk": true })),
        )
        .expect(400, "M_BAD_JSON")
        .expect(400, "M_INVALID_PARAM")
        .expect(403, "M_FORBIDDEN"),
        signed(
            "send_join: an unknown room",
            "PUT",
            format!(
                "/_matrix/federation/v2/send_join/{}/{}",
                query_encode("!unknown:example.org"),
                query_encode("$x")
            ),
            Some(json!({})),
        )
        .expect(404, "M_NOT_FOUND")
        .expect(400, "M_BAD_JSON")
        .expect(403, "M_FORBIDDEN"),
        signed(
            "invite: junk",
            "PUT",
            format!(
                "/_matrix/federation/v2/invite/{private}/{}",
                query_encode("$junk")
            ),
            Some(json!({ "event": "junk", "room_version": "11" })),
        )
        .expect(400, "M_BAD_JSON")
        .expect(400, "M_INVALID_PARAM"),
        signed(
            "invite: an unsupported version",
            "PUT",
            format!(
                "/_matrix/federation/v2/invite/{}/{}",
                query_encode("!r:example.org"),
                query_encode("$x")
            ),
            Some(json!({ "event": {}, "room_version": "999" })),
        )
        .expect(400, "M_INCOMPATIBLE_ROOM_VERSION")
        .expect(400, "M_UNSUPPORTED_ROOM_VERSION"),
        // Reading rooms the origin has no member in.
        signed(
            "state: a private room",
            "GET",
            format!(
                "/_matrix/federation/v1/state/{private}?event_id={}",
                query_encode(&f.create)
            ),
            None,
        )
        .expect(403, "M_FORBIDDEN")
        .expect(404, "M_NOT_FOUND"),
        signed(
            "state_ids: a private room",
            "GET",
            format!(
                "/_matrix/federation/v1/state_ids/{private}?event_id={}",
                query_encode(&f.create)
            ),
            None,
        )
        .expect(403, "M_FORBIDDEN")
        .expect(404, "M_NOT_FOUND"),
        signed(
            "backfill: a private room",
            "GET",
            format!(
                "/_matrix/federation/v1/backfill/{private}?v={}&limit=10",
                query_encode(&f.create)
            ),
            None,
        )
        .expect(403, "M_FORBIDDEN")
        .expect(404, "M_NOT_FOUND"),
        signed(
            "get_missing_events: a private room",
            "POST",
            format!("/_matrix/federation/v1/get_missing_events/{private}"),
            Some(json!({ "earliest_events": [], "latest_events": [f.create], "limit": 10 })),
        )
        .expect(403, "M_FORBIDDEN")
        .expect(404, "M_NOT_FOUND"),
        signed(
            "state: no event_id",
            "GET",
            format!("/_matrix/federation/v1/state/{public}"),
            None,
        )
        .expect(400, "M_MISSING_PARAM")
        .expect(400, "M_INVALID_PARAM"),
        signed(
            "event: an unknown event",
            "GET",
            format!("/_matrix/federation/v1/event/{}", query_encode("$nothing")),
            None,
        )
        .expect(404, "M_NOT_FOUND"),
        signed(
            "event: junk",
            "GET",
            "/_matrix/federation/v1/event/junk".into(),
            None,
        )
        .expect(400, "M_INVALID_PARAM")
        .expect(404, "M_NOT_FOUND"),
        // Queries.
        signed(
            "query/profile: a user of another server",
            "GET",
            format!(
                "/_matrix/federation/v1/query/profile?user_id={}",
                query_encode("@eve:other.example")
            ),
            None,
        )
        .expect(403, "M_FORBIDDEN")
        .expect(404, "M_NOT_FOUND")
        .expect(400, "M_INVALID_PARAM"),
        signed(
            "query/profile: an unknown local user",
            "GET",
            format!(
                "/_matrix/federation/v1/query/profile?user_id={}",
                query_encode(&format!("@nobody:{dest}"))
            ),
            None,
        )
        .expect(404, "M_NOT_FOUND"),
        signed(
            "query/profile: an invalid user ID",
            "GET",
            "/_matrix/federation/v1/query/profile?user_id=alice".into(),
            None,
        )
        .expect(400, "M_INVALID_PARAM"),
        signed(
            "query/profile: no user ID",
            "GET",
            "/_matrix/federation/v1/query/profile".into(),
            None,
        )
        .expect(400, "M_MISSING_PARAM")
        .expect(400, "M_INVALID_PARAM"),
        signed(
            "query/profile: an unknown field",
            "GET",
            format!(
                "/_matrix/federation/v1/query/profile?user_id={}&field=nope",
                query_encode(&alice_id)
            ),
            None,
        )
        .expect(404, "M_NOT_FOUND")
        .expect(400, "M_INVALID_PARAM"),
        signed(
            "query/directory: an alias of another server",
            "GET",
            format!(
                "/_matrix/federation/v1/query/directory?room_alias={}",
                query_encode("#x:other.example")
            ),
            None,
        )
        .expect(404, "M_NOT_FOUND")
        .expect(400, "M_INVALID_PARAM"),
        signed(
            "query/directory: an invalid alias",
            "GET",
            "/_matrix/federation/v1/query/directory?room_alias=nope".into(),
            None,
        )
        .expect(400, "M_INVALID_PARAM")
        .expect(404, "M_NOT_FOUND"),
        signed(
            "user/devices: a user of another server",
            "GET",
            format!(
                "/_matrix/federation/v1/user/devices/{}",
                query_encode("@eve:other.example")
            ),
            None,
        )
        .expect(403, "M_FORBIDDEN")
        .expect(404, "M_NOT_FOUND")
        .expect(400, "M_INVALID_PARAM"),
        signed(
            "publicRooms: limit a string",
            "POST",
            "/_matrix/federation/v1/publicRooms".into(),
            Some(json!({ "limit": "all" })),
        )
        .expect(400, "M_BAD_JSON"),
        // Keys.
        Case::new("key query: not JSON", "POST", "/_matrix/key/v2/query")
            .bytes(&b"{\"server_keys\":"[..])
            .expect(400, "M_NOT_JSON"),
        Case::new(
            "key query: server_keys a list",
            "POST",
            "/_matrix/key/v2/query",
        )
        .json(&json!({ "server_keys": [] }))
        .expect(400, "M_BAD_JSON"),
        // The spec gives this endpoint no error: an empty list is as good as a 400.
        Case::new(
            "key query: an invalid server name",
            "GET",
            "/_matrix/key/v2/query/not%20a%20server",
        )
        .expect(200, "")
        .expect(400, "M_INVALID_PARAM")
        .expect(404, "M_NOT_FOUND"),
        // Routing.
        signed(
            "an unknown endpoint",
            "GET",
            "/_matrix/federation/v1/nothing".into(),
            None,
        )
        .expect(404, "M_UNRECOGNIZED"),
    ];
    for case in &mut cases {
        case.name = format!("federation {}", case.name);
    }
    cases
}

fn run(check: impl FnOnce(&Target<'_>, &[Case])) {
    let fixture = fixture();
    let snapshot = || snapshot(&fixture);
    let healthy = || healthy(&fixture);
    let target = Target {
        address: fixture.server.address("http"),
        snapshot: &snapshot,
        healthy: &healthy,
    };
    check(&target, &cases(&fixture));
}

#[test]
fn the_federation_api_refuses_hostile_input_cleanly() {
    let fixture = fixture();
    let snapshot = || snapshot(&fixture);
    let healthy = || healthy(&fixture);
    let target = Target {
        address: fixture.server.address("http"),
        snapshot: &snapshot,
        healthy: &healthy,
    };
    check_all(&target, &cases(&fixture), 80);

    // The control: a PDU built as the refused ones are, but honest, is taken. So they were
    // refused for what is wrong with each, not for how the test builds PDUs.
    let f = &fixture;
    let mallory = format!("@mallory:{}", f.origin);
    let (id, event) = sign(
        json!({
            "room_id": f.public, "sender": mallory, "type": "m.room.message",
            "content": { "msgtype": "m.text", "body": "an honest message" },
            "depth": 50, "origin_server_ts": hearth::matrix::time::now_ms(),
            "prev_events": [f.join], "auth_events": [f.create, f.power_levels, f.join],
        }),
        &f.origin,
        &f.key,
    );
    let signer = Signer {
        origin: &f.origin,
        key: &f.key,
        destination: &f.name,
    };
    let answer = ok(signer.send(
        &f.server,
        "PUT",
        "/_matrix/federation/v1/send/control",
        Some(&json!({ "origin": f.origin, "origin_server_ts": 1, "pdus": [event], "edus": [] })),
    ));
    assert_eq!(answer["pdus"][&id], json!({}), "{answer}");
    let timeline = &snapshot()["public"]["timeline"];
    assert!(
        timeline
            .as_array()
            .is_some_and(|ids| ids.contains(&json!(id))),
        "the honest message is in the timeline: {timeline}"
    );
}

/// Malformed requests actix-web answers itself, before any of our code runs: a bare `400`
/// or `431` without a JSON body (a URI over the `http` crate's 65,534 bytes, a header block
/// over 128 KiB, broken request framing). What matters holds (refused, nothing changed, the
/// server healthy: the main catalogue checks that); only the JSON body is missing.
#[test]
#[ignore = "actix-web answers these before our code: no JSON body possible"]
fn refused_by_actix_without_a_json_body() {
    run(|target, cases| check_known(target, cases, "actix"));
}
