//! `/sync`: everything that happened in a user's rooms since a position of the global stream.
//!
//! A token is a stream position. A request waits (long-polls) on the room service's
//! notifier when there is nothing new yet, and answers as soon as anything is appended.
//!
//! What is not built yet, and so not sent: account data, typing, receipts, presence,
//! to-device messages, device lists, unread counts; filters are accepted but only the
//! timeline `limit` is honoured. The `state` of a room is its current state minus what the
//! timeline carries (the state at the start of the timeline needs per-event state
//! snapshots, which come with federation).

use std::time::Duration;

use ruma::{RoomId, UserId};
use serde_json::{Map, Value, json};

use crate::error::Error;
use crate::rooms::format::{client_event, stripped_event};
use crate::rooms::{self, MembershipRecord, load_json};
use crate::state::AppState;
use crate::storage::StorageError;

/// The longest a request waits for something new.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);
/// Timeline events per room when the client does not say.
pub const DEFAULT_TIMELINE_LIMIT: usize = 10;
/// The most timeline events per room a client may ask for.
pub const MAX_TIMELINE_LIMIT: usize = 500;

/// The state events an invited user is shown about the room (spec: "stripped state").
const INVITE_STATE_TYPES: [&str; 6] = [
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
];

/// An event of a room's timeline: its stream position, ID, and client form.
pub type TimelineEvent = (u64, String, Value);

#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub since: Option<u64>,
    pub timeout: Duration,
    pub full_state: bool,
    pub timeline_limit: usize,
}

/// Answers a sync, waiting up to `request.timeout` for news when there is none.
pub async fn sync(
    state: &AppState,
    user_id: &UserId,
    request: &SyncRequest,
) -> Result<Value, Error> {
    let mut changes = state.rooms.subscribe();
    let upto = state.rooms.visible_position();
    let (response, news) = build(state, user_id, request, upto)?;
    if news || request.since.is_none() || request.timeout.is_zero() {
        return Ok(response);
    }
    let deadline = tokio::time::Instant::now() + request.timeout.min(MAX_TIMEOUT);
    loop {
        let changed = tokio::time::timeout_at(deadline, changes.changed()).await;
        let upto = state.rooms.visible_position();
        let (response, news) = build(state, user_id, request, upto)?;
        // Something for this user, or time is up (or the server is stopping).
        if news || !matches!(changed, Ok(Ok(()))) {
            return Ok(response);
        }
    }
}

/// The response for positions after `since` up to `upto`, and whether it holds anything.
fn build(
    state: &AppState,
    user_id: &UserId,
    request: &SyncRequest,
    upto: u64,
) -> Result<(Value, bool), Error> {
    let mut join = Map::new();
    let mut invite = Map::new();
    let mut leave = Map::new();
    for (room_id, record) in rooms::memberships(&state.storage, user_id)? {
        let changed_since = request.since.is_none_or(|since| record.stream > since);
        match record.membership.as_str() {
            "join" => {
                if let Some(room) = joined_room(state, &room_id, &record, request, upto)? {
                    join.insert(room_id.to_string(), room);
                }
            }
            "invite" if changed_since && record.stream <= upto => {
                invite.insert(room_id.to_string(), invited_room(state, &room_id, &record)?);
            }
            "leave" | "ban"
                if request.since.is_some() && changed_since && record.stream <= upto =>
            {
                leave.insert(
                    room_id.to_string(),
                    left_room(state, &room_id, &record, request)?,
                );
            }
            _ => {}
        }
    }
    let news = !(join.is_empty() && invite.is_empty() && leave.is_empty());
    let response = json!({
        "next_batch": upto.to_string(),
        "rooms": { "join": join, "invite": invite, "leave": leave },
        "account_data": { "events": [] },
        "presence": { "events": [] },
        "to_device": { "events": [] },
    });
    Ok((response, news))
}

fn joined_room(
    state: &AppState,
    room_id: &RoomId,
    record: &MembershipRecord,
    request: &SyncRequest,
    upto: u64,
) -> Result<Option<Value>, Error> {
    let newly_joined = request.since.is_none_or(|since| record.stream > since);
    let after = if newly_joined {
        0
    } else {
        request.since.unwrap_or(0)
    };
    let (timeline, limited) = timeline(state, room_id, after, upto, request.timeline_limit)?;
    if timeline.is_empty() && !newly_joined && !request.full_state {
        return Ok(None);
    }
    let timeline_start = timeline
        .first()
        .map_or(upto + 1, |(position, _, _)| *position);
    let state_events = if newly_joined || request.full_state || limited {
        let since = if newly_joined || request.full_state {
            0
        } else {
            after
        };
        state_between(state, room_id, since, timeline_start)?
    } else {
        Vec::new()
    };
    let prev_batch = timeline_start.saturating_sub(1).to_string();
    let events: Vec<Value> = timeline.into_iter().map(|(_, _, event)| event).collect();
    Ok(Some(json!({
        "timeline": { "events": events, "limited": limited, "prev_batch": prev_batch },
        "state": { "events": state_events },
        "account_data": { "events": [] },
        "ephemeral": { "events": [] },
    })))
}

/// The newest `limit` events of the room with positions in `(after, upto]`, oldest first,
/// and whether older ones in that span were left out.
pub fn timeline(
    state: &AppState,
    room_id: &RoomId,
    after: u64,
    upto: u64,
    limit: usize,
) -> Result<(Vec<TimelineEvent>, bool), StorageError> {
    let room = room_id.to_string();
    let mut events = Vec::new();
    let mut limited = false;
    let range = state
        .storage
        .roomstream_eventid
        .range(&(room.clone(), after.saturating_add(1)), &(room, upto));
    for entry in range.rev() {
        let ((_, position), event_id) = entry?;
        if events.len() == limit {
            limited = true;
            break;
        }
        if let Some(json) = load_json(&state.storage, &event_id)? {
            events.push((
                position,
                event_id.clone(),
                client_event(&json, &event_id, false),
            ));
        }
    }
    events.reverse();
    Ok((events, limited))
}

/// The room's current state events that were sent after `after` and before `before`.
fn state_between(
    state: &AppState,
    room_id: &RoomId,
    after: u64,
    before: u64,
) -> Result<Vec<Value>, StorageError> {
    let mut events = Vec::new();
    for (_, event_id) in rooms::current_state(&state.storage, room_id)? {
        let Some(meta) = state.storage.eventid_meta.get(&event_id)? else {
            continue;
        };
        if meta.stream <= after || meta.stream >= before {
            continue;
        }
        if let Some(json) = load_json(&state.storage, &event_id)? {
            events.push(client_event(&json, &event_id, false));
        }
    }
    Ok(events)
}

fn invited_room(
    state: &AppState,
    room_id: &RoomId,
    record: &MembershipRecord,
) -> Result<Value, Error> {
    let mut events = Vec::new();
    for kind in INVITE_STATE_TYPES {
        if let Some(event_id) = rooms::state_event(&state.storage, room_id, kind, "")?
            && let Some(json) = load_json(&state.storage, &event_id)?
        {
            events.push(stripped_event(&json));
        }
    }
    if let Some(json) = load_json(&state.storage, &record.event_id)? {
        // The inviter's own membership, then the invite itself.
        if let Some(inviter) = json.get("sender").and_then(|sender| sender.as_str())
            && let Some(event_id) =
                rooms::state_event(&state.storage, room_id, "m.room.member", inviter)?
            && let Some(member) = load_json(&state.storage, &event_id)?
        {
            events.push(stripped_event(&member));
        }
        events.push(stripped_event(&json));
    }
    Ok(json!({ "invite_state": { "events": events } }))
}

fn left_room(
    state: &AppState,
    room_id: &RoomId,
    record: &MembershipRecord,
    request: &SyncRequest,
) -> Result<Value, Error> {
    let after = request.since.unwrap_or(0);
    let (timeline, limited) =
        timeline(state, room_id, after, record.stream, request.timeline_limit)?;
    let prev_batch = timeline
        .first()
        .map_or(record.stream, |(position, _, _)| *position)
        .saturating_sub(1)
        .to_string();
    let events: Vec<Value> = timeline.into_iter().map(|(_, _, event)| event).collect();
    Ok(json!({
        "timeline": { "events": events, "limited": limited, "prev_batch": prev_batch },
        "state": { "events": [] },
        "account_data": { "events": [] },
    }))
}
