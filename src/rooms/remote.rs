//! Events from other servers (spec: server-server API, "Checks performed on receipt of a
//! PDU"): each goes through the spec's checks in order, then into the same storage path as
//! local events.
//!
//! 1. A valid event of the room's version (format, size): else dropped.
//! 2. Signed by the servers that must sign it: else dropped.
//! 3. Its content hash matches: else stored redacted.
//! 4. Authorized by its own `auth_events`: else rejected.
//! 5. Authorized by the room's state before it (after its `prev_events`, resolved where they
//!    fork): else rejected.
//! 6. Authorized by the room's current state: else soft-failed (kept in the graph, never
//!    shown to clients nor built upon).
//!
//! An accepted event gets a stream position; its state snapshot before it is recorded, and
//! the room's current state becomes the resolution of the new forward extremities' states.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use ruma::events::StateEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::state_res::utils::event_id_set::EventIdSet;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId};

use super::auth_chain::{WALK_TIME, WalkError, WorkBound};
use super::{EventMeta, MembershipRecord, RoomRecord, StateEntry, load_pdu};
use crate::matrix::events::Pdu;
use crate::storage::snapshots::{self, StateMap};
use crate::storage::{Batch, Storage, StorageError};

/// The most events whose auth events one resolution remembers between its walks: a bound
/// on memory only (an event forgotten is read again), never a refusal of a large room.
const MAX_REMEMBERED_PARENTS: usize = 50_000;

/// What became of a remote event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Stored and shown: it is part of the room now.
    Accepted,
    /// Stored in the graph but failed the current state's checks: not shown, not built on.
    SoftFailed,
    /// Already here.
    Known,
}

/// Why a remote event was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum Refused {
    #[error("invalid event: {0}")]
    Invalid(String),
    #[error("bad signature: {0}")]
    Signature(String),
    #[error("not authorized: {0}")]
    Unauthorized(String),
    #[error("events it builds on are missing: {0}")]
    Missing(String),
    #[error("storage: {0}")]
    Storage(String),
}

impl From<StorageError> for Refused {
    fn from(err: StorageError) -> Refused {
        Refused::Storage(err.to_string())
    }
}

/// Checks 4 to 6 and the state around a remote event whose format and signatures passed,
/// in a room we hold, under the room's lock. Returns the plan to store it.
pub(crate) fn plan(
    storage: &Storage,
    room: &RoomRecord,
    rules: &RoomVersionRules,
    pdu: &Pdu,
    gap: &[(OwnedEventId, super::NamedState)],
) -> Result<Plan, Refused> {
    // 4. Its own auth events: all here, of this room, and authorizing it.
    for id in &pdu.auth_events {
        let Some(event) = load_pdu(storage, id.as_str(), rules)? else {
            return Err(Refused::Missing(format!("auth event {id}")));
        };
        if event.room_id != pdu.room_id && !is_create(&event) {
            return Err(Refused::Unauthorized(format!(
                "auth event {id} is from another room"
            )));
        }
    }
    ruma::state_res::check_state_independent_auth_rules(&rules.authorization, pdu, |id| {
        load_pdu(storage, id.as_str(), rules).ok().flatten()
    })
    .map_err(Refused::Unauthorized)?;
    let by_auth_events: StateMap = auth_events_state(storage, rules, pdu)?;
    authorize_against(storage, rules, pdu, &by_auth_events, &HashMap::new())
        .map_err(|reason| Refused::Unauthorized(format!("by its auth events: {reason}")))?;

    // 5. The state before it: after its prev events, resolved where they fork. A prev
    // event of another room would bring that room's state (and members) into this one.
    let room_id = pdu.room_id.as_ref().map(|id| id.as_str());
    for id in &pdu.prev_events {
        match storage.eventid_meta.get(&id.to_string())? {
            None => return Err(Refused::Missing(format!("prev event {id}"))),
            Some(meta) if Some(meta.room_id.as_str()) != room_id => {
                return Err(Refused::Invalid(format!(
                    "prev event {id} is an event of another room"
                )));
            }
            Some(_) => {}
        }
    }
    // The current state is read once: a prev event whose state before is the current
    // one (a message on the only extremity, the usual case) starts from it rather than
    // decoding the same snapshot again (a large room's state is megabytes of it).
    let current = match room.state {
        Some(snapshot) => snapshots::load(storage, snapshot)?,
        None => StateMap::new(),
    };
    let states: Vec<StateMap> = pdu
        .prev_events
        .iter()
        .map(|id| match gap.iter().find(|(prev, _)| prev == id) {
            Some((_, named)) => state_after_given(storage, id.as_str(), named),
            None => state_after_known(storage, id.as_str(), (room.state, &current)),
        })
        .collect::<Result<_, _>>()?;
    let before = resolve(EventSource::stored(storage, rules), states)?;
    authorize_against(storage, rules, pdu, &before, &HashMap::new())
        .map_err(|reason| Refused::Unauthorized(format!("by the state before it: {reason}")))?;

    // 6. The current state: failing here only soft-fails it. An event on another branch
    // than our forward extremities is judged by the state the room will have with that
    // branch: the resolution of the current state and the state before it. (A user who
    // joined on that branch, which we learned of only now, is no reason to hide their
    // message; a ban here still wins the resolution. Where the states cannot be resolved,
    // the current state alone decides.)
    let soft_failed = authorize_against(storage, rules, pdu, &current, &HashMap::new()).is_err()
        && (before == current
            || resolve(
                EventSource::stored(storage, rules),
                vec![current.clone(), before.clone()],
            )
            .ok()
            .is_none_or(|merged| {
                authorize_against(storage, rules, pdu, &merged, &HashMap::new()).is_err()
            }));

    // The new forward extremities, and the room's state after them.
    let mut extremities: Vec<(OwnedEventId, u64)> = room
        .extremities
        .iter()
        .filter(|(id, _)| !pdu.prev_events.contains(id))
        .cloned()
        .collect();
    let mut after = before.clone();
    if let Some(state_key) = &pdu.state_key {
        let key = snapshots::short_state_key(storage, &pdu.kind.to_string(), state_key)?;
        let event = snapshots::short_event_id(storage, pdu.event_id.as_str())?;
        after.insert(key, event);
    }
    let new_current = if soft_failed {
        current.clone()
    } else if extremities.is_empty() {
        // It builds on every extremity: the room's state is the state after it.
        after.clone()
    } else {
        // The event is not stored yet, and takes part in this resolution.
        let events = EventSource {
            incoming: Some(pdu),
            ..EventSource::stored(storage, rules)
        };
        resolve(events, vec![current.clone(), after.clone()])?
    };
    if !soft_failed {
        if !is_prev_of_any(storage, rules, pdu, &extremities)? {
            extremities.push((pdu.event_id.clone(), pdu.depth));
        }
    } else {
        extremities = room.extremities.clone();
    }
    Ok(Plan {
        before,
        current,
        new_current,
        extremities,
        soft_failed,
    })
}

/// Whether `pdu` is a prev event of one of `extremities`: an outlier promoted to the
/// timeline after events building on it (see [`is_outlier`]) is no forward extremity.
/// Only an event already stored can be one, so only then are the extremities read (a
/// room has a few; the first 20 are looked at).
fn is_prev_of_any(
    storage: &Storage,
    rules: &RoomVersionRules,
    pdu: &Pdu,
    extremities: &[(OwnedEventId, u64)],
) -> Result<bool, Refused> {
    if !storage
        .eventid_pdu
        .contains_key(&pdu.event_id.to_string())?
    {
        return Ok(false);
    }
    for (id, _) in extremities.iter().take(20) {
        if load_pdu(storage, id.as_str(), rules)?
            .is_some_and(|event| event.prev_events.contains(&pdu.event_id))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// How a checked remote event is to be stored.
pub(crate) struct Plan {
    /// The state before the event (its snapshot).
    pub(crate) before: StateMap,
    /// The room's state before this event arrived, and after.
    pub(crate) current: StateMap,
    pub(crate) new_current: StateMap,
    pub(crate) extremities: Vec<(OwnedEventId, u64)>,
    pub(crate) soft_failed: bool,
}

/// The entries of `new` that differ from `old` (set or changed), and those `old` had and
/// `new` lacks.
pub(crate) fn diff(old: &StateMap, new: &StateMap) -> (Vec<(u64, u64)>, Vec<u64>) {
    let set = new
        .iter()
        .filter(|(key, event)| old.get(key) != Some(event))
        .map(|(key, event)| (*key, *event))
        .collect();
    let removed = old
        .keys()
        .filter(|key| !new.contains_key(key))
        .copied()
        .collect();
    (set, removed)
}

/// Adds to `batch` the current-state changes from `old` to `new` at `position`: the state
/// table, its history and the membership indexes, as for a local state event. `pending`
/// gives the membership of member events not readable from storage yet.
pub(crate) fn stage_state_diff(
    storage: &Storage,
    batch: &mut Batch,
    room: &str,
    states: (&StateMap, &StateMap),
    position: u64,
    pending: &HashMap<String, String>,
) -> Result<(), crate::error::Error> {
    state_diff(storage, batch, room, states, (position, pending), false)
}

/// Writes per part in [`write_state_diff_in_parts`]. Each write into an index leaf keeps a
/// copy of the leaf (up to 64 small rows, see vendor/sled/PATCH.md) until its part ends.
const STATE_PART_WRITES: usize = 500;

/// Writes the current-state changes from `old` to `new` like [`stage_state_diff`], but in
/// parts: the database keeps a copy of every tree page an atomic batch rewrites until the
/// batch ends, so the whole state of a large room in one batch (10,000 entries, ~30,000
/// rows) would cost ~80 MB at once. Only what clients read is kept for `last`, the
/// caller's batch that makes the join visible: the entries of local users (their
/// memberships) and the list of what changed at `position` (`roomstream_state`). The parts
/// before it write rows nobody reads until then: the state table, its history at a
/// position kept free for it, and remote users' memberships. If the server stops between
/// parts, the room is not joined (its record is written by `last`); joining again rewrites
/// the rows.
pub(crate) fn write_state_diff_in_parts(
    storage: &Storage,
    last: &mut Batch,
    room: &str,
    states: (&StateMap, &StateMap),
    position: u64,
    pending: &HashMap<String, String>,
) -> Result<(), crate::error::Error> {
    state_diff(storage, last, room, states, (position, pending), true)
}

/// [`stage_state_diff`] (everything into `last`) or, `in_parts`,
/// [`write_state_diff_in_parts`] (only our users' entries and the changed keys into
/// `last`, the rest written in parts as it goes).
fn state_diff(
    storage: &Storage,
    last: &mut Batch,
    room: &str,
    (old, new): (&StateMap, &StateMap),
    (position, pending): (u64, &HashMap<String, String>),
    in_parts: bool,
) -> Result<(), crate::error::Error> {
    let (set, removed) = diff(old, new);
    let mut memberships: HashMap<String, MembershipRecord> = HashMap::new();
    // Short IDs while the parts are written, named once at the end: 50,000 pairs of
    // strings held through the whole write would be freed among the database's pages
    // allocated meanwhile, holes the allocator cannot give back.
    let mut changed_keys = Vec::with_capacity(set.len());
    let mut part = Batch::new();
    for (key, event) in set {
        let ((kind, state_key), event_id) = named_entry(storage, key, event)?;
        let membership = if kind == "m.room.member" {
            Some(match pending.get(&event_id) {
                Some(membership) => membership.clone(),
                None => super::load_json(storage, &event_id)?
                    .map_or_else(|| "leave".to_owned(), |json| member_state(&json)),
            })
        } else {
            None
        };
        let entry_in_last = !in_parts
            || (membership.is_some() && storage.userid_account.contains_key(&state_key)?);
        super::stage_state_entry(
            storage,
            if entry_in_last { &mut *last } else { &mut part },
            room,
            (&kind, &state_key),
            (&event_id, membership),
            position,
            &mut memberships,
        )?;
        super::history::stage_history_row(
            storage,
            if in_parts { &mut part } else { &mut *last },
            room,
            (&kind, &state_key),
            &event_id,
            position,
        )?;
        changed_keys.push(key);
        if in_parts && part.len() >= STATE_PART_WRITES {
            write_part(storage, std::mem::take(&mut part))?;
            // Each state key comes once in a diff, so the records staged so far are not
            // read again: not kept through the rest of a large write (see above).
            memberships = HashMap::new();
        }
    }
    // (A resolution that drops an entry is not kept in the history: state resolution
    // keeps every key some fork has, so this does not happen in practice.)
    for key in removed {
        let Some((kind, state_key)) = storage.short_statekey.get(&key)? else {
            continue;
        };
        storage.roomstate_eventid.batch_remove(
            if in_parts { &mut part } else { &mut *last },
            &(room.to_owned(), kind, state_key),
        );
    }
    if in_parts {
        write_part(storage, part)?;
    }
    let changed_keys = snapshots::named_keys(storage, &changed_keys)?;
    super::history::stage_changed_keys(storage, last, room, changed_keys, position)?;
    Ok(())
}

/// Applies one part of a large write and frees the page copies it left behind.
fn write_part(storage: &Storage, part: Batch) -> Result<(), StorageError> {
    storage.apply(part)?;
    storage.collect_garbage();
    Ok(())
}

fn member_state(json: &CanonicalJsonObject) -> String {
    json.get("content")
        .and_then(CanonicalJsonValue::as_object)
        .and_then(|content| content.get("membership"))
        .and_then(CanonicalJsonValue::as_str)
        .unwrap_or("leave")
        .to_owned()
}

fn named_entry(storage: &Storage, key: u64, event: u64) -> Result<StateEntry, StorageError> {
    let mut named = snapshots::named(storage, &StateMap::from([(key, event)]))?;
    named
        .pop()
        .ok_or_else(|| StorageError::Corrupt(format!("state entry {key} has no name")))
}

/// Records a stored remote event's metadata: accepted ones in the timeline at `position`,
/// soft-failed ones without a position (never shown).
pub(crate) fn stage_meta(
    storage: &Storage,
    batch: &mut Batch,
    room: &str,
    event_id: &str,
    position: Option<u64>,
) -> Result<(), StorageError> {
    let meta = EventMeta {
        room_id: room.to_owned(),
        stream: position.unwrap_or(0),
        txn: None,
        redacted_by: None,
        relay: false,
    };
    storage
        .eventid_meta
        .batch_insert(batch, &event_id.to_owned(), &meta)
}

fn is_create(event: &Pdu) -> bool {
    event.kind == ruma::events::TimelineEventType::RoomCreate
}

/// The state the event's own `auth_events` make up.
fn auth_events_state(
    storage: &Storage,
    rules: &RoomVersionRules,
    pdu: &Pdu,
) -> Result<StateMap, Refused> {
    let mut state = StateMap::new();
    // From room version 12 the create event is named by the room ID, not in auth_events.
    let mut ids: Vec<OwnedEventId> = pdu.auth_events.clone();
    if rules.authorization.room_create_event_id_as_room_id
        && let Some(room_id) = &pdu.room_id
        && let Ok(create) = OwnedEventId::try_from(format!("${}", &room_id.as_str()[1..]))
    {
        ids.push(create);
    }
    for id in &ids {
        if let Some(event) = load_pdu(storage, id.as_str(), rules)?
            && let Some(state_key) = &event.state_key
        {
            let key = snapshots::short_state_key(storage, &event.kind.to_string(), state_key)?;
            let short = snapshots::short_event_id(storage, id.as_str())?;
            state.insert(key, short);
        }
    }
    Ok(state)
}

/// The room's state after `event_id`: the state before it, plus itself if a state event;
/// starting from `known` (a snapshot already read, and its ID) when that is the state
/// before `event_id`.
fn state_after_known(
    storage: &Storage,
    event_id: &str,
    (known_id, known): (Option<u64>, &StateMap),
) -> Result<StateMap, Refused> {
    let snapshot = storage
        .eventid_statebefore
        .get(&event_id.to_owned())?
        .ok_or_else(|| Refused::Missing(format!("the state at {event_id}")))?;
    let state = if known_id == Some(snapshot) {
        known.clone()
    } else {
        snapshots::load(storage, snapshot)?
    };
    with_event(storage, state, event_id)
}

/// The state after `event_id` from the state before it as given (fetched at a gap).
fn state_after_given(
    storage: &Storage,
    event_id: &str,
    before: &super::NamedState,
) -> Result<StateMap, Refused> {
    let mut state = StateMap::new();
    for ((kind, state_key), id) in before {
        let key = snapshots::short_state_key(storage, kind, state_key)?;
        state.insert(key, snapshots::short_event_id(storage, id.as_str())?);
    }
    with_event(storage, state, event_id)
}

/// `state` with `event_id` applied, if it is a state event.
fn with_event(storage: &Storage, mut state: StateMap, event_id: &str) -> Result<StateMap, Refused> {
    let Some(json) = super::load_json(storage, event_id)? else {
        return Err(Refused::Missing(format!("event {event_id}")));
    };
    if let (Some(kind), Some(state_key)) = (
        json.get("type").and_then(CanonicalJsonValue::as_str),
        json.get("state_key").and_then(CanonicalJsonValue::as_str),
    ) {
        let key = snapshots::short_state_key(storage, kind, state_key)?;
        let short = snapshots::short_event_id(storage, event_id)?;
        state.insert(key, short);
    }
    Ok(state)
}

/// Runs the state-dependent auth rules for `pdu` against `state`; events not stored yet
/// may be given in `unstored`.
pub(crate) fn authorize_against(
    storage: &Storage,
    rules: &RoomVersionRules,
    pdu: &Pdu,
    state: &StateMap,
    unstored: &HashMap<OwnedEventId, Pdu>,
) -> Result<(), String> {
    // Only the few entries the rules ask for are named: a room's whole state is not read
    // for each event (this runs for every PDU of every transaction).
    ruma::state_res::check_state_dependent_auth_rules(
        &rules.authorization,
        pdu,
        |kind: &StateEventType, key: &str| {
            let short_key = storage
                .statekey_short
                .get(&(kind.to_string(), key.to_owned()))
                .ok()??;
            let id = storage.short_eventid.get(state.get(&short_key)?).ok()??;
            if let Some(pdu) = OwnedEventId::try_from(id.as_str())
                .ok()
                .and_then(|id| unstored.get(&id))
            {
                return Some(pdu.clone());
            }
            load_pdu(storage, &id, rules).ok().flatten()
        },
    )
}

/// Where state resolution reads events: storage, and the incoming event while it is
/// checked (it is stored only once its checks pass, but a state after it names it).
#[derive(Clone, Copy)]
pub(crate) struct EventSource<'a> {
    pub(crate) storage: &'a Storage,
    pub(crate) rules: &'a RoomVersionRules,
    pub(crate) incoming: Option<&'a Pdu>,
}

impl<'a> EventSource<'a> {
    pub(crate) fn stored(storage: &'a Storage, rules: &'a RoomVersionRules) -> EventSource<'a> {
        EventSource {
            storage,
            rules,
            incoming: None,
        }
    }

    pub(crate) fn get(&self, event_id: &str) -> Result<Option<Pdu>, StorageError> {
        match self.incoming {
            Some(pdu) if pdu.event_id.as_str() == event_id => Ok(Some(pdu.clone())),
            _ => load_pdu(self.storage, event_id, self.rules),
        }
    }
}

/// Resolves forked states with the room version's state resolution (one state needs none):
/// version 1 for room version 1, ruma's version 2 (2.1 from room version 12) for the others.
pub(crate) fn resolve(events: EventSource<'_>, states: Vec<StateMap>) -> Result<StateMap, Refused> {
    let EventSource { storage, rules, .. } = events;
    let mut states: Vec<StateMap> = states;
    states.dedup();
    if states.len() <= 1 {
        return Ok(states.pop().unwrap_or_default());
    }
    let Some(v2_rules) = rules.state_res.v2_rules() else {
        // Room version 1: ruma has no version 1 of the algorithm; ours.
        return super::state_res_v1::resolve_stored(events, &states);
    };
    let named: Vec<ruma::state_res::StateMap<OwnedEventId>> = states
        .iter()
        .map(|state| to_ruma_map(storage, state))
        .collect::<Result<_, _>>()?;
    // The forked states mostly share their auth chains: each event is read once for all
    // of them (an event naming 20 forks would otherwise read a large room's chain 20 times).
    let mut parents = AuthParents::new();
    let auth_chains = named
        .iter()
        .map(|state| {
            walk_auth_chain_with(events, state.values().cloned(), &mut parents)
                .map(|chain| chain.into_iter().collect::<EventIdSet<_>>())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let fetch = |id: &EventId| events.get(id.as_str()).ok().flatten();
    let subgraph = |conflicted: &ruma::state_res::StateMap<Vec<OwnedEventId>>| {
        conflicted_subgraph(events, conflicted)
            .ok()
            .map(|set| set.into_iter().collect::<EventIdSet<_>>())
    };
    let resolved = ruma::state_res::resolve(
        &rules.authorization,
        v2_rules,
        named.iter(),
        auth_chains,
        fetch,
        subgraph,
    )
    .map_err(|err| Refused::Unauthorized(format!("state resolution failed: {err}")))?;
    let mut state = StateMap::new();
    for ((kind, state_key), event_id) in resolved {
        let key = snapshots::short_state_key(storage, &kind.to_string(), &state_key)?;
        let short = snapshots::short_event_id(storage, event_id.as_str())?;
        state.insert(key, short);
    }
    Ok(state)
}

fn to_ruma_map(
    storage: &Storage,
    state: &StateMap,
) -> Result<ruma::state_res::StateMap<OwnedEventId>, Refused> {
    snapshots::named(storage, state)?
        .into_iter()
        .map(|((kind, state_key), event_id)| {
            let id = OwnedEventId::try_from(event_id.as_str())
                .map_err(|err| Refused::Invalid(err.to_string()))?;
            Ok(((StateEventType::from(kind), state_key), id))
        })
        .collect()
}

/// Every event reachable from `start` through `auth_events` (the events themselves
/// included). A room's size is no reason to stop: the walk is bounded by time
/// ([`super::auth_chain::WALK_TIME`]), as the work of one request.
fn walk_auth_chain(
    events: EventSource<'_>,
    start: impl IntoIterator<Item = OwnedEventId>,
) -> Result<HashSet<OwnedEventId>, Refused> {
    walk_auth_chain_with(events, start, &mut AuthParents::new())
}

/// The auth events of events read by earlier walks (none for an event not here).
type AuthParents = HashMap<OwnedEventId, Vec<OwnedEventId>>;

/// [`walk_auth_chain`], reading each event's auth events from `parents` when an earlier
/// walk read it, and keeping those it reads there.
fn walk_auth_chain_with(
    events: EventSource<'_>,
    start: impl IntoIterator<Item = OwnedEventId>,
    parents: &mut AuthParents,
) -> Result<HashSet<OwnedEventId>, Refused> {
    let mut seen: HashSet<OwnedEventId> = HashSet::new();
    let mut todo: Vec<OwnedEventId> = start.into_iter().collect();
    let mut bound = WorkBound::new(WALK_TIME);
    while let Some(id) = todo.pop() {
        bound.step().map_err(too_long)?;
        if !seen.insert(id.clone()) {
            continue;
        }
        if let Some(known) = parents.get(&id) {
            todo.extend(known.iter().cloned());
            continue;
        }
        let auth_events = events
            .get(id.as_str())?
            .map(|event| event.auth_events)
            .unwrap_or_default();
        todo.extend(auth_events.iter().cloned());
        // The memory kept for later walks is bounded like one walk's.
        if parents.len() < MAX_REMEMBERED_PARENTS {
            parents.insert(id, auth_events);
        }
    }
    Ok(seen)
}

/// The conflicted state subgraph (state resolution v2.1): the events on `auth_events` paths
/// between conflicted events, the conflicted events included.
fn conflicted_subgraph(
    events: EventSource<'_>,
    conflicted: &ruma::state_res::StateMap<Vec<OwnedEventId>>,
) -> Result<HashSet<OwnedEventId>, Refused> {
    let targets: BTreeSet<OwnedEventId> = conflicted.values().flatten().cloned().collect();
    let ancestors = walk_auth_chain(events, targets.iter().cloned())?;
    // An ancestor is in the subgraph when some conflicted event lies among its own ancestors.
    let mut reaches: BTreeMap<OwnedEventId, bool> = BTreeMap::new();
    let mut subgraph = HashSet::new();
    let mut bound = WorkBound::new(WALK_TIME);
    for id in &ancestors {
        if reaches_target(events, id, &targets, (&mut reaches, &mut bound))? {
            subgraph.insert(id.clone());
        }
    }
    Ok(subgraph)
}

fn reaches_target(
    events: EventSource<'_>,
    id: &OwnedEventId,
    targets: &BTreeSet<OwnedEventId>,
    (memo, bound): (&mut BTreeMap<OwnedEventId, bool>, &mut WorkBound),
) -> Result<bool, Refused> {
    // Iterative depth-first walk; each event is decided once.
    let mut stack = vec![(id.clone(), false)];
    while let Some((current, expanded)) = stack.pop() {
        if memo.contains_key(&current) {
            continue;
        }
        if targets.contains(&current) {
            memo.insert(current, true);
            continue;
        }
        let parents = events
            .get(current.as_str())?
            .map(|event| event.auth_events)
            .unwrap_or_default();
        if expanded {
            let reaches = parents.iter().any(|p| memo.get(p) == Some(&true));
            memo.insert(current, reaches);
        } else {
            stack.push((current, true));
            for parent in parents {
                if !memo.contains_key(&parent) {
                    stack.push((parent, false));
                }
            }
        }
        bound.step().map_err(too_long)?;
    }
    Ok(memo.get(id) == Some(&true))
}

/// A walk that ran out of time (or storage that failed under it).
fn too_long(err: WalkError) -> Refused {
    match err {
        WalkError::Storage(err) => Refused::from(err),
        WalkError::TooLong(limit) => Refused::Storage(format!(
            "walking the auth graph took longer than {limit:?}; the event can be sent again"
        )),
    }
}

/// Whether `event_id` is held only as an outlier: stored (as part of a state or auth chain
/// another server gave us) but never placed in the timeline nor checked as a timeline event.
/// Such an event is not "known" when it arrives as a timeline event (`/send`,
/// `get_missing_events`): it is checked then, and shown if it passes. Otherwise a server
/// could hide a message from our users by naming it first in a state answer. Outliers
/// are the events without a stream position and without a state snapshot before them;
/// soft-failed events have that snapshot (their checks ran) and stay soft-failed.
pub(crate) fn is_outlier(storage: &Storage, event_id: &str) -> Result<bool, StorageError> {
    let id = event_id.to_owned();
    Ok(storage
        .eventid_meta
        .get(&id)?
        .is_some_and(|meta| meta.stream == 0)
        && storage.eventid_statebefore.get(&id)?.is_none())
}

/// Stages an event kept outside the timeline (an outlier: part of a room's state or auth
/// chain as another server gave it, not yet placed in our stream).
pub(crate) fn stage_outlier(
    storage: &Storage,
    batch: &mut Batch,
    room: &str,
    event_id: &str,
    canonical_json: &str,
) -> Result<(), StorageError> {
    storage
        .eventid_pdu
        .batch_insert(batch, &event_id.to_owned(), &canonical_json.to_owned())?;
    stage_meta(storage, batch, room, event_id, None)
}

/// Removes outliers written while checking an answer that was then refused: only events of
/// `room_id` still without a place in the timeline, `per_batch` at a time (a batch costs
/// memory in proportion to its writes).
pub(crate) async fn forget_outliers(
    storage: &Storage,
    room_id: &ruma::RoomId,
    ids: &[String],
    per_batch: usize,
) -> Result<(), StorageError> {
    let room = room_id.to_string();
    for chunk in ids.chunks(per_batch.max(1)) {
        let mut batch = Batch::new();
        for id in chunk {
            let outlier = storage
                .eventid_meta
                .get(id)?
                .is_some_and(|meta| meta.room_id == room && meta.stream == 0);
            if outlier {
                storage.eventid_pdu.batch_remove(&mut batch, id);
                storage.eventid_meta.batch_remove(&mut batch, id);
            }
        }
        storage.apply(batch)?;
    }
    storage.flush().await
}
