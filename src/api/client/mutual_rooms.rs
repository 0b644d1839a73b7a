//! Rooms in common with another user (MSC2666, `mutual_rooms`).

use actix_web::{HttpResponse, web};
use ruma::OwnedUserId;
use serde::Deserialize;
use serde_json::json;

use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::error::Error;

#[derive(Debug, Deserialize)]
pub(crate) struct MutualQuery {
    user_id: String,
}

/// # GET /_matrix/client/v1/mutual_rooms
///
/// The rooms the requester and `user_id` are both joined to ([`crate::rooms::Rooms::shared_rooms`]).
pub(crate) async fn mutual_rooms(
    app: web::Data<Services>,
    auth: Authenticated,
    query: web::Query<MutualQuery>,
) -> Result<HttpResponse, Error> {
    // An invalid user shares no room with anyone.
    let Ok(other) = OwnedUserId::try_from(query.user_id.as_str()) else {
        return Ok(HttpResponse::Ok().json(json!({ "joined": [], "count": 0 })));
    };
    let joined = app.rooms.shared_rooms(&auth.user_id, &other)?;
    let count = joined.len();
    Ok(HttpResponse::Ok().json(json!({ "joined": joined, "count": count })))
}
