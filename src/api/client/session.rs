//! Logging in and out (spec: client-server API, "Login", "Logout", "whoami").

use actix_web::{HttpRequest, HttpResponse, web};
use ruma::OwnedUserId;
use serde::Deserialize;
use serde_json::json;

use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::api::auth::{
    Authenticated, EvenIfLocked, check_account_rate_limit, check_auth_rate_limit, client_ip,
    too_many_attempts,
};
use crate::error::{Error, ErrorKind};
use crate::users::accounts::uia::Identifier;
use crate::users::accounts::{self, sessions};

/// # GET /_matrix/client/v3/login
pub(crate) async fn get_login_flows() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "flows": [{ "type": "m.login.password" }] }))
}

/// The body of `POST /login`. No `Debug`: it holds a password.
#[derive(Deserialize)]
pub(crate) struct LoginRequest {
    #[serde(rename = "type")]
    kind: String,
    identifier: Option<Identifier>,
    /// Deprecated form of `identifier` that older clients still send.
    user: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
}

/// # POST /_matrix/client/v3/login
pub(crate) async fn login(
    req: HttpRequest,
    app: web::Data<Services>,
    MatrixJson(body): MatrixJson<LoginRequest>,
) -> Result<HttpResponse, Error> {
    check_auth_rate_limit(&req, &app)?;
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
    let display_name = optional_device_name(body.initial_device_display_name)?;
    let user_id = accounts::login_user_id(&name, &app.config.server.server_name);
    let user_id = verify_credentials(&req, &app, user_id.ok(), password).await?;
    // A dehydrated device (MSC3814) never logs in: a client rehydrates it into a new one.
    if let Some(wanted) = device_id.as_deref()
        && app
            .users
            .dehydrated_device(&user_id)?
            .is_some_and(|dehydrated| dehydrated.device_id == wanted)
    {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "That device ID is the account's dehydrated device, which cannot log in",
        ));
    }
    let session = app
        .users
        .start_session(
            &user_id,
            device_id.as_deref(),
            display_name,
            client_ip(&req, app.config.limits.trust_forwarded_for).map(|ip| ip.to_string()),
        )
        .map_err(account_error)?;
    // Flushes the session too: a new device (or a new login on one) is news to those
    // who track the user's devices.
    app.users
        .announce_devices(
            &app.rooms.stream,
            &user_id,
            std::slice::from_ref(&session.device_id),
        )
        .await?;
    let mut response = json!({
        "user_id": user_id,
        "access_token": session.access_token,
        "device_id": session.device_id,
        "home_server": app.config.server.server_name,
    });
    if let Some(base_url) = crate::api::well_known::client_base_url(&app.config) {
        response["well_known"] = json!({ "m.homeserver": { "base_url": base_url } });
    }
    Ok(HttpResponse::Ok().json(response))
}

/// The user named by an `m.id.user` identifier (or the deprecated top-level `user`).
pub(crate) fn user_from_identifier(
    identifier: Option<&Identifier>,
    legacy_user: Option<&str>,
) -> Result<String, Error> {
    if let Some(identifier) = identifier {
        if identifier.kind != "m.id.user" {
            return Err(Error::new(
                ErrorKind::BadRequest,
                format!(
                    "Unsupported identifier type `{}`: only m.id.user",
                    identifier.kind
                ),
            ));
        }
        return identifier
            .user
            .clone()
            .ok_or_else(|| Error::new(ErrorKind::MissingParam, "identifier.user is missing"));
    }
    legacy_user
        .map(str::to_owned)
        .ok_or_else(|| Error::new(ErrorKind::MissingParam, "Missing identifier"))
}

/// Checks a password for `user_id` (`None`: a name that cannot be a local user) from the
/// client at `req`. Unknown users, deactivated accounts and wrong passwords get the same
/// answer and take as long, so logins cannot probe which accounts exist or were
/// deactivated; only the right password hears `M_USER_DEACTIVATED`.
///
/// Guesses are bounded per address (the caller), per account and address, and per account
/// from addresses it never logged in from ([`LoginAttempts`]): a stranger guessing,
/// from one place or many, cannot lock the owner out.
///
/// [`LoginAttempts`]: crate::users::accounts::login_attempts::LoginAttempts
pub(crate) async fn verify_credentials(
    req: &HttpRequest,
    app: &Services,
    user_id: Option<OwnedUserId>,
    password: String,
) -> Result<OwnedUserId, Error> {
    let address = client_ip(req, app.config.limits.trust_forwarded_for)
        .map(crate::api::ratelimit::address_key);
    let reservation = match &user_id {
        Some(user_id) => {
            check_account_rate_limit(user_id.as_str(), address, app)?;
            Some(
                app.users
                    .login_attempts
                    .begin(user_id.as_str(), address)
                    .map_err(too_many_attempts)?,
            )
        }
        None => None,
    };
    let account = match &user_id {
        Some(user_id) => app.users.account(user_id).map_err(account_error)?,
        None => None,
    };
    let stored_hash = account
        .as_ref()
        .map(|account| account.password_hash.clone());
    let matches = app
        .users
        .password_hasher
        .verify(password, stored_hash)
        .await?;
    let (Some(user_id), Some(account)) = (user_id, account) else {
        return Err(wrong_password());
    };
    if !matches {
        return Err(wrong_password());
    }
    if let Some(reservation) = reservation {
        app.users
            .login_attempts
            .succeeded(user_id.as_str(), address, reservation);
    }
    if account.deactivated {
        return Err(Error::new(
            ErrorKind::UserDeactivated,
            "This account has been deactivated",
        ));
    }
    // A locked account gets no new token until unlocked; saying so only to whoever knows
    // the password tells nobody else that the account is locked.
    if account.locked {
        return Err(Error::user_locked());
    }
    Ok(user_id)
}

/// The one answer to any wrong password, unknown user or deactivated account.
fn wrong_password() -> Error {
    Error::new(ErrorKind::Forbidden, "Invalid user name or password")
}

/// Device IDs and display names: at most 255 bytes, no control characters.
pub(crate) fn valid_device_field(value: String) -> Result<String, Error> {
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

/// An optional device name, where an empty one means none.
pub(crate) fn optional_device_name(value: Option<String>) -> Result<Option<String>, Error> {
    value
        .filter(|name| !name.is_empty())
        .map(valid_device_field)
        .transpose()
}

/// # POST /_matrix/client/v3/logout
pub(crate) async fn logout(
    app: web::Data<Services>,
    EvenIfLocked(auth): EvenIfLocked,
) -> Result<HttpResponse, Error> {
    app.users.logout(&app.rooms.stream, &auth, false).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # POST /_matrix/client/v3/logout/all
pub(crate) async fn logout_all(
    app: web::Data<Services>,
    EvenIfLocked(auth): EvenIfLocked,
) -> Result<HttpResponse, Error> {
    app.users.logout(&app.rooms.stream, &auth, true).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # GET /_matrix/client/v3/account/whoami
pub(crate) async fn whoami(auth: Authenticated) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "user_id": auth.user_id,
        "device_id": auth.device_id,
        "is_guest": false,
    }))
}

/// Maps account errors to the spec's error codes (the `From` impl beside the users
/// service).
pub(crate) fn account_error(err: accounts::AccountError) -> Error {
    err.into()
}

/// The `METHOD path` a registration's user-interactive auth session is bound to.
/// (Registration clients may change the body between stages; the session is spent once
/// the account is made.)
pub(crate) fn operation(req: &HttpRequest) -> String {
    format!("{} {}", req.method(), req.path())
}

/// The `METHOD path body-digest` an authenticated user's auth session is bound to: the
/// session authorizes this one request, and a retry of the very same request (the spec's
/// lost answer) gets its result, never a request with another body.
pub(crate) fn bound_operation(req: &HttpRequest, body_digest: &str) -> String {
    format!("{} {} {body_digest}", req.method(), req.path())
}
