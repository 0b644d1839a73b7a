//! Our server's published signing keys (spec: server-server API, "Publishing Keys").

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{HttpResponse, web};
use serde_json::{Map, Value, json};

use crate::api::app::Services;
use crate::error::Error;
use crate::matrix::crypto::sign_json;

/// How long other servers may cache our key response before asking again. Short enough that
/// a key rotation spreads within a day, as Synapse's default does.
const KEY_VALIDITY: Duration = Duration::from_secs(24 * 60 * 60);

/// # GET /_matrix/key/v2/server
pub(crate) async fn get_server_keys(app: web::Data<Services>) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(server_keys(&app, SystemTime::now())?))
}

/// The self-signed key response: `server_name`, `verify_keys`, `old_verify_keys`,
/// `valid_until_ts`, signed with the key it publishes.
pub(crate) fn server_keys(app: &Services, now: SystemTime) -> Result<Value, Error> {
    let key = &app.signing_key;
    let valid_until_ts = (now + KEY_VALIDITY)
        .duration_since(UNIX_EPOCH)
        .map_err(Error::internal)?
        .as_millis();
    let valid_until_ts = u64::try_from(valid_until_ts).unwrap_or(u64::MAX);
    let server_name = app.config.server.server_name.as_str();
    let mut response = json!({
        "server_name": server_name,
        "verify_keys": { key.key_id().as_str(): { "key": key.public_key_base64() } },
        "old_verify_keys": app.old_verify_keys,
        "valid_until_ts": valid_until_ts,
    });
    let object: &mut Map<String, Value> = response.as_object_mut().expect("built as an object");
    sign_json(object, server_name, key).map_err(Error::internal)?;
    Ok(response)
}

/// How many servers one notary query may ask about: answering costs us fetches.
const MAX_QUERIED_SERVERS: usize = 32;

#[derive(Debug, serde::Deserialize)]
pub(crate) struct MinimumValidUntil {
    minimum_valid_until_ts: Option<u64>,
}

/// # GET /_matrix/key/v2/query/{serverName}
pub(crate) async fn query_one(
    app: web::Data<Services>,
    server_name: web::Path<String>,
    query: web::Query<MinimumValidUntil>,
) -> Result<HttpResponse, Error> {
    let now = crate::matrix::time::now_ms();
    let minimum = query.minimum_valid_until_ts.unwrap_or(now);
    let keys = notary_answer(&app, &server_name, minimum, now).await?;
    Ok(HttpResponse::Ok().json(json!({ "server_keys": keys })))
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct BatchQuery {
    server_keys:
        std::collections::BTreeMap<String, std::collections::BTreeMap<String, MinimumValidUntil>>,
}

/// # POST /_matrix/key/v2/query
pub(crate) async fn query_batch(
    app: web::Data<Services>,
    body: crate::api::MatrixJson<BatchQuery>,
) -> Result<HttpResponse, Error> {
    if body.0.server_keys.len() > MAX_QUERIED_SERVERS {
        return Err(Error::new(
            crate::error::ErrorKind::InvalidParam,
            format!("At most {MAX_QUERIED_SERVERS} servers per query"),
        ));
    }
    let now = crate::matrix::time::now_ms();
    // Side by side: each server's fetch has its own deadline, and one query waits for the
    // slowest, not for their sum.
    let lookups = body.0.server_keys.iter().map(|(server_name, by_key)| {
        let minimum = by_key
            .values()
            .filter_map(|criteria| criteria.minimum_valid_until_ts)
            .max()
            .unwrap_or(now);
        notary_answer(&app, server_name, minimum, now)
    });
    let mut answers = Vec::new();
    for answer in futures_util::future::join_all(lookups).await {
        answers.extend(answer?);
    }
    Ok(HttpResponse::Ok().json(json!({ "server_keys": answers })))
}

/// Our own keys as we publish them, or another server's keys as we hold them, signed by us.
/// A server we cannot reach and know nothing of gives an empty list, as the spec says.
async fn notary_answer(
    app: &Services,
    server_name: &str,
    minimum_valid_until_ts: u64,
    now: u64,
) -> Result<Vec<Value>, Error> {
    if server_name == app.config.server.server_name.as_str() {
        return Ok(vec![server_keys(app, SystemTime::now())?]);
    }
    if crate::federation::server_name::ServerAddress::parse(server_name).is_err() {
        return Ok(Vec::new());
    }
    let answer = app
        .federation
        .notary_answer(server_name, minimum_valid_until_ts, now)
        .await
        .map_err(Error::internal)?;
    Ok(answer.into_iter().collect())
}
