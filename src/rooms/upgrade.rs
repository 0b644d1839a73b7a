//! Upgrading a room (spec: client-server API, "Room Upgrades"): a new room with the old one's
//! state, a tombstone in the old one, and its power levels restricted. The room's aliases
//! and its place in the public list are the directory's, which sits above this module: the
//! caller hands in the step that moves them, and it runs where it always has, after the new
//! room exists and before the old one is ended, so a member who follows the tombstone finds
//! the aliases already pointing at the new room.

use ruma::{OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde_json::{Map, Value, json};

use super::Rooms;
use super::create::CreateRoomRequest;
use crate::error::{Error, ErrorKind};
use crate::matrix::events::builder::NewEvent;

/// State carried over to the replacement room (spec: "Server behaviour" of room upgrades).
const UPGRADE_STATE: [&str; 9] = [
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.server_acl",
    "m.room.canonical_alias",
];

impl Rooms {
    /// Replaces `old` by a new room of `new_version` made by `user`, and returns its ID.
    ///
    /// The user must be joined and allowed to send the tombstone. The new room gets the
    /// old one's settings and a `predecessor`; then `move_directory` runs with the new
    /// room's ID (the aliases and the published flag follow it); then the old room gets
    /// its tombstone and its power levels are raised so ordinary members may no longer
    /// speak or invite there (a failure of this last step is only logged: the upgrade has
    /// happened). Everything is flushed before returning.
    pub(crate) async fn upgrade(
        &self,
        old: &RoomId,
        user: &UserId,
        new_version: &str,
        additional_creators: &[OwnedUserId],
        move_directory: impl FnOnce(&RoomId) -> Result<(), Error>,
    ) -> Result<OwnedRoomId, Error> {
        self.require_joined(user, old)?;
        if !self.may_send_state(old, user, "m.room.tombstone")? {
            return Err(Error::new(
                ErrorKind::Forbidden,
                "You may not upgrade this room",
            ));
        }
        let new_rules = RoomVersionId::try_from(new_version)
            .ok()
            .and_then(|version| version.rules())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::UnsupportedRoomVersion,
                    format!("Room version {new_version} is not supported; 1 to 12 are"),
                )
            })?;

        let old_create = self
            .state_content(old, "m.room.create", "")?
            .unwrap_or_default();
        let mut creation = Map::new();
        for field in ["m.federate", "type"] {
            if let Some(value) = old_create.get(field) {
                creation.insert(field.to_owned(), value.clone());
            }
        }
        creation.insert("predecessor".into(), json!({ "room_id": old }));
        if new_rules.authorization.additional_room_creators && !additional_creators.is_empty() {
            creation.insert("additional_creators".into(), json!(additional_creators));
        }
        let mut initial_state = Vec::new();
        for kind in UPGRADE_STATE {
            if let Some(content) = self.state_content(old, kind, "")? {
                initial_state.push(json!({ "type": kind, "state_key": "", "content": content }));
            }
        }
        let mut levels = self
            .state_content(old, "m.room.power_levels", "")?
            .unwrap_or_default();
        if let Some(users) = levels.get_mut("users").and_then(Value::as_object_mut) {
            if new_rules.authorization.explicitly_privilege_room_creators {
                // Creators of a version 12 room may not be listed; the upgrader is its creator.
                users.remove(user.as_str());
                for creator in additional_creators {
                    users.remove(creator.as_str());
                }
            } else {
                users.insert(user.to_string(), json!(100));
            }
        }
        let request: CreateRoomRequest = serde_json::from_value(json!({
            "room_version": new_version,
            "creation_content": creation,
            "initial_state": initial_state,
            "power_level_content_override": levels,
            "preset": "private_chat",
        }))
        .map_err(Error::internal)?;
        let new = self.create_room(user, request, new_version).await?;
        move_directory(&new)?;
        let tombstone = NewEvent::state(
            "m.room.tombstone",
            "",
            json!({ "body": "This room has been replaced", "replacement_room": new }),
        );
        self.append(old, user, tombstone).await?;
        // Members are nudged to the new room: the old one takes no more messages or invites
        // from ordinary members.
        if let Some(mut old_levels) = self.state_content(old, "m.room.power_levels", "")? {
            let users_default = old_levels["users_default"].as_i64().unwrap_or(0);
            let restricted = (users_default + 1).max(50);
            old_levels["events_default"] = json!(restricted);
            old_levels["invite"] = json!(restricted);
            let restrict = NewEvent::state("m.room.power_levels", "", old_levels);
            if let Err(err) = self.append(old, user, restrict).await {
                tracing::warn!(room_id = %old, "could not restrict the old room after its upgrade: {err}");
            }
        }
        self.storage.flush().await?;
        Ok(new)
    }
}
