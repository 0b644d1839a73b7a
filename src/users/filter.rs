//! Filters (spec: client-server API, "Filtering"): which events a client wants in `/sync`,
//! `/messages` and `/context`, and in what shape. A filter is uploaded once
//! (`/user/{userId}/filter`) and named by ID, or sent inline as JSON.
//!
//! Unknown fields are ignored (clients send newer and unstable ones); fields of the wrong
//! type make the filter invalid.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{Error, ErrorKind};
use crate::storage::{Storage, StorageError};

/// The most events of one kind a filter may ask for: events are up to 64 KiB each.
pub(crate) const MAX_LIMIT: u64 = 100;

/// Stores a filter's text under an ID derived from it, and returns the ID: clients upload
/// theirs on every start, and the same filter gets the same ID instead of a new row.
pub(crate) fn store(storage: &Storage, user_id: &str, text: &str) -> Result<String, StorageError> {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let filter_id: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    storage
        .userfilter_filter
        .insert(&(user_id.to_owned(), filter_id.clone()), &text.to_owned())?;
    Ok(filter_id)
}

/// A stored filter's text.
pub(crate) fn stored(
    storage: &Storage,
    user_id: &str,
    filter_id: &str,
) -> Result<Option<String>, StorageError> {
    storage
        .userfilter_filter
        .get(&(user_id.to_owned(), filter_id.to_owned()))
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Filter {
    /// Dotted paths of the event fields to keep (`content.body`; `\.` for a literal dot).
    pub(crate) event_fields: Option<Vec<String>>,
    pub(crate) event_format: EventFormat,
    pub(crate) presence: EventFilter,
    pub(crate) account_data: EventFilter,
    pub(crate) room: RoomFilter,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EventFormat {
    #[default]
    Client,
    Federation,
}

/// Events by type and sender.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct EventFilter {
    pub(crate) limit: Option<u64>,
    pub(crate) types: Option<Vec<String>>,
    pub(crate) not_types: Vec<String>,
    pub(crate) senders: Option<Vec<String>>,
    pub(crate) not_senders: Vec<String>,
}

/// Room events: an [`EventFilter`] plus rooms, URLs and member lazy-loading.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RoomEventFilter {
    pub(crate) limit: Option<u64>,
    pub(crate) types: Option<Vec<String>>,
    pub(crate) not_types: Vec<String>,
    pub(crate) senders: Option<Vec<String>>,
    pub(crate) not_senders: Vec<String>,
    pub(crate) rooms: Option<Vec<String>>,
    pub(crate) not_rooms: Vec<String>,
    pub(crate) contains_url: Option<bool>,
    pub(crate) lazy_load_members: bool,
    pub(crate) include_redundant_members: bool,
    pub(crate) unread_thread_notifications: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RoomFilter {
    pub(crate) rooms: Option<Vec<String>>,
    pub(crate) not_rooms: Vec<String>,
    pub(crate) include_leave: bool,
    pub(crate) timeline: RoomEventFilter,
    pub(crate) state: RoomEventFilter,
    pub(crate) ephemeral: RoomEventFilter,
    pub(crate) account_data: RoomEventFilter,
}

/// Whether `value` matches `pattern`, where `*` stands for any run of characters.
pub(crate) fn glob_matches(pattern: &str, value: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == value;
    };
    let Some(mut remaining) = value.strip_prefix(first) else {
        return false;
    };
    let mut pieces: Vec<&str> = rest.split('*').collect();
    let last = pieces.pop().unwrap_or_default();
    for piece in pieces {
        match remaining.find(piece) {
            Some(at) => remaining = &remaining[at + piece.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

fn allowed(value: &str, only: Option<&[String]>, not: &[String], glob: bool) -> bool {
    let matches = |pattern: &String| {
        if glob {
            glob_matches(pattern, value)
        } else {
            pattern == value
        }
    };
    !not.iter().any(matches) && only.is_none_or(|only| only.iter().any(matches))
}

impl EventFilter {
    pub(crate) fn allows(&self, kind: &str, sender: Option<&str>) -> bool {
        allowed(kind, self.types.as_deref(), &self.not_types, true)
            && sender.is_none_or(|sender| {
                allowed(sender, self.senders.as_deref(), &self.not_senders, false)
            })
    }
}

impl RoomEventFilter {
    /// Whether a client-format event passes the type, sender and URL conditions.
    pub(crate) fn allows(&self, event: &Value) -> bool {
        let kind = event["type"].as_str().unwrap_or_default();
        let sender = event["sender"].as_str();
        let by_kind_and_sender = allowed(kind, self.types.as_deref(), &self.not_types, true)
            && sender.is_none_or(|sender| {
                allowed(sender, self.senders.as_deref(), &self.not_senders, false)
            });
        let has_url = event["content"]["url"].is_string();
        by_kind_and_sender && self.contains_url.is_none_or(|wanted| wanted == has_url)
    }

    pub(crate) fn allows_room(&self, room_id: &str) -> bool {
        allowed(room_id, self.rooms.as_deref(), &self.not_rooms, false)
    }

    pub(crate) fn limit_or(&self, default: u64) -> usize {
        self.limit.unwrap_or(default).clamp(1, MAX_LIMIT) as usize
    }
}

impl RoomFilter {
    pub(crate) fn allows_room(&self, room_id: &str) -> bool {
        allowed(room_id, self.rooms.as_deref(), &self.not_rooms, false)
    }
}

impl Filter {
    /// Parses a filter definition, as uploaded or sent inline.
    pub fn parse(text: &str) -> Result<Filter, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The filter a request names: inline JSON (starting with `{`), a stored filter's ID,
    /// or none (everything).
    pub(crate) fn resolve(
        storage: &Storage,
        user_id: &str,
        filter: Option<&str>,
    ) -> Result<Filter, Error> {
        let text = match filter {
            None => return Ok(Filter::default()),
            Some(text) if text.trim_start().starts_with('{') => text.to_owned(),
            Some(id) => stored(storage, user_id, id)?
                .ok_or_else(|| Error::new(ErrorKind::InvalidParam, "No such filter"))?,
        };
        Filter::parse(&text).map_err(|err| {
            Error::new(
                ErrorKind::InvalidParam,
                format!("The filter is not valid: {err}"),
            )
        })
    }

    /// The event with only the fields `event_fields` names (all of them without it).
    pub(crate) fn project(&self, event: Value) -> Value {
        match &self.event_fields {
            Some(fields) => project(&event, fields),
            None => event,
        }
    }
}

/// Copies the fields at `paths` (dotted, `\.` for a literal dot) from `event` into a new
/// object; paths that lead nowhere are skipped.
fn project(event: &Value, paths: &[String]) -> Value {
    let mut out = Value::Object(Map::new());
    for path in paths {
        let parts = split_path(path);
        let mut source = event;
        let mut found = true;
        for part in &parts {
            match source.get(part.as_str()) {
                Some(next) => source = next,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if !found || parts.is_empty() {
            continue;
        }
        let mut target = &mut out;
        for part in &parts[..parts.len() - 1] {
            let object = match target {
                Value::Object(object) => object,
                _ => break,
            };
            target = object
                .entry(part.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        }
        if let (Value::Object(object), Some(last)) = (target, parts.last()) {
            object.insert(last.clone(), source.clone());
        }
    }
    out
}

/// `content.m\.relates_to` → `["content", "m.relates_to"]`.
fn split_path(path: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next()
                    && let Some(part) = parts.last_mut()
                {
                    part.push(next);
                }
            }
            '.' => parts.push(String::new()),
            other => {
                if let Some(part) = parts.last_mut() {
                    part.push(other);
                }
            }
        }
    }
    parts.retain(|part| !part.is_empty());
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wildcards_match_any_run_of_characters() {
        assert!(glob_matches("m.*", "m.room.message"));
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("m.*.message", "m.room.message"));
        assert!(glob_matches("m.room.message", "m.room.message"));
        assert!(!glob_matches("m.room.message", "m.room.messages"));
        assert!(!glob_matches("m.*.topic", "m.room.message"));
        assert!(!glob_matches("*ab*ab", "xab"));
    }

    #[test]
    fn not_lists_win_over_allow_lists() {
        let filter: RoomEventFilter = serde_json::from_value(json!({
            "types": ["m.*"], "not_types": ["m.room.member"], "not_senders": ["@spam:x"]
        }))
        .expect("filter");
        assert!(filter.allows(&json!({ "type": "m.room.message", "sender": "@a:x" })));
        assert!(!filter.allows(&json!({ "type": "m.room.member", "sender": "@a:x" })));
        assert!(!filter.allows(&json!({ "type": "m.room.message", "sender": "@spam:x" })));
        assert!(!filter.allows(&json!({ "type": "org.other", "sender": "@a:x" })));
    }

    #[test]
    fn contains_url_selects_by_content_url() {
        let only_urls: RoomEventFilter =
            serde_json::from_value(json!({ "contains_url": true })).expect("filter");
        assert!(
            only_urls
                .allows(&json!({ "type": "m.room.message", "content": { "url": "mxc://x/y" } }))
        );
        assert!(
            !only_urls.allows(&json!({ "type": "m.room.message", "content": { "body": "hi" } }))
        );
    }

    #[test]
    fn wrong_types_are_refused_and_unknown_fields_ignored() {
        assert!(Filter::parse(r#"{"room":{"timeline":{"limit":"ten"}}}"#).is_err());
        assert!(Filter::parse(r#"{"room":{"rooms":"!a:x"}}"#).is_err());
        let filter = Filter::parse(r#"{"org.example.new":1,"room":{"timeline":{"limit":5}}}"#)
            .expect("filter");
        assert_eq!(filter.room.timeline.limit_or(10), 5);
        assert_eq!(Filter::default().room.timeline.limit_or(10), 10);
        let huge = Filter::parse(r#"{"room":{"timeline":{"limit":100000}}}"#).expect("filter");
        assert_eq!(
            huge.room.timeline.limit_or(10),
            usize::try_from(MAX_LIMIT).expect("fits")
        );
    }

    #[test]
    fn event_fields_keep_only_the_named_paths() {
        let event = json!({
            "type": "m.room.message", "sender": "@a:x", "event_id": "$e",
            "content": { "body": "hi", "m.relates_to": { "rel_type": "m.thread" } }
        });
        let filter = Filter {
            event_fields: Some(vec![
                "type".into(),
                "content.body".into(),
                "content.m\\.relates_to".into(),
                "nowhere.at.all".into(),
            ]),
            ..Filter::default()
        };
        assert_eq!(
            filter.project(event),
            json!({ "type": "m.room.message",
                    "content": { "body": "hi", "m.relates_to": { "rel_type": "m.thread" } } })
        );
    }
}

#[cfg(test)]
#[path = "filter_props.rs"]
mod props;
