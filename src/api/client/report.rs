//! Reporting events, rooms and users to the server's administrators (spec: client-server
//! API, "Reporting content").

use actix_web::{HttpResponse, web};
use ruma::OwnedUserId;
use serde::Deserialize;
use serde_json::json;

use super::read_markers::require_room_event;
use super::room::require_joined;
use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::api::path;
use crate::error::Error;

#[derive(Debug, Deserialize)]
pub(crate) struct ReportRequest {
    reason: Option<String>,
}

/// # POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}
///
/// Reports go to the server's administrator: the log, at warning level.
pub(crate) async fn report_event(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    MatrixJson(body): MatrixJson<ReportRequest>,
) -> Result<HttpResponse, Error> {
    let (room_id, event_id) = path.into_inner();
    let room_id: ruma::OwnedRoomId = path::id(&room_id)?;
    require_joined(&app, &auth.user_id, &room_id)?;
    require_room_event(&app, &room_id, &event_id)?;
    let reason = body.reason.unwrap_or_default();
    tracing::warn!(reporter = %auth.user_id, %room_id, %event_id, reason = %reason.chars().take(500).collect::<String>(), "event reported");
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # POST /_matrix/client/v3/rooms/{roomId}/report
pub(crate) async fn report_room(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    MatrixJson(body): MatrixJson<ReportRequest>,
) -> Result<HttpResponse, Error> {
    let room_id: ruma::OwnedRoomId = path::id(&room_id)?;
    if !app.rooms.exists(&room_id)? {
        return Err(Error::not_found("No such room"));
    }
    let reason = body.reason.unwrap_or_default();
    tracing::warn!(reporter = %auth.user_id, %room_id, reason = %reason.chars().take(500).collect::<String>(), "room reported");
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # POST /_matrix/client/v3/users/{userId}/report
pub(crate) async fn report_user(
    app: web::Data<Services>,
    auth: Authenticated,
    user: web::Path<String>,
    MatrixJson(body): MatrixJson<ReportRequest>,
) -> Result<HttpResponse, Error> {
    let user: OwnedUserId = path::id(&user)?;
    if !app
        .users
        .exists(&user)
        .map_err(|err| Error::internal(err.to_string()))?
    {
        return Err(Error::not_found("No such user"));
    }
    let reason: String = body.reason.unwrap_or_default().chars().take(500).collect();
    tracing::warn!(reporter = %auth.user_id, reported = %user, %reason, "user reported");
    Ok(HttpResponse::Ok().json(json!({})))
}
