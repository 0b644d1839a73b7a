//! URL previews (spec: client-server "Content repository", `preview_url`), served by
//! [`crate::media::preview::Previews`]: off by default (`404 M_UNRECOGNIZED`).

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::error::Error;

#[derive(Debug, Deserialize)]
pub(crate) struct PreviewQuery {
    url: Option<String>,
    /// Checked by the service (a number of milliseconds), so kept as written.
    ts: Option<String>,
}

/// # GET /_matrix/client/v1/media/preview_url
/// # GET /_matrix/media/v3/preview_url (deprecated, still answered the same way)
///
/// The OpenGraph properties of the page at `url`.
pub(crate) async fn preview_url(
    app: web::Data<Services>,
    _auth: Authenticated,
    query: web::Query<PreviewQuery>,
) -> Result<HttpResponse, Error> {
    let found = app
        .previews
        .preview(query.url.as_deref(), query.ts.as_deref())
        .await?;
    Ok(HttpResponse::Ok().json(&*found))
}
