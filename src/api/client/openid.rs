//! OpenID tokens (spec: client-server API, "OpenID"): proof of who a user is, for a third
//! party that checks it with this server over federation (`/openid/userinfo`).

use actix_web::{HttpResponse, web};
use ruma::OwnedUserId;
use serde_json::json;

use super::user::require_self;
use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::api::path;
use crate::error::Error;

/// # POST /_matrix/client/v3/user/{userId}/openid/request_token
///
/// A token a third party can check with this server to learn who the user is. Kept one hour
/// ([`crate::users::openid`]).
pub(crate) async fn request_token(
    app: web::Data<Services>,
    auth: Authenticated,
    user: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let user: OwnedUserId = path::id(&user)?;
    require_self(&auth, &user)?;
    let (token, expires_in) = app.users.issue_openid_token(&user).await?;
    Ok(HttpResponse::Ok().json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "matrix_server_name": app.config.server.server_name,
        "expires_in": expires_in,
    })))
}
