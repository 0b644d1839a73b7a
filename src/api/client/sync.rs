//! `/sync` and `/messages` (spec: client-server API, "Syncing", "Getting events for a room").

use std::time::Duration;

use actix_web::{HttpResponse, web};
use ruma::OwnedRoomId;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::auth::Authenticated;
use crate::error::{Error, ErrorKind};
use crate::rooms;
use crate::state::AppState;
use crate::sync::{
    DEFAULT_TIMELINE_LIMIT, MAX_TIMELINE_LIMIT, SyncRequest, TimelineEvent, client_form,
    history_start, parse_token, sync, timeline,
};

#[derive(Debug, Deserialize)]
pub struct SyncQuery {
    since: Option<String>,
    set_presence: Option<String>,
    timeout: Option<u64>,
    full_state: Option<bool>,
    filter: Option<String>,
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

/// The timeline limit a filter asks for (`{"room":{"timeline":{"limit":N}}}`), inline or
/// stored with `/user/{userId}/filter`. The rest of filtering is not built yet.
fn timeline_limit(
    state: &AppState,
    user_id: &ruma::UserId,
    filter: Option<&str>,
) -> Result<usize, Error> {
    let text = match filter {
        None => return Ok(DEFAULT_TIMELINE_LIMIT),
        Some(text) if text.starts_with('{') => text.to_owned(),
        Some(id) => state
            .storage
            .userfilter_filter
            .get(&(user_id.to_string(), id.to_owned()))?
            .ok_or_else(|| Error::new(ErrorKind::InvalidParam, "No such filter"))?,
    };
    let filter: Value = serde_json::from_str(&text)
        .map_err(|_| Error::new(ErrorKind::InvalidParam, "The filter is not valid JSON"))?;
    Ok(filter["room"]["timeline"]["limit"]
        .as_u64()
        .map_or(DEFAULT_TIMELINE_LIMIT, |limit| {
            (limit as usize).clamp(1, MAX_TIMELINE_LIMIT)
        }))
}

/// # GET /_matrix/client/v3/sync
pub async fn get_sync(
    state: web::Data<AppState>,
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
        timeline_limit: timeline_limit(&state, &auth.user_id, query.filter.as_deref())?,
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
    let response = sync(&state, &auth.user_id, &request).await?;
    Ok(HttpResponse::Ok().json(response))
}

#[derive(Debug, Deserialize)]
pub struct MessagesQuery {
    from: Option<String>,
    to: Option<String>,
    dir: String,
    limit: Option<usize>,
}

/// The most events one page holds (each may be 64 KiB).
const MAX_PAGE: usize = 100;

/// # GET /_matrix/client/v3/rooms/{roomId}/messages
///
/// Tokens are stream positions: `from` is the last position already seen going backwards
/// (or the first one going forwards). A member reads from where the room's history
/// visibility lets them; a former member up to when they left; someone never in the room,
/// nothing.
pub async fn messages(
    state: web::Data<AppState>,
    auth: Authenticated,
    room_id: web::Path<String>,
    query: web::Query<MessagesQuery>,
) -> Result<HttpResponse, Error> {
    let room_id = OwnedRoomId::try_from(room_id.as_str())
        .map_err(|_| Error::new(ErrorKind::InvalidParam, "Invalid room ID"))?;
    let not_in_room = || Error::new(ErrorKind::Forbidden, "You are not in this room");
    let membership =
        rooms::membership(&state.storage, &auth.user_id, &room_id)?.ok_or_else(not_in_room)?;
    let visible_until = match membership.membership.as_str() {
        "join" => state.rooms.visible_position(),
        "leave" | "ban" if membership.joined_stream.is_some() => membership.stream,
        _ => return Err(not_in_room()),
    };
    let visible_from = history_start(&state, &room_id, &membership)?.saturating_sub(1);
    let limit = query.limit.unwrap_or(10).clamp(1, MAX_PAGE);
    let from = query.from.as_deref().map(position).transpose()?;
    let to = query.to.as_deref().map(position).transpose()?;
    let device = Some(auth.device_id.as_str());
    let (chunk, start, end) = match query.dir.as_str() {
        "b" => {
            let upto = from.unwrap_or(visible_until).min(visible_until);
            let after = to.unwrap_or(0).max(visible_from);
            let (events, limited) = timeline(&state, &room_id, after, upto, limit, device)?;
            let end = limited
                .then(|| {
                    events
                        .first()
                        .map(|(position, _, _)| position.saturating_sub(1))
                })
                .flatten();
            let chunk: Vec<Value> = events
                .into_iter()
                .rev()
                .map(|(_, _, event)| with_room(event, &room_id))
                .collect();
            (chunk, upto, end)
        }
        "f" => {
            let after = from.unwrap_or(0).max(visible_from);
            let upto = to.unwrap_or(visible_until).min(visible_until);
            let (events, limited) = forward(&state, &room_id, after, upto, limit, device)?;
            let end = limited
                .then(|| events.last().map(|(position, _, _)| *position))
                .flatten();
            let chunk: Vec<Value> = events
                .into_iter()
                .map(|(_, _, event)| with_room(event, &room_id))
                .collect();
            (chunk, after, end)
        }
        _ => return Err(Error::new(ErrorKind::InvalidParam, "dir must be b or f")),
    };
    let mut response = json!({ "chunk": chunk, "start": start.to_string() });
    // No `end` when there is nothing more in that direction: the spec's signal to stop.
    if let Some(end) = end {
        response["end"] = json!(end.to_string());
    }
    Ok(HttpResponse::Ok().json(response))
}

fn with_room(mut event: Value, room_id: &ruma::RoomId) -> Value {
    event["room_id"] = json!(room_id);
    event
}

/// The oldest `limit` events with positions in `(after, upto]`, and whether more follow.
fn forward(
    state: &AppState,
    room_id: &ruma::RoomId,
    after: u64,
    upto: u64,
    limit: usize,
    device: Option<&str>,
) -> Result<(Vec<TimelineEvent>, bool), Error> {
    let room = room_id.to_string();
    let mut events = Vec::new();
    if after >= upto {
        return Ok((events, false));
    }
    let range = state
        .storage
        .roomstream_eventid
        .range(&(room.clone(), after.saturating_add(1)), &(room, upto));
    for entry in range {
        let ((_, position), event_id) = entry?;
        if events.len() == limit {
            return Ok((events, true));
        }
        if let Some(event) = client_form(state, &event_id, None, device)? {
            events.push((position, event_id, event));
        }
    }
    Ok((events, false))
}
