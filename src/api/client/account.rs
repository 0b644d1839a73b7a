//! Accounts: registration, user-name availability, password change, deactivation
//! (spec: client-server API, "Account registration and management").

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::body::UiaJson;
use super::session::{
    account_error, bound_operation, operation, optional_device_name, user_from_identifier,
    valid_device_field, verify_credentials,
};
use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::api::auth::{Authenticated, check_auth_rate_limit, client_ip};
use crate::error::{Error, ErrorKind};
use crate::users::accounts;
use crate::users::accounts::uia::{self, Attempt, AuthData, Completed, Flows, Step};

/// Registration flows. The token flow ends with a dummy stage, the shape Synapse uses:
/// clients written against it (matrix-nio, for one) complete the token stage and then
/// expect one more challenge.
const OPEN_FLOWS: Flows = &[&[uia::DUMMY], &[uia::REGISTRATION_TOKEN, uia::DUMMY]];
const TOKEN_FLOWS: Flows = &[&[uia::REGISTRATION_TOKEN, uia::DUMMY]];
/// What endpoints that change an account ask of its owner.
pub(crate) const PASSWORD_FLOWS: Flows = &[&[uia::PASSWORD]];

#[derive(Debug, Deserialize)]
pub(crate) struct KindQuery {
    kind: Option<String>,
}

/// The body of `POST /register`. No `Debug`: it holds a password.
#[derive(Deserialize)]
pub(crate) struct RegisterRequest {
    auth: Option<AuthData>,
    username: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    inhibit_login: bool,
}

/// # POST /_matrix/client/v3/register
pub(crate) async fn register(
    req: HttpRequest,
    app: web::Data<Services>,
    query: web::Query<KindQuery>,
    MatrixJson(body): MatrixJson<RegisterRequest>,
) -> Result<HttpResponse, Error> {
    match query.kind.as_deref() {
        None | Some("user") => {}
        Some("guest") => {
            return Err(Error::new(
                ErrorKind::GuestAccessForbidden,
                "Guest access is disabled",
            ));
        }
        Some(_) => {
            return Err(Error::new(
                ErrorKind::InvalidParam,
                "kind must be user or guest",
            ));
        }
    }
    let registration = &app.config.registration;
    if !registration.enabled {
        return Err(Error::new(ErrorKind::Forbidden, "Registration is disabled"));
    }
    check_auth_rate_limit(&req, &app)?;
    // Name and password are checked before authentication, so a client learns of a taken
    // name before the user spends a registration token.
    let server_name = &app.config.server.server_name;
    let user_id = body
        .username
        .as_deref()
        .map(|name| accounts::local_user_id(&name.to_lowercase(), server_name))
        .transpose()
        .map_err(account_error)?;
    if let Some(user_id) = &user_id
        && app.users.exists(user_id).map_err(account_error)?
    {
        return Err(Error::new(ErrorKind::UserInUse, "The user name is taken"));
    }
    if let Some(password) = &body.password {
        accounts::check_password(password).map_err(account_error)?;
    }
    let device_id = body.device_id.map(valid_device_field).transpose()?;
    let display_name = optional_device_name(body.initial_device_display_name)?;

    let flows = if registration.open {
        OPEN_FLOWS
    } else {
        TOKEN_FLOWS
    };
    let completed = complete_registration_auth(&req, &app, body.auth, flows)?;
    // Only now, after the flows were shown to a client that sent nothing (Element asks
    // with an empty body first), is a missing password an error.
    let password = body
        .password
        .ok_or_else(|| Error::new(ErrorKind::MissingParam, "Missing password"))?;
    let user_id = match user_id {
        Some(user_id) => user_id,
        None => accounts::local_user_id(&random_localpart(), server_name).map_err(account_error)?,
    };
    let hash = app.users.password_hasher.hash(password).await?;
    app.users
        .create_account(&user_id, hash, completed.registration_token.as_deref())?;
    tracing::info!(%user_id, "registered a new account");
    let mut response = json!({ "user_id": user_id });
    if !body.inhibit_login {
        let session = app
            .users
            .start_session(
                &user_id,
                device_id.as_deref(),
                display_name,
                client_ip(&req, app.config.limits.trust_forwarded_for).map(|ip| ip.to_string()),
            )
            .map_err(account_error)?;
        response["access_token"] = json!(session.access_token);
        response["device_id"] = json!(session.device_id);
        app.users
            .announce_devices(&app.rooms.stream, &user_id, &[session.device_id])
            .await?;
    }
    app.users.flush().await?;
    Ok(HttpResponse::Ok().json(response))
}

/// Runs the registration's user-interactive auth to completion (or answers with the next
/// challenge). A completed session is spent: the account is made once.
fn complete_registration_auth(
    req: &HttpRequest,
    app: &Services,
    auth: Option<AuthData>,
    flows: Flows,
) -> Result<Completed, Error> {
    let attempt = match app.users.uia.attempt(auth, flows, None, &operation(req))? {
        Step::AlreadyCompleted(completed) => return Ok(completed),
        Step::Check(attempt) => attempt,
    };
    let session = attempt.session.clone();
    let outcome = check_registration_stage(app, &attempt);
    let completed = app.users.uia.record(&attempt, outcome, flows)?;
    app.users.uia.forget(&session);
    Ok(completed)
}

fn check_registration_stage(app: &Services, attempt: &Attempt) -> Result<Option<String>, Error> {
    match attempt.kind.as_str() {
        uia::DUMMY => Ok(None),
        uia::REGISTRATION_TOKEN => {
            let token = attempt.auth.token.as_deref().unwrap_or_default();
            if app.users.registration_token_usable(token)? {
                Ok(Some(token.to_owned()))
            } else {
                Err(Error::new(
                    ErrorKind::Forbidden,
                    "Invalid registration token",
                ))
            }
        }
        other => Err(Error::new(
            ErrorKind::Unrecognized,
            format!("Unsupported auth stage {other}"),
        )),
    }
}

fn random_localpart() -> String {
    crate::matrix::crypto::random_bytes::<10>()
        .iter()
        .map(|b| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[usize::from(*b) % 36]))
        .collect()
}

#[derive(Debug, Deserialize)]
pub(crate) struct UsernameQuery {
    username: String,
}

/// # GET /_matrix/client/v3/register/available
pub(crate) async fn available(
    req: HttpRequest,
    app: web::Data<Services>,
    query: web::Query<UsernameQuery>,
) -> Result<HttpResponse, Error> {
    // On a closed server, this would only tell strangers who has an account.
    if !app.config.registration.enabled {
        return Err(Error::new(ErrorKind::Forbidden, "Registration is disabled"));
    }
    check_auth_rate_limit(&req, &app)?;
    let user_id = accounts::local_user_id(
        &query.username.to_lowercase(),
        &app.config.server.server_name,
    )
    .map_err(account_error)?;
    if app.users.exists(&user_id).map_err(account_error)? {
        return Err(Error::new(ErrorKind::UserInUse, "The user name is taken"));
    }
    Ok(HttpResponse::Ok().json(json!({ "available": true })))
}

#[derive(Debug, Deserialize)]
pub(crate) struct TokenQuery {
    token: String,
}

/// # GET /_matrix/client/v1/register/m.login.registration_token/validity
pub(crate) async fn token_validity(
    req: HttpRequest,
    app: web::Data<Services>,
    query: web::Query<TokenQuery>,
) -> Result<HttpResponse, Error> {
    if !app.config.registration.enabled {
        return Err(Error::new(ErrorKind::Forbidden, "Registration is disabled"));
    }
    check_auth_rate_limit(&req, &app)?;
    let valid = app.users.registration_token_usable(&query.token)?;
    Ok(HttpResponse::Ok().json(json!({ "valid": valid })))
}

/// Runs user-interactive authentication with the account's password, for this request
/// with this body (`body_digest`, from [`UiaJson`]): a completed session authorizes
/// nothing else.
pub(crate) async fn require_password(
    req: &HttpRequest,
    app: &Services,
    auth: &Authenticated,
    (body_auth, body_digest): (Option<AuthData>, &str),
) -> Result<(), Error> {
    let owner = Some(auth.user_id.as_str());
    let operation = bound_operation(req, body_digest);
    let attempt = match app
        .users
        .uia
        .attempt(body_auth, PASSWORD_FLOWS, owner, &operation)?
    {
        Step::AlreadyCompleted(_) => return Ok(()),
        Step::Check(attempt) => attempt,
    };
    let outcome = verify_password_stage(req, app, auth, &attempt).await;
    app.users
        .uia
        .record(&attempt, outcome, PASSWORD_FLOWS)
        .map(|_| ())
}

async fn verify_password_stage(
    req: &HttpRequest,
    app: &Services,
    auth: &Authenticated,
    attempt: &Attempt,
) -> Result<Option<String>, Error> {
    check_auth_rate_limit(req, app)?;
    let named = user_from_identifier(
        attempt.auth.identifier.as_ref(),
        attempt.auth.user.as_deref(),
    );
    if let Ok(name) = named {
        let same_user = accounts::login_user_id(&name, &app.config.server.server_name)
            .is_ok_and(|user_id| user_id == auth.user_id);
        if !same_user {
            return Err(Error::new(
                ErrorKind::Forbidden,
                "You can only authenticate as yourself",
            ));
        }
    }
    let password = attempt
        .auth
        .password
        .clone()
        .ok_or_else(|| Error::new(ErrorKind::MissingParam, "Missing password"))?;
    verify_credentials(req, app, Some(auth.user_id.clone()), password).await?;
    Ok(None)
}

/// The body of `POST /account/password`. No `Debug`: it holds passwords.
#[derive(Deserialize)]
pub(crate) struct PasswordRequest {
    auth: Option<AuthData>,
    new_password: String,
    #[serde(default = "default_true")]
    logout_devices: bool,
}

fn default_true() -> bool {
    true
}

/// # POST /_matrix/client/v3/account/password
pub(crate) async fn change_password(
    req: HttpRequest,
    app: web::Data<Services>,
    auth: Authenticated,
    UiaJson { body, digest }: UiaJson<PasswordRequest>,
) -> Result<HttpResponse, Error> {
    accounts::check_password(&body.new_password).map_err(account_error)?;
    require_password(&req, &app, &auth, (body.auth, &digest)).await?;
    let hash = app.users.password_hasher.hash(body.new_password).await?;
    let logout_devices_but = body.logout_devices.then_some(auth.device_id.as_str());
    app.users
        .change_password(&app.rooms.stream, &auth.user_id, hash, logout_devices_but)
        .await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Deserialize)]
pub(crate) struct DeactivateRequest {
    auth: Option<AuthData>,
}

/// # POST /_matrix/client/v3/account/deactivate
pub(crate) async fn deactivate(
    req: HttpRequest,
    app: web::Data<Services>,
    auth: Authenticated,
    UiaJson { body, digest }: UiaJson<DeactivateRequest>,
) -> Result<HttpResponse, Error> {
    require_password(&req, &app, &auth, (body.auth, &digest)).await?;
    app.users
        .deactivate(&app.rooms.stream, &auth.user_id)
        .await?;
    tracing::info!(user_id = %auth.user_id, "deactivated an account");
    // Hearth never binds identifiers at an identity server: with nothing to unbind, the spec
    // asks for `success`.
    Ok(HttpResponse::Ok().json(json!({ "id_server_unbind_result": "success" })))
}
