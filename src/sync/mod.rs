//! `/sync`: everything that happened in a user's rooms since a position of the global stream.
//!
//! A token is a stream position. A request waits (long-polls) on the room service's
//! notifier when there is nothing new yet, and answers as soon as anything is appended.
//! Filters choose rooms, event types, senders and fields; member events can be lazy-loaded
//! (only the senders shown); `use_state_after` sends the state at the end of the timeline
//! instead of at its start. Room state at any position comes from [`rooms::history`].
//!
//! To-device messages come from each device's inbox ([`crate::users::to_device`]), deleted
//! when a later sync acknowledges them. `device_lists` (whose devices changed, with whom
//! no room is shared any more) come from [`device_lists`], as does `/keys/changes`.
//!
//! Simplified sliding sync (MSC4186, Element X) is [`sliding`], on the same indexes.
//!
//! Also here: [`receipts`] (who read what, stored) and [`ephemeral`] (typing and presence,
//! in memory with expiry, as the spec lets them be).

pub(crate) mod device_lists;
pub(crate) mod ephemeral;
pub(crate) mod long_polls;
mod notifications;
pub(crate) mod receipts;
pub(crate) mod sliding;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ruma::{RoomId, UserId};
use serde_json::{Map, Value, json};

use crate::error::Error;
use crate::rooms::Rooms;
use crate::rooms::format::stripped_event;
use crate::rooms::timeline::{
    Reader, Timeline, TimelineEvent, client_form, history_start, timeline,
};
use crate::rooms::{self, MembershipRecord, StateEntry, history, load_json};
use crate::storage::{Storage, StorageError};
use crate::users::filter::Filter;
use crate::users::{account_data, keys, to_device};
use ephemeral::Ephemeral;

/// The sync service: the database, the room service (its stream position and notifier),
/// typing and presence, our server's name, and the flag that ends long polls when the server
/// stops.
pub(crate) struct SyncService {
    pub(crate) storage: Arc<Storage>,
    pub(crate) rooms: Arc<Rooms>,
    pub(crate) ephemeral: Arc<Ephemeral>,
    pub(crate) stopping: Arc<tokio::sync::watch::Sender<bool>>,
    pub(crate) our_server: ruma::OwnedServerName,
    /// Sliding sync's connections (in memory, bounded).
    pub(crate) sliding: sliding::Connections,
    /// Requests waiting for news now (for the metrics).
    pub(crate) long_polls: long_polls::LongPolls,
}

/// The longest a request waits for something new.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(120);
#[derive(Debug, Clone)]
pub(crate) struct SyncRequest {
    /// The stream position of the last sync.
    pub(crate) since: Option<u64>,
    /// The typing serial of the last sync.
    pub(crate) since_typing: u64,
    pub(crate) timeout: Duration,
    pub(crate) full_state: bool,
    pub(crate) filter: Filter,
    /// Send `state_after` (the state at the end of the timeline) instead of `state`.
    pub(crate) use_state_after: bool,
    /// The requesting device: its own messages carry their transaction IDs.
    pub(crate) device_id: String,
    /// How this sync marks the user: `online` (the default), `unavailable`, or `offline`
    /// (not marked at all).
    pub(crate) set_presence: String,
}

/// Answers a sync, waiting up to `request.timeout` for news when there is none.
pub(crate) async fn sync(
    service: &SyncService,
    user_id: &UserId,
    request: &SyncRequest,
) -> Result<Value, Error> {
    let mut changes = service.rooms.subscribe();
    let mut typing = service.ephemeral.subscribe();
    let mut stopping = service.stopping.subscribe();
    if request.set_presence != "offline" {
        service
            .ephemeral
            .set_presence(user_id, &request.set_presence, None);
    }
    service.ephemeral.expire();
    // Syncing with a token acknowledges the to-device messages the sync that gave it
    // handed out: they go now, and only now.
    if let Some(since) = request.since {
        to_device::acknowledge(&service.storage, user_id, &request.device_id, since)?;
    }
    let upto = *changes.borrow_and_update();
    typing.borrow_and_update();
    let (response, news) = build(service, user_id, request, upto)?;
    if news || request.since.is_none() || request.timeout.is_zero() || *stopping.borrow() {
        return Ok(response);
    }
    let deadline = tokio::time::Instant::now() + request.timeout.min(MAX_TIMEOUT);
    let _waiting = service.long_polls.sync_waits();
    loop {
        let woken = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                changed = changes.changed() => changed.is_ok(),
                changed = typing.changed() => changed.is_ok(),
                // The server is stopping: answer with what there is.
                _ = stopping.changed() => false,
            }
        })
        .await;
        let upto = *changes.borrow_and_update();
        typing.borrow_and_update();
        let (response, news) = build(service, user_id, request, upto)?;
        // Something for this user, or time is up (or the server is stopping).
        if news || !matches!(woken, Ok(true)) {
            return Ok(response);
        }
    }
}

pub(crate) use crate::rooms::timeline::parse_token;

/// The response for positions after `since` up to `upto`, and whether it holds anything.
fn build(
    service: &SyncService,
    user_id: &UserId,
    request: &SyncRequest,
    upto: u64,
) -> Result<(Value, bool), Error> {
    // With more to-device messages waiting than one answer carries, the answer stops at
    // the last one it holds (everything else in it too): the next token then acknowledges
    // exactly what was handed out.
    let (to_device_events, upto) = to_device::pending(
        &service.storage,
        user_id,
        &request.device_id,
        request.since,
        upto,
    )?;
    let typing_serial = service.ephemeral.serial();
    let mut join = Map::new();
    let mut invite = Map::new();
    let mut leave = Map::new();
    let mut knock = Map::new();
    let mut global_data = Vec::new();
    let mut room_data: HashMap<String, Vec<Value>> = HashMap::new();
    let filter = &request.filter;
    for (scope, kind, content) in
        account_data::changes(&service.storage, user_id, request.since, upto)?
    {
        let event = json!({ "type": kind, "content": content });
        if scope.is_empty() {
            if filter.account_data.allows(&kind, None) {
                global_data.push(event);
            }
        } else if filter.room.account_data.allows(&event) {
            room_data.entry(scope).or_default().push(event);
        }
    }
    let visited = rooms_to_visit(service, user_id, request, upto, room_data.keys())?;
    for (room_id, record) in visited {
        // Positions past `upto` belong to the next sync.
        if record.stream > upto || !filter.room.allows_room(room_id.as_str()) {
            continue;
        }
        let data = room_data.remove(room_id.as_str()).unwrap_or_default();
        let data = if filter.room.account_data.allows_room(room_id.as_str()) {
            data
        } else {
            Vec::new()
        };
        let changed_since = request.since.is_none_or(|since| record.stream > since);
        match record.membership.as_str() {
            "join" => {
                let newly_joined = request
                    .since
                    .is_none_or(|since| record.joined_stream.is_some_and(|joined| joined > since));
                let ephemeral =
                    ephemeral_events(service, &room_id, user_id, request, upto, newly_joined)?;
                let news = RoomNews {
                    account_data: data,
                    ephemeral,
                };
                if let Some(room) =
                    joined_room(service, user_id, &room_id, &record, request, upto, news)?
                {
                    join.insert(room_id.to_string(), room);
                }
            }
            "invite" if changed_since => {
                invite.insert(
                    room_id.to_string(),
                    invited_room(service, &room_id, &record)?,
                );
            }
            "knock" if changed_since => {
                let stripped = invited_room(service, &room_id, &record)?;
                knock.insert(
                    room_id.to_string(),
                    json!({ "knock_state": stripped["invite_state"] }),
                );
            }
            // Rooms left since the last sync; on a first sync, every room left if asked.
            "leave" | "ban"
                if (request.since.is_some() && changed_since)
                    || (request.since.is_none() && filter.room.include_leave) =>
            {
                leave.insert(
                    room_id.to_string(),
                    left_room(service, user_id, &room_id, &record, request, &data)?,
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
    let mut presence = presence_events(
        service,
        user_id,
        request.since.map(|_| request.since_typing),
    )?;
    presence.retain(|event| {
        filter
            .presence
            .allows("m.presence", event["sender"].as_str())
    });

    // Device lists are news only to an incremental sync (a first one looks at every
    // device anyway).
    let device_lists = match request.since {
        Some(since) => device_lists::between(&service.storage, user_id, since, upto)?,
        None => device_lists::DeviceLists::default(),
    };
    let news =
        news || !presence.is_empty() || !to_device_events.is_empty() || !device_lists.is_empty();
    let response = json!({
        "next_batch": format!("{upto}_{typing_serial}"),
        "rooms": { "join": join, "invite": invite, "leave": leave, "knock": knock },
        "account_data": { "events": global_data },
        "presence": { "events": presence },
        "to_device": { "events": to_device_events },
        "device_lists": device_lists.to_json(),
        "device_one_time_keys_count":
            keys::one_time_key_counts(&service.storage, user_id, &request.device_id)?,
        "device_unused_fallback_key_types":
            keys::unused_fallback_types(&service.storage, user_id, &request.device_id)?,
    });
    Ok((response, news))
}

/// The rooms a sync looks at, with the user's membership of each. A first sync (or
/// `full_state`) looks at all of them; an incremental one only at the rooms where
/// something happened since (events, receipts, typing, the user's room account data),
/// found from the stream itself: its cost follows what changed, not how many rooms the
/// user is in.
fn rooms_to_visit<'a>(
    service: &SyncService,
    user_id: &UserId,
    request: &SyncRequest,
    upto: u64,
    room_data: impl Iterator<Item = &'a String>,
) -> Result<Vec<(ruma::OwnedRoomId, MembershipRecord)>, StorageError> {
    let since = match request.since {
        Some(since) if !request.full_state => since,
        _ => return rooms::memberships(&service.storage, user_id),
    };
    let mut changed: BTreeSet<String> = room_data.cloned().collect();
    if since < upto {
        for entry in service.storage.stream_room.range(&(since + 1), &upto) {
            changed.insert(entry?.1);
        }
    }
    let since_typing = if request.since_typing > service.ephemeral.serial() {
        0
    } else {
        request.since_typing
    };
    for room in service.ephemeral.typing_rooms_changed_since(since_typing) {
        changed.insert(room.to_string());
    }
    let mut visited = Vec::new();
    for room in changed {
        let Ok(room_id) = ruma::OwnedRoomId::try_from(room) else {
            continue;
        };
        if let Some(record) = rooms::membership(&service.storage, user_id, &room_id)? {
            visited.push((room_id, record));
        }
    }
    Ok(visited)
}

/// What a room section carries besides its timeline and state.
struct RoomNews {
    account_data: Vec<Value>,
    ephemeral: Vec<Value>,
}

fn joined_room(
    service: &SyncService,
    user_id: &UserId,
    room_id: &RoomId,
    record: &MembershipRecord,
    request: &SyncRequest,
    upto: u64,
    news: RoomNews,
) -> Result<Option<Value>, Error> {
    // A room is new to this sync when the user joined since the last one; a repeated join
    // (a profile change) is not.
    let newly_joined = request
        .since
        .is_none_or(|since| record.joined_stream.is_some_and(|joined| joined > since));
    let start = history_start(&service.storage, room_id, record)?;
    let after = if newly_joined {
        start.saturating_sub(1)
    } else {
        request.since.unwrap_or(0).max(start.saturating_sub(1))
    };
    let room_filter = &request.filter.room;
    let timeline_filter = &room_filter.timeline;
    let Timeline {
        events: timeline,
        limited,
        examined_from,
        ..
    } = if timeline_filter.allows_room(room_id.as_str()) {
        timeline(
            &service.storage,
            room_id,
            (after, upto),
            timeline_filter,
            Some(Reader {
                user_id: user_id.as_str(),
                device_id: &request.device_id,
            }),
        )?
    } else {
        Timeline {
            examined_from: upto.saturating_add(1),
            ..Timeline::default()
        }
    };
    let ephemeral: Vec<Value> = if room_filter.ephemeral.allows_room(room_id.as_str()) {
        news.ephemeral
            .into_iter()
            .filter(|event| room_filter.ephemeral.allows(event))
            .collect()
    } else {
        Vec::new()
    };
    // A receipt of the user's own (another device, a private one) changes their counts.
    let anything_new = !timeline.is_empty()
        || has_events(service, room_id, after, upto)?
        || (!newly_joined
            && crate::sync::receipts::own_changed(
                &service.storage,
                room_id,
                user_id,
                request.since,
                upto,
            )?);
    if !anything_new
        && !newly_joined
        && !request.full_state
        && news.account_data.is_empty()
        && ephemeral.is_empty()
    {
        return Ok(None);
    }
    let timeline_start = timeline
        .first()
        .map_or(upto + 1, |(position, _, _)| *position);
    let full = newly_joined || request.full_state;
    let (state_key, state_events) = state_section(
        service,
        user_id,
        room_id,
        request,
        &StateSpan {
            full,
            after,
            timeline_start,
            end: upto,
        },
        &timeline,
    )?;
    let (counts, thread_counts) = crate::rooms::notifications::unread(
        &service.storage,
        user_id,
        room_id,
        upto,
        timeline_filter.unread_thread_notifications,
    )?;
    let prev_batch = examined_from
        .min(timeline_start)
        .saturating_sub(1)
        .to_string();
    let events: Vec<Value> = timeline
        .into_iter()
        .map(|(_, _, event)| request.filter.project(event))
        .collect();
    let mut room = json!({
        "timeline": { "events": events, "limited": limited, "prev_batch": prev_batch },
        state_key: { "events": state_events },
        "account_data": { "events": news.account_data },
        "ephemeral": { "events": ephemeral },
        "unread_notifications": counts.to_json(),
    });
    if timeline_filter.unread_thread_notifications {
        let threads: Map<String, Value> = thread_counts
            .into_iter()
            .map(|(root, counts)| (root, counts.to_json()))
            .collect();
        room["unread_thread_notifications"] = Value::Object(threads);
    }
    Ok(Some(room))
}

/// Whether any event of the room has a position in `(after, upto]`.
fn has_events(
    service: &SyncService,
    room_id: &RoomId,
    after: u64,
    upto: u64,
) -> Result<bool, StorageError> {
    if after >= upto {
        return Ok(false);
    }
    let room = room_id.to_string();
    Ok(service
        .storage
        .roomstream_eventid
        .range(&(room.clone(), after + 1), &(room, upto))
        .next()
        .transpose()?
        .is_some())
}

/// The stretch of the stream a room section's state covers.
struct StateSpan {
    /// All of the state, not only what changed after `after`.
    full: bool,
    after: u64,
    /// The position of the timeline's first event (the end, plus one, without events).
    timeline_start: u64,
    /// The position the timeline ends at.
    end: u64,
}

/// The room's `state` (up to the timeline's start) or, with `use_state_after`, its
/// `state_after` (up to its end): everything, or what changed after `span.after`. With
/// lazy-loaded members, member events only of the timeline's senders (and the user).
fn state_section(
    service: &SyncService,
    user_id: &UserId,
    room_id: &RoomId,
    request: &SyncRequest,
    span: &StateSpan,
    timeline: &[TimelineEvent],
) -> Result<(&'static str, Vec<Value>), StorageError> {
    let (key, at) = if request.use_state_after {
        ("state_after", span.end)
    } else {
        ("state", span.timeline_start.saturating_sub(1))
    };
    let entries = if span.full {
        history::state_at(&service.storage, room_id, at)?
    } else {
        history::changes_between(&service.storage, room_id, span.after, at)?
    };
    let filter = &request.filter.room.state;
    let entries = if filter.lazy_load_members {
        let mut senders: BTreeSet<String> = timeline
            .iter()
            .filter_map(|(_, _, event)| event["sender"].as_str().map(str::to_owned))
            .collect();
        if span.full {
            senders.insert(user_id.to_string());
        }
        lazy_members(service, room_id, entries, &senders, at)?
    } else {
        entries
    };
    let mut events = Vec::new();
    if !filter.allows_room(room_id.as_str()) {
        return Ok((key, events));
    }
    for (_, event_id) in entries {
        if let Some(event) = client_form(&service.storage, &event_id, None, None)?
            && filter.allows(&event)
        {
            events.push(request.filter.project(event));
        }
    }
    Ok((key, events))
}

/// `entries` with member events kept only for `senders`, and those senders' member events
/// (as of `at`) added where the entries lack them: a client lazy-loading members learns
/// about whoever it is shown speaking.
fn lazy_members(
    service: &SyncService,
    room_id: &RoomId,
    entries: Vec<StateEntry>,
    senders: &BTreeSet<String>,
    at: u64,
) -> Result<Vec<StateEntry>, StorageError> {
    let mut kept: Vec<StateEntry> = entries
        .into_iter()
        .filter(|((kind, key), _)| kind != "m.room.member" || senders.contains(key))
        .collect();
    for sender in senders {
        let present = kept
            .iter()
            .any(|((kind, key), _)| kind == "m.room.member" && key == sender);
        if present {
            continue;
        }
        if let Some(event_id) =
            history::entry_at(&service.storage, room_id, ("m.room.member", sender), at)?
        {
            kept.push((("m.room.member".to_owned(), sender.clone()), event_id));
        }
    }
    Ok(kept)
}

/// The presence of everyone the user shares a room with (themselves included) that changed
/// after `since` (everyone's, on a first sync). Starts from who changed (few) and checks
/// each for a room in common, rather than walking every member of every room.
fn presence_events(
    service: &SyncService,
    user_id: &UserId,
    since: Option<u64>,
) -> Result<Vec<Value>, StorageError> {
    let since = since.unwrap_or(0);
    if service.ephemeral.serial() <= since {
        return Ok(Vec::new());
    }
    let mut events = Vec::new();
    for (other, presence) in service.ephemeral.presence_changes(since) {
        if other != user_id && !service.shares_a_room(user_id, &other)? {
            continue;
        }
        events
            .push(json!({ "type": "m.presence", "sender": other, "content": presence.to_json() }));
    }
    events.sort_by(|a, b| a["sender"].as_str().cmp(&b["sender"].as_str()));
    Ok(events)
}

impl SyncService {
    /// Whether both users are joined to some room: who may see whose presence.
    pub(crate) fn shares_a_room(
        &self,
        user_id: &UserId,
        other: &UserId,
    ) -> Result<bool, StorageError> {
        device_lists::shares_a_room(&self.storage, user_id, other)
    }

    /// `/keys/changes`: the users whose devices changed between two sync tokens, and
    /// those with whom the user no longer shares a room. `to` is capped at what is
    /// visible, so the answer never names what a crash could take back.
    pub(crate) fn key_changes(
        &self,
        user_id: &UserId,
        from: &str,
        to: &str,
    ) -> Result<device_lists::DeviceLists, Error> {
        let position = |token: &str, name: &str| {
            parse_token(token)
                .map(|(position, _)| position)
                .ok_or_else(|| {
                    Error::new(
                        crate::error::ErrorKind::InvalidParam,
                        format!("`{name}` is not a sync token"),
                    )
                })
        };
        let from = position(from, "from")?;
        let to = position(to, "to")?.min(self.rooms.visible_position());
        Ok(device_lists::between(&self.storage, user_id, from, to)?)
    }
}

/// Typing (when it changed since the last sync) and receipts (changed since then).
fn ephemeral_events(
    service: &SyncService,
    room_id: &RoomId,
    viewer: &UserId,
    request: &SyncRequest,
    upto: u64,
    newly_joined: bool,
) -> Result<Vec<Value>, StorageError> {
    let mut events = Vec::new();
    // A token from before a restart may be ahead of the new serial: read it as "nothing".
    let since_typing = if newly_joined || request.since_typing > service.ephemeral.serial() {
        0
    } else {
        request.since_typing
    };
    if let Some(typing) = service
        .ephemeral
        .typing_changed_since(room_id, since_typing)
    {
        events.push(json!({ "type": "m.typing", "content": { "user_ids": typing } }));
    }
    let since = if newly_joined { None } else { request.since };
    if let Some(receipts) =
        crate::sync::receipts::changes(&service.storage, room_id, viewer, since, upto)?
    {
        events.push(receipts);
    }
    Ok(events)
}

fn invited_room(
    service: &SyncService,
    room_id: &RoomId,
    record: &MembershipRecord,
) -> Result<Value, Error> {
    // An invite from another server to a room we do not hold comes with its own state; so
    // does one to a room we hold but have left, whose state we have not followed since.
    let held = service
        .storage
        .roomid_room
        .get(&room_id.to_string())?
        .is_some();
    let user = load_json(&service.storage, &record.event_id)?
        .and_then(|json| json.get("state_key")?.as_str().map(str::to_owned))
        .unwrap_or_default();
    let kept = service
        .storage
        .userroom_invitestate
        .get(&(user, room_id.to_string()))?;
    if !held
        || (kept.is_some()
            && !crate::rooms::is_resident(&service.storage, &service.our_server, room_id)?)
    {
        let mut events = kept.unwrap_or_default();
        if let Some(json) = load_json(&service.storage, &record.event_id)? {
            events.push(stripped_event(&json));
        }
        return Ok(json!({ "invite_state": { "events": events } }));
    }
    let mut events = Vec::new();
    for kind in crate::rooms::format::INVITE_STATE_TYPES {
        if let Some(event_id) = rooms::state_event(&service.storage, room_id, kind, "")?
            && let Some(json) = load_json(&service.storage, &event_id)?
        {
            events.push(stripped_event(&json));
        }
    }
    if let Some(json) = load_json(&service.storage, &record.event_id)? {
        // The inviter's own membership, then the invite itself.
        if let Some(inviter) = json.get("sender").and_then(|sender| sender.as_str())
            && let Some(event_id) =
                rooms::state_event(&service.storage, room_id, "m.room.member", inviter)?
            && let Some(member) = load_json(&service.storage, &event_id)?
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
    service: &SyncService,
    user_id: &UserId,
    room_id: &RoomId,
    record: &MembershipRecord,
    request: &SyncRequest,
    account_data: &[Value],
) -> Result<Value, Error> {
    let (timeline, after) = if record.joined_stream.is_some() {
        let start = history_start(&service.storage, room_id, record)?;
        let after = request.since.unwrap_or(0).max(start.saturating_sub(1));
        let timeline = timeline(
            &service.storage,
            room_id,
            (after, record.stream),
            &request.filter.room.timeline,
            Some(Reader {
                user_id: user_id.as_str(),
                device_id: &request.device_id,
            }),
        )?;
        (timeline, after)
    } else {
        let own = client_form(&service.storage, &record.event_id, None, None)?
            .map(|event| (record.stream, record.event_id.clone(), event));
        let timeline = Timeline {
            events: own.into_iter().collect(),
            limited: false,
            examined_from: record.stream,
            examined_to: record.stream,
        };
        (timeline, record.stream)
    };
    let Timeline {
        events: timeline,
        limited,
        examined_from,
        ..
    } = timeline;
    let timeline_start = timeline
        .first()
        .map_or(record.stream + 1, |(position, _, _)| *position);
    // Someone who was never in the room sees none of its state, only their own membership.
    let (state_key, state_events) = if record.joined_stream.is_none() {
        let key = if request.use_state_after {
            "state_after"
        } else {
            "state"
        };
        (key, Vec::new())
    } else {
        state_section(
            service,
            user_id,
            room_id,
            request,
            &StateSpan {
                full: request.since.is_none() || request.full_state,
                after,
                timeline_start,
                end: record.stream,
            },
            &timeline,
        )?
    };
    let events: Vec<Value> = timeline
        .into_iter()
        .map(|(_, _, event)| request.filter.project(event))
        .collect();
    Ok(json!({
        "timeline": {
            "events": events,
            "limited": limited,
            "prev_batch": examined_from.min(timeline_start).saturating_sub(1).to_string(),
        },
        state_key: { "events": state_events },
        "account_data": { "events": account_data },
    }))
}
