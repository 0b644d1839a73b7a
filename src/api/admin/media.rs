//! A user's media and media deletion, with Synapse's paths and shapes
//! (`docs/admin_api/media_admin_api.md`, `user_admin_api.md`): what synapse-admin's media
//! tab and clean-up scripts call.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ServerAdmin, local_user, page};
use crate::api::app::Services;
use crate::error::{Error, ErrorKind};
use crate::media::MediaRecord;

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    from: Option<usize>,
    limit: Option<usize>,
}

/// # GET /_synapse/admin/v1/users/{userId}/media
pub(crate) async fn list(
    app: web::Data<Services>,
    _admin: ServerAdmin,
    user: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, Error> {
    let user_id = local_user(&app, &user)?;
    let media = app.media.user_media(user_id.as_str())?;
    let (media, total, next) = page(media, query.from.unwrap_or(0), query.limit.unwrap_or(100));
    let mut answer = json!({
        "media": media.iter().map(|(id, record)| listed(id, record)).collect::<Vec<_>>(),
        "total": total,
    });
    if let Some(next) = next {
        answer["next_token"] = json!(next);
    }
    Ok(HttpResponse::Ok().json(answer))
}

/// One entry of the list, in Synapse's shape (nothing is ever quarantined here).
fn listed(media_id: &str, record: &MediaRecord) -> Value {
    json!({
        "media_id": media_id,
        "media_type": record.content_type.as_deref().unwrap_or("application/octet-stream"),
        "media_length": record.size,
        "upload_name": record.filename,
        "created_ts": record.created_ms,
        "last_access_ts": (record.last_access_ms > 0).then_some(record.last_access_ms),
        "quarantined_by": null,
        "safe_from_quarantine": false,
    })
}

/// # DELETE /_synapse/admin/v1/users/{userId}/media
pub(crate) async fn delete_for_user(
    app: web::Data<Services>,
    admin: ServerAdmin,
    user: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let user_id = local_user(&app, &user)?;
    let deleted = app.media.delete_user_media(user_id.as_str()).await?;
    tracing::info!(admin = %admin.0.user_id, user = %user_id, count = deleted.len(), "admin API: user's media deleted");
    Ok(HttpResponse::Ok().json(json!({ "deleted_media": deleted, "total": deleted.len() })))
}

/// # DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}
pub(crate) async fn delete_one(
    app: web::Data<Services>,
    admin: ServerAdmin,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let (server, media_id) = path.into_inner();
    if !app.media.delete_media(&server, &media_id).await? {
        return Err(Error::new(ErrorKind::NotFound, "No such media"));
    }
    tracing::info!(admin = %admin.0.user_id, %server, %media_id, "admin API: media deleted");
    Ok(HttpResponse::Ok().json(json!({ "deleted_media": [media_id], "total": 1 })))
}
