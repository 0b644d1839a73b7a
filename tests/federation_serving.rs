//! Serving other servers: two real Hearth processes, A and B, over TLS with a test CA. A
//! room is made on A by a local user through the client API; the test signs federation
//! requests as B (with B's real key, which A fetches from B) and checks each answer's shape
//! and content against the spec, with every PDU's hashes and signatures verified by ruma,
//! and the refusals: unsigned requests, a server the ACL denies, events B may not see,
//! unknown IDs, hostile limits.

mod common;

use std::collections::BTreeSet;

use common::federation::{PASSWORD, Pair, Signer, signing_key};
use common::http::{Client, Response};
use common::{Server, errcode, login_token, ok, query_encode};
use ruma::room_version_rules::RoomVersionRules;
use ruma::signatures::{PublicKeyMap, Verified, reference_hash, verify_event};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, RoomVersionId};
use serde_json::{Value, json};

/// The two servers and what the test needs to talk as and to them.
struct Setup {
    a: Server,
    name_a: String,
    name_b: String,
    key_b: hearth::matrix::crypto::SigningKey,
    /// A's published signing keys, to check A's signatures on PDUs.
    keys_a: PublicKeyMap,
    token: String,
    _b: Server,
    _certificates: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        // B is named by an IP literal: what `allow_ip_literals` is about.
        let Pair {
            a,
            b,
            name_a,
            name_b,
            certificates,
        } = Pair::start_on(("localhost", &["alice"]), ("127.0.0.1", &[]));
        let key_b = signing_key(&b);
        let published = ok(a.client().get("/_matrix/key/v2/server"));
        let mut keys = std::collections::BTreeMap::new();
        for (key_id, key) in published["verify_keys"].as_object().expect("keys") {
            let key = ruma::serde::Base64::parse(key["key"].as_str().expect("key")).expect("b64");
            keys.insert(key_id.clone(), key);
        }
        let keys_a = PublicKeyMap::from([(name_a.clone(), keys)]);
        let token = login_token(&a, "alice", PASSWORD);
        Setup {
            a,
            name_a,
            name_b,
            key_b,
            keys_a,
            token,
            _b: b,
            _certificates: certificates,
        }
    }

    fn as_b(&self) -> Signer<'_> {
        Signer {
            origin: &self.name_b,
            key: &self.key_b,
            destination: &self.name_a,
        }
    }

    fn client(&self) -> Client {
        self.a.client()
    }

    fn create_room(&self, body: Value) -> String {
        let answer = ok(self.client().json(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&self.token),
            &body,
        ));
        answer["room_id"].as_str().expect("room_id").to_owned()
    }

    fn send_state(&self, room: &str, kind: &str, content: Value) -> String {
        let path = format!("/_matrix/client/v3/rooms/{room}/state/{kind}/");
        let answer = ok(self
            .client()
            .json("PUT", &path, Some(&self.token), &content));
        answer["event_id"].as_str().expect("event_id").to_owned()
    }

    fn send_message(&self, room: &str, body: &str) -> String {
        let path = format!(
            "/_matrix/client/v3/rooms/{room}/send/m.room.message/{}",
            query_encode(body)
        );
        let content = json!({ "msgtype": "m.text", "body": body });
        let answer = ok(self
            .client()
            .json("PUT", &path, Some(&self.token), &content));
        answer["event_id"].as_str().expect("event_id").to_owned()
    }

    /// The current state of a room as event IDs, through the client API.
    fn client_state_ids(&self, room: &str) -> BTreeSet<String> {
        let path = format!("/_matrix/client/v3/rooms/{room}/state");
        ok(self.client().get_with(&path, &self.token))
            .as_array()
            .expect("state")
            .iter()
            .map(|event| event["event_id"].as_str().expect("id").to_owned())
            .collect()
    }

    fn get(&self, path: &str) -> Response {
        self.as_b().get(&self.a, path)
    }

    fn post(&self, path: &str, body: &Value) -> Response {
        self.as_b().post(&self.a, path, body)
    }
}

fn rules(version: &str) -> RoomVersionRules {
    RoomVersionId::try_from(version)
        .expect("version")
        .rules()
        .expect("rules")
}

fn canonical(value: &Value) -> CanonicalJsonObject {
    match CanonicalJsonValue::try_from(value.clone()).expect("canonical JSON") {
        CanonicalJsonValue::Object(object) => object,
        _ => panic!("a PDU is an object: {value}"),
    }
}

/// Checks that `pdu` is a federation-format PDU signed by A with intact hashes (or, for a
/// redacted one, intact signatures), and returns its event ID.
fn verified_pdu(setup: &Setup, pdu: &Value, version: &str, redacted: bool) -> String {
    for field in [
        "auth_events",
        "prev_events",
        "depth",
        "hashes",
        "signatures",
        "sender",
        "type",
        "content",
        "origin_server_ts",
    ] {
        assert!(pdu.get(field).is_some(), "PDU without {field}: {pdu}");
    }
    assert!(pdu.get("unsigned").is_none(), "{pdu}");
    let rules = rules(version);
    let object = canonical(pdu);
    let verified = verify_event(&setup.keys_a, &object, &rules).expect("signatures verify");
    if !redacted {
        assert_eq!(verified, Verified::All, "content hash of {pdu}");
    }
    if version == "1" {
        assert!(pdu.get("event_id").is_some(), "{pdu}");
        pdu["event_id"].as_str().expect("event_id").to_owned()
    } else {
        assert!(pdu.get("event_id").is_none(), "client format? {pdu}");
        format!("${}", reference_hash(&object, &rules).expect("hash"))
    }
}

fn pdu_list<'a>(answer: &'a Value, field: &str) -> &'a Vec<Value> {
    answer[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} in {answer}"))
}

fn refused(response: &Response, status: u16, code: &str) {
    assert_eq!(
        response.status,
        status,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(errcode(response), code);
}

fn encode(text: &str) -> String {
    query_encode(text)
}

/// A public, world-readable room of version 12 with five messages, the second redacted.
struct PublicRoom {
    id: String,
    messages: Vec<String>,
}

fn public_room(setup: &Setup) -> PublicRoom {
    let id = setup.create_room(json!({
        "preset": "public_chat",
        "visibility": "public",
        "room_alias_name": "lounge",
        "name": "The Lounge",
        "initial_state": [{
            "type": "m.room.history_visibility", "state_key": "",
            "content": { "history_visibility": "world_readable" }
        }],
    }));
    let messages: Vec<String> = (1..=5)
        .map(|n| setup.send_message(&id, &format!("message {n}")))
        .collect();
    let redact = format!(
        "/_matrix/client/v3/rooms/{id}/redact/{}/r1",
        encode(&messages[1])
    );
    ok(setup
        .client()
        .json("PUT", &redact, Some(&setup.token), &json!({})));
    PublicRoom { id, messages }
}

#[test]
fn events_state_and_history_are_served_in_federation_format() {
    let setup = Setup::new();
    let room = public_room(&setup);
    let (id, m) = (&room.id, &room.messages);

    // /event: a transaction of one PDU, A's, in federation format.
    let answer = ok(setup.get(&format!("/_matrix/federation/v1/event/{}", encode(&m[0]))));
    assert_eq!(answer["origin"], setup.name_a.as_str());
    assert!(answer["origin_server_ts"].is_u64());
    let pdus = pdu_list(&answer, "pdus");
    assert_eq!(pdus.len(), 1);
    assert_eq!(verified_pdu(&setup, &pdus[0], "12", false), m[0]);
    assert_eq!(pdus[0]["content"]["body"], "message 1");
    assert_eq!(pdus[0]["room_id"], id.as_str());

    // A redacted event goes out redacted: signatures intact, content hash no longer.
    let answer = ok(setup.get(&format!("/_matrix/federation/v1/event/{}", encode(&m[1]))));
    let redacted = &pdu_list(&answer, "pdus")[0];
    assert_eq!(verified_pdu(&setup, redacted, "12", true), m[1]);
    assert_eq!(redacted["content"], json!({}));

    // /state_ids before the last message: the room's current state, and its auth chain.
    let path = format!(
        "/_matrix/federation/v1/state_ids/{id}?event_id={}",
        encode(&m[4])
    );
    let ids = ok(setup.get(&path));
    let pdu_ids: BTreeSet<String> = pdu_list(&ids, "pdu_ids")
        .iter()
        .map(|id| id.as_str().expect("id").to_owned())
        .collect();
    assert_eq!(pdu_ids, setup.client_state_ids(id));
    let chain_ids: BTreeSet<String> = pdu_list(&ids, "auth_chain_ids")
        .iter()
        .map(|id| id.as_str().expect("id").to_owned())
        .collect();
    assert!(!chain_ids.is_empty());

    // /state: the same, as verified PDUs.
    let path = format!(
        "/_matrix/federation/v1/state/{id}?event_id={}",
        encode(&m[4])
    );
    let state = ok(setup.get(&path));
    let state_pdus: BTreeSet<String> = pdu_list(&state, "pdus")
        .iter()
        .map(|pdu| verified_pdu(&setup, pdu, "12", false))
        .collect();
    assert_eq!(state_pdus, pdu_ids);
    let chain: BTreeSet<String> = pdu_list(&state, "auth_chain")
        .iter()
        .map(|pdu| verified_pdu(&setup, pdu, "12", false))
        .collect();
    assert_eq!(chain, chain_ids);

    // /event_auth: the message's auth events and theirs.
    let path = format!("/_matrix/federation/v1/event_auth/{id}/{}", encode(&m[4]));
    let auth = ok(setup.get(&path));
    let auth_types: BTreeSet<String> = pdu_list(&auth, "auth_chain")
        .iter()
        .map(|pdu| {
            verified_pdu(&setup, pdu, "12", false);
            pdu["type"].as_str().expect("type").to_owned()
        })
        .collect();
    for kind in ["m.room.member", "m.room.power_levels"] {
        assert!(auth_types.contains(kind), "{auth_types:?}");
    }

    // /backfill: the named event and those before it, deepest first, up to the limit.
    let path = format!(
        "/_matrix/federation/v1/backfill/{id}?v={}&limit=3",
        encode(&m[4])
    );
    let answer = ok(setup.get(&path));
    assert_eq!(answer["origin"], setup.name_a.as_str());
    let found: Vec<String> = pdu_list(&answer, "pdus")
        .iter()
        .map(|pdu| verified_pdu(&setup, pdu, "12", true))
        .collect();
    // The redaction (sent last) is not before m[4]: m[4], m[3], m[2].
    assert_eq!(found, vec![m[4].clone(), m[3].clone(), m[2].clone()]);
    // The whole room, bounded: events before the room became world-readable go out
    // redacted (B has no user in the room), the rest in full.
    let path = format!(
        "/_matrix/federation/v1/backfill/{id}?v={}&v=%24unknown&limit=100000",
        encode(&m[4])
    );
    let all = ok(setup.get(&path));
    let all = pdu_list(&all, "pdus");
    assert!(all.len() > 5 && all.len() <= 100, "{}", all.len());
    assert_eq!(all.last().expect("create")["type"], "m.room.create");
    for pdu in all {
        verified_pdu(&setup, pdu, "12", true);
    }
    let first_message = all.iter().find(|pdu| pdu["content"]["body"] == "message 1");
    assert!(first_message.is_some(), "visible history is sent in full");

    // /get_missing_events: between m[0] and m[4], oldest first.
    let path = format!("/_matrix/federation/v1/get_missing_events/{id}");
    let body = json!({ "earliest_events": [m[0]], "latest_events": [m[4]], "limit": 10 });
    let missing = ok(setup.post(&path, &body));
    let found: Vec<String> = pdu_list(&missing, "events")
        .iter()
        .map(|pdu| verified_pdu(&setup, pdu, "12", true))
        .collect();
    assert_eq!(found, vec![m[1].clone(), m[2].clone(), m[3].clone()]);
    let body = json!({ "earliest_events": [], "latest_events": [m[4]], "limit": 2 });
    let found = ok(setup.post(&path, &body));
    assert_eq!(pdu_list(&found, "events").len(), 2);
    let depth = |event: &str| {
        let answer = ok(setup.get(&format!("/_matrix/federation/v1/event/{}", encode(event))));
        answer["pdus"][0]["depth"].as_u64().expect("depth")
    };
    let body = json!({ "earliest_events": [], "latest_events": [m[4]], "min_depth": depth(&m[3]) });
    let found = ok(setup.post(&path, &body));
    let ids: Vec<String> = pdu_list(&found, "events")
        .iter()
        .map(|pdu| verified_pdu(&setup, pdu, "12", false))
        .collect();
    assert_eq!(ids, vec![m[3].clone()]);

    // /timestamp_to_event: the message sent at a time, both ways.
    let ts = depth_free_ts(&setup, &m[2]);
    let path = format!("/_matrix/federation/v1/timestamp_to_event/{id}?ts={ts}&dir=f");
    let answer = ok(setup.get(&path));
    assert_eq!(answer["origin_server_ts"], ts);
    let path = format!("/_matrix/federation/v1/timestamp_to_event/{id}?ts={ts}&dir=b");
    assert_eq!(ok(setup.get(&path))["origin_server_ts"], ts);
    let path = format!("/_matrix/federation/v1/timestamp_to_event/{id}?ts=0&dir=b");
    refused(&setup.get(&path), 404, "M_NOT_FOUND");
    let path = format!("/_matrix/federation/v1/timestamp_to_event/{id}?ts=0&dir=x");
    refused(&setup.get(&path), 400, "M_INVALID_PARAM");
}

/// The `origin_server_ts` of an event, read over federation.
fn depth_free_ts(setup: &Setup, event: &str) -> u64 {
    let answer = ok(setup.get(&format!("/_matrix/federation/v1/event/{}", encode(event))));
    answer["pdus"][0]["origin_server_ts"].as_u64().expect("ts")
}

#[test]
fn version_1_rooms_carry_their_event_ids_and_hashed_references() {
    let setup = Setup::new();
    let id = setup.create_room(json!({
        "preset": "public_chat",
        "room_version": "1",
        "initial_state": [{
            "type": "m.room.history_visibility", "state_key": "",
            "content": { "history_visibility": "world_readable" }
        }],
    }));
    let messages: Vec<String> = (1..=3)
        .map(|n| setup.send_message(&id, &format!("old {n}")))
        .collect();
    let answer = ok(setup.get(&format!(
        "/_matrix/federation/v1/event/{}",
        encode(&messages[0])
    )));
    assert_eq!(
        verified_pdu(&setup, &answer["pdus"][0], "1", false),
        messages[0]
    );
    let path = format!(
        "/_matrix/federation/v1/event_auth/{id}/{}",
        encode(&messages[2])
    );
    let auth = ok(setup.get(&path));
    assert!(pdu_list(&auth, "auth_chain").len() >= 3);
    let path = format!(
        "/_matrix/federation/v1/backfill/{id}?v={}&limit=2",
        encode(&messages[2])
    );
    let found: Vec<String> = pdu_list(&ok(setup.get(&path)), "pdus")
        .iter()
        .map(|pdu| verified_pdu(&setup, pdu, "1", false))
        .collect();
    assert_eq!(found, vec![messages[2].clone(), messages[1].clone()]);
}

#[test]
fn directory_users_and_keys_answer_in_the_spec_shape() {
    let setup = Setup::new();
    let room = public_room(&setup);
    let alice = format!("@alice:{}", setup.name_a);

    // /query/directory: the alias's room, our server first.
    let alias = format!("#lounge:{}", setup.name_a);
    let path = format!(
        "/_matrix/federation/v1/query/directory?room_alias={}",
        encode(&alias)
    );
    let answer = ok(setup.get(&path));
    assert_eq!(answer["room_id"], room.id.as_str());
    assert_eq!(answer["servers"], json!([setup.name_a]));
    let path = format!(
        "/_matrix/federation/v1/query/directory?room_alias={}",
        encode(&format!("#nothing:{}", setup.name_a))
    );
    refused(&setup.get(&path), 404, "M_NOT_FOUND");
    let path = "/_matrix/federation/v1/query/directory?room_alias=%23lounge%3Aelsewhere.org";
    refused(&setup.get(path), 404, "M_NOT_FOUND");
    // The generic /query/{queryType}: a type with no definition is not found here.
    refused(
        &setup.get("/_matrix/federation/v1/query/org.example.weather"),
        404,
        "M_NOT_FOUND",
    );

    // /publicRooms, GET and POST with filters.
    let listed = ok(setup.get("/_matrix/federation/v1/publicRooms?limit=10"));
    assert_eq!(listed["chunk"][0]["room_id"], room.id.as_str());
    assert_eq!(listed["chunk"][0]["name"], "The Lounge");
    assert_eq!(listed["total_room_count_estimate"], 1);
    let search = |filter: Value| {
        let answer = ok(setup.post(
            "/_matrix/federation/v1/publicRooms",
            &json!({ "limit": 5, "filter": filter }),
        ));
        pdu_list(&answer, "chunk").len()
    };
    assert_eq!(search(json!({ "generic_search_term": "lounge" })), 1);
    assert_eq!(search(json!({ "generic_search_term": "kitchen" })), 0);
    assert_eq!(search(json!({ "room_types": [null] })), 1);
    assert_eq!(search(json!({ "room_types": ["m.space"] })), 0);
    refused(
        &setup.get("/_matrix/federation/v1/publicRooms?since=nonsense"),
        400,
        "M_INVALID_PARAM",
    );

    // /hierarchy of a room that is no space: the room, no children.
    let answer = ok(setup.get(&format!("/_matrix/federation/v1/hierarchy/{}", room.id)));
    assert_eq!(answer["room"]["room_id"], room.id.as_str());
    assert_eq!(answer["room"]["children_state"], json!([]));
    assert_eq!(answer["children"], json!([]));
    assert_eq!(answer["inaccessible_children"], json!([]));

    // /openid/userinfo: a token alice asked for names her; no signature needed.
    let path = format!(
        "/_matrix/client/v3/user/{}/openid/request_token",
        encode(&alice)
    );
    let openid = ok(setup
        .client()
        .json("POST", &path, Some(&setup.token), &json!({})));
    let token = openid["access_token"].as_str().expect("token");
    let path = format!("/_matrix/federation/v1/openid/userinfo?access_token={token}");
    assert_eq!(ok(setup.client().get(&path))["sub"], alice.as_str());
    let response = setup
        .client()
        .get("/_matrix/federation/v1/openid/userinfo?access_token=forged");
    refused(&response, 401, "M_UNKNOWN_TOKEN");

    // Devices and keys: none uploaded yet, in the spec's shape.
    let path = format!("/_matrix/federation/v1/user/devices/{}", encode(&alice));
    let devices = ok(setup.get(&path));
    assert_eq!(devices["user_id"], alice.as_str());
    // The login made a device: the user's device-list stream has moved.
    assert!(
        devices["stream_id"].as_u64().is_some_and(|id| id > 0),
        "{devices}"
    );
    assert_eq!(devices["devices"], json!([]));
    let path = format!(
        "/_matrix/federation/v1/user/devices/{}",
        encode(&format!("@nobody:{}", setup.name_a))
    );
    refused(&setup.get(&path), 404, "M_NOT_FOUND");
    let path = "/_matrix/federation/v1/user/devices/%40someone%3Aelsewhere.org";
    refused(&setup.get(path), 400, "M_INVALID_PARAM");
    let keys = ok(setup.post(
        "/_matrix/federation/v1/user/keys/query",
        &json!({ "device_keys": { &alice: [], "@x:elsewhere.org": [] } }),
    ));
    assert_eq!(keys["device_keys"], json!({ &alice: {} }));
    let claimed = ok(setup.post(
        "/_matrix/federation/v1/user/keys/claim",
        &json!({ "one_time_keys": { &alice: { "DEVICE": "signed_curve25519" } } }),
    ));
    // Users whose devices have no key to hand out are left out.
    assert_eq!(claimed["one_time_keys"], json!({}));
    refused(
        &setup.post("/_matrix/federation/v1/user/keys/query", &json!({})),
        400,
        "M_BAD_JSON",
    );
}

#[test]
fn refusals_unsigned_acl_visibility_unknown_and_hostile() {
    let setup = Setup::new();
    let room = public_room(&setup);
    let (id, m) = (&room.id, &room.messages);
    let event_path = format!("/_matrix/federation/v1/event/{}", encode(&m[0]));
    let state_path = format!(
        "/_matrix/federation/v1/state_ids/{id}?event_id={}",
        encode(&m[0])
    );

    // Unsigned.
    refused(&setup.client().get(&event_path), 401, "M_UNAUTHORIZED");
    let unsigned = setup.client().json(
        "POST",
        &format!("/_matrix/federation/v1/get_missing_events/{id}"),
        None,
        &json!({ "earliest_events": [], "latest_events": [m[4]] }),
    );
    refused(&unsigned, 401, "M_UNAUTHORIZED");

    // Unknown events and rooms.
    refused(
        &setup.get("/_matrix/federation/v1/event/%24nothing"),
        404,
        "M_NOT_FOUND",
    );
    let path = format!("/_matrix/federation/v1/state_ids/{id}?event_id=%24nothing");
    refused(&setup.get(&path), 404, "M_NOT_FOUND");
    let path = format!(
        "/_matrix/federation/v1/state_ids/!nowhere:{}?event_id={}",
        setup.name_a,
        encode(&m[0])
    );
    refused(&setup.get(&path), 404, "M_NOT_FOUND");
    refused(
        &setup.get("/_matrix/federation/v1/state_ids/not-a-room?event_id=%24x"),
        400,
        "M_INVALID_PARAM",
    );
    let path = format!("/_matrix/federation/v1/state_ids/{id}");
    refused(&setup.get(&path), 400, "M_MISSING_PARAM");
    let path = format!("/_matrix/federation/v1/backfill/{id}?v=%24nothing&limit=5");
    refused(&setup.get(&path), 404, "M_NOT_FOUND");

    // Hostile limits: clamped or refused, never an error of ours.
    let backfill = |limit: &str| {
        setup.get(&format!(
            "/_matrix/federation/v1/backfill/{id}?v={}&limit={limit}",
            encode(&m[4])
        ))
    };
    assert_eq!(pdu_list(&ok(backfill("-5")), "pdus").len(), 0);
    assert!(pdu_list(&ok(backfill("99999999999999999999999")), "pdus").len() <= 100);
    refused(&backfill("lots"), 400, "M_INVALID_PARAM");
    refused(
        &setup.get(&format!("/_matrix/federation/v1/backfill/{id}?limit=5")),
        400,
        "M_MISSING_PARAM",
    );
    let missing = |body: Value| {
        setup.post(
            &format!("/_matrix/federation/v1/get_missing_events/{id}"),
            &body,
        )
    };
    let none = ok(missing(
        json!({ "earliest_events": [], "latest_events": [m[4]], "limit": -1 }),
    ));
    assert_eq!(pdu_list(&none, "events").len(), 0);
    let many = ok(missing(json!({
        "earliest_events": (0..5000).map(|n| format!("$e{n}")).collect::<Vec<_>>(),
        "latest_events": [m[4]], "limit": 1_000_000_000u64, "min_depth": -3
    })));
    assert!(pdu_list(&many, "events").len() <= 100);
    refused(
        &missing(json!({ "latest_events": [m[4]] })),
        400,
        "M_BAD_JSON",
    );

    // A room whose history is for joined members only: B has no user there.
    let private = setup.create_room(json!({
        "preset": "private_chat",
        "initial_state": [{
            "type": "m.room.history_visibility", "state_key": "",
            "content": { "history_visibility": "joined" }
        }],
    }));
    let secret = setup.send_message(&private, "secret");
    let path = format!("/_matrix/federation/v1/event/{}", encode(&secret));
    refused(&setup.get(&path), 403, "M_FORBIDDEN");
    let path = format!(
        "/_matrix/federation/v1/state_ids/{private}?event_id={}",
        encode(&secret)
    );
    refused(&setup.get(&path), 403, "M_FORBIDDEN");
    let path = format!(
        "/_matrix/federation/v1/state/{private}?event_id={}",
        encode(&secret)
    );
    refused(&setup.get(&path), 403, "M_FORBIDDEN");
    let path = format!(
        "/_matrix/federation/v1/event_auth/{private}/{}",
        encode(&secret)
    );
    refused(&setup.get(&path), 403, "M_FORBIDDEN");
    let path = format!(
        "/_matrix/federation/v1/backfill/{private}?v={}&limit=10",
        encode(&secret)
    );
    refused(&setup.get(&path), 403, "M_FORBIDDEN");
    let path = format!("/_matrix/federation/v1/get_missing_events/{private}");
    let body = json!({ "earliest_events": [], "latest_events": [secret] });
    refused(&setup.post(&path, &body), 403, "M_FORBIDDEN");
    let path = format!("/_matrix/federation/v1/timestamp_to_event/{private}?ts=0&dir=f");
    refused(&setup.get(&path), 404, "M_NOT_FOUND");
    // An event of the private room asked for under the public one is unknown there.
    let path = format!(
        "/_matrix/federation/v1/state_ids/{id}?event_id={}",
        encode(&secret)
    );
    refused(&setup.get(&path), 404, "M_NOT_FOUND");
    let path = format!("/_matrix/federation/v1/hierarchy/{private}");
    refused(&setup.get(&path), 404, "M_NOT_FOUND");

    // The ACL: IP literals refused (B is 127.0.0.1:…), then B denied by a glob, then let in.
    assert_eq!(setup.get(&event_path).status, 200);
    setup.send_state(
        id,
        "m.room.server_acl",
        json!({ "allow": ["*"], "allow_ip_literals": false }),
    );
    refused(&setup.get(&event_path), 403, "M_FORBIDDEN");
    refused(&setup.get(&state_path), 403, "M_FORBIDDEN");
    setup.send_state(
        id,
        "m.room.server_acl",
        json!({ "allow": ["*"], "deny": ["127.0.0.*"] }),
    );
    refused(&setup.get(&event_path), 403, "M_FORBIDDEN");
    let path = format!("/_matrix/federation/v1/get_missing_events/{id}");
    let body = json!({ "earliest_events": [], "latest_events": [m[4]] });
    refused(&setup.post(&path, &body), 403, "M_FORBIDDEN");
    let path = format!("/_matrix/federation/v1/hierarchy/{id}");
    refused(&setup.get(&path), 404, "M_NOT_FOUND");
    setup.send_state(id, "m.room.server_acl", json!({ "allow": ["127.0.0.1"] }));
    assert_eq!(setup.get(&event_path).status, 200);
    assert_eq!(setup.get(&state_path).status, 200);

    // A room none of our users is in any more is not served.
    let path = format!("/_matrix/client/v3/rooms/{id}/leave");
    ok(setup
        .client()
        .json("POST", &path, Some(&setup.token), &json!({})));
    refused(&setup.get(&event_path), 404, "M_NOT_FOUND");
    refused(&setup.get(&state_path), 404, "M_NOT_FOUND");
}

#[test]
fn a_space_lists_the_children_a_server_may_preview() {
    let setup = Setup::new();
    let space = setup.create_room(json!({
        "preset": "public_chat",
        "name": "Family",
        "creation_content": { "type": "m.space" },
    }));
    let open = setup.create_room(json!({ "preset": "public_chat", "name": "Open" }));
    let closed = setup.create_room(json!({ "preset": "private_chat", "name": "Closed" }));
    let child = |room: &str, suggested: bool| {
        let path = format!("/_matrix/client/v3/rooms/{space}/state/m.space.child/{room}");
        let content = json!({ "via": [setup.name_a], "suggested": suggested });
        ok(setup
            .client()
            .json("PUT", &path, Some(&setup.token), &content));
    };
    child(&open, true);
    child(&closed, false);

    let answer = ok(setup.get(&format!("/_matrix/federation/v1/hierarchy/{space}")));
    assert_eq!(answer["room"]["room_id"], space.as_str());
    assert_eq!(answer["room"]["room_type"], "m.space");
    let children_state = pdu_list(&answer["room"], "children_state");
    assert_eq!(children_state.len(), 2);
    for event in children_state {
        assert_eq!(event["type"], "m.space.child");
        assert!(event["origin_server_ts"].is_u64(), "{event}");
    }
    let children = pdu_list(&answer, "children");
    assert_eq!(children.len(), 1);
    assert_eq!(children[0]["room_id"], open.as_str());
    assert_eq!(children[0]["name"], "Open");
    assert_eq!(answer["inaccessible_children"], json!([closed]));

    // Only suggested children: the closed room is not considered at all.
    let path = format!("/_matrix/federation/v1/hierarchy/{space}?suggested_only=true");
    let answer = ok(setup.get(&path));
    assert_eq!(pdu_list(&answer, "children").len(), 1);
    assert_eq!(answer["inaccessible_children"], json!([]));
    refused(
        &setup.get(&format!("/_matrix/federation/v1/hierarchy/{closed}")),
        404,
        "M_NOT_FOUND",
    );
}
