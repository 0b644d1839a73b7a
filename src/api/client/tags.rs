//! Room tags (spec: client-server API, "Room Tagging"): a user's labels for rooms, kept
//! by the users service as the room's `m.tag` account data.

use actix_web::{HttpResponse, web};
use ruma::{OwnedRoomId, OwnedUserId};
use serde_json::{Map, Value, json};

use super::user::require_self;
use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::api::path;
use crate::error::Error;

/// The user and room of a tags path, the user being the one asking.
fn own_room(
    auth: &Authenticated,
    user: &str,
    room: &str,
) -> Result<(OwnedUserId, OwnedRoomId), Error> {
    let (user, room): (OwnedUserId, OwnedRoomId) = (path::id(user)?, path::id(room)?);
    require_self(auth, &user)?;
    Ok((user, room))
}

/// # GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags
pub(crate) async fn get_tags(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let (user, room) = path.into_inner();
    let (user, room) = own_room(&auth, &user, &room)?;
    Ok(HttpResponse::Ok().json(json!({ "tags": app.users.tags(&user, &room)? })))
}

/// # PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}
pub(crate) async fn put_tag(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String, String)>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> Result<HttpResponse, Error> {
    let (user, room, tag) = path.into_inner();
    let (user, room) = own_room(&auth, &user, &room)?;
    app.users
        .put_tag(&app.rooms.stream, &user, &room, tag, body)
        .await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}
pub(crate) async fn delete_tag(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, Error> {
    let (user, room, tag) = path.into_inner();
    let (user, room) = own_room(&auth, &user, &room)?;
    app.users
        .remove_tag(&app.rooms.stream, &user, &room, &tag)
        .await?;
    Ok(HttpResponse::Ok().json(json!({})))
}
