//! Reading a room's timeline as one reader may see it: the newest events a filter lets
//! through in a span of stream positions, each checked against the reader's history
//! visibility, in client form with transaction IDs and bundled aggregations. `/sync`,
//! `/messages`, `/context` and `/search` all read timelines through here.

use std::collections::BTreeSet;

use ruma::RoomId;
use serde_json::Value;

use super::format::stored_event_for_client;
use super::visibility::Visibility;
use super::{MembershipRecord, history, load_json};
use crate::storage::{Storage, StorageError};
use crate::users::filter::RoomEventFilter;

/// A sync or pagination token: the stream position and the typing serial, `"{position}_{serial}"`.
pub(crate) fn parse_token(token: &str) -> Option<(u64, u64)> {
    match token.split_once('_') {
        Some((position, serial)) => Some((position.parse().ok()?, serial.parse().ok()?)),
        None => Some((token.parse().ok()?, 0)),
    }
}

/// Timeline events per room when the client does not say.
pub(crate) const DEFAULT_TIMELINE_LIMIT: u64 = 10;

/// Who reads a timeline: their own events carry the device's transaction IDs, and
/// bundled thread summaries say whether they took part.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    pub(crate) user_id: &'a str,
    pub(crate) device_id: &'a str,
}

/// An event of a room's timeline: its stream position, ID, and client form.
pub(crate) type TimelineEvent = (u64, String, Value);

/// The first stream position a member may read in a room (`u64::MAX` if none), by the
/// visibility rules applied to each event ([`super::visibility`]). Scans stop there; each
/// event after it is still checked on its own.
pub(crate) fn history_start(
    storage: &Storage,
    room_id: &RoomId,
    record: &MembershipRecord,
) -> Result<u64, StorageError> {
    let user = load_json(storage, &record.event_id)?
        .and_then(|json| json.get("state_key")?.as_str().map(str::to_owned))
        .unwrap_or_default();
    Ok(Visibility::for_user(storage, room_id, &user)?.first_visible())
}

/// The most events one timeline request examines: a filter that matches little, or history
/// the reader may not see, must not make one request walk a whole room.
pub(crate) const MAX_EXAMINED: usize = 1000;

/// A stretch of a room's timeline as one reader sees it.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    /// The events, oldest first.
    pub(crate) events: Vec<TimelineEvent>,
    /// Whether events in the span were left unexamined (older ones reading backwards,
    /// newer ones reading forwards).
    pub(crate) limited: bool,
    /// The position of the oldest event examined: everything from there up was looked at,
    /// so the next page back ends just before it.
    pub(crate) examined_from: u64,
    /// The position of the newest event examined (reading forwards): the next page
    /// forwards starts after it.
    pub(crate) examined_to: u64,
}

impl Timeline {}

/// Which end of a span a timeline read starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// From the newest event back (`/sync`, `/messages?dir=b`, the events before a context).
    Backward,
    /// From the oldest event on (`/messages?dir=f`, the events after a context).
    Forward,
}

/// The newest events of the room that `filter` lets through (at most its limit) with
/// positions in `(after, upto]`, oldest first. Only events the reader may see are shown;
/// events sent by their device carry transaction IDs, and every event shown its bundled
/// aggregations. At most [`MAX_EXAMINED`] events are looked at.
pub(crate) fn timeline(
    storage: &Storage,
    room_id: &RoomId,
    span: (u64, u64),
    filter: &RoomEventFilter,
    reader: Option<Reader<'_>>,
) -> Result<Timeline, StorageError> {
    let limit = filter.limit_or(DEFAULT_TIMELINE_LIMIT);
    scan(
        storage,
        room_id,
        span,
        (filter, limit),
        reader,
        Direction::Backward,
    )
}

/// The events of the room in `(after, upto]` that `filter` lets through, at most `limit`,
/// read from the end `direction` names, oldest first in the answer. Only events the reader
/// may see are shown, in client form with their transaction IDs and bundled aggregations.
/// At most [`MAX_EXAMINED`] events are looked at: `limited` says the scan stopped before
/// the far end of the span, and `examined_from`/`examined_to` where.
///
/// The one scan of a room's timeline: every reader of a stretch of timeline comes here, so
/// the visibility check, the filter and the bound on the work are the same everywhere.
pub(crate) fn scan(
    storage: &Storage,
    room_id: &RoomId,
    (after, upto): (u64, u64),
    (filter, limit): (&RoomEventFilter, usize),
    reader: Option<Reader<'_>>,
    direction: Direction,
) -> Result<Timeline, StorageError> {
    let room = room_id.to_string();
    let mut timeline = Timeline {
        examined_from: upto.saturating_add(1),
        examined_to: after,
        ..Timeline::default()
    };
    if after >= upto {
        return Ok(timeline);
    }
    let visibility = match reader {
        Some(reader) => Some(Visibility::for_user(storage, room_id, reader.user_id)?),
        None => None,
    };
    let range = storage
        .roomstream_eventid
        .range(&(room.clone(), after.saturating_add(1)), &(room, upto));
    let entries: Box<dyn Iterator<Item = _>> = match direction {
        Direction::Backward => Box::new(range.rev()),
        Direction::Forward => Box::new(range),
    };
    for (examined, entry) in entries.enumerate() {
        let ((_, position), event_id) = entry?;
        if timeline.events.len() == limit || examined == MAX_EXAMINED {
            timeline.limited = true;
            break;
        }
        match direction {
            Direction::Backward => timeline.examined_from = position,
            Direction::Forward => timeline.examined_to = position,
        }
        if visibility
            .as_ref()
            .is_some_and(|view| !view.allows(position))
        {
            continue;
        }
        // The filter looks at the plain event; only events kept get their aggregations.
        let Some(event) = client_form(storage, &event_id, None, reader.map(|r| r.device_id))?
        else {
            continue;
        };
        if !filter.allows(&event) {
            continue;
        }
        let event = with_aggregations(storage, event, reader)?;
        timeline.events.push((position, event_id, event));
    }
    if direction == Direction::Backward {
        timeline.events.reverse();
    }
    Ok(timeline)
}

/// `event` with its bundled aggregations, as `reader` may see them.
pub(crate) fn with_aggregations(
    storage: &Storage,
    mut event: Value,
    reader: Option<Reader<'_>>,
) -> Result<Value, StorageError> {
    if let Some(reader) = reader {
        super::aggregations::bundle(storage, reader.user_id, &mut event)?;
    }
    Ok(event)
}

/// The member events (as the room's state had them at position `at`) of the senders of
/// `events`, for a client that lazy-loads members while paginating.
pub(crate) fn lazy_loaded_members(
    storage: &Storage,
    room_id: &RoomId,
    events: &[Value],
    at: u64,
) -> Result<Vec<Value>, StorageError> {
    let senders: BTreeSet<&str> = events
        .iter()
        .filter_map(|event| event["sender"].as_str())
        .collect();
    let mut members = Vec::new();
    for sender in senders {
        if let Some(event_id) = history::entry_at(storage, room_id, ("m.room.member", sender), at)?
            && let Some(event) = client_form(storage, &event_id, Some(room_id.as_str()), None)?
        {
            members.push(event);
        }
    }
    Ok(members)
}

/// The client form of a timeline event for `reader`: with its transaction ID when their
/// device sent it, and with its bundled aggregations.
pub(crate) fn timeline_form(
    storage: &Storage,
    event_id: &str,
    room_id: Option<&str>,
    reader: Option<Reader<'_>>,
) -> Result<Option<Value>, StorageError> {
    match client_form(storage, event_id, room_id, reader.map(|r| r.device_id))? {
        Some(event) => with_aggregations(storage, event, reader).map(Some),
        None => Ok(None),
    }
}

/// The client form of a stored event, as [`stored_event_for_client`] makes it.
pub(crate) fn client_form(
    storage: &Storage,
    event_id: &str,
    room_id: Option<&str>,
    device: Option<&str>,
) -> Result<Option<Value>, StorageError> {
    stored_event_for_client(storage, event_id, room_id, device)
}

#[cfg(test)]
#[path = "timeline_props.rs"]
mod props;
