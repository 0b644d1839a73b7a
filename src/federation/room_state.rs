//! Checks of a room state another server hands us whole: the state and auth chain of a
//! `send_join` answer, and the state fetched to bridge a gap (`/state_ids`, `/event`).
//!
//! Each event passing its own checks (format, signatures, hash) is not enough: a server
//! lying about a room can send events that are each genuine but do not make a room. So a
//! state is taken only if it is coherent:
//! - every event is of this room (the room version 12 create event names the room by its
//!   ID instead);
//! - the state holds one event per `(type, state_key)`, among them the room's own create
//!   event, of the room version we were told;
//! - every event's `auth_events` are among the events given (or, for a gap, already here),
//!   and the event passes the auth rules against them; an event resting on one that fails
//!   fails too.
//!
//! This is what a careful server can check without the room's history: whether each state
//! event was allowed at its place in the room's graph is beyond it, and state resolution
//! takes over from there.

use std::collections::{HashMap, HashSet};

use ruma::room_version_rules::RoomVersionRules;
use ruma::{EventId, OwnedEventId, RoomId};

use crate::matrix::events::Pdu;

pub(crate) use crate::rooms::NamedState;

/// Whether `pdu` is an event of `room_id`: it says so, or it is the room version 12 create
/// event whose ID is the room's.
pub(crate) fn is_of_room(pdu: &Pdu, room_id: &RoomId, rules: &RoomVersionRules) -> bool {
    match &pdu.room_id {
        Some(id) => id == room_id,
        None => {
            rules.authorization.room_create_event_id_as_room_id
                && is_create(pdu)
                && create_id_of(room_id).as_ref() == Some(&pdu.event_id)
        }
    }
}

/// The ID of the create event a room version 12 room ID names.
pub(crate) fn create_id_of(room_id: &RoomId) -> Option<OwnedEventId> {
    OwnedEventId::try_from(format!("${}", room_id.as_str().get(1..)?)).ok()
}

fn is_create(pdu: &Pdu) -> bool {
    pdu.kind == ruma::events::TimelineEventType::RoomCreate && pdu.state_key.as_deref() == Some("")
}

/// The events `pdu`'s authorization rests on: its `auth_events`, and from room version 12
/// the create event its room ID names.
pub(crate) fn auth_ids(pdu: &Pdu, rules: &RoomVersionRules) -> Vec<OwnedEventId> {
    let mut ids = pdu.auth_events.clone();
    if rules.authorization.room_create_event_id_as_room_id
        && !is_create(pdu)
        && let Some(create) = pdu.room_id.as_deref().and_then(create_id_of)
        && !ids.contains(&create)
    {
        ids.push(create);
    }
    ids
}

/// Names the state `state_ids` makes of `events`: one event per `(type, state_key)`, with
/// the room's create event, of room version `version`.
pub(crate) fn named_state(
    room_id: &RoomId,
    version: &str,
    rules: &RoomVersionRules,
    events: &HashMap<OwnedEventId, Pdu>,
    state_ids: &[OwnedEventId],
) -> Result<NamedState, String> {
    let mut state = NamedState::new();
    for id in state_ids {
        let pdu = events
            .get(id)
            .ok_or_else(|| format!("state event {id} is not given"))?;
        let Some(state_key) = &pdu.state_key else {
            return Err(format!("{id} in the state is not a state event"));
        };
        let key = (pdu.kind.to_string(), state_key.clone());
        match state.get(&key) {
            Some(other) if other != id => {
                return Err(format!(
                    "two events for ({}, {state_key:?}) in the state: {other} and {id}",
                    key.0
                ));
            }
            _ => {
                state.insert(key, id.clone());
            }
        }
    }
    let create = state
        .get(&("m.room.create".to_owned(), String::new()))
        .and_then(|id| events.get(id))
        .ok_or("the state has no create event")?;
    check_create(create, room_id, version, rules)?;
    Ok(state)
}

/// Whether `create` is the create event of `room_id`, of room version `version`.
pub(crate) fn check_create(
    create: &Pdu,
    room_id: &RoomId,
    version: &str,
    rules: &RoomVersionRules,
) -> Result<(), String> {
    if !is_of_room(create, room_id, rules) {
        return Err(format!(
            "the create event {} is not this room's",
            create.event_id
        ));
    }
    let create_version = create_room_version(create);
    if create_version != version {
        return Err(format!(
            "the create event says room version {create_version}, not {version}"
        ));
    }
    Ok(())
}

/// The `room_version` of a create event's content ("1" when absent, as the spec says).
fn create_room_version(create: &Pdu) -> String {
    serde_json::from_str::<serde_json::Value>(create.content.get())
        .ok()
        .and_then(|content| content.get("room_version")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "1".to_owned())
}

/// Runs the auth rules for `pdu` against its own auth events, looked up with `fetch`: the
/// checks that need no state first, then those that do, with the state its auth events
/// make up. Every auth event must be found.
pub(crate) fn authorized_by_own_auth_events(
    rules: &RoomVersionRules,
    pdu: &Pdu,
    fetch: impl Fn(&EventId) -> Option<Pdu>,
) -> Result<(), String> {
    let mut by_type: HashMap<(String, String), Pdu> = HashMap::new();
    for id in auth_ids(pdu, rules) {
        let auth = fetch(&id).ok_or_else(|| format!("auth event {id} is not given"))?;
        if let Some(key) = &auth.state_key {
            by_type.insert((auth.kind.to_string(), key.clone()), auth);
        }
    }
    ruma::state_res::check_state_independent_auth_rules(&rules.authorization, pdu, &fetch)?;
    ruma::state_res::check_state_dependent_auth_rules(
        &rules.authorization,
        pdu,
        |kind: &ruma::events::StateEventType, key: &str| {
            by_type.get(&(kind.to_string(), key.to_owned())).cloned()
        },
    )
}

/// The events of `events` that fail the auth rules against their own auth events (looked
/// up in `events`, else with `known`), or rest, through their auth events, on one that
/// fails: with why, for each.
pub(crate) fn failing_auth(
    rules: &RoomVersionRules,
    events: &HashMap<OwnedEventId, Pdu>,
    known: impl Fn(&EventId) -> Option<Pdu>,
) -> HashMap<OwnedEventId, String> {
    let fetch = |id: &EventId| events.get(id).cloned().or_else(|| known(id));
    let mut failing: HashMap<OwnedEventId, String> = HashMap::new();
    for (id, pdu) in events {
        if let Err(why) = authorized_by_own_auth_events(rules, pdu, fetch) {
            failing.insert(id.clone(), why);
        }
    }
    // What rests on a failing event fails too: walk the auth edges backwards from each.
    let mut dependents: HashMap<&EventId, Vec<&OwnedEventId>> = HashMap::new();
    for (id, pdu) in events {
        for auth in &pdu.auth_events {
            dependents.entry(auth.as_ref()).or_default().push(id);
        }
    }
    let mut todo: Vec<OwnedEventId> = failing.keys().cloned().collect();
    let mut seen: HashSet<OwnedEventId> = todo.iter().cloned().collect();
    while let Some(id) = todo.pop() {
        for dependent in dependents.get::<EventId>(&id).into_iter().flatten() {
            if seen.insert((*dependent).clone()) {
                failing
                    .entry((*dependent).clone())
                    .or_insert_with(|| format!("its auth event {id} fails auth"));
                todo.push((*dependent).clone());
            }
        }
    }
    failing
}

#[cfg(test)]
#[path = "room_state_tests.rs"]
mod tests;
