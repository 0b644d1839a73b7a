//! `/sync` and `/messages` (spec: client-server API, "Syncing", "Getting events for a room").

use std::time::Duration;

use actix_web::{HttpResponse, web};
use ruma::OwnedRoomId;
use serde::Deserialize;
use serde_json::json;

use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::api::path;
use crate::error::{Error, ErrorKind};
use crate::rooms::pagination::MessagesRequest;
use crate::rooms::timeline::{Direction, Reader};
use crate::sync::{SyncRequest, parse_token, sync};
use crate::users::filter::RoomEventFilter;

#[derive(Debug, Deserialize)]
pub(crate) struct SyncQuery {
    since: Option<String>,
    set_presence: Option<String>,
    timeout: Option<u64>,
    full_state: Option<bool>,
    filter: Option<String>,
    use_state_after: Option<bool>,
}

/// The stream position of a token (a sync token carries a typing serial too).
fn position(token: &str) -> Result<u64, Error> {
    parse_token(token)
        .map(|(position, _)| position)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidParam,
                format!("`{token}` is not a token from this server"),
            )
        })
}

/// # GET /_matrix/client/v3/sync
pub(crate) async fn get_sync(
    app: web::Data<Services>,
    auth: Authenticated,
    query: web::Query<SyncQuery>,
) -> Result<HttpResponse, Error> {
    let since = query
        .since
        .as_deref()
        .map(|token| {
            parse_token(token).ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidParam,
                    format!("`{token}` is not a token from this server"),
                )
            })
        })
        .transpose()?;
    let request = SyncRequest {
        since: since.map(|(position, _)| position),
        since_typing: since.map_or(0, |(_, serial)| serial),
        timeout: Duration::from_millis(query.timeout.unwrap_or(0)),
        full_state: query.full_state.unwrap_or(false),
        filter: app
            .users
            .resolve_filter(&auth.user_id, query.filter.as_deref())?,
        use_state_after: query.use_state_after.unwrap_or(false),
        device_id: auth.device_id.clone(),
        set_presence: match query.set_presence.as_deref() {
            None => "online".to_owned(),
            Some(value @ ("online" | "offline" | "unavailable")) => value.to_owned(),
            Some(other) => {
                return Err(Error::new(
                    ErrorKind::InvalidParam,
                    format!("Unknown presence {other}"),
                ));
            }
        },
    };
    let response = sync(&app.sync, &auth.user_id, &request).await?;
    Ok(HttpResponse::Ok().json(response))
}

#[derive(Debug, Deserialize)]
pub(crate) struct MessagesQuery {
    from: Option<String>,
    to: Option<String>,
    dir: String,
    limit: Option<u64>,
    filter: Option<String>,
}

/// A room event filter given as a query parameter (JSON); none lets everything through.
pub(crate) fn room_event_filter(text: Option<&str>) -> Result<RoomEventFilter, Error> {
    match text {
        None => Ok(RoomEventFilter::default()),
        Some(text) => serde_json::from_str(text).map_err(|err| {
            Error::new(
                ErrorKind::InvalidParam,
                format!("The filter is not valid: {err}"),
            )
        }),
    }
}

/// # GET /_matrix/client/v3/rooms/{roomId}/messages
///
/// Tokens are stream positions: `from` is the last position already seen going backwards
/// (or the first one going forwards). Who may read what: [`crate::rooms::Rooms::messages`].
pub(crate) async fn messages(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    query: web::Query<MessagesQuery>,
) -> Result<HttpResponse, Error> {
    let room_id: OwnedRoomId = path::id(&room_id)?;
    let request = || {
        let mut filter = room_event_filter(query.filter.as_deref())?;
        // The `limit` parameter, else the filter's, else 10; clamped either way.
        filter.limit = query.limit.or(filter.limit);
        let from = query.from.as_deref().map(position).transpose()?;
        let to = query.to.as_deref().map(position).transpose()?;
        let direction = match query.dir.as_str() {
            "b" => Direction::Backward,
            "f" => Direction::Forward,
            _ => return Err(Error::new(ErrorKind::InvalidParam, "dir must be b or f")),
        };
        Ok(MessagesRequest {
            from,
            to,
            direction,
            filter,
        })
    };
    // Older history of a room joined over federation comes from the servers in it.
    let fetch_older = async |wanted: usize| {
        if !app.config.federation.enabled {
            return Ok(0);
        }
        crate::federation::backfill::backfill(&app.federation, &room_id, wanted).await
    };
    let reader = Reader {
        user_id: auth.user_id.as_str(),
        device_id: &auth.device_id,
    };
    let page = app
        .rooms
        .messages(reader, &room_id, request, fetch_older)
        .await?;
    let mut response = json!({ "chunk": page.chunk, "start": page.start.to_string() });
    if let Some(state) = page.state {
        response["state"] = json!(state);
    }
    // No `end` when there is nothing more in that direction: the spec's signal to stop.
    if let Some(end) = page.end {
        response["end"] = json!(end.to_string());
    }
    Ok(HttpResponse::Ok().json(response))
}
