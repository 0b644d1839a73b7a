//! Endpoints of features this server does not offer, answering as the spec says a server
//! without them does: no bridges (third-party lookups), no support contacts, no e-mail or
//! phone validation, no refresh tokens, no TURN server, no policy server. (Media are offered:
//! `api::client::media`; of the content repository only URL previews are not built yet, and
//! answer `404 M_UNRECOGNIZED` like any unknown endpoint. The frozen unauthenticated media
//! downloads answer `404 M_NOT_FOUND` there.)

use actix_web::HttpResponse;
use serde_json::json;

use crate::api::auth::Authenticated;
use crate::error::{Error, ErrorKind};

/// # GET /_matrix/client/v3/thirdparty/protocol/{protocol} (and the other lookups)
///
/// No bridges are connected, so no protocol is known.
pub(crate) async fn unknown_protocol(_auth: Authenticated) -> Result<HttpResponse, Error> {
    Err(Error::not_found(
        "No bridge for this protocol is connected to this server",
    ))
}

/// # GET /_matrix/client/v3/thirdparty/location, /thirdparty/user
pub(crate) async fn no_third_party_matches(_auth: Authenticated) -> HttpResponse {
    HttpResponse::Ok().json(json!([]))
}

/// # GET /.well-known/matrix/support
pub(crate) async fn support() -> Result<HttpResponse, Error> {
    Err(Error::not_found("No support contacts are configured"))
}

/// # POST /_matrix/client/v3/{register,account/password,account/3pid}/{email,msisdn}/requestToken
///
/// Hearth sends no e-mails or texts and keeps no addresses: validation tokens are refused.
pub(crate) async fn no_third_party_validation() -> Result<HttpResponse, Error> {
    Err(Error::new(
        ErrorKind::ThreepidDenied,
        "This server does not use e-mail addresses or phone numbers",
    ))
}

/// # POST /_matrix/client/v3/refresh
///
/// Hearth hands out no refresh tokens (its access tokens do not expire), so none is valid.
pub(crate) async fn refresh() -> Result<HttpResponse, Error> {
    Err(Error::unknown_token())
}

/// # GET /.well-known/matrix/policy_server
pub(crate) async fn policy_server() -> Result<HttpResponse, Error> {
    Err(Error::not_found("This server is not a policy server"))
}
