//! Registration tokens (Synapse's registration tokens admin API): list, create, read,
//! update, delete. The same tokens `hearth token …` manages.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::ServerAdmin;
use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::error::{Error, ErrorKind};
use crate::matrix::time::now_ms;
use crate::users::accounts::registration::{self, RegistrationTokenRecord};

/// A token as Synapse shows it. Hearth counts a use when the account is made, so no use
/// is ever pending.
fn token_json(token: &str, record: &RegistrationTokenRecord) -> Value {
    json!({
        "token": token,
        "uses_allowed": record.uses_allowed,
        "pending": 0,
        "completed": record.completed,
        "expiry_time": record.expiry_time,
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    valid: Option<bool>,
}

/// # GET /_synapse/admin/v1/registration_tokens
pub(crate) async fn list(
    app: web::Data<Services>,
    _admin: ServerAdmin,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, Error> {
    let now = now_ms();
    let tokens: Vec<Value> = app
        .users
        .registration_tokens()?
        .iter()
        .filter(|(_, record)| {
            query
                .valid
                .is_none_or(|valid| record.is_usable(now) == valid)
        })
        .map(|(token, record)| token_json(token, record))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "registration_tokens": tokens })))
}

/// `null` and absent told apart: `Some(None)` is an explicit `null`.
fn explicit<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Deserialize)]
pub(crate) struct NewToken {
    token: Option<String>,
    uses_allowed: Option<u64>,
    expiry_time: Option<u64>,
    length: Option<usize>,
}

/// # POST /_synapse/admin/v1/registration_tokens/new
pub(crate) async fn create(
    app: web::Data<Services>,
    admin: ServerAdmin,
    MatrixJson(body): MatrixJson<NewToken>,
) -> Result<HttpResponse, Error> {
    if body.expiry_time.is_some_and(|expiry| expiry < now_ms()) {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "expiry_time must not be in the past",
        ));
    }
    let token = match (body.token, body.length) {
        (Some(token), _) => token,
        (None, Some(length)) if !(1..=64).contains(&length) => {
            return Err(Error::new(
                ErrorKind::InvalidParam,
                "length must be an integer from 1 to 64",
            ));
        }
        (None, length) => registration::random_token(length.unwrap_or(16)),
    };
    if !registration::is_valid_token(&token) {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "A token is 1 to 64 of A-Z a-z 0-9 . _ ~ -",
        ));
    }
    let record = app
        .users
        .create_registration_token(&token, body.uses_allowed, body.expiry_time)
        .await?;
    tracing::info!(admin = %admin.0.user_id, "admin API: registration token created");
    Ok(HttpResponse::Ok().json(token_json(&token, &record)))
}

/// # GET /_synapse/admin/v1/registration_tokens/{token}
pub(crate) async fn get(
    app: web::Data<Services>,
    _admin: ServerAdmin,
    token: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let record = app
        .users
        .registration_token(&token)?
        .ok_or_else(|| no_such_token(&token))?;
    Ok(HttpResponse::Ok().json(token_json(&token, &record)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct TokenChange {
    #[serde(default, deserialize_with = "explicit")]
    uses_allowed: Option<Option<u64>>,
    #[serde(default, deserialize_with = "explicit")]
    expiry_time: Option<Option<u64>>,
}

/// # PUT /_synapse/admin/v1/registration_tokens/{token}
pub(crate) async fn update(
    app: web::Data<Services>,
    _admin: ServerAdmin,
    token: web::Path<String>,
    MatrixJson(body): MatrixJson<TokenChange>,
) -> Result<HttpResponse, Error> {
    if body
        .expiry_time
        .flatten()
        .is_some_and(|expiry| expiry < now_ms())
    {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "expiry_time must not be in the past",
        ));
    }
    let record = app
        .users
        .update_registration_token(&token, body.uses_allowed, body.expiry_time)
        .await?
        .ok_or_else(|| no_such_token(&token))?;
    Ok(HttpResponse::Ok().json(token_json(&token, &record)))
}

/// # DELETE /_synapse/admin/v1/registration_tokens/{token}
pub(crate) async fn delete(
    app: web::Data<Services>,
    _admin: ServerAdmin,
    token: web::Path<String>,
) -> Result<HttpResponse, Error> {
    if !app.users.delete_registration_token(&token).await? {
        return Err(no_such_token(&token));
    }
    Ok(HttpResponse::Ok().json(json!({})))
}

fn no_such_token(token: &str) -> Error {
    let shown: String = token.chars().take(64).collect();
    Error::not_found(format!("No such registration token: {shown}"))
}
