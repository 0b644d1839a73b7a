//! Serving rooms to other servers (spec: server-server API, "Retrieving events",
//! "Backfilling and retrieving missing events", "Retrieving event authorisation
//! information"): single events, the state at an event, auth chains, history.
//!
//! Every answer goes through [`open_room`] first: the room must be one of ours in which one
//! of our users is joined (`404 M_NOT_FOUND` otherwise, as for a room we never heard of),
//! and the room's server ACL must allow the asking server (`403 M_FORBIDDEN`). Then each
//! event is checked against the history visibility for servers: an event named in the
//! request that the server may not see is refused (`403`); events found by walking the
//! graph from there are sent redacted, so the graph stays whole and nothing hidden leaks.
//!
//! Events go out in federation format: the stored canonical JSON (hashes and signatures
//! intact), redacted by the room version's rules once a redaction removed its content,
//! never the client format. Every walk is bounded.

use std::collections::{BinaryHeap, HashSet, VecDeque};
use std::sync::Arc;

use ruma::room_version_rules::RoomVersionRules;
use ruma::{CanonicalJsonValue, RoomId, ServerName};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use super::streamed::{Part, StreamedAnswer};
use crate::error::{Error, ErrorKind};
use crate::rooms::auth_chain::{self, WalkError, WorkBound};
use crate::rooms::visibility::ServerVisibility;
use crate::rooms::{self, EventMeta, Rooms};
use crate::storage::snapshots;
use crate::storage::{Storage, pair_prefix};

/// The most events one `/backfill` or `/get_missing_events` answer holds.
pub(crate) const MAX_HISTORY_LIMIT: u64 = 100;
/// `/get_missing_events` without a `limit`: the spec's default.
pub(crate) const DEFAULT_MISSING_LIMIT: u64 = 10;
/// The most event IDs of a request (`v`, `earliest_events`, `latest_events`) looked at.
const MAX_REQUEST_IDS: usize = 1000;
/// The most `prev_events` followed from one event while walking history.
const MAX_PREV_PER_EVENT: usize = 50;

/// A room as one asking server may read it.
pub(crate) struct RoomAccess<'a> {
    pub(crate) room_id: &'a RoomId,
    pub(crate) rules: RoomVersionRules,
    pub(crate) view: ServerVisibility,
}

impl RoomAccess<'_> {
    /// Whether the asking server may see the event at `meta`.
    pub(crate) fn sees(&self, meta: &EventMeta) -> bool {
        self.view.allows(meta.stream)
    }
}

/// Checks that the room is ours to serve and `origin` may ask about it: the room exists
/// here, one of our users is joined, and its ACL allows `origin`.
pub(crate) fn open_room<'a>(
    (storage, rooms): (&Storage, &Rooms),
    ours: &ServerName,
    origin: &ServerName,
    room_id: &'a RoomId,
) -> Result<RoomAccess<'a>, Error> {
    let room = storage
        .roomid_room
        .get(&room_id.to_string())?
        .ok_or_else(|| Error::not_found("Unknown room"))?;
    if !has_local_member(storage, room_id, ours)? {
        return Err(Error::not_found("Unknown room"));
    }
    let acl = rooms::state_content(storage, room_id, "m.room.server_acl", "")?;
    if !super::acl::allows(acl.as_ref(), origin.as_str()) {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "Your server is denied access to this room by its server ACL",
        ));
    }
    Ok(RoomAccess {
        room_id,
        rules: rooms::rules_of(&room)?,
        view: rooms.server_visibility(room_id, origin.as_str())?,
    })
}

/// Whether one of our users is joined to the room: we serve only rooms we are in.
pub(crate) fn has_local_member(
    storage: &Storage,
    room_id: &RoomId,
    ours: &ServerName,
) -> Result<bool, Error> {
    for entry in storage
        .roomuser_membership
        .scan_prefix(&pair_prefix(room_id.as_str()))
    {
        let ((_, user), membership) = entry?;
        if membership == "join" && user_server(&user) == Some(ours.as_str()) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The server part of a user ID.
fn user_server(user: &str) -> Option<&str> {
    user.split_once(':').map(|(_, server)| server)
}

/// The room an event is in, if we have it.
pub(crate) fn event_room(storage: &Storage, event_id: &str) -> Result<EventMeta, Error> {
    storage
        .eventid_meta
        .get(&event_id.to_owned())?
        .ok_or_else(|| Error::not_found("Unknown event"))
}

/// An event of the room that the asking server may see: `404` if it is not in the room,
/// `403` if the server may not see it.
fn visible_event(access: &RoomAccess<'_>, storage: &Storage, event_id: &str) -> Result<(), Error> {
    let meta = event_room(storage, event_id)?;
    if meta.room_id != access.room_id.as_str() {
        return Err(Error::not_found("Unknown event"));
    }
    if !access.sees(&meta) {
        return Err(forbidden_event());
    }
    Ok(())
}

fn forbidden_event() -> Error {
    Error::new(
        ErrorKind::Forbidden,
        "Your server may not see this event (history visibility)",
    )
}

/// An event in federation format: the stored canonical JSON, redacted when a redaction
/// removed its content or when `redact` asks for it (the server may not see it), and
/// without `unsigned`, which is ours and not covered by the signatures.
pub(crate) fn federation_pdu(
    storage: &Storage,
    rules: &RoomVersionRules,
    event_id: &str,
    redact: bool,
) -> Result<Option<Box<RawValue>>, Error> {
    let Some(text) = storage.eventid_pdu.get(&event_id.to_owned())? else {
        return Ok(None);
    };
    let redacted_before = storage
        .eventid_meta
        .get(&event_id.to_owned())?
        .is_some_and(|meta| meta.redacted_by.is_some());
    if !redact && !redacted_before && !text.contains("\"unsigned\"") {
        // The stored text is canonical JSON already: sent as is, never parsed.
        return RawValue::from_string(text)
            .map(Some)
            .map_err(Error::internal);
    }
    let Some(mut json) = rooms::load_json(storage, event_id)? else {
        return Ok(None);
    };
    json.remove("unsigned");
    if redact || redacted_before {
        json = ruma::canonical_json::redact(json, &rules.redaction, None)
            .map_err(|err| Error::internal(format!("redacting {event_id}: {err}")))?;
    }
    RawValue::from_string(CanonicalJsonValue::Object(json).to_string())
        .map(Some)
        .map_err(Error::internal)
}

/// The events of `ids` in federation format, in order; with `check_visibility`, those the
/// server may not see are redacted. Unknown IDs are left out.
fn pdus(
    storage: &Storage,
    access: &RoomAccess<'_>,
    ids: &[String],
    check_visibility: bool,
) -> Result<Vec<Box<RawValue>>, Error> {
    let mut pdus = Vec::with_capacity(ids.len());
    for id in ids {
        let hidden = check_visibility
            && storage
                .eventid_meta
                .get(id)?
                .is_none_or(|meta| !access.sees(&meta));
        if let Some(pdu) = federation_pdu(storage, &access.rules, id, hidden)? {
            pdus.push(pdu);
        }
    }
    Ok(pdus)
}

/// # `/event/{eventId}`: one event, if its room is ours and the server may see it.
pub(crate) fn event(
    (storage, rooms): (&Storage, &Rooms),
    ours: &ServerName,
    origin: &ServerName,
    event_id: &str,
) -> Result<Box<RawValue>, Error> {
    let meta = event_room(storage, event_id)?;
    let room_id = RoomId::parse(&meta.room_id).map_err(Error::internal)?;
    let access = open_room((storage, rooms), ours, origin, &room_id)?;
    if !access.sees(&meta) {
        return Err(forbidden_event());
    }
    federation_pdu(storage, &access.rules, event_id, false)?
        .ok_or_else(|| Error::not_found("Unknown event"))
}

/// The state before an event and the auth chain of that state, as short event IDs: what
/// `/state` and `/state_ids` answer, planned before a word of it is written (see
/// [`super::streamed`]).
pub(crate) struct StatePlan {
    pub(crate) state: Vec<u64>,
    pub(crate) auth_chain: Vec<u64>,
}

/// # `/state_ids/{roomId}` and `/state/{roomId}`: the state before `event_id` and its auth
/// chain, at any size of the room.
pub(crate) fn state_plan(
    storage: &Storage,
    access: &RoomAccess<'_>,
    event_id: &str,
) -> Result<StatePlan, Error> {
    visible_event(access, storage, event_id)?;
    let snapshot = storage
        .eventid_statebefore
        .get(&event_id.to_owned())?
        .ok_or_else(|| Error::not_found("The state at this event is not known here"))?;
    let state: Vec<u64> = snapshots::load(storage, snapshot)?.into_values().collect();
    let auth_chain = walk_auth_chain(storage, state.iter().copied())?;
    Ok(StatePlan { state, auth_chain })
}

/// # `/event_auth/{roomId}/{eventId}`: the auth chain of one event.
pub(crate) fn event_auth(
    storage: &Storage,
    access: &RoomAccess<'_>,
    event_id: &str,
) -> Result<Vec<u64>, Error> {
    visible_event(access, storage, event_id)?;
    let Some(short) = auth_chain::stored_short(storage, event_id)? else {
        return Err(Error::not_found("Unknown event"));
    };
    walk_auth_chain(storage, [short])
}

/// The auth chain of `start` (short IDs), bounded by time, not by the room's size.
pub(crate) fn walk_auth_chain(
    storage: &Storage,
    start: impl IntoIterator<Item = u64>,
) -> Result<Vec<u64>, Error> {
    auth_chain::walk(storage, start, &mut WorkBound::new(auth_chain::WALK_TIME)).map_err(|err| {
        match err {
            WalkError::Storage(err) => Error::from(err),
            WalkError::TooLong(_) => Error::new(
                ErrorKind::LimitExceeded {
                    retry_after_ms: 60_000,
                },
                "Walking this auth chain takes too long; try again later",
            ),
        }
    })
}

/// The graph edges of a stored event the history walks need (auth chains: see
/// [`auth_chain`]).
#[derive(Debug, Default, Deserialize)]
struct Edges {
    #[serde(default)]
    prev_events: Vec<Reference>,
    #[serde(default)]
    depth: u64,
}

/// A reference to another event: an ID, or (room versions 1 and 2) an ID with its hashes.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Reference {
    Id(String),
    WithHashes(String, IgnoredAny),
}

impl Reference {
    fn id(&self) -> &str {
        match self {
            Reference::Id(id) | Reference::WithHashes(id, _) => id,
        }
    }
}

/// The edges of a stored event (none if we do not have it).
fn edges(storage: &Storage, event_id: &str) -> Result<Option<Edges>, Error> {
    let Some(text) = storage.eventid_pdu.get(&event_id.to_owned())? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|err| Error::internal(format!("stored event {event_id}: {err}")))
}

/// The events of `ids` that are in the room, with their edges.
fn room_events(
    storage: &Storage,
    access: &RoomAccess<'_>,
    ids: &[String],
) -> Result<Vec<(String, EventMeta, Edges)>, Error> {
    let mut found = Vec::new();
    for id in ids.iter().take(MAX_REQUEST_IDS) {
        let Some(meta) = storage.eventid_meta.get(id)? else {
            continue;
        };
        if meta.room_id != access.room_id.as_str() {
            continue;
        }
        if let Some(edges) = edges(storage, id)? {
            found.push((id.clone(), meta, edges));
        }
    }
    Ok(found)
}

/// Refuses a walk none of whose starting points the server may see: it would learn only
/// redacted events, and that some exist.
fn require_one_visible(
    access: &RoomAccess<'_>,
    starts: &[(String, EventMeta, Edges)],
) -> Result<(), Error> {
    if starts.is_empty() {
        return Err(Error::not_found("None of these events is known here"));
    }
    if !starts.iter().any(|(_, meta, _)| access.sees(meta)) {
        return Err(forbidden_event());
    }
    Ok(())
}

/// # `/backfill/{roomId}`: the events of `v` and those before them, newest (deepest)
/// first, up to `limit` (at most [`MAX_HISTORY_LIMIT`]).
pub(crate) fn backfill(
    storage: &Storage,
    access: &RoomAccess<'_>,
    v: &[String],
    limit: u64,
) -> Result<Vec<(String, bool)>, Error> {
    let limit = usize::try_from(limit.min(MAX_HISTORY_LIMIT)).unwrap_or(0);
    let starts = room_events(storage, access, v)?;
    require_one_visible(access, &starts)?;
    // Deepest first, then latest in our stream: the order `/messages` pages backwards.
    let mut heap: BinaryHeap<(u64, u64, String)> = BinaryHeap::new();
    let mut seen: HashSet<String> = HashSet::new();
    for (id, meta, edges) in starts {
        if seen.insert(id.clone()) {
            heap.push((edges.depth, meta.stream, id));
        }
    }
    let mut found = Vec::new();
    while found.len() < limit {
        let Some((_, _, id)) = heap.pop() else {
            break;
        };
        let Some(edges) = edges(storage, &id)? else {
            continue;
        };
        for prev in edges.prev_events.iter().take(MAX_PREV_PER_EVENT) {
            let prev = prev.id();
            if seen.contains(prev) {
                continue;
            }
            seen.insert(prev.to_owned());
            if let Some((prev, meta, edges)) = room_events(storage, access, &[prev.to_owned()])?
                .into_iter()
                .next()
            {
                heap.push((edges.depth, meta.stream, prev));
            }
        }
        found.push(id);
    }
    // Written from the stored text as the answer is sent (see [`super::streamed`]).
    found
        .into_iter()
        .map(|id| {
            let hidden = storage
                .eventid_meta
                .get(&id)?
                .is_none_or(|meta| !access.sees(&meta));
            Ok((id, hidden))
        })
        .collect()
}

/// What `/get_missing_events` asks for.
#[derive(Debug, Deserialize)]
pub(crate) struct MissingEventsRequest {
    #[serde(default)]
    pub(crate) limit: Option<i64>,
    #[serde(default)]
    pub(crate) min_depth: Option<i64>,
    pub(crate) earliest_events: Vec<String>,
    pub(crate) latest_events: Vec<String>,
}

/// # `/get_missing_events/{roomId}`: a breadth-first walk of the `prev_events` of
/// `latest_events`, not entering `earliest_events` nor events below `min_depth`, up to
/// `limit` events (at most [`MAX_HISTORY_LIMIT`]); returned oldest first.
pub(crate) fn missing_events(
    storage: &Storage,
    access: &RoomAccess<'_>,
    request: &MissingEventsRequest,
) -> Result<Vec<Box<RawValue>>, Error> {
    // Negative numbers count as 0: a hostile request gets an empty answer, not an error.
    let limit = request
        .limit
        .map_or(DEFAULT_MISSING_LIMIT, |limit| {
            u64::try_from(limit).unwrap_or(0)
        })
        .min(MAX_HISTORY_LIMIT);
    let limit = usize::try_from(limit).unwrap_or(0);
    let min_depth = request
        .min_depth
        .map_or(0, |depth| u64::try_from(depth).unwrap_or(0));
    let latest = room_events(storage, access, &request.latest_events)?;
    require_one_visible(access, &latest)?;
    let mut seen: HashSet<String> = request
        .earliest_events
        .iter()
        .take(MAX_REQUEST_IDS)
        .cloned()
        .collect();
    seen.extend(latest.iter().map(|(id, _, _)| id.clone()));
    let mut queue: VecDeque<String> = VecDeque::new();
    for (_, _, edges) in &latest {
        enqueue_prev(&mut queue, &mut seen, edges);
    }
    let mut found: Vec<(u64, u64, String)> = Vec::new();
    while found.len() < limit {
        let Some(id) = queue.pop_front() else {
            break;
        };
        let Some((id, meta, edges)) = room_events(storage, access, &[id])?.into_iter().next()
        else {
            continue;
        };
        if edges.depth < min_depth {
            continue;
        }
        enqueue_prev(&mut queue, &mut seen, &edges);
        found.push((edges.depth, meta.stream, id));
    }
    found.sort_unstable();
    let ids: Vec<String> = found.into_iter().map(|(_, _, id)| id).collect();
    pdus(storage, access, &ids, true)
}

fn enqueue_prev(queue: &mut VecDeque<String>, seen: &mut HashSet<String>, edges: &Edges) {
    for prev in edges.prev_events.iter().take(MAX_PREV_PER_EVENT) {
        if seen.insert(prev.id().to_owned()) {
            queue.push_back(prev.id().to_owned());
        }
    }
}

/// # `/timestamp_to_event/{roomId}`: the event the server may see that is closest to `ts`
/// in the direction asked (`forward`: at or after `ts`, else at or before), as its ID and
/// `origin_server_ts`. Events up to stream position `upto` are considered. The same rule
/// as for clients: [`rooms::timestamp`].
pub(crate) fn closest_event(
    storage: &Storage,
    access: &RoomAccess<'_>,
    (ts, forward): (u64, bool),
    upto: u64,
) -> Result<(String, u64), Error> {
    rooms::timestamp::closest_event(
        storage,
        access.room_id,
        (ts, forward),
        (0, upto),
        |position| access.view.allows(position),
    )?
    .ok_or_else(|| Error::not_found("No event found in that direction from that time"))
}

/// The serving side as methods of the federation service, which holds the database and
/// knows our server's name: the HTTP handlers call these and never touch storage.
impl super::Federation {
    /// [`open_room`] for `origin`, in a room of ours.
    pub(crate) fn open_room<'a>(
        &self,
        origin: &ServerName,
        room_id: &'a RoomId,
    ) -> Result<RoomAccess<'a>, Error> {
        open_room(
            (&self.storage, &self.rooms),
            &self.config.server.server_name,
            origin,
            room_id,
        )
    }

    /// [`event`]: one event for `origin`.
    pub(crate) fn serve_event(
        &self,
        origin: &ServerName,
        event_id: &str,
    ) -> Result<Box<RawValue>, Error> {
        event(
            (&self.storage, &self.rooms),
            &self.config.server.server_name,
            origin,
            event_id,
        )
    }

    /// `/state_ids` before `event_id`, written as it is sent.
    pub(crate) fn serve_state_ids(
        &self,
        access: &RoomAccess<'_>,
        event_id: &str,
    ) -> Result<StreamedAnswer, Error> {
        let plan = state_plan(&self.storage, access, event_id)?;
        Ok(self.streamed(
            access,
            vec![
                Part::Text("{\"pdu_ids\":[".to_owned()),
                Part::Ids(plan.state),
                Part::Text("],\"auth_chain_ids\":[".to_owned()),
                Part::Ids(plan.auth_chain),
                Part::Text("]}".to_owned()),
            ],
        ))
    }

    /// `/state` before `event_id`, written as it is sent.
    pub(crate) fn serve_state(
        &self,
        access: &RoomAccess<'_>,
        event_id: &str,
    ) -> Result<StreamedAnswer, Error> {
        let plan = state_plan(&self.storage, access, event_id)?;
        Ok(self.streamed(
            access,
            vec![
                Part::Text("{\"pdus\":[".to_owned()),
                Part::Events(plan.state),
                Part::Text("],\"auth_chain\":[".to_owned()),
                Part::Events(plan.auth_chain),
                Part::Text("]}".to_owned()),
            ],
        ))
    }

    /// [`event_auth`]: the auth chain of one event, written as it is sent.
    pub(crate) fn serve_event_auth(
        &self,
        access: &RoomAccess<'_>,
        event_id: &str,
    ) -> Result<StreamedAnswer, Error> {
        let chain = event_auth(&self.storage, access, event_id)?;
        Ok(self.streamed(
            access,
            vec![
                Part::Text("{\"auth_chain\":[".to_owned()),
                Part::Events(chain),
                Part::Text("]}".to_owned()),
            ],
        ))
    }

    fn streamed(&self, access: &RoomAccess<'_>, parts: Vec<Part>) -> StreamedAnswer {
        StreamedAnswer::new(Arc::clone(&self.storage), access.rules.clone(), parts)
    }

    /// [`backfill`] from the events `v`: a transaction, written from the events' stored
    /// text as it is sent.
    pub(crate) fn serve_backfill(
        &self,
        access: &RoomAccess<'_>,
        v: &[String],
        limit: u64,
    ) -> Result<StreamedAnswer, Error> {
        let events = backfill(&self.storage, access, v, limit)?;
        let head = serde_json::json!({
            "origin": self.config.server.server_name.as_str(),
            "origin_server_ts": crate::matrix::time::now_ms(),
        })
        .to_string();
        // `{"origin":..,"origin_server_ts":..}` opened up for `"pdus":[...]}`.
        let head = format!("{},\"pdus\":[", head.trim_end_matches('}'));
        Ok(self.streamed(
            access,
            vec![
                Part::Text(head),
                Part::Seen(events),
                Part::Text("]}".to_owned()),
            ],
        ))
    }

    /// [`missing_events`].
    pub(crate) fn serve_missing_events(
        &self,
        access: &RoomAccess<'_>,
        request: &MissingEventsRequest,
    ) -> Result<Vec<Box<RawValue>>, Error> {
        missing_events(&self.storage, access, request)
    }

    /// [`closest_event`] to `ts`, among the events readers may see now.
    pub(crate) fn serve_closest_event(
        &self,
        access: &RoomAccess<'_>,
        (ts, forward): (u64, bool),
    ) -> Result<(String, u64), Error> {
        let upto = self.rooms.visible_position();
        closest_event(&self.storage, access, (ts, forward), upto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_read_from_both_reference_formats() {
        let v3: Edges = serde_json::from_str(
            r#"{"prev_events":["$a"],"auth_events":["$b","$c"],"depth":7,"content":{}}"#,
        )
        .expect("v3");
        let ids = |refs: &[Reference]| refs.iter().map(|r| r.id().to_owned()).collect::<Vec<_>>();
        assert_eq!(ids(&v3.prev_events), ["$a"]);
        assert_eq!(v3.depth, 7);
        let v1: Edges = serde_json::from_str(
            r#"{"prev_events":[["$a:x",{"sha256":"h"}]],"auth_events":[["$b:x",{"sha256":"h"}]],"depth":2}"#,
        )
        .expect("v1");
        assert_eq!(ids(&v1.prev_events), ["$a:x"]);
        let bare: Edges = serde_json::from_str("{}").expect("no edges");
        assert!(bare.prev_events.is_empty() && bare.depth == 0);
    }
}
