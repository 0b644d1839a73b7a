//! Server-side key backup (spec: client-server API, "End-to-End Encryption", "Server-side
//! key backups"): backup versions and the session keys in them, kept by
//! `users::key_backup`. Everything here is about the requesting user's own backups.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use ruma::OwnedRoomId;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::api::path;
use crate::error::{Error, ErrorKind};
use crate::users::key_backup::{BackedUpKey, MAX_SESSION_ID_BYTES, RoomsKeys, Scope};

/// The body of `POST /room_keys/version`.
#[derive(Deserialize)]
pub(crate) struct NewVersion {
    algorithm: String,
    auth_data: Map<String, Value>,
}

/// The body of `PUT /room_keys/version/{version}`.
#[derive(Deserialize)]
pub(crate) struct UpdatedVersion {
    algorithm: String,
    auth_data: Map<String, Value>,
    /// If present, must name the version in the path.
    version: Option<String>,
}

/// The `?version=` every key endpoint requires.
#[derive(Deserialize)]
pub(crate) struct VersionQuery {
    version: String,
}

/// One room's keys: `{"sessions": {sessionId: KeyBackupData}}`.
#[derive(Deserialize)]
pub(crate) struct RoomKeyBackup {
    sessions: BTreeMap<String, BackedUpKey>,
}

/// Every room's keys: `{"rooms": {roomId: {"sessions": ...}}}`.
#[derive(Deserialize)]
pub(crate) struct AllKeyBackups {
    rooms: BTreeMap<String, RoomKeyBackup>,
}

/// The room ID of a path or a body, checked.
fn room_id(text: &str) -> Result<OwnedRoomId, Error> {
    path::id(text)
}

/// A session ID of a path or a body, checked (the spec gives it no shape; this bounds it).
fn session_id(text: &str) -> Result<(), Error> {
    if text.is_empty() || text.len() > MAX_SESSION_ID_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            format!("A session ID must have 1 to {MAX_SESSION_ID_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Checks every room and session ID of an upload before anything is written.
fn checked(rooms: BTreeMap<String, RoomKeyBackup>) -> Result<RoomsKeys, Error> {
    let mut keys = RoomsKeys::new();
    for (room, backup) in rooms {
        room_id(&room)?;
        for session in backup.sessions.keys() {
            session_id(session)?;
        }
        keys.insert(room, backup.sessions);
    }
    Ok(keys)
}

/// # POST /_matrix/client/v3/room_keys/version
pub(crate) async fn create_version(
    app: web::Data<Services>,
    auth: Authenticated,
    MatrixJson(body): MatrixJson<NewVersion>,
) -> Result<HttpResponse, Error> {
    let version = app
        .users
        .key_backups
        .create(&auth.user_id, body.algorithm, body.auth_data)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "version": version })))
}

/// # GET /_matrix/client/v3/room_keys/version
pub(crate) async fn get_current_version(
    app: web::Data<Services>,
    auth: Authenticated,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(app.users.key_backups.current_info(&auth.user_id)?))
}

/// # GET /_matrix/client/v3/room_keys/version/{version}
pub(crate) async fn get_version(
    app: web::Data<Services>,
    auth: Authenticated,
    version: web::Path<String>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(app.users.key_backups.info(&auth.user_id, &version)?))
}

/// # PUT /_matrix/client/v3/room_keys/version/{version}
pub(crate) async fn update_version(
    app: web::Data<Services>,
    auth: Authenticated,
    version: web::Path<String>,
    MatrixJson(body): MatrixJson<UpdatedVersion>,
) -> Result<HttpResponse, Error> {
    if body
        .version
        .as_ref()
        .is_some_and(|named| *named != *version)
    {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "The version in the body does not match the version in the path",
        ));
    }
    app.users
        .key_backups
        .update(&auth.user_id, &version, &body.algorithm, body.auth_data)
        .await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # DELETE /_matrix/client/v3/room_keys/version/{version}
pub(crate) async fn delete_version(
    app: web::Data<Services>,
    auth: Authenticated,
    version: web::Path<String>,
) -> Result<HttpResponse, Error> {
    app.users
        .key_backups
        .delete(&auth.user_id, &version)
        .await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # PUT /_matrix/client/v3/room_keys/keys
pub(crate) async fn put_all_keys(
    app: web::Data<Services>,
    auth: Authenticated,
    query: web::Query<VersionQuery>,
    MatrixJson(body): MatrixJson<AllKeyBackups>,
) -> Result<HttpResponse, Error> {
    let keys = checked(body.rooms)?;
    let state = app
        .users
        .key_backups
        .put_keys(&auth.user_id, &query.version, keys)
        .await?;
    Ok(HttpResponse::Ok().json(state.to_json()))
}

/// # PUT /_matrix/client/v3/room_keys/keys/{roomId}
pub(crate) async fn put_room_keys(
    app: web::Data<Services>,
    auth: Authenticated,
    room: web::Path<String>,
    query: web::Query<VersionQuery>,
    MatrixJson(body): MatrixJson<RoomKeyBackup>,
) -> Result<HttpResponse, Error> {
    let keys = checked(BTreeMap::from([(room.into_inner(), body)]))?;
    let state = app
        .users
        .key_backups
        .put_keys(&auth.user_id, &query.version, keys)
        .await?;
    Ok(HttpResponse::Ok().json(state.to_json()))
}

/// # PUT /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}
pub(crate) async fn put_session_key(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    query: web::Query<VersionQuery>,
    MatrixJson(body): MatrixJson<BackedUpKey>,
) -> Result<HttpResponse, Error> {
    let (room, session) = path.into_inner();
    let backup = RoomKeyBackup {
        sessions: BTreeMap::from([(session, body)]),
    };
    let keys = checked(BTreeMap::from([(room, backup)]))?;
    let state = app
        .users
        .key_backups
        .put_keys(&auth.user_id, &query.version, keys)
        .await?;
    Ok(HttpResponse::Ok().json(state.to_json()))
}

/// The keys of a backup in `scope` (all, or one room) as the answer's JSON, written as
/// they are read: `{"rooms": {roomId: {"sessions": {...}}}}` for all, `{"sessions": {...}}`
/// for a room. No tree of JSON values is built, so a backup of tens of thousands of keys
/// costs about its own size in memory, once.
fn keys_answer(
    app: &Services,
    auth: &Authenticated,
    version: &str,
    scope: Scope<'_>,
) -> Result<HttpResponse, Error> {
    let all = matches!(scope, Scope::All);
    let mut body: Vec<u8> = Vec::new();
    let mut open_room: Option<String> = None;
    let mut failed = None;
    body.extend_from_slice(if all {
        &b"{\"rooms\":{"[..]
    } else {
        &b"{\"sessions\":{"[..]
    });
    app.users
        .key_backups
        .visit_keys(&auth.user_id, version, scope, |room, session, key| {
            let first_of_room = open_room.as_deref() != Some(room);
            if all && first_of_room {
                if open_room.is_some() {
                    body.extend_from_slice(b"}},");
                }
                let _ = serde_json::to_writer(&mut body, room);
                body.extend_from_slice(b":{\"sessions\":{");
            } else if !first_of_room {
                body.push(b',');
            }
            open_room = Some(room.to_owned());
            let written = serde_json::to_writer(&mut body, session)
                .map(|()| body.push(b':'))
                .and_then(|()| serde_json::to_writer(&mut body, &key));
            if let Err(err) = written {
                failed.get_or_insert(err);
            }
        })?;
    if let Some(err) = failed {
        return Err(Error::internal(err));
    }
    if all && open_room.is_some() {
        body.extend_from_slice(b"}}");
    }
    body.extend_from_slice(b"}}");
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

/// # GET /_matrix/client/v3/room_keys/keys
pub(crate) async fn get_all_keys(
    app: web::Data<Services>,
    auth: Authenticated,
    query: web::Query<VersionQuery>,
) -> Result<HttpResponse, Error> {
    keys_answer(&app, &auth, &query.version, Scope::All)
}

/// # GET /_matrix/client/v3/room_keys/keys/{roomId}
pub(crate) async fn get_room_keys(
    app: web::Data<Services>,
    auth: Authenticated,
    room: web::Path<String>,
    query: web::Query<VersionQuery>,
) -> Result<HttpResponse, Error> {
    room_id(&room)?;
    keys_answer(&app, &auth, &query.version, Scope::Room(&room))
}

/// # GET /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}
pub(crate) async fn get_session_key(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    query: web::Query<VersionQuery>,
) -> Result<HttpResponse, Error> {
    let (room, session) = path.into_inner();
    room_id(&room)?;
    session_id(&session)?;
    let key = app
        .users
        .key_backups
        .get_key(&auth.user_id, &query.version, &room, &session)?;
    Ok(HttpResponse::Ok().json(key))
}

/// # DELETE /_matrix/client/v3/room_keys/keys
pub(crate) async fn delete_all_keys(
    app: web::Data<Services>,
    auth: Authenticated,
    query: web::Query<VersionQuery>,
) -> Result<HttpResponse, Error> {
    let state = app
        .users
        .key_backups
        .delete_keys(&auth.user_id, &query.version, Scope::All)
        .await?;
    Ok(HttpResponse::Ok().json(state.to_json()))
}

/// # DELETE /_matrix/client/v3/room_keys/keys/{roomId}
pub(crate) async fn delete_room_keys(
    app: web::Data<Services>,
    auth: Authenticated,
    room: web::Path<String>,
    query: web::Query<VersionQuery>,
) -> Result<HttpResponse, Error> {
    room_id(&room)?;
    let state = app
        .users
        .key_backups
        .delete_keys(&auth.user_id, &query.version, Scope::Room(&room))
        .await?;
    Ok(HttpResponse::Ok().json(state.to_json()))
}

/// # DELETE /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}
pub(crate) async fn delete_session_key(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    query: web::Query<VersionQuery>,
) -> Result<HttpResponse, Error> {
    let (room, session) = path.into_inner();
    room_id(&room)?;
    session_id(&session)?;
    let state = app
        .users
        .key_backups
        .delete_keys(
            &auth.user_id,
            &query.version,
            Scope::Session(&room, &session),
        )
        .await?;
    Ok(HttpResponse::Ok().json(state.to_json()))
}
