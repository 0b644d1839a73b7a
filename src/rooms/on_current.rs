//! Remote events that build on the room's current state, and where every remote event's
//! state snapshots go.
//!
//! In a busy room nearly every event from another server names the room's single forward
//! extremity as its only prev event: the state before it *is* the room's current state (the
//! state after that extremity), and the spec's checks 5 and 6 (the state before it, the
//! current state) are one check. That check reads only the few events the auth rules ask
//! for (the create event, power levels, join rules, the sender's and the target's member
//! events, a third-party invite), by `(type, state_key)`, from the current-state index,
//! and keeps them decoded per room for as long as the room's state does not change
//! ([`CurrentAuth`]). Its snapshots are the room's own (a message) or one delta on it (a
//! state event). Nothing in it costs in proportion to the size of the room's state, so a
//! room of 100,000 state events receives as fast as a small one.
//!
//! Any other event (one on a fork, after a gap, naming several prev events) takes the
//! whole path of [`super::remote::plan`], whose states are whole maps.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use ruma::events::StateEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::{EventId, OwnedEventId, OwnedRoomId, RoomId};

use super::remote::{Plan, Refused};
use super::staging::snapshot_near;
use super::{RoomRecord, load_pdu};
use crate::matrix::events::Pdu;
use crate::storage::snapshots::{self, SnapshotRecord, StateMap};
use crate::storage::{Batch, Storage, StorageError};

/// Rooms whose current auth events are kept decoded: the rooms receiving now.
const CACHED_ROOMS: usize = 16;

/// Events kept decoded per room: the handful every event needs, and the member events of
/// the room's recent senders (a member event is about 1 KiB decoded: at most 4 MiB in all).
const CACHED_EVENTS_PER_ROOM: usize = 256;

/// The decoded events of each room's current state that the auth rules read, by
/// `(type, state_key)`, valid for one state snapshot of the room: a state change gives the
/// room a new snapshot, and the events kept for the old one are dropped on the next look.
#[derive(Default)]
pub(crate) struct CurrentAuth {
    rooms: Mutex<HashMap<OwnedRoomId, RoomAuth>>,
}

/// The cached auth events of one room's current state (`None`: no such state entry).
struct RoomAuth {
    snapshot: u64,
    by_key: HashMap<(String, String), Option<Arc<Pdu>>>,
}

impl CurrentAuth {
    /// The room's current state event at `(kind, state_key)`, `snapshot` being the room's
    /// current state: from the cache, else read from the current-state index and kept.
    pub(super) fn state_event(
        &self,
        storage: &Storage,
        rules: &RoomVersionRules,
        (room_id, snapshot): (&RoomId, u64),
        (kind, state_key): (&str, &str),
    ) -> Result<Option<Arc<Pdu>>, StorageError> {
        let key = (kind.to_owned(), state_key.to_owned());
        if let Some(room) = self.lock().get(room_id)
            && room.snapshot == snapshot
            && let Some(event) = room.by_key.get(&key)
        {
            return Ok(event.clone());
        }
        let event = match super::state_event(storage, room_id, kind, state_key)? {
            Some(id) => load_pdu(storage, &id, rules)?.map(Arc::new),
            None => None,
        };
        let mut rooms = self.lock();
        if !rooms.contains_key(room_id)
            && rooms.len() >= CACHED_ROOMS
            && let Some(other) = rooms.keys().next().cloned()
        {
            rooms.remove(&other);
        }
        let room = rooms.entry(room_id.to_owned()).or_insert_with(|| RoomAuth {
            snapshot,
            by_key: HashMap::new(),
        });
        if room.snapshot != snapshot || room.by_key.len() >= CACHED_EVENTS_PER_ROOM {
            room.snapshot = snapshot;
            room.by_key.clear();
        }
        room.by_key.insert(key, event.clone());
        Ok(event)
    }

    /// An event of the room's current state by its ID, if it is cached.
    pub(super) fn by_id(
        &self,
        room_id: &RoomId,
        snapshot: u64,
        event_id: &EventId,
    ) -> Option<Arc<Pdu>> {
        let rooms = self.lock();
        let room = rooms
            .get(room_id)
            .filter(|room| room.snapshot == snapshot)?;
        room.by_key
            .values()
            .flatten()
            .find(|event| event.event_id == event_id)
            .cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OwnedRoomId, RoomAuth>> {
        self.rooms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whether `pdu` builds on the room's current state alone: its only prev event is the
/// room's only forward extremity, so the state before it is the room's current state.
pub(crate) fn builds_on_current(room: &RoomRecord, pdu: &Pdu) -> bool {
    room.state.is_some()
        && matches!(
            (room.extremities.as_slice(), pdu.prev_events.as_slice()),
            ([(extremity, _)], [prev]) if extremity == prev
        )
}

/// Checks 4 to 6 for an event that [`builds_on_current`]: its own auth events, then the
/// room's current state, which is also the state before it (so an event it authorizes is
/// never soft-failed). Returns the entry it sets in the room's state, as short IDs, if it
/// is a state event.
pub(crate) fn check(
    storage: &Storage,
    cache: &CurrentAuth,
    (room_id, room): (&RoomId, &RoomRecord),
    rules: &RoomVersionRules,
    pdu: &Pdu,
) -> Result<Option<(u64, u64)>, Refused> {
    let snapshot = room
        .state
        .ok_or_else(|| Refused::Missing(format!("the current state of {room_id}")))?;
    let load = |id: &EventId| -> Result<Option<Arc<Pdu>>, StorageError> {
        match cache.by_id(room_id, snapshot, id) {
            Some(event) => Ok(Some(event)),
            None => Ok(load_pdu(storage, id.as_str(), rules)?.map(Arc::new)),
        }
    };

    // 4. Its own auth events: all here, of this room, and authorizing it.
    let mut auth_events: Vec<Arc<Pdu>> = Vec::with_capacity(pdu.auth_events.len() + 1);
    for id in &pdu.auth_events {
        let Some(event) = load(id)? else {
            return Err(Refused::Missing(format!("auth event {id}")));
        };
        if event.room_id != pdu.room_id && event.kind != ruma::events::TimelineEventType::RoomCreate
        {
            return Err(Refused::Unauthorized(format!(
                "auth event {id} is from another room"
            )));
        }
        auth_events.push(event);
    }
    // From room version 12 the create event is named by the room ID, not in auth_events.
    if rules.authorization.room_create_event_id_as_room_id
        && let Ok(create) = OwnedEventId::try_from(format!("${}", &room_id.as_str()[1..]))
        && let Some(event) = load(&create)?
    {
        auth_events.push(event);
    }
    ruma::state_res::check_state_independent_auth_rules(&rules.authorization, pdu, |id| {
        auth_events
            .iter()
            .find(|event| event.event_id == id)
            .cloned()
            .or_else(|| load(id).ok().flatten())
    })
    .map_err(Refused::Unauthorized)?;
    // The state its auth events make up (a later one of the same key wins, as in a map).
    let mut by_auth_events: HashMap<(String, String), Arc<Pdu>> = HashMap::new();
    for event in &auth_events {
        if let Some(state_key) = &event.state_key {
            by_auth_events.insert((event.kind.to_string(), state_key.clone()), event.clone());
        }
    }
    ruma::state_res::check_state_dependent_auth_rules(
        &rules.authorization,
        pdu,
        |kind: &StateEventType, state_key: &str| {
            by_auth_events
                .get(&(kind.to_string(), state_key.to_owned()))
                .cloned()
        },
    )
    .map_err(|reason| Refused::Unauthorized(format!("by its auth events: {reason}")))?;

    // 5 and 6. The state before it, which is the room's current state.
    let failed_read = std::cell::Cell::new(None);
    ruma::state_res::check_state_dependent_auth_rules(
        &rules.authorization,
        pdu,
        |kind: &StateEventType, state_key: &str| {
            cache
                .state_event(
                    storage,
                    rules,
                    (room_id, snapshot),
                    (&kind.to_string(), state_key),
                )
                .unwrap_or_else(|err| {
                    failed_read.set(Some(err));
                    None
                })
        },
    )
    .map_err(|reason| Refused::Unauthorized(format!("by the state before it: {reason}")))?;
    // A state entry that could not be read is no reason to judge the event on less.
    if let Some(err) = failed_read.take() {
        return Err(Refused::from(err));
    }
    let Some(state_key) = &pdu.state_key else {
        return Ok(None);
    };
    let key = snapshots::short_state_key(storage, &pdu.kind.to_string(), state_key)?;
    let event = snapshots::short_event_id(storage, pdu.event_id.as_str())?;
    Ok(Some((key, event)))
}

/// Where a checked remote event goes in the room's state: the snapshot before it, the
/// room's state after it, its forward extremities, and the change to the current state
/// (the entries it had, and has after) for the state table.
pub(crate) struct Placed {
    pub(crate) before: u64,
    pub(crate) current: Option<u64>,
    pub(crate) extremities: Vec<(OwnedEventId, u64)>,
    pub(crate) soft_failed: bool,
    pub(crate) state_change: (StateMap, StateMap),
}

/// Places an event checked by [`check`]: the state before it is the room's current
/// snapshot, and a state event derives one delta from it (its own entry).
pub(crate) fn place_on_current(
    storage: &Storage,
    batch: &mut Batch,
    pending: &mut BTreeMap<u64, SnapshotRecord>,
    room: &RoomRecord,
    pdu: &Pdu,
    entry: Option<(u64, u64)>,
) -> Result<Placed, StorageError> {
    let before = room
        .state
        .ok_or_else(|| StorageError::Corrupt("placing an event on no state".to_owned()))?;
    let (current, state_change) = match entry {
        None => (before, Default::default()),
        Some(entry) => (
            snapshots::derive(storage, batch, Some(before), &[entry], pending)?,
            (StateMap::new(), StateMap::from([entry])),
        ),
    };
    Ok(Placed {
        before,
        current: Some(current),
        extremities: vec![(pdu.event_id.clone(), pdu.depth)],
        soft_failed: false,
        state_change,
    })
}

/// Places an event checked by [`super::remote::plan`], whose states are whole maps.
/// Snapshots are stored as small deltas on the nearest known one (the room's current
/// state, or the state at the single event this one follows) wherever they can be: a
/// whole copy per remote event would cost a large room's state on every message.
pub(crate) fn place_planned(
    storage: &Storage,
    batch: &mut Batch,
    pending: &mut BTreeMap<u64, SnapshotRecord>,
    room: &RoomRecord,
    pdu: &Pdu,
    plan: Plan,
) -> Result<Placed, StorageError> {
    let base = match (room.state, pdu.prev_events.as_slice()) {
        (Some(current), _) if plan.before == plan.current => Some((current, plan.current.clone())),
        (_, [prev]) => match storage.eventid_statebefore.get(&prev.to_string())? {
            Some(id) => Some((id, snapshots::load(storage, id)?)),
            None => None,
        },
        _ => None,
    };
    let before = snapshot_near(storage, batch, pending, base, &plan.before)?;
    let current = if plan.new_current == plan.current {
        room.state
    } else {
        Some(snapshot_near(
            storage,
            batch,
            pending,
            Some((before, plan.before)),
            &plan.new_current,
        )?)
    };
    Ok(Placed {
        before,
        current,
        extremities: plan.extremities,
        soft_failed: plan.soft_failed,
        state_change: (plan.current, plan.new_current),
    })
}

#[cfg(test)]
mod tests {
    use ruma::UserId;
    use serde_json::json;

    use crate::matrix::crypto::SigningKey;
    use crate::matrix::events::builder::NewEvent;
    use crate::rooms::Rooms;
    use crate::rooms::create::CreateRoomRequest;

    /// Our own sends build on the auth events kept for the room's current state: a message
    /// reads none of them from the database again. A state change is seen by the next send.
    #[actix_web::test]
    async fn sends_use_the_kept_auth_events_until_the_state_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = std::sync::Arc::new(crate::storage::testing::open(&dir.path().join("data")));
        let rooms = Rooms::new(storage.clone(), SigningKey::generate(), 0);
        let alice = UserId::parse("@alice:here.test").expect("user");
        let room_id = rooms
            .create_room(&alice, CreateRoomRequest::default(), "11")
            .await
            .expect("room");
        let message = || NewEvent::message("m.room.message", json!({ "body": "hi" }));
        let first = rooms
            .append(&room_id, &alice, message())
            .await
            .expect("first message");

        // Its auth events, taken from under the database: the next message does not miss them.
        let mut taken = Vec::new();
        for id in &first.auth_events {
            let json = storage.eventid_pdu.get(&id.to_string()).expect("read");
            storage.eventid_pdu.remove(&id.to_string()).expect("remove");
            taken.push((id.to_string(), json.expect("stored")));
        }
        rooms
            .append(&room_id, &alice, message())
            .await
            .expect("built on the kept auth events");
        for (id, json) in &taken {
            storage.eventid_pdu.insert(id, json).expect("put back");
        }

        // Alice lowers her own level below what messages now need: refused at once.
        let levels = json!({
            "users": { alice.as_str(): 0 },
            "events": { "m.room.message": 50 },
        });
        rooms
            .append(
                &room_id,
                &alice,
                NewEvent::state("m.room.power_levels", "", levels),
            )
            .await
            .expect("power levels");
        let refused = rooms.append(&room_id, &alice, message()).await;
        assert!(refused.is_err(), "sent with the old power levels");
    }
}
