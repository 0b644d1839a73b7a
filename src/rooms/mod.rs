//! Rooms: the event graph of each room, its current state, its timeline, and who is in it.
//!
//! Every event, local or (later) remote, goes through the same path: it is a PDU that passed
//! the room version's authorization rules against the room's current state, and is stored
//! with its indexes in one batch and flushed before anyone is told it exists. Appends to one
//! room are serialized (one lock per room); rooms proceed in parallel.

pub(crate) mod aggregations;
pub(crate) mod auth_chain;
mod backfilled;
pub(crate) mod blocked;
pub(crate) mod create;
pub(crate) mod format;
pub(crate) mod history;
mod joins;
pub(crate) mod notifications;
mod on_current;
mod outside;
pub(crate) mod pagination;
mod reads;
pub(crate) mod relations;
pub(crate) mod remote;
pub(crate) mod restricted;
pub(crate) mod retention;
pub(crate) mod search;
mod staging;
mod state;
pub(crate) mod state_res_v1;
pub(crate) mod timeline;
pub(crate) mod timestamp;
mod unflushed;
mod upgrade;
pub(crate) mod visibility;

pub(crate) use unflushed::Unflushed;

pub(crate) use crate::storage::StateEntry;
pub(crate) use staging::stage_state_entry;
use staging::{stage_event, stage_snapshots};
pub(crate) use state::{
    NamedState, build_error, build_in_room, current_state, is_resident, load_json, load_pdu,
    may_send_state, membership, membership_of, memberships, power_level_for, power_levels,
    rules_of, state_content, state_event, state_sender, user_power_level,
};
use state::{load_room, lock_in, table_state};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, atomic::Ordering};

use ruma::room_version_rules::RoomVersionRules;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, RoomId, RoomVersionId,
    UserId,
};
use tokio::sync::watch;

use crate::error::Error;
use crate::matrix::crypto::SigningKey;
use crate::matrix::events::Pdu;
use crate::matrix::events::builder::NewEvent;
use crate::storage::snapshots;
use crate::storage::{Batch, Storage, StorageError};

pub(crate) use crate::storage::records::RoomRecord;

pub(crate) use crate::storage::records::Backfill;

/// How many older events a room joined over federation can take in.
pub(crate) const BACKFILL_BLOCK: u64 = 1_000_000;

pub(crate) use crate::storage::records::EventMeta;

pub(crate) use crate::storage::records::MembershipRecord;

/// A client's transaction: user, device, and the request path's room, type and txn ID.
pub(crate) type TxnKey = (String, String, String);

/// What [`Rooms::append_once`] did: stored a new event (whole when the caller wants it,
/// else its ID: a client's `/send` needs only the ID, and copying the event on every message
/// would be waste), or found the one the client's transaction sent before.
enum Appended {
    New(Box<Pdu>),
    Sent(OwnedEventId),
    Earlier(OwnedEventId),
}

/// An event to store, with the client transaction that sent it, if any.
pub(crate) struct StagedEvent {
    pub(crate) pdu: Pdu,
    pub(crate) json: CanonicalJsonObject,
    pub(crate) txn: Option<(TxnKey, String)>,
    /// Sent on to the room's other servers although a remote user sent it (see
    /// [`EventMeta::relay`]).
    pub(crate) relay: bool,
}

/// The room service: the per-room locks, the ordering of stream positions, and the
/// notifier `/sync` waits on.
pub(crate) struct Rooms {
    locks: Mutex<HashMap<OwnedRoomId, Arc<tokio::sync::Mutex<()>>>>,
    /// Per room, held by a join over federation from checking the answer to storing it
    /// (see [`Rooms::joining`]).
    joins: Mutex<HashMap<OwnedRoomId, Arc<tokio::sync::Mutex<()>>>>,
    /// The global stream: positions, their ordering lock and the visible watermark.
    pub(crate) stream: crate::storage::stream::Stream,
    /// The database: the room service writes the events, state, memberships, timelines,
    /// relations and notifications, and reads them for the rest.
    storage: Arc<Storage>,
    /// Signs the events this server builds (a local user's, or a join it makes).
    signing_key: SigningKey,
    /// Permits to run the checks of a remote event (state resolution, auth chain walks) on
    /// the blocking pool: see [`REMOTE_CHECK_WORKERS`].
    remote_checks: Arc<tokio::sync::Semaphore>,
    /// Events added to rooms' timelines since start (local, remote, backfilled): a metric.
    events_persisted: std::sync::atomic::AtomicU64,
    /// The decoded auth events of the current state of the rooms receiving remote events.
    current_auth: on_current::CurrentAuth,
    /// Other servers' users' memberships over time, per room, for what they may see.
    server_members: visibility::ServerMembers,
}

/// How many remote events are checked at once (spec steps 4 to 6, with state resolution
/// where their prev events fork). The checks run on tokio's blocking pool so the HTTP
/// workers keep answering while a hostile event makes us resolve many forked states; two
/// at a time bounds the CPU remote servers can take (a Pi has 4 cores, and local users'
/// events and `/sync` need the others), and the per-origin limit of the federation layer
/// leaves one of them to other servers while one server's costly event is checked.
pub(crate) const REMOTE_CHECK_WORKERS: usize = 2;

impl Rooms {
    /// The room service over `storage`, signing with `signing_key`; the stream starts at
    /// `current_position`, the newest one stored.
    pub(crate) fn new(
        storage: Arc<Storage>,
        signing_key: SigningKey,
        current_position: u64,
    ) -> Rooms {
        Rooms {
            storage,
            signing_key,
            locks: Mutex::new(HashMap::new()),
            joins: Mutex::new(HashMap::new()),
            stream: crate::storage::stream::Stream::new(current_position),
            remote_checks: Arc::new(tokio::sync::Semaphore::new(REMOTE_CHECK_WORKERS)),
            events_persisted: Default::default(),
            current_auth: on_current::CurrentAuth::default(),
            server_members: visibility::ServerMembers::default(),
        }
    }

    /// What `server` may see of the room's history (see [`visibility::ServerVisibility`]).
    pub(crate) fn server_visibility(
        &self,
        room_id: &RoomId,
        server: &str,
    ) -> Result<visibility::ServerVisibility, StorageError> {
        visibility::ServerVisibility::for_server(
            &self.storage,
            room_id,
            server,
            &self.server_members,
        )
    }

    /// Events added to rooms' timelines since start, flushed to disk.
    pub(crate) fn events_persisted(&self) -> u64 {
        self.events_persisted.load(Ordering::Relaxed)
    }

    /// A receiver that changes whenever new events become visible.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.stream.subscribe()
    }

    /// The newest stream position that readers may serve: every event up to it is stored
    /// and on disk.
    pub(crate) fn visible_position(&self) -> u64 {
        self.stream.visible_position()
    }

    fn lock_for(&self, room_id: &RoomId) -> Arc<tokio::sync::Mutex<()>> {
        lock_in(&self.locks, room_id)
    }

    /// Taken by a join over federation around checking and storing the resident server's
    /// answer: a refused answer removes the events it wrote, which a second join of the
    /// same room at the same time could otherwise be counting on.
    pub(crate) async fn joining(&self, room_id: &RoomId) -> tokio::sync::OwnedMutexGuard<()> {
        lock_in(&self.joins, room_id).lock_owned().await
    }

    /// Sets one profile field and, when membership events carry it, sends a new membership
    /// event with the profile to every room the user is in, as the spec asks. A room that
    /// refuses the change (its rules) keeps the old name; the others update.
    pub(crate) async fn set_profile_field(
        &self,
        user_id: &UserId,
        field: &str,
        value: Option<serde_json::Value>,
    ) -> Result<(), Error> {
        let Some(profile) =
            crate::users::profile::set_field(&self.storage, user_id, field, value).await?
        else {
            return Ok(());
        };
        for (room_id, record) in memberships(&self.storage, user_id)? {
            if record.membership != "join" {
                continue;
            }
            let new = NewEvent::state(
                "m.room.member",
                user_id.as_str(),
                crate::users::profile::member_content("join", &profile),
            );
            if let Err(err) = self.append(&room_id, user_id, new).await {
                tracing::warn!(%room_id, "could not update the membership with the new profile: {err}");
            }
        }
        Ok(())
    }

    /// Makes everything written so far durable: the last step of stopping the server.
    pub(crate) async fn flush(&self) -> Result<(), crate::storage::StorageError> {
        self.storage.flush().await.map(|_| ())
    }

    /// Builds, authorizes and stores an event by `sender` in an existing room.
    pub(crate) async fn append(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        new: NewEvent,
    ) -> Result<Pdu, Error> {
        match self.append_once(room_id, sender, None, || Ok(new)).await? {
            Appended::New(pdu) => Ok(*pdu),
            Appended::Sent(_) | Appended::Earlier(_) => {
                Err(Error::internal("no transaction to repeat"))
            }
        }
    }

    /// Like [`Rooms::append`] for a client's `/send`: the transaction ID is checked under the
    /// room's lock and written in the event's batch, so a retry, however timed, returns the
    /// first event instead of sending it twice. `prepare` (the request's own checks, and the
    /// event) runs only for a transaction not seen before: a retry is answered even if the
    /// sender could no longer send it (they left the room since, say).
    pub(crate) async fn append_with_txn(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        txn: (TxnKey, String),
        prepare: impl FnOnce() -> Result<NewEvent, Error>,
    ) -> Result<OwnedEventId, Error> {
        match self
            .append_once(room_id, sender, Some(txn), prepare)
            .await?
        {
            Appended::New(pdu) => Ok(pdu.event_id),
            Appended::Sent(event_id) | Appended::Earlier(event_id) => Ok(event_id),
        }
    }

    /// [`Rooms::append`] and [`Rooms::append_with_txn`] in one: under the room's lock, a
    /// transaction already used gives its event back; otherwise the event is built,
    /// authorized and stored with the transaction, if any, in its batch.
    ///
    /// The room's lock is let go once the batch is applied, before the flush: the next
    /// event of the room builds on this one as applied, and its own flush, which begins
    /// after this batch was applied, makes both durable. So concurrent senders in one room
    /// share flushes (group commit) instead of taking one `fdatasync` each in turn, and
    /// each is still answered only once its event is on disk.
    async fn append_once(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        txn: Option<(TxnKey, String)>,
        prepare: impl FnOnce() -> Result<NewEvent, Error>,
    ) -> Result<Appended, Error> {
        let storage = &*self.storage;
        let lock = self.lock_for(room_id);
        let serialized = lock.lock().await;
        if let Some((key, _)) = &txn
            && let Some(event_id) = storage.txn_eventid.get(key)?
        {
            drop(serialized);
            // The first request may still be flushing it: answered once it is on disk.
            storage.flush().await?;
            let event_id = OwnedEventId::try_from(event_id).map_err(Error::internal)?;
            return Ok(Appended::Earlier(event_id));
        }
        let new = prepare()?;
        let room = load_room(storage, room_id)?;
        let rules = rules_of(&room)?;
        let (pdu, json) = build_in_room(
            storage,
            Some(&self.current_auth),
            &self.signing_key,
            &rules,
            (room_id, &room),
            sender,
            &new,
        )?;
        let appended = match txn {
            None => Appended::New(Box::new(pdu.clone())),
            Some(_) => Appended::Sent(pdu.event_id.clone()),
        };
        let staged = StagedEvent {
            pdu,
            json,
            txn,
            relay: false,
        };
        let position = self.apply_events(room_id, &room.version, &[staged])?;
        drop(serialized);
        storage.flush().await?;
        self.publish(position, 1);
        Ok(appended)
    }

    /// Stores authorized events of one room, in order, with all their indexes in one batch;
    /// flushes; then makes them visible and wakes `/sync`.
    ///
    /// Positions are taken and the batch applied under one short lock, so positions are
    /// applied in order; the flush runs outside it (concurrent flushes share the disk's
    /// work); the visible position only moves forward, once the flush is done. A reader
    /// that sees position N has every event up to N, stored and on disk: no `/sync` can step
    /// over an event still being written, or hand out a position a crash could take back.
    pub(crate) async fn store_events(
        &self,
        room_id: &RoomId,
        version: &str,
        events: Vec<StagedEvent>,
    ) -> Result<u64, Error> {
        if events.is_empty() {
            return Ok(self.visible_position());
        }
        let position = self.apply_events(room_id, version, &events)?;
        self.storage.flush().await?;
        self.publish(position, events.len());
        Ok(position)
    }

    /// [`Rooms::store_events`] up to the flush: the events (at least one) are applied, at
    /// the position returned, neither durable nor visible yet.
    fn apply_events(
        &self,
        room_id: &RoomId,
        version: &str,
        events: &[StagedEvent],
    ) -> Result<u64, Error> {
        let storage = &*self.storage;
        let Some(last) = events.last() else {
            return Err(Error::internal("no events to store"));
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
        record.state = stage_snapshots(storage, &mut batch, events, previous_state)?;
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
                    staged.pdu.sender.as_str(),
                    push,
                    position,
                    crate::matrix::time::now_ms(),
                )?;
            }
            storage.apply(batch)?;
            position
        };
        Ok(position)
    }

    /// Writes something else a client syncs (account data, say) at the next stream position,
    /// with the same ordering and durability as events: `stage` adds its writes to the batch
    /// for the position it is given.
    pub(crate) async fn commit_at_next_position(
        &self,
        stage: impl FnOnce(&mut Batch, u64) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        self.stream
            .commit_at_next_position(&self.storage, stage)
            .await
    }

    /// Checks (spec steps 4 to 6) and stores an event from another server whose format
    /// and signatures passed, under the room's lock: accepted events join the timeline and
    /// move the room's state; soft-failed ones are kept in the graph only.
    pub(crate) async fn store_remote(
        &self,
        room_id: &RoomId,
        json: CanonicalJsonObject,
        pdu: Pdu,
        relay: bool,
    ) -> Result<remote::Outcome, remote::Refused> {
        self.store_remote_at_gap(room_id, (json, pdu), relay, &[])
            .await
    }

    /// [`Rooms::store_remote`] for an event after a gap: `gap` gives the state before some
    /// of its prev events, as fetched for it (used for this event only).
    pub(crate) async fn store_remote_at_gap(
        &self,
        room_id: &RoomId,
        (json, pdu): (CanonicalJsonObject, Pdu),
        relay: bool,
        gap: &[(OwnedEventId, NamedState)],
    ) -> Result<remote::Outcome, remote::Refused> {
        self.store_remote_in(room_id, (json, pdu), (relay, gap), None)
            .await
    }

    async fn store_remote_in(
        &self,
        room_id: &RoomId,
        (json, pdu): (CanonicalJsonObject, Pdu),
        (relay, gap): (bool, &[(OwnedEventId, NamedState)]),
        unflushed: Option<&Unflushed>,
    ) -> Result<remote::Outcome, remote::Refused> {
        let storage = &*self.storage;
        let lock = self.lock_for(room_id);
        let _serialized = lock.lock().await;
        let room = room_id.to_string();
        // An event held only as an outlier is no timeline event yet: it is checked as one
        // now (see `remote::is_outlier`).
        let event_id = pdu.event_id.to_string();
        if storage.eventid_pdu.contains_key(&event_id)? && !remote::is_outlier(storage, &event_id)?
        {
            return Ok(remote::Outcome::Known);
        }
        let record = storage
            .roomid_room
            .get(&room)?
            .ok_or_else(|| remote::Refused::Invalid(format!("no room {room} here")))?;
        let rules = rules_of(&record).map_err(|err| remote::Refused::Invalid(err.to_string()))?;
        let mut batch = Batch::new();
        let mut pending = std::collections::BTreeMap::new();
        let placed = if gap.is_empty() && on_current::builds_on_current(&record, &pdu) {
            let entry = on_current::check(
                storage,
                &self.current_auth,
                (room_id, &record),
                &rules,
                &pdu,
            )?;
            on_current::place_on_current(storage, &mut batch, &mut pending, &record, &pdu, entry)?
        } else {
            let plan = self.plan_remote(&record, &rules, &pdu, gap).await?;
            on_current::place_planned(storage, &mut batch, &mut pending, &record, &pdu, plan)?
        };
        let pushes = if placed.soft_failed {
            crate::rooms::notifications::EventPush::default()
        } else {
            crate::rooms::notifications::evaluate(storage, &rules, room_id, &json)?
        };
        storage
            .eventid_statebefore
            .batch_insert(&mut batch, &event_id, &placed.before)?;
        let new_record = RoomRecord {
            version: record.version.clone(),
            extremities: placed.extremities,
            state: placed.current,
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
        if placed.soft_failed {
            let text = CanonicalJsonValue::Object(staged.json.clone()).to_string();
            storage
                .eventid_pdu
                .batch_insert(&mut batch, &event_id, &text)?;
            remote::stage_meta(storage, &mut batch, &room, &event_id, None)?;
            storage.apply(batch)?;
            match unflushed {
                Some(unflushed) => unflushed.written(None),
                None => storage.flush().await?,
            }
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
                (&placed.state_change.0, &placed.state_change.1),
                position,
                &pending_json,
            )
            .map_err(|err| remote::Refused::Storage(err.to_string()))?;
            crate::rooms::notifications::stage(
                storage,
                &mut batch,
                &room,
                staged.pdu.sender.as_str(),
                &pushes,
                position,
                crate::matrix::time::now_ms(),
            )?;
            storage.apply(batch)?;
            position
        };
        match unflushed {
            Some(unflushed) => unflushed.written(Some(position)),
            None => {
                storage.flush().await?;
                self.publish(position, 1);
            }
        }
        Ok(remote::Outcome::Accepted)
    }

    /// [`remote::plan`] on the blocking pool, [`REMOTE_CHECK_WORKERS`] at a time: its state
    /// resolution and auth chain walks can take seconds for an event naming many forked
    /// prev events, and must not hold up the HTTP worker that received it.
    async fn plan_remote(
        &self,
        record: &RoomRecord,
        rules: &RoomVersionRules,
        pdu: &Pdu,
        gap: &[(OwnedEventId, NamedState)],
    ) -> Result<remote::Plan, remote::Refused> {
        let _permit = self
            .remote_checks
            .acquire()
            .await
            .map_err(|err| remote::Refused::Storage(err.to_string()))?;
        let storage = self.storage.clone();
        let (record, rules, pdu, gap) = (record.clone(), rules.clone(), pdu.clone(), gap.to_vec());
        tokio::task::spawn_blocking(move || {
            let plan = remote::plan(&storage, &record, &rules, &pdu, &gap);
            crate::storage::memory::hand_over_deferred();
            plan
        })
        .await
        .map_err(|err| remote::Refused::Storage(format!("checking the event: {err}")))?
    }

    /// Stores a room joined over federation: the checked events of its state and auth chain
    /// (kept outside the timeline), the state as it was before our join, and the join
    /// itself in the timeline, all in one batch.
    pub(crate) async fn store_joined(
        &self,
        room_id: &RoomId,
        version: &str,
        before: snapshots::StateMap,
        (join_json, join_pdu): (CanonicalJsonObject, Pdu),
    ) -> Result<(), remote::Refused> {
        let storage = &*self.storage;
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
        // Our join must be allowed by the state we were given (its events are stored).
        remote::authorize_against(storage, &rules, &join_pdu, &before, &HashMap::new())
            .map_err(|why| remote::Refused::Unauthorized(format!("our join: {why}")))?;
        // The memberships of the state's member events are read back as they are written:
        // a room of 50,000 members is not held in memory.
        let memberships_given: HashMap<String, String> = HashMap::new();
        crate::storage::memory::log_usage("join: state named");
        let event_id = join_pdu.event_id.to_string();
        let join_key = snapshots::short_state_key(
            storage,
            "m.room.member",
            join_pdu.state_key.as_deref().unwrap_or_default(),
        )?;
        let mut pending = std::collections::BTreeMap::new();
        let before_id = snapshots::store_full(storage, &mut batch, &before, &mut pending)?;
        crate::storage::memory::log_usage("join: snapshot staged");
        // The state after our join is one entry more: a delta, not a second whole copy.
        let join_entry = [(join_key, snapshots::short_event_id(storage, &event_id)?)];
        let after_id = snapshots::derive(
            storage,
            &mut batch,
            Some(before_id),
            &join_entry,
            &mut pending,
        )?;
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
            crate::storage::stream::Stream::stage_room_change(
                storage,
                &mut batch,
                state_position,
                &room,
            )?;
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
        self.publish(position, 1);
        tracing::info!(%room_id, state = before.len(), "joined a room over federation");
        Ok(())
    }

    /// Moves the visible position forward (never back) and wakes `/sync`, counting the
    /// `events` just flushed.
    fn publish(&self, position: u64, events: usize) {
        self.events_persisted
            .fetch_add(events as u64, Ordering::Relaxed);
        self.stream.publish(position);
    }
}
