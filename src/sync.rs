//! `/sync`: everything that happened in a user's rooms since a position of the global stream.
//!
//! A token is a stream position. A request waits (long-polls) on the room service's
//! notifier when there is nothing new yet, and answers as soon as anything is appended.
//!
//! What is not built yet, and so not sent:
//! to-device messages, device lists, unread counts; filters are accepted but only the
//! timeline `limit` is honoured. The `state` of a room is its current state minus what the
//! timeline carries (the state at the start of the timeline needs per-event state
//! snapshots, which come with federation).

use std::collections::HashMap;
use std::time::Duration;

use ruma::{RoomId, UserId};
use serde_json::{Map, Value, json};

use crate::account_data;
use crate::error::Error;
use crate::rooms::format::{client_event, stored_event_for_client, stripped_event};
use crate::rooms::{self, MembershipRecord, load_json};
use crate::state::AppState;
use crate::storage::StorageError;

/// The longest a request waits for something new.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);
/// Timeline events per room when the client does not say.
pub const DEFAULT_TIMELINE_LIMIT: usize = 10;
/// The most timeline events per room a client may ask for (events are up to 64 KiB each).
pub const MAX_TIMELINE_LIMIT: usize = 100;

/// The state events an invited user is shown about the room (spec: "stripped state").
const INVITE_STATE_TYPES: [&str; 7] = [
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
];

/// An event of a room's timeline: its stream position, ID, and client form.
pub type TimelineEvent = (u64, String, Value);

#[derive(Debug, Clone)]
pub struct SyncRequest {
    /// The stream position of the last sync.
    pub since: Option<u64>,
    /// The typing serial of the last sync.
    pub since_typing: u64,
    pub timeout: Duration,
    pub full_state: bool,
    pub timeline_limit: usize,
    /// The requesting device: its own messages carry their transaction IDs.
    pub device_id: String,
    /// How this sync marks the user: `online` (the default), `unavailable`, or `offline`
    /// (not marked at all).
    pub set_presence: String,
}

/// Answers a sync, waiting up to `request.timeout` for news when there is none.
pub async fn sync(
    state: &AppState,
    user_id: &UserId,
    request: &SyncRequest,
) -> Result<Value, Error> {
    let mut changes = state.rooms.subscribe();
    let mut typing = state.ephemeral.subscribe();
    if request.set_presence != "offline" {
        state
            .ephemeral
            .set_presence(user_id, &request.set_presence, None);
    }
    state.ephemeral.expire();
    let upto = *changes.borrow_and_update();
    typing.borrow_and_update();
    let (response, news) = build(state, user_id, request, upto)?;
    if news || request.since.is_none() || request.timeout.is_zero() {
        return Ok(response);
    }
    let deadline = tokio::time::Instant::now() + request.timeout.min(MAX_TIMEOUT);
    loop {
        let woken = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                changed = changes.changed() => changed.is_ok(),
                changed = typing.changed() => changed.is_ok(),
            }
        })
        .await;
        let upto = *changes.borrow_and_update();
        typing.borrow_and_update();
        let (response, news) = build(state, user_id, request, upto)?;
        // Something for this user, or time is up (or the server is stopping).
        if news || !matches!(woken, Ok(true)) {
            return Ok(response);
        }
    }
}

/// A sync token: the stream position and the typing serial, `"{position}_{serial}"`.
pub fn parse_token(token: &str) -> Option<(u64, u64)> {
    match token.split_once('_') {
        Some((position, serial)) => Some((position.parse().ok()?, serial.parse().ok()?)),
        None => Some((token.parse().ok()?, 0)),
    }
}

/// The response for positions after `since` up to `upto`, and whether it holds anything.
fn build(
    state: &AppState,
    user_id: &UserId,
    request: &SyncRequest,
    upto: u64,
) -> Result<(Value, bool), Error> {
    let typing_serial = state.ephemeral.serial();
    let mut join = Map::new();
    let mut invite = Map::new();
    let mut leave = Map::new();
    let mut knock = Map::new();
    let mut global_data = Vec::new();
    let mut room_data: HashMap<String, Vec<Value>> = HashMap::new();
    for (scope, kind, content) in account_data::changes(state, user_id, request.since, upto)? {
        let event = json!({ "type": kind, "content": content });
        if scope.is_empty() {
            global_data.push(event);
        } else {
            room_data.entry(scope).or_default().push(event);
        }
    }
    for (room_id, record) in rooms::memberships(&state.storage, user_id)? {
        // Positions past `upto` belong to the next sync.
        if record.stream > upto {
            continue;
        }
        let changed_since = request.since.is_none_or(|since| record.stream > since);
        match record.membership.as_str() {
            "join" => {
                let data = room_data.remove(room_id.as_str()).unwrap_or_default();
                let newly_joined = request
                    .since
                    .is_none_or(|since| record.joined_stream.is_some_and(|joined| joined > since));
                let ephemeral =
                    ephemeral_events(state, &room_id, user_id, request, upto, newly_joined)?;
                if let Some(room) =
                    joined_room(state, &room_id, &record, request, upto, data, ephemeral)?
                {
                    join.insert(room_id.to_string(), room);
                }
            }
            "invite" if changed_since => {
                invite.insert(room_id.to_string(), invited_room(state, &room_id, &record)?);
            }
            "knock" if changed_since => {
                let stripped = invited_room(state, &room_id, &record)?;
                knock.insert(
                    room_id.to_string(),
                    json!({ "knock_state": stripped["invite_state"] }),
                );
            }
            "leave" | "ban" if request.since.is_some() && changed_since => {
                leave.insert(
                    room_id.to_string(),
                    left_room(state, &room_id, &record, request)?,
                );
            }
            _ => {}
        }
    }
    let news = !(join.is_empty()
        && invite.is_empty()
        && leave.is_empty()
        && knock.is_empty()
        && global_data.is_empty());
    let presence = presence_events(state, user_id, request.since.map(|_| request.since_typing))?;
    let news = news || !presence.is_empty();
    let response = json!({
        "next_batch": format!("{upto}_{typing_serial}"),
        "rooms": { "join": join, "invite": invite, "leave": leave, "knock": knock },
        "account_data": { "events": global_data },
        "presence": { "events": presence },
        "to_device": { "events": [] },
    });
    Ok((response, news))
}

/// The first stream position a member may read in a room: everything under `shared` and
/// `world_readable` history; from their invite or join under `invited`; from their join
/// under `joined`. (The visibility in force now is applied to the whole history; per-event
/// visibility needs the state at each event, which comes with federation.)
pub fn history_start(
    state: &AppState,
    room_id: &RoomId,
    record: &MembershipRecord,
) -> Result<u64, StorageError> {
    let visibility =
        rooms::state_content(&state.storage, room_id, "m.room.history_visibility", "")?
            .and_then(|content| {
                content
                    .get("history_visibility")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "shared".to_owned());
    Ok(match visibility.as_str() {
        "joined" => record.joined_stream.unwrap_or(u64::MAX),
        "invited" => match (record.invited_stream, record.joined_stream) {
            (Some(invited), Some(joined)) => invited.min(joined),
            (invited, joined) => invited.or(joined).unwrap_or(u64::MAX),
        },
        _ => 0,
    })
}

fn joined_room(
    state: &AppState,
    room_id: &RoomId,
    record: &MembershipRecord,
    request: &SyncRequest,
    upto: u64,
    account_data: Vec<Value>,
    ephemeral: Vec<Value>,
) -> Result<Option<Value>, Error> {
    // A room is new to this sync when the user joined since the last one; a repeated join
    // (a profile change) is not.
    let newly_joined = request
        .since
        .is_none_or(|since| record.joined_stream.is_some_and(|joined| joined > since));
    let start = history_start(state, room_id, record)?;
    let after = if newly_joined {
        start.saturating_sub(1)
    } else {
        request.since.unwrap_or(0).max(start.saturating_sub(1))
    };
    let (timeline, limited) = timeline(
        state,
        room_id,
        after,
        upto,
        request.timeline_limit,
        Some(&request.device_id),
    )?;
    if timeline.is_empty()
        && !newly_joined
        && !request.full_state
        && account_data.is_empty()
        && ephemeral.is_empty()
    {
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
        "account_data": { "events": account_data },
        "ephemeral": { "events": ephemeral },
    })))
}

/// The presence of everyone the user shares a room with (themselves included) that changed
/// after `since` (everyone's, on a first sync).
fn presence_events(
    state: &AppState,
    user_id: &UserId,
    since: Option<u64>,
) -> Result<Vec<Value>, StorageError> {
    let since = since.unwrap_or(0);
    if state.ephemeral.serial() <= since {
        return Ok(Vec::new());
    }
    let mut users = std::collections::BTreeSet::new();
    users.insert(user_id.to_owned());
    for (room_id, record) in rooms::memberships(&state.storage, user_id)? {
        if record.membership != "join" {
            continue;
        }
        for ((kind, member), _) in rooms::current_state(&state.storage, &room_id)? {
            if kind == "m.room.member"
                && let Ok(member) = ruma::OwnedUserId::try_from(member)
                && rooms::membership(&state.storage, &member, &room_id)?
                    .is_some_and(|r| r.membership == "join")
            {
                users.insert(member);
            }
        }
    }
    Ok(state
        .ephemeral
        .presence_changed_since(users.iter().map(|user| user.as_ref()), since)
        .into_iter()
        .map(|(user, presence)| json!({ "type": "m.presence", "sender": user, "content": presence.to_json() }))
        .collect())
}

/// Typing (when it changed since the last sync) and receipts (changed since then).
fn ephemeral_events(
    state: &AppState,
    room_id: &RoomId,
    viewer: &UserId,
    request: &SyncRequest,
    upto: u64,
    newly_joined: bool,
) -> Result<Vec<Value>, StorageError> {
    let mut events = Vec::new();
    // A token from before a restart may be ahead of the new serial: read it as "nothing".
    let since_typing = if newly_joined || request.since_typing > state.ephemeral.serial() {
        0
    } else {
        request.since_typing
    };
    if let Some(typing) = state.ephemeral.typing_changed_since(room_id, since_typing) {
        events.push(json!({ "type": "m.typing", "content": { "user_ids": typing } }));
    }
    let since = if newly_joined { None } else { request.since };
    if let Some(receipts) = crate::receipts::changes(state, room_id, viewer, since, upto)? {
        events.push(receipts);
    }
    Ok(events)
}

/// The newest `limit` events of the room with positions in `(after, upto]`, oldest first,
/// and whether older ones in that span were left out. Events sent by `device` carry their
/// transaction IDs.
pub fn timeline(
    state: &AppState,
    room_id: &RoomId,
    after: u64,
    upto: u64,
    limit: usize,
    device: Option<&str>,
) -> Result<(Vec<TimelineEvent>, bool), StorageError> {
    let room = room_id.to_string();
    let mut events = Vec::new();
    let mut limited = false;
    if after >= upto {
        return Ok((events, limited));
    }
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
        if let Some(event) = client_form(state, &event_id, None, device)? {
            events.push((position, event_id, event));
        }
    }
    events.reverse();
    Ok((events, limited))
}

/// The client form of a stored event, as [`stored_event_for_client`] makes it.
pub fn client_form(
    state: &AppState,
    event_id: &str,
    room_id: Option<&str>,
    device: Option<&str>,
) -> Result<Option<Value>, StorageError> {
    stored_event_for_client(&state.storage, event_id, room_id, device)
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
            events.push(client_event(&json, &event_id, None));
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

/// A room the user left (or was kicked or banned from) since the last sync. A former member
/// sees what happened up to their departure; someone who was never in (an invite declined
/// or withdrawn, a ban in advance) sees only their own membership event.
fn left_room(
    state: &AppState,
    room_id: &RoomId,
    record: &MembershipRecord,
    request: &SyncRequest,
) -> Result<Value, Error> {
    let (events, limited, prev_batch) = if record.joined_stream.is_some() {
        let start = history_start(state, room_id, record)?;
        let after = request.since.unwrap_or(0).max(start.saturating_sub(1));
        let (timeline, limited) = timeline(
            state,
            room_id,
            after,
            record.stream,
            request.timeline_limit,
            Some(&request.device_id),
        )?;
        let prev_batch = timeline
            .first()
            .map_or(record.stream, |(position, _, _)| *position)
            .saturating_sub(1);
        (
            timeline
                .into_iter()
                .map(|(_, _, event)| event)
                .collect::<Vec<_>>(),
            limited,
            prev_batch,
        )
    } else {
        let own = client_form(state, &record.event_id, None, None)?
            .into_iter()
            .collect();
        (own, false, record.stream.saturating_sub(1))
    };
    Ok(json!({
        "timeline": { "events": events, "limited": limited, "prev_batch": prev_batch.to_string() },
        "state": { "events": [] },
        "account_data": { "events": [] },
    }))
}
