//! Spaces (spec: client-server API, "Spaces"): the space hierarchy. The walk itself is in
//! [`crate::directory::spaces`].

use actix_web::{HttpResponse, web};
use ruma::OwnedRoomId;
use serde::Deserialize;
use serde_json::json;

use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::api::path;
use crate::directory::spaces::HierarchyRequest;
use crate::error::Error;

#[derive(Debug, Deserialize)]
pub(crate) struct HierarchyQuery {
    suggested_only: Option<bool>,
    limit: Option<u64>,
    max_depth: Option<u64>,
    from: Option<String>,
}

/// # GET /_matrix/client/v1/rooms/{roomId}/hierarchy
pub(crate) async fn hierarchy(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    query: web::Query<HierarchyQuery>,
) -> Result<HttpResponse, Error> {
    let room_id: OwnedRoomId = path::id(&room_id)?;
    let query = query.into_inner();
    let request = HierarchyRequest {
        suggested_only: query.suggested_only,
        limit: query.limit,
        max_depth: query.max_depth,
        from: query.from,
    };
    let page = app.directory.hierarchy(&auth.user_id, &room_id, &request)?;
    let mut body = json!({ "rooms": page.rooms });
    if let Some(next_batch) = page.next_batch {
        body["next_batch"] = json!(next_batch);
    }
    Ok(HttpResponse::Ok().json(body))
}
