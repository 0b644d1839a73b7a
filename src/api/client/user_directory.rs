//! The user directory (spec: client-server API, "User directory"): finding users to talk
//! to by ID or display name. Who may be found is the directory service's to say.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::error::Error;

#[derive(Debug, Deserialize)]
pub(crate) struct UserSearch {
    search_term: String,
    limit: Option<usize>,
}

/// # POST /_matrix/client/v3/user_directory/search
///
/// Users of this server who share a room with the searcher or are in a public room, found by
/// ID or display name ([`crate::directory::Directory::search_users`]).
pub(crate) async fn search_users(
    app: web::Data<Services>,
    auth: Authenticated,
    MatrixJson(body): MatrixJson<UserSearch>,
) -> Result<HttpResponse, Error> {
    let (results, limited) =
        app.directory
            .search_users(&auth.user_id, &body.search_term, body.limit)?;
    Ok(HttpResponse::Ok().json(json!({ "results": results, "limited": limited })))
}
