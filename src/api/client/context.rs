//! Jumping into a room's history (spec: client-server API, "Events"): the events around one
//! event (`/context`), and the event nearest to a point in time (`/timestamp_to_event`).

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::api::path;
use crate::error::{Error, ErrorKind};
use crate::rooms::timeline::Reader;

#[derive(Debug, Deserialize)]
pub(crate) struct ContextQuery {
    limit: Option<u64>,
    filter: Option<String>,
}

/// # GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}
pub(crate) async fn context(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    query: web::Query<ContextQuery>,
) -> Result<HttpResponse, Error> {
    let (room, event_id) = path.into_inner();
    let room: ruma::OwnedRoomId = path::id(&room)?;
    let reader = Reader {
        user_id: auth.user_id.as_str(),
        device_id: &auth.device_id,
    };
    let filter = || super::sync::room_event_filter(query.filter.as_deref());
    let context = app
        .rooms
        .context(reader, &room, &event_id, query.limit.unwrap_or(10), filter)?;
    Ok(HttpResponse::Ok().json(json!({
        "event": context.event,
        "events_before": context.before,
        "events_after": context.after,
        "start": context.start.to_string(),
        "end": context.end.to_string(),
        "state": context.state,
    })))
}

#[derive(Debug, Deserialize)]
pub(crate) struct TimestampQuery {
    ts: u64,
    dir: String,
}

/// # GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event
pub(crate) async fn timestamp_to_event(
    app: web::Data<Services>,
    auth: Authenticated,
    room: web::Path<String>,
    query: web::Query<TimestampQuery>,
) -> Result<HttpResponse, Error> {
    let room: ruma::OwnedRoomId = path::id(&room)?;
    let forward = || match query.dir.as_str() {
        "f" => Ok(true),
        "b" => Ok(false),
        _ => Err(Error::new(ErrorKind::InvalidParam, "dir must be f or b")),
    };
    let (event_id, origin_server_ts) =
        app.rooms
            .event_at_time(&auth.user_id, &room, query.ts, forward)?;
    Ok(HttpResponse::Ok()
        .json(json!({ "event_id": event_id, "origin_server_ts": origin_server_ts })))
}
