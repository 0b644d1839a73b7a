//! Server administration: who is connected from where (whois), locking and suspending
//! accounts (spec: client-server API, "Server administration", v1.18). The rules live in
//! [`crate::users::accounts::moderation`] and the users service.

use actix_web::{HttpResponse, web};
use ruma::OwnedUserId;
use serde::Deserialize;
use serde_json::{Map, json};

use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::api::path;
use crate::error::Error;
use crate::users::accounts::moderation::Restriction;

#[derive(Debug, Deserialize)]
pub(crate) struct LockRequest {
    locked: bool,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SuspendRequest {
    suspended: bool,
}

/// # GET /_matrix/client/v3/admin/whois/{userId}
///
/// One's own sessions, or anyone's for a server administrator.
pub(crate) async fn whois(
    app: web::Data<Services>,
    auth: Authenticated,
    user: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let user: OwnedUserId = path::id(&user)?;
    let devices = app.users.whois_devices(&auth.user_id, &user)?;
    Ok(HttpResponse::Ok().json(whois_answer(&user, &devices)))
}

/// The whois answer: each device with where and when it was last seen (Synapse's admin
/// API answers the same shape).
pub(crate) fn whois_answer(
    user: &ruma::UserId,
    devices: &[crate::users::accounts::sessions::Device],
) -> serde_json::Value {
    let mut sessions = Map::new();
    for device in devices {
        let mut connection = json!({});
        if let Some(ip) = &device.last_seen_ip {
            connection["ip"] = json!(ip);
        }
        if let Some(ts) = device.last_seen_ts {
            connection["last_seen"] = json!(ts);
        }
        sessions.insert(
            device.device_id.clone(),
            json!({ "sessions": [{ "connections": [connection] }] }),
        );
    }
    json!({ "user_id": user, "devices": sessions })
}

/// # GET /_matrix/client/v1/admin/lock/{userId}
pub(crate) async fn get_lock(
    app: web::Data<Services>,
    auth: Authenticated,
    user: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let locked = status(&app, &auth, &user, Restriction::Lock)?;
    Ok(HttpResponse::Ok().json(json!({ "locked": locked })))
}

/// # PUT /_matrix/client/v1/admin/lock/{userId}
pub(crate) async fn put_lock(
    app: web::Data<Services>,
    auth: Authenticated,
    user: web::Path<String>,
    MatrixJson(body): MatrixJson<LockRequest>,
) -> Result<HttpResponse, Error> {
    change(&app, &auth, &user, Restriction::Lock, body.locked).await?;
    Ok(HttpResponse::Ok().json(json!({ "locked": body.locked })))
}

/// # GET /_matrix/client/v1/admin/suspend/{userId}
pub(crate) async fn get_suspension(
    app: web::Data<Services>,
    auth: Authenticated,
    user: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let suspended = status(&app, &auth, &user, Restriction::Suspension)?;
    Ok(HttpResponse::Ok().json(json!({ "suspended": suspended })))
}

/// # PUT /_matrix/client/v1/admin/suspend/{userId}
pub(crate) async fn put_suspension(
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
    app.users.restriction(&auth.user_id, user, restriction)
}

/// Sets the flag (flushed before answering, see [`crate::users::Users::set_restriction`]).
async fn change(
    app: &Services,
    auth: &Authenticated,
    user: &str,
    restriction: Restriction,
    on: bool,
) -> Result<(), Error> {
    let target = app
        .users
        .set_restriction(&auth.user_id, user, restriction, on)
        .await?;
    tracing::info!(
        admin = %auth.user_id,
        user = %target,
        ?restriction,
        on,
        "account moderation changed"
    );
    Ok(())
}
