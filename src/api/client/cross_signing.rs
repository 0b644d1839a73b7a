//! Cross-signing (spec: client-server API, "End-to-End Encryption", "Cross-signing"):
//! `/keys/device_signing/upload` and `/keys/signatures/upload`. The rules are in
//! [`crate::users::cross_signing`]; the keys come back through `/keys/query`.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::api::client::account::require_password;
use crate::api::client::body::UiaJson;
use crate::error::Error;
use crate::users::accounts::uia::AuthData;
use crate::users::cross_signing::KeySet;

/// The body of `/keys/device_signing/upload`. No `Debug`: `auth` may hold a password.
#[derive(Deserialize)]
pub(crate) struct DeviceSigningBody {
    #[serde(default)]
    auth: Option<AuthData>,
    #[serde(default)]
    master_key: Option<Map<String, Value>>,
    #[serde(default)]
    self_signing_key: Option<Map<String, Value>>,
    #[serde(default)]
    user_signing_key: Option<Map<String, Value>>,
}

/// # POST /_matrix/client/v3/keys/device_signing/upload
///
/// The first upload, and the same keys again, need no user-interactive auth (spec v1.11
/// on); replacing keys needs the account's password.
pub(crate) async fn upload_device_signing(
    req: HttpRequest,
    app: web::Data<Services>,
    auth: Authenticated,
    UiaJson { body, digest }: UiaJson<DeviceSigningBody>,
) -> Result<HttpResponse, Error> {
    let keys = KeySet {
        master: body.master_key,
        self_signing: body.self_signing_key,
        user_signing: body.user_signing_key,
    };
    let needs_auth = app.users.cross_signing_needs_auth(&auth.user_id, &keys)?;
    if needs_auth {
        require_password(&req, &app, &auth, (body.auth, &digest)).await?;
    }
    app.users
        .upload_cross_signing_keys(&app.rooms.stream, &auth.user_id, &keys, needs_auth)
        .await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # POST /_matrix/client/v3/keys/signatures/upload
pub(crate) async fn upload_signatures(
    app: web::Data<Services>,
    auth: Authenticated,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> Result<HttpResponse, Error> {
    let failures = app
        .users
        .upload_signatures(&app.rooms.stream, &auth.user_id, &body)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "failures": failures })))
}
