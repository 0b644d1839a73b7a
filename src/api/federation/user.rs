//! Our users' devices and keys, and OpenID tokens, for other servers (spec: server-server
//! API, "Device Management", "End-to-End Encryption", "OpenID"). Thin: the rules are in
//! [`crate::federation::users`].

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::origin::{FederationOrigin, SignedJson};
use crate::api::app::Services;
use crate::error::Error;
use crate::federation::users;

/// # GET /_matrix/federation/v1/user/devices/{userId}
pub(crate) async fn devices(
    app: web::Data<Services>,
    _origin: FederationOrigin,
    user: web::Path<String>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(users::devices(&app.federation, &user)?))
}

#[derive(Debug, Deserialize)]
pub(crate) struct KeysQuery {
    device_keys: BTreeMap<String, Value>,
}

/// # POST /_matrix/federation/v1/user/keys/query
pub(crate) async fn query_keys(
    app: web::Data<Services>,
    request: SignedJson<KeysQuery>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(users::query_keys(
        &app.federation,
        &request.body.device_keys,
    )?))
}

#[derive(Debug, Deserialize)]
pub(crate) struct KeysClaim {
    one_time_keys: BTreeMap<String, Value>,
}

/// # POST /_matrix/federation/v1/user/keys/claim
pub(crate) async fn claim_keys(
    app: web::Data<Services>,
    request: SignedJson<KeysClaim>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(users::claim_keys(
        &app.federation,
        &request.body.one_time_keys,
    )?))
}

#[derive(Debug, Deserialize)]
pub(crate) struct UserInfoQuery {
    access_token: String,
}

/// # GET /_matrix/federation/v1/openid/userinfo
///
/// Not signed: third parties (not only servers) ask it; the token is the credential.
pub(crate) async fn openid_userinfo(
    app: web::Data<Services>,
    query: web::Query<UserInfoQuery>,
) -> Result<HttpResponse, Error> {
    let user = users::openid_user(
        &app.federation,
        &query.access_token,
        crate::matrix::time::now_ms(),
    )?;
    Ok(HttpResponse::Ok().json(json!({ "sub": user })))
}
