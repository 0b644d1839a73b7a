//! Which versions of the client-server spec this server supports.

use actix_web::HttpResponse;
use serde_json::json;

/// The spec versions advertised. A version is listed only once every endpoint it requires
/// works: the client-server API is still being built (accounts, rooms and sync come next),
/// so none is claimed yet, and clients honestly report that they cannot log in here.
pub const SUPPORTED_VERSIONS: &[&str] = &[];

/// # GET /_matrix/client/versions
pub async fn get() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "versions": SUPPORTED_VERSIONS,
        "unstable_features": {},
    }))
}
