//! Property tests of canonical JSON (issue 10): every byte a stranger sends ends up here
//! before a signature is checked, so arbitrary JSON must never panic, and what we accept must
//! encode the same way every time (a signature over one encoding must verify over the next).
//!
//! Cases: 256, or `PROPTEST_CASES` (proptest's default config reads it; `scripts/test`
//! raises it under a time bound).

use proptest::prelude::*;
use serde_json::Value;

use super::from_json;

/// Any JSON value: all number kinds (floats, huge and negative integers), any string (escapes,
/// surrogates' replacements, control characters), nested up to a few levels.
pub(crate) fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        (-1_000_i64..1_000).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// JSON whose numbers canonical JSON can hold: integers within ±(2^53 - 1), no floats.
pub(crate) fn canonical_value() -> impl Strategy<Value = Value> {
    const SAFE: i64 = 9_007_199_254_740_991;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-SAFE..=SAFE).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// JSON-looking text: the tokens JSON is made of, and a few it is not (`NaN`, `-0`, `1e400`,
/// lone surrogates, bare control bytes), in any order.
fn json_ish_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(",".to_owned()),
        Just(":".to_owned()),
        Just("\"a\"".to_owned()),
        Just("\"\\ud800\"".to_owned()),
        Just("\"\\u0000\"".to_owned()),
        Just("-0".to_owned()),
        Just("1e400".to_owned()),
        Just("-1e-400".to_owned()),
        Just("9007199254740992".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("1.5".to_owned()),
        Just("NaN".to_owned()),
        Just("Infinity".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
        "[ -~]{0,4}",
    ];
    prop::collection::vec(token, 0..24).prop_map(|tokens| tokens.concat())
}

proptest! {
    #[test]
    fn prop_any_json_value_never_panics(value in json_value()) {
        let _ = from_json(value);
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
            let _ = from_json(value);
        }
    }

    #[test]
    fn prop_json_ish_text_never_panics(text in json_ish_text()) {
        if let Ok(value) = serde_json::from_str::<Value>(&text) {
            let _ = from_json(value);
        }
    }

    /// Canonical text read back encodes to the very same bytes.
    #[test]
    fn prop_encoding_is_idempotent(value in json_value()) {
        if let Ok(canonical) = from_json(value) {
            let text = canonical.to_string();
            let again: Value = serde_json::from_str(&text).expect("canonical JSON is JSON");
            let twice = from_json(again).expect("canonical JSON is canonical").to_string();
            prop_assert_eq!(text, twice);
        }
    }

    /// What canonical JSON can hold is kept: the encoding reads back as the same value, with
    /// no whitespace outside strings and keys in code-point order.
    #[test]
    fn prop_canonical_values_round_trip(value in canonical_value()) {
        let text = from_json(value.clone()).expect("within canonical JSON").to_string();
        let back: Value = serde_json::from_str(&text).expect("JSON");
        prop_assert_eq!(&back, &value);
        prop_assert_eq!(text, serde_json::to_string(&sorted(&back)).expect("serialize"));
    }

    /// A whole-valued float is the integer it equals (spec: `1e10` is `10000000000`).
    #[test]
    fn prop_whole_floats_are_integers(n in -9_007_199_254_740_991_i64..=9_007_199_254_740_991) {
        #[allow(clippy::cast_precision_loss)]
        let float = n as f64;
        if float.fract() == 0.0 && float.abs() <= 9_007_199_254_740_991.0 {
            #[allow(clippy::cast_possible_truncation)]
            let whole = float as i64;
            let text = from_json(Value::from(float)).expect("whole float").to_string();
            prop_assert_eq!(text, whole.to_string());
        }
    }
}

/// `value` with its objects' keys in code-point order (serde_json's map keeps insertion
/// order only with `preserve_order`; this does not depend on it), escaped as canonical JSON
/// escapes (serde_json's own escaping, which canonical JSON matches).
fn sorted(value: &Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        Value::Object(members) => {
            let ordered: std::collections::BTreeMap<&String, Value> = members
                .iter()
                .map(|(key, value)| (key, sorted(value)))
                .collect();
            Value::Object(
                ordered
                    .into_iter()
                    .map(|(key, value)| (key.clone(), value))
                    .collect(),
            )
        }
        other => other.clone(),
    }
}
