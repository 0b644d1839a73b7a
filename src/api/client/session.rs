//! Logging in and out (spec: client-server API, "Login", "Logout", "whoami").

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::accounts::{self, now_ms, sessions};
use crate::api::MatrixJson;
use crate::api::auth::{Authenticated, check_auth_rate_limit, client_ip};
use crate::error::{Error, ErrorKind};
use crate::state::AppState;

/// # GET /_matrix/client/v3/login
pub async fn get_login_flows() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "flows": [{ "type": "m.login.password" }] }))
}

#[derive(Debug, Deserialize)]
pub struct LoginRequest {
    #[serde(rename = "type")]
    kind: String,
    identifier: Option<Value>,
    /// Deprecated form of `identifier` that older clients still send.
    user: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
}

/// # POST /_matrix/client/v3/login
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    MatrixJson(body): MatrixJson<LoginRequest>,
) -> Result<HttpResponse, Error> {
    check_auth_rate_limit(&req, &state)?;
    if body.kind != "m.login.password" {
        return Err(Error::new(
            ErrorKind::BadRequest,
            format!("Unknown login type {}", body.kind),
        ));
    }
    let name = user_from_identifier(body.identifier.as_ref(), body.user.as_deref())?;
    let password = body
        .password
        .ok_or_else(|| Error::new(ErrorKind::MissingParam, "Missing password"))?;
    let device_id = body.device_id.map(valid_device_field).transpose()?;
    let display_name = body
        .initial_device_display_name
        .map(valid_device_field)
        .transpose()?;
    let user_id = verify_credentials(&state, &name, password).await?;
    let session = sessions::start_session(
        &state.storage,
        &user_id,
        device_id.as_deref(),
        display_name,
        client_ip(&req, state.config.limits.trust_forwarded_for).map(|ip| ip.to_string()),
        now_ms(),
    )
    .map_err(account_error)?;
    state.storage.flush().await?;
    let mut response = json!({
        "user_id": user_id,
        "access_token": session.access_token,
        "device_id": session.device_id,
        "home_server": state.config.server.server_name,
    });
    if let Some(base_url) = crate::api::well_known::client_base_url(&state.config) {
        response["well_known"] = json!({ "m.homeserver": { "base_url": base_url } });
    }
    Ok(HttpResponse::Ok().json(response))
}

/// The user named by an `m.id.user` identifier (or the deprecated top-level `user`).
pub fn user_from_identifier(
    identifier: Option<&Value>,
    legacy_user: Option<&str>,
) -> Result<String, Error> {
    if let Some(identifier) = identifier {
        let kind = identifier
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if kind != "m.id.user" {
            return Err(Error::new(
                ErrorKind::BadRequest,
                format!("Unsupported identifier type `{kind}`: only m.id.user"),
            ));
        }
        return identifier
            .get("user")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| Error::new(ErrorKind::BadJson, "identifier.user must be a string"));
    }
    legacy_user
        .map(str::to_owned)
        .ok_or_else(|| Error::new(ErrorKind::MissingParam, "Missing identifier"))
}

/// Checks a user name and password; unknown users and wrong passwords get the same answer
/// (and take as long), so logins cannot probe which accounts exist.
pub async fn verify_credentials(
    state: &AppState,
    name: &str,
    password: String,
) -> Result<ruma::OwnedUserId, Error> {
    let forbidden = || Error::new(ErrorKind::Forbidden, "Invalid user name or password");
    let user_id = accounts::local_user_id(&name.to_lowercase(), &state.config.server.server_name);
    let account = match &user_id {
        Ok(user_id) => accounts::get(&state.storage, user_id).map_err(account_error)?,
        Err(_) => None,
    };
    let stored_hash = match &account {
        Some(account) if account.deactivated => {
            return Err(Error::new(
                ErrorKind::UserDeactivated,
                "This account has been deactivated",
            ));
        }
        Some(account) => account.password_hash.clone(),
        None => dummy_hash().to_owned(),
    };
    let matches = state.password_hasher.verify(password, stored_hash).await?;
    match (user_id, account, matches) {
        (Ok(user_id), Some(_), true) => Ok(user_id),
        _ => Err(forbidden()),
    }
}

/// A hash to verify against when the user does not exist, so that takes as long as a
/// wrong password.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        crate::crypto::password::hash("no such user, no such password").unwrap_or_default()
    })
}

/// Device IDs and display names: at most 255 bytes, no control characters.
pub fn valid_device_field(value: String) -> Result<String, Error> {
    if value.is_empty()
        || value.len() > sessions::MAX_DEVICE_FIELD_BYTES
        || value.chars().any(char::is_control)
    {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "Device IDs and names are 1 to 255 bytes without control characters",
        ));
    }
    Ok(value)
}

/// # POST /_matrix/client/v3/logout
pub async fn logout(
    state: web::Data<AppState>,
    auth: Authenticated,
) -> Result<HttpResponse, Error> {
    sessions::remove_device(&state.storage, &auth.user_id, &auth.device_id)?;
    state.storage.flush().await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # POST /_matrix/client/v3/logout/all
pub async fn logout_all(
    state: web::Data<AppState>,
    auth: Authenticated,
) -> Result<HttpResponse, Error> {
    sessions::remove_all_devices(&state.storage, &auth.user_id, None)?;
    state.storage.flush().await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # GET /_matrix/client/v3/account/whoami
pub async fn whoami(auth: Authenticated) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "user_id": auth.user_id,
        "device_id": auth.device_id,
        "is_guest": false,
    }))
}

/// Maps account errors to the spec's error codes.
pub fn account_error(err: accounts::AccountError) -> Error {
    use accounts::AccountError;
    match err {
        AccountError::InvalidUserId(message) => Error::new(ErrorKind::InvalidUsername, message),
        AccountError::Exists(_) => Error::new(ErrorKind::UserInUse, "The user name is taken"),
        AccountError::NoSuchUser(_) => Error::not_found("No such user"),
        AccountError::Deactivated(_) => Error::new(
            ErrorKind::UserDeactivated,
            "This account has been deactivated",
        ),
        AccountError::WeakPassword(message) => Error::new(ErrorKind::WeakPassword, message),
        AccountError::Storage(err) => Error::internal(err),
    }
}
