//! Relations and threads (spec: client-server API, "Relationships", "Threading"): the
//! handlers; the room service reads them ([`crate::rooms::relations`]).

use actix_web::{HttpResponse, web};
use ruma::OwnedRoomId;

use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::api::path;
use crate::error::Error;
use crate::rooms::relations::{RelationsQuery, ThreadsQuery};

/// # GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]
pub(crate) async fn relations(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<Vec<String>>,
    query: web::Query<RelationsQuery>,
) -> Result<HttpResponse, Error> {
    let parts = path.into_inner();
    let (room_id, event_id) = (path::id::<OwnedRoomId>(&parts[0])?, parts[1].clone());
    let kinds = (parts.get(2).cloned(), parts.get(3).cloned());
    let answer = app.rooms.relations(
        (&auth.user_id, &auth.device_id),
        &room_id,
        &event_id,
        kinds,
        &query,
    )?;
    Ok(HttpResponse::Ok().json(answer))
}

/// # GET /_matrix/client/v1/rooms/{roomId}/threads
pub(crate) async fn threads(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    query: web::Query<ThreadsQuery>,
) -> Result<HttpResponse, Error> {
    let room_id: OwnedRoomId = path::id(&room_id)?;
    let answer = app.rooms.threads(&auth.user_id, &room_id, &query)?;
    Ok(HttpResponse::Ok().json(answer))
}
