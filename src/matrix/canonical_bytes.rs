//! Canonical JSON written straight from a JSON text, without a tree of it. A request body is
//! signed over its canonical form; building that as a `serde_json::Value` (or ruma's
//! `CanonicalJsonValue`) costs about 17 times the text for an array of small numbers (32 bytes
//! a value and more for each map), so an 8 MiB body would take over 130 MiB. Here each
//! array is written as it is read, and each object keeps only its members' finished canonical
//! bytes until it sorts them: the peak is about twice the output, which is no longer than the
//! input but for escapes. The rules are those of [`super::canonical_json::from_json`]: keys
//! by code point (the last of duplicates wins, as when parsing into a map), whole-valued
//! numbers as integers (`1e2` is `100`, `-0` is `0`), integers within ±(2^53 - 1), no
//! fractions. Nesting is bounded by serde_json's own depth limit (128).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The largest integer canonical JSON allows, 2^53 - 1.
const MAX_SAFE_INTEGER: u64 = 9_007_199_254_740_991;

/// The canonical JSON of the JSON text `text`. Errors are serde_json's: syntax errors for
/// text that is not JSON, data errors for JSON that canonical JSON cannot hold.
pub(crate) fn canonical_from_slice(text: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(text.len().min(1 << 20));
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    Canonical(&mut out).deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(out)
}

/// Writes the canonical form of the next value into its buffer.
struct Canonical<'o>(&'o mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for Canonical<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Canonical<'_> {
    fn integer<E: de::Error>(self, negative: bool, magnitude: u64) -> Result<(), E> {
        if magnitude > MAX_SAFE_INTEGER {
            return Err(E::custom("an integer is out of canonical JSON's range"));
        }
        if negative && magnitude != 0 {
            self.0.push(b'-');
        }
        self.0.extend_from_slice(magnitude.to_string().as_bytes());
        Ok(())
    }

    fn string<E: de::Error>(self, text: &str) -> Result<(), E> {
        // serde_json escapes exactly as canonical JSON asks: `"`, `\` and control characters
        // only, with the short forms where JSON has them and lower-case `\u00xx` otherwise.
        serde_json::to_writer(&mut *self.0, text).map_err(E::custom)
    }
}

impl<'de> Visitor<'de> for Canonical<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<(), E> {
        self.0
            .extend_from_slice(if value { b"true" } else { b"false" });
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<(), E> {
        self.integer(value < 0, value.unsigned_abs())
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<(), E> {
        self.integer(false, value)
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<(), E> {
        // Whole and within range: exactly an integer (2^53 - 1 is exact in an f64).
        #[allow(clippy::cast_precision_loss)]
        let limit = MAX_SAFE_INTEGER as f64;
        if value.fract() != 0.0 || value.abs() > limit || !value.is_finite() {
            return Err(E::custom("canonical JSON has no fractions"));
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let magnitude = value.abs() as u64;
        self.integer(value < 0.0, magnitude)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<(), E> {
        self.string(value)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.push(b'[');
        let mut first = true;
        loop {
            let mark = self.0.len();
            if !first {
                self.0.push(b',');
            }
            if seq.next_element_seed(Canonical(&mut *self.0))?.is_none() {
                self.0.truncate(mark);
                break;
            }
            first = false;
        }
        self.0.push(b']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut members: Vec<(Cow<'de, str>, Vec<u8>)> = Vec::new();
        while let Some(key) = map.next_key_seed(Key)? {
            let mut value = Vec::new();
            map.next_value_seed(Canonical(&mut value))?;
            members.push((key, value));
        }
        // A stable sort keeps duplicates in the order read; the last one wins.
        members.sort_by(|a, b| a.0.cmp(&b.0));
        self.0.push(b'{');
        let mut first = true;
        for (index, (key, value)) in members.iter().enumerate() {
            if members.get(index + 1).is_some_and(|next| next.0 == *key) {
                continue;
            }
            if !first {
                self.0.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut *self.0, key.as_ref()).map_err(de::Error::custom)?;
            self.0.push(b':');
            self.0.extend_from_slice(value);
        }
        self.0.push(b'}');
        Ok(())
    }
}

/// An object's key, borrowed from the text when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a string key")
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the tree-building path makes of the same text.
    fn by_tree(text: &str) -> Option<String> {
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        super::super::canonical_json::from_json(value)
            .ok()
            .map(|canonical| canonical.to_string())
    }

    fn streamed(text: &str) -> Option<String> {
        canonical_from_slice(text.as_bytes())
            .ok()
            .map(|bytes| String::from_utf8(bytes).expect("canonical JSON is UTF-8"))
    }

    #[test]
    fn agrees_with_the_tree_on_every_case() {
        for text in [
            "{}",
            "[]",
            r#"{"one": 1, "two": "Two"}"#,
            r#"{"b": "2", "a": "1"}"#,
            r#"{"a": "日本語"}"#,
            r#"{"本": 2, "日": 1}"#,
            r#"{"a": "\u65E5"}"#,
            r#"{"a": null}"#,
            r#"{"a": "\u0000\u001f\u007f\"\\\/\b\f\n\r\t"}"#,
            r#"{"a": [1, -1, 0, -0, 1e2, 1.0, -5.0E0, 9007199254740991, -9007199254740991]}"#,
            r#"{"a": 9007199254740992}"#,
            r#"{"a": -9007199254740992}"#,
            r#"{"a": 1.5}"#,
            r#"{"a": 1e400}"#,
            r#"{"a": 1, "a": 2, "b": {"z": [], "y": {}, "y": [true, false]}}"#,
            r#"{"\u00e9": 1, "e": 2, "\ud83d\ude00": 3, "Z": 4}"#,
            r#"{"a": "\ud800"}"#,
            r#"[{"b": 1, "a": [{"d": 1, "c": 2}]}, "x", null, true]"#,
            r#"  {"a" : 1 }  "#,
            r#"{"a": 1} x"#,
            r#"{"a": 1"#,
            "\"just a string\"",
            "12",
        ] {
            assert_eq!(streamed(text), by_tree(text), "{text}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(canonical_from_slice(text.as_bytes()).is_err());
    }

    #[test]
    fn a_large_array_costs_about_its_size() {
        let text = format!("[{}0]", "0,".repeat(1 << 20));
        let canonical = canonical_from_slice(text.as_bytes()).expect("canonical");
        assert_eq!(canonical, text.as_bytes());
    }
}
