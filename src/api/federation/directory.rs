//! Our published rooms and spaces, for other servers (spec: server-server API, "Published
//! Room Directory", "Spaces"). Thin: the rules are in [`crate::federation::directory`].

use actix_web::{HttpResponse, web};
use ruma::OwnedRoomId;
use serde::Deserialize;

use super::origin::{FederationOrigin, SignedJson};
use crate::api::app::Services;
use crate::api::path;
use crate::error::Error;
use crate::federation::directory::{self, PublicRoomsRequest};

/// The query of `GET /publicRooms`. `include_all_networks` and `third_party_instance_id`
/// are accepted and change nothing: Hearth bridges no third-party networks.
#[derive(Debug, Deserialize)]
pub(crate) struct PublicRoomsQuery {
    limit: Option<u64>,
    since: Option<String>,
}

/// # GET /_matrix/federation/v1/publicRooms
pub(crate) async fn public_rooms(
    app: web::Data<Services>,
    _origin: FederationOrigin,
    query: web::Query<PublicRoomsQuery>,
) -> Result<HttpResponse, Error> {
    let query = query.into_inner();
    let request = PublicRoomsRequest {
        limit: query.limit,
        since: query.since,
        ..Default::default()
    };
    Ok(HttpResponse::Ok().json(directory::public_rooms(&app.federation, &request)?))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct PublicRoomsFilter {
    generic_search_term: Option<String>,
    room_types: Option<Vec<Option<String>>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct PublicRoomsBody {
    limit: Option<u64>,
    since: Option<String>,
    filter: Option<PublicRoomsFilter>,
}

/// # POST /_matrix/federation/v1/publicRooms
pub(crate) async fn search_public_rooms(
    app: web::Data<Services>,
    request: SignedJson<PublicRoomsBody>,
) -> Result<HttpResponse, Error> {
    let body = request.body;
    let filter = body.filter.unwrap_or_default();
    let request = PublicRoomsRequest {
        limit: body.limit,
        since: body.since,
        search: filter.generic_search_term,
        room_types: filter.room_types,
    };
    Ok(HttpResponse::Ok().json(directory::public_rooms(&app.federation, &request)?))
}

#[derive(Debug, Deserialize)]
pub(crate) struct HierarchyQuery {
    suggested_only: Option<bool>,
}

/// # GET /_matrix/federation/v1/hierarchy/{roomId}
pub(crate) async fn hierarchy(
    app: web::Data<Services>,
    origin: FederationOrigin,
    room: web::Path<String>,
    query: web::Query<HierarchyQuery>,
) -> Result<HttpResponse, Error> {
    let room: OwnedRoomId = path::id(&room)?;
    let suggested_only = query.suggested_only.unwrap_or(false);
    let answer = directory::hierarchy(&app.federation, &origin.0, &room, suggested_only)?;
    Ok(HttpResponse::Ok().json(answer))
}
