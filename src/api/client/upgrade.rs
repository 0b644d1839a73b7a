//! Room upgrades (spec: client-server API, "Room Upgrades"): a new room with the old one's
//! state, a tombstone in the old one, and its power levels restricted. The room service
//! does the upgrade ([`crate::rooms::Rooms::upgrade`]); the directory moves the aliases and
//! the published flag at the step the room service hands it.

use actix_web::{HttpResponse, web};
use ruma::{OwnedRoomId, OwnedUserId};
use serde::Deserialize;
use serde_json::json;

use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::api::path;
use crate::error::Error;

#[derive(Debug, Deserialize)]
pub(crate) struct UpgradeRequest {
    new_version: String,
    #[serde(default)]
    additional_creators: Vec<OwnedUserId>,
}

/// # POST /_matrix/client/v3/rooms/{roomId}/upgrade
///
/// Makes a replacement room of `new_version` with the old room's settings and a
/// `predecessor`, moves the local aliases, then ends the old room with a tombstone and
/// restricts who may speak in it.
pub(crate) async fn upgrade(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    MatrixJson(body): MatrixJson<UpgradeRequest>,
) -> Result<HttpResponse, Error> {
    auth.ensure_not_suspended()?;
    let old: OwnedRoomId = path::id(&room_id)?;
    let new = app
        .rooms
        .upgrade(
            &old,
            &auth.user_id,
            &body.new_version,
            &body.additional_creators,
            |new| app.directory.move_room(&old, new, &auth.user_id),
        )
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "replacement_room": new })))
}
