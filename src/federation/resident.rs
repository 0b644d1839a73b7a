//! The resident side of joins, leaves and knocks (spec: server-server API, "Joining Rooms",
//! "Leaving Rooms", "Knocking"): templates for another server's user (`make_*`), and their
//! signed events checked, stored and relayed to the room's other servers (`send_*`). Answered
//! only while one of our users is in the room: our copy of a room everyone here left is stale.

use std::sync::Arc;

use super::pdu_checks::checked;
use super::streamed::{Part, StreamedAnswer};
use super::transport::to_object;
use crate::error::{Error, ErrorKind};
use crate::federation::Federation;
use crate::rooms::auth_chain;
use crate::rooms::remote::{self};
use crate::rooms::{load_json, rules_of};
use ruma::{RoomId, UserId};
use serde_json::{Value, json};

/// # The resident side: `make_join` for a user of `origin`.
///
/// A join event template for `user_id` in our room: its auth and prev events from the
/// room's current state, unsigned; the joining server fills it in and signs it.
pub(crate) fn make_join_template(
    fed: &Federation,
    room_id: &RoomId,
    user_id: &UserId,
    origin: &str,
    versions: &[String],
) -> Result<Value, Error> {
    membership_template(fed, room_id, user_id, origin, "join", Some(versions))
}

/// # The resident side: `make_knock` for a user of `origin` (room versions 7 and later).
pub(crate) fn make_knock_template(
    fed: &Federation,
    room_id: &RoomId,
    user_id: &UserId,
    origin: &str,
    versions: &[String],
) -> Result<Value, Error> {
    membership_template(fed, room_id, user_id, origin, "knock", Some(versions))
}

/// # The resident side: `make_leave` for a user of `origin` (to decline an invite, or leave).
pub(crate) fn make_leave_template(
    fed: &Federation,
    room_id: &RoomId,
    user_id: &UserId,
    origin: &str,
) -> Result<Value, Error> {
    membership_template(fed, room_id, user_id, origin, "leave", None)
}

/// A membership event template about `user_id` (a user of `origin`) in our room.
fn membership_template(
    fed: &Federation,
    room_id: &RoomId,
    user_id: &UserId,
    origin: &str,
    membership: &str,
    versions: Option<&[String]>,
) -> Result<Value, Error> {
    if membership != "leave" {
        crate::rooms::blocked::refuse_if_blocked(&fed.storage, room_id)?;
    }
    if user_id.server_name().as_str() != origin {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "A server may only join its own users",
        ));
    }
    if !super::acl::room_allows(&fed.storage, room_id, origin)? {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "Your server is denied access to this room by its server ACL",
        ));
    }
    let room = fed
        .storage
        .roomid_room
        .get(&room_id.to_string())?
        .ok_or_else(|| Error::not_found("No such room here"))?;
    refuse_unless_resident(fed, room_id)?;
    if versions.is_some_and(|versions| !versions.iter().any(|v| v == &room.version)) {
        let mut error = Error::new(
            ErrorKind::IncompatibleRoomVersion,
            format!("The room is version {}", room.version),
        );
        let mut extra = serde_json::Map::new();
        extra.insert("room_version".into(), json!(room.version));
        error.extra = Some(Box::new(extra));
        return Err(error);
    }
    let rules = rules_of(&room)?;
    let mut content = serde_json::Map::new();
    content.insert("membership".to_owned(), json!(membership));
    if membership == "join" {
        super::restricted::vouch_in_template(fed, room_id, user_id, &mut content)?;
    }
    let content = Value::Object(content);
    let content_raw = serde_json::value::to_raw_value(&content).map_err(Error::internal)?;
    let auth_types = ruma::state_res::auth_types_for_event(
        &ruma::events::TimelineEventType::RoomMember,
        user_id,
        Some(user_id.as_str()),
        &content_raw,
        &rules.authorization,
    )
    .map_err(|err| Error::new(ErrorKind::BadJson, err))?;
    let mut auth_events = Vec::new();
    for (kind, key) in auth_types {
        if let Some(id) = crate::rooms::state_event(&fed.storage, room_id, &kind.to_string(), &key)?
            && !auth_events.contains(&id)
        {
            auth_events.push(id);
        }
    }
    let depth = room.extremities.iter().map(|(_, d)| *d).max().unwrap_or(0) + 1;
    let prev: Vec<String> = room
        .extremities
        .iter()
        .map(|(id, _)| id.to_string())
        .collect();
    let reference = |ids: Vec<String>| -> Value {
        if rules.events_reference_format
            == ruma::room_version_rules::EventsReferenceFormatVersion::V1
        {
            ids.into_iter()
                .map(|id| {
                    let hash = load_json(&fed.storage, &id)
                        .ok()
                        .flatten()
                        .and_then(|json| {
                            json.get("hashes")?
                                .as_object()?
                                .get("sha256")?
                                .as_str()
                                .map(str::to_owned)
                        })
                        .unwrap_or_default();
                    json!([id, { "sha256": hash }])
                })
                .collect()
        } else {
            json!(ids)
        }
    };
    let event = json!({
        "type": "m.room.member",
        "state_key": user_id,
        "sender": user_id,
        "room_id": room_id,
        "content": content,
        "depth": depth,
        "prev_events": reference(prev),
        "auth_events": reference(auth_events),
        "origin_server_ts": crate::matrix::time::now_ms(),
        "origin": origin,
    });
    Ok(json!({ "room_version": room.version, "event": event }))
}

/// # The resident side: `send_join` v2.
///
/// Checks and stores the signed join of a user of `origin`, then answers with the room's
/// state before it and the auth chain of that state and the join.
pub(crate) async fn accept_join(
    fed: &Federation,
    origin: &str,
    room_id: &RoomId,
    event_id: &str,
    event: Value,
) -> Result<StreamedAnswer, Error> {
    let countersigned = accept_membership(fed, origin, room_id, event_id, event, "join").await?;
    join_answer(fed, room_id, event_id, countersigned).await
}

/// # The resident side: `send_knock`: stores the knock and answers with the room's
/// stripped state, for the knocking user to see what they knocked on.
pub(crate) async fn accept_knock(
    fed: &Federation,
    origin: &str,
    room_id: &RoomId,
    event_id: &str,
    event: Value,
) -> Result<Value, Error> {
    accept_membership(fed, origin, room_id, event_id, event, "knock").await?;
    let sender = crate::rooms::load_json(&fed.storage, event_id)?
        .and_then(|json| json.get("sender")?.as_str().map(str::to_owned))
        .unwrap_or_default();
    let stripped = super::invite::stripped_state(fed, room_id, &sender, true)?;
    Ok(json!({ "knock_room_state": stripped }))
}

/// # The resident side: `send_leave` v2.
pub(crate) async fn accept_leave(
    fed: &Federation,
    origin: &str,
    room_id: &RoomId,
    event_id: &str,
    event: Value,
) -> Result<Value, Error> {
    accept_membership(fed, origin, room_id, event_id, event, "leave").await?;
    Ok(json!({}))
}

/// Checks and stores a membership event (`join`, `leave` or `knock`) a user of `origin`
/// signed about themselves in our room. Returns whether we signed it too (a join of a
/// restricted room we vouch for).
async fn accept_membership(
    fed: &Federation,
    origin: &str,
    room_id: &RoomId,
    event_id: &str,
    event: Value,
    wanted: &str,
) -> Result<bool, Error> {
    let room = fed
        .storage
        .roomid_room
        .get(&room_id.to_string())?
        .ok_or_else(|| Error::not_found("No such room here"))?;
    refuse_unless_resident(fed, room_id)?;
    let rules = rules_of(&room)?;
    if !super::acl::room_allows(&fed.storage, room_id, origin)? {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "Your server is denied access to this room by its server ACL",
        ));
    }
    let mut json =
        to_object(&event).ok_or_else(|| Error::new(ErrorKind::BadJson, "Not an event"))?;
    let countersigned = wanted == "join"
        && super::restricted::countersign_join(fed, origin, room_id, &rules, &mut json)?;
    let (json, pdu) = checked(fed, json, &rules)
        .await
        .map_err(|err| Error::new(ErrorKind::BadJson, err.to_string()))?;
    let is_join = pdu.kind == ruma::events::TimelineEventType::RoomMember
        && crate::rooms::membership_of(&pdu) == wanted
        && pdu.state_key.as_deref() == Some(pdu.sender.as_str())
        && pdu.sender.server_name().as_str() == origin
        && pdu.room_id.as_deref() == Some(room_id)
        && pdu.event_id.as_str() == event_id;
    if !is_join {
        return Err(Error::new(
            ErrorKind::BadJson,
            "Not a membership event of a user of the sending server about themselves, with this event ID, in this room",
        ));
    }
    let outcome = fed
        .rooms
        // The spec: the resident server sends the event on to the room's other servers.
        .store_remote(room_id, json, pdu.clone(), true)
        .await
        .map_err(|err| Error::new(ErrorKind::Forbidden, err.to_string()))?;
    // An event we hold already counts only if it was accepted into the room: one refused
    // by the current state (soft-failed) stays refused when sent again.
    let accepted = match outcome {
        remote::Outcome::SoftFailed => false,
        remote::Outcome::Known => fed
            .storage
            .eventid_meta
            .get(&pdu.event_id.to_string())?
            .is_some_and(|meta| meta.stream != 0),
        _ => true,
    };
    if !accepted {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "The event is not allowed by the room's current state",
        ));
    }
    Ok(countersigned)
}

/// `send_join`'s answer: the room's state before the join, and the auth chain of that
/// state and of the join; with the join itself when we signed it too. Planned as short
/// IDs and written from the stored JSON text while it is sent: a large room's answer is
/// never whole in memory, nor refused for its size.
async fn join_answer(
    fed: &Federation,
    room_id: &RoomId,
    event_id: &str,
    countersigned: bool,
) -> Result<StreamedAnswer, Error> {
    let room = fed
        .storage
        .roomid_room
        .get(&room_id.to_string())?
        .ok_or_else(|| Error::not_found("No such room here"))?;
    let rules = rules_of(&room)?;
    let storage = &fed.storage;
    let snapshot = storage
        .eventid_statebefore
        .get(&event_id.to_owned())?
        .ok_or_else(|| Error::not_found("The join is not stored"))?;
    let state: Vec<u64> = crate::storage::snapshots::load(storage, snapshot)?
        .into_values()
        .collect();
    let mut start = state.clone();
    let join = crate::rooms::load_pdu(storage, event_id, &rules)?
        .ok_or_else(|| Error::not_found("The join is not stored"))?;
    for id in &join.auth_events {
        if let Some(short) = auth_chain::stored_short(storage, id.as_str())? {
            start.push(short);
        }
    }
    let chain = super::serve::walk_auth_chain(storage, start)?;
    let origin = serde_json::to_string(fed.transport.origin.as_str()).map_err(Error::internal)?;
    let mut tail = "]".to_owned();
    if countersigned && let Some(join) = storage.eventid_pdu.get(&event_id.to_owned())? {
        tail.push_str(",\"event\":");
        tail.push_str(&join);
    }
    tail.push('}');
    let parts = vec![
        Part::Text(format!(
            "{{\"origin\":{origin},\"members_omitted\":false,\"state\":["
        )),
        Part::Events(state),
        Part::Text("],\"auth_chain\":[".to_owned()),
        Part::Events(chain),
        Part::Text(tail),
    ];
    Ok(StreamedAnswer::new(Arc::clone(storage), rules, parts))
}

/// Whether one of our users is joined to `room_id`: only then do the other servers in the
/// room send us its events (and invites to it), so that our copy of it is current.
/// Answers for a room only while one of our users is in it: the copy of a room everyone
/// here left is stale (the spec's resident server is one in the room).
fn refuse_unless_resident(fed: &Federation, room_id: &RoomId) -> Result<(), Error> {
    if crate::rooms::is_resident(&fed.storage, &fed.transport.origin, room_id)? {
        return Ok(());
    }
    Err(Error::not_found("This server is no longer in the room"))
}
