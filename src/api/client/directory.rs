//! Room aliases and the public room directory (spec: client-server API, "Room aliases",
//! "Listing rooms").

use actix_web::{HttpResponse, web};
use ruma::OwnedRoomId;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::api::path;
use crate::error::{Error, ErrorKind};

#[derive(Debug, Deserialize)]
pub(crate) struct AliasRequest {
    room_id: OwnedRoomId,
}

/// # PUT /_matrix/client/v3/directory/room/{roomAlias}
pub(crate) async fn put_alias(
    app: web::Data<Services>,
    auth: Authenticated,
    alias: web::Path<String>,
    MatrixJson(body): MatrixJson<AliasRequest>,
) -> Result<HttpResponse, Error> {
    auth.ensure_not_suspended()?;
    app.directory
        .put_alias(&auth.user_id, &alias, &body.room_id)
        .await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # GET /_matrix/client/v3/directory/room/{roomAlias}
pub(crate) async fn get_alias(
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
    let record = app
        .directory
        .resolve(&alias)?
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
pub(crate) async fn delete_alias(
    app: web::Data<Services>,
    auth: Authenticated,
    alias: web::Path<String>,
) -> Result<HttpResponse, Error> {
    app.directory.remove_alias(&auth.user_id, &alias).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # GET /_matrix/client/v3/rooms/{roomId}/aliases
pub(crate) async fn room_aliases(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let room_id: OwnedRoomId = path::id(&room_id)?;
    let aliases = app.directory.room_aliases(&auth.user_id, &room_id)?;
    Ok(HttpResponse::Ok().json(json!({ "aliases": aliases })))
}

/// # GET /_matrix/client/v3/directory/list/room/{roomId}
pub(crate) async fn get_visibility(
    app: web::Data<Services>,
    room_id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let room_id: OwnedRoomId = path::id(&room_id)?;
    let visibility = if app.directory.is_listed(&room_id)? {
        "public"
    } else {
        "private"
    };
    Ok(HttpResponse::Ok().json(json!({ "visibility": visibility })))
}

#[derive(Debug, Deserialize)]
pub(crate) struct VisibilityRequest {
    visibility: String,
}

/// # PUT /_matrix/client/v3/directory/list/room/{roomId}
///
/// Who may change the room's join rules may list it.
pub(crate) async fn set_visibility(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    MatrixJson(body): MatrixJson<VisibilityRequest>,
) -> Result<HttpResponse, Error> {
    let room_id: OwnedRoomId = path::id(&room_id)?;
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
    app.directory
        .set_listed(&auth.user_id, &room_id, published)
        .await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct PublicRoomsQuery {
    limit: Option<usize>,
    since: Option<String>,
    server: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct PublicRoomsFilter {
    generic_search_term: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct PublicRoomsRequest {
    limit: Option<usize>,
    since: Option<String>,
    filter: Option<PublicRoomsFilter>,
}

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
    app.directory.public_rooms_page(limit, since, search)
}

/// # GET /_matrix/client/v3/publicRooms
pub(crate) async fn public_rooms(
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
pub(crate) async fn search_public_rooms(
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
