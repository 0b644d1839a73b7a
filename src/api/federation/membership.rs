//! Joins by other servers' users (spec: server-server API, "Joining Rooms"): `make_join`
//! gives them a template, `send_join` (v2) takes their signed join and answers with the
//! room's state.

use actix_web::{HttpRequest, HttpResponse, web};
use ruma::{OwnedRoomId, OwnedUserId};
use serde_json::Value;

use super::origin::{FederationOrigin, SignedJson};
use crate::api::app::Services;
use crate::api::path;
use crate::error::{Error, ErrorKind};
use crate::federation::resident::{accept_join, make_join_template};

/// The `ver` parameters of a query string (repeated: one per supported room version).
fn versions(query: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("ver="))
        .map(str::to_owned)
        .collect()
}

/// # GET /_matrix/federation/v1/make_join/{roomId}/{userId}
pub(crate) async fn make_join(
    app: web::Data<Services>,
    origin: FederationOrigin,
    request: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let (room, user) = path.into_inner();
    let room_id: OwnedRoomId = path::id(&room)?;
    let user_id: OwnedUserId = path::id(&user)?;
    // Without `ver`, the spec says only version 1 is supported by the asking server.
    let mut versions = versions(request.query_string());
    if versions.is_empty() {
        versions.push("1".to_owned());
    }
    let template = make_join_template(
        &app.federation,
        &room_id,
        &user_id,
        origin.0.as_str(),
        &versions,
    )?;
    Ok(HttpResponse::Ok().json(template))
}

/// # PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}
pub(crate) async fn send_join(
    app: web::Data<Services>,
    path: web::Path<(String, String)>,
    signed: SignedJson<Value>,
) -> Result<HttpResponse, Error> {
    let (room, event_id) = path.into_inner();
    let room_id: OwnedRoomId = path::id(&room)?;
    let answer = accept_join(
        &app.federation,
        signed.origin.as_str(),
        &room_id,
        &event_id,
        signed.body,
    )
    .await?;
    Ok(super::streamed_body::json_streamed(answer))
}

/// # PUT /_matrix/federation/v2/invite/{roomId}/{eventId}
pub(crate) async fn invite(
    app: web::Data<Services>,
    path: web::Path<(String, String)>,
    signed: SignedJson<Value>,
) -> Result<HttpResponse, Error> {
    let (room, event_id) = path.into_inner();
    let room_id: OwnedRoomId = path::id(&room)?;
    let answer = crate::federation::invite::accept_invite(
        &app.federation,
        signed.origin.as_str(),
        &room_id,
        &event_id,
        &signed.body,
    )
    .await?;
    Ok(HttpResponse::Ok().json(answer))
}

/// # PUT /_matrix/federation/v1/invite/{roomId}/{eventId}
///
/// The deprecated first version: the body is the event itself (stripped state in its
/// `unsigned`), the room version is not said (the spec: assume `1` or `2`, whose events
/// look the same), and the answer is `[200, {"event": …}]`.
pub(crate) async fn invite_v1(
    app: web::Data<Services>,
    path: web::Path<(String, String)>,
    signed: SignedJson<Value>,
) -> Result<HttpResponse, Error> {
    let (room, event_id) = path.into_inner();
    let room_id: OwnedRoomId = path::id(&room)?;
    let event = signed.body;
    let as_v2 = serde_json::json!({
        "room_version": "1",
        "invite_room_state": event["unsigned"]["invite_room_state"].clone(),
        "event": event,
    });
    let answer = crate::federation::invite::accept_invite(
        &app.federation,
        signed.origin.as_str(),
        &room_id,
        &event_id,
        &as_v2,
    )
    .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!([200, answer])))
}

/// # GET /_matrix/federation/v1/make_leave/{roomId}/{userId}
pub(crate) async fn make_leave(
    app: web::Data<Services>,
    origin: FederationOrigin,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let (room, user) = path.into_inner();
    let room_id: OwnedRoomId = path::id(&room)?;
    let user_id: OwnedUserId = path::id(&user)?;
    let template = crate::federation::resident::make_leave_template(
        &app.federation,
        &room_id,
        &user_id,
        origin.0.as_str(),
    )?;
    Ok(HttpResponse::Ok().json(template))
}

/// # PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}
pub(crate) async fn send_leave(
    app: web::Data<Services>,
    path: web::Path<(String, String)>,
    signed: SignedJson<Value>,
) -> Result<HttpResponse, Error> {
    let (room, event_id) = path.into_inner();
    let room_id: OwnedRoomId = path::id(&room)?;
    let answer = crate::federation::resident::accept_leave(
        &app.federation,
        signed.origin.as_str(),
        &room_id,
        &event_id,
        signed.body,
    )
    .await?;
    Ok(HttpResponse::Ok().json(answer))
}

/// # GET /_matrix/federation/v1/make_knock/{roomId}/{userId}
pub(crate) async fn make_knock(
    app: web::Data<Services>,
    origin: FederationOrigin,
    request: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let (room, user) = path.into_inner();
    let room_id: OwnedRoomId = path::id(&room)?;
    let user_id: OwnedUserId = path::id(&user)?;
    let versions = versions(request.query_string());
    if versions.is_empty() {
        return Err(Error::new(ErrorKind::MissingParam, "Missing `ver`"));
    }
    let template = crate::federation::resident::make_knock_template(
        &app.federation,
        &room_id,
        &user_id,
        origin.0.as_str(),
        &versions,
    )?;
    Ok(HttpResponse::Ok().json(template))
}

/// # PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}
pub(crate) async fn send_knock(
    app: web::Data<Services>,
    path: web::Path<(String, String)>,
    signed: SignedJson<Value>,
) -> Result<HttpResponse, Error> {
    let (room, event_id) = path.into_inner();
    let room_id: OwnedRoomId = path::id(&room)?;
    let answer = crate::federation::resident::accept_knock(
        &app.federation,
        signed.origin.as_str(),
        &room_id,
        &event_id,
        signed.body,
    )
    .await?;
    Ok(HttpResponse::Ok().json(answer))
}
