//! Room aliases and the public room directory (spec: client-server API, "Room aliases",
//! "Listing rooms").

use actix_web::{HttpResponse, web};
use ruma::OwnedRoomId;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::directory;
use crate::error::{Error, ErrorKind};
use crate::rooms;

fn parse_room_id(text: &str) -> Result<OwnedRoomId, Error> {
    OwnedRoomId::try_from(text).map_err(|_| Error::new(ErrorKind::InvalidParam, "Invalid room ID"))
}

#[derive(Debug, Deserialize)]
pub struct AliasRequest {
    room_id: OwnedRoomId,
}

/// # PUT /_matrix/client/v3/directory/room/{roomAlias}
pub async fn put_alias(
    app: web::Data<Services>,
    auth: Authenticated,
    alias: web::Path<String>,
    MatrixJson(body): MatrixJson<AliasRequest>,
) -> Result<HttpResponse, Error> {
    auth.ensure_not_suspended()?;
    let alias = directory::local_alias(&app.config.server.server_name, &alias)?;
    match rooms::membership(&app.storage, &auth.user_id, &body.room_id)? {
        Some(record) if record.membership == "join" => {}
        _ => return Err(Error::new(ErrorKind::Forbidden, "You are not in this room")),
    }
    if !directory::create_alias(&app.storage, &alias, &body.room_id, &auth.user_id)? {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!("Room alias {alias} already exists"),
        ));
    }
    app.storage.flush().await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # GET /_matrix/client/v3/directory/room/{roomAlias}
pub async fn get_alias(
    app: web::Data<Services>,
    alias: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let alias = ruma::OwnedRoomAliasId::try_from(alias.as_str())
        .map_err(|_| Error::new(ErrorKind::InvalidParam, "Room alias invalid"))?;
    if alias.server_name() != app.config.server.server_name {
        let (room_id, servers) =
            crate::federation::queries::remote_alias(&app.federation, &alias).await?;
        return Ok(HttpResponse::Ok().json(json!({ "room_id": room_id, "servers": servers })));
    }
    let record = directory::resolve(&app.storage, &alias)?
        .ok_or_else(|| Error::not_found(format!("Room alias {alias} not found")))?;
    Ok(HttpResponse::Ok().json(json!({
        "room_id": record.room_id,
        "servers": [app.config.server.server_name],
    })))
}

/// # DELETE /_matrix/client/v3/directory/room/{roomAlias}
///
/// Its creator may remove an alias, and so may whoever may change the room's canonical
/// alias.
pub async fn delete_alias(
    app: web::Data<Services>,
    auth: Authenticated,
    alias: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let alias = directory::local_alias(&app.config.server.server_name, &alias)?;
    let record = directory::resolve(&app.storage, &alias)?
        .ok_or_else(|| Error::not_found(format!("Room alias {alias} not found")))?;
    let room_id = parse_room_id(&record.room_id)?;
    let allowed = record.creator == auth.user_id.as_str()
        || rooms::may_send_state(
            &app.storage,
            &room_id,
            &auth.user_id,
            "m.room.canonical_alias",
        )?;
    if !allowed {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "You may not remove this alias",
        ));
    }
    directory::delete_alias(&app.storage, &alias)?;
    app.storage.flush().await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # GET /_matrix/client/v3/rooms/{roomId}/aliases
pub async fn room_aliases(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let room_id = parse_room_id(&room_id)?;
    let member = rooms::membership(&app.storage, &auth.user_id, &room_id)?
        .is_some_and(|r| r.membership == "join");
    let world_readable =
        rooms::state_content(&app.storage, &room_id, "m.room.history_visibility", "")?
            .is_some_and(|c| c["history_visibility"] == "world_readable");
    if !member && !world_readable {
        return Err(Error::new(ErrorKind::Forbidden, "You are not in this room"));
    }
    Ok(HttpResponse::Ok()
        .json(json!({ "aliases": directory::aliases_of(&app.storage, &room_id)? })))
}

/// # GET /_matrix/client/v3/directory/list/room/{roomId}
pub async fn get_visibility(
    app: web::Data<Services>,
    room_id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let room_id = parse_room_id(&room_id)?;
    if app.storage.roomid_room.get(&room_id.to_string())?.is_none() {
        return Err(Error::not_found("Room not found"));
    }
    let visibility = if directory::is_published(&app.storage, &room_id)? {
        "public"
    } else {
        "private"
    };
    Ok(HttpResponse::Ok().json(json!({ "visibility": visibility })))
}

#[derive(Debug, Deserialize)]
pub struct VisibilityRequest {
    visibility: String,
}

/// # PUT /_matrix/client/v3/directory/list/room/{roomId}
///
/// Who may change the room's join rules may list it.
pub async fn set_visibility(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    MatrixJson(body): MatrixJson<VisibilityRequest>,
) -> Result<HttpResponse, Error> {
    let room_id = parse_room_id(&room_id)?;
    let published = match body.visibility.as_str() {
        "public" => true,
        "private" => false,
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidParam,
                "visibility must be public or private",
            ));
        }
    };
    if app.storage.roomid_room.get(&room_id.to_string())?.is_none() {
        return Err(Error::not_found("Room not found"));
    }
    if !rooms::may_send_state(&app.storage, &room_id, &auth.user_id, "m.room.join_rules")? {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "You may not change whether this room is listed",
        ));
    }
    directory::set_published(&app.storage, &room_id, published)?;
    app.storage.flush().await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Debug, Default, Deserialize)]
pub struct PublicRoomsQuery {
    limit: Option<usize>,
    since: Option<String>,
    server: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PublicRoomsFilter {
    generic_search_term: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PublicRoomsRequest {
    limit: Option<usize>,
    since: Option<String>,
    filter: Option<PublicRoomsFilter>,
}

/// The most rooms per page.
const MAX_PAGE: usize = 100;

async fn page(
    app: &Services,
    server: Option<&str>,
    limit: Option<usize>,
    since: Option<&str>,
    search: Option<&str>,
) -> Result<Value, Error> {
    if let Some(server) = server
        && server != app.config.server.server_name.as_str()
    {
        return crate::federation::queries::remote_public_rooms(
            &app.federation,
            server,
            limit,
            since,
            search,
        )
        .await;
    }
    let rooms = directory::public_rooms(&app.storage, search)?;
    let start: usize = match since {
        Some(token) => token
            .parse()
            .map_err(|_| Error::new(ErrorKind::InvalidParam, "Invalid since token"))?,
        None => 0,
    };
    let limit = limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let total = rooms.len();
    let chunk: Vec<Value> = rooms.into_iter().skip(start).take(limit).collect();
    let mut response = json!({ "chunk": chunk, "total_room_count_estimate": total });
    if start.saturating_add(limit) < total {
        response["next_batch"] = json!((start + limit).to_string());
    }
    if start > 0 {
        response["prev_batch"] = json!(start.saturating_sub(limit).to_string());
    }
    Ok(response)
}

/// # GET /_matrix/client/v3/publicRooms
pub async fn public_rooms(
    app: web::Data<Services>,
    query: web::Query<PublicRoomsQuery>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(
        page(
            &app,
            query.server.as_deref(),
            query.limit,
            query.since.as_deref(),
            None,
        )
        .await?,
    ))
}

/// # POST /_matrix/client/v3/publicRooms
pub async fn search_public_rooms(
    app: web::Data<Services>,
    _auth: Authenticated,
    query: web::Query<PublicRoomsQuery>,
    MatrixJson(body): MatrixJson<PublicRoomsRequest>,
) -> Result<HttpResponse, Error> {
    let search = body
        .filter
        .as_ref()
        .and_then(|filter| filter.generic_search_term.as_deref());
    Ok(HttpResponse::Ok().json(
        page(
            &app,
            query.server.as_deref(),
            body.limit,
            body.since.as_deref(),
            search,
        )
        .await?,
    ))
}
