//! `/sync` and `/messages` (spec: client-server API, "Syncing", "Getting events for a room").

use std::time::Duration;

use actix_web::{HttpResponse, web};
use ruma::OwnedRoomId;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::error::{Error, ErrorKind};
use crate::rooms;
use crate::rooms::timeline::{
    Reader, TimelineEvent, client_form, history_start, lazy_loaded_members, timeline,
    with_aggregations,
};
use crate::rooms::visibility::Visibility;
use crate::sync::{SyncRequest, parse_token, sync};
use crate::users::filter::{Filter, RoomEventFilter};

#[derive(Debug, Deserialize)]
pub struct SyncQuery {
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
pub async fn get_sync(
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
        filter: Filter::resolve(&app.storage, auth.user_id.as_str(), query.filter.as_deref())?,
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
pub struct MessagesQuery {
    from: Option<String>,
    to: Option<String>,
    dir: String,
    limit: Option<u64>,
    filter: Option<String>,
}

/// A room event filter given as a query parameter (JSON); none lets everything through.
pub fn room_event_filter(text: Option<&str>) -> Result<RoomEventFilter, Error> {
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
/// (or the first one going forwards). A member reads from where the room's history
/// visibility lets them; a former member up to when they left; someone never in the room,
/// nothing.
pub async fn messages(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    query: web::Query<MessagesQuery>,
) -> Result<HttpResponse, Error> {
    let room_id = OwnedRoomId::try_from(room_id.as_str())
        .map_err(|_| Error::new(ErrorKind::InvalidParam, "Invalid room ID"))?;
    let not_in_room = || Error::new(ErrorKind::Forbidden, "You are not in this room");
    let membership =
        rooms::membership(&app.storage, &auth.user_id, &room_id)?.ok_or_else(not_in_room)?;
    let visible_until = match membership.membership.as_str() {
        "join" => app.rooms.visible_position(),
        "leave" | "ban" if membership.joined_stream.is_some() => membership.stream,
        _ => return Err(not_in_room()),
    };
    let visible_from = history_start(&app.storage, &room_id, &membership)?.saturating_sub(1);
    let mut filter = room_event_filter(query.filter.as_deref())?;
    // The `limit` parameter, else the filter's, else 10; clamped either way.
    filter.limit = query.limit.or(filter.limit);
    let from = query.from.as_deref().map(position).transpose()?;
    let to = query.to.as_deref().map(position).transpose()?;
    let device = Some(Reader {
        user_id: auth.user_id.as_str(),
        device_id: &auth.device_id,
    });
    let (chunk, start, end, newest) = match query.dir.as_str() {
        "b" => {
            let upto = from.unwrap_or(visible_until).min(visible_until);
            let after = to.unwrap_or(0).max(visible_from);
            let mut page = timeline(&app.storage, &room_id, (after, upto), &filter, device)?;
            // At the start of what we hold of a room joined over federation: fetch older
            // history from the servers in the room, then read again.
            if !page.limited
                && to.is_none()
                && membership.membership == "join"
                && app.config.federation.enabled
            {
                let wanted = filter.limit_or(crate::rooms::timeline::DEFAULT_TIMELINE_LIMIT);
                if crate::federation::backfill::backfill(&app.federation, &room_id, wanted).await?
                    > 0
                {
                    page = timeline(&app.storage, &room_id, (after, upto), &filter, device)?;
                    // More may be fetched: the client is told to keep going back.
                    page.limited = true;
                }
            }
            // Continue just below the oldest event looked at (shown or not).
            let end = page.limited.then(|| page.examined_from.saturating_sub(1));
            let newest = page.events.last().map(|(position, _, _)| *position);
            let chunk: Vec<Value> = page
                .events
                .into_iter()
                .rev()
                .map(|(_, _, event)| with_room(event, &room_id))
                .collect();
            (chunk, upto, end, newest)
        }
        "f" => {
            let after = from.unwrap_or(0).max(visible_from);
            let upto = to.unwrap_or(visible_until).min(visible_until);
            let (events, resume) = forward(&app, &room_id, (after, upto), &filter, device)?;
            let newest = events.last().map(|(position, _, _)| *position);
            let chunk: Vec<Value> = events
                .into_iter()
                .map(|(_, _, event)| with_room(event, &room_id))
                .collect();
            (chunk, after, resume, newest)
        }
        _ => return Err(Error::new(ErrorKind::InvalidParam, "dir must be b or f")),
    };
    let mut response = json!({ "chunk": chunk, "start": start.to_string() });
    if filter.lazy_load_members {
        // The senders' member events as the room had them at the page's newest event.
        let at = newest.unwrap_or(visible_until).min(visible_until);
        response["state"] = json!(lazy_loaded_members(&app.storage, &room_id, &chunk, at)?);
    }
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

/// The oldest events `filter` lets through (at most its limit) with positions in
/// `(after, upto]` that the reader may see, and, when more may follow, the position to
/// continue from. At most [`crate::rooms::timeline::MAX_EXAMINED`] events are looked at.
fn forward(
    app: &Services,
    room_id: &ruma::RoomId,
    (after, upto): (u64, u64),
    filter: &RoomEventFilter,
    reader: Option<Reader<'_>>,
) -> Result<(Vec<TimelineEvent>, Option<u64>), Error> {
    let limit = filter.limit_or(crate::rooms::timeline::DEFAULT_TIMELINE_LIMIT);
    let room = room_id.to_string();
    let mut events = Vec::new();
    if after >= upto {
        return Ok((events, None));
    }
    let visibility = match reader {
        Some(reader) => Some(Visibility::for_user(&app.storage, room_id, reader.user_id)?),
        None => None,
    };
    let range = app
        .storage
        .roomstream_eventid
        .range(&(room.clone(), after.saturating_add(1)), &(room, upto));
    let mut last_examined = after;
    for (examined, entry) in range.enumerate() {
        let ((_, position), event_id) = entry?;
        if events.len() == limit || examined == crate::rooms::timeline::MAX_EXAMINED {
            return Ok((events, Some(last_examined)));
        }
        last_examined = position;
        if visibility
            .as_ref()
            .is_some_and(|view| !view.allows(position))
        {
            continue;
        }
        let Some(event) = client_form(&app.storage, &event_id, None, reader.map(|r| r.device_id))?
        else {
            continue;
        };
        if filter.allows(&event) {
            events.push((
                position,
                event_id,
                with_aggregations(&app.storage, event, reader)?,
            ));
        }
    }
    Ok((events, None))
}
