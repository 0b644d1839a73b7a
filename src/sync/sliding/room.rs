//! One room of a sliding sync answer. A room sent for the first time on a connection (or
//! with a bigger config than it was last sent with) comes whole, with `initial: true`: its
//! name, avatar, heroes, counts, the state its `required_state` asks for and its newest
//! `timeline_limit` events. A room sent before comes with what changed since: new events,
//! changed state, and the fields that change with them.

use std::collections::{BTreeMap, BTreeSet};

use ruma::{RoomId, UserId};
use serde_json::{Map, Value, json};

use super::order::RoomEntry;
use super::request::{Combined, KeyPattern, RequiredState};
use crate::error::Error;
use crate::rooms::timeline::{Reader, Timeline, client_form, history_start, timeline};
use crate::rooms::{self, StateEntry, history};
use crate::storage::{Storage, StorageError, pair_prefix};
use crate::sync::SyncService;
use crate::users::filter::RoomEventFilter;

/// Heroes at most, as `/sync`'s room summary.
const MAX_HEROES: usize = 5;

/// How a room is to be sent.
pub(crate) struct RoomAsk<'a> {
    pub(crate) room_id: &'a RoomId,
    pub(crate) entry: &'a RoomEntry,
    pub(crate) config: &'a Combined,
    /// Where the room was last sent up to, if it is sent as changes since then.
    pub(crate) since: Option<u64>,
    /// The connection's acknowledged position: later events are `num_live` (none on a
    /// connection's first answer).
    pub(crate) live_after: Option<u64>,
    /// Sent afresh because the timeline asked for grew.
    pub(crate) expanded: bool,
    pub(crate) is_dm: bool,
}

/// The room's result, or `None` when nothing changed for a room sent before.
pub(crate) fn room_result(
    service: &SyncService,
    (user_id, device_id): (&UserId, &str),
    ask: &RoomAsk<'_>,
    upto: u64,
) -> Result<Option<Value>, Error> {
    let storage = &*service.storage;
    let record = &ask.entry.record;
    let mut room = Map::new();
    room.insert("membership".into(), json!(record.membership));
    room.insert("bump_stamp".into(), json!(ask.entry.bump_stamp));
    if ask.is_dm {
        room.insert("is_dm".into(), json!(true));
    }
    if ask.since.is_none() {
        room.insert("initial".into(), json!(true));
    }
    if matches!(record.membership.as_str(), "invite" | "knock") || record.joined_stream.is_none() {
        // Not (yet) in the room: what the invite or knock carried, nothing more.
        if ask.since.is_some_and(|since| record.stream <= since) {
            return Ok(None);
        }
        let invited = super::super::invited_room(service, ask.room_id, record)?;
        room.insert(
            "invite_state".into(),
            invited["invite_state"]["events"].clone(),
        );
        return Ok(Some(Value::Object(room)));
    }
    // Members see up to now; former members up to their departure.
    let end = if record.membership == "join" {
        upto
    } else {
        record.stream.min(upto)
    };
    let start = history_start(storage, ask.room_id, record)?;
    let after = match ask.since {
        Some(since) => since.max(start.saturating_sub(1)),
        None => start.saturating_sub(1),
    };
    let filter = RoomEventFilter {
        limit: Some(ask.config.timeline_limit as u64),
        ..RoomEventFilter::default()
    };
    let reader = Reader {
        user_id: user_id.as_str(),
        device_id,
    };
    let Timeline {
        events,
        limited,
        examined_from,
        ..
    } = timeline(storage, ask.room_id, (after, end), &filter, Some(reader))?;
    let changed_state = match ask.since {
        Some(_) => history::changes_between(storage, ask.room_id, after, end)?,
        None => Vec::new(),
    };
    if ask.since.is_some() && events.is_empty() && changed_state.is_empty() {
        return Ok(None);
    }
    let timeline_start = events.first().map_or(end + 1, |(position, _, _)| *position);
    let prev_batch = examined_from.min(timeline_start).saturating_sub(1);
    let num_live = ask.live_after.map_or(0, |live_after| {
        events
            .iter()
            .filter(|(position, _, _)| *position > live_after)
            .count()
    });
    let required = &ask.config.required_state;
    let mut state = match ask.since {
        None if record.membership == "join" => {
            wanted_state(storage, ask.room_id, required, user_id)?
        }
        None => history::state_at(storage, ask.room_id, end)?
            .into_iter()
            .filter(|((kind, key), _)| required.wants(kind, key, user_id.as_str()))
            .collect(),
        Some(_) => changed_state
            .iter()
            .filter(|((kind, key), _)| required.wants(kind, key, user_id.as_str()))
            .cloned()
            .collect(),
    };
    if required.lazy_members {
        add_lazy_members(storage, ask.room_id, &events, end, &mut state)?;
    }
    let mut required_state = Vec::new();
    for (_, event_id) in state {
        if let Some(event) = client_form(storage, &event_id, None, None)? {
            required_state.push(event);
        }
    }
    let changed: BTreeSet<&str> = changed_state
        .iter()
        .map(|((kind, _), _)| kind.as_str())
        .collect();
    let whole = ask.since.is_none();
    if whole || changed.contains("m.room.name") || changed.contains("m.room.member") {
        describe(storage, ask.room_id, user_id, whole, &changed, &mut room)?;
    }
    if whole || changed.contains("m.room.member") {
        let (joined, invited) = member_counts(storage, ask.room_id)?;
        room.insert("joined_count".into(), json!(joined));
        room.insert("invited_count".into(), json!(invited));
    }
    let (counts, _) = rooms::notifications::unread(storage, user_id, ask.room_id, end, false)?;
    room.insert("notification_count".into(), json!(counts.notifications));
    room.insert("highlight_count".into(), json!(counts.highlights));
    let timeline: Vec<Value> = events.into_iter().map(|(_, _, event)| event).collect();
    room.insert("timeline".into(), json!(timeline));
    room.insert("required_state".into(), json!(required_state));
    room.insert("prev_batch".into(), json!(prev_batch.to_string()));
    room.insert("limited".into(), json!(limited));
    room.insert("num_live".into(), json!(num_live));
    if ask.expanded {
        room.insert("expanded_timeline".into(), json!(true));
        room.insert("unstable_expanded_timeline".into(), json!(true));
    }
    Ok(Some(Value::Object(room)))
}

/// The current state entries `required` asks for: looked up one by one, or by type, or
/// (only when a pattern matches every type) read whole.
fn wanted_state(
    storage: &Storage,
    room_id: &RoomId,
    required: &RequiredState,
    user_id: &UserId,
) -> Result<Vec<StateEntry>, StorageError> {
    let user = user_id.as_str();
    let mut found: BTreeMap<(String, String), String> = BTreeMap::new();
    if required.include.iter().any(|(kind, _)| kind.is_none()) {
        found.extend(rooms::current_state(storage, room_id)?);
    } else {
        for (kind, key) in &required.include {
            let Some(kind) = kind else { continue };
            match key {
                KeyPattern::Any => {
                    let mut prefix = pair_prefix(room_id.as_str());
                    prefix.extend_from_slice(&pair_prefix(kind));
                    for entry in storage.roomstate_eventid.scan_prefix(&prefix) {
                        let ((_, kind, key), event_id) = entry?;
                        found.insert((kind, key), event_id);
                    }
                }
                KeyPattern::Me | KeyPattern::Exact(_) => {
                    let key = match key {
                        KeyPattern::Exact(key) => key.as_str(),
                        _ => user,
                    };
                    if let Some(event_id) = rooms::state_event(storage, room_id, kind, key)? {
                        found.insert((kind.clone(), key.to_owned()), event_id);
                    }
                }
            }
        }
    }
    Ok(found
        .into_iter()
        .filter(|((kind, key), _)| required.wants(kind, key, user))
        .collect())
}

/// Adds the member events (as of `at`) of the timeline's senders and of the members its
/// membership events are about, so the client can show who said what.
fn add_lazy_members(
    storage: &Storage,
    room_id: &RoomId,
    events: &[crate::rooms::timeline::TimelineEvent],
    at: u64,
    state: &mut Vec<StateEntry>,
) -> Result<(), StorageError> {
    let mut people: BTreeSet<&str> = BTreeSet::new();
    for (_, _, event) in events {
        if let Some(sender) = event["sender"].as_str() {
            people.insert(sender);
        }
        if event["type"] == "m.room.member"
            && let Some(target) = event["state_key"].as_str()
        {
            people.insert(target);
        }
    }
    for person in people {
        let present = state
            .iter()
            .any(|((kind, key), _)| kind == "m.room.member" && key == person);
        if present {
            continue;
        }
        if let Some(event_id) = history::entry_at(storage, room_id, ("m.room.member", person), at)?
        {
            state.push((("m.room.member".to_owned(), person.to_owned()), event_id));
        }
    }
    Ok(())
}

/// `name`, `avatar` and (for a room without a name) `heroes`, whole or as changed.
fn describe(
    storage: &Storage,
    room_id: &RoomId,
    user_id: &UserId,
    whole: bool,
    changed: &BTreeSet<&str>,
    room: &mut Map<String, Value>,
) -> Result<(), StorageError> {
    let name = rooms::state_content(storage, room_id, "m.room.name", "")?
        .and_then(|content| content.get("name")?.as_str().map(str::to_owned))
        .filter(|name| !name.is_empty());
    if whole || changed.contains("m.room.name") {
        if let Some(name) = &name {
            room.insert("name".into(), json!(name));
        } else if !whole {
            room.insert("name".into(), Value::Null);
        }
    }
    if whole || changed.contains("m.room.avatar") {
        let avatar = rooms::state_content(storage, room_id, "m.room.avatar", "")?
            .and_then(|content| content.get("url")?.as_str().map(str::to_owned));
        if let Some(avatar) = avatar {
            room.insert("avatar".into(), json!(avatar));
        } else if !whole {
            room.insert("avatar".into(), Value::Null);
        }
    }
    if name.is_none() {
        room.insert("heroes".into(), json!(heroes(storage, room_id, user_id)?));
    }
    Ok(())
}

/// Up to [`MAX_HEROES`] other members: joined first, then invited, then those who left.
/// Stops reading members once enough joined ones are found.
fn heroes(
    storage: &Storage,
    room_id: &RoomId,
    user_id: &UserId,
) -> Result<Vec<Value>, StorageError> {
    let mut by_rank: [Vec<String>; 3] = Default::default();
    for entry in storage
        .roomuser_membership
        .scan_prefix(&pair_prefix(room_id.as_str()))
    {
        let ((_, user), membership) = entry?;
        if user == user_id.as_str() {
            continue;
        }
        let rank = match membership.as_str() {
            "join" => 0,
            "invite" => 1,
            "leave" | "ban" => 2,
            _ => continue,
        };
        if by_rank[rank].len() < MAX_HEROES {
            by_rank[rank].push(user);
        }
        if by_rank[0].len() == MAX_HEROES {
            break;
        }
    }
    let mut heroes = Vec::new();
    for user in by_rank.into_iter().flatten().take(MAX_HEROES) {
        let content = rooms::state_content(storage, room_id, "m.room.member", &user)?;
        let mut hero = json!({ "user_id": user });
        for (field, from) in [("displayname", "displayname"), ("avatar_url", "avatar_url")] {
            if let Some(value) = content
                .as_ref()
                .and_then(|content| content.get(from)?.as_str())
            {
                hero[field] = json!(value);
            }
        }
        heroes.push(hero);
    }
    Ok(heroes)
}

/// Joined members (from the members cache) and invited ones (read from the membership
/// index: a room sends it whole or when its members change).
fn member_counts(storage: &Storage, room_id: &RoomId) -> Result<(usize, usize), StorageError> {
    let joined = storage.joined_summary(room_id.as_str())?.count;
    let mut invited = 0;
    for entry in storage
        .roomuser_membership
        .scan_prefix(&pair_prefix(room_id.as_str()))
    {
        if entry?.1 == "invite" {
            invited += 1;
        }
    }
    Ok((joined, invited))
}
