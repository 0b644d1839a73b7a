//! Simplified sliding sync (MSC4186), what Element X speaks: `POST
//! /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`.
//!
//! A client keeps a *connection* ([`connection`]): lists (windows into the user's rooms in
//! recency order, [`order`]) and room subscriptions say which rooms it wants and how much
//! of each ([`request`]); each answer sends the rooms that are new to the connection or
//! changed since they were last sent ([`room`]), the lists' counts, and the extensions
//! ([`extensions`]). With nothing new, a request with a `pos` waits (long-polls) on the
//! same notifier `/sync` waits on.
//!
//! Cost: the order of the user's rooms is kept per connection and brought up to date from
//! the stream's room index, so an incremental request reads only the rooms something
//! happened in; a room in a window that was sent before and has nothing new costs one
//! comparison.

pub(crate) mod connection;
mod extensions;
mod order;
pub(crate) mod request;
mod room;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::{Map, Value, json};

pub(crate) use connection::Connections;
use connection::{Connection, Pending, SentRoom, lock};
use extensions::{Coverage, Span};
use order::RoomEntry;
pub(crate) use request::SlidingRequest;
use request::{Combined, Filters};
use room::{RoomAsk, room_result};

use super::{MAX_TIMEOUT, SyncService};
use crate::error::Error;
use crate::rooms;
use crate::users::account_data;

/// Who asks, and how long they will wait.
pub(crate) struct Asker<'a> {
    pub(crate) user_id: &'a UserId,
    pub(crate) device_id: &'a str,
    pub(crate) timeout: Duration,
}

/// Answers a sliding sync request, waiting up to `asker.timeout` for news when it has a
/// `pos` and there is none.
pub(crate) async fn sliding_sync(
    service: &SyncService,
    asker: &Asker<'_>,
    request: &SlidingRequest,
) -> Result<Value, Error> {
    request.check()?;
    let key = (
        asker.user_id.as_str(),
        asker.device_id,
        request.conn_id.as_deref().unwrap_or(""),
    );
    let (connection, request_number) = service.sliding.open(key, request.pos.as_deref())?;
    let mut changes = service.rooms.subscribe();
    let mut typing = service.ephemeral.subscribe();
    let mut stopping = service.stopping.subscribe();
    service.ephemeral.expire();
    let deadline = tokio::time::Instant::now() + asker.timeout.min(MAX_TIMEOUT);
    loop {
        let upto = *changes.borrow_and_update();
        typing.borrow_and_update();
        let (answer, woken_or_done) = {
            let mut connection = lock(&connection);
            // A newer request on this connection took over: this one's answer is not read.
            if !connection.is_latest(request_number) {
                return Err(connection::unknown_pos());
            }
            let (answer, news) = build(service, asker, request, &mut connection, upto)?;
            let answer_now = news
                || connection.is_new()
                || asker.timeout.is_zero()
                || *stopping.borrow()
                || tokio::time::Instant::now() >= deadline;
            if answer_now {
                let (mut body, pending_rooms) = answer;
                let number = service.sliding.next_answer();
                let pos = connection.answered(
                    number,
                    Pending {
                        answer: number,
                        upto,
                        typing: service.ephemeral.serial(),
                        rooms: pending_rooms,
                    },
                );
                body["pos"] = json!(pos);
                (Some(body), true)
            } else {
                (None, false)
            }
        };
        if let (Some(body), true) = (answer, woken_or_done) {
            return Ok(body);
        }
        let _waiting = service.long_polls.sliding_waits();
        let _ = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                _ = changes.changed() => {},
                _ = typing.changed() => {},
                _ = stopping.changed() => {},
            }
        })
        .await;
    }
}

/// An answer's body (without `pos`) and the rooms it sends.
type Built = (Value, Vec<(OwnedRoomId, SentRoom)>);

/// The answer for everything up to `upto`, and whether it holds anything new.
fn build(
    service: &SyncService,
    asker: &Asker<'_>,
    request: &SlidingRequest,
    connection: &mut Connection,
    upto: u64,
) -> Result<(Built, bool), Error> {
    let user_id = asker.user_id;
    connection.order.refresh(&service.storage, user_id, upto)?;
    let direct = direct_rooms(service, user_id)?;
    let mut wanted: BTreeMap<OwnedRoomId, Combined> = BTreeMap::new();
    let mut coverage = Coverage::default();
    let mut lists = Map::new();
    let sorted = connection.order.sorted();
    for (name, list) in &request.lists {
        let config = list.config()?;
        let spaces = space_children(service, &connection.order, &list.filters)?;
        let filtered: Vec<&RoomId> = sorted
            .iter()
            .filter(|(room_id, entry)| {
                listed(connection, room_id, entry)
                    && passes(&list.filters, room_id, entry, &direct, spaces.as_ref())
            })
            .map(|(room_id, _)| *room_id)
            .collect();
        lists.insert(name.clone(), json!({ "count": filtered.len() }));
        let mut in_window: Vec<OwnedRoomId> = Vec::new();
        for (from, to) in list.windows() {
            let from = usize::try_from(from).unwrap_or(usize::MAX);
            let to = usize::try_from(to).unwrap_or(usize::MAX);
            for room_id in filtered
                .iter()
                .skip(from)
                .take(to.saturating_sub(from).saturating_add(1))
            {
                in_window.push((*room_id).to_owned());
            }
        }
        for room_id in &in_window {
            merge_into(&mut wanted, room_id, &config);
        }
        coverage.lists.insert(name.clone(), in_window);
    }
    for (room, subscription) in &request.room_subscriptions {
        let Ok(room_id) = OwnedRoomId::try_from(room.as_str()) else {
            continue;
        };
        // Rooms the user has no membership of (or was banned from without ever being in)
        // are not theirs to see: ignored, as the MSC says.
        if !connection.order.rooms.contains_key(&room_id) {
            continue;
        }
        merge_into(&mut wanted, &room_id, &subscription.config()?);
        coverage.subscriptions.push(room_id);
    }
    let live_after = (!connection.is_new()).then_some(connection.acknowledged.upto);
    let mut rooms = Map::new();
    let mut sent = Vec::new();
    let mut fresh = BTreeSet::new();
    for (room_id, config) in wanted {
        let Some(entry) = connection.order.rooms.get(&room_id) else {
            continue;
        };
        let previous = connection.acknowledged.rooms.get(&room_id);
        let (since, expanded) = match previous {
            None => (None, false),
            // Joined since it was last sent (as an invite): it comes whole.
            Some(before)
                if entry
                    .record
                    .joined_stream
                    .is_some_and(|joined| joined > before.upto) =>
            {
                (None, false)
            }
            Some(before) if config.expands(&before.config) => {
                (None, config.timeline_limit > before.config.timeline_limit)
            }
            Some(before) => (Some(before.upto), false),
        };
        // Sent before, nothing since: nothing to read.
        if let Some(since) = since
            && entry.activity <= since
        {
            if previous.is_some_and(|before| before.config != config) {
                sent.push((
                    room_id,
                    SentRoom {
                        upto: since,
                        config,
                    },
                ));
            }
            continue;
        }
        let ask = RoomAsk {
            room_id: &room_id,
            entry,
            config: &config,
            since,
            live_after,
            expanded,
            is_dm: direct.contains(room_id.as_str()),
        };
        let result = room_result(service, (user_id, asker.device_id), &ask, upto)?;
        if since.is_none() {
            fresh.insert(room_id.clone());
        }
        if let Some(result) = result {
            rooms.insert(room_id.to_string(), result);
        }
        sent.push((room_id, SentRoom { upto, config }));
    }
    let span = Span {
        user_id,
        device_id: asker.device_id,
        since: (!connection.is_new()).then_some(connection.acknowledged.upto),
        since_typing: connection.acknowledged.typing,
        upto,
        fresh: &fresh,
    };
    let (extensions, extension_news) =
        extensions::answer(service, &request.extensions, &span, &coverage)?;
    let news = !rooms.is_empty() || extension_news;
    let body = json!({ "lists": lists, "rooms": rooms, "extensions": extensions });
    Ok(((body, sent), news))
}

fn merge_into(wanted: &mut BTreeMap<OwnedRoomId, Combined>, room_id: &RoomId, config: &Combined) {
    match wanted.get_mut(room_id) {
        Some(combined) => combined.merge(config),
        None => {
            wanted.insert(room_id.to_owned(), config.clone());
        }
    }
}

/// Whether a room belongs in the connection's lists: rooms the user is in, invited to or
/// knocking on; rooms they were removed from by someone else; rooms they left themselves
/// only if this connection had them already (the user knows they left).
fn listed(connection: &Connection, room_id: &RoomId, entry: &RoomEntry) -> bool {
    match entry.membership() {
        "join" | "invite" | "knock" => true,
        _ => entry.removed_by_other || connection.acknowledged.rooms.contains_key(room_id),
    }
}

/// Whether a room passes a list's filters.
fn passes(
    filters: &Filters,
    room_id: &RoomId,
    entry: &RoomEntry,
    direct: &HashSet<String>,
    spaces: Option<&HashSet<String>>,
) -> bool {
    let invited = entry.membership() == "invite";
    let type_matches = |types: &[Option<String>]| types.contains(&entry.room_type);
    filters
        .is_invite
        .or(filters.is_invited)
        .is_none_or(|wanted| wanted == invited)
        && filters
            .is_dm
            .is_none_or(|wanted| wanted == direct.contains(room_id.as_str()))
        && filters
            .is_encrypted
            .is_none_or(|wanted| wanted == entry.encrypted)
        && filters.room_types.as_deref().is_none_or(type_matches)
        && !type_matches(&filters.not_room_types)
        && spaces.is_none_or(|children| children.contains(room_id.as_str()))
}

/// The rooms `m.direct` names (the user's direct chats).
fn direct_rooms(service: &SyncService, user_id: &UserId) -> Result<HashSet<String>, Error> {
    let mut rooms = HashSet::new();
    if let Some(direct) = account_data::get(&service.storage, user_id, None, "m.direct")? {
        for ids in direct.values() {
            for id in ids.as_array().into_iter().flatten() {
                if let Some(id) = id.as_str() {
                    rooms.insert(id.to_owned());
                }
            }
        }
    }
    Ok(rooms)
}

/// With a `spaces` filter: the children (`m.space.child` with a `via`) of the named spaces
/// the user is in, not looking into subspaces (as the MSC says).
fn space_children(
    service: &SyncService,
    order: &order::RoomOrder,
    filters: &Filters,
) -> Result<Option<HashSet<String>>, Error> {
    let Some(spaces) = &filters.spaces else {
        return Ok(None);
    };
    let mut children = HashSet::new();
    for space in spaces {
        let Ok(space_id) = OwnedRoomId::try_from(space.as_str()) else {
            continue;
        };
        if order
            .rooms
            .get(&space_id)
            .is_none_or(|entry| entry.membership() != "join")
        {
            continue;
        }
        for ((kind, child), _) in rooms::current_state(&service.storage, &space_id)? {
            if kind != "m.space.child" {
                continue;
            }
            let has_via = rooms::state_content(&service.storage, &space_id, &kind, &child)?
                .and_then(|content| content.get("via")?.as_array().map(|via| !via.is_empty()))
                .unwrap_or(false);
            if has_via {
                children.insert(child);
            }
        }
    }
    Ok(Some(children))
}
