//! Devices (spec: client-server API, "Device management").

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::account::require_password;
use super::body::UiaJson;
use super::session::valid_device_field;
use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::error::{Error, ErrorKind};
use crate::users::accounts::sessions::Device;
use crate::users::accounts::uia::AuthData;

fn device_json(device: &Device) -> Value {
    let mut value = json!({ "device_id": device.device_id });
    if let Some(name) = &device.display_name {
        value["display_name"] = json!(name);
    }
    if let Some(ip) = &device.last_seen_ip {
        value["last_seen_ip"] = json!(ip);
    }
    if let Some(ts) = device.last_seen_ts {
        value["last_seen_ts"] = json!(ts);
    }
    value
}

/// # GET /_matrix/client/v3/devices
pub(crate) async fn list(
    app: web::Data<Services>,
    auth: Authenticated,
) -> Result<HttpResponse, Error> {
    let devices: Vec<Value> = app
        .users
        .devices(&auth.user_id)?
        .iter()
        .map(device_json)
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "devices": devices })))
}

/// # GET /_matrix/client/v3/devices/{deviceId}
pub(crate) async fn get(
    app: web::Data<Services>,
    auth: Authenticated,
    device_id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let device = app
        .users
        .device(&auth.user_id, &device_id)?
        .ok_or_else(|| Error::not_found("No such device"))?;
    Ok(HttpResponse::Ok().json(device_json(&device)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct RenameRequest {
    display_name: Option<String>,
}

/// # PUT /_matrix/client/v3/devices/{deviceId}
///
/// Without `display_name`, the name is unchanged (the spec's words).
pub(crate) async fn rename(
    app: web::Data<Services>,
    auth: Authenticated,
    device_id: web::Path<String>,
    MatrixJson(body): MatrixJson<RenameRequest>,
) -> Result<HttpResponse, Error> {
    let name = body.display_name.map(valid_device_field).transpose()?;
    if !app
        .users
        .rename_device(&app.rooms.stream, &auth.user_id, &device_id, name)
        .await?
    {
        return Err(Error::not_found("No such device"));
    }
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Deserialize)]
pub(crate) struct DeleteRequest {
    auth: Option<AuthData>,
}

/// # DELETE /_matrix/client/v3/devices/{deviceId}
///
/// A device already gone counts as deleted: a client retrying after a lost answer gets 200.
pub(crate) async fn delete(
    req: HttpRequest,
    app: web::Data<Services>,
    auth: Authenticated,
    device_id: web::Path<String>,
    UiaJson { body, digest }: UiaJson<DeleteRequest>,
) -> Result<HttpResponse, Error> {
    require_password(&req, &app, &auth, (body.auth, &digest)).await?;
    app.users
        .remove_devices(&app.rooms.stream, &auth.user_id, &[device_id.into_inner()])
        .await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Deserialize)]
pub(crate) struct DeleteManyRequest {
    auth: Option<AuthData>,
    devices: Vec<String>,
}

/// At most this many devices in one `delete_devices` request.
const MAX_DEVICES_PER_REQUEST: usize = 1000;

/// # POST /_matrix/client/v3/delete_devices
pub(crate) async fn delete_many(
    req: HttpRequest,
    app: web::Data<Services>,
    auth: Authenticated,
    UiaJson { body, digest }: UiaJson<DeleteManyRequest>,
) -> Result<HttpResponse, Error> {
    if body.devices.len() > MAX_DEVICES_PER_REQUEST {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            format!("At most {MAX_DEVICES_PER_REQUEST} devices at a time"),
        ));
    }
    require_password(&req, &app, &auth, (body.auth, &digest)).await?;
    app.users
        .remove_devices(&app.rooms.stream, &auth.user_id, &body.devices)
        .await?;
    Ok(HttpResponse::Ok().json(json!({})))
}
