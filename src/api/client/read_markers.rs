//! Typing notifications, receipts and read markers (spec: client-server API, "Typing
//! Notifications", "Receipts", "Fully read markers").

use actix_web::{HttpResponse, web};
use ruma::{OwnedRoomId, RoomId};
use serde::Deserialize;
use serde_json::json;

use super::room::require_joined;
use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::api::path;
use crate::error::{Error, ErrorKind};
use crate::sync::receipts::{PRIVATE, PUBLIC};

#[derive(Debug, Deserialize)]
pub(crate) struct TypingRequest {
    typing: bool,
    timeout: Option<u64>,
}

/// # PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}
pub(crate) async fn typing(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    MatrixJson(body): MatrixJson<TypingRequest>,
) -> Result<HttpResponse, Error> {
    let (room_id, user_id) = path.into_inner();
    let room_id: OwnedRoomId = path::id(&room_id)?;
    if user_id != auth.user_id.as_str() {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "You can only say that you are typing",
        ));
    }
    require_joined(&app, &auth.user_id, &room_id)?;
    let timeout = body
        .typing
        .then(|| std::time::Duration::from_millis(body.timeout.unwrap_or(30_000)));
    app.ephemeral.set_typing(&room_id, &auth.user_id, timeout);
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ReceiptRequest {
    thread_id: Option<String>,
}

/// The event must be one of the room's, for a receipt or read marker to point at it.
pub(super) fn require_room_event(
    app: &Services,
    room_id: &RoomId,
    event_id: &str,
) -> Result<(), Error> {
    if app.rooms.is_room_event(room_id, event_id)? {
        Ok(())
    } else {
        Err(Error::not_found("No such event in this room"))
    }
}

/// # POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}
///
/// `m.read` and `m.read.private` are receipts (the sync service's); `m.fully_read` is the
/// read marker, account data (the users service's).
pub(crate) async fn receipt(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String, String)>,
    MatrixJson(body): MatrixJson<ReceiptRequest>,
) -> Result<HttpResponse, Error> {
    let (room_id, kind, event_id) = path.into_inner();
    let room_id: OwnedRoomId = path::id(&room_id)?;
    app.sync.check_receipt(
        &auth.user_id,
        &room_id,
        &kind,
        &event_id,
        body.thread_id.as_deref(),
    )?;
    if kind == "m.fully_read" {
        app.users
            .set_fully_read(&app.rooms.stream, &auth.user_id, &room_id, &event_id)
            .await?;
    } else {
        app.sync
            .set_receipt(&room_id, &auth.user_id, &kind, &event_id, body.thread_id)
            .await?;
    }
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ReadMarkersRequest {
    #[serde(rename = "m.fully_read")]
    fully_read: Option<String>,
    #[serde(rename = "m.read")]
    read: Option<String>,
    #[serde(rename = "m.read.private")]
    read_private: Option<String>,
}

/// # POST /_matrix/client/v3/rooms/{roomId}/read_markers
///
/// Every event named must be the room's before any marker moves.
pub(crate) async fn read_markers(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    MatrixJson(body): MatrixJson<ReadMarkersRequest>,
) -> Result<HttpResponse, Error> {
    let room_id: OwnedRoomId = path::id(&room_id)?;
    require_joined(&app, &auth.user_id, &room_id)?;
    for event_id in [&body.fully_read, &body.read, &body.read_private]
        .into_iter()
        .flatten()
    {
        require_room_event(&app, &room_id, event_id)?;
    }
    if let Some(event_id) = &body.fully_read {
        app.users
            .set_fully_read(&app.rooms.stream, &auth.user_id, &room_id, event_id)
            .await?;
    }
    for (kind, event_id) in [(PUBLIC, &body.read), (PRIVATE, &body.read_private)] {
        if let Some(event_id) = event_id {
            app.sync
                .set_receipt(&room_id, &auth.user_id, kind, event_id, None)
                .await?;
        }
    }
    Ok(HttpResponse::Ok().json(json!({})))
}
