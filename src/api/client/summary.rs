//! Room summaries (spec: client-server API, "Room summaries", v1.15): what a room is, for
//! someone deciding whether to join it.

use actix_web::{HttpResponse, web};

use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::error::Error;

/// # GET /_matrix/client/v1/room_summary/{roomIdOrAlias}
///
/// For whoever [`crate::directory::may_preview`] the room; to anyone else it does not
/// exist.
pub(crate) async fn room_summary(
    app: web::Data<Services>,
    auth: Authenticated,
    room: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let room = app.directory.room_id_or_alias(&room)?;
    let summary = app.directory.room_summary(&auth.user_id, &room)?;
    Ok(HttpResponse::Ok().json(summary))
}
