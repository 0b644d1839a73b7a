//! Rooms as the server administration API shows them (Synapse's rooms admin API): every
//! room this server holds with what its current state says (name, alias, rules, members),
//! whether it is in the public list, and taking a room's local aliases and listing away
//! when an administrator deletes it.

use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::{Value, json};

use super::{Directory, aliases_of, delete_alias, is_published, set_published};
use crate::rooms;
use crate::storage::{Storage, StorageError};

/// A room's overview: the fields of Synapse's room list, and the sort keys behind them.
#[derive(Debug, Clone)]
pub(crate) struct RoomOverview {
    pub(crate) room_id: OwnedRoomId,
    pub(crate) name: Option<String>,
    pub(crate) canonical_alias: Option<String>,
    pub(crate) joined_members: usize,
    pub(crate) joined_local_members: usize,
    pub(crate) version: String,
    pub(crate) creator: Option<String>,
    pub(crate) encryption: Option<String>,
    pub(crate) federatable: bool,
    pub(crate) public: bool,
    pub(crate) join_rules: Option<String>,
    pub(crate) guest_access: Option<String>,
    pub(crate) history_visibility: Option<String>,
    pub(crate) state_events: usize,
    pub(crate) room_type: Option<String>,
    /// Only in the details: the topic, the avatar, and the tombstone's successor.
    pub(crate) topic: Option<String>,
    pub(crate) avatar: Option<String>,
    pub(crate) tombstoned: bool,
    pub(crate) replacement_room: Option<String>,
    /// Our users joined to the room now.
    pub(crate) local_members: Vec<String>,
}

impl RoomOverview {
    /// The entry of `GET /_synapse/admin/v1/rooms`.
    pub(crate) fn listed(&self) -> Value {
        json!({
            "room_id": self.room_id,
            "name": self.name,
            "canonical_alias": self.canonical_alias,
            "joined_members": self.joined_members,
            "joined_local_members": self.joined_local_members,
            "version": self.version,
            "creator": self.creator,
            "encryption": self.encryption,
            "federatable": self.federatable,
            "public": self.public,
            "join_rules": self.join_rules,
            "guest_access": self.guest_access,
            "history_visibility": self.history_visibility,
            "state_events": self.state_events,
            "room_type": self.room_type,
        })
    }
}

impl Directory {
    /// Every room this server holds, by room ID. Each costs a walk over its current state:
    /// on a family server that is a few hundred rooms at most.
    pub(crate) fn admin_rooms(&self) -> Result<Vec<RoomOverview>, StorageError> {
        let mut overviews = Vec::new();
        for entry in self.storage.roomid_room.iter() {
            let (room_id, record) = entry?;
            let Ok(room_id) = OwnedRoomId::try_from(room_id) else {
                continue;
            };
            overviews.push(overview(&self.storage, &room_id, record.version)?);
        }
        Ok(overviews)
    }

    /// One room's overview; `None` if this server does not hold it.
    pub(crate) fn admin_room(
        &self,
        room_id: &RoomId,
    ) -> Result<Option<RoomOverview>, StorageError> {
        match self.storage.roomid_room.get(&room_id.to_string())? {
            Some(record) => Ok(Some(overview(&self.storage, room_id, record.version)?)),
            None => Ok(None),
        }
    }

    /// Everyone joined to the room now, by user ID.
    pub(crate) fn admin_room_members(&self, room_id: &RoomId) -> Result<Vec<String>, StorageError> {
        let mut members = Vec::new();
        for ((kind, state_key), event_id) in rooms::current_state(&self.storage, room_id)? {
            if kind == "m.room.member" && membership_of(&self.storage, &event_id)? == "join" {
                members.push(state_key);
            }
        }
        Ok(members)
    }

    /// Whether every one of our users who was ever in the room has forgotten it.
    pub(crate) fn admin_room_forgotten(&self, room_id: &RoomId) -> Result<bool, StorageError> {
        for ((kind, state_key), _) in rooms::current_state(&self.storage, room_id)? {
            if kind != "m.room.member" {
                continue;
            }
            let Ok(user) = UserId::parse(state_key.as_str()) else {
                continue;
            };
            if user.server_name() == self.server_name
                && rooms::membership(&self.storage, &user, room_id)?.is_some()
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Deletes the room's local aliases and takes it off the public list; answers the
    /// aliases. Flushed.
    pub(crate) async fn withdraw_room(
        &self,
        room_id: &RoomId,
    ) -> Result<Vec<String>, StorageError> {
        let aliases = aliases_of(&self.storage, room_id)?;
        for alias in &aliases {
            if let Ok(alias) = ruma::OwnedRoomAliasId::try_from(alias.as_str()) {
                delete_alias(&self.storage, &alias)?;
            }
        }
        set_published(&self.storage, room_id, false)?;
        self.storage.flush().await?;
        Ok(aliases)
    }
}

fn membership_of(storage: &Storage, event_id: &str) -> Result<String, StorageError> {
    Ok(rooms::load_json(storage, event_id)?
        .and_then(|json| {
            json.get("content")
                .and_then(|content| content.as_object())
                .and_then(|content| content.get("membership"))
                .and_then(|membership| membership.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_default())
}

/// The overview of a room from its current state.
fn overview(
    storage: &Storage,
    room_id: &RoomId,
    version: String,
) -> Result<RoomOverview, StorageError> {
    let state = rooms::current_state(storage, room_id)?;
    let content = |kind: &str| rooms::state_content(storage, room_id, kind, "");
    let field = |value: Option<Value>, name: &str| {
        value.and_then(|content| content.get(name).and_then(Value::as_str).map(str::to_owned))
    };
    let create = content("m.room.create")?;
    let summary = storage.joined_summary(room_id.as_str())?;
    let tombstone = content("m.room.tombstone")?;
    Ok(RoomOverview {
        room_id: room_id.to_owned(),
        name: field(content("m.room.name")?, "name"),
        canonical_alias: field(content("m.room.canonical_alias")?, "alias"),
        joined_members: summary.count,
        joined_local_members: summary.local.len(),
        version,
        // Room versions before 11 name the creator in the content; later ones by the
        // create event's sender.
        creator: field(create.clone(), "creator").or(rooms::state_sender(
            storage,
            room_id,
            "m.room.create",
            "",
        )?),
        encryption: field(content("m.room.encryption")?, "algorithm"),
        federatable: create
            .as_ref()
            .and_then(|create| create.get("m.federate"))
            .and_then(Value::as_bool)
            .unwrap_or(true),
        public: is_published(storage, room_id)?,
        join_rules: field(content("m.room.join_rules")?, "join_rule"),
        guest_access: field(content("m.room.guest_access")?, "guest_access"),
        history_visibility: field(content("m.room.history_visibility")?, "history_visibility"),
        state_events: state.len(),
        room_type: field(create, "type"),
        topic: field(content("m.room.topic")?, "topic"),
        avatar: field(content("m.room.avatar")?, "url"),
        tombstoned: tombstone.is_some(),
        replacement_room: field(tombstone, "replacement_room"),
        local_members: summary.local.clone(),
    })
}
