//! Typing notifications, receipts and read markers (spec: client-server API, "Typing
//! Notifications", "Receipts", "Fully read markers").

use actix_web::{HttpResponse, web};
use ruma::{RoomId, UserId};
use serde::Deserialize;
use serde_json::{Map, json};

use super::room::{parse_room_id, require_joined};
use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::error::{Error, ErrorKind};

#[derive(Debug, Deserialize)]
pub struct TypingRequest {
    typing: bool,
    timeout: Option<u64>,
}

/// # PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}
pub async fn typing(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    MatrixJson(body): MatrixJson<TypingRequest>,
) -> Result<HttpResponse, Error> {
    let (room_id, user_id) = path.into_inner();
    let room_id = parse_room_id(&room_id)?;
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
pub struct ReceiptRequest {
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
pub async fn receipt(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String, String)>,
    MatrixJson(body): MatrixJson<ReceiptRequest>,
) -> Result<HttpResponse, Error> {
    let (room_id, kind, event_id) = path.into_inner();
    let room_id = parse_room_id(&room_id)?;
    require_joined(&app, &auth.user_id, &room_id)?;
    require_room_event(&app, &room_id, &event_id)?;
    // A threaded receipt's event must be in that thread (`main`: in no thread).
    if let Some(thread) = &body.thread_id
        && kind != "m.fully_read"
        && thread.len() <= 255
    {
        let event_thread = app.rooms.thread_of(&room_id, &event_id)?;
        let belongs = match event_thread {
            Some(root) => &root == thread,
            // The root of a thread is in the main timeline; so are unthreaded events.
            None => thread == crate::rooms::notifications::MAIN || thread == &event_id,
        };
        if !belongs {
            return Err(Error::new(
                ErrorKind::InvalidParam,
                "The event is not in the thread thread_id names",
            ));
        }
    }
    // A receipt's thread is `main` or the root event of a thread in this room.
    if let Some(thread) = &body.thread_id
        && thread != "main"
    {
        if kind == "m.fully_read" {
            return Err(Error::new(
                ErrorKind::InvalidParam,
                "m.fully_read takes no thread_id",
            ));
        }
        if thread.len() > 255 || require_room_event(&app, &room_id, thread).is_err() {
            return Err(Error::new(
                ErrorKind::InvalidParam,
                "thread_id must be main or an event of this room",
            ));
        }
    }
    match kind.as_str() {
        crate::sync::receipts::PUBLIC | crate::sync::receipts::PRIVATE => {
            crate::sync::receipts::set(
                &app.storage,
                &app.rooms.stream,
                &room_id,
                &auth.user_id,
                &kind,
                &event_id,
                body.thread_id,
            )
            .await?;
        }
        "m.fully_read" => set_fully_read(&app, &auth.user_id, &room_id, &event_id).await?,
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidParam,
                format!("Unknown receipt type {kind}"),
            ));
        }
    }
    Ok(HttpResponse::Ok().json(json!({})))
}

async fn set_fully_read(
    app: &Services,
    user_id: &UserId,
    room_id: &RoomId,
    event_id: &str,
) -> Result<(), Error> {
    let mut content = Map::new();
    content.insert("event_id".to_owned(), json!(event_id));
    crate::users::account_data::set_managed(
        &app.storage,
        &app.rooms.stream,
        user_id,
        Some(room_id),
        "m.fully_read",
        content,
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct ReadMarkersRequest {
    #[serde(rename = "m.fully_read")]
    fully_read: Option<String>,
    #[serde(rename = "m.read")]
    read: Option<String>,
    #[serde(rename = "m.read.private")]
    read_private: Option<String>,
}

/// # POST /_matrix/client/v3/rooms/{roomId}/read_markers
pub async fn read_markers(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    MatrixJson(body): MatrixJson<ReadMarkersRequest>,
) -> Result<HttpResponse, Error> {
    let room_id = parse_room_id(&room_id)?;
    require_joined(&app, &auth.user_id, &room_id)?;
    for event_id in [&body.fully_read, &body.read, &body.read_private]
        .into_iter()
        .flatten()
    {
        require_room_event(&app, &room_id, event_id)?;
    }
    if let Some(event_id) = &body.fully_read {
        set_fully_read(&app, &auth.user_id, &room_id, event_id).await?;
    }
    if let Some(event_id) = &body.read {
        crate::sync::receipts::set(
            &app.storage,
            &app.rooms.stream,
            &room_id,
            &auth.user_id,
            crate::sync::receipts::PUBLIC,
            event_id,
            None,
        )
        .await?;
    }
    if let Some(event_id) = &body.read_private {
        crate::sync::receipts::set(
            &app.storage,
            &app.rooms.stream,
            &room_id,
            &auth.user_id,
            crate::sync::receipts::PRIVATE,
            event_id,
            None,
        )
        .await?;
    }
    Ok(HttpResponse::Ok().json(json!({})))
}
