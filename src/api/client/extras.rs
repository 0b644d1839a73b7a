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
use crate::rooms;

fn room_id(text: &str) -> Result<OwnedRoomId, Error> {
    OwnedRoomId::try_from(text).map_err(|_| Error::new(ErrorKind::InvalidParam, "Invalid room ID"))
}

fn user_id(text: &str) -> Result<OwnedUserId, Error> {
    OwnedUserId::try_from(text).map_err(|_| Error::new(ErrorKind::InvalidParam, "Invalid user ID"))
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
