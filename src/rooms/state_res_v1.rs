//! State resolution version 1, the algorithm of room version 1 (spec: rooms/v1, "State
//! resolution"). ruma implements versions 2 and 2.1 only, so this one is ours.
//!
//! Keys the forked states agree on (or that only some of them have) are kept. For the keys
//! where they name different events (the *conflicts*), the resolved state R is built in
//! four passes, each seeing the passes before it:
//!
//! 1. `m.room.power_levels`, 2. `m.room.join_rules`, 3. `m.room.member`, each conflicted key
//!    by iterative auth checks: its events sorted by ascending depth then descending SHA-1
//!    of the event ID, the first taken, each next one taken in its place while it passes
//!    the authorization rules in R, up to the first that fails.
//! 4. Every other conflicted key: the event with the highest depth, then lowest SHA-1 of
//!    the event ID, that passes the authorization rules in R.
//!
//! Where the spec's prose leaves room, this follows Synapse, whose algorithm the prose
//! describes and whose servers hold most version 1 rooms (servers must agree):
//! - each conflicted key is resolved on its own, and a pass's results join R only when the
//!   whole pass is done, so that the result never depends on which key went first;
//! - the first pass takes the power levels event of state key `""` only (it is the one the
//!   rules read); other state keys of that type go with the "other" keys;
//! - when no event of an "other" key passes, the last one in that order (lowest depth) is
//!   kept, as the key must have some value;
//! - only the state-dependent rules are checked: the state-independent ones look at an
//!   event's own `auth_events`, not at R, and every candidate passed them when received;
//! - an event a state names but that is not stored here is left out of the weighing (the
//!   event being received is weighed: [`EventSource`] hands it over before it is stored);
//!   a disputed key left with one event takes it in the result, but the checks of the
//!   other keys do not see it (they read the undisputed state only).
//!
//! The module's first half is pure (events in, choices out) and tested next to the code;
//! [`resolve_stored`] feeds it from storage, bounded by [`MAX_CONFLICTED_EVENTS`].

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use ruma::events::StateEventType;
use ruma::room_version_rules::AuthorizationRules;
use ruma::state_res::{StateMap, check_state_dependent_auth_rules};
use ruma::{OwnedEventId, OwnedRoomId};

use super::remote::{EventSource, Refused};
use crate::matrix::events::Pdu;
use crate::storage::StorageError;
use crate::storage::snapshots;

/// The most conflicted events one resolution of room version 1 considers (each is loaded
/// and costs a few auth checks): a bound on one resolution's work and memory. Conflicts
/// are between forks, not the whole state: a large room rarely has many.
pub(crate) const MAX_CONFLICTED_EVENTS: usize = 50_000;

/// A `(type, state_key)` pair, named.
type Key = (StateEventType, String);

/// Splits `states` into the entries none of them disputes (a key some states lack is not
/// disputed) and, for each disputed key, every event the states name for it.
pub(crate) fn separate<K: Ord + Clone, V: Ord + Clone>(
    states: &[BTreeMap<K, V>],
) -> (BTreeMap<K, V>, BTreeMap<K, BTreeSet<V>>) {
    let mut named: BTreeMap<K, BTreeSet<V>> = BTreeMap::new();
    for state in states {
        for (key, value) in state {
            named.entry(key.clone()).or_default().insert(value.clone());
        }
    }
    let mut unconflicted = BTreeMap::new();
    let mut conflicted = BTreeMap::new();
    for (key, values) in named {
        if values.len() == 1 {
            if let Some(value) = values.into_iter().next() {
                unconflicted.insert(key, value);
            }
        } else {
            conflicted.insert(key, values);
        }
    }
    (unconflicted, conflicted)
}

/// The passes over conflicted keys whose events the authorization rules read, in order.
#[derive(Clone, Copy)]
enum AuthPass {
    PowerLevels,
    JoinRules,
    Members,
}

impl AuthPass {
    const IN_ORDER: [AuthPass; 3] = [
        AuthPass::PowerLevels,
        AuthPass::JoinRules,
        AuthPass::Members,
    ];

    fn takes(self, (kind, state_key): &Key) -> bool {
        match self {
            AuthPass::PowerLevels => {
                *kind == StateEventType::RoomPowerLevels && state_key.is_empty()
            }
            AuthPass::JoinRules => *kind == StateEventType::RoomJoinRules,
            AuthPass::Members => *kind == StateEventType::RoomMember,
        }
    }
}

/// Chooses an event for each conflicted key. `conflicted` holds the candidate events of
/// each key; `unconflicted` looks up the undisputed entries of the states. Keys with no
/// candidate get no entry.
pub(crate) fn resolve_conflicts(
    rules: &AuthorizationRules,
    conflicted: &StateMap<Vec<Pdu>>,
    unconflicted: &dyn Fn(&StateEventType, &str) -> Option<Pdu>,
) -> StateMap<OwnedEventId> {
    let mut resolved: StateMap<Pdu> = StateMap::new();
    for pass in AuthPass::IN_ORDER {
        let mut chosen = Vec::new();
        for (key, events) in conflicted.iter().filter(|(key, _)| pass.takes(key)) {
            let r = partial_state(&resolved, conflicted, unconflicted);
            if let Some(event) = iterative_auth_checks(rules, key, events, &r) {
                chosen.push((key.clone(), event.clone()));
            }
        }
        resolved.extend(chosen);
    }
    let mut chosen = Vec::new();
    for (key, events) in conflicted
        .iter()
        .filter(|(key, _)| !resolved.contains_key(key))
    {
        let r = partial_state(&resolved, conflicted, unconflicted);
        if let Some(event) = first_authorized_by_depth(rules, events, &r) {
            chosen.push((key.clone(), event.clone()));
        }
    }
    resolved.extend(chosen);
    resolved
        .into_iter()
        .map(|(key, event)| (key, event.event_id))
        .collect()
}

/// R so far: the undisputed entries and the keys resolved by earlier passes; a disputed
/// key not resolved yet has no entry.
fn partial_state<'a>(
    resolved: &'a StateMap<Pdu>,
    conflicted: &'a StateMap<Vec<Pdu>>,
    unconflicted: &'a dyn Fn(&StateEventType, &str) -> Option<Pdu>,
) -> impl Fn(&StateEventType, &str) -> Option<Pdu> + 'a {
    move |kind, state_key| {
        let key = (kind.clone(), state_key.to_owned());
        if let Some(event) = resolved.get(&key) {
            return Some(event.clone());
        }
        if conflicted.contains_key(&key) {
            return None;
        }
        unconflicted(kind, state_key)
    }
}

/// The first three passes for one key: the events by ascending depth then descending SHA-1
/// of the event ID; the first stands, and each next one replaces it in R while it passes
/// the rules in R. The last one standing is the key's value.
fn iterative_auth_checks<'a>(
    rules: &AuthorizationRules,
    key: &Key,
    events: &'a [Pdu],
    r: &dyn Fn(&StateEventType, &str) -> Option<Pdu>,
) -> Option<&'a Pdu> {
    let mut ordered: Vec<&Pdu> = events.iter().collect();
    ordered.sort_by_cached_key(|event| (event.depth, Reverse(sha1_of_event_id(event))));
    let (first, rest) = ordered.split_first()?;
    let mut standing: &Pdu = first;
    for event in rest {
        let with_standing = |kind: &StateEventType, state_key: &str| {
            if *kind == key.0 && state_key == key.1 {
                Some(standing.clone())
            } else {
                r(kind, state_key)
            }
        };
        if check_state_dependent_auth_rules(rules, *event, with_standing).is_err() {
            break;
        }
        standing = event;
    }
    Some(standing)
}

/// The last pass for one key: the event of highest depth, then lowest SHA-1 of the event
/// ID, that passes the rules in R; if none does, the last in that order.
fn first_authorized_by_depth<'a>(
    rules: &AuthorizationRules,
    events: &'a [Pdu],
    r: &dyn Fn(&StateEventType, &str) -> Option<Pdu>,
) -> Option<&'a Pdu> {
    let mut ordered: Vec<&Pdu> = events.iter().collect();
    ordered.sort_by_cached_key(|event| (Reverse(event.depth), sha1_of_event_id(event)));
    ordered
        .iter()
        .find(|event| check_state_dependent_auth_rules(rules, **event, r).is_ok())
        .or(ordered.last())
        .copied()
}

/// `sha1(event_id)` of the spec's tie-break, over the ID's UTF-8 bytes.
fn sha1_of_event_id(event: &Pdu) -> Vec<u8> {
    ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        event.event_id.as_str().as_bytes(),
    )
    .as_ref()
    .to_vec()
}

/// Resolves stored states (by short IDs) with state resolution v1: only the disputed keys
/// and the entries the auth checks read are named and loaded, not the whole states.
pub(crate) fn resolve_stored(
    events: EventSource<'_>,
    states: &[snapshots::StateMap],
) -> Result<snapshots::StateMap, Refused> {
    let EventSource { storage, rules, .. } = events;
    let (unconflicted, conflicted) = separate(states);
    let disputed_events: usize = conflicted.values().map(BTreeSet::len).sum();
    if disputed_events > MAX_CONFLICTED_EVENTS {
        return Err(Refused::Invalid(format!(
            "state resolution: {disputed_events} conflicted events, more than \
             {MAX_CONFLICTED_EVENTS}"
        )));
    }
    let candidates = load_candidates(events, &conflicted)?;
    let mut named: StateMap<Vec<Pdu>> = StateMap::new();
    let mut short_keys: HashMap<Key, u64> = HashMap::new();
    // Keys with a single stored event: nothing to resolve, but (as in Synapse) they join
    // the result only, not the state the checks read, which stays the undisputed one.
    let mut lone = Vec::new();
    for Disputed {
        short_key,
        key,
        events,
    } in candidates
    {
        match events.len() {
            0 => {}
            1 => lone.push((short_key, events[0].event_id.clone())),
            _ => {
                short_keys.insert(key.clone(), short_key);
                named.insert(key, events);
            }
        }
    }
    let undisputed = StoredState::new(events, &unconflicted);
    let lookup = |kind: &StateEventType, state_key: &str| undisputed.get(kind, state_key);
    let chosen = resolve_conflicts(&rules.authorization, &named, &lookup);
    undisputed.into_result()?;
    let chosen = chosen
        .into_iter()
        .filter_map(|(key, event_id)| Some((*short_keys.get(&key)?, event_id)));
    let mut state = unconflicted;
    for (short_key, event_id) in lone.into_iter().chain(chosen) {
        state.insert(
            short_key,
            snapshots::short_event_id(storage, event_id.as_str())?,
        );
    }
    Ok(state)
}

/// A disputed key, by short ID and by name, with its events that are stored here.
struct Disputed {
    short_key: u64,
    key: Key,
    events: Vec<Pdu>,
}

/// The disputed keys named, with their events loaded. An event not stored here is left
/// out (as Synapse does); events from more than one room are refused.
fn load_candidates(
    events: EventSource<'_>,
    conflicted: &BTreeMap<u64, BTreeSet<u64>>,
) -> Result<Vec<Disputed>, Refused> {
    let storage = events.storage;
    let mut room: Option<OwnedRoomId> = None;
    let mut candidates = Vec::with_capacity(conflicted.len());
    for (short_key, shorts) in conflicted {
        let (kind, state_key) = storage
            .short_statekey
            .get(short_key)?
            .ok_or_else(|| StorageError::Corrupt(format!("unknown short state key {short_key}")))?;
        let mut loaded = Vec::with_capacity(shorts.len());
        for short in shorts {
            let Some(event_id) = storage.short_eventid.get(short)? else {
                continue;
            };
            let Some(event) = events.get(&event_id)? else {
                continue;
            };
            if event.room_id.is_none() || (room.is_some() && room != event.room_id) {
                return Err(Refused::Invalid(format!(
                    "state resolution: event {event_id} is not of the room"
                )));
            }
            room.clone_from(&event.room_id);
            loaded.push(event);
        }
        candidates.push(Disputed {
            short_key: *short_key,
            key: (StateEventType::from(kind), state_key),
            events: loaded,
        });
    }
    Ok(candidates)
}

/// The undisputed entries of stored states, looked up by name as the auth rules ask, each
/// event loaded once. A storage error is kept and reported after the resolution (the auth
/// rules' lookups cannot fail).
struct StoredState<'a> {
    events: EventSource<'a>,
    state: &'a snapshots::StateMap,
    loaded: RefCell<HashMap<u64, Option<Pdu>>>,
    error: RefCell<Option<StorageError>>,
}

impl<'a> StoredState<'a> {
    fn new(events: EventSource<'a>, state: &'a snapshots::StateMap) -> StoredState<'a> {
        StoredState {
            events,
            state,
            loaded: RefCell::new(HashMap::new()),
            error: RefCell::new(None),
        }
    }

    fn get(&self, kind: &StateEventType, state_key: &str) -> Option<Pdu> {
        match self.load(kind, state_key) {
            Ok(event) => event,
            Err(err) => {
                self.error.borrow_mut().get_or_insert(err);
                None
            }
        }
    }

    fn load(&self, kind: &StateEventType, state_key: &str) -> Result<Option<Pdu>, StorageError> {
        let name = (kind.to_string(), state_key.to_owned());
        let storage = self.events.storage;
        let Some(short_key) = storage.statekey_short.get(&name)? else {
            return Ok(None);
        };
        let Some(short_event) = self.state.get(&short_key) else {
            return Ok(None);
        };
        if let Some(event) = self.loaded.borrow().get(short_event) {
            return Ok(event.clone());
        }
        let event = match storage.short_eventid.get(short_event)? {
            Some(event_id) => self.events.get(&event_id)?,
            None => None,
        };
        self.loaded.borrow_mut().insert(*short_event, event.clone());
        Ok(event)
    }

    fn into_result(self) -> Result<(), StorageError> {
        match self.error.into_inner() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
#[path = "state_res_v1_tests.rs"]
mod tests;
