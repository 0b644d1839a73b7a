//! The content repository for clients: authenticated downloads and thumbnails
//! (`/_matrix/client/v1/media/*`), uploads (`/_matrix/media/v3/upload`, and asynchronous
//! ones through `/_matrix/media/v1/create`).
//!
//! The legacy unauthenticated `/_matrix/media/v3/download` and `thumbnail` are frozen
//! (spec v1.11): servers should serve through them only media uploaded before the freeze.
//! Hearth had no media before it, so every piece of media is "new": those endpoints answer
//! `404 M_NOT_FOUND` for everything, and clients use the authenticated ones.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::api::media::{UploadBody, serve};
use crate::error::Error;
use crate::media::{Method, ThumbnailRequest, check_request, wait_from_millis};

#[derive(Debug, Deserialize)]
pub(crate) struct DownloadQuery {
    pub(crate) timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ThumbnailQuery {
    width: i64,
    height: i64,
    method: Option<Method>,
    #[serde(default)]
    animated: bool,
    pub(crate) timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct UploadQuery {
    filename: Option<String>,
}

/// # GET /_matrix/client/v1/media/config (and the legacy /_matrix/media/v3/config)
pub(crate) async fn config(app: web::Data<Services>, _auth: Authenticated) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "m.upload.size": app.media.max_upload_size() }))
}

/// # GET /_matrix/client/v1/media/download/{serverName}/{mediaId}
pub(crate) async fn download(
    app: web::Data<Services>,
    _auth: Authenticated,
    path: web::Path<(String, String)>,
    query: web::Query<DownloadQuery>,
) -> Result<HttpResponse, Error> {
    let (server, media_id) = path.into_inner();
    let served = app
        .media
        .download(&server, &media_id, wait_from_millis(query.timeout_ms))
        .await?;
    Ok(serve(served, None))
}

/// # GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}
pub(crate) async fn download_named(
    app: web::Data<Services>,
    _auth: Authenticated,
    path: web::Path<(String, String, String)>,
    query: web::Query<DownloadQuery>,
) -> Result<HttpResponse, Error> {
    let (server, media_id, filename) = path.into_inner();
    let served = app
        .media
        .download(&server, &media_id, wait_from_millis(query.timeout_ms))
        .await?;
    Ok(serve(served, Some(&filename)))
}

/// # GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}
pub(crate) async fn thumbnail(
    app: web::Data<Services>,
    _auth: Authenticated,
    path: web::Path<(String, String)>,
    query: web::Query<ThumbnailQuery>,
) -> Result<HttpResponse, Error> {
    let (server, media_id) = path.into_inner();
    let request = thumbnail_request(&query)?;
    let served = app
        .media
        .thumbnail(
            &server,
            &media_id,
            request,
            wait_from_millis(query.timeout_ms),
        )
        .await?;
    Ok(serve(served, None))
}

pub(crate) fn thumbnail_request(query: &ThumbnailQuery) -> Result<ThumbnailRequest, Error> {
    let (width, height) = check_request(query.width, query.height)?;
    Ok(ThumbnailRequest {
        width,
        height,
        method: query.method.unwrap_or(Method::Scale),
        animated: query.animated,
    })
}

/// # POST /_matrix/media/v3/upload
pub(crate) async fn upload(
    app: web::Data<Services>,
    auth: Authenticated,
    query: web::Query<UploadQuery>,
    body: UploadBody,
) -> Result<HttpResponse, Error> {
    auth.ensure_not_suspended()?;
    let content_type = body.content_type.clone();
    let content_uri = app
        .media
        .upload(
            auth.user_id.as_str(),
            content_type.as_deref(),
            query.filename.as_deref(),
            body.into_stream(),
        )
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "content_uri": content_uri })))
}

/// # POST /_matrix/media/v1/create
pub(crate) async fn create(
    app: web::Data<Services>,
    auth: Authenticated,
) -> Result<HttpResponse, Error> {
    auth.ensure_not_suspended()?;
    let reserved = app.media.create_pending(auth.user_id.as_str())?;
    Ok(HttpResponse::Ok().json(json!({
        "content_uri": reserved.content_uri,
        "unused_expires_at": reserved.expires_at_ms,
    })))
}

/// # PUT /_matrix/media/v3/upload/{serverName}/{mediaId}
pub(crate) async fn upload_to(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    query: web::Query<UploadQuery>,
    body: UploadBody,
) -> Result<HttpResponse, Error> {
    auth.ensure_not_suspended()?;
    let (server, media_id) = path.into_inner();
    let content_type = body.content_type.clone();
    app.media
        .upload_pending(
            auth.user_id.as_str(),
            &server,
            &media_id,
            content_type.as_deref(),
            query.filename.as_deref(),
            body.into_stream(),
        )
        .await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # GET /_matrix/media/v3/download/…, /_matrix/media/v3/thumbnail/… (frozen)
///
/// Every piece of Hearth's media came after the freeze (see the module's doc).
pub(crate) async fn frozen() -> Result<HttpResponse, Error> {
    Err(Error::not_found(
        "Not found: use the authenticated media endpoints (/_matrix/client/v1/media)",
    ))
}
