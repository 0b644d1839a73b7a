//! Server administration: locking and suspending accounts (spec: client-server API,
//! "Server administration", v1.18). The rules live in [`crate::accounts::moderation`].

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use crate::accounts::moderation::{self, Restriction};
use crate::api::MatrixJson;
use crate::api::auth::Authenticated;
use crate::error::Error;
use crate::state::AppState;

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
    state: web::Data<AppState>,
    auth: Authenticated,
    user: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let locked = status(&state, &auth, &user, Restriction::Lock)?;
    Ok(HttpResponse::Ok().json(json!({ "locked": locked })))
}

/// # PUT /_matrix/client/v1/admin/lock/{userId}
pub async fn put_lock(
    state: web::Data<AppState>,
    auth: Authenticated,
    user: web::Path<String>,
    MatrixJson(body): MatrixJson<LockRequest>,
) -> Result<HttpResponse, Error> {
    change(&state, &auth, &user, Restriction::Lock, body.locked).await?;
    Ok(HttpResponse::Ok().json(json!({ "locked": body.locked })))
}

/// # GET /_matrix/client/v1/admin/suspend/{userId}
pub async fn get_suspension(
    state: web::Data<AppState>,
    auth: Authenticated,
    user: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let suspended = status(&state, &auth, &user, Restriction::Suspension)?;
    Ok(HttpResponse::Ok().json(json!({ "suspended": suspended })))
}

/// # PUT /_matrix/client/v1/admin/suspend/{userId}
pub async fn put_suspension(
    state: web::Data<AppState>,
    auth: Authenticated,
    user: web::Path<String>,
    MatrixJson(body): MatrixJson<SuspendRequest>,
) -> Result<HttpResponse, Error> {
    change(
        &state,
        &auth,
        &user,
        Restriction::Suspension,
        body.suspended,
    )
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "suspended": body.suspended })))
}

fn status(
    state: &AppState,
    auth: &Authenticated,
    user: &str,
    restriction: Restriction,
) -> Result<bool, Error> {
    let server_name = &state.config.server.server_name;
    let target =
        moderation::moderated_account(&state.storage, server_name, &auth.user_id, user, false)?;
    moderation::is_restricted(&state.storage, &target, restriction)
}

/// Sets the flag and flushes before answering: an administrator told "locked" can rely on
/// it surviving a crash.
async fn change(
    state: &AppState,
    auth: &Authenticated,
    user: &str,
    restriction: Restriction,
    on: bool,
) -> Result<(), Error> {
    let server_name = &state.config.server.server_name;
    let target =
        moderation::moderated_account(&state.storage, server_name, &auth.user_id, user, true)?;
    moderation::set_restricted_for_client(&state.storage, &target, restriction, on)?;
    state.storage.flush().await?;
    tracing::info!(
        admin = %auth.user_id,
        user = %target,
        ?restriction,
        on,
        "account moderation changed"
    );
    Ok(())
}
