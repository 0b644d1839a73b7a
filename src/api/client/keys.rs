//! Device keys (spec: client-server API, "End-to-End Encryption", "Key management API"):
//! `/keys/upload`, `/keys/query` and `/keys/claim`. Our users' keys come from the users
//! service; other servers' users' keys from their servers, all asked at once within the
//! client's `timeout` (`crate::federation::device_keys`), a server that fails being listed
//! in `failures`.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use ruma::{OwnedUserId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::error::{Error, ErrorKind};
use crate::federation::device_keys;
use crate::users::keys::{MAX_DEVICES_PER_REQUEST, Upload};

#[derive(Debug, Deserialize)]
pub(crate) struct UploadBody {
    #[serde(default)]
    device_keys: Option<Map<String, Value>>,
    #[serde(default)]
    one_time_keys: Option<Map<String, Value>>,
    #[serde(default)]
    fallback_keys: Option<Map<String, Value>>,
    /// The name fallback keys had before they were in the spec (MSC2732), which some
    /// clients of the last years still send.
    #[serde(default, rename = "org.matrix.msc2732.fallback_keys")]
    unstable_fallback_keys: Option<Map<String, Value>>,
}

/// # POST /_matrix/client/v3/keys/upload
pub(crate) async fn upload(
    app: web::Data<Services>,
    auth: Authenticated,
    MatrixJson(body): MatrixJson<UploadBody>,
) -> Result<HttpResponse, Error> {
    let upload = Upload {
        device_keys: body.device_keys,
        one_time_keys: body.one_time_keys.unwrap_or_default(),
        fallback_keys: body
            .fallback_keys
            .or(body.unstable_fallback_keys)
            .unwrap_or_default(),
    };
    let counts = app
        .users
        .upload_keys(&auth.user_id, &auth.device_id, &upload)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "one_time_key_counts": counts })))
}

#[derive(Debug, Deserialize)]
pub(crate) struct QueryBody {
    device_keys: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    timeout: Option<u64>,
}

/// A user ID named in a request body, `400 M_INVALID_PARAM` if it is not one.
fn user_id(text: &str) -> Result<OwnedUserId, Error> {
    UserId::parse(text).map_err(|_| {
        Error::new(
            ErrorKind::InvalidParam,
            format!("`{text}` is not a user ID"),
        )
    })
}

fn too_many() -> Error {
    Error::new(
        ErrorKind::InvalidParam,
        format!("At most {MAX_DEVICES_PER_REQUEST} users and devices may be named at once"),
    )
}

/// # POST /_matrix/client/v3/keys/query
///
/// Cross-signing keys come with the device keys: our users' from the users service (the
/// user-signing key only to its owner), other servers' users' from their answers, kept
/// (checked) for when their server cannot be reached.
pub(crate) async fn query(
    app: web::Data<Services>,
    auth: Authenticated,
    MatrixJson(body): MatrixJson<QueryBody>,
) -> Result<HttpResponse, Error> {
    let named: usize = body
        .device_keys
        .values()
        .map(|devices| devices.len().max(1))
        .sum();
    if named > MAX_DEVICES_PER_REQUEST {
        return Err(too_many());
    }
    let mut found = Map::new();
    let mut cross_signing = CrossSigning::default();
    let mut remote: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for (user, devices) in &body.device_keys {
        let user = user_id(user)?;
        if user.server_name() == app.config.server.server_name {
            found.insert(
                user.to_string(),
                Value::Object(app.users.device_keys(&user, devices, &auth.user_id)?),
            );
            cross_signing.add(&user, app.users.cross_signing_keys(&user, &auth.user_id)?);
        } else {
            remote
                .entry(user.server_name().to_string())
                .or_default()
                .insert(user.to_string(), json!(devices));
        }
    }
    let mut failures = Map::new();
    if !remote.is_empty() {
        let timeout = device_keys::timeout_of(body.timeout);
        let mut fanout = device_keys::query(&app.federation, remote.clone(), timeout).await;
        found.extend(fanout.fields.remove("device_keys").unwrap_or_default());
        let mut master_keys = fanout.fields.remove("master_keys").unwrap_or_default();
        let self_signing_keys = fanout
            .fields
            .remove("self_signing_keys")
            .unwrap_or_default();
        for (user, master) in &mut master_keys {
            if let Ok(user) = UserId::parse(user.as_str()) {
                app.users.remember_remote_cross_signing(
                    &user,
                    master,
                    self_signing_keys.get(user.as_str()),
                    &auth.user_id,
                )?;
            }
        }
        cross_signing.master.extend(master_keys);
        cross_signing.self_signing.extend(self_signing_keys);
        failures = fanout.failures;
        // What their servers told us before, for the users of servers that failed now.
        for (server, users) in &remote {
            if !failures.contains_key(server) {
                continue;
            }
            for user in users
                .keys()
                .filter_map(|user| UserId::parse(user.as_str()).ok())
            {
                cross_signing.add(&user, app.users.cross_signing_keys(&user, &auth.user_id)?);
            }
        }
    }
    Ok(HttpResponse::Ok().json(json!({
        "device_keys": found,
        "failures": failures,
        "master_keys": cross_signing.master,
        "self_signing_keys": cross_signing.self_signing,
        "user_signing_keys": cross_signing.user_signing,
    })))
}

/// The three cross-signing fields of a `/keys/query` answer, user → key.
#[derive(Default)]
struct CrossSigning {
    master: Map<String, Value>,
    self_signing: Map<String, Value>,
    user_signing: Map<String, Value>,
}

impl CrossSigning {
    fn add(&mut self, user: &UserId, [master, self_signing, user_signing]: [Option<Value>; 3]) {
        for (field, key) in [
            (&mut self.master, master),
            (&mut self.self_signing, self_signing),
            (&mut self.user_signing, user_signing),
        ] {
            if let Some(key) = key {
                field.insert(user.to_string(), key);
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ClaimBody {
    one_time_keys: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    timeout: Option<u64>,
}

/// # POST /_matrix/client/v3/keys/claim
pub(crate) async fn claim(
    app: web::Data<Services>,
    _auth: Authenticated,
    MatrixJson(body): MatrixJson<ClaimBody>,
) -> Result<HttpResponse, Error> {
    let named: usize = body.one_time_keys.values().map(BTreeMap::len).sum();
    if named > MAX_DEVICES_PER_REQUEST {
        return Err(too_many());
    }
    let mut local = BTreeMap::new();
    let mut remote: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for (user, devices) in body.one_time_keys {
        let user = user_id(&user)?;
        if user.server_name() == app.config.server.server_name {
            local.insert(user, devices);
        } else {
            remote
                .entry(user.server_name().to_string())
                .or_default()
                .insert(user.to_string(), json!(devices));
        }
    }
    let mut claimed = app.users.claim_keys(&local).await?;
    let mut failures = Map::new();
    if !remote.is_empty() {
        let timeout = device_keys::timeout_of(body.timeout);
        let mut fanout = device_keys::claim(&app.federation, remote, timeout).await;
        claimed.extend(fanout.fields.remove("one_time_keys").unwrap_or_default());
        failures = fanout.failures;
    }
    Ok(HttpResponse::Ok().json(json!({ "one_time_keys": claimed, "failures": failures })))
}
