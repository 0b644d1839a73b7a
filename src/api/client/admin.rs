//! Server administration: locking and suspending accounts (spec: client-server API,
//! "Server administration", v1.18). The rules live in [`crate::users::accounts::moderation`].

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::error::Error;
use crate::users::accounts::moderation::{self, Restriction};

#[derive(Debug, Deserialize)]
pub struct LockRequest {
    locked: bool,
}

#[derive(Debug, Deserialize)]
pub struct SuspendRequest {
    suspended: bool,
}

/// # GET /_matrix/client/v1/admin/lock/{userId}
pub async fn get_lock(
    app: web::Data<Services>,
    auth: Authenticated,
    user: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let locked = status(&app, &auth, &user, Restriction::Lock)?;
    Ok(HttpResponse::Ok().json(json!({ "locked": locked })))
}

/// # PUT /_matrix/client/v1/admin/lock/{userId}
pub async fn put_lock(
    app: web::Data<Services>,
    auth: Authenticated,
    user: web::Path<String>,
    MatrixJson(body): MatrixJson<LockRequest>,
) -> Result<HttpResponse, Error> {
    change(&app, &auth, &user, Restriction::Lock, body.locked).await?;
    Ok(HttpResponse::Ok().json(json!({ "locked": body.locked })))
}

/// # GET /_matrix/client/v1/admin/suspend/{userId}
pub async fn get_suspension(
    app: web::Data<Services>,
    auth: Authenticated,
    user: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let suspended = status(&app, &auth, &user, Restriction::Suspension)?;
    Ok(HttpResponse::Ok().json(json!({ "suspended": suspended })))
}

/// # PUT /_matrix/client/v1/admin/suspend/{userId}
pub async fn put_suspension(
    app: web::Data<Services>,
    auth: Authenticated,
    user: web::Path<String>,
    MatrixJson(body): MatrixJson<SuspendRequest>,
) -> Result<HttpResponse, Error> {
    change(&app, &auth, &user, Restriction::Suspension, body.suspended).await?;
    Ok(HttpResponse::Ok().json(json!({ "suspended": body.suspended })))
}

fn status(
    app: &Services,
    auth: &Authenticated,
    user: &str,
    restriction: Restriction,
) -> Result<bool, Error> {
    let server_name = &app.config.server.server_name;
    let target =
        moderation::moderated_account(&app.storage, server_name, &auth.user_id, user, false)?;
    moderation::is_restricted(&app.storage, &target, restriction)
}

/// Sets the flag and flushes before answering: an administrator told "locked" can rely on
/// it surviving a crash.
async fn change(
    app: &Services,
    auth: &Authenticated,
    user: &str,
    restriction: Restriction,
    on: bool,
) -> Result<(), Error> {
    let server_name = &app.config.server.server_name;
    let target =
        moderation::moderated_account(&app.storage, server_name, &auth.user_id, user, true)?;
    moderation::set_restricted_for_client(&app.storage, &target, restriction, on)?;
    app.storage.flush().await?;
    tracing::info!(
        admin = %auth.user_id,
        user = %target,
        ?restriction,
        on,
        "account moderation changed"
    );
    Ok(())
}
