//! Rooms: the event graph of each room, its current state, its timeline, and who is in it.
//!
//! Every event, local or (later) remote, goes through the same path: it is a PDU that passed
//! the room version's authorization rules against the room's current state, and is stored
//! with its indexes in one batch and flushed before anyone is told it exists. Appends to one
//! room are serialized (one lock per room); rooms proceed in parallel.

pub mod aggregations;
pub mod create;
pub mod format;
pub mod history;
pub mod notifications;
pub mod remote;
pub mod restricted;
pub mod state_res_v1;
pub mod timeline;
pub mod visibility;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ruma::events::StateEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedRoomId, RoomId,
    RoomVersionId, UserId,
};
use tokio::sync::watch;

use crate::error::{Error, ErrorKind};
use crate::matrix::crypto::SigningKey;
use crate::matrix::events::Pdu;
use crate::matrix::events::builder::{BuildError, NewEvent, RoomContext, build_event};
use crate::storage::snapshots;
use crate::storage::{Batch, Storage, StorageError, pair_prefix};

pub use crate::storage::records::RoomRecord;

pub use crate::storage::records::Backfill;

/// How many older events a room joined over federation can take in.
pub const BACKFILL_BLOCK: u64 = 1_000_000;

pub use crate::storage::records::EventMeta;

pub use crate::storage::records::MembershipRecord;

/// A client's transaction: user, device, and the request path's room, type and txn ID.
pub type TxnKey = (String, String, String);

/// An event to store, with the client transaction that sent it, if any.
pub struct StagedEvent {
    pub pdu: Pdu,
    pub json: CanonicalJsonObject,
    pub txn: Option<(TxnKey, String)>,
    /// Sent on to the room's other servers although a remote user sent it (see
    /// [`EventMeta::relay`]).
    pub relay: bool,
}

/// The room service: the per-room locks, the ordering of stream positions, and the
/// notifier `/sync` waits on.
pub struct Rooms {
    locks: Mutex<HashMap<OwnedRoomId, Arc<tokio::sync::Mutex<()>>>>,
    /// Per room, held by a join over federation from checking the answer to storing it
    /// (see [`Rooms::joining`]).
    joins: Mutex<HashMap<OwnedRoomId, Arc<tokio::sync::Mutex<()>>>>,
    /// The global stream: positions, their ordering lock and the visible watermark.
    pub stream: crate::storage::stream::Stream,
}

impl Rooms {
    pub fn new(current_position: u64) -> Rooms {
        Rooms {
            locks: Mutex::new(HashMap::new()),
            joins: Mutex::new(HashMap::new()),
            stream: crate::storage::stream::Stream::new(current_position),
        }
    }

    /// A receiver that changes whenever new events become visible.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.stream.subscribe()
    }

    /// The newest stream position that readers may serve: every event up to it is stored
    /// and on disk.
    pub fn visible_position(&self) -> u64 {
        self.stream.visible_position()
    }

    fn lock_for(&self, room_id: &RoomId) -> Arc<tokio::sync::Mutex<()>> {
        lock_in(&self.locks, room_id)
    }

    /// Taken by a join over federation around checking and storing the resident server's
    /// answer: a refused answer removes the events it wrote, which a second join of the
    /// same room at the same time could otherwise be counting on.
    pub async fn joining(&self, room_id: &RoomId) -> tokio::sync::OwnedMutexGuard<()> {
        lock_in(&self.joins, room_id).lock_owned().await
    }

    /// Sets one profile field and, when membership events carry it, sends a new membership
    /// event with the profile to every room the user is in, as the spec asks. A room that
    /// refuses the change (its rules) keeps the old name; the others update.
    pub async fn set_profile_field(
        &self,
        storage: &Storage,
        signing_key: &SigningKey,
        user_id: &UserId,
        field: &str,
        value: Option<serde_json::Value>,
    ) -> Result<(), Error> {
        let Some(profile) =
            crate::users::profile::set_field(storage, user_id, field, value).await?
        else {
            return Ok(());
        };
        for (room_id, record) in memberships(storage, user_id)? {
            if record.membership != "join" {
                continue;
            }
            let new = NewEvent::state(
                "m.room.member",
                user_id.as_str(),
                crate::users::profile::member_content("join", &profile),
            );
            if let Err(err) = self
                .append(storage, signing_key, &room_id, user_id, new)
                .await
            {
                tracing::warn!(%room_id, "could not update the membership with the new profile: {err}");
            }
        }
        Ok(())
    }

    /// Builds, authorizes and stores an event by `sender` in an existing room.
    pub async fn append(
        &self,
        storage: &Storage,
        key: &SigningKey,
        room_id: &RoomId,
        sender: &UserId,
        new: NewEvent,
    ) -> Result<Pdu, Error> {
        let lock = self.lock_for(room_id);
        let _serialized = lock.lock().await;
        let room = load_room(storage, room_id)?;
        let rules = rules_of(&room)?;
        let (pdu, json) = build_in_room(
            storage,
            key,
            &rules,
            Some(room_id),
            &room.extremities,
            sender,
            new,
        )?;
        let staged = StagedEvent {
            pdu: pdu.clone(),
            json,
            txn: None,
            relay: false,
        };
        self.store_events(storage, room_id, &room.version, vec![staged])
            .await?;
        Ok(pdu)
    }

    /// Like [`Rooms::append`] for a client's `/send`: the transaction ID is checked under the
    /// room's lock and written in the event's batch, so a retry, however timed, returns the
    /// first event instead of sending it twice.
    pub async fn append_with_txn(
        &self,
        storage: &Storage,
        key: &SigningKey,
        room_id: &RoomId,
        sender: &UserId,
        new: NewEvent,
        (txn, txn_id): (TxnKey, String),
    ) -> Result<OwnedEventId, Error> {
        let lock = self.lock_for(room_id);
        let _serialized = lock.lock().await;
        if let Some(event_id) = storage.txn_eventid.get(&txn)? {
            return OwnedEventId::try_from(event_id).map_err(Error::internal);
        }
        let room = load_room(storage, room_id)?;
        let rules = rules_of(&room)?;
        let (pdu, json) = build_in_room(
            storage,
            key,
            &rules,
            Some(room_id),
            &room.extremities,
            sender,
            new,
        )?;
        let event_id = pdu.event_id.clone();
        let staged = StagedEvent {
            pdu,
            json,
            txn: Some((txn, txn_id)),
            relay: false,
        };
        self.store_events(storage, room_id, &room.version, vec![staged])
            .await?;
        Ok(event_id)
    }

    /// Stores authorized events of one room, in order, with all their indexes in one batch;
    /// flushes; then makes them visible and wakes `/sync`.
    ///
    /// Positions are taken and the batch applied under one short lock, so positions are
    /// applied in order; the flush runs outside it (concurrent flushes share the disk's
    /// work); the visible position only moves forward, once the flush is done. A reader
    /// that sees position N has every event up to N, stored and on disk: no `/sync` can step
    /// over an event still being written, or hand out a position a crash could take back.
    pub async fn store_events(
        &self,
        storage: &Storage,
        room_id: &RoomId,
        version: &str,
        events: Vec<StagedEvent>,
    ) -> Result<u64, Error> {
        let Some(last) = events.last() else {
            return Ok(self.visible_position());
        };
        let room = room_id.to_string();
        let previous_state = storage.roomid_room.get(&room)?.and_then(|room| room.state);
        let previous_backfill = storage
            .roomid_room
            .get(&room)?
            .and_then(|room| room.backfill);
        let mut record = RoomRecord {
            version: version.to_owned(),
            extremities: vec![(last.pdu.event_id.clone(), last.pdu.depth)],
            state: previous_state,
            backfill: previous_backfill,
        };
        let rules = rules_of(&record)?;
        // Push rules read the room's state before the events; evaluated before the ordering
        // lock, which is shared by every room and must stay short.
        let pushes = events
            .iter()
            .map(|staged| {
                crate::rooms::notifications::evaluate(storage, &rules, room_id, &staged.json)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut batch = Batch::new();
        record.state = stage_snapshots(storage, &mut batch, &events, previous_state)?;
        storage
            .roomid_room
            .batch_insert(&mut batch, &room, &record)?;
        let position = {
            let _ordered = self.stream.ordered();
            let mut memberships: HashMap<String, MembershipRecord> = HashMap::new();
            let mut position = 0;
            for (staged, push) in events.iter().zip(&pushes) {
                position = storage.next_stream_position()?;
                stage_event(
                    storage,
                    &mut batch,
                    &room,
                    staged,
                    position,
                    &mut memberships,
                    true,
                )?;
                crate::rooms::notifications::stage(
                    storage,
                    &mut batch,
                    &room,
                    staged.pdu.event_id.as_str(),
                    staged.pdu.sender.as_str(),
                    push,
                    position,
                    crate::matrix::time::now_ms(),
                )?;
            }
            storage.apply(batch)?;
            position
        };
        storage.flush().await?;
        self.publish(position);
        Ok(position)
    }

    /// Writes something else a client syncs (account data, say) at the next stream position,
    /// with the same ordering and durability as events: `stage` adds its writes to the batch
    /// for the position it is given.
    pub async fn commit_at_next_position(
        &self,
        storage: &Storage,
        stage: impl FnOnce(&mut Batch, u64) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        self.stream.commit_at_next_position(storage, stage).await
    }

    /// Checks (spec steps 4 to 6) and stores an event from another server whose format
    /// and signatures passed, under the room's lock: accepted events join the timeline and
    /// move the room's state; soft-failed ones are kept in the graph only.
    pub async fn store_remote(
        &self,
        storage: &Storage,
        room_id: &RoomId,
        json: CanonicalJsonObject,
        pdu: Pdu,
        relay: bool,
    ) -> Result<remote::Outcome, remote::Refused> {
        self.store_remote_at_gap(storage, room_id, (json, pdu), relay, &[])
            .await
    }

    /// [`Rooms::store_remote`] for an event after a gap: `gap` gives the state before some
    /// of its prev events, as fetched for it (used for this event only).
    pub async fn store_remote_at_gap(
        &self,
        storage: &Storage,
        room_id: &RoomId,
        (json, pdu): (CanonicalJsonObject, Pdu),
        relay: bool,
        gap: &[(OwnedEventId, NamedState)],
    ) -> Result<remote::Outcome, remote::Refused> {
        let lock = self.lock_for(room_id);
        let _serialized = lock.lock().await;
        let room = room_id.to_string();
        if storage
            .eventid_pdu
            .get(&pdu.event_id.to_string())?
            .is_some()
        {
            return Ok(remote::Outcome::Known);
        }
        let record = storage
            .roomid_room
            .get(&room)?
            .ok_or_else(|| remote::Refused::Invalid(format!("no room {room} here")))?;
        let rules = rules_of(&record).map_err(|err| remote::Refused::Invalid(err.to_string()))?;
        let plan = remote::plan(storage, &record, &rules, &pdu, gap)?;
        let pushes = if plan.soft_failed {
            crate::rooms::notifications::EventPush::default()
        } else {
            crate::rooms::notifications::evaluate(storage, &rules, room_id, &json)?
        };
        let mut batch = Batch::new();
        let mut pending = std::collections::BTreeMap::new();
        // Snapshots are stored as small deltas on the nearest known one (the room's current
        // state, or the state at the single event this one follows) wherever they can be:
        // a whole copy per remote event would cost a large room's state on every message.
        let base = match (record.state, pdu.prev_events.as_slice()) {
            (Some(current), _) if plan.before == plan.current => {
                Some((current, plan.current.clone()))
            }
            (_, [prev]) => match storage.eventid_statebefore.get(&prev.to_string())? {
                Some(id) => Some((id, snapshots::load(storage, id)?)),
                None => None,
            },
            _ => None,
        };
        let before = snapshot_near(storage, &mut batch, &mut pending, base, &plan.before)?;
        let event_id = pdu.event_id.to_string();
        storage
            .eventid_statebefore
            .batch_insert(&mut batch, &event_id, &before)?;
        let current = if plan.new_current == plan.current {
            record.state
        } else {
            Some(snapshot_near(
                storage,
                &mut batch,
                &mut pending,
                Some((before, plan.before.clone())),
                &plan.new_current,
            )?)
        };
        let new_record = RoomRecord {
            version: record.version.clone(),
            extremities: plan.extremities.clone(),
            state: current,
            backfill: record.backfill.clone(),
        };
        storage
            .roomid_room
            .batch_insert(&mut batch, &room, &new_record)?;
        let staged = StagedEvent {
            pdu,
            json,
            txn: None,
            relay,
        };
        if plan.soft_failed {
            let text = CanonicalJsonValue::Object(staged.json.clone()).to_string();
            storage
                .eventid_pdu
                .batch_insert(&mut batch, &event_id, &text)?;
            remote::stage_meta(storage, &mut batch, &room, &event_id, None)?;
            storage.apply(batch)?;
            storage.flush().await?;
            return Ok(remote::Outcome::SoftFailed);
        }
        let position = {
            let _ordered = self.stream.ordered();
            let position = storage.next_stream_position()?;
            let mut memberships = HashMap::new();
            stage_event(
                storage,
                &mut batch,
                &room,
                &staged,
                position,
                &mut memberships,
                false,
            )
            .map_err(|err| remote::Refused::Storage(err.to_string()))?;
            let pending_json = HashMap::from([(event_id.clone(), membership_of(&staged.pdu))]);
            remote::stage_state_diff(
                storage,
                &mut batch,
                &room,
                (&plan.current, &plan.new_current),
                position,
                &pending_json,
            )
            .map_err(|err| remote::Refused::Storage(err.to_string()))?;
            crate::rooms::notifications::stage(
                storage,
                &mut batch,
                &room,
                &event_id,
                staged.pdu.sender.as_str(),
                &pushes,
                position,
                crate::matrix::time::now_ms(),
            )?;
            storage.apply(batch)?;
            position
        };
        storage.flush().await?;
        self.publish(position);
        Ok(remote::Outcome::Accepted)
    }

    /// Stores a room joined over federation: the checked events of its state and auth chain
    /// (kept outside the timeline), the state as it was before our join, and the join
    /// itself in the timeline, all in one batch.
    pub async fn store_joined(
        &self,
        storage: &Storage,
        room_id: &RoomId,
        version: &str,
        events: HashMap<OwnedEventId, Pdu>,
        state_ids: Vec<OwnedEventId>,
        (join_json, join_pdu): (CanonicalJsonObject, Pdu),
    ) -> Result<(), remote::Refused> {
        let lock = self.lock_for(room_id);
        let _serialized = lock.lock().await;
        let room = room_id.to_string();
        let rules = RoomVersionId::try_from(version)
            .ok()
            .and_then(|v| v.rules())
            .ok_or_else(|| remote::Refused::Invalid(format!("room version {version}")))?;
        // The state table as it is, rather than the snapshot the room's record names: a
        // join that stopped between its parts (see `write_state_diff_in_parts`) left rows
        // of its own, which this one then replaces or removes.
        let old_current = table_state(storage, room_id)?;
        let mut batch = Batch::new();
        // The membership of every member event of the state, for the membership indexes.
        let mut memberships_given: HashMap<String, String> = HashMap::new();
        let mut before = snapshots::StateMap::new();
        for id in &state_ids {
            if let Some(pdu) = events.get(id)
                && let Some(state_key) = &pdu.state_key
            {
                let key = snapshots::short_state_key(storage, &pdu.kind.to_string(), state_key)?;
                before.insert(key, snapshots::short_event_id(storage, id.as_str())?);
                if pdu.kind == ruma::events::TimelineEventType::RoomMember {
                    memberships_given.insert(id.to_string(), membership_of(pdu));
                }
            }
        }
        // Our join must be allowed by the state we were given.
        remote::authorize_against(storage, &rules, &join_pdu, &before, &events)
            .map_err(|why| remote::Refused::Unauthorized(format!("our join: {why}")))?;
        drop(events);
        crate::storage::memory::log_usage("join: state named");
        let event_id = join_pdu.event_id.to_string();
        let mut after = before.clone();
        let join_key = snapshots::short_state_key(
            storage,
            "m.room.member",
            join_pdu.state_key.as_deref().unwrap_or_default(),
        )?;
        after.insert(join_key, snapshots::short_event_id(storage, &event_id)?);
        let mut pending = std::collections::BTreeMap::new();
        let before_id = snapshots::store_full(storage, &mut batch, &before, &mut pending)?;
        crate::storage::memory::log_usage("join: snapshot staged");
        let after_id = snapshots::store_full(storage, &mut batch, &after, &mut pending)?;
        storage
            .eventid_statebefore
            .batch_insert(&mut batch, &event_id, &before_id)?;
        // History before the join is fetched later, into positions kept free here.
        let floor = storage.reserve_stream_positions(BACKFILL_BLOCK)?;
        // The state we were given takes the position after that block, our join the next:
        // clients are shown that state as the room's state before the join. The state is
        // written now, in parts (see `write_state_diff_in_parts`).
        let state_position = storage.reserve_stream_positions(1)?;
        remote::write_state_diff_in_parts(
            storage,
            &mut batch,
            &room,
            (&old_current, &before),
            state_position,
            &memberships_given,
        )
        .map_err(|err| remote::Refused::Storage(err.to_string()))?;
        crate::storage::memory::log_usage("join: state written in parts");
        let record = RoomRecord {
            version: version.to_owned(),
            extremities: vec![(join_pdu.event_id.clone(), join_pdu.depth)],
            state: Some(after_id),
            backfill: Some(Backfill {
                floor,
                next: floor + BACKFILL_BLOCK - 1,
                frontier: join_pdu.prev_events.clone(),
            }),
        };
        storage
            .roomid_room
            .batch_insert(&mut batch, &room, &record)?;
        let staged = StagedEvent {
            pdu: join_pdu,
            json: join_json,
            txn: None,
            relay: false,
        };
        let position = {
            let _ordered = self.stream.ordered();
            storage
                .stream_room
                .batch_insert(&mut batch, &state_position, &room)?;
            let position = storage.next_stream_position()?;
            let mut memberships = HashMap::new();
            stage_event(
                storage,
                &mut batch,
                &room,
                &staged,
                position,
                &mut memberships,
                true,
            )
            .map_err(|err| remote::Refused::Storage(err.to_string()))?;
            crate::storage::memory::log_usage("join: final batch staged");
            storage.apply(batch)?;
            position
        };
        crate::storage::memory::log_usage("join: final batch applied");
        storage.flush().await?;
        crate::storage::memory::log_usage("join: final batch flushed");
        self.publish(position);
        tracing::info!(%room_id, state = state_ids.len(), "joined a room over federation");
        Ok(())
    }

    /// Stores events fetched to bridge a gap, already checked, as outliers: kept for the
    /// graph and the auth rules, outside the timeline, never shown. Only this room's
    /// events: their meta names this room.
    pub async fn store_outliers(
        &self,
        storage: &Storage,
        room_id: &RoomId,
        events: Vec<(CanonicalJsonObject, Pdu)>,
    ) -> Result<(), remote::Refused> {
        let lock = self.lock_for(room_id);
        let _serialized = lock.lock().await;
        let room = room_id.to_string();
        let mut batch = Batch::new();
        for (json, pdu) in events {
            let event_id = pdu.event_id.to_string();
            let elsewhere = pdu.room_id.as_deref().is_some_and(|id| id != room_id);
            if elsewhere || storage.eventid_pdu.contains_key(&event_id)? {
                continue;
            }
            let text = CanonicalJsonValue::Object(json).to_string();
            storage
                .eventid_pdu
                .batch_insert(&mut batch, &event_id, &text)?;
            remote::stage_meta(storage, &mut batch, &room, &event_id, None)?;
        }
        storage.apply(batch)?;
        storage.flush().await?;
        Ok(())
    }

    /// Stores events fetched from the room's history, newest first, below everything we
    /// hold, each with a position of the room's history block. Events failing their own
    /// auth events are left out. Returns how many were stored.
    pub async fn store_backfilled(
        &self,
        storage: &Storage,
        room_id: &RoomId,
        rules: &RoomVersionRules,
        mut events: Vec<(CanonicalJsonObject, Pdu)>,
    ) -> Result<usize, Error> {
        let lock = self.lock_for(room_id);
        let _serialized = lock.lock().await;
        let room = room_id.to_string();
        let Some(mut record) = storage.roomid_room.get(&room)? else {
            return Ok(0);
        };
        let Some(mut history) = record.backfill.clone() else {
            return Ok(0);
        };
        events.sort_by_key(|(_, pdu)| std::cmp::Reverse(pdu.depth));
        let fetched: HashMap<OwnedEventId, Pdu> = events
            .iter()
            .map(|(_, pdu)| (pdu.event_id.clone(), pdu.clone()))
            .collect();
        let lookup = |id: &EventId| {
            fetched
                .get(id)
                .cloned()
                .or_else(|| load_pdu(storage, id.as_str(), rules).ok().flatten())
        };
        let mut batch = Batch::new();
        let mut stored = 0;
        let mut frontier: Vec<OwnedEventId> = history.frontier.clone();
        for (json, pdu) in &events {
            let event_id = pdu.event_id.to_string();
            // Events we hold only as part of the state we joined with (no position) join
            // the timeline now; those already in it are skipped.
            let in_timeline = storage
                .eventid_meta
                .get(&event_id)?
                .is_some_and(|meta| meta.stream != 0);
            if history.next <= history.floor || in_timeline {
                continue;
            }
            if let Err(why) = ruma::state_res::check_state_independent_auth_rules(
                &rules.authorization,
                pdu,
                lookup,
            ) {
                tracing::info!(%room_id, event = %event_id, "backfilled event fails auth: {why}");
                continue;
            }
            let position = history.next;
            history.next -= 1;
            let text = CanonicalJsonValue::Object(json.clone()).to_string();
            storage
                .eventid_pdu
                .batch_insert(&mut batch, &event_id, &text)?;
            remote::stage_meta(storage, &mut batch, &room, &event_id, Some(position))?;
            storage.roomstream_eventid.batch_insert(
                &mut batch,
                &(room.clone(), position),
                &event_id,
            )?;
            frontier.retain(|id| id != &pdu.event_id);
            for prev in &pdu.prev_events {
                if !fetched.contains_key(prev)
                    && storage.eventid_pdu.get(&prev.to_string())?.is_none()
                    && !frontier.contains(prev)
                {
                    frontier.push(prev.clone());
                }
            }
            stored += 1;
        }
        // What this answer held (stored, or refused for good) is asked for no more.
        frontier.retain(|id| !fetched.contains_key(id));
        frontier.truncate(64);
        history.frontier = frontier;
        record.backfill = Some(history);
        storage
            .roomid_room
            .batch_insert(&mut batch, &room, &record)?;
        storage.apply(batch)?;
        storage.flush().await?;
        Ok(stored)
    }

    /// Moves the visible position forward (never back) and wakes `/sync`.
    fn publish(&self, position: u64) {
        self.stream.publish(position);
    }
}

/// The snapshot of `target`: `base`'s snapshot itself when equal, a delta on it when
/// `target` only adds or changes a few entries, else a whole copy.
fn snapshot_near(
    storage: &Storage,
    batch: &mut Batch,
    pending: &mut std::collections::BTreeMap<u64, snapshots::SnapshotRecord>,
    base: Option<(u64, snapshots::StateMap)>,
    target: &snapshots::StateMap,
) -> Result<u64, StorageError> {
    const MAX_DELTA: usize = 64;
    if let Some((id, state)) = base {
        let (set, removed) = remote::diff(&state, target);
        if set.is_empty() && removed.is_empty() {
            return Ok(id);
        }
        if removed.is_empty() && set.len() <= MAX_DELTA {
            return snapshots::derive(storage, batch, Some(id), &set, pending);
        }
    }
    snapshots::store_full(storage, batch, target, pending)
}

/// Records, in `batch`, the state snapshot before each event and derives the snapshot
/// after each state event; returns the room's state after the last one. Events are applied
/// in order onto the room's current state (`current`; none for a new room).
fn stage_snapshots(
    storage: &Storage,
    batch: &mut Batch,
    events: &[StagedEvent],
    mut current: Option<u64>,
) -> Result<Option<u64>, Error> {
    let mut pending = std::collections::BTreeMap::new();
    for staged in events {
        let before = match current {
            Some(snapshot) => snapshot,
            None => snapshots::store_full(storage, batch, &Default::default(), &mut pending)?,
        };
        let event_id = staged.pdu.event_id.to_string();
        storage
            .eventid_statebefore
            .batch_insert(batch, &event_id, &before)?;
        current = Some(before);
        if let Some(state_key) = &staged.pdu.state_key {
            let key = snapshots::short_state_key(storage, &staged.pdu.kind.to_string(), state_key)?;
            let event = snapshots::short_event_id(storage, &event_id)?;
            current = Some(snapshots::derive(
                storage,
                batch,
                Some(before),
                &[(key, event)],
                &mut pending,
            )?);
        }
    }
    Ok(current)
}

/// Adds one event and its indexes to `batch` at `position` (with its own state change when
/// `own_state`). `memberships` holds the
/// membership records staged earlier in the same batch.
fn stage_event(
    storage: &Storage,
    batch: &mut Batch,
    room: &str,
    staged: &StagedEvent,
    position: u64,
    memberships: &mut HashMap<String, MembershipRecord>,
    own_state: bool,
) -> Result<(), Error> {
    let pdu = &staged.pdu;
    let event_id = pdu.event_id.to_string();
    let text = CanonicalJsonValue::Object(staged.json.clone()).to_string();
    storage.eventid_pdu.batch_insert(batch, &event_id, &text)?;
    let meta = EventMeta {
        room_id: room.to_owned(),
        stream: position,
        txn: staged
            .txn
            .as_ref()
            .map(|((_, device, _), txn_id)| (device.clone(), txn_id.clone())),
        redacted_by: None,
        relay: staged.relay,
    };
    storage.eventid_meta.batch_insert(batch, &event_id, &meta)?;
    storage
        .roomstream_eventid
        .batch_insert(batch, &(room.to_owned(), position), &event_id)?;
    storage
        .stream_room
        .batch_insert(batch, &position, &room.to_owned())?;
    if let Some((txn, _)) = &staged.txn {
        storage.txn_eventid.batch_insert(batch, txn, &event_id)?;
    }
    if pdu.kind == ruma::events::TimelineEventType::RoomRedaction
        && pdu.state_key.is_none()
        && let Some(target) = &pdu.redacts
        && let Some(mut target_meta) = storage.eventid_meta.get(&target.to_string())?
        && target_meta.room_id == room
        && target_meta.redacted_by.is_none()
    {
        target_meta.redacted_by = Some(event_id.clone());
        storage
            .eventid_meta
            .batch_insert(batch, &target.to_string(), &target_meta)?;
    }
    stage_relation(storage, batch, room, staged, position)?;
    // A remote event's effect on the current state comes from state resolution instead.
    let Some(state_key) = pdu.state_key.as_ref().filter(|_| own_state) else {
        return Ok(());
    };
    let membership =
        (pdu.kind == ruma::events::TimelineEventType::RoomMember).then(|| membership_of(pdu));
    let kind = pdu.kind.to_string();
    history::stage_state_change(
        storage,
        batch,
        room,
        (&kind, state_key),
        &event_id,
        position,
    )?;
    stage_state_entry(
        storage,
        batch,
        room,
        (&pdu.kind.to_string(), state_key),
        (&event_id, membership),
        position,
        memberships,
    )
}

/// Makes `event_id` the room's current state for `(kind, state_key)` from `position` on:
/// the current state and (for member events, whose `membership` is given) the membership
/// indexes. The caller records the change in the state history. `memberships` holds the records staged earlier in the batch.
pub fn stage_state_entry(
    storage: &Storage,
    batch: &mut Batch,
    room: &str,
    (kind, state_key): (&str, &str),
    (event_id, membership): (&str, Option<String>),
    position: u64,
    memberships: &mut HashMap<String, MembershipRecord>,
) -> Result<(), Error> {
    let key = (room.to_owned(), kind.to_owned(), state_key.to_owned());
    storage
        .roomstate_eventid
        .batch_insert(batch, &key, &event_id.to_owned())?;
    let Some(membership) = membership else {
        return Ok(());
    };
    let state_key = state_key.to_owned();
    let event_id = event_id.to_owned();
    let previous = match memberships.get(&state_key) {
        Some(record) => Some(record.clone()),
        None => storage
            .userroom_membership
            .get(&(state_key.clone(), room.to_owned()))?,
    };
    let record = MembershipRecord {
        // A join after a join (a profile change) is not a new join.
        joined_stream: if membership == "join" {
            match &previous {
                Some(previous) if previous.membership == "join" => {
                    previous.joined_stream.or(Some(position))
                }
                _ => Some(position),
            }
        } else {
            previous.as_ref().and_then(|p| p.joined_stream)
        },
        invited_stream: if membership == "invite" {
            Some(position)
        } else {
            previous.as_ref().and_then(|p| p.invited_stream)
        },
        membership,
        stream: position,
        event_id,
    };
    storage.userroom_membership.batch_insert(
        batch,
        &(state_key.clone(), room.to_owned()),
        &record,
    )?;
    storage.roomuser_membership.batch_insert(
        batch,
        &(room.to_owned(), state_key.clone()),
        &record.membership,
    )?;
    memberships.insert(state_key, record);
    Ok(())
}

/// Indexes `m.relates_to`: the child under its parent, and a thread's latest activity.
fn stage_relation(
    storage: &Storage,
    batch: &mut Batch,
    room: &str,
    staged: &StagedEvent,
    position: u64,
) -> Result<(), Error> {
    let relates_to = staged
        .json
        .get("content")
        .and_then(|content| content.as_object())
        .and_then(|content| content.get("m.relates_to"))
        .and_then(|relation| relation.as_object());
    let Some(relates_to) = relates_to else {
        return Ok(());
    };
    let Some(parent) = relates_to.get("event_id").and_then(|id| id.as_str()) else {
        return Ok(());
    };
    // Only relations to events of the same room count.
    if storage
        .eventid_meta
        .get(&parent.to_owned())?
        .is_none_or(|meta| meta.room_id != room)
    {
        return Ok(());
    }
    let event_id = staged.pdu.event_id.to_string();
    storage
        .parent_child
        .batch_insert(batch, &(parent.to_owned(), position), &event_id)?;
    if let Some(rel_type) = relates_to.get("rel_type").and_then(|kind| kind.as_str()) {
        storage.parentrel_child.batch_insert(
            batch,
            &(parent.to_owned(), rel_type.to_owned(), position),
            &(event_id.clone(), staged.pdu.sender.to_string()),
        )?;
    }
    if relates_to.get("rel_type").and_then(|kind| kind.as_str()) == Some("m.thread") {
        storage.roomthread_latest.batch_insert(
            batch,
            &(room.to_owned(), parent.to_owned()),
            &position,
        )?;
    }
    Ok(())
}

fn load_room(storage: &Storage, room_id: &RoomId) -> Result<RoomRecord, Error> {
    storage
        .roomid_room
        .get(&room_id.to_string())?
        .ok_or_else(|| Error::not_found("No such room"))
}

/// The rules of a stored room's version.
/// Whether one of our users is joined to `room_id`: only then do the other servers in the
/// room send us its events, so that our copy of it is current. Read from the joined
/// members' summary (kept in memory): no scan of the room's memberships.
pub fn is_resident(
    storage: &Storage,
    our_server: &ruma::ServerName,
    room_id: &RoomId,
) -> Result<bool, StorageError> {
    Ok(storage
        .joined_summary(room_id.as_str())?
        .servers
        .contains(our_server.as_str()))
}

pub fn rules_of(room: &RoomRecord) -> Result<RoomVersionRules, Error> {
    RoomVersionId::try_from(room.version.as_str())
        .ok()
        .and_then(|version| version.rules())
        .ok_or_else(|| Error::internal(format!("unknown stored room version {}", room.version)))
}

/// Builds an event against the stored current state of `room_id` (or, for the create event
/// of a version 12 room, no room yet).
pub fn build_in_room(
    storage: &Storage,
    key: &SigningKey,
    rules: &RoomVersionRules,
    room_id: Option<&RoomId>,
    extremities: &[(OwnedEventId, u64)],
    sender: &UserId,
    new: NewEvent,
) -> Result<(Pdu, CanonicalJsonObject), Error> {
    let room = room_id.map(ToString::to_string).unwrap_or_default();
    // A lookup that fails must not look like "no such event": a ban that cannot be read
    // would vanish from the checks. The first failure is kept and fails the build.
    let failure: RefCell<Option<StorageError>> = RefCell::new(None);
    let keep = |result: Result<Option<Pdu>, StorageError>| match result {
        Ok(found) => found,
        Err(err) => {
            failure.borrow_mut().get_or_insert(err);
            None
        }
    };
    let state = |kind: &StateEventType, state_key: &str| -> Option<Pdu> {
        let id =
            storage
                .roomstate_eventid
                .get(&(room.clone(), kind.to_string(), state_key.to_owned()));
        keep(id.and_then(|id| match id {
            Some(id) => load_pdu(storage, &id, rules),
            None => Ok(None),
        }))
    };
    let event = |id: &EventId| -> Option<Pdu> { keep(load_pdu(storage, id.as_str(), rules)) };
    let context = RoomContext {
        rules,
        room_id,
        prev_events: extremities,
        state: &state,
        event: &event,
    };
    let built = build_event(new, sender, &context, key, crate::matrix::time::now_ms());
    if let Some(err) = failure.into_inner() {
        return Err(Error::internal(format!("reading room state: {err}")));
    }
    built.map_err(build_error)
}

/// Maps the builder's refusals to the client API's errors.
pub fn build_error(err: BuildError) -> Error {
    match err {
        BuildError::Forbidden(reason) => {
            Error::new(ErrorKind::Forbidden, format!("Not allowed: {reason}"))
        }
        BuildError::TooLarge => {
            Error::new(ErrorKind::TooLarge, "The event is larger than 65536 bytes")
        }
        BuildError::Invalid(reason) => Error::new(ErrorKind::BadJson, reason),
    }
}

/// The stored event `event_id`, parsed.
pub fn load_pdu(
    storage: &Storage,
    event_id: &str,
    rules: &RoomVersionRules,
) -> Result<Option<Pdu>, StorageError> {
    let Some(json) = load_json(storage, event_id)? else {
        return Ok(None);
    };
    Pdu::from_json(&json, rules)
        .map(Some)
        .map_err(|err| StorageError::Corrupt(format!("stored event {event_id}: {err}")))
}

/// The stored canonical JSON of `event_id`.
pub fn load_json(
    storage: &Storage,
    event_id: &str,
) -> Result<Option<CanonicalJsonObject>, StorageError> {
    let Some(text) = storage.eventid_pdu.get(&event_id.to_owned())? else {
        return Ok(None);
    };
    match serde_json::from_str::<serde_json::Value>(&text).map(CanonicalJsonValue::try_from) {
        Ok(Ok(CanonicalJsonValue::Object(object))) => Ok(Some(object)),
        _ => Err(StorageError::Corrupt(format!(
            "stored event {event_id} is not a JSON object"
        ))),
    }
}

/// `content.membership` of a member event (`leave` if unreadable).
pub fn membership_of(pdu: &Pdu) -> String {
    serde_json::from_str::<serde_json::Value>(pdu.content.get())
        .ok()
        .and_then(|content| {
            content
                .get("membership")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "leave".to_owned())
}

/// A user's membership of a room, if any.
pub fn membership(
    storage: &Storage,
    user_id: &UserId,
    room_id: &RoomId,
) -> Result<Option<MembershipRecord>, StorageError> {
    storage
        .userroom_membership
        .get(&(user_id.to_string(), room_id.to_string()))
}

/// Every room a user has a membership in, with it.
pub fn memberships(
    storage: &Storage,
    user_id: &UserId,
) -> Result<Vec<(OwnedRoomId, MembershipRecord)>, StorageError> {
    storage
        .userroom_membership
        .scan_prefix(&pair_prefix(user_id.as_str()))
        .map(|entry| {
            let ((_, room), record) = entry?;
            let room = OwnedRoomId::try_from(room)
                .map_err(|err| StorageError::Corrupt(err.to_string()))?;
            Ok((room, record))
        })
        .collect()
}

pub use crate::storage::StateEntry;

/// The current state of a room.
pub fn current_state(storage: &Storage, room_id: &RoomId) -> Result<Vec<StateEntry>, StorageError> {
    storage
        .roomstate_eventid
        .scan_prefix(&pair_prefix(room_id.as_str()))
        .map(|entry| entry.map(|((_, kind, key), id)| ((kind, key), id)))
        .collect()
}

/// [`current_state`] as a map of short IDs (see [`snapshots`]).
fn table_state(storage: &Storage, room_id: &RoomId) -> Result<snapshots::StateMap, StorageError> {
    let mut state = snapshots::StateMap::new();
    for ((kind, state_key), event_id) in current_state(storage, room_id)? {
        let key = snapshots::short_state_key(storage, &kind, &state_key)?;
        state.insert(key, snapshots::short_event_id(storage, &event_id)?);
    }
    Ok(state)
}

/// The lock of `room_id` in `locks`; locks no one holds are dropped, so the map stays as
/// small as the active rooms.
fn lock_in(
    locks: &Mutex<HashMap<OwnedRoomId, Arc<tokio::sync::Mutex<()>>>>,
    room_id: &RoomId,
) -> Arc<tokio::sync::Mutex<()>> {
    let mut locks = locks.lock().unwrap_or_else(|poison| poison.into_inner());
    locks.retain(|_, lock| Arc::strong_count(lock) > 1);
    locks.entry(room_id.to_owned()).or_default().clone()
}

/// The event of the current state with this type and key.
pub fn state_event(
    storage: &Storage,
    room_id: &RoomId,
    kind: &str,
    state_key: &str,
) -> Result<Option<String>, StorageError> {
    storage
        .roomstate_eventid
        .get(&(room_id.to_string(), kind.to_owned(), state_key.to_owned()))
}

/// A power level named in the room's current `m.room.power_levels` content, by `pick`
/// (levels written as strings already read as integers, see [`power_levels`]).
pub fn power_level_for(
    storage: &Storage,
    room_id: &RoomId,
    pick: impl Fn(&serde_json::Value) -> i64,
) -> Result<i64, StorageError> {
    let content = power_levels(storage, room_id)?.unwrap_or_default();
    Ok(pick(&content))
}

/// The room's current `m.room.power_levels` content, with its levels as integers. Before
/// room version 10 the auth rules also read a level written as a string of an integer
/// (`"50"`, `" +50 "`), so such strings are turned into the integers they name here, where
/// the rules look for levels: the top-level fields and the `users`, `events` and
/// `notifications` maps. From version 10 on only integers count (the event could not have
/// passed the auth rules otherwise), and strings are left as they are, read by no one.
pub fn power_levels(
    storage: &Storage,
    room_id: &RoomId,
) -> Result<Option<serde_json::Value>, StorageError> {
    let Some(mut content) = state_content(storage, room_id, "m.room.power_levels", "")? else {
        return Ok(None);
    };
    let integer_only =
        room_rules(storage, room_id)?.is_none_or(|rules| rules.authorization.integer_power_levels);
    if !integer_only && let Some(fields) = content.as_object_mut() {
        for (name, value) in fields.iter_mut() {
            match (name.as_str(), value) {
                ("users" | "events" | "notifications", serde_json::Value::Object(levels)) => {
                    levels.values_mut().for_each(level_from_string);
                }
                (_, value) => level_from_string(value),
            }
        }
    }
    Ok(Some(content))
}

/// Turns a string naming an integer (as the pre-version-10 rules read it: spaces around, an
/// optional sign) into that integer; anything else stays as it is.
fn level_from_string(value: &mut serde_json::Value) {
    let Some(text) = value.as_str() else {
        return;
    };
    let text = text.trim();
    let level = match text.strip_prefix('+') {
        Some(unsigned) if unsigned.starts_with(['+', '-']) => None,
        Some(unsigned) => unsigned.parse::<i64>().ok(),
        None => text.parse::<i64>().ok(),
    };
    if let Some(level) = level {
        *value = serde_json::Value::from(level);
    }
}

/// The rules of the room's version, as its create event names it (version 1 when it names
/// none); `None` for a version we do not know or a room without a create event.
fn room_rules(
    storage: &Storage,
    room_id: &RoomId,
) -> Result<Option<RoomVersionRules>, StorageError> {
    let Some(create) = state_content(storage, room_id, "m.room.create", "")? else {
        return Ok(None);
    };
    let version = create
        .get("room_version")
        .and_then(|v| v.as_str())
        .unwrap_or("1");
    Ok(RoomVersionId::try_from(version)
        .ok()
        .and_then(|version| version.rules()))
}

/// Whether `user_id` has the power to send state events of type `kind` in the room: the
/// level named for the type in `events`, else `state_default`.
pub fn may_send_state(
    storage: &Storage,
    room_id: &RoomId,
    user_id: &UserId,
    kind: &str,
) -> Result<bool, StorageError> {
    let needed = power_level_for(storage, room_id, |levels| {
        levels["events"][kind]
            .as_i64()
            .or_else(|| levels["state_default"].as_i64())
            .unwrap_or(50)
    })?;
    Ok(user_power_level(storage, room_id, user_id)? >= needed)
}

/// A user's power level: room creators are above everyone in room version 12, otherwise
/// `users`, `users_default`, or (without power levels) 100 for the creator and 0 for others.
pub fn user_power_level(
    storage: &Storage,
    room_id: &RoomId,
    user_id: &UserId,
) -> Result<i64, StorageError> {
    let create = state_content(storage, room_id, "m.room.create", "")?.unwrap_or_default();
    let creator = match create.get("creator").and_then(|c| c.as_str()) {
        Some(creator) => Some(creator.to_owned()),
        None => state_sender(storage, room_id, "m.room.create", "")?,
    };
    let privileged_creators = room_rules(storage, room_id)?
        .is_some_and(|rules| rules.authorization.explicitly_privilege_room_creators);
    let additional = create
        .get("additional_creators")
        .and_then(|list| list.as_array())
        .is_some_and(|list| {
            list.iter()
                .any(|user| user.as_str() == Some(user_id.as_str()))
        });
    if privileged_creators && (creator.as_deref() == Some(user_id.as_str()) || additional) {
        return Ok(i64::MAX);
    }
    match power_levels(storage, room_id)? {
        Some(levels) => Ok(levels
            .get("users")
            .and_then(|users| users.get(user_id.as_str()))
            .and_then(|level| level.as_i64())
            .or_else(|| levels.get("users_default").and_then(|level| level.as_i64()))
            .unwrap_or(0)),
        None => Ok(if creator.as_deref() == Some(user_id.as_str()) {
            100
        } else {
            0
        }),
    }
}

/// The content of a current state event, as JSON.
pub fn state_content(
    storage: &Storage,
    room_id: &RoomId,
    kind: &str,
    state_key: &str,
) -> Result<Option<serde_json::Value>, StorageError> {
    let Some(event_id) = state_event(storage, room_id, kind, state_key)? else {
        return Ok(None);
    };
    Ok(load_json(storage, &event_id)?.and_then(|json| {
        json.get("content")
            .map(|content| serde_json::to_value(content).unwrap_or_default())
    }))
}

pub fn state_sender(
    storage: &Storage,
    room_id: &RoomId,
    kind: &str,
    state_key: &str,
) -> Result<Option<String>, StorageError> {
    let Some(event_id) = state_event(storage, room_id, kind, state_key)? else {
        return Ok(None);
    };
    Ok(load_json(storage, &event_id)?.and_then(|json| {
        json.get("sender")
            .and_then(|sender| sender.as_str())
            .map(str::to_owned)
    }))
}

/// A state named in full: `(type, state_key)` → event.
pub type NamedState = std::collections::BTreeMap<(String, String), OwnedEventId>;
