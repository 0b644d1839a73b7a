//! `/search` (spec: client-server API, "Server Side Search"). The rules (what matches, the
//! rank, pages, context, groups) are in [`crate::rooms::search`]; this reads the request.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::error::Error;
use crate::rooms::search::RoomEventsCriteria;

#[derive(Debug, Deserialize)]
pub(crate) struct SearchRequest {
    search_categories: Categories,
}

/// The categories to search. `room_events` is the only one the spec defines; a request
/// without it gets no categories back.
#[derive(Debug, Deserialize)]
pub(crate) struct Categories {
    room_events: Option<RoomEventsCriteria>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SearchQuery {
    next_batch: Option<String>,
}

/// # POST /_matrix/client/v3/search
///
/// A body of the wrong shape (an unknown `order_by`, `keys` or group key, a filter field of
/// the wrong type) is `400 M_BAD_JSON`; a bad `next_batch` or a term without words is
/// `400 M_INVALID_PARAM`.
pub(crate) async fn search(
    app: web::Data<Services>,
    auth: Authenticated,
    query: web::Query<SearchQuery>,
    MatrixJson(body): MatrixJson<SearchRequest>,
) -> Result<HttpResponse, Error> {
    let Some(criteria) = body.search_categories.room_events else {
        return Ok(HttpResponse::Ok().json(json!({ "search_categories": {} })));
    };
    let response = app.search.room_events(
        &auth.user_id,
        &auth.device_id,
        &criteria,
        query.next_batch.as_deref(),
    )?;
    Ok(HttpResponse::Ok().json(response))
}
