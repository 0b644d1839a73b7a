//! The user's rooms in recency order, and the facts lists filter on, kept per connection and
//! brought up to date from the stream: only the rooms something happened in since the last
//! request are looked at again, so an incremental request costs what changed plus sorting
//! the user's rooms in memory, never a scan of every room's timeline.
//!
//! Rooms are ordered by their last activity (the MSC: "based on when the last event in the
//! room was received by the server", explicitly *not* by `bump_stamp`): the stream position
//! of the room's newest event, or of the user's membership for rooms they are not in.
//! `bump_stamp` is reported per room for the client's own sorting: the position of the
//! newest event of a type that bumps (Synapse's default set).

use std::collections::{BTreeSet, HashMap};

use ruma::{OwnedRoomId, RoomId, UserId};

use crate::rooms::{self, MembershipRecord, load_json};
use crate::storage::{Storage, StorageError};

/// The event types whose arrival moves `bump_stamp` (as Synapse's defaults).
const BUMP_TYPES: [&str; 9] = [
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "m.beacon_info",
    "org.matrix.msc3381.poll.start",
    "org.matrix.msc3672.beacon_info",
];

/// How far back a room's timeline is searched for an event that bumps; past that, the
/// user's own join stands in.
const BUMP_SEARCH: usize = 50;

/// What lists need to know of one of the user's rooms.
#[derive(Debug, Clone)]
pub(crate) struct RoomEntry {
    pub(crate) record: MembershipRecord,
    /// The ordering key: the position of the last activity the user may see.
    pub(crate) activity: u64,
    pub(crate) bump_stamp: u64,
    pub(crate) encrypted: bool,
    /// The `type` of the room's create event (`m.space`…), if any.
    pub(crate) room_type: Option<String>,
    /// Someone else removed the user (a kick, a ban): the room stays in lists.
    pub(crate) removed_by_other: bool,
}

impl RoomEntry {
    pub(crate) fn membership(&self) -> &str {
        &self.record.membership
    }
}

/// The user's rooms as of `upto`.
#[derive(Debug, Default)]
pub(crate) struct RoomOrder {
    pub(crate) upto: u64,
    loaded: bool,
    pub(crate) rooms: HashMap<OwnedRoomId, RoomEntry>,
}

impl RoomOrder {
    /// Brings the order up to `upto`: every room on the first call, then only the rooms the
    /// stream names after the last call. Returns the rooms looked at again.
    pub(crate) fn refresh(
        &mut self,
        storage: &Storage,
        user_id: &UserId,
        upto: u64,
    ) -> Result<BTreeSet<OwnedRoomId>, StorageError> {
        let mut changed = BTreeSet::new();
        if !self.loaded {
            for (room_id, record) in rooms::memberships(storage, user_id)? {
                if let Some(entry) = entry_for(storage, &room_id, record, upto)? {
                    self.rooms.insert(room_id.clone(), entry);
                }
                changed.insert(room_id);
            }
            self.loaded = true;
            self.upto = upto;
            return Ok(changed);
        }
        if upto <= self.upto {
            return Ok(changed);
        }
        for entry in storage.stream_room.range(&(self.upto + 1), &upto) {
            if let Ok(room_id) = OwnedRoomId::try_from(entry?.1) {
                changed.insert(room_id);
            }
        }
        for room_id in &changed {
            match rooms::membership(storage, user_id, room_id)? {
                Some(record) => match entry_for(storage, room_id, record, upto)? {
                    Some(entry) => self.rooms.insert(room_id.clone(), entry),
                    None => self.rooms.remove(room_id),
                },
                None => self.rooms.remove(room_id),
            };
        }
        self.upto = upto;
        Ok(changed)
    }

    /// The rooms, most recent activity first (ties by room ID, so windows are stable).
    pub(crate) fn sorted(&self) -> Vec<(&RoomId, &RoomEntry)> {
        let mut sorted: Vec<(&RoomId, &RoomEntry)> = self
            .rooms
            .iter()
            .map(|(room_id, entry)| (room_id.as_ref(), entry))
            .collect();
        sorted.sort_by(|(a_id, a), (b_id, b)| b.activity.cmp(&a.activity).then(a_id.cmp(b_id)));
        sorted
    }
}

/// The entry of one room, or `None` for a room that lists leave out: one the user was
/// banned from without ever being in it.
fn entry_for(
    storage: &Storage,
    room_id: &RoomId,
    record: MembershipRecord,
    upto: u64,
) -> Result<Option<RoomEntry>, StorageError> {
    if record.membership == "ban" && record.joined_stream.is_none() {
        return Ok(None);
    }
    let joined = record.membership == "join";
    let (activity, bump_stamp) = if joined {
        let last = last_event_position(storage, room_id, upto)?.unwrap_or(record.stream);
        let bump = last_bump(storage, room_id, upto)?
            .unwrap_or_else(|| record.joined_stream.unwrap_or(record.stream));
        (last.max(record.stream.min(upto)), bump)
    } else {
        (record.stream, record.stream)
    };
    let removed_by_other = matches!(record.membership.as_str(), "leave" | "ban")
        && record.joined_stream.is_some()
        && load_json(storage, &record.event_id)?
            .and_then(|json| {
                let sender = json.get("sender")?.as_str()?.to_owned();
                let target = json.get("state_key")?.as_str()?.to_owned();
                Some(sender != target)
            })
            .unwrap_or(false);
    let encrypted = rooms::state_event(storage, room_id, "m.room.encryption", "")?.is_some();
    let room_type = rooms::state_content(storage, room_id, "m.room.create", "")?
        .and_then(|content| content.get("type")?.as_str().map(str::to_owned));
    Ok(Some(RoomEntry {
        record,
        activity,
        bump_stamp,
        encrypted,
        room_type,
        removed_by_other,
    }))
}

/// The position of the room's newest event at or before `upto`.
fn last_event_position(
    storage: &Storage,
    room_id: &RoomId,
    upto: u64,
) -> Result<Option<u64>, StorageError> {
    let room = room_id.to_string();
    match storage
        .roomstream_eventid
        .range(&(room.clone(), 0), &(room, upto))
        .next_back()
    {
        Some(entry) => Ok(Some((entry?.0).1)),
        None => Ok(None),
    }
}

/// The position of the room's newest event of a bumping type at or before `upto`, looking
/// at the newest [`BUMP_SEARCH`] events at most.
fn last_bump(storage: &Storage, room_id: &RoomId, upto: u64) -> Result<Option<u64>, StorageError> {
    let room = room_id.to_string();
    for entry in storage
        .roomstream_eventid
        .range(&(room.clone(), 0), &(room, upto))
        .rev()
        .take(BUMP_SEARCH)
    {
        let ((_, position), event_id) = entry?;
        let bumps = load_json(storage, &event_id)?
            .and_then(|json| json.get("type")?.as_str().map(str::to_owned))
            .is_some_and(|kind| BUMP_TYPES.contains(&kind.as_str()));
        if bumps {
            return Ok(Some(position));
        }
    }
    Ok(None)
}
