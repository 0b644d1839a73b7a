//! Room upgrades (spec: client-server API, "Room Upgrades"): a new room with the old one's
//! state, a tombstone in the old one, and its power levels restricted.

use actix_web::{HttpResponse, web};
use ruma::OwnedUserId;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::room::{parse_room_id, require_joined};
use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::error::{Error, ErrorKind};
use crate::matrix::events::builder::NewEvent;
use crate::rooms::create::CreateRoomRequest;
use crate::rooms::{self};

#[derive(Debug, Deserialize)]
pub struct UpgradeRequest {
    new_version: String,
    #[serde(default)]
    additional_creators: Vec<OwnedUserId>,
}

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

/// # POST /_matrix/client/v3/rooms/{roomId}/upgrade
///
/// Makes a replacement room of `new_version` with the old room's settings and a
/// `predecessor`, moves the local aliases, then ends the old room with a tombstone and
/// restricts who may speak in it.
pub async fn upgrade(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    MatrixJson(body): MatrixJson<UpgradeRequest>,
) -> Result<HttpResponse, Error> {
    auth.ensure_not_suspended()?;
    let old = parse_room_id(&room_id)?;
    require_joined(&app, &auth.user_id, &old)?;
    if !rooms::may_send_state(&app.storage, &old, &auth.user_id, "m.room.tombstone")? {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "You may not upgrade this room",
        ));
    }
    let new_rules = ruma::RoomVersionId::try_from(body.new_version.as_str())
        .ok()
        .and_then(|version| version.rules())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::UnsupportedRoomVersion,
                format!(
                    "Room version {} is not supported; 1 to 12 are",
                    body.new_version
                ),
            )
        })?;

    let old_create =
        rooms::state_content(&app.storage, &old, "m.room.create", "")?.unwrap_or_default();
    let mut creation = Map::new();
    for field in ["m.federate", "type"] {
        if let Some(value) = old_create.get(field) {
            creation.insert(field.to_owned(), value.clone());
        }
    }
    creation.insert("predecessor".into(), json!({ "room_id": old }));
    if new_rules.authorization.additional_room_creators && !body.additional_creators.is_empty() {
        creation.insert(
            "additional_creators".into(),
            json!(body.additional_creators),
        );
    }
    let mut initial_state = Vec::new();
    for kind in UPGRADE_STATE {
        if let Some(content) = rooms::state_content(&app.storage, &old, kind, "")? {
            initial_state.push(json!({ "type": kind, "state_key": "", "content": content }));
        }
    }
    let mut levels =
        rooms::state_content(&app.storage, &old, "m.room.power_levels", "")?.unwrap_or_default();
    if let Some(users) = levels.get_mut("users").and_then(Value::as_object_mut) {
        if new_rules.authorization.explicitly_privilege_room_creators {
            // Creators of a version 12 room may not be listed; the upgrader is its creator.
            users.remove(auth.user_id.as_str());
            for creator in &body.additional_creators {
                users.remove(creator.as_str());
            }
        } else {
            users.insert(auth.user_id.to_string(), json!(100));
        }
    }
    let request: CreateRoomRequest = serde_json::from_value(json!({
        "room_version": body.new_version,
        "creation_content": creation,
        "initial_state": initial_state,
        "power_level_content_override": levels,
        "preset": "private_chat",
    }))
    .map_err(Error::internal)?;
    let new = app
        .rooms
        .create_room(&auth.user_id, request, &body.new_version)
        .await?;
    for alias in crate::directory::aliases_of(&app.storage, &old)? {
        if let Ok(alias) = ruma::OwnedRoomAliasId::try_from(alias.as_str()) {
            crate::directory::delete_alias(&app.storage, &alias)?;
            crate::directory::create_alias(&app.storage, &alias, &new, &auth.user_id)?;
        }
    }
    if crate::directory::is_published(&app.storage, &old)? {
        crate::directory::set_published(&app.storage, &old, false)?;
        crate::directory::set_published(&app.storage, &new, true)?;
    }
    let tombstone = NewEvent::state(
        "m.room.tombstone",
        "",
        json!({ "body": "This room has been replaced", "replacement_room": new }),
    );
    app.rooms.append(&old, &auth.user_id, tombstone).await?;
    // Members are nudged to the new room: the old one takes no more messages or invites
    // from ordinary members.
    if let Some(mut old_levels) =
        rooms::state_content(&app.storage, &old, "m.room.power_levels", "")?
    {
        let users_default = old_levels["users_default"].as_i64().unwrap_or(0);
        let restricted = (users_default + 1).max(50);
        old_levels["events_default"] = json!(restricted);
        old_levels["invite"] = json!(restricted);
        let restrict = NewEvent::state("m.room.power_levels", "", old_levels);
        if let Err(err) = app.rooms.append(&old, &auth.user_id, restrict).await {
            tracing::warn!(room_id = %old, "could not restrict the old room after its upgrade: {err}");
        }
    }
    app.storage.flush().await?;
    Ok(HttpResponse::Ok().json(json!({ "replacement_room": new })))
}
