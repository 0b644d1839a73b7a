//! Property tests of PDU parsing (issue 10): any JSON object a remote server sends as an
//! event, of any room version, is refused or parsed, never a panic, and the steps that run
//! on it before its signatures are checked (the format check, the reference hash, redaction)
//! hold up as well.
//!
//! Cases: 256, or `PROPTEST_CASES` (proptest's default config reads it; `scripts/test`
//! raises it under a time bound).

use proptest::prelude::*;
use ruma::room_version_rules::RoomVersionRules;
use ruma::{CanonicalJsonObject, CanonicalJsonValue};
use serde_json::{Value, json};

use super::Pdu;
use crate::matrix::canonical_json::{from_json, props::json_value};

/// Every room version's rules: 1 and 2 (IDs in the event, hash pairs), 3 to 10, 11 (redacts
/// in the content), 12 (no room ID in the create event).
fn rules() -> impl Strategy<Value = RoomVersionRules> {
    prop::sample::select(vec![
        RoomVersionRules::V1,
        RoomVersionRules::V2,
        RoomVersionRules::V3,
        RoomVersionRules::V4,
        RoomVersionRules::V10,
        RoomVersionRules::V11,
        RoomVersionRules::V12,
    ])
}

/// Values that are nearly right for a PDU's fields: identifiers of every sigil, well- and
/// ill-formed, lists of them, and integers at the edges.
fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            json!("!r:example.org"),
            json!("@a:example.org"),
            json!("$event"),
            json!("$abc:example.org"),
            json!("#alias:example.org"),
            json!("!"),
            json!("@"),
            json!(""),
            json!("@a:"),
            json!("@:example.org"),
            json!("!r:exa mple.org"),
            json!("m.room.message"),
            json!("m.room.create"),
            json!("m.room.member"),
            json!("m.room.redaction"),
            json!(0),
            json!(-1),
            json!(9_007_199_254_740_991_i64),
            json!({}),
            json!([]),
            json!(["$p"]),
            json!([["$p:example.org", { "sha256": "x" }]]),
            json!([[]]),
            json!([5]),
            json!({ "sha256": "x" }),
            json!({ "membership": "join" }),
            json!({ "redacts": "$x" }),
            json!({ "redacts": 5 }),
            json!({ "example.org": { "ed25519:k": "sig" } }),
        ]),
        json_value(),
    ]
}

const FIELDS: &[&str] = &[
    "event_id",
    "room_id",
    "sender",
    "type",
    "state_key",
    "content",
    "prev_events",
    "auth_events",
    "redacts",
    "depth",
    "origin_server_ts",
    "hashes",
    "signatures",
    "unsigned",
    "origin",
];

/// A JSON object made mostly of a PDU's field names, each with a near-right or random value.
fn pdu_like_object() -> impl Strategy<Value = Value> {
    let name =
        prop_oneof![4 => prop::sample::select(FIELDS).prop_map(str::to_owned), 1 => ".{0,8}"];
    prop::collection::btree_map(name, field_value(), 0..16)
        .prop_map(|map| Value::Object(map.into_iter().collect()))
}

/// A valid message event of a room of version 3 or later, with one field replaced.
fn mutated_event() -> impl Strategy<Value = Value> {
    (prop::sample::select(FIELDS), field_value()).prop_map(|(field, value)| {
        let mut event = json!({
            "room_id": "!r:example.org", "sender": "@a:example.org", "type": "m.room.message",
            "content": { "body": "hi" }, "prev_events": ["$p"], "auth_events": ["$a"],
            "depth": 3, "origin_server_ts": 5, "hashes": { "sha256": "y" },
            "signatures": { "example.org": { "ed25519:k": "sig" } }
        });
        event[field] = value;
        event
    })
}

/// Everything run on a remote event before its signatures: none of it may panic.
fn handle(value: Value, rules: &RoomVersionRules) {
    let Ok(CanonicalJsonValue::Object(object)) = from_json(value) else {
        return;
    };
    let _ = ruma::state_res::check_pdu_format(&object, &rules.event_format);
    let _ = Pdu::from_json(&object, rules);
    let _ = ruma::signatures::reference_hash(&object, rules);
    let _: Result<CanonicalJsonObject, _> =
        ruma::canonical_json::redact(object, &rules.redaction, None);
}

proptest! {
    #[test]
    fn prop_any_json_never_panics_as_a_pdu(value in json_value(), rules in rules()) {
        handle(value, &rules);
    }

    #[test]
    fn prop_pdu_shaped_objects_never_panic(value in pdu_like_object(), rules in rules()) {
        handle(value, &rules);
    }

    #[test]
    fn prop_one_bad_field_never_panics(value in mutated_event(), rules in rules()) {
        handle(value, &rules);
    }

    /// A parsed PDU is what its JSON says: the computed ID is stable, and the fields read
    /// back are the fields sent.
    #[test]
    fn prop_parsed_pdus_match_their_json(value in mutated_event()) {
        let Ok(CanonicalJsonValue::Object(object)) = from_json(value) else {
            return Ok(());
        };
        if let Ok(pdu) = Pdu::from_json(&object, &RoomVersionRules::V11) {
            let again = Pdu::from_json(&object, &RoomVersionRules::V11).expect("parsed once");
            prop_assert_eq!(&pdu.event_id, &again.event_id);
            prop_assert_eq!(
                Some(pdu.sender.as_str()),
                object.get("sender").and_then(CanonicalJsonValue::as_str)
            );
            prop_assert_eq!(
                Some(pdu.depth),
                object
                    .get("depth")
                    .and_then(CanonicalJsonValue::as_integer)
                    .and_then(|depth| u64::try_from(i64::from(depth)).ok())
            );
        }
    }
}
