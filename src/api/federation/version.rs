//! Which software this server runs, for other servers and federation testers.

use actix_web::HttpResponse;
use serde_json::json;

/// # GET /_matrix/federation/v1/version
pub(crate) async fn get() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "server": { "name": crate::SERVER_SOFTWARE, "version": crate::VERSION }
    }))
}
