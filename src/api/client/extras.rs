//! Smaller client endpoints around rooms and users: tags, event context, the event at a
//! time, the user directory, OpenID tokens, reports on users, rooms in common, room
//! summaries, third-party lookups (no bridges here), support contacts.

use actix_web::{HttpResponse, web};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::error::{Error, ErrorKind};
use crate::rooms::timeline::{Reader, history_start, timeline, timeline_form};
use crate::rooms::{self, format::stored_event_for_client};

fn room_id(text: &str) -> Result<OwnedRoomId, Error> {
    OwnedRoomId::try_from(text).map_err(|_| Error::new(ErrorKind::InvalidParam, "Invalid room ID"))
}

fn user_id(text: &str) -> Result<OwnedUserId, Error> {
    OwnedUserId::try_from(text).map_err(|_| Error::new(ErrorKind::InvalidParam, "Invalid user ID"))
}

fn joined(app: &Services, user: &UserId, room: &RoomId) -> Result<rooms::MembershipRecord, Error> {
    match rooms::membership(&app.storage, user, room)? {
        Some(record) if record.membership == "join" => Ok(record),
        _ => Err(Error::new(ErrorKind::Forbidden, "You are not in this room")),
    }
}

fn own(auth: &Authenticated, user: &UserId) -> Result<(), Error> {
    if auth.user_id != user {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "You can only change your own data",
        ));
    }
    Ok(())
}

/// Tags live in the room's `m.tag` account data.
fn tags_of(app: &Services, user: &UserId, room: &RoomId) -> Result<Map<String, Value>, Error> {
    Ok(
        crate::users::account_data::get(&app.storage, user, Some(room), "m.tag")?
            .and_then(|content| content.get("tags").and_then(Value::as_object).cloned())
            .unwrap_or_default(),
    )
}

/// # GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags
pub async fn get_tags(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let (user, room) = path.into_inner();
    let (user, room) = (user_id(&user)?, room_id(&room)?);
    own(&auth, &user)?;
    Ok(HttpResponse::Ok().json(json!({ "tags": tags_of(&app, &user, &room)? })))
}

/// Changes a room's `m.tag` account data in one step (see [`crate::users::account_data::modify`]).
async fn change_tags(
    app: &Services,
    user: &UserId,
    room: &RoomId,
    change: impl FnOnce(&mut Map<String, Value>),
) -> Result<(), Error> {
    crate::users::account_data::modify(
        &app.storage,
        &app.rooms.stream,
        user,
        Some(room),
        "m.tag",
        |content| {
            let mut tags = content
                .and_then(|mut content| content.remove("tags"))
                .and_then(|tags| match tags {
                    Value::Object(tags) => Some(tags),
                    _ => None,
                })
                .unwrap_or_default();
            change(&mut tags);
            let mut content = Map::new();
            content.insert("tags".into(), Value::Object(tags));
            Ok(content)
        },
    )
    .await
}

/// # PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}
pub async fn put_tag(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String, String)>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> Result<HttpResponse, Error> {
    let (user, room, tag) = path.into_inner();
    let (user, room) = (user_id(&user)?, room_id(&room)?);
    own(&auth, &user)?;
    if rooms::membership(&app.storage, &user, &room)?.is_none() {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "You have never been in this room",
        ));
    }
    if tag.is_empty() || tag.len() > 255 {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "A tag is 1 to 255 bytes",
        ));
    }
    if body.get("order").is_some_and(|order| !order.is_number()) {
        return Err(Error::new(ErrorKind::BadJson, "order must be a number"));
    }
    change_tags(&app, &user, &room, |tags| {
        tags.insert(tag, Value::Object(body));
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}
pub async fn delete_tag(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, Error> {
    let (user, room, tag) = path.into_inner();
    let (user, room) = (user_id(&user)?, room_id(&room)?);
    own(&auth, &user)?;
    if tags_of(&app, &user, &room)?.contains_key(&tag) {
        change_tags(&app, &user, &room, |tags| {
            tags.remove(&tag);
        })
        .await?;
    }
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Debug, Deserialize)]
pub struct ContextQuery {
    limit: Option<u64>,
    filter: Option<String>,
}

/// # GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}
pub async fn context(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    query: web::Query<ContextQuery>,
) -> Result<HttpResponse, Error> {
    let (room, event_id) = path.into_inner();
    let room = room_id(&room)?;
    let record = joined(&app, &auth.user_id, &room)?;
    let not_found = || Error::not_found("No such event in this room");
    let meta = app
        .storage
        .eventid_meta
        .get(&event_id)?
        .ok_or_else(not_found)?;
    let start_of_history = history_start(&app.storage, &room, &record)?;
    let view =
        crate::rooms::visibility::Visibility::for_user(&app.storage, &room, auth.user_id.as_str())?;
    if meta.room_id != room.as_str() || !view.allows(meta.stream) {
        return Err(not_found());
    }
    let device = Some(Reader {
        user_id: auth.user_id.as_str(),
        device_id: &auth.device_id,
    });
    let event = timeline_form(&app.storage, &event_id, Some(room.as_str()), device)?
        .ok_or_else(not_found)?;
    let mut filter = crate::api::client::sync::room_event_filter(query.filter.as_deref())?;
    let limit = query.limit.unwrap_or(10).min(100);
    let before_n = limit / 2;
    let after_n = (limit - before_n) as usize;
    filter.limit = Some(before_n.max(1));
    let before = timeline(
        &app.storage,
        &room,
        (start_of_history.saturating_sub(1), meta.stream - 1),
        &filter,
        device,
    )?
    .events;
    let before: Vec<_> = if before_n == 0 { Vec::new() } else { before };
    let upto = app.rooms.visible_position();
    let mut after = Vec::new();
    let range = app.storage.roomstream_eventid.range(
        &(room.to_string(), meta.stream + 1),
        &(room.to_string(), upto),
    );
    for (examined, entry) in range.enumerate() {
        if after.len() >= after_n || examined == crate::rooms::timeline::MAX_EXAMINED {
            break;
        }
        let ((_, position), id) = entry?;
        if !view.allows(position) {
            continue;
        }
        let Some(event) = crate::rooms::timeline::client_form(
            &app.storage,
            &id,
            Some(room.as_str()),
            device.map(|reader| reader.device_id),
        )?
        else {
            continue;
        };
        if filter.allows(&event) {
            after.push((
                position,
                crate::rooms::timeline::with_aggregations(&app.storage, event, device)?,
            ));
        }
    }
    let start = before
        .first()
        .map_or(meta.stream, |(position, _, _)| *position)
        .saturating_sub(1);
    let end = after.last().map_or(meta.stream, |(position, _)| *position);
    let before: Vec<Value> = before
        .into_iter()
        .rev()
        .map(|(_, _, event)| with_room(event, &room))
        .collect();
    let after: Vec<Value> = after.into_iter().map(|(_, event)| event).collect();
    // The state at the last event returned; with lazy-loading, only the shown senders.
    let mut shown: Vec<Value> = before.iter().chain(&after).cloned().collect();
    shown.push(event.clone());
    let senders: std::collections::BTreeSet<&str> = shown
        .iter()
        .filter_map(|event| event["sender"].as_str())
        .collect();
    let mut state_events = Vec::new();
    for ((kind, key), id) in crate::rooms::history::state_at(&app.storage, &room, end)? {
        if filter.lazy_load_members && kind == "m.room.member" && !senders.contains(key.as_str()) {
            continue;
        }
        if let Some(event) = stored_event_for_client(&app.storage, &id, Some(room.as_str()), None)?
        {
            state_events.push(event);
        }
    }
    Ok(HttpResponse::Ok().json(json!({
        "event": event,
        "events_before": before,
        "events_after": after,
        "start": start.to_string(),
        "end": end.to_string(),
        "state": state_events,
    })))
}

fn with_room(mut event: Value, room: &RoomId) -> Value {
    event["room_id"] = json!(room);
    event
}

#[derive(Debug, Deserialize)]
pub struct TimestampQuery {
    ts: u64,
    dir: String,
}

/// # GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event
pub async fn timestamp_to_event(
    app: web::Data<Services>,
    auth: Authenticated,
    room: web::Path<String>,
    query: web::Query<TimestampQuery>,
) -> Result<HttpResponse, Error> {
    let room = room_id(&room)?;
    let record = joined(&app, &auth.user_id, &room)?;
    let forward = match query.dir.as_str() {
        "f" => true,
        "b" => false,
        _ => return Err(Error::new(ErrorKind::InvalidParam, "dir must be f or b")),
    };
    let from = history_start(&app.storage, &room, &record)?;
    let upto = app.rooms.visible_position();
    let view =
        crate::rooms::visibility::Visibility::for_user(&app.storage, &room, auth.user_id.as_str())?;
    // Timestamps follow the stream closely: a binary search finds where `ts` falls, and a
    // window of events around that point is searched exactly.
    let pivot = first_at_or_after_ts(&app, &room, (from, upto), query.ts)?;
    let room_key = room.to_string();
    // (Empty spans are skipped: a range must not run backwards.)
    let before: Vec<_> = if pivot > from {
        app.storage
            .roomstream_eventid
            .range(&(room_key.clone(), from), &(room_key.clone(), pivot - 1))
            .rev()
            .take(TIMESTAMP_WINDOW)
            .collect()
    } else {
        Vec::new()
    };
    let after: Vec<_> = if pivot <= upto {
        app.storage
            .roomstream_eventid
            .range(&(room_key.clone(), pivot), &(room_key, upto))
            .take(TIMESTAMP_WINDOW)
            .collect()
    } else {
        Vec::new()
    };
    let mut best: Option<(String, u64)> = None;
    for entry in before.into_iter().chain(after) {
        let ((_, position), event_id) = entry?;
        if !view.allows(position) {
            continue;
        }
        let Some(ts) = event_ts(&app, &event_id)? else {
            continue;
        };
        let candidate = if forward {
            ts >= query.ts
        } else {
            ts <= query.ts
        };
        let closer = best.as_ref().is_none_or(|(_, best_ts)| {
            if forward {
                ts < *best_ts
            } else {
                ts >= *best_ts
            }
        });
        if candidate && closer {
            best = Some((event_id, ts));
        }
    }
    let (event_id, origin_server_ts) =
        best.ok_or_else(|| Error::not_found("No event in that direction from that time"))?;
    Ok(HttpResponse::Ok()
        .json(json!({ "event_id": event_id, "origin_server_ts": origin_server_ts })))
}

/// How many events on each side of the binary search's answer are checked exactly.
const TIMESTAMP_WINDOW: usize = 200;

/// An event's `origin_server_ts`.
fn event_ts(app: &Services, event_id: &str) -> Result<Option<u64>, Error> {
    Ok(rooms::load_json(&app.storage, event_id)?.and_then(|json| {
        json.get("origin_server_ts")
            .and_then(|ts| ts.as_integer())
            .and_then(|ts| u64::try_from(i64::from(ts)).ok())
    }))
}

/// The stream position, within `(from, upto)`, of roughly the first event sent at or after
/// `ts`: a binary search over positions, each step reading one event.
fn first_at_or_after_ts(
    app: &Services,
    room: &RoomId,
    (from, upto): (u64, u64),
    ts: u64,
) -> Result<u64, Error> {
    let (mut low, mut high) = (from, upto.saturating_add(1));
    while low < high {
        let middle = low + (high - low) / 2;
        let next = if middle <= upto {
            app.storage
                .roomstream_eventid
                .range(&(room.to_string(), middle), &(room.to_string(), upto))
                .next()
                .transpose()?
        } else {
            None
        };
        match next {
            Some(((_, position), event_id))
                if event_ts(app, &event_id)?.is_some_and(|at| at < ts) =>
            {
                low = position + 1;
            }
            _ => high = middle,
        }
    }
    Ok(low)
}

#[derive(Debug, Deserialize)]
pub struct UserSearch {
    search_term: String,
    limit: Option<usize>,
}

/// # POST /_matrix/client/v3/user_directory/search
///
/// Users of this server who share a room with the searcher or are in a public room, found by
/// ID or display name.
pub async fn search_users(
    app: web::Data<Services>,
    auth: Authenticated,
    MatrixJson(body): MatrixJson<UserSearch>,
) -> Result<HttpResponse, Error> {
    let term = body.search_term.to_lowercase();
    let limit = body.limit.unwrap_or(10).clamp(1, 50);
    let mut results = Vec::new();
    let mut limited = false;
    for account in crate::users::accounts::list(&app.storage)
        .map_err(|err| Error::internal(err.to_string()))?
    {
        if account.deactivated {
            continue;
        }
        let profile = app
            .storage
            .userid_profile
            .get(&account.user_id.to_string())?
            .unwrap_or_default();
        let name = profile
            .get("displayname")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let matches = account.user_id.as_str().to_lowercase().contains(&term)
            || name.to_lowercase().contains(&term);
        if !matches
            || !(account.user_id == auth.user_id
                || visible_to(&app, &auth.user_id, &account.user_id)?)
        {
            continue;
        }
        if results.len() == limit {
            limited = true;
            break;
        }
        let mut result = json!({ "user_id": account.user_id });
        for field in ["displayname", "avatar_url"] {
            if let Some(value) = profile.get(field) {
                result[field] = value.clone();
            }
        }
        results.push(result);
    }
    Ok(HttpResponse::Ok().json(json!({ "results": results, "limited": limited })))
}

/// Whether `other` shares a room with `user`, or is in a published room.
fn visible_to(app: &Services, user: &UserId, other: &UserId) -> Result<bool, Error> {
    for (room, record) in rooms::memberships(&app.storage, other)? {
        if record.membership != "join" {
            continue;
        }
        if crate::directory::is_published(&app.storage, &room)?
            || rooms::membership(&app.storage, user, &room)?.is_some_and(|r| r.membership == "join")
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// # POST /_matrix/client/v3/user/{userId}/openid/request_token
///
/// A token a third party can check with this server to learn who the user is. Kept one hour.
pub async fn openid_token(
    app: web::Data<Services>,
    auth: Authenticated,
    user: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let user = user_id(&user)?;
    own(&auth, &user)?;
    let token = crate::users::accounts::sessions::new_access_token();
    let now = crate::matrix::time::now_ms();
    let expires_at = now + 3_600_000;
    // Expired tokens go as new ones come, so the table stays small.
    let expired: Vec<String> = app
        .storage
        .openid_user
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, record)| record["expires_at"].as_u64().is_none_or(|at| at <= now))
        .map(|(token, _)| token)
        .collect();
    for old in expired {
        app.storage.openid_user.remove(&old)?;
    }
    app.storage.openid_user.insert(
        &token,
        &json!({ "user_id": user, "expires_at": expires_at }),
    )?;
    app.storage.flush().await?;
    Ok(HttpResponse::Ok().json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "matrix_server_name": app.config.server.server_name,
        "expires_in": 3600,
    })))
}

#[derive(Debug, Deserialize)]
pub struct ReportRequest {
    reason: Option<String>,
}

/// # POST /_matrix/client/v3/users/{userId}/report
pub async fn report_user(
    app: web::Data<Services>,
    auth: Authenticated,
    user: web::Path<String>,
    MatrixJson(body): MatrixJson<ReportRequest>,
) -> Result<HttpResponse, Error> {
    let user = user_id(&user)?;
    if crate::users::accounts::get(&app.storage, &user)
        .map_err(|err| Error::internal(err.to_string()))?
        .is_none()
    {
        return Err(Error::not_found("No such user"));
    }
    let reason: String = body.reason.unwrap_or_default().chars().take(500).collect();
    tracing::warn!(reporter = %auth.user_id, reported = %user, %reason, "user reported");
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Debug, Deserialize)]
pub struct MutualQuery {
    user_id: String,
}

/// # GET /_matrix/client/v1/mutual_rooms
pub async fn mutual_rooms(
    app: web::Data<Services>,
    auth: Authenticated,
    query: web::Query<MutualQuery>,
) -> Result<HttpResponse, Error> {
    // An invalid user shares no room with anyone.
    let Ok(other) = user_id(&query.user_id) else {
        return Ok(HttpResponse::Ok().json(json!({ "joined": [], "count": 0 })));
    };
    let mut joined = Vec::new();
    for (room, record) in rooms::memberships(&app.storage, &auth.user_id)? {
        if record.membership == "join"
            && rooms::membership(&app.storage, &other, &room)?
                .is_some_and(|r| r.membership == "join")
        {
            joined.push(room);
        }
    }
    let count = joined.len();
    Ok(HttpResponse::Ok().json(json!({ "joined": joined, "count": count })))
}

/// # GET /_matrix/client/v1/room_summary/{roomIdOrAlias}
///
/// For whoever [`crate::directory::may_preview`] the room; to anyone else it does not
/// exist.
pub async fn room_summary(
    app: web::Data<Services>,
    auth: Authenticated,
    room: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let room = app.directory.room_id_or_alias(&room)?;
    let summary = app.directory.room_summary(&auth.user_id, &room)?;
    Ok(HttpResponse::Ok().json(summary))
}

/// # GET /_matrix/client/v3/thirdparty/protocol/{protocol} (and the other lookups)
///
/// No bridges are connected, so no protocol is known.
pub async fn unknown_protocol(_auth: Authenticated) -> Result<HttpResponse, Error> {
    Err(Error::not_found(
        "No bridge for this protocol is connected to this server",
    ))
}

/// # GET /_matrix/client/v3/thirdparty/location, /thirdparty/user
pub async fn no_third_party_matches(_auth: Authenticated) -> HttpResponse {
    HttpResponse::Ok().json(json!([]))
}

/// # GET /.well-known/matrix/support
pub async fn support() -> Result<HttpResponse, Error> {
    Err(Error::not_found("No support contacts are configured"))
}

/// # POST /_matrix/client/v3/{register,account/password,account/3pid}/{email,msisdn}/requestToken
///
/// Hearth sends no e-mails or texts and keeps no addresses: validation tokens are refused.
pub async fn no_third_party_validation() -> Result<HttpResponse, Error> {
    Err(Error::new(
        ErrorKind::ThreepidDenied,
        "This server does not use e-mail addresses or phone numbers",
    ))
}

/// # POST /_matrix/client/v3/refresh
///
/// Hearth hands out no refresh tokens (its access tokens do not expire), so none is valid.
pub async fn refresh() -> Result<HttpResponse, Error> {
    Err(Error::unknown_token())
}

/// # GET /_matrix/client/v3/voip/turnServer
///
/// No TURN server is configured: an empty answer tells clients to call without one.
pub async fn turn_server(_auth: Authenticated) -> HttpResponse {
    HttpResponse::Ok().json(json!({}))
}

/// # GET /.well-known/matrix/policy_server
pub async fn policy_server() -> Result<HttpResponse, Error> {
    Err(Error::not_found("This server is not a policy server"))
}

/// # GET /_matrix/client/v3/admin/whois/{userId}
///
/// One's own sessions, or anyone's for a server administrator.
pub async fn whois(
    app: web::Data<Services>,
    auth: Authenticated,
    user: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let user = user_id(&user)?;
    let is_admin = crate::users::accounts::get(&app.storage, &auth.user_id)
        .map_err(|err| Error::internal(err.to_string()))?
        .is_some_and(|account| account.admin);
    if user != auth.user_id && !is_admin {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "Only server administrators may look at others",
        ));
    }
    let mut devices = Map::new();
    for device in crate::users::accounts::sessions::list_devices(&app.storage, &user)? {
        let mut connection = json!({});
        if let Some(ip) = &device.last_seen_ip {
            connection["ip"] = json!(ip);
        }
        if let Some(ts) = device.last_seen_ts {
            connection["last_seen"] = json!(ts);
        }
        devices.insert(
            device.device_id,
            json!({ "sessions": [{ "connections": [connection] }] }),
        );
    }
    Ok(HttpResponse::Ok().json(json!({ "user_id": user, "devices": devices })))
}
