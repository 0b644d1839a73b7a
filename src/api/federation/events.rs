//! Events of our rooms for other servers (spec: server-server API, "Retrieving events",
//! "Backfilling and retrieving missing events", "Retrieving event authorisation
//! information"). Thin: the rules are in [`crate::federation::serve`].

use actix_web::{HttpResponse, web};
use ruma::{OwnedRoomId, RoomId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

use super::origin::{FederationOrigin, SignedJson};
use super::streamed_body::json_streamed;
use crate::api::app::Services;
use crate::api::path;
use crate::error::{Error, ErrorKind};
use crate::federation::serve::{MissingEventsRequest, RoomAccess};

/// A transaction carrying PDUs (`/event`, `/backfill`): the spec's answer shape.
#[derive(Serialize)]
struct Transaction {
    origin: String,
    origin_server_ts: u64,
    pdus: Vec<Box<RawValue>>,
}

fn transaction(app: &Services, pdus: Vec<Box<RawValue>>) -> HttpResponse {
    HttpResponse::Ok().json(Transaction {
        origin: app.config.server.server_name.to_string(),
        origin_server_ts: crate::matrix::time::now_ms(),
        pdus,
    })
}

/// The room, checked for the asking server (ours, ACL).
fn open<'a>(
    app: &Services,
    origin: &FederationOrigin,
    room_id: &'a RoomId,
) -> Result<RoomAccess<'a>, Error> {
    app.federation.open_room(&origin.0, room_id)
}

/// # GET /_matrix/federation/v1/event/{eventId}
pub(crate) async fn event(
    app: web::Data<Services>,
    origin: FederationOrigin,
    event_id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let pdu = app.federation.serve_event(&origin.0, &event_id)?;
    Ok(transaction(&app, vec![pdu]))
}

#[derive(Debug, Deserialize)]
pub(crate) struct AtEvent {
    event_id: String,
}

/// # GET /_matrix/federation/v1/state_ids/{roomId}
pub(crate) async fn state_ids(
    app: web::Data<Services>,
    origin: FederationOrigin,
    room: web::Path<String>,
    query: web::Query<AtEvent>,
) -> Result<HttpResponse, Error> {
    let room: OwnedRoomId = path::id(&room)?;
    let access = open(&app, &origin, &room)?;
    let answer = app.federation.serve_state_ids(&access, &query.event_id)?;
    Ok(json_streamed(answer))
}

/// # GET /_matrix/federation/v1/state/{roomId}
pub(crate) async fn state(
    app: web::Data<Services>,
    origin: FederationOrigin,
    room: web::Path<String>,
    query: web::Query<AtEvent>,
) -> Result<HttpResponse, Error> {
    let room: OwnedRoomId = path::id(&room)?;
    let access = open(&app, &origin, &room)?;
    let answer = app.federation.serve_state(&access, &query.event_id)?;
    Ok(json_streamed(answer))
}

/// # GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}
pub(crate) async fn event_auth(
    app: web::Data<Services>,
    origin: FederationOrigin,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let (room, event_id) = path.into_inner();
    let room: OwnedRoomId = path::id(&room)?;
    let access = open(&app, &origin, &room)?;
    let answer = app.federation.serve_event_auth(&access, &event_id)?;
    Ok(json_streamed(answer))
}

/// # GET /_matrix/federation/v1/backfill/{roomId}
///
/// `v` may repeat, so the query is read as a list of pairs.
pub(crate) async fn backfill(
    app: web::Data<Services>,
    origin: FederationOrigin,
    room: web::Path<String>,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, Error> {
    let room: OwnedRoomId = path::id(&room)?;
    let access = open(&app, &origin, &room)?;
    let v: Vec<String> = query
        .iter()
        .filter(|(key, _)| key == "v")
        .map(|(_, value)| value.clone())
        .collect();
    if v.is_empty() {
        return Err(Error::new(ErrorKind::MissingParam, "Missing v"));
    }
    let limit = query
        .iter()
        .find(|(key, _)| key == "limit")
        .ok_or_else(|| Error::new(ErrorKind::MissingParam, "Missing limit"))?;
    let limit = clamped_limit(&limit.1)?;
    let answer = app.federation.serve_backfill(&access, &v, limit)?;
    Ok(json_streamed(answer))
}

/// A `limit` from a query string: an integer, where a negative one means 0 and one too
/// large for 64 bits means as many as may be given; anything else is `M_INVALID_PARAM`.
fn clamped_limit(text: &str) -> Result<u64, Error> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "limit must be an integer",
        ));
    }
    if text.starts_with('-') {
        return Ok(0);
    }
    Ok(text.parse().unwrap_or(u64::MAX))
}

#[derive(Serialize)]
struct MissingEventsAnswer {
    events: Vec<Box<RawValue>>,
}

/// # POST /_matrix/federation/v1/get_missing_events/{roomId}
pub(crate) async fn get_missing_events(
    app: web::Data<Services>,
    room: web::Path<String>,
    request: SignedJson<MissingEventsRequest>,
) -> Result<HttpResponse, Error> {
    let room: OwnedRoomId = path::id(&room)?;
    let origin = FederationOrigin(request.origin);
    let access = open(&app, &origin, &room)?;
    let events = app
        .federation
        .serve_missing_events(&access, &request.body)?;
    Ok(HttpResponse::Ok().json(MissingEventsAnswer { events }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct TimestampQuery {
    ts: u64,
    dir: String,
}

/// # GET /_matrix/federation/v1/timestamp_to_event/{roomId}
pub(crate) async fn timestamp_to_event(
    app: web::Data<Services>,
    origin: FederationOrigin,
    room: web::Path<String>,
    query: web::Query<TimestampQuery>,
) -> Result<HttpResponse, Error> {
    let forward = match query.dir.as_str() {
        "f" => true,
        "b" => false,
        _ => return Err(Error::new(ErrorKind::InvalidParam, "dir must be f or b")),
    };
    let room: OwnedRoomId = path::id(&room)?;
    let access = open(&app, &origin, &room)?;
    let (event_id, origin_server_ts) = app
        .federation
        .serve_closest_event(&access, (query.ts, forward))?;
    Ok(HttpResponse::Ok().json(json!({
        "event_id": event_id,
        "origin_server_ts": origin_server_ts,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_limits_are_clamped_or_refused() {
        assert_eq!(clamped_limit("10").ok(), Some(10));
        assert_eq!(clamped_limit("-5").ok(), Some(0));
        assert_eq!(
            clamped_limit("99999999999999999999999").ok(),
            Some(u64::MAX)
        );
        assert!(clamped_limit("").is_err());
        assert!(clamped_limit("-").is_err());
        assert!(clamped_limit("1e3").is_err());
    }
}
