//! What users keep on the server: profile, account data, filters; and what the server can
//! do (spec: client-server API, "Profiles", "Client Config", "Filtering", "Capabilities").

use actix_web::{HttpResponse, web};
use ruma::{OwnedRoomId, OwnedUserId, UserId};
use serde_json::{Map, Value, json};

use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::api::path;
use crate::error::{Error, ErrorKind};
use crate::users::profile;

pub(super) fn require_self(auth: &Authenticated, user_id: &UserId) -> Result<(), Error> {
    if auth.user_id != user_id {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "You can only change your own data",
        ));
    }
    Ok(())
}

/// # GET /_matrix/client/v3/capabilities
///
/// Administrators are told they may lock and suspend accounts (`m.account_moderation`);
/// for everyone else the spec asks that capability be left out.
pub(crate) async fn capabilities(
    app: web::Data<Services>,
    auth: Authenticated,
) -> Result<HttpResponse, Error> {
    let available: Map<String, Value> =
        (1..=12).map(|v| (v.to_string(), json!("stable"))).collect();
    let mut capabilities = json!({
        "m.change_password": { "enabled": true },
        "m.room_versions": { "default": crate::matrix::events::DEFAULT_ROOM_VERSION, "available": available },
        "m.set_displayname": { "enabled": true },
        "m.set_avatar_url": { "enabled": true },
        "m.profile_fields": { "enabled": true },
        "m.3pid_changes": { "enabled": false },
        "m.get_login_token": { "enabled": false },
    });
    if app.users.is_admin(&auth.user_id)? {
        capabilities["m.account_moderation"] = json!({ "lock": true, "suspend": true });
    }
    Ok(HttpResponse::Ok().json(json!({ "capabilities": capabilities })))
}

/// # GET /_matrix/client/v3/profile/{userId}
pub(crate) async fn get_profile(
    app: web::Data<Services>,
    user_id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let user_id: OwnedUserId = path::id(&user_id)?;
    if user_id.server_name() != app.config.server.server_name {
        let profile =
            crate::federation::queries::remote_profile(&app.federation, &user_id, None).await?;
        return Ok(HttpResponse::Ok().json(profile));
    }
    let profile = app
        .users
        .profile(&user_id)?
        .ok_or_else(|| Error::not_found("No such user"))?;
    Ok(HttpResponse::Ok().json(profile))
}

/// Any key a profile may hold (1 to 255 bytes).
fn known_field(field: &str) -> Result<(), Error> {
    if field.len() > profile::MAX_KEY_BYTES {
        return Err(Error::new(
            ErrorKind::KeyTooLarge,
            format!("A profile key is at most {} bytes", profile::MAX_KEY_BYTES),
        ));
    }
    Ok(())
}

/// # GET /_matrix/client/v3/profile/{userId}/{keyName}
pub(crate) async fn get_profile_field(
    app: web::Data<Services>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let (user_id, field) = path.into_inner();
    known_field(&field)?;
    let user_id: OwnedUserId = path::id(&user_id)?;
    let profile = if user_id.server_name() != app.config.server.server_name {
        crate::federation::queries::remote_profile(&app.federation, &user_id, Some(&field)).await?
    } else {
        app.users
            .profile(&user_id)?
            .ok_or_else(|| Error::not_found("No such user"))?
    };
    let value = profile
        .get(&field)
        .ok_or_else(|| Error::not_found(format!("No {field} set")))?;
    Ok(HttpResponse::Ok().json(json!({ field: value })))
}

/// # PUT /_matrix/client/v3/profile/{userId}/{keyName}
pub(crate) async fn set_profile_field(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> Result<HttpResponse, Error> {
    let (user_id, field) = path.into_inner();
    known_field(&field)?;
    let user_id: OwnedUserId = path::id(&user_id)?;
    require_self(&auth, &user_id)?;
    auth.ensure_not_suspended()?;
    // The body's one property is the key of the URL.
    let value = match body.get(&field) {
        Some(Value::Null) => None,
        Some(value) => Some(value.clone()),
        None => {
            return Err(Error::new(
                ErrorKind::MissingParam,
                format!("The body must hold `{field}`"),
            ));
        }
    };
    app.rooms.set_profile_field(&user_id, &field, value).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # DELETE /_matrix/client/v3/profile/{userId}/{keyName}
pub(crate) async fn delete_profile_field(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let (user_id, field) = path.into_inner();
    known_field(&field)?;
    let user_id: OwnedUserId = path::id(&user_id)?;
    require_self(&auth, &user_id)?;
    auth.ensure_not_suspended()?;
    app.rooms.set_profile_field(&user_id, &field, None).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # GET /_matrix/client/v3/user/{userId}/account_data/{type}
pub(crate) async fn get_account_data(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let (user_id, kind) = path.into_inner();
    let user_id: OwnedUserId = path::id(&user_id)?;
    require_self(&auth, &user_id)?;
    let content = app
        .users
        .account_data(&user_id, None, &kind)?
        .ok_or_else(|| Error::not_found("No account data of that type"))?;
    Ok(HttpResponse::Ok().json(content))
}

/// # PUT /_matrix/client/v3/user/{userId}/account_data/{type}
pub(crate) async fn set_account_data(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    MatrixJson(content): MatrixJson<Map<String, Value>>,
) -> Result<HttpResponse, Error> {
    let (user_id, kind) = path.into_inner();
    let user_id: OwnedUserId = path::id(&user_id)?;
    require_self(&auth, &user_id)?;
    app.users
        .set_account_data(&app.rooms.stream, &user_id, None, &kind, content)
        .await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

fn room_for_account_data(
    app: &Services,
    user_id: &UserId,
    room_id: &str,
) -> Result<OwnedRoomId, Error> {
    let room_id: OwnedRoomId = path::id(room_id)?;
    if !app.users.has_been_in_room(user_id, &room_id)? {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "You have never been in this room",
        ));
    }
    Ok(room_id)
}

/// # GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}
pub(crate) async fn get_room_account_data(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, Error> {
    let (user_id, room_id, kind) = path.into_inner();
    let user_id: OwnedUserId = path::id(&user_id)?;
    require_self(&auth, &user_id)?;
    let room_id = room_for_account_data(&app, &user_id, &room_id)?;
    let content = app
        .users
        .account_data(&user_id, Some(&room_id), &kind)?
        .ok_or_else(|| Error::not_found("No account data of that type"))?;
    Ok(HttpResponse::Ok().json(content))
}

/// # PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}
pub(crate) async fn set_room_account_data(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String, String)>,
    MatrixJson(content): MatrixJson<Map<String, Value>>,
) -> Result<HttpResponse, Error> {
    let (user_id, room_id, kind) = path.into_inner();
    let user_id: OwnedUserId = path::id(&user_id)?;
    require_self(&auth, &user_id)?;
    let room_id = room_for_account_data(&app, &user_id, &room_id)?;
    app.users
        .set_account_data(&app.rooms.stream, &user_id, Some(&room_id), &kind, content)
        .await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # POST /_matrix/client/v3/user/{userId}/filter
pub(crate) async fn create_filter(
    app: web::Data<Services>,
    auth: Authenticated,
    user_id: web::Path<String>,
    MatrixJson(filter): MatrixJson<Map<String, Value>>,
) -> Result<HttpResponse, Error> {
    let user_id: OwnedUserId = path::id(&user_id)?;
    require_self(&auth, &user_id)?;
    let text = Value::Object(filter).to_string();
    crate::users::filter::Filter::parse(&text).map_err(|err| {
        Error::new(
            ErrorKind::BadJson,
            format!("The filter is not valid: {err}"),
        )
    })?;
    // The same filter gets the same ID: clients upload theirs on every start.
    let filter_id = app.users.create_filter(&user_id, &text).await?;
    Ok(HttpResponse::Ok().json(json!({ "filter_id": filter_id })))
}

/// # GET /_matrix/client/v3/user/{userId}/filter/{filterId}
pub(crate) async fn get_filter(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let (user_id, filter_id) = path.into_inner();
    let user_id: OwnedUserId = path::id(&user_id)?;
    require_self(&auth, &user_id)?;
    let text = app
        .users
        .filter(&user_id, &filter_id)?
        .ok_or_else(|| Error::not_found("No such filter"))?;
    let filter: Value = serde_json::from_str(&text).map_err(Error::internal)?;
    Ok(HttpResponse::Ok().json(filter))
}

/// # GET /_matrix/client/v3/account/3pid
///
/// Hearth keeps no e-mail addresses or phone numbers: the list is empty, truthfully.
pub(crate) async fn third_party_ids(_auth: Authenticated) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "threepids": [] }))
}

/// # POST /_matrix/client/v3/account/3pid/add, /bind
pub(crate) async fn add_third_party_id(_auth: Authenticated) -> Result<HttpResponse, Error> {
    Err(Error::new(
        ErrorKind::ThreepidDenied,
        "This server does not keep e-mail addresses or phone numbers",
    ))
}

/// # POST /_matrix/client/v3/account/3pid/delete, /unbind
///
/// Nothing is ever bound, so there is nothing to remove.
pub(crate) async fn remove_third_party_id(_auth: Authenticated) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "id_server_unbind_result": "success" }))
}

/// # GET /_matrix/client/v3/thirdparty/protocols
///
/// No bridges are connected to this server.
pub(crate) async fn third_party_protocols(_auth: Authenticated) -> HttpResponse {
    HttpResponse::Ok().json(json!({}))
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct PresenceRequest {
    presence: String,
    status_msg: Option<String>,
}

/// # PUT /_matrix/client/v3/presence/{userId}/status
pub(crate) async fn set_presence(
    app: web::Data<Services>,
    auth: Authenticated,
    user_id: web::Path<String>,
    MatrixJson(body): MatrixJson<PresenceRequest>,
) -> Result<HttpResponse, Error> {
    let user_id: OwnedUserId = path::id(&user_id)?;
    require_self(&auth, &user_id)?;
    if !matches!(body.presence.as_str(), "online" | "unavailable" | "offline") {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "presence must be online, unavailable or offline",
        ));
    }
    if body
        .status_msg
        .as_ref()
        .is_some_and(|message| message.len() > crate::sync::ephemeral::MAX_STATUS_BYTES)
    {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "The status message is too long",
        ));
    }
    app.ephemeral
        .set_presence(&user_id, &body.presence, Some(body.status_msg));
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # GET /_matrix/client/v3/presence/{userId}/status
///
/// One's own, and that of people one shares a room with.
pub(crate) async fn get_presence(
    app: web::Data<Services>,
    auth: Authenticated,
    user_id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let user_id: OwnedUserId = path::id(&user_id)?;
    if !app
        .users
        .exists(&user_id)
        .map_err(|err| Error::internal(err.to_string()))?
    {
        return Err(Error::not_found("No such user"));
    }
    if user_id != auth.user_id && !app.sync.shares_a_room(&auth.user_id, &user_id)? {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "You share no room with this user",
        ));
    }
    let content = match app.ephemeral.presence_of(&user_id) {
        Some(presence) => presence.to_json(),
        None => json!({ "presence": "offline" }),
    };
    Ok(HttpResponse::Ok().json(content))
}
