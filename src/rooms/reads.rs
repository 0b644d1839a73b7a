//! The room service's read side: what handlers and other services ask of a room (who is
//! in it, its state now and at a point of its history, its events as a client sees them,
//! who may do what). Each method reads the service's own database; the free functions of
//! [`super::state`], [`super::history`] and [`super::timeline`] stay the module's internals.

use ruma::{CanonicalJsonObject, OwnedRoomId, RoomId, UserId};
use serde_json::Value;

use super::timeline::{self, Reader, Timeline};
use super::visibility::Visibility;
use super::{EventMeta, MembershipRecord, Rooms, StateEntry};
use crate::error::{Error, ErrorKind};
use crate::storage::StorageError;
use crate::users::filter::RoomEventFilter;

impl Rooms {
    /// Whether this server holds the room (created here or joined over federation).
    pub(crate) fn exists(&self, room_id: &RoomId) -> Result<bool, StorageError> {
        Ok(self
            .storage
            .roomid_room
            .get(&room_id.to_string())?
            .is_some())
    }

    /// `user_id`'s latest membership of the room, if they ever had one.
    pub(crate) fn membership(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> Result<Option<MembershipRecord>, StorageError> {
        super::membership(&self.storage, user_id, room_id)
    }

    /// Every room `user_id` has a membership of, with it.
    pub(crate) fn memberships(
        &self,
        user_id: &UserId,
    ) -> Result<Vec<(OwnedRoomId, MembershipRecord)>, StorageError> {
        super::memberships(&self.storage, user_id)
    }

    /// Whether `user_id` is joined to the room now.
    pub(crate) fn is_joined(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> Result<bool, StorageError> {
        Ok(self
            .membership(user_id, room_id)?
            .is_some_and(|record| record.membership == "join"))
    }

    /// `user_id`'s membership if they are joined; `403` otherwise. Rooms the user was never
    /// in look the same as rooms that do not exist, as the spec asks, so IDs cannot be
    /// probed.
    pub(crate) fn require_joined(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> Result<MembershipRecord, Error> {
        match self.membership(user_id, room_id)? {
            Some(record) if record.membership == "join" => Ok(record),
            _ => Err(Error::new(ErrorKind::Forbidden, "You are not in this room")),
        }
    }

    /// The room's current state: `((type, state_key), event ID)`.
    pub(crate) fn current_state(&self, room_id: &RoomId) -> Result<Vec<StateEntry>, StorageError> {
        super::current_state(&self.storage, room_id)
    }

    /// The room's state as of stream position `at` (see [`super::history::state_at`]).
    pub(crate) fn state_at(
        &self,
        room_id: &RoomId,
        at: u64,
    ) -> Result<Vec<StateEntry>, StorageError> {
        super::history::state_at(&self.storage, room_id, at)
    }

    /// The event ID of one entry of the current state.
    pub(crate) fn state_event(
        &self,
        room_id: &RoomId,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<String>, StorageError> {
        super::state_event(&self.storage, room_id, kind, state_key)
    }

    /// The content of one entry of the current state.
    pub(crate) fn state_content(
        &self,
        room_id: &RoomId,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<Value>, StorageError> {
        super::state_content(&self.storage, room_id, kind, state_key)
    }

    /// Whether the room's version takes only integers as power levels (10 and later); `true`
    /// for a room whose version we do not know, the stricter answer.
    pub(crate) fn integer_power_levels(&self, room_id: &RoomId) -> Result<bool, StorageError> {
        Ok(super::state::room_rules(&self.storage, room_id)?
            .is_none_or(|rules| rules.authorization.integer_power_levels))
    }

    /// The power level the room's `m.room.power_levels` content asks for, as `pick` reads it.
    pub(crate) fn power_level_for(
        &self,
        room_id: &RoomId,
        pick: impl Fn(&Value) -> i64,
    ) -> Result<i64, StorageError> {
        super::power_level_for(&self.storage, room_id, pick)
    }

    /// `user_id`'s power level in the room.
    pub(crate) fn user_power_level(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<i64, StorageError> {
        super::user_power_level(&self.storage, room_id, user_id)
    }

    /// Whether `user_id`'s power level lets them send state events of type `kind`.
    pub(crate) fn may_send_state(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        kind: &str,
    ) -> Result<bool, StorageError> {
        super::may_send_state(&self.storage, room_id, user_id, kind)
    }

    /// A stored event's canonical JSON.
    pub(crate) fn load_json(
        &self,
        event_id: &str,
    ) -> Result<Option<CanonicalJsonObject>, StorageError> {
        super::load_json(&self.storage, event_id)
    }

    /// What is kept about a stored event: its room, stream position, redaction.
    pub(crate) fn event_meta(&self, event_id: &str) -> Result<Option<EventMeta>, StorageError> {
        self.storage.eventid_meta.get(&event_id.to_owned())
    }

    /// Whether `event_id` is one of the room's events.
    pub(crate) fn is_room_event(
        &self,
        room_id: &RoomId,
        event_id: &str,
    ) -> Result<bool, StorageError> {
        Ok(self
            .event_meta(event_id)?
            .is_some_and(|meta| meta.room_id == room_id.as_str()))
    }

    /// The thread (its root's ID) a stored event of the room belongs to, if any.
    pub(crate) fn thread_of(
        &self,
        room_id: &RoomId,
        event_id: &str,
    ) -> Result<Option<String>, Error> {
        match self.load_json(event_id)? {
            Some(json) => Ok(super::notifications::thread_of(
                &self.storage,
                room_id,
                &json,
            )?),
            None => Ok(None),
        }
    }

    /// A stored event in client form, as [`super::format::stored_event_for_client`] makes it.
    pub(crate) fn event_for_client(
        &self,
        event_id: &str,
        room_id: Option<&str>,
        device: Option<&str>,
    ) -> Result<Option<Value>, StorageError> {
        timeline::client_form(&self.storage, event_id, room_id, device)
    }

    /// A timeline event in client form for `reader`, with its bundled aggregations.
    pub(crate) fn timeline_form(
        &self,
        event_id: &str,
        room_id: Option<&str>,
        reader: Option<Reader<'_>>,
    ) -> Result<Option<Value>, StorageError> {
        timeline::timeline_form(&self.storage, event_id, room_id, reader)
    }

    /// The client form of each current state event of the room.
    pub(crate) fn state_for_client(&self, room_id: &RoomId) -> Result<Vec<Value>, StorageError> {
        let mut events = Vec::new();
        for (_, event_id) in self.current_state(room_id)? {
            if let Some(event) = self.event_for_client(&event_id, Some(room_id.as_str()), None)? {
                events.push(event);
            }
        }
        Ok(events)
    }

    /// What `user_id` may see of the room's history (see [`Visibility`]).
    pub(crate) fn visibility(
        &self,
        room_id: &RoomId,
        user_id: &str,
    ) -> Result<Visibility, StorageError> {
        Visibility::for_user(&self.storage, room_id, user_id)
    }

    /// The first stream position the member may read (see [`timeline::history_start`]).
    pub(crate) fn history_start(
        &self,
        room_id: &RoomId,
        record: &MembershipRecord,
    ) -> Result<u64, StorageError> {
        timeline::history_start(&self.storage, room_id, record)
    }

    /// The newest events in `(after, upto]` the filter lets through (see
    /// [`timeline::timeline`]).
    pub(crate) fn timeline(
        &self,
        room_id: &RoomId,
        span: (u64, u64),
        filter: &RoomEventFilter,
        reader: Option<Reader<'_>>,
    ) -> Result<Timeline, StorageError> {
        timeline::timeline(&self.storage, room_id, span, filter, reader)
    }

    /// The member events of `events`' senders as of position `at` (see
    /// [`timeline::lazy_loaded_members`]).
    pub(crate) fn lazy_loaded_members(
        &self,
        room_id: &RoomId,
        events: &[Value],
        at: u64,
    ) -> Result<Vec<Value>, StorageError> {
        timeline::lazy_loaded_members(&self.storage, room_id, events, at)
    }

    /// The rooms `user_id` and `other` are both joined to.
    pub(crate) fn shared_rooms(
        &self,
        user_id: &UserId,
        other: &UserId,
    ) -> Result<Vec<OwnedRoomId>, StorageError> {
        let mut shared = Vec::new();
        for (room, record) in self.memberships(user_id)? {
            if record.membership == "join" && self.is_joined(other, &room)? {
                shared.push(room);
            }
        }
        Ok(shared)
    }

    /// Forgets a room the user has left or was banned from (spec: "Leaving rooms"): it
    /// disappears from their sync, `/messages`, and joined and left lists.
    pub(crate) async fn forget(&self, user_id: &UserId, room_id: &RoomId) -> Result<(), Error> {
        // Removed only if still a leave or ban when written: a join racing in is kept.
        let mut outcome = Err(Error::not_found(
            "You have no membership in this room to forget",
        ));
        self.storage.userroom_membership.update(
            &(user_id.to_string(), room_id.to_string()),
            |record| {
                let record = record?;
                if record.membership == "leave" || record.membership == "ban" {
                    outcome = Ok(());
                    None
                } else {
                    outcome = Err(Error::new(
                        ErrorKind::BadRequest,
                        "Leave the room before forgetting it",
                    ));
                    Some(record)
                }
            },
        )?;
        outcome?;
        self.storage.flush().await?;
        Ok(())
    }
}
