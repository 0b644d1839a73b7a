//! Compact binary values for the per-recipient trees (`usernotify_record`,
//! `pairstream_unread`, whose keys name the user in a room by a short ID): an event notifies most members of a room, so these rows are
//! written several times per message and were most of the database (issue 14). Each row
//! keeps only what the event itself cannot give back: the room and event ID are those at
//! the key's stream position, the push actions are one byte for the lists the default
//! rules produce.
//!
//! Every value starts with a byte whose high bit is set, which JSON never starts with: the
//! JSON rows an older Hearth wrote still decode, so the migration that rewrites them can
//! run again after a crash.

use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::Value;

use super::codec::ValueCodec;
use super::records::{StoredNotification, UnreadFlags};
use super::{Storage, StorageError, StorageResult};

/// The first byte of a compact value: the high bit, then flags.
const COMPACT: u8 = 0x80;
const HIGHLIGHT: u8 = 0x01;
const THREAD: u8 = 0x02;

/// The action lists push rules commonly give, stored as their index + 1 (0: the list
/// follows as JSON). Append only: a stored index must keep its meaning.
const KNOWN_ACTIONS: &[&str] = &[
    r#"["notify"]"#,
    r#"["notify",{"set_tweak":"sound","value":"default"}]"#,
    r#"["notify",{"set_tweak":"highlight","value":false}]"#,
    r#"["notify",{"set_tweak":"highlight"}]"#,
    r#"["notify",{"set_tweak":"highlight","value":true}]"#,
    r#"["notify",{"set_tweak":"sound","value":"default"},{"set_tweak":"highlight"}]"#,
    r#"["notify",{"set_tweak":"sound","value":"default"},{"set_tweak":"highlight","value":false}]"#,
    r#"["notify",{"set_tweak":"sound","value":"default"},{"set_tweak":"highlight","value":true}]"#,
    r#"["notify",{"set_tweak":"sound","value":"ring"},{"set_tweak":"highlight","value":false}]"#,
    r#"["notify",{"set_tweak":"sound","value":"ring"}]"#,
    r#"["notify",{"set_tweak":"highlight","value":false},{"set_tweak":"sound","value":"default"}]"#,
];

static KNOWN: LazyLock<Vec<Value>> = LazyLock::new(|| {
    KNOWN_ACTIONS
        .iter()
        .map(|text| serde_json::from_str(text).expect("a known action list is JSON"))
        .collect()
});

/// The byte that stands for `actions`, if it is a known list.
pub(crate) fn known_actions_code(actions: &Value) -> Option<u8> {
    KNOWN
        .iter()
        .position(|known| known == actions)
        .and_then(|index| u8::try_from(index + 1).ok())
}

fn corrupt(what: &str) -> StorageError {
    StorageError::Corrupt(format!("a compact {what}"))
}

fn thread_text(bytes: &[u8], what: &str) -> StorageResult<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| corrupt(what))
}

/// `usernotify_record` values: `flags`, `ts` (8 bytes, big-endian), the actions' code (and,
/// for code 0, a 4-byte length and the JSON), then the thread root if flagged.
pub(crate) struct NotificationCodec;

/// A row an older Hearth wrote: room and event ID were copied into it.
#[derive(Deserialize)]
struct LegacyNotification {
    actions: Value,
    highlight: bool,
    #[serde(default)]
    thread: Option<String>,
    ts: u64,
}

impl ValueCodec for NotificationCodec {
    type Value = StoredNotification;

    fn encode(value: &StoredNotification) -> StorageResult<Vec<u8>> {
        let mut flags = COMPACT;
        if value.highlight {
            flags |= HIGHLIGHT;
        }
        if value.thread.is_some() {
            flags |= THREAD;
        }
        let mut bytes = Vec::with_capacity(10);
        bytes.push(flags);
        bytes.extend_from_slice(&value.ts.to_be_bytes());
        match known_actions_code(&value.actions) {
            Some(code) => bytes.push(code),
            None => {
                let json = serde_json::to_vec(&value.actions)
                    .map_err(|err| StorageError::Corrupt(err.to_string()))?;
                let len = u32::try_from(json.len()).map_err(|_| corrupt("action list"))?;
                bytes.push(0);
                bytes.extend_from_slice(&len.to_be_bytes());
                bytes.extend_from_slice(&json);
            }
        }
        if let Some(thread) = &value.thread {
            bytes.extend_from_slice(thread.as_bytes());
        }
        Ok(bytes)
    }

    fn decode(bytes: &[u8]) -> StorageResult<StoredNotification> {
        let Some(&flags) = bytes.first() else {
            return Err(corrupt("notification"));
        };
        if flags & COMPACT == 0 {
            let legacy: LegacyNotification = serde_json::from_slice(bytes)
                .map_err(|err| StorageError::Corrupt(err.to_string()))?;
            return Ok(StoredNotification {
                actions: legacy.actions,
                highlight: legacy.highlight,
                thread: legacy.thread,
                ts: legacy.ts,
            });
        }
        let ts = bytes
            .get(1..9)
            .and_then(|ts| <[u8; 8]>::try_from(ts).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| corrupt("notification"))?;
        let code = *bytes.get(9).ok_or_else(|| corrupt("notification"))?;
        let (actions, rest) = if code == 0 {
            let len = bytes
                .get(10..14)
                .and_then(|len| <[u8; 4]>::try_from(len).ok())
                .map(u32::from_be_bytes)
                .ok_or_else(|| corrupt("notification"))? as usize;
            let json = bytes
                .get(14..14 + len)
                .ok_or_else(|| corrupt("notification"))?;
            let actions = serde_json::from_slice(json)
                .map_err(|err| StorageError::Corrupt(err.to_string()))?;
            (actions, &bytes[14 + len..])
        } else {
            let actions = KNOWN
                .get(usize::from(code) - 1)
                .cloned()
                .ok_or_else(|| corrupt("action code"))?;
            (actions, &bytes[10..])
        };
        let thread = if flags & THREAD != 0 {
            Some(thread_text(rest, "notification")?)
        } else {
            None
        };
        Ok(StoredNotification {
            actions,
            highlight: flags & HIGHLIGHT != 0,
            thread,
            ts,
        })
    }
}

/// `pairstream_unread` values (and `userroomnotify_flags` before): `flags`, then the thread root if flagged.
pub(crate) struct UnreadCodec;

impl ValueCodec for UnreadCodec {
    type Value = UnreadFlags;

    fn encode((highlight, thread): &UnreadFlags) -> StorageResult<Vec<u8>> {
        let mut flags = COMPACT;
        if *highlight {
            flags |= HIGHLIGHT;
        }
        if thread.is_some() {
            flags |= THREAD;
        }
        let mut bytes = vec![flags];
        if let Some(thread) = thread {
            bytes.extend_from_slice(thread.as_bytes());
        }
        Ok(bytes)
    }

    fn decode(bytes: &[u8]) -> StorageResult<UnreadFlags> {
        let Some(&flags) = bytes.first() else {
            return Err(corrupt("unread flag"));
        };
        if flags & COMPACT == 0 {
            return serde_json::from_slice(bytes)
                .map_err(|err| StorageError::Corrupt(err.to_string()));
        }
        let thread = if flags & THREAD != 0 {
            Some(thread_text(&bytes[1..], "unread flag")?)
        } else {
            None
        };
        Ok((flags & HIGHLIGHT != 0, thread))
    }
}

/// The short ID of a user's place in a room (`userroom_short`), given one now if it had
/// none: written at once, outside any batch, as the state code's short IDs are (a mapping
/// nobody uses yet is harmless, and two writers agree on one).
pub(crate) fn user_room_short(storage: &Storage, user: &str, room: &str) -> StorageResult<u64> {
    let key = (user.to_owned(), room.to_owned());
    if let Some(short) = storage.userroom_short.get(&key)? {
        return Ok(short);
    }
    let short = storage.next_id("userroom")?;
    if storage.userroom_short.insert_new(&key, &short)? {
        return Ok(short);
    }
    storage
        .userroom_short
        .get(&key)?
        .ok_or_else(|| StorageError::Corrupt(format!("the short ID of {user} in {room} vanished")))
}

/// The short ID of a user's place in a room, if it has one (then it has no unread rows).
pub(crate) fn user_room_short_if_any(
    storage: &Storage,
    user: &str,
    room: &str,
) -> StorageResult<Option<u64>> {
    storage
        .userroom_short
        .get(&(user.to_owned(), room.to_owned()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn round_trip(value: &StoredNotification) -> StoredNotification {
        let bytes = NotificationCodec::encode(value).expect("encode");
        NotificationCodec::decode(&bytes).expect("decode")
    }

    #[test]
    fn notifications_round_trip_in_a_few_bytes() {
        let common = StoredNotification {
            actions: json!(["notify", {"set_tweak": "sound", "value": "default"}]),
            highlight: false,
            thread: None,
            ts: 1_700_000_000_123,
        };
        assert_eq!(round_trip(&common), common);
        assert_eq!(
            NotificationCodec::encode(&common).expect("encode").len(),
            10
        );
        let unusual = StoredNotification {
            actions: json!(["notify", {"set_tweak": "custom", "value": [1, 2]}]),
            highlight: true,
            thread: Some("$root:example.org".to_owned()),
            ts: 5,
        };
        assert_eq!(round_trip(&unusual), unusual);
    }

    #[test]
    fn rows_an_older_hearth_wrote_still_decode() {
        let legacy = json!({
            "room_id": "!r:x", "event_id": "$e", "actions": ["notify"],
            "highlight": true, "thread": "$t", "ts": 42,
        });
        let decoded =
            NotificationCodec::decode(&serde_json::to_vec(&legacy).expect("json")).expect("old");
        assert_eq!(decoded.actions, json!(["notify"]));
        assert!(decoded.highlight);
        assert_eq!(decoded.thread.as_deref(), Some("$t"));
        assert_eq!(decoded.ts, 42);
        let flags: UnreadFlags = (true, Some("$t".to_owned()));
        assert_eq!(
            UnreadCodec::decode(&serde_json::to_vec(&flags).expect("json")).expect("old"),
            flags
        );
        for flags in [(false, None), (true, None), (false, Some("$t".to_owned()))] {
            let bytes = UnreadCodec::encode(&flags).expect("encode");
            assert_eq!(UnreadCodec::decode(&bytes).expect("decode"), flags);
        }
        assert_eq!(
            UnreadCodec::encode(&(false, None)).expect("encode").len(),
            1
        );
    }

    /// The default push rules' action lists take one byte each.
    #[test]
    fn the_default_rules_actions_are_known() {
        let user = ruma::UserId::parse("@u:x").expect("user");
        for rule in &ruma::push::Ruleset::server_default(&user) {
            let actions = rule.actions();
            if actions.iter().any(ruma::push::Action::should_notify) {
                let json = serde_json::to_value(actions).expect("json");
                assert!(known_actions_code(&json).is_some(), "{json}");
            }
        }
    }

    #[test]
    fn truncated_values_are_corrupt_not_a_panic() {
        for bytes in [
            &[][..],
            &[0x80][..],
            &[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9][..],
        ] {
            assert!(NotificationCodec::decode(bytes).is_err());
        }
        assert!(NotificationCodec::decode(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 200]).is_err());
    }
}
