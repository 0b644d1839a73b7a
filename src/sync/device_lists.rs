//! `device_lists` of `/sync` and `/keys/changes` (spec: client-server API, "Tracking the
//! device list for a user"): whose devices a client must look at again between two stream
//! positions, and with whom it no longer shares a room.
//!
//! - `changed`: users sharing a room with the syncing user (and the user themself) whose
//!   device list changed (rows of [`crate::users::device_lists`]), and users who newly
//!   share a room with them (someone joined one of their rooms, or they joined a room).
//! - `left`: users with whom they no longer share any room (someone left, was kicked or
//!   banned, or the syncing user left a room).
//!
//! Cost follows what changed: the device-list rows in the span (at most one per user),
//! and the rooms with news in it (the stream's room index, as `/sync` reads it anyway);
//! a room's whole member list is read only when the syncing user joined or left it.

use std::collections::BTreeSet;

use ruma::{OwnedRoomId, RoomId, UserId};

use crate::rooms::{self, history, load_json};
use crate::storage::{Storage, StorageError, pair_prefix};
use crate::users::device_lists;

/// The two lists, sorted.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct DeviceLists {
    pub(crate) changed: BTreeSet<String>,
    pub(crate) left: BTreeSet<String>,
}

impl DeviceLists {
    pub(crate) fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.left.is_empty()
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "changed": self.changed, "left": self.left })
    }
}

/// What changed for `user_id` at positions `(since, upto]`.
pub(crate) fn between(
    storage: &Storage,
    user_id: &UserId,
    since: u64,
    upto: u64,
) -> Result<DeviceLists, StorageError> {
    let mut lists = DeviceLists::default();
    if since >= upto {
        return Ok(lists);
    }
    let mut candidates_left = BTreeSet::new();
    for room_id in rooms_with_news(storage, since, upto)? {
        membership_news(
            storage,
            user_id,
            &room_id,
            (since, upto),
            &mut lists.changed,
            &mut candidates_left,
        )?;
    }
    for (_, change) in device_lists::changes_between(storage, since, upto)? {
        let Ok(other) = UserId::parse(change.user_id.as_str()) else {
            continue;
        };
        if other == user_id || shares_a_room(storage, user_id, &other)? {
            lists.changed.insert(change.user_id);
        }
    }
    // Cross-signing keys and signatures changed (`users::cross_signing`): what
    // `/keys/query` answers for the user changed too.
    for entry in storage.stream_keyschanged.range(&(since + 1), &upto) {
        let (_, change) = entry?;
        let Ok(other) = UserId::parse(change.user_id.as_str()) else {
            continue;
        };
        if other == user_id || shares_a_room(storage, user_id, &other)? {
            lists.changed.insert(change.user_id);
        }
    }
    for other in candidates_left {
        let Ok(other_id) = UserId::parse(other.as_str()) else {
            continue;
        };
        if other_id != user_id && !shares_a_room(storage, user_id, &other_id)? {
            lists.changed.remove(&other);
            lists.left.insert(other);
        }
    }
    Ok(lists)
}

/// The rooms something happened in at positions `(since, upto]`.
fn rooms_with_news(
    storage: &Storage,
    since: u64,
    upto: u64,
) -> Result<BTreeSet<OwnedRoomId>, StorageError> {
    let mut found = BTreeSet::new();
    for entry in storage.stream_room.range(&(since + 1), &upto) {
        if let Ok(room_id) = OwnedRoomId::try_from(entry?.1) {
            found.insert(room_id);
        }
    }
    Ok(found)
}

/// Who newly shares `room_id` with the user (into `changed`) and who may no longer share
/// any room with them (into `left`, checked by the caller), from the membership changes
/// in the room over `span`.
fn membership_news(
    storage: &Storage,
    user_id: &UserId,
    room_id: &RoomId,
    (since, upto): (u64, u64),
    changed: &mut BTreeSet<String>,
    left: &mut BTreeSet<String>,
) -> Result<(), StorageError> {
    let Some(own) = rooms::membership(storage, user_id, room_id)? else {
        return Ok(());
    };
    let own_changed = own.stream > since && own.stream <= upto;
    match own.membership.as_str() {
        "join" if own_changed && own.joined_stream.is_some_and(|joined| joined > since) => {
            // Everyone in the room is newly shared with the user.
            changed.extend(joined_members(storage, room_id)?);
            changed.remove(user_id.as_str());
        }
        "join" => {
            for ((kind, member), _) in history::changes_between(storage, room_id, since, upto)? {
                if kind != "m.room.member" || member == user_id.as_str() {
                    continue;
                }
                let joined_now = storage
                    .roomuser_membership
                    .get(&(room_id.to_string(), member.clone()))?
                    .is_some_and(|membership| membership == "join");
                if !joined_now {
                    left.insert(member);
                } else if !was_joined(storage, room_id, &member, since)? {
                    changed.insert(member);
                }
            }
        }
        "leave" | "ban" if own_changed => {
            left.extend(joined_members(storage, room_id)?);
        }
        _ => {}
    }
    Ok(())
}

/// The room's joined members now.
fn joined_members(storage: &Storage, room_id: &RoomId) -> Result<Vec<String>, StorageError> {
    let mut members = Vec::new();
    for entry in storage
        .roomuser_membership
        .scan_prefix(&pair_prefix(room_id.as_str()))
    {
        let ((_, member), membership) = entry?;
        if membership == "join" {
            members.push(member);
        }
    }
    Ok(members)
}

/// Whether `member` was joined to the room at stream position `at`.
fn was_joined(
    storage: &Storage,
    room_id: &RoomId,
    member: &str,
    at: u64,
) -> Result<bool, StorageError> {
    let Some(event_id) = history::entry_at(storage, room_id, ("m.room.member", member), at)? else {
        return Ok(false);
    };
    let Some(event) = load_json(storage, &event_id)? else {
        return Ok(false);
    };
    let membership = match event.get("content") {
        Some(ruma::CanonicalJsonValue::Object(content)) => match content.get("membership") {
            Some(ruma::CanonicalJsonValue::String(membership)) => membership.clone(),
            _ => String::new(),
        },
        _ => String::new(),
    };
    Ok(membership == "join")
}

/// Whether both users are joined to some room here: from the other user's memberships
/// (few for most) with one lookup each.
pub(crate) fn shares_a_room(
    storage: &Storage,
    user_id: &UserId,
    other: &UserId,
) -> Result<bool, StorageError> {
    for (room_id, record) in rooms::memberships(storage, other)? {
        if record.membership == "join"
            && rooms::membership(storage, user_id, &room_id)?
                .is_some_and(|record| record.membership == "join")
        {
            return Ok(true);
        }
    }
    Ok(false)
}
