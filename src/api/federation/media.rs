//! The content repository for other servers: our media, as `multipart/mixed` (the spec's
//! authenticated federation media, v1.11). Only our own media are served: a server asking
//! us for a third server's media gets `404`.

use actix_web::{HttpResponse, web};

use super::origin::FederationOrigin;
use crate::api::app::Services;
use crate::api::client::media::{DownloadQuery, ThumbnailQuery, thumbnail_request};
use crate::api::media::serve_multipart;
use crate::error::Error;
use crate::media::wait_from_millis;

/// # GET /_matrix/federation/v1/media/download/{mediaId}
pub(crate) async fn download(
    app: web::Data<Services>,
    origin: FederationOrigin,
    media_id: web::Path<String>,
    query: web::Query<DownloadQuery>,
) -> Result<HttpResponse, Error> {
    tracing::debug!(origin = %origin.0, media = %media_id, "media download");
    let served = app
        .media
        .download_local(&media_id, wait_from_millis(query.timeout_ms))
        .await?;
    Ok(serve_multipart(served))
}

/// # GET /_matrix/federation/v1/media/thumbnail/{mediaId}
pub(crate) async fn thumbnail(
    app: web::Data<Services>,
    origin: FederationOrigin,
    media_id: web::Path<String>,
    query: web::Query<ThumbnailQuery>,
) -> Result<HttpResponse, Error> {
    tracing::debug!(origin = %origin.0, media = %media_id, "media thumbnail");
    let request = thumbnail_request(&query)?;
    let served = app
        .media
        .thumbnail_local(&media_id, request, wait_from_millis(query.timeout_ms))
        .await?;
    Ok(serve_multipart(served))
}
