//! What a search result may carry around it: the events just before and after it (with the
//! senders' profiles as they were then), and the state of the rooms results come from.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::scan::Window;
use crate::error::Error;
use crate::rooms::timeline::{Reader, client_form, timeline_form};
use crate::rooms::{self, history};
use crate::storage::{Storage, StorageError};

/// Context events per side when the client does not say (the spec's default).
const DEFAULT_CONTEXT: u64 = 5;
/// The most context events per side: each result's context loads them all.
const MAX_CONTEXT: u64 = 20;

/// `event_context` of a search request.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct EventContext {
    pub(crate) before_limit: Option<u64>,
    pub(crate) after_limit: Option<u64>,
    pub(crate) include_profile: Option<bool>,
}

/// The `context` of a result at `position` in `window`'s room: up to `before_limit` events
/// before it (nearest first, as `/context` gives them) and `after_limit` after it, only
/// from what the user may read there; `start` and `end` are `/messages` tokens (a stream
/// position: backwards from `start` reads what precedes the context, forwards from `end`
/// what follows it).
pub(crate) fn event_context(
    storage: &Storage,
    reader: Reader<'_>,
    window: &Window,
    (position, result): (u64, &Value),
    wanted: &EventContext,
) -> Result<Value, Error> {
    let room = window.room_id.as_str();
    let before_n = wanted
        .before_limit
        .unwrap_or(DEFAULT_CONTEXT)
        .min(MAX_CONTEXT) as usize;
    let after_n = wanted
        .after_limit
        .unwrap_or(DEFAULT_CONTEXT)
        .min(MAX_CONTEXT) as usize;
    let mut before = Vec::new();
    if before_n > 0 && position > window.from {
        let range = storage.roomstream_eventid.range(
            &(room.to_owned(), window.from),
            &(room.to_owned(), position - 1),
        );
        read_events(storage, reader, room, range.rev(), before_n, &mut before)?;
    }
    let mut after = Vec::new();
    if after_n > 0 && position < window.visible_until {
        let range = storage.roomstream_eventid.range(
            &(room.to_owned(), position + 1),
            &(room.to_owned(), window.visible_until),
        );
        read_events(storage, reader, room, range, after_n, &mut after)?;
    }
    let start = before
        .last()
        .map_or(position, |(at, _)| *at)
        .saturating_sub(1);
    let end = after.last().map_or(position, |(at, _)| *at);
    let before: Vec<Value> = before.into_iter().map(|(_, event)| event).collect();
    let after: Vec<Value> = after.into_iter().map(|(_, event)| event).collect();
    let mut context = json!({
        "events_before": before,
        "events_after": after,
        "start": start.to_string(),
        "end": end.to_string(),
    });
    if wanted.include_profile == Some(true) {
        let senders: BTreeSet<&str> = before
            .iter()
            .chain(&after)
            .chain(std::iter::once(result))
            .filter_map(|event| event["sender"].as_str())
            .collect();
        context["profile_info"] = profiles_at(storage, window, &senders, position)?;
    }
    Ok(context)
}

/// Up to `n` events of `entries`, in their order, in client form for `reader`.
fn read_events(
    storage: &Storage,
    reader: Reader<'_>,
    room: &str,
    entries: impl Iterator<Item = Result<((String, u64), String), StorageError>>,
    n: usize,
    out: &mut Vec<(u64, Value)>,
) -> Result<(), StorageError> {
    for entry in entries {
        if out.len() == n {
            break;
        }
        let ((_, position), event_id) = entry?;
        if let Some(event) = timeline_form(storage, &event_id, Some(room), Some(reader))? {
            out.push((position, event));
        }
    }
    Ok(())
}

/// `profile_info`: each sender's display name and avatar from their member event as of
/// `position`, the profile the room showed when the result was sent (not today's).
fn profiles_at(
    storage: &Storage,
    window: &Window,
    senders: &BTreeSet<&str>,
    position: u64,
) -> Result<Value, StorageError> {
    let mut profiles = Map::new();
    for sender in senders {
        let member = history::entry_at(
            storage,
            &window.room_id,
            ("m.room.member", sender),
            position,
        )?;
        let content = match member {
            Some(event_id) => client_form(storage, &event_id, None, None)?
                .map(|event| event["content"].clone())
                .unwrap_or_default(),
            None => Value::Null,
        };
        let mut profile = Map::new();
        for field in ["displayname", "avatar_url"] {
            if let Some(value) = content[field].as_str() {
                profile.insert(field.to_owned(), json!(value));
            }
        }
        profiles.insert((*sender).to_owned(), Value::Object(profile));
    }
    Ok(Value::Object(profiles))
}

/// `state` for `include_state`: the state of a room the user is in now, or of a room they
/// left as it was when they left (what happened after is not theirs to see).
pub(crate) fn room_state(storage: &Storage, window: &Window) -> Result<Vec<Value>, StorageError> {
    let entries = if window.joined {
        rooms::current_state(storage, &window.room_id)?
    } else {
        history::state_at(storage, &window.room_id, window.visible_until)?
    };
    let mut events = Vec::new();
    for (_, event_id) in entries {
        if let Some(event) = client_form(storage, &event_id, Some(window.room_id.as_str()), None)? {
            events.push(event);
        }
    }
    Ok(events)
}
