//! Property tests of filters (issue 10): a filter arrives as JSON in a query string or a
//! body, from any client, and is then applied to every event of a sync; no text may panic its
//! parsing, and no parsed filter may panic when it is applied. The `*` globs of `types` are
//! checked against a plain reference matcher.
//!
//! Cases: 256, or `PROPTEST_CASES` (proptest's default config reads it; `scripts/test`
//! raises it under a time bound).

use proptest::prelude::*;
use serde_json::{Value, json};

use super::{Filter, glob_matches};
use crate::matrix::canonical_json::props::json_value;

/// Values for a filter's fields: lists of globs and IDs, limits at the edges, wrong types.
fn filter_field() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::collection::vec("[a-z.*\\\\]{0,8}", 0..4).prop_map(|list| json!(list)),
        prop::sample::select(vec![
            json!(0),
            json!(-1),
            json!(1),
            json!(u64::MAX),
            json!(1e300),
            json!(true),
            json!(null),
            json!("client"),
            json!("federation"),
            json!([
                "content.body",
                "type",
                "content.m\\.relates_to",
                "",
                ".",
                "\\"
            ]),
        ]),
        json_value(),
    ]
}

/// A filter-shaped object: the names filters use, nested as in the spec, with any values.
fn filter_like() -> impl Strategy<Value = Value> {
    let names = prop::sample::select(vec![
        "limit",
        "types",
        "not_types",
        "senders",
        "not_senders",
        "rooms",
        "not_rooms",
        "contains_url",
        "lazy_load_members",
        "include_redundant_members",
        "unread_thread_notifications",
        "include_leave",
    ]);
    let event_filter = prop::collection::btree_map(names, filter_field(), 0..6)
        .prop_map(|map| Value::Object(map.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
        .boxed();
    let room = (
        event_filter.clone(),
        event_filter.clone(),
        event_filter.clone(),
        filter_field(),
    )
        .prop_map(|(timeline, state, ephemeral, rooms)| {
            json!({ "timeline": timeline, "state": state, "ephemeral": ephemeral, "rooms": rooms })
        });
    (
        room,
        event_filter.clone(),
        event_filter,
        filter_field(),
        filter_field(),
    )
        .prop_map(
            |(room, presence, account_data, event_fields, event_format)| {
                json!({
                    "room": room, "presence": presence, "account_data": account_data,
                    "event_fields": event_fields, "event_format": event_format,
                })
            },
        )
}

/// Applies every part of a parsed filter to a few events: none of it may panic.
fn apply(filter: &Filter) {
    let events = [
        json!({ "type": "m.room.message", "sender": "@a:example.org",
                "content": { "body": "hi", "url": "mxc://x/y", "m.relates_to": {} } }),
        json!({ "type": 5, "content": "not an object" }),
        json!(null),
        json!({}),
    ];
    for event in events {
        let _ = filter.room.timeline.allows(&event);
        let _ = filter.room.state.allows(&event);
        let _ = filter.project(event);
    }
    let _ = filter.room.timeline.limit_or(10);
    let _ = filter.room.timeline.allows_room("!r:example.org");
    let _ = filter.room.allows_room("!r:example.org");
    let _ = filter.presence.allows("m.presence", Some("@a:example.org"));
    let _ = filter.account_data.allows("m.direct", None);
}

/// `*` matches any run of characters (the reference: plain recursion).
fn reference_glob(pattern: &[char], value: &[char]) -> bool {
    match pattern.split_first() {
        None => value.is_empty(),
        Some(('*', rest)) => (0..=value.len()).any(|skip| reference_glob(rest, &value[skip..])),
        Some((c, rest)) => value.first() == Some(c) && reference_glob(rest, &value[1..]),
    }
}

proptest! {
    #[test]
    fn prop_any_text_never_panics_as_a_filter(text in ".{0,64}") {
        if let Ok(filter) = Filter::parse(&text) {
            apply(&filter);
        }
    }

    #[test]
    fn prop_any_json_never_panics_as_a_filter(value in json_value()) {
        if let Ok(filter) = Filter::parse(&value.to_string()) {
            apply(&filter);
        }
    }

    #[test]
    fn prop_filter_shaped_json_never_panics(value in filter_like()) {
        if let Ok(filter) = Filter::parse(&value.to_string()) {
            apply(&filter);
        }
    }

    /// Limits are always within 1 and the maximum, whatever the client asked for.
    #[test]
    fn prop_limits_are_bounded(limit in any::<u64>()) {
        let text = json!({ "room": { "timeline": { "limit": limit } } }).to_string();
        let filter = Filter::parse(&text).expect("a valid filter");
        let limit = filter.room.timeline.limit_or(10);
        let within = u64::try_from(limit).is_ok_and(|limit| limit <= super::MAX_LIMIT);
        prop_assert!(limit >= 1 && within);
    }

    #[test]
    fn prop_globs_match_as_the_reference_does(pattern in "[ab*]{0,8}", value in "[ab]{0,10}") {
        let expected = reference_glob(
            &pattern.chars().collect::<Vec<_>>(),
            &value.chars().collect::<Vec<_>>(),
        );
        prop_assert_eq!(glob_matches(&pattern, &value), expected, "{} vs {}", pattern, value);
    }
}
