//! Canonical JSON (spec appendices, "Canonical JSON"): the one byte-exact encoding that
//! signatures and hashes are computed over. ruma's `CanonicalJsonValue` does the work: keys
//! in a `BTreeMap` sort by code point and integers are range-checked. Numbers written with
//! an exponent or as `-0` are integers to the spec (`1e10` encodes as `10000000000`, `-0` as
//! `0`), so whole-valued floats become integers first; fractions are refused.

pub(crate) use ruma::{CanonicalJsonError, CanonicalJsonObject, CanonicalJsonValue};

#[cfg(test)]
/// The canonical encoding of any serializable value.
pub fn to_canonical_string<T: serde::Serialize>(value: &T) -> Result<String, CanonicalJsonError> {
    Ok(ruma::canonical_json::to_canonical_value(value)?.to_string())
}

/// Converts parsed JSON into its canonical form, refusing what canonical JSON cannot hold.
pub(crate) fn from_json(
    value: serde_json::Value,
) -> Result<CanonicalJsonValue, CanonicalJsonError> {
    CanonicalJsonValue::try_from(whole_floats_as_integers(value))
}

/// The largest integer canonical JSON allows, 2^53 - 1.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

fn whole_floats_as_integers(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(number) if !number.is_i64() && !number.is_u64() => match number.as_f64() {
            Some(float) if float.fract() == 0.0 && float.abs() <= MAX_SAFE_INTEGER => {
                // A whole number within ±2^53: exactly representable as i64.
                #[allow(clippy::cast_possible_truncation)]
                let whole = float as i64;
                Value::from(whole)
            }
            _ => Value::Number(number),
        },
        Value::Array(items) => {
            Value::Array(items.into_iter().map(whole_floats_as_integers).collect())
        }
        Value::Object(members) => Value::Object(
            members
                .into_iter()
                .map(|(key, value)| (key, whole_floats_as_integers(value)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn canonical(text: &str) -> String {
        let value: Value = serde_json::from_str(text).expect("test JSON");
        from_json(value).expect("canonical").to_string()
    }

    /// The examples of the spec's appendix, "Canonical JSON".
    #[test]
    fn spec_examples() {
        assert_eq!(canonical("{}"), "{}");
        assert_eq!(
            canonical(r#"{"one": 1, "two": "Two"}"#),
            r#"{"one":1,"two":"Two"}"#
        );
        assert_eq!(canonical(r#"{"b": "2", "a": "1"}"#), r#"{"a":"1","b":"2"}"#);
        assert_eq!(
            canonical(
                r#"{"auth": {"success": true, "mxid": "@john.doe:example.com",
                    "profile": {"display_name": "John Doe", "three_pids": [
                        {"medium": "email", "address": "john.doe@example.org"},
                        {"medium": "msisdn", "address": "123456789"}]}}}"#
            ),
            r#"{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}"#
        );
        assert_eq!(canonical(r#"{"a": "日本語"}"#), r#"{"a":"日本語"}"#);
        assert_eq!(canonical(r#"{"本": 2, "日": 1}"#), r#"{"日":1,"本":2}"#);
        assert_eq!(canonical(r#"{"a": "\u65E5"}"#), r#"{"a":"日"}"#);
        assert_eq!(canonical(r#"{"a": null}"#), r#"{"a":null}"#);
        assert_eq!(
            canonical(r#"{"a": -0, "b": 1e10}"#),
            r#"{"a":0,"b":10000000000}"#
        );
    }

    #[test]
    fn control_characters_use_the_shortest_escape() {
        assert_eq!(
            canonical(r#"{"a": "\u0008\n\u001f\""}"#),
            r#"{"a":"\b\n\u001f\""}"#
        );
    }

    #[test]
    fn fractions_and_out_of_range_integers_are_refused() {
        assert!(from_json(json!({ "b": 1.5 })).is_err());
        assert!(from_json(json!({ "b": 1e300 })).is_err());
        assert_eq!(
            from_json(json!([2.0, -0.0])).expect("whole").to_string(),
            "[2,0]"
        );
        assert!(from_json(json!({ "big": 9_007_199_254_740_992_u64 })).is_err());
        assert!(from_json(json!({ "max": 9_007_199_254_740_991_u64 })).is_ok());
    }

    #[test]
    fn serializable_values_encode_canonically() {
        #[derive(serde::Serialize)]
        struct Keys {
            zebra: u8,
            apple: &'static str,
        }
        let text = to_canonical_string(&Keys {
            zebra: 1,
            apple: "x",
        })
        .expect("canonical");
        assert_eq!(text, r#"{"apple":"x","zebra":1}"#);
    }
}

#[cfg(test)]
#[path = "canonical_json_props.rs"]
pub(crate) mod props;
