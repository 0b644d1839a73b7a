//! Events stored outside the live edge of a room: outliers fetched to bridge a gap, and
//! history fetched with `/backfill` into the positions a federated join kept free below it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use ruma::room_version_rules::RoomVersionRules;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, RoomId};

use super::{Pdu, Rooms, load_pdu, remote};
use crate::error::Error;
use crate::storage::Batch;

impl Rooms {
    /// Stores events fetched to bridge a gap, already checked, as outliers: kept for the
    /// graph and the auth rules, outside the timeline, never shown. Only this room's
    /// events: their meta names this room.
    pub(crate) async fn store_outliers(
        &self,
        room_id: &RoomId,
        events: Vec<(CanonicalJsonObject, Pdu)>,
    ) -> Result<(), remote::Refused> {
        let storage = &*self.storage;
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
    pub(crate) async fn store_backfilled(
        &self,
        room_id: &RoomId,
        rules: &RoomVersionRules,
        mut events: Vec<(CanonicalJsonObject, Pdu)>,
    ) -> Result<usize, Error> {
        let storage = &*self.storage;
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
            // Events we hold only as outliers (part of the state we joined with, no
            // position) join the timeline now; those already in it are skipped, and so are
            // soft-failed ones (a history answer must not show what our checks hid).
            let placed = storage.eventid_meta.contains_key(&event_id)?
                && !remote::is_outlier(storage, &event_id)?;
            if history.next <= history.floor || placed {
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
        self.events_persisted
            .fetch_add(stored as u64, Ordering::Relaxed);
        Ok(stored)
    }
}
