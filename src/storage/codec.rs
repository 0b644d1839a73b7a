//! How keys and values become bytes. Keys encode so that byte order is the order that
//! matters: integers big-endian, strings as UTF-8.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{StorageError, StorageResult};

/// A type that can be a tree's key.
pub trait KeyCodec: Sized {
    fn encode(&self) -> Vec<u8>;
    fn decode(bytes: &[u8]) -> StorageResult<Self>;
}

/// A type that can be a tree's value.
pub trait ValueCodec: Sized {
    type Value;
    fn encode(value: &Self::Value) -> StorageResult<Vec<u8>>;
    fn decode(bytes: &[u8]) -> StorageResult<Self::Value>;
}

impl KeyCodec for u64 {
    fn encode(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }

    fn decode(bytes: &[u8]) -> StorageResult<u64> {
        let array: [u8; 8] = bytes
            .try_into()
            .map_err(|_| StorageError::Corrupt(format!("a u64 of {} bytes", bytes.len())))?;
        Ok(u64::from_be_bytes(array))
    }
}

impl KeyCodec for String {
    fn encode(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }

    fn decode(bytes: &[u8]) -> StorageResult<String> {
        String::from_utf8(bytes.to_vec())
            .map_err(|_| StorageError::Corrupt("a key that is not UTF-8".to_owned()))
    }
}

/// Two strings, joined by `0xFF` (a byte UTF-8 never contains), so all keys sharing the
/// first part are adjacent and can be scanned by prefix.
impl KeyCodec for (String, String) {
    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.0.len() + 1 + self.1.len());
        bytes.extend_from_slice(self.0.as_bytes());
        bytes.push(0xFF);
        bytes.extend_from_slice(self.1.as_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> StorageResult<Self> {
        let split = bytes
            .iter()
            .position(|&b| b == 0xFF)
            .ok_or_else(|| StorageError::Corrupt("a pair key without separator".to_owned()))?;
        Ok((
            <String as KeyCodec>::decode(&bytes[..split])?,
            <String as KeyCodec>::decode(&bytes[split + 1..])?,
        ))
    }
}

/// A string and a big-endian integer: all keys of one string, in numeric order (a room's
/// timeline by stream position).
impl KeyCodec for (String, u64) {
    fn encode(&self) -> Vec<u8> {
        let mut bytes = pair_prefix(&self.0);
        bytes.extend_from_slice(&self.1.to_be_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> StorageResult<Self> {
        let split = bytes
            .len()
            .checked_sub(9)
            .filter(|&at| bytes[at] == 0xFF)
            .ok_or_else(|| StorageError::Corrupt("a string-and-number key".to_owned()))?;
        Ok((
            <String as KeyCodec>::decode(&bytes[..split])?,
            <u64 as KeyCodec>::decode(&bytes[split + 1..])?,
        ))
    }
}

/// Three strings joined by `0xFF` (a room, an event type, a state key).
impl KeyCodec for (String, String, String) {
    fn encode(&self) -> Vec<u8> {
        let mut bytes = pair_prefix(&self.0);
        bytes.extend_from_slice(self.1.as_bytes());
        bytes.push(0xFF);
        bytes.extend_from_slice(self.2.as_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> StorageResult<Self> {
        let mut parts = bytes.splitn(3, |&b| b == 0xFF);
        let (Some(a), Some(b), Some(c)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(StorageError::Corrupt("a three-part key".to_owned()));
        };
        Ok((
            <String as KeyCodec>::decode(a)?,
            <String as KeyCodec>::decode(b)?,
            <String as KeyCodec>::decode(c)?,
        ))
    }
}

/// Four strings joined by `0xFF` (a user, a backup version, a room, a session ID).
impl KeyCodec for (String, String, String, String) {
    fn encode(&self) -> Vec<u8> {
        let mut bytes = pair_prefix(&self.0);
        for part in [&self.1, &self.2] {
            bytes.extend_from_slice(part.as_bytes());
            bytes.push(0xFF);
        }
        bytes.extend_from_slice(self.3.as_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> StorageResult<Self> {
        let mut parts = bytes.splitn(4, |&b| b == 0xFF);
        let (Some(a), Some(b), Some(c), Some(d)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(StorageError::Corrupt("a four-part key".to_owned()));
        };
        Ok((
            <String as KeyCodec>::decode(a)?,
            <String as KeyCodec>::decode(b)?,
            <String as KeyCodec>::decode(c)?,
            <String as KeyCodec>::decode(d)?,
        ))
    }
}

/// Strings joined by `0xFF`, then a big-endian integer: the numbered entries of one
/// subject in numeric order (a user's notifications in a room, a state key's history).
fn strings_then_number(parts: &[&str], number: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    for part in parts {
        bytes.extend_from_slice(part.as_bytes());
        bytes.push(0xFF);
    }
    bytes.extend_from_slice(&number.to_be_bytes());
    bytes
}

/// Splits a key made by [`strings_then_number`] into its `N` strings and its number.
fn split_strings_then_number<const N: usize>(bytes: &[u8]) -> StorageResult<([String; N], u64)> {
    let corrupt = || StorageError::Corrupt(format!("a key of {N} strings and a number"));
    let split = bytes
        .len()
        .checked_sub(9)
        .filter(|&at| bytes[at] == 0xFF)
        .ok_or_else(corrupt)?;
    let number = <u64 as KeyCodec>::decode(&bytes[split + 1..])?;
    let mut parts = bytes[..split].splitn(N, |&b| b == 0xFF);
    let mut strings: [String; N] = std::array::from_fn(|_| String::new());
    for slot in &mut strings {
        *slot = <String as KeyCodec>::decode(parts.next().ok_or_else(corrupt)?)?;
    }
    Ok((strings, number))
}

/// Two strings and a number (a user, a room, a stream position).
impl KeyCodec for (String, String, u64) {
    fn encode(&self) -> Vec<u8> {
        strings_then_number(&[&self.0, &self.1], self.2)
    }

    fn decode(bytes: &[u8]) -> StorageResult<Self> {
        let ([a, b], n) = split_strings_then_number::<2>(bytes)?;
        Ok((a, b, n))
    }
}

/// Three strings and a number (a room, an event type, a state key, a stream position).
impl KeyCodec for (String, String, String, u64) {
    fn encode(&self) -> Vec<u8> {
        strings_then_number(&[&self.0, &self.1, &self.2], self.3)
    }

    fn decode(bytes: &[u8]) -> StorageResult<Self> {
        let ([a, b, c], n) = split_strings_then_number::<3>(bytes)?;
        Ok((a, b, c, n))
    }
}

/// Two big-endian integers (a short ID and a stream position): 16 bytes, in numeric order.
impl KeyCodec for (u64, u64) {
    fn encode(&self) -> Vec<u8> {
        let mut bytes = self.0.to_be_bytes().to_vec();
        bytes.extend_from_slice(&self.1.to_be_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> StorageResult<Self> {
        if bytes.len() != 16 {
            return Err(StorageError::Corrupt(format!(
                "a two-number key of {} bytes",
                bytes.len()
            )));
        }
        Ok((
            <u64 as KeyCodec>::decode(&bytes[..8])?,
            <u64 as KeyCodec>::decode(&bytes[8..])?,
        ))
    }
}

/// A fixed 32-byte key, such as a SHA-256 digest.
impl KeyCodec for [u8; 32] {
    fn encode(&self) -> Vec<u8> {
        self.to_vec()
    }

    fn decode(bytes: &[u8]) -> StorageResult<Self> {
        bytes
            .try_into()
            .map_err(|_| StorageError::Corrupt(format!("a 32-byte key of {} bytes", bytes.len())))
    }
}

/// The encoded prefix shared by every pair key whose first part is `first`.
pub(crate) fn pair_prefix(first: &str) -> Vec<u8> {
    let mut bytes = first.as_bytes().to_vec();
    bytes.push(0xFF);
    bytes
}

impl ValueCodec for String {
    type Value = String;

    fn encode(value: &String) -> StorageResult<Vec<u8>> {
        Ok(value.as_bytes().to_vec())
    }

    fn decode(bytes: &[u8]) -> StorageResult<String> {
        <String as KeyCodec>::decode(bytes)
    }
}

impl ValueCodec for u64 {
    type Value = u64;

    fn encode(value: &u64) -> StorageResult<Vec<u8>> {
        Ok(KeyCodec::encode(value))
    }

    fn decode(bytes: &[u8]) -> StorageResult<u64> {
        <u64 as KeyCodec>::decode(bytes)
    }
}

/// A value stored as JSON: for records whose fields will grow over versions.
pub struct Json<T>(PhantomData<T>);

impl<T: Serialize + DeserializeOwned> ValueCodec for Json<T> {
    type Value = T;

    fn encode(value: &T) -> StorageResult<Vec<u8>> {
        serde_json::to_vec(value).map_err(|err| StorageError::Corrupt(err.to_string()))
    }

    fn decode(bytes: &[u8]) -> StorageResult<T> {
        serde_json::from_slice(bytes).map_err(|err| StorageError::Corrupt(err.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_and_number_keys_round_trip_and_sort_by_number() {
        let key = (
            "!r:x".to_owned(),
            "m.room.member".to_owned(),
            "@a:x".to_owned(),
            7u64,
        );
        assert_eq!(
            <(String, String, String, u64)>::decode(&key.encode()).expect("decode"),
            key
        );
        let early = ("@a:x".to_owned(), "!r:x".to_owned(), 2u64).encode();
        let late = ("@a:x".to_owned(), "!r:x".to_owned(), 256u64).encode();
        assert!(early < late);
        assert!(<(String, String, u64)>::decode(&late).is_ok());
        assert!(<(String, String, u64)>::decode(b"short").is_err());
    }

    #[test]
    fn u64_keys_sort_numerically() {
        let mut keys: Vec<Vec<u8>> = [300u64, 2, 70_000, 1]
            .iter()
            .map(KeyCodec::encode)
            .collect();
        keys.sort();
        let decoded: Vec<u64> = keys
            .iter()
            .map(|key| <u64 as KeyCodec>::decode(key).expect("decode"))
            .collect();
        assert_eq!(decoded, vec![1, 2, 300, 70_000]);
    }

    #[test]
    fn pair_keys_round_trip_and_group_by_first_part() {
        let key = ("@a:x".to_owned(), "DEV".to_owned());
        assert_eq!(
            <(String, String)>::decode(&key.encode()).expect("decode"),
            key
        );
        assert!(key.encode().starts_with(&pair_prefix("@a:x")));
        assert!(!key.encode().starts_with(&pair_prefix("@a:")));
    }

    #[test]
    fn composite_keys_round_trip_and_sort() {
        let a = ("!r".to_owned(), 2u64);
        let b = ("!r".to_owned(), 10u64);
        assert!(a.encode() < b.encode());
        assert_eq!(<(String, u64)>::decode(&b.encode()).expect("decode"), b);
        let triple = (
            "!r".to_owned(),
            "m.room.member".to_owned(),
            "@a:x".to_owned(),
        );
        assert_eq!(
            <(String, String, String)>::decode(&triple.encode()).expect("decode"),
            triple
        );
        assert!(<(String, u64)>::decode(b"short").is_err());
    }

    #[test]
    fn short_or_invalid_bytes_are_corrupt_not_a_panic() {
        assert!(<u64 as KeyCodec>::decode(&[1, 2, 3]).is_err());
        assert!(<String as KeyCodec>::decode(&[0xff, 0xfe]).is_err());
        assert!(<Json<Vec<u8>> as ValueCodec>::decode(b"{").is_err());
    }
}
