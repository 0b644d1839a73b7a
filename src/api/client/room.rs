//! Rooms: creating them, sending events, reading state and events, membership
//! (spec: client-server API, "Rooms", "Events", "Room membership").

use actix_web::{HttpResponse, web};
use ruma::{OwnedRoomId, RoomId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::body::{RequiredJson, event_content};
use super::read_markers::require_room_event;
use super::state_content;
use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::api::path;
use crate::error::{Error, ErrorKind};
use crate::matrix::events::builder::NewEvent;
use crate::rooms::create::CreateRoomRequest;

/// # POST /_matrix/client/v3/createRoom
pub(crate) async fn create_room(
    app: web::Data<Services>,
    auth: Authenticated,
    MatrixJson(body): MatrixJson<CreateRoomRequest>,
) -> Result<HttpResponse, Error> {
    auth.ensure_not_suspended()?;
    let room_id = app
        .directory
        .create_room(&app.rooms, &auth.user_id, body)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "room_id": room_id })))
}

/// # GET /_matrix/client/v3/joined_rooms
pub(crate) async fn joined_rooms(
    app: web::Data<Services>,
    auth: Authenticated,
) -> Result<HttpResponse, Error> {
    let joined: Vec<OwnedRoomId> = app
        .rooms
        .memberships(&auth.user_id)?
        .into_iter()
        .filter(|(_, record)| record.membership == "join")
        .map(|(room_id, _)| room_id)
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "joined_rooms": joined })))
}

/// The sender must be joined to read or write a room. Rooms the user was never in look the
/// same as rooms that do not exist: `403`, as the spec asks, so IDs cannot be probed.
pub(super) fn require_joined(
    app: &Services,
    user_id: &UserId,
    room_id: &RoomId,
) -> Result<(), Error> {
    app.rooms.require_joined(user_id, room_id).map(|_| ())
}

/// # PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}
///
/// The body is the event's content: an empty one is `M_NOT_JSON`, not an empty event.
pub(crate) async fn send_message(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String, String)>,
    RequiredJson(content): RequiredJson<Map<String, Value>>,
) -> Result<HttpResponse, Error> {
    let (room_id, kind, txn_id) = path.into_inner();
    let room_id: OwnedRoomId = path::id(&room_id)?;
    let content = event_content(content)?;
    // The same request path from the same device is the same message, sent once.
    let txn_key = (
        auth.user_id.to_string(),
        auth.device_id.clone(),
        format!("{room_id}\u{0}{kind}\u{0}{txn_id}"),
    );
    let prepare = || {
        require_joined(&app, &auth.user_id, &room_id)?;
        let mut new = NewEvent::message(&kind, Value::Object(content.clone()));
        if kind == "m.room.redaction" {
            let redacts = content
                .get("redacts")
                .and_then(Value::as_str)
                .and_then(|id| ruma::OwnedEventId::try_from(id).ok())
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::BadJson,
                        "A redaction needs `redacts`: the event to redact",
                    )
                })?;
            if !is_own_event(&app, &auth.user_id, &redacts)? {
                auth.ensure_not_suspended()?;
            }
            check_may_redact(&app, &auth.user_id, &room_id, &redacts)?;
            new.redacts = Some(redacts);
        } else {
            auth.ensure_not_suspended()?;
        }
        Ok(new)
    };
    let event_id = app
        .rooms
        .append_with_txn(&room_id, &auth.user_id, (txn_key, txn_id), prepare)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "event_id": event_id })))
}

/// Whether `event_id` was sent by `user_id`: a suspended user may still redact their own
/// events, not others'.
pub(super) fn is_own_event(
    app: &Services,
    user_id: &UserId,
    event_id: &ruma::EventId,
) -> Result<bool, Error> {
    Ok(app.rooms.load_json(event_id.as_str())?.is_some_and(|json| {
        json.get("sender").and_then(|sender| sender.as_str()) == Some(user_id.as_str())
    }))
}

/// The room's auth rules let any member send a redaction from room version 3 on, trusting
/// each server to check this: one may redact one's own events, or others' with the power
/// level `redact`.
pub(super) fn check_may_redact(
    app: &Services,
    user_id: &UserId,
    room_id: &RoomId,
    target: &ruma::EventId,
) -> Result<(), Error> {
    if is_own_event(app, user_id, target)? {
        return Ok(());
    }
    let needed = app.rooms.power_level_for(room_id, |content| {
        content.get("redact").and_then(Value::as_i64).unwrap_or(50)
    })?;
    if app.rooms.user_power_level(room_id, user_id)? >= needed {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Forbidden,
            "You may only redact your own events here",
        ))
    }
}

/// # PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}
pub(crate) async fn put_state(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String, String)>,
    MatrixJson(content): MatrixJson<Map<String, Value>>,
) -> Result<HttpResponse, Error> {
    let (room_id, kind, state_key) = path.into_inner();
    put_state_event(&app, &auth, &room_id, &kind, &state_key, content).await
}

/// # PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}
pub(crate) async fn put_state_empty_key(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    MatrixJson(content): MatrixJson<Map<String, Value>>,
) -> Result<HttpResponse, Error> {
    let (room_id, kind) = path.into_inner();
    put_state_event(&app, &auth, &room_id, &kind, "", content).await
}

async fn put_state_event(
    app: &Services,
    auth: &Authenticated,
    room_id: &str,
    kind: &str,
    state_key: &str,
    content: Map<String, Value>,
) -> Result<HttpResponse, Error> {
    auth.ensure_not_suspended()?;
    let room_id: OwnedRoomId = path::id(room_id)?;
    require_joined(app, &auth.user_id, &room_id)?;
    let content = event_content(content)?;
    match kind {
        "m.room.member" => {
            state_content::check_own_member_event(auth.user_id.as_str(), state_key, &content)?;
        }
        "m.room.power_levels" => {
            state_content::check_power_levels(&content, app.rooms.integer_power_levels(&room_id)?)?
        }
        _ => {}
    }
    if kind == "m.room.redaction" {
        return Err(Error::new(
            ErrorKind::BadRequest,
            "Redactions are not state: use /redact",
        ));
    }
    let new = NewEvent::state(kind, state_key, Value::Object(content));
    let pdu = app.rooms.append(&room_id, &auth.user_id, new).await?;
    Ok(HttpResponse::Ok().json(json!({ "event_id": pdu.event_id })))
}

#[derive(Debug, Deserialize)]
pub(crate) struct FormatQuery {
    format: Option<String>,
}

/// # GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}
pub(crate) async fn get_state(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String, String)>,
    query: web::Query<FormatQuery>,
) -> Result<HttpResponse, Error> {
    let (room_id, kind, state_key) = path.into_inner();
    get_state_event(
        &app,
        &auth,
        &room_id,
        &kind,
        &state_key,
        query.format.as_deref(),
    )
}

/// # GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}
pub(crate) async fn get_state_empty_key(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    query: web::Query<FormatQuery>,
) -> Result<HttpResponse, Error> {
    let (room_id, kind) = path.into_inner();
    get_state_event(&app, &auth, &room_id, &kind, "", query.format.as_deref())
}

fn get_state_event(
    app: &Services,
    auth: &Authenticated,
    room_id: &str,
    kind: &str,
    state_key: &str,
    format: Option<&str>,
) -> Result<HttpResponse, Error> {
    let room_id: OwnedRoomId = path::id(room_id)?;
    require_joined(app, &auth.user_id, &room_id)?;
    let event_id = app
        .rooms
        .state_event(&room_id, kind, state_key)?
        .ok_or_else(|| Error::not_found("No such state event"))?;
    let event = app
        .rooms
        .event_for_client(&event_id, Some(room_id.as_str()), None)?
        .ok_or_else(|| Error::internal("state event missing"))?;
    match format {
        Some("event") => Ok(HttpResponse::Ok().json(event)),
        None | Some("content") => Ok(HttpResponse::Ok().json(&event["content"])),
        Some(other) => Err(Error::new(
            ErrorKind::InvalidParam,
            format!("Unknown format {other}"),
        )),
    }
}

/// # GET /_matrix/client/v3/rooms/{roomId}/state
pub(crate) async fn get_all_state(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let room_id: OwnedRoomId = path::id(&room_id)?;
    require_joined(&app, &auth.user_id, &room_id)?;
    Ok(HttpResponse::Ok().json(app.rooms.state_for_client(&room_id)?))
}

/// # GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}
pub(crate) async fn get_event(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let (room_id, event_id) = path.into_inner();
    let room_id: OwnedRoomId = path::id(&room_id)?;
    // Membership is not asked for: history visibility decides, and whoever may not see the
    // event (an outsider, or a member who was away) is told it is not found, as the spec's
    // single `404` for "not found or no permission" says, not that the room exists.
    let not_found = || Error::not_found("No such event in this room");
    let meta = app.rooms.event_meta(&event_id)?.ok_or_else(not_found)?;
    if meta.room_id != room_id.as_str() {
        return Err(not_found());
    }
    let view = app.rooms.visibility(&room_id, auth.user_id.as_str())?;
    if !view.allows(meta.stream) {
        return Err(not_found());
    }
    let reader = crate::rooms::timeline::Reader {
        user_id: auth.user_id.as_str(),
        device_id: &auth.device_id,
    };
    let event = app
        .rooms
        .timeline_form(&event_id, Some(room_id.as_str()), Some(reader))?
        .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(event))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RedactRequest {
    reason: Option<String>,
}

/// # PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}
pub(crate) async fn redact(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String, String)>,
    MatrixJson(body): MatrixJson<RedactRequest>,
) -> Result<HttpResponse, Error> {
    let (room_id, target, txn_id) = path.into_inner();
    let room_id: OwnedRoomId = path::id(&room_id)?;
    let txn_key = (
        auth.user_id.to_string(),
        auth.device_id.clone(),
        format!("{room_id}\u{0}redact\u{0}{txn_id}"),
    );
    let prepare = || {
        require_joined(&app, &auth.user_id, &room_id)?;
        require_room_event(&app, &room_id, &target)?;
        let target: ruma::OwnedEventId = path::id(&target)?;
        if !is_own_event(&app, &auth.user_id, &target)? {
            auth.ensure_not_suspended()?;
        }
        check_may_redact(&app, &auth.user_id, &room_id, &target)?;
        // From room version 11 `redacts` is part of the content; before, the builder puts
        // it at the top level. Older servers read either, so the content always carries it.
        let mut content = json!({ "redacts": target });
        if let Some(reason) = body.reason {
            content["reason"] = json!(reason);
        }
        let mut new = NewEvent::message("m.room.redaction", content);
        new.redacts = Some(target);
        Ok(new)
    };
    let event_id = app
        .rooms
        .append_with_txn(&room_id, &auth.user_id, (txn_key, txn_id), prepare)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "event_id": event_id })))
}
